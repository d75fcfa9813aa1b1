"""The PSIC trainer: config handling, stage-2 freezing, and a short smoke run that lowers the loss."""

from __future__ import annotations

import csv
import json
import math
import statistics
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from psic_core.models import build_backbone
from psic_core.train.device import Compute
from psic_core.train.pairs import PairBatch
from psic_core.train.privacy import freeze_for_stage, load_config, privacy_step, train
from psic_core.weights import describe, instantiate
from weights_fixtures import random_codec_weights


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    """Generated labelled images: red squares and blue discs on noisy backgrounds."""
    folder = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        background = rng.integers(90, 160, (96, 96, 3), dtype=np.uint8)
        im = Image.fromarray(background)
        draw = ImageDraw.Draw(im)
        box = (20 + i, 18, 70 + i, 72)
        label = "red square" if i % 2 else "blue disc"
        (draw.rectangle if i % 2 else draw.ellipse)(box, fill=(200, 30, 30) if i % 2 else (30, 40, 210))
        im.save(folder / f"{i}.png")
        rows.append({"file": f"{i}.png", "label": label, "split": "train"})
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def tiny_vlp(tmp_path_factory):
    from psic_core.vlp import TargetVLP, save_vlp

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vlp") / "tiny.safetensors"
    save_vlp(TargetVLP.from_open_clip("refclip-s"), path, name="tiny")
    return path


@pytest.fixture(scope="module")
def other_tiny_vlp(tmp_path_factory):
    """A second tiny VLP: the same architecture as tiny_vlp, other random weights."""
    from psic_core.vlp import TargetVLP, save_vlp

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("vlp") / "other-tiny.safetensors"
    save_vlp(TargetVLP.from_open_clip("refclip-s"), path, name="other-tiny")
    return path


def config(labelled_folder, tiny_vlp, tmp_path, **train):
    overrides = [
        f"data.labels={labelled_folder / 'labels.csv'}",
        f"vlp.name={tiny_vlp}",
        "model.N=32", "model.M=48",
        "train.batch=4", "train.crop=64", "train.threads=1",
        f"output.log={tmp_path / 'log.csv'}",
        f"output.out={tmp_path / 'out.safetensors'}",
        f"output.checkpoint={tmp_path / 'ckpt.safetensors'}",
    ] + [f"train.{k}={v!r}" for k, v in train.items()]
    return load_config(None, overrides)


def test_config_overrides_and_unknown_keys(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nlmbda = 0.01\nbatch = 4\n[output]\nname = "x"\n')
    cfg = load_config(str(toml), ["train.batch=2", "train.beta=[0.0, 2.0]"])
    assert cfg["train"]["lmbda"] == 0.01 and cfg["train"]["batch"] == 2 and cfg["train"]["beta"] == [0.0, 2.0]
    assert cfg["output"]["name"] == "x" and cfg["model"]["N"] == 64
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(None, ["train.lamda=1"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(None, ["lmbda=1"])


@pytest.mark.parametrize("key", ["label_candidates", "confident", "split_by", "uncertain_targets", "weighting",
                                 "targeted_class"])
def test_unknown_uaeo_options_are_rejected_before_training(labelled_folder, tiny_vlp, tmp_path, key):
    with pytest.raises(ValueError, match=f"train.{key} must be one of"):
        train(config(labelled_folder, tiny_vlp, tmp_path, **{key: "sideways"}))


class StubCodec(torch.nn.Module):
    """Both decodings from the input: protected shifted per channel, full scaled (a rate of 1 bit per element)."""

    def __init__(self):
        super().__init__()
        self.shift = torch.nn.Parameter(torch.tensor([0.05, -0.02, 0.03]).view(1, 3, 1, 1))
        self.gain = torch.nn.Parameter(torch.tensor(-0.4))

    def forward(self, x):
        return {"x_hat": {"protect": x + self.shift, "full": x * (1 + self.gain)},
                "likelihoods": {"y": torch.full((x.shape[0], 4), 0.5)}}


class StubVLP:
    """Image embedding: the mean colour through a fixed matrix; text embedding: seeded by the text's CRC."""

    logit_scale = torch.tensor(10.0)
    projection = torch.tensor([[1.0, 0.2, -0.5, 0.1], [-0.3, 1.0, 0.4, 0.2], [0.5, -0.6, 1.0, 0.3]])

    def encode_image(self, x):
        return torch.nn.functional.normalize((x.mean(dim=(2, 3)) - 0.5) @ self.projection, dim=1)

    def encode_text(self, texts):
        rows = [torch.randn(4, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=1)


class OtherStubVLP(StubVLP):
    """A second target VLP: another image projection, logit scale and text seed."""

    logit_scale = torch.tensor(25.0)
    projection = torch.tensor([[-0.4, 1.0, 0.3, 0.6], [1.0, 0.1, -0.7, 0.2], [0.2, 0.5, 0.4, -1.0]])

    def encode_text(self, texts):
        return super().encode_text([t[::-1] for t in texts])


def stub_step(overrides: list[str], captions=None, vlp=None, generator=None):
    """privacy_step on a fixed batch: two labelled pairs of one source (cat, dog, fish) and one caption pair."""
    classes = ["a photo of a cat.", "a photo of a dog.", "a photo of a fish."]
    captions = captions or ["a photo of a cat.", "a photo of a dog.", "a red car on a street"]
    competitors = [classes if c in classes else None for c in captions]
    images = torch.stack([torch.full((3, 8, 8), 0.5) + torch.tensor(v).view(3, 1, 1) for v in
                          ([0.3, -0.2, 0.0], [-0.1, 0.3, -0.2], [0.0, -0.1, 0.35])][: len(captions)])
    torch.manual_seed(0)
    codec = StubCodec()
    cfg = load_config(None, overrides)["train"]
    terms = privacy_step(codec, StubVLP() if vlp is None else vlp, PairBatch(images, captions, competitors), None,
                         cfg, 1.0, {}, Compute.create("cpu", "fp32", False, False), generator)
    return terms, codec, cfg


def test_gamma_zero_drops_exactly_the_keep_term():
    with_keep, _, _ = stub_step([])
    without_keep, codec, _ = stub_step(["train.gamma=0"])
    keep = with_keep["keep_full"].item()
    assert keep > 1e-3 and without_keep["keep_full"].item() == pytest.approx(keep)  # still computed and logged
    assert (with_keep["loss"] - without_keep["loss"]).item() == pytest.approx(keep, rel=1e-4)
    without_keep["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in codec.parameters())


def test_new_terms_are_off_by_default_and_logged_and_added_when_on():
    default, _, _ = stub_step([])
    assert "targeted" not in default and "looks" not in default
    official = ["train.split_by=correct", "train.uncertain_targets=hard", "train.weighting=harmonic"]
    plain, _, _ = stub_step(official)
    on, codec, cfg = stub_step(official + ["train.targeted=0.5", "train.targeted_class=likeliest_wrong",
                                           "train.looks=2"])
    assert on["targeted"].item() > 0 and on["looks"].item() > 0
    # the targeted term joins the privacy sum with its weight; the looks term the loss, in the distortion's units
    assert math.isclose((on["privacy"] - plain["privacy"]).item(), 0.5 * on["targeted"].item(), rel_tol=1e-5)
    rd = on["bpp"] + cfg["lmbda"] * 255**2 * (on["mse_protect"] + on["mse_full"]) / 2
    # loss = rd + beta * (|rd| / privacy) * privacy + gamma * keep + looks term, with beta = gamma = 1 here
    looks_part = on["loss"] - rd - rd.abs() - on["keep_full"]
    assert math.isclose(looks_part.item(), 2 * cfg["lmbda"] * 255**2 * on["looks"].item(), rel_tol=1e-4)
    on["loss"].backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in codec.parameters())


@pytest.mark.parametrize("options", [[], ["train.targeted=0.5", "train.label_candidates=source"]])
def test_an_ensembles_privacy_and_keep_terms_are_the_means_of_each_vlps(options):
    singles = [stub_step(options, vlp=v)[0] for v in (StubVLP(), OtherStubVLP())]
    ensemble, codec, cfg = stub_step(options, vlp=[StubVLP(), OtherStubVLP()])
    assert singles[0]["privacy"].item() != pytest.approx(singles[1]["privacy"].item())
    for key in ("privacy", "keep_full", "uaeo_confident", "uaeo_uncertain", "fooled", "confident_share")\
            + (("targeted",) if options else ()):
        assert ensemble[key].item() == pytest.approx((singles[0][key] + singles[1][key]).item() / 2, rel=1e-6), key
    # the rate-distortion part is the same; the balance |rd| / |privacy| is taken on the averaged privacy
    rd = ensemble["bpp"] + cfg["lmbda"] * 255**2 * (ensemble["mse_protect"] + ensemble["mse_full"]) / 2
    assert ensemble["loss"].item() == pytest.approx((rd + rd.abs() + ensemble["keep_full"]).item(), rel=1e-5)
    # a one-VLP list is that VLP
    assert stub_step(options, vlp=[StubVLP()])[0]["loss"].item() == pytest.approx(singles[0]["loss"].item())
    ensemble["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in codec.parameters())


def test_the_default_step_is_the_one_before_the_ensemble_and_eot_options():
    # pinned from the trainer as it was before vlp.ensemble and train.eot (commit de45aba), bit for bit there
    for options, loss, privacy in (([], 89.40523529052734, 2.0283961296081543),
                                   (["train.targeted=0.5", "train.label_candidates=source"], 89.40523529052734,
                                    6.083368301391602)):
        terms, _, _ = stub_step(options)
        assert terms["loss"].item() == pytest.approx(loss, rel=1e-6)
        assert terms["privacy"].item() == pytest.approx(privacy, rel=1e-6)


def test_eot_changes_only_what_the_privacy_terms_read():
    plain, _, _ = stub_step([])
    assert stub_step(["train.eot_p=1"])[0]["loss"].item() == plain["loss"].item()  # no transforms: off
    # a blur of a uniform stub image is the image itself; a JPEG at quality 50 is not
    kept, _, _ = stub_step(['train.eot=["blur"]', "train.eot_p=1"], generator=torch.Generator().manual_seed(0))
    assert kept["loss"].item() == pytest.approx(plain["loss"].item(), rel=1e-6)

    def jpeg_at(seed):
        return stub_step(['train.eot=["jpeg"]', "train.eot_p=1"], generator=torch.Generator().manual_seed(seed))[0]

    coded = jpeg_at(0)
    assert coded["privacy"].item() != pytest.approx(plain["privacy"].item(), rel=1e-6)
    for key in ("bpp", "mse_protect", "mse_full", "keep_full"):  # rate-distortion and keep: untouched
        assert coded[key].item() == plain[key].item(), key
    assert jpeg_at(0)["privacy"].item() == coded["privacy"].item()  # reproducible from the generator


def test_a_step_whose_pairs_are_all_confident_keeps_the_confident_term_whole():
    same = ["a red car on a street"] * 2  # one text for both: each reads its own caption first
    terms, _, _ = stub_step(["train.split_by=correct"], captions=same)
    assert terms["confident_share"].item() == 1.0 and terms["uaeo_uncertain"].item() == 0.0
    # the empty uncertain group is left out of the weighted sum instead of taking (nearly) all its weight
    assert math.isclose(terms["privacy"].item(), terms["uaeo_confident"].item(), rel_tol=1e-6)


def test_stage_two_trains_only_the_synthesis():
    model = build_backbone("mean-scale-hyperprior", N=32, M=48)
    trainable = freeze_for_stage(model, 2)
    synthesis = {id(p) for p in model.g_s.parameters()}
    assert {id(p) for p in trainable} == synthesis
    assert all(not p.requires_grad for n, p in model.named_parameters() if not n.startswith("g_s."))
    assert len(freeze_for_stage(model, 1)) == sum(1 for n, _ in model.named_parameters() if not n.endswith("quantiles"))


def test_smoke_training_lowers_the_loss(labelled_folder, tiny_vlp, tmp_path):
    cfg = config(labelled_folder, tiny_vlp, tmp_path, stages=[1], max_steps=[40], minutes=[60.0], lr=[1e-3])
    out = train(cfg)
    with open(tmp_path / "log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 40
    with open(tmp_path / "log.csv") as f:
        assert all(0 <= float(r["fooled"]) <= 1 for r in csv.DictReader(f))  # the live shield readout is logged
    assert statistics.mean(losses[-8:]) < 0.8 * statistics.mean(losses[:8])
    info = describe(out)
    assert info.backbone == "mean-scale-hyperprior" and "uaeo" not in info.metadata  # config recorded, not losses
    assert "psic_core.train.privacy" in info.metadata["psic.training"]
    assert json.loads(info.metadata["psic.training"])["steps"] == [40]  # steps per stage


def test_official_uaeo_options_and_new_terms_train_log_and_are_recorded(labelled_folder, tiny_vlp, tmp_path):
    from psic_core.weights import training_record

    options = {"split_by": "correct", "uncertain_targets": "hard", "weighting": "harmonic", "gamma": 0.0,
               "targeted": 0.5, "targeted_class": "likeliest_wrong", "looks": 1.0}
    cfg = config(labelled_folder, tiny_vlp, tmp_path, stages=[1], max_steps=[2], minutes=[60.0], **options)
    record = training_record(describe(train(cfg)))
    assert {k: record["train"][k] for k in options} == options
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["targeted"]) > 0 and float(r["looks"]) >= 0 for r in rows)
    assert all(math.isfinite(float(r["loss"])) for r in rows)


def test_an_ensemble_with_eot_trains_and_records_its_vlps_and_settings(labelled_folder, tiny_vlp, other_tiny_vlp,
                                                                        tmp_path):
    from psic_core.weights import training_record

    cfg = config(labelled_folder, tiny_vlp, tmp_path, stages=[1], max_steps=[2], minutes=[60.0],
                 eot=["resize", "jpeg", "blur"], eot_p=1.0)
    cfg["vlp"]["ensemble"] = [str(other_tiny_vlp)]
    record = training_record(describe(train(cfg)))
    assert record["vlp"] == str(tiny_vlp) and record["vlps"] == [str(tiny_vlp), str(other_tiny_vlp)]
    assert record["train"]["eot"] == ["resize", "jpeg", "blur"] and record["train"]["eot_p"] == 1.0
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) and float(r["privacy"]) > 0 for r in rows)


def test_vlp_ensemble_is_checked():
    assert load_config(None, [])["vlp"]["ensemble"] == []
    assert load_config(None, ['vlp.ensemble=["a.safetensors"]'])["vlp"]["ensemble"] == ["a.safetensors"]
    with pytest.raises(ValueError, match="must not repeat vlp.name"):
        load_config(None, ['vlp.ensemble=["refclip-s"]'])
    with pytest.raises(ValueError, match="distinct non-empty strings"):
        load_config(None, ["vlp.ensemble=refclip-s"])


def test_stage_two_keeps_bitstreams_valid(labelled_folder, tiny_vlp, tmp_path, photo):
    init_path = random_codec_weights(tmp_path / "init.safetensors", name="init", seed=1)
    cfg = config(labelled_folder, tiny_vlp, tmp_path, stages=[2], max_steps=[6], minutes=[60.0], lr=[1e-3],
                 confident="centred", label_candidates="source")  # the non-default UAEO options train too
    cfg["model"]["init"], cfg["model"]["cltg_scales"] = str(init_path), True  # gains grown onto bias-only weights
    before = instantiate(describe(init_path)).eval()
    after = instantiate(describe(train(cfg))).eval()
    assert after.config["cltg_scales"] and after.g_s.cltg.scales[-1].weight.abs().sum() > 0  # the gains trained
    trained = after.state_dict()
    for name, p0 in before.state_dict().items():
        if name.startswith("g_s."):
            continue
        assert torch.equal(p0, trained[name]), f"{name} changed in stage 2"
    assert any(not torch.equal(a, b) for a, b in zip(before.g_s.parameters(), after.g_s.parameters()))
    x = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        stream = before.compress(x)
        decoded = after.decompress(stream["strings"], stream["shape"], "full")
    assert decoded["latent_digest"] == stream["latent_digest"]


def test_grown_cltg_gains_decode_exactly_as_the_bias_only_weights_until_trained(tmp_path):
    info = describe(random_codec_weights(tmp_path / "bias.safetensors", name="bias-only", seed=2))
    plain, grown = instantiate(info).eval(), instantiate(info, grow={"cltg_scales": True}).eval()
    assert plain.g_s.cltg.scales is None and grown.config["cltg_scales"] is True
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected, actual = plain(x)["x_hat"], grown(x)["x_hat"]
    assert all(torch.equal(expected[c], actual[c]) for c in expected)


def test_continuing_psic_weights_keeps_their_history(labelled_folder, tiny_vlp, tmp_path):
    from psic_core.weights import base_init, training_record

    rd_path = random_codec_weights(tmp_path / "rd.safetensors", name="hist-rd-q1", training={"script": "rd"})
    first = config(labelled_folder, tiny_vlp, tmp_path / "a", stages=[2], max_steps=[1], minutes=[60.0])
    first["model"]["init"], first["output"]["name"] = str(rd_path), "hist-q1"
    (tmp_path / "a").mkdir()
    first_info = describe(train(first))
    second = config(labelled_folder, tiny_vlp, tmp_path / "b", stages=[2], max_steps=[1], minutes=[60.0])
    second["model"]["init"] = str(first_info.path)
    (tmp_path / "b").mkdir()
    record = training_record(describe(train(second)))
    assert record["init"] == "hist-q1" and record["init_sha256"] == first_info.sha256
    assert record["continues"]["init"] == "hist-rd-q1"
    assert record["continues"]["continues"] == {"script": "rd"}  # the rate-distortion init's record comes along
    assert base_init(record) == "hist-rd-q1"
    totals = record["cumulative"]
    assert totals["stage2"]["steps"] == 2 and set(totals) == {"stage2"}


def test_bf16_channels_last_training_runs_and_records_its_compute(labelled_folder, tiny_vlp, tmp_path):
    from psic_core.weights import training_record

    cfg = config(labelled_folder, tiny_vlp, tmp_path, stages=[1, 2], max_steps=[2, 2], minutes=[60.0, 60.0],
                 precision="bf16", channels_last=True)
    record = training_record(describe(train(cfg)))
    assert record["compute"]["precision"] == "bf16" and record["compute"]["channels_last"] is True
    assert record["compute"]["device"] == "cpu" and record["steps"] == [2, 2]
    assert [totals["steps"] for totals in record["cumulative"].values()] == [2, 2]
    assert all(seconds > 0 for seconds in record["seconds"])


def test_torchrun_trains_with_ddp_on_the_same_code_path(labelled_folder, tiny_vlp, tmp_path):
    """Two CPU processes (gloo) through PyTorch's own launcher; rank 0 logs and exports."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp.safetensors"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "psic_core.train.privacy",
        "--set", f"data.labels={labelled_folder / 'labels.csv'}", "--set", f"vlp.name={tiny_vlp}",
        "--set", "model.N=32", "--set", "model.M=48", "--set", "train.stages=[1, 2]",
        "--set", "train.max_steps=[2, 2]", "--set", "train.batch=2", "--set", "train.crop=64",
        "--set", "train.threads=1", "--set", f"output.out={out}", "--set", f"output.log={tmp_path / 'ddp.csv'}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "ddp.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["stage"], r["step"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert describe(out).backbone == "mean-scale-hyperprior"
