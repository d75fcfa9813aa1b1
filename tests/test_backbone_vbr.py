"""The variable-rate backbone (mean-scale-hyperprior-vbr): one model for every quality from 1 to 4, the qLTY chunk
that records the quality, the API and plugins that take it, and the rate-distortion trainer that trains it."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import psic_core
from psic_core import codec, container
from psic_core.cli import main as psic_main
from psic_core.errors import PsicFormatError
from psic_core.models import build_backbone
from psic_core.quality import VARIABLE_QUALITY_RANGE
from psic_core.train import rd
from psic_core.weights import describe, load_model, registry, save_weights
from weights_fixtures import random_codec_weights

FUZZ_CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"


@pytest.fixture(scope="module")
def vbr_weights(tmp_path_factory):
    """The bundled mshp64-rd-q2 transforms in the variable-rate backbone (fresh gains and offsets): trained
    transforms, so the rate follows the gain; registered for this module only."""
    torch.manual_seed(0)
    model, fresh = rd.init_variable_rate("mean-scale-hyperprior-vbr", registry.find("mshp64-rd-q2"))
    assert fresh == ["Gain", "QuantABCD"]
    model.update(force=True)
    path = tmp_path_factory.mktemp("vbr") / "vbr-test.safetensors"
    save_weights(model.eval(), path, name="vbr-test")
    info = registry.register(path)
    yield info
    registry.unregister(path)


@pytest.fixture(scope="module")
def crop(kodim07):
    return kodim07.crop((300, 200, 428, 328))


def rewritten(data: bytes, **header) -> bytes:
    """``data`` re-serialised with header fields replaced (the tiles as they are)."""
    f = container.read(data)
    f.header = replace(f.header, **header)
    return container.serialize(f)


def test_quality_maps_log_linearly_onto_the_gain_ladder():
    model = build_backbone("mean-scale-hyperprior-vbr", N=16, M=24)
    assert model.levels == 8 and VARIABLE_QUALITY_RANGE == (1.0, 4.0)
    ladder = model.Gain.detach()
    for level in range(model.levels):  # every ladder point is a quality, and its gain is that ladder gain
        assert model.gain(model.ladder_quality(level)) == ladder[level]
    assert (model.ladder_quality(0), model.ladder_quality(7)) == (1.0, 4.0)
    midway = (model.ladder_quality(2) + model.ladder_quality(3)) / 2
    assert math.isclose(float(model.gain(midway)), math.sqrt(ladder[2] * ladder[3]), rel_tol=1e-6)
    gains = [float(model.gain(q)) for q in np.linspace(1, 4, 31)]
    assert all(a < b for a, b in zip(gains, gains[1:]))


def test_rate_and_fidelity_rise_with_a_continuous_quality(vbr_weights, crop):
    sizes, psnrs, strings = [], [], set()
    for quality in (1, 1.7, 2.5, 3.25, 4):
        data = psic_core.encode(crop, model=vbr_weights.name, quality=quality)
        f = container.read(data)
        assert f.header.quality == container.stored_quality(quality)
        full = np.asarray(psic_core.decode(data, full=True)).astype(np.float64)
        sizes.append(len(data))
        psnrs.append(10 * math.log10(255**2 / np.mean((full - np.asarray(crop)) ** 2)))
        strings.add(f.tiles[0].strings[0])
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes
    assert all(a < b for a, b in zip(psnrs, psnrs[1:])), psnrs
    assert len(strings) == 5


def test_the_decoder_derives_the_gain_from_the_recorded_quality(vbr_weights, crop):
    data = psic_core.encode(crop, model=vbr_weights.name, quality=2.3)
    net, f = load_model(vbr_weights), container.read(data)
    x = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)[None].float().div(255)
    with torch.inference_mode():
        coded = net.compress(x, quality=f.header.quality)  # what the file records: 2.3 as a float32
        expected = net.decompress(coded["strings"], coded["shape"], "protect", quality=f.header.quality)["x_hat"]
    assert [s[0] for s in coded["strings"]] == f.tiles[0].strings
    expected = np.rint(expected[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(psic_core.decode(data)), expected)
    # another quality in the file means other gains: the entropy decoder desynchronises and the digest says so
    with pytest.raises(PsicFormatError):
        psic_core.decode(rewritten(data, quality=3.9))


def test_qualities_outside_the_range_are_refused_naming_it(vbr_weights, crop):
    for quality in (0.99, 4.01, float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="from 1 to 4 for the variable-rate weights vbr-test"):
            psic_core.encode(crop, model=vbr_weights.name, quality=quality)
    with pytest.raises(ValueError, match="from 1 to 4 for the variable-rate weights"):
        psic_core.encode(crop, model=str(vbr_weights.path), quality=5)
    # the per-level default family is unchanged: integer levels only
    with pytest.raises(ValueError, match="an integer from 1 to 4 .* mshp64"):
        psic_core.encode(crop, quality=2.5)
    net, x = load_model(vbr_weights), torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="needs a quality"):
        net.compress(x)
    with pytest.raises(ValueError, match="takes no quality"):
        build_backbone("mean-scale-hyperprior", N=16, M=24).compress(x, quality=2)


def test_default_quality_is_two(vbr_weights, crop):
    assert container.read(psic_core.encode(crop, model=vbr_weights.name)).header.quality == 2.0


def test_the_quality_chunk_is_written_read_and_checked():
    header = container.Header(64, 64, "RGB", 64, 64, "m", "00" * 32, {"protect": 0.0, "full": 1.0}, quality=2.5)
    f = container.PsicFile(header, tiles=[container.Tile(0, (1, 1), bytes(16), [b"y", b"z"])])
    data = container.serialize(f)
    assert container.QUALITY == b"qLTY" and container.QUALITY[:1].islower()  # ancillary: old readers skip it
    assert data.count(b"qLTY") == 1 and data.index(b"qLTY") < data.index(b"TILE")
    assert container.read(data).header.quality == 2.5
    assert container.read(data, header_only=True).header.quality == 2.5
    assert codec.header_info(container.read(data))["quality"] == 2.5
    assert container.stored_quality(2.3) == np.float32(2.3) != 2.3
    plain = container.serialize(replace(f, header=replace(header, quality=None)))
    assert b"qLTY" not in plain and "quality" not in codec.header_info(container.read(plain))
    assert container.associated_data(f) == container.associated_data(container.read(plain))  # HEAD unchanged

    chunk = data[data.index(b"qLTY") - 4: data.index(b"TILE") - 4]
    with pytest.raises(PsicFormatError, match="duplicate qLTY"):
        container.read(data.replace(chunk, chunk + chunk))
    tile_end = plain.index(b"IEND") - 4
    with pytest.raises(PsicFormatError, match="qLTY chunk after image data"):
        container.read(plain[:tile_end] + chunk + plain[tile_end:])
    with pytest.raises(PsicFormatError, match="not a finite number"):
        container.serialize(replace(f, header=replace(header, quality=float("nan"))))


def test_psic_info_shows_the_quality(vbr_weights, crop, tmp_path, capsys):
    path = tmp_path / "q.psic"
    path.write_bytes(psic_core.encode(crop, model=vbr_weights.name, quality=3.5))
    assert psic_main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quality"] == 3.5
    out = tmp_path / "cli.psic"
    source = tmp_path / "in.png"
    crop.save(source)
    assert psic_main(["encode", str(source), "-o", str(out), "--model", vbr_weights.name, "--quality", "1.25"]) == 0
    assert container.read(out.read_bytes()).header.quality == 1.25


def test_psic_models_shows_the_range(vbr_weights, capsys):
    assert psic_main(["models"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("vbr-test "))
    assert "mean-scale-hyperprior-vbr" in line and "quality 1-4" in line


def test_pillow_and_imageio_take_a_continuous_quality(vbr_weights, crop):
    import imageio.v3 as iio

    import psic_plugins  # noqa: F401  (registers .psic)

    buffer = io.BytesIO()
    crop.save(buffer, "PSIC", model=vbr_weights.name, quality=3.3)
    assert container.read(buffer.getvalue()).header.quality == container.stored_quality(3.3)
    data = iio.imwrite("<bytes>", np.asarray(crop), extension=".psic", model=vbr_weights.name, quality=1.5)
    assert container.read(data).header.quality == 1.5
    with pytest.raises(ValueError, match="from 1 to 4"):
        crop.save(io.BytesIO(), "PSIC", model=vbr_weights.name, quality=4.5)


def test_files_that_do_not_fit_their_model_are_refused(vbr_weights, random_weights, crop):
    variable = psic_core.encode(crop, model=vbr_weights.name, quality=2)
    with pytest.raises(PsicFormatError, match="records no quality"):
        psic_core.decode(rewritten(variable, quality=None))
    with pytest.raises(PsicFormatError, match="does not fit its weights vbr-test: quality must be a number from 1 to 4"):
        psic_core.decode(rewritten(variable, quality=9.0))
    one_rate = psic_core.encode(crop, model=random_weights.name)
    with pytest.raises(PsicFormatError, match="takes no quality"):
        psic_core.decode(rewritten(one_rate, quality=2.0))


@pytest.mark.parametrize("name", ["mean-scale-hyperprior-open", "scale-hyperprior-open"])
def test_files_from_before_the_chunk_encode_and_decode_as_before(name, kodim07):
    """The fuzz corpus was written before qLTY existed: the encoder still writes the same bytes, and decoding
    equals the model's own decompress of the file's strings."""
    data = (FUZZ_CORPUS / f"{name}.psic").read_bytes()
    weights = {"mean-scale-hyperprior-open": "mshp64-rd-q1", "scale-hyperprior-open": "shp64-q2"}[name]
    assert psic_core.encode(kodim07.crop((300, 200, 364, 248)), model=weights) == data
    f = container.read(data)
    assert f.header.quality is None and "quality" not in psic_core.info(data)
    net = load_model(registry.by_sha256(f.header.model_sha256))
    for condition, full in (("protect", False), ("full", True)):
        with torch.inference_mode():
            out = net.decompress([[s] for s in f.tiles[0].strings], f.tiles[0].latent_shape, condition)
        assert out["latent_digest"] == f.tiles[0].latent_digest
        expected = np.rint(out["x_hat"][0, :, :48, :64].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        assert np.array_equal(np.asarray(psic_core.decode(data, full=full)), expected)


def test_strip_keeps_the_quality(vbr_weights, crop):
    data = psic_core.encode(crop, model=vbr_weights.name, quality=3.7)
    stripped = codec.strip(data)
    assert container.read(stripped).header.quality == container.stored_quality(3.7)
    assert np.array_equal(np.asarray(psic_core.decode(stripped)), np.asarray(psic_core.decode(data)))


def test_every_corpus_file_still_decodes():
    for path in sorted(FUZZ_CORPUS.glob("*.psic")):
        f = container.read(path.read_bytes())
        assert f.header.quality is None
        if not f.locked:
            assert psic_core.decode(path).size == (f.header.width, f.header.height)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, kodim07):
    folder = tmp_path_factory.mktemp("photos")
    for i, left in enumerate((0, 200)):
        kodim07.crop((left, 100, left + 160, 260)).save(folder / f"{i}.png")
    return folder


def train(photos, out, *extra):
    rd.main(["--data", str(photos), "--backbone", "mean-scale-hyperprior-vbr", "--name", "vbr-rd", "--batch", "2",
             "--crop", "64", "--threads", "1", "--out", str(out), *extra])
    return out


def test_rd_trainer_trains_the_ladder_from_one_rate_weights(photos, tmp_path, capsys):
    from safetensors.torch import load_file

    start = random_codec_weights(tmp_path / "start.safetensors", name="start-q2", seed=4, quality=2)
    out = train(photos, tmp_path / "vbr.safetensors", "--init", str(start), "--max-steps", "2",
                "--log", str(tmp_path / "log.csv"))
    assert "fresh: Gain, QuantABCD" in capsys.readouterr().out
    info = describe(out)
    assert info.backbone == "mean-scale-hyperprior-vbr" and info.quality is None
    assert info.quality_range == (1.0, 4.0) and (info.config["N"], info.config["M"]) == (32, 48)
    text = info.metadata["psic.training"]
    assert '"init": "start-q2"' in text and '"init_fresh": ["Gain", "QuantABCD"]' in text and "0.18" in text
    before, after = load_file(str(start)), load_file(str(out))
    assert set(before) < set(after)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("g_a."))
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[-1] == "quality" and len(rows) == 3
    model = registry.register(out)
    try:
        data = psic_core.encode(Image.open(next(photos.iterdir())).convert("RGB"), model=model.name, quality=3.1)
        assert psic_core.decode(data).size == (160, 160)
    finally:
        registry.unregister(out)


def test_rd_trainer_refuses_lmbda_and_quality_for_the_ladder(photos, tmp_path):
    for extra in (["--lmbda", "0.01"], ["--quality", "2"]):
        with pytest.raises(SystemExit):
            train(photos, tmp_path / "x.safetensors", "--max-steps", "1", *extra)
    with pytest.raises(SystemExit):  # a one-rate backbone still needs its lambda
        rd.main(["--data", str(photos), "--name", "x", "--out", str(tmp_path / "y.safetensors"), "--max-steps", "1"])
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()


def test_rd_trainer_refuses_an_init_of_other_transforms(photos, tmp_path):
    start = random_codec_weights(tmp_path / "cb.safetensors", name="cb-q1", backbone="checkerboard-hyperprior")
    with pytest.raises(LookupError, match="does not fit the mean-scale-hyperprior-vbr backbone"):
        train(photos, tmp_path / "x.safetensors", "--init", str(start), "--max-steps", "1")
