"""End-to-end evaluation on generated data: random tiny codecs, random tiny VLPs, a few small images.

Nothing here reads the shared data folder; everything is built under tmp_path.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from psic_core.eval import main
from psic_core.eval.speed import parse_size
from weights_fixtures import random_codec_weights

LABELLED = {  # source -> labels; one train and one test image per label
    "colours": ["red thing", "green thing"],
    "photos": ["cat", "dog", "bird"],
}
CAPTIONS = ["A red square.", "A green field.", "A small photo.", "A blue sky."]


def _crop(photo: Image.Image, index: int, size=(48, 40)) -> Image.Image:
    left, top = (index * 17) % (photo.width - size[0]), (index * 11) % (photo.height - size[1])
    return photo.crop((left, top, left + size[0], top + size[1]))


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory, kodim07):
    """A data root with labelled/ and captioned/ in the shared layout, and an RD image folder."""
    root = tmp_path_factory.mktemp("eval-data")
    (root / "labelled").mkdir()
    (root / "captioned").mkdir()
    rows, index = [], 0
    for source, labels in LABELLED.items():
        for label in labels:
            for split in ("train", "test"):
                name = f"{source}-{label.replace(' ', '_')}-{split}.png"
                _crop(kodim07, index).save(root / "labelled" / name)
                rows.append({"file": name, "label": label, "source": source, "split": split})
                index += 1
    with open(root / "labelled" / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "source", "split"])
        writer.writeheader()
        writer.writerows(rows)
    with open(root / "captioned" / "captions.jsonl", "w") as f:
        for i, caption in enumerate(CAPTIONS + ["A training caption."]):
            name = f"cap-{i}.jpg"
            _crop(kodim07, 40 + i, (56, 40)).save(root / "captioned" / name, quality=95)
            split = "test" if i < len(CAPTIONS) else "train"
            f.write(json.dumps({"file": name, "caption": caption, "source": "mini", "split": split}) + "\n")
    images = root / "eval" / "mini"
    images.mkdir(parents=True)
    _crop(kodim07, 3, (96, 64)).save(images / "a.png")
    _crop(kodim07, 9, (80, 72)).save(images / "b.png")
    return root


@pytest.fixture(scope="module")
def baseline_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("baseline") / "random-base.safetensors"
    # same name as the psic one, on purpose
    return random_codec_weights(path, name="random-mshp", seed=1, quality=1)


@pytest.fixture(scope="module")
def tiny_vlps(tmp_path_factory):
    import torch

    from psic_core.vlp import TargetVLP, save_vlp

    folder = tmp_path_factory.mktemp("vlps")
    paths = []
    for seed, name in ((0, "tiny"), (1, "tiny-transfer")):
        torch.manual_seed(seed)
        path = folder / f"{name}.safetensors"
        save_vlp(TargetVLP.from_open_clip("refclip-s"), path, name=name)
        paths.append(path)
    return paths


def test_end_to_end_report(tmp_path, eval_data, random_weights, baseline_weights, tiny_vlps):
    out = tmp_path / "report" / "results.md"
    argv = ["--data", str(eval_data), "--images", str(eval_data / "eval" / "mini"),
            "--weights", str(random_weights.path), "--baseline-weights", str(baseline_weights),
            "--vlp", *map(str, tiny_vlps), "--out", str(out), "--sections", "rd", "vlp", "robustness", "sheets",
            "--robustness", "jpeg75", "blur1", "psic-reencode", "--highlight", "b.png", "--sheet-images", "3"]
    assert main(argv) == 0

    assets = tmp_path / "report" / "results"
    result = json.loads((assets / "results.json").read_text())
    assert result["command"].endswith(" ".join(argv[-6:]))
    assert [w["role"] for w in result["weights"]] == ["psic", "baseline"]
    labels = [w["label"] for w in result["weights"]]
    assert len(set(labels)) == 2  # two weights files named random-mshp get distinct labels

    # rate-distortion: both decodings, baselines, matched JPEG/WebP, BD-rates null with a reason (1 point per curve)
    rd = result["rd"]
    assert rd["images"] == ["a.png", "b.png"] and set(rd["subsets"]) == {"all", "b"}
    curves = rd["subsets"]["all"]["curves"]
    assert {"random-mshp full", "random-mshp protected", "random-mshp (no PSIC) full", "JPEG", "WebP"} <= set(curves)
    assert len(curves["JPEG"]) == 12 and all(p["bpp"] > 0 and 0 < p["msssim"] <= 1 for p in curves["JPEG"])
    assert f"JPEG @ {labels[0]}" in curves and f"WebP @ {labels[0]}" in curves
    bd = rd["subsets"]["all"]["bd"]
    assert {e["anchor"] for e in bd} == {"random-mshp (no PSIC) full", "JPEG", "WebP", "random-mshp full"}
    assert all(e["bd_rate_psnr"]["value"] is None and "at least 4" in e["bd_rate_psnr"]["reason"] for e in bd)

    # VLPs: every variant measured by both VLPs, with chance levels
    vlp = result["vlp"]
    assert vlp["images"] == 5 + len(CAPTIONS)
    kinds = [v["kind"] for v in vlp["variants"]]
    assert kinds == ["original", "full", "protected", "jpeg", "webp", "baseline-full"]
    assert [v["transform"] for v in vlp["robustness"]] == ["jpeg75", "blur1", "psic-reencode"]
    for v in vlp["variants"] + vlp["robustness"]:
        assert set(v["results"]) == {"tiny", "tiny-transfer"}
        for r in v["results"].values():
            assert r["zero_shot"]["images"] == 5 and 0 <= r["zero_shot"]["top1"] <= 1
            assert r["zero_shot"]["chance_top1"] == pytest.approx((2 * 1 / 2 + 3 * 1 / 3) / 5)
            assert r["retrieval"]["pairs"] == len(CAPTIONS) and r["retrieval"]["chance_r1"] == pytest.approx(0.25)
            assert math.isfinite(r["retrieval"]["mean_cosine_own"])
            # the whole test set: 5 labelled + 4 captioned images against 5 label prompts + 4 captions
            whole = r["retrieval_all"]
            assert (whole["images"], whole["texts"]) == (9, 9) and whole["chance_i2t_r1"] == pytest.approx(1 / 9)
            assert set(whole["per_source"]) == {"colours", "photos", "captions"}
            assert "readings" not in r
    for v in vlp["variants"][1:] + vlp["robustness"]:
        for r in v["results"].values():
            attack = r["attack"]
            assert attack["all"]["pairs"] == 9 and set(attack["per_source"]) == {"colours", "photos", "captions"}
            assert attack["all"]["flipped"] <= attack["all"]["reference_correct"]
    assert "attack" not in vlp["variants"][0]["results"]["tiny"]
    original = vlp["variants"][0]["results"]["tiny"]["zero_shot"]["top1"]
    assert vlp["variants"][0]["bpp"] is None and original is not None

    # each image is encoded once per weights: RD images + VLP test images (+ the psic re-encodes of the protected
    # decodings, fewer if two of those happen to be identical); the contact sheet reuses the cached encodings
    coding = result["coding"]
    assert 2 + 9 < coding[labels[0]]["encodes"] <= 2 + 9 + 9
    assert coding[labels[1]]["encodes"] == 2 + 9

    # contact sheet with top-1 labels, plots, markdown
    (sheet,) = result["sheets"]
    assert len(sheet["images"]) == 3 and {"top1_original", "top1_full", "top1_protected"} <= set(sheet["images"][0])
    assert (assets / sheet["file"]).is_file()
    for name in ("rd-all.png", "rd-b.png", "vlp.png", "robustness.png"):
        assert (assets / name).stat().st_size > 1000
    text = out.read_text()
    for heading in ("## Rate-distortion", "### BD-rates", "## VLP exploitation: target `tiny`", "## Transfer",
                    "### `tiny-transfer`", "## Robustness of the shield", "## Contact sheets", "trained offline",
                    "Issue 13's targets", "all-test I→T R@1 % (chance 11.1)", "`photos` top-1 % (chance 33.3)",
                    "Attack success rate (ASR)", "random-mshp protected, then Gaussian blur sigma=1 |"):
        assert heading in text
    assert random_weights.sha256 in text and "results/rd-all.png" in text

    # the markdown can be rebuilt from the JSON alone
    out.unlink()
    (assets / "vlp.png").unlink()
    assert main(["--render", str(assets / "results.json")]) == 0
    assert out.read_text() == text and (assets / "vlp.png").is_file() and (assets / sheet["file"]).is_file()


def test_quick_mode_settings_and_errors(tmp_path, random_weights):
    from psic_core.eval.report import build_parser, settings

    quick = settings(build_parser().parse_args(["--quick"]))
    assert quick["max_images"] == 2 and quick["per_source"] == 3 and quick["vlp_limit"] == 1
    assert quick["robustness"] == ["jpeg75", "rescale0.5"] and quick["large"] == "1536x1024"
    full = settings(build_parser().parse_args([]))
    assert full["max_images"] is None and full["large"] == "24MP" and "psic-reencode" in full["robustness"]
    assert parse_size("12MP") == (4240, 2832) and parse_size("640x480") == (640, 480)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--speed-sizes", "huge"])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--images", str(tmp_path / "missing"), "--weights", str(random_weights.path), "--sections", "rd",
              "--out", str(tmp_path / "r.md")])


def test_speed_section_rows_large_image_and_seams(tmp_path, random_weights, kodim07, monkeypatch):
    from psic_core.eval import speed

    # the workers run in this process here (the next test starts a real one)
    monkeypatch.setattr(speed, "spawn", lambda args, timeout=None: speed.worker(args))
    source = tmp_path / "photo.png"
    kodim07.crop((0, 0, 256, 192)).save(source)
    result = speed.run(str(random_weights.path), source, sizes=["96x64"], threads=[1, 2], large="160x96",
                       large_threads=1, tile=64, log=lambda _: None)
    assert [(r["size"], r["threads"], r["repeat"]) for r in result["rows"]] == [("96x64", 1, 3), ("96x64", 2, 3)]
    for row in result["rows"]:
        assert row["encode_s"] > 0 and row["decode_protected_s"] > 0 and row["decode_full_s"] > 0 and row["bpp"] > 0
        # VmHWM is max(the kernel's lazily updated high-water mark, current RSS): a reading can come out a few pages
        # below an earlier one, so "the encode peak holds the loaded weights" is checked to within 1 MiB
        assert row["rss_mib"]["encode_peak"] >= row["rss_mib"]["load_weights"] - 1.0
        assert row["rss_mib"]["decode_peak"] > 0
    assert set(result["classical"]["96x64"]) == {"jpeg", "webp"}
    large = result["large"]
    assert large["tiles"] == 6 and large["encode_s"] > 0 and large["decode_full_s"] > 0
    assert large["decode_within_limit"] is (large["decode_rss_mib"]["decode_peak"] <= speed.RSS_LIMIT_MIB)
    seams = large["seams_full"]
    assert seams["tile"] == 64 and 0 < seams["border_fraction"] < 1 and seams["psnr_border_db"] is not None
    assert set(large["classical"]) == {"jpeg", "webp"}


def test_speed_worker_process_reports_memory_per_stage(tmp_path, random_weights):
    from psic_core.eval import speed

    image = tmp_path / "image.npy"
    np.save(image, np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    result = speed.spawn(["--op", "both", "--weights", str(random_weights.path), "--input", str(image)])
    rss = result["rss_mib"]
    assert rss["start"] < rss["import_torch"] <= rss["load_weights"] <= rss["encode_peak"] < speed.RSS_LIMIT_MIB
    assert 0 < rss["decode_peak"] < speed.RSS_LIMIT_MIB and result["threads"] == 1
    assert result["width"] == 96 and len(result["encode_s"]) == len(result["decode_full_s"]) == 1


def _weights(path, name, training=None, seed=0):
    return random_codec_weights(path, name=name, seed=seed, quality=1, training=training)


def test_default_weights_privacy_trained_ones_against_their_rate_distortion_init(tmp_path):
    from psic_core.eval import rd
    from psic_core.eval.codecs import BASELINE, PSIC, resolve_weights
    from psic_core.weights import registry

    base = registry.register(_weights(tmp_path / "b.safetensors", "evalfam-rd-q1",
                                      {"script": "psic_core.train.rd", "steps": 5}))
    psic = registry.register(_weights(tmp_path / "p.safetensors", "evalfam-q1",
                                      {"trainer": "psic_core.train.privacy", "init": "evalfam-rd-q1"}, seed=1))
    chosen = resolve_weights()
    roles = {w.info.sha256: w.role for w in chosen}
    assert roles[psic.sha256] == PSIC and roles[base.sha256] == BASELINE
    assert [w.role for w in resolve_weights(None, [])].count(BASELINE) == 0
    described = next(w for w in chosen if w.info.sha256 == psic.sha256).describe()
    assert described["trained"] == "privacy" and described["init"] == "evalfam-rd-q1"

    # the BD anchor of a psic family is the family it was initialised from
    mine = [w for w in chosen if w.info.sha256 in (psic.sha256, base.sha256)]
    curves = {s: [{"bpp": 0.1, "psnr": 30.0, "msssim_db": 10.0}] for s in
              ("evalfam full", "evalfam protected", "evalfam-rd (no PSIC) full", "JPEG", "WebP")}
    pairs = [(e["test"], e["anchor"]) for e in rd.bd_table(curves, mine)]
    assert pairs == [("evalfam full", "evalfam-rd (no PSIC) full"), ("evalfam full", "JPEG"),
                     ("evalfam full", "WebP"), ("evalfam protected", "evalfam full")]


def test_vlp_tables_give_chance_and_say_n_a():
    """The per-source and attack tables on a hand-made result: chance in the headers, n/a where nothing was read
    right on the originals, and a results file from before the whole-set metrics renders with n/a."""
    from psic_core.eval.markdown import _vlp

    def results(top1_a, asr_a, right_a):
        return {"v": {
            "zero_shot": {"top1": 0.5, "top5": 1.0, "chance_top1": 0.3, "chance_top5": 1.0},
            "zero_shot_per_source": {"a": {"top1": top1_a, "chance_top1": 0.5},
                                     "b": {"top1": 0.0, "chance_top1": 0.25}},
            "retrieval": {"i2t_r1": 0.5, "i2t_r5": 1.0, "t2i_r1": 0.5, "t2i_r5": 1.0, "chance_r1": 0.5,
                          "chance_r5": 1.0, "mean_cosine_own": 0.2, "mean_cosine_other": 0.1},
            "retrieval_all": {"images": 6, "texts": 5, "i2t_r1": 0.5, "chance_i2t_r1": 0.2, "t2i_r1": 0.4,
                              "chance_t2i_r1": 0.24},
            "attack": {"all": {"asr": asr_a, "chance_asr": 0.6, "reference_correct": right_a},
                       "per_source": {"a": {"asr": asr_a, "chance_asr": 0.5, "reference_correct": right_a},
                                      "b": {"asr": None, "chance_asr": None, "reference_correct": 0},
                                      "captions": {"asr": 0.0, "chance_asr": 0.8, "reference_correct": 1}}}}}

    original = {"id": "original", "title": "original", "kind": "original", "bpp": None, "weights": None,
                "results": results(1.0, None, 0)}
    del original["results"]["v"]["attack"]
    protected = {"id": "w/protected", "title": "w protected", "kind": "protected", "bpp": 0.5, "weights": "w",
                 "results": results(0.5, 0.5, 2)}
    robust = dict(protected, id="w/protected+jpeg75", title="w protected, then JPEG", kind="robustness",
                  results=results(1.0, 0.0, 2))
    result = {"vlps": [{"name": "v", "role": "target"}],
              "vlp": {"variants": [original, protected], "robustness": [robust], "robustness_transforms": {}}}
    text = "\n".join(_vlp(result, "assets"))
    assert "| decoding | `a` top-1 % (chance 50.0) | `b` top-1 % (chance 25.0) | all-test I→T R@1 % (chance 20.0) |" \
        in text
    assert "| `a` ASR % (chance 50.0) | `b` ASR % (chance n/a) | `captions` ASR % (chance 80.0) | all pairs ASR % " \
        "(chance 60.0) |" in text
    assert "| w protected | 50.0 | n/a | 0.0 | 50.0 |" in text and "| w protected, then JPEG | 0.0 | n/a |" in text
    assert "n/a for `b`: the originals read none of its pairs right" in text
    for variant in (original, protected, robust):  # an older results file
        del variant["results"]["v"]["retrieval_all"]
        variant["results"]["v"].pop("attack", None)
    text = "\n".join(_vlp(result, "assets"))
    assert "| w protected | 50.0 | 0.0 | n/a | n/a |" in text and "- ASR: n/a" in text
