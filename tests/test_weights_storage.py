"""Half-precision weights storage (weights.storage_state, weights/convert.py): smaller files that still decode the
files made with their float32 original."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file

import psic_core
from psic_core.errors import PsicModelError
from psic_core.weights import ENTROPY_PATH, describe, registry
from psic_core.weights.convert import half_copy
from weights_fixtures import random_codec_weights


@pytest.fixture()
def original(tmp_path):
    (tmp_path / "orig").mkdir()
    return random_codec_weights(tmp_path / "orig" / "store-q1.safetensors", name="store-q1", seed=5)


def test_half_copy_stores_float16_outside_the_entropy_path(original, tmp_path):
    copy = half_copy(original, tmp_path / "half.safetensors")
    tensors = load_file(str(copy))
    halves = {k for k, v in tensors.items() if v.dtype.itemsize == 2}
    assert halves and not any(k.startswith(ENTROPY_PATH) for k in halves)
    assert all(k.startswith(ENTROPY_PATH) or k in halves or not v.is_floating_point() for k, v in tensors.items())
    assert copy.stat().st_size < 0.8 * original.stat().st_size
    info, source = describe(copy), describe(original)
    assert (info.name, info.config, info.backbone) == (source.name, source.config, source.backbone)


def test_files_made_with_the_original_decode_with_the_half_copy(original, tmp_path, photo, monkeypatch):
    data = psic_core.encode(photo, model=str(original))
    reference = psic_core.decode(data, full=True, output="numpy", model=str(original))
    (tmp_path / "only").mkdir()
    copy = half_copy(original, tmp_path / "only" / "store-q1.safetensors")
    # only the copy is installed: the file names the original's SHA-256, the copy declares it decodes it
    monkeypatch.setenv("PSIC_WEIGHTS_PATH", str(copy.parent))
    decoded = psic_core.decode(data, full=True, output="numpy")  # the latent digest would fail on other symbols
    assert decoded.shape == reference.shape
    assert np.abs(decoded.astype(int) - reference).max() <= 8  # synthesis rounding only
    assert psic_core.decode(data, full=True, output="numpy", model=str(copy)).shape == reference.shape


def test_unrelated_weights_are_still_refused(original, tmp_path, photo):
    data = psic_core.encode(photo, model=str(original))
    other = random_codec_weights(tmp_path / "other.safetensors", name="store-q1", seed=6)
    with pytest.raises(PsicModelError, match="made with the weights"):
        psic_core.decode(data, full=True, model=str(other))


def test_the_original_itself_wins_over_a_copy_that_decodes_it(original, tmp_path):
    copy = half_copy(original, tmp_path / "half.safetensors")
    for path in (copy, original):
        registry.register(path)
    try:
        assert registry.by_sha256(describe(original).sha256).path == describe(original).path
    finally:
        for path in (copy, original):
            registry.unregister(path)


def test_a_fresh_half_copy_is_new_weights_with_only_the_entropy_models_float32(original, tmp_path):
    from psic_core.weights import ENTROPY_MODELS, decodes_sha256

    fresh = half_copy(original, tmp_path / "fresh.safetensors", name="store-q1-new", fresh=True)
    kept = half_copy(original, tmp_path / "kept.safetensors")
    tensors = load_file(str(fresh))
    assert {k for k, v in tensors.items() if v.dtype.itemsize == 4 and v.is_floating_point()} == {
        k for k in tensors if k.startswith(ENTROPY_MODELS) and tensors[k].is_floating_point()}
    assert fresh.stat().st_size < kept.stat().st_size
    info = describe(fresh)
    assert info.name == "store-q1-new" and decodes_sha256(info) == []
