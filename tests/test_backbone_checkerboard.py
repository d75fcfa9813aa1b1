"""The checkerboard context-model backbone (models/checkerboard.py): the ConditionalCodec contract, the codec's
three-string tiles, half-precision copies, and the rate-distortion trainer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from compressai.latent_codecs import CheckerboardLatentCodec
from safetensors.torch import load_file

import psic_core
from psic_core import container
from psic_core.errors import PsicFormatError, PsicIntegrityError
from psic_core.models import BACKBONES, build_backbone, condition_tensor
from psic_core.train import rd
from psic_core.weights import ENTROPY_MODELS, ENTROPY_PATH, describe, in_modules, instantiate
from psic_core.weights.convert import half_copy
from weights_fixtures import random_codec_weights

BACKBONE = "checkerboard-hyperprior"


@pytest.fixture()
def model():
    """Random N=32/M=48 weights whose analysis is scaled up so that most latent symbols are not zero (a random g_a
    gives |y| < 0.5 everywhere, and an all-zero latent would make the symbol checks vacuous)."""
    torch.manual_seed(0)
    net = build_backbone(BACKBONE, N=32, M=48)
    with torch.no_grad():
        net.g_a[-1].weight.mul_(30)
    net.update(force=True)
    return net.eval()


@pytest.fixture()
def x(photo):
    return torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255  # 192x128: y 12x8, z 3x2


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_codec_weights(tmp_path_factory.mktemp("cb") / "cb-q1.safetensors", name="cb-q1", backbone=BACKBONE)


def test_registered_with_three_strings_and_small_defaults():
    net = build_backbone(BACKBONE)
    assert BACKBONES[BACKBONE] is type(net) and net.backbone_name == BACKBONE
    assert (net.config["N"], net.config["M"], net.num_strings, net.padding_multiple) == (64, 96, 3, 64)
    assert net.max_symbols((2, 3)) == 96 * 8 * 12 + 64 * 2 * 3  # y at 4x z's resolution, and z


def test_forward_gives_one_synthesis_per_condition_and_the_likelihoods(x):
    net = build_backbone(BACKBONE, N=32, M=48).train()
    out = net(x)
    assert {c: t.shape for c, t in out["x_hat"].items()} == {"protect": x.shape, "full": x.shape}
    assert out["likelihoods"]["y"].shape == (1, 48, 8, 12) and out["likelihoods"]["z"].shape == (1, 32, 2, 3)
    assert all(((0 < t) & (t <= 1)).all() for t in out["likelihoods"].values())
    rate = sum(t.log2().sum() for t in out["likelihoods"].values())
    (-rate + sum(((t - x) ** 2).mean() for t in out["x_hat"].values())).backward()
    assert net.latent_codec["y"].context_prediction.weight.grad.abs().sum() > 0  # the context model trains


def test_decoding_recovers_the_coded_symbols_and_each_condition_decodes_its_own_way(model, x):
    with torch.inference_mode():
        coded = model.compress(x)
        assert len(coded["strings"]) == 3 and tuple(coded["shape"]) == model.latent_shape(128, 192) == (2, 3)
        y_hat, symbols = model.decode_latent(coded["strings"], coded["shape"])
        assert (symbols != 0).float().mean() > 0.3 and torch.equal(symbols, symbols.round())
        decodings = {c: model.decompress(coded["strings"], coded["shape"], c) for c in ("protect", "full")}
        biases = {c: model.g_s.cltg(condition_tensor(c))[0] for c in ("protect", "full")}
    assert decodings["protect"]["latent_digest"] == decodings["full"]["latent_digest"] == coded["latent_digest"]
    assert any(not torch.equal(p, f) for p, f in zip(biases["protect"], biases["full"]))
    assert not torch.equal(decodings["protect"]["x_hat"], decodings["full"]["x_hat"])
    assert y_hat.shape == (1, 48, 8, 12)


def test_the_strings_are_compressais_checkerboard_strings(model, x):
    """The symbol-returning passes write what CompressAI's CheckerboardLatentCodec writes, and its decoder reads
    them back to the same latent."""
    checkerboard, hyper_codec = model.latent_codec["y"], model.latent_codec["hyper"]
    with torch.inference_mode():
        y = model.g_a(x)
        params = hyper_codec.compress(y)["params"]
        strings, _ = checkerboard.compress_symbols(y, params)
        assert strings == CheckerboardLatentCodec.compress(checkerboard, y, params)["strings"]
        y_hat, _ = checkerboard.decompress_symbols(strings, params)
        theirs = CheckerboardLatentCodec.decompress(checkerboard, strings, y_hat.shape[1:], params)["y_hat"]
    assert torch.equal(y_hat, theirs)


def test_the_non_anchors_are_coded_given_the_anchors(model, x):
    """Anchors decode from the hyperprior alone; the non-anchors' string is read with the anchors as context, so a
    changed anchor string moves the non-anchors' symbols too (each pass's symbols are what its string coded)."""
    with torch.inference_mode():
        coded = model.compress(x)
        _, symbols = model.decode_latent(coded["strings"], coded["shape"])
        anchors = bytearray(coded["strings"][0][0])
        anchors[len(anchors) // 2] ^= 0xFF
        _, changed = model.decode_latent([[bytes(anchors)], *coded["strings"][1:]], coded["shape"])
    checkerboard = model.latent_codec["y"]
    differs = changed != symbols
    assert checkerboard._keep_only(differs.float(), "anchor").any()
    assert checkerboard._keep_only(differs.float(), "non_anchor").any()


def test_codec_round_trip_over_several_tiles(kodim07, weights):
    image = kodim07.crop((100, 100, 400, 300))  # 300x200 at 128 px tiles: 3x2 tiles
    data = psic_core.encode(image, model=str(weights), key="k", tile=128)
    f = container.read(data)
    assert len(f.tiles) == 6 and all(len(t.strings) == 3 for t in f.tiles)
    full = psic_core.decode(data, key="k", model=str(weights), output="numpy")
    protected = psic_core.decode(data, model=str(weights), output="numpy")
    assert full.shape == protected.shape == (200, 300, 3)
    assert not np.array_equal(full, protected)
    assert psic_core.decode(data, key="k", model=str(weights), output="numpy").tobytes() == full.tobytes()


def test_a_tile_must_carry_the_three_strings_and_their_symbols(photo, weights):
    f = container.read(psic_core.encode(photo, model=str(weights)))
    f.tiles[0].strings = f.tiles[0].strings[::2]  # the anchors and z, as a two-string backbone would write
    with pytest.raises(PsicFormatError, match="2 strings, the model codes 3"):
        psic_core.decode(container.serialize(f), model=str(weights))
    f = container.read(psic_core.encode(photo, model=str(weights)))
    f.tiles[0].latent_digest = bytes(16)
    with pytest.raises(PsicIntegrityError, match="desynchronised"):
        psic_core.decode(container.serialize(f), model=str(weights))


HOSTILE_STRINGS = """
import random, sys
import psic_core
from psic_core import container
random.seed(0)
original, weights = open(sys.argv[1], "rb").read(), sys.argv[2]
for which in range(3):
    for n in (0, 1, 7, 8, 9, 700):
        for fill in (b"\\x00", b"\\xff", None):
            f = container.read(original)
            f.tiles[0].strings[which] = random.randbytes(n) if fill is None else fill * n
            try:
                psic_core.decode(container.serialize(f), model=weights)
            except psic_core.PsicError:
                pass
print("survived")
"""


def test_hostile_strings_in_any_of_the_three_never_crash_the_process(photo, weights, tmp_path):
    """Garbage anchors also feed the non-anchors' context; the codec's guard padding and digest must still hold."""
    path = tmp_path / "x.psic"
    path.write_bytes(psic_core.encode(photo, model=str(weights)))
    out = subprocess.run([sys.executable, "-c", HOSTILE_STRINGS, str(path), str(weights)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "survived"


def test_half_copies_keep_the_context_model_float32_and_decode_the_original_files(photo, weights, tmp_path):
    copy = half_copy(weights, tmp_path / "half.safetensors")
    tensors = load_file(str(copy))
    halves = {k for k, v in tensors.items() if v.dtype == torch.float16}
    assert halves and not any(in_modules(k, ENTROPY_PATH) for k in halves)
    assert any(in_modules(k, ("context_prediction.",)) for k in tensors)
    assert any(in_modules(k, ENTROPY_MODELS) and v.dtype == torch.float32 for k, v in tensors.items())
    data = psic_core.encode(photo, model=str(weights))
    reference = psic_core.decode(data, full=True, model=str(weights), output="numpy")
    decoded = psic_core.decode(data, full=True, model=str(copy), output="numpy")  # the digest checks the symbols
    assert np.abs(decoded.astype(int) - reference).max() <= 8  # synthesis rounding only


def test_the_rate_distortion_trainer_exports_weights_that_code(kodim07, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, left in enumerate((0, 200, 400)):
        kodim07.crop((left, 100, left + 160, 260)).save(photos / f"{i}.png")
    out = tmp_path / "cb-rd.safetensors"
    rd.main(["--data", str(photos), "--backbone", BACKBONE, "--lmbda", "0.01", "--name", "cb-rd-q1", "--N", "32",
             "--M", "48", "--batch", "2", "--crop", "64", "--threads", "1", "--max-steps", "2", "--out", str(out)])
    info = describe(out)
    assert info.backbone == BACKBONE and (info.config["N"], info.config["M"]) == (32, 48)
    assert isinstance(instantiate(info), BACKBONES[BACKBONE])
    image = kodim07.crop((0, 0, 96, 64))
    decoded = psic_core.decode(psic_core.encode(image, model=str(out)), model=str(out), output="numpy")
    assert decoded.shape == (64, 96, 3)
