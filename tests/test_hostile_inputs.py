"""Hostile and misnamed inputs across the core, Pillow and imageio; writes that fail leave nothing behind."""

from __future__ import annotations

import struct
import zlib

import imageio.v3 as iio
import pytest
from PIL import Image

import psic_core
import psic_plugins  # noqa: F401  (registers the plugins)
from psic_core import container
from psic_core.cli import EXIT_ERROR, main
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


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` 8-bit grey pixels and holds none (68 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_with_a_psic_error_naming_the_limit(tmp_path, capsys, random_weights):
    bomb = png_header_only(30_000, 30_000)
    with pytest.raises(PsicFormatError, match="MAX_IMAGE_PIXELS"):
        psic_core.encode(bomb, model=random_weights.name)
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    assert main(["encode", str(path), "--model", random_weights.name]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MAX_IMAGE_PIXELS" in err
    assert not path.with_suffix(".psic").exists()


def test_an_image_larger_than_a_psic_file_holds_is_refused_before_its_pixels_are_read(random_weights):
    too_wide = png_header_only(container.MAX_SIDE + 1, 1)  # within Pillow's limit; its pixel data is missing
    with pytest.raises(PsicFormatError, match=f"at most {container.MAX_SIDE} pixels a side"):
        psic_core.encode(too_wide, model=random_weights.name)
