"""Hostile and misnamed inputs across the core, Pillow and imageio; writes that fail leave nothing behind."""

from __future__ import annotations

import imageio.v3 as iio
import pytest
from PIL import Image

import psic_core
import psic_plugins  # noqa: F401  (registers the plugins)
from psic_core.errors import PsicFormatError, PsicModelError
from weights_fixtures import random_codec_weights


@pytest.fixture(scope="module")
def psic_bytes(photo, random_weights):
    return psic_core.encode(photo, model=random_weights.name)


def test_a_png_named_psic_is_read_as_png(tmp_path, photo):
    path = tmp_path / "actually-a.psic"
    photo.save(path, "PNG")
    with Image.open(path) as im:
        assert im.format == "PNG"
    assert iio.imread(path).shape == (128, 192, 3)
    with pytest.raises(PsicFormatError, match="signature"):
        psic_core.decode(path)


def test_a_psic_named_png_is_read_as_psic(tmp_path, psic_bytes):
    path = tmp_path / "actually-a.png"
    path.write_bytes(psic_bytes)
    with Image.open(path) as im:
        assert im.format == "PSIC" and im.size == (192, 128)
    assert psic_core.info(path)["width"] == 192


def test_pillow_decompression_bomb_rules_apply_to_the_header(tmp_path, psic_bytes, monkeypatch):
    path = tmp_path / "x.psic"
    path.write_bytes(psic_bytes)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 192 * 128 // 4)  # the file is 4x the limit
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)


def test_directories_and_missing_paths(tmp_path):
    with pytest.raises(PsicFormatError, match="directory"):
        psic_core.decode(tmp_path)
    with pytest.raises((IsADirectoryError, PermissionError, OSError)):
        Image.open(tmp_path)
    with pytest.raises(FileNotFoundError):
        psic_core.decode(tmp_path / "missing.psic")


def test_a_failed_pillow_save_leaves_no_file(tmp_path, photo):
    target = tmp_path / "out.psic"
    with pytest.raises(PsicModelError):
        photo.save(target, model="no-such-weights")
    assert not target.exists()


def test_decode_never_modifies_its_input(tmp_path, psic_bytes):
    path = tmp_path / "x.psic"
    path.write_bytes(psic_bytes)
    before = path.stat().st_mtime_ns, path.read_bytes()
    psic_core.decode(path)
    with Image.open(path) as im:
        im.load()
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


def test_weights_deleted_after_encoding_are_named_in_the_error(tmp_path, photo):
    from psic_core.weights import registry

    path = random_codec_weights(tmp_path / "gone.safetensors", name="gone", seed=5, backbone="scale-hyperprior")
    sha = registry.register(path).sha256
    data = psic_core.encode(photo, model="gone")
    registry.unregister(path)
    path.unlink()
    assert "gone" not in {w.name for w in registry.all()}
    with pytest.raises(PsicModelError, match=f"gone with SHA-256 {sha}"):
        psic_core.decode(data)
