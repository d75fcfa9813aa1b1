"""Sealed metadata: GPS, camera and time stay private under the key; orientation and colour stay correct."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageCms, ImageOps

import psic_core
from psic_core import container
from psic_core.cli import main
from psic_core.errors import PsicIntegrityError, PsicKeyError

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description creator="Ada"/></rdf:RDF></x:xmpmeta>'


@pytest.fixture(scope="module")
def jpeg_with_metadata(photo) -> bytes:
    """A real JPEG carrying GPS, capture time, camera serial, orientation 6, an ICC profile and XMP."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to view
    exif[0x010F] = "Acme"
    exif[0x0110] = "Snap 1"
    exif[0x013B] = "Ada Lovelace"  # Artist
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x9003] = "2026:05:04 12:34:56"  # DateTimeOriginal
    exif_ifd[0xA431] = "SN-0042"  # BodySerialNumber
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.5)
    gps[3], gps[4] = "E", (2.0, 17.0, 40.0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95, exif=exif, icc_profile=icc, xmp=XMP)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source(jpeg_with_metadata):
    im = Image.open(io.BytesIO(jpeg_with_metadata))
    im.load()
    return im


@pytest.fixture(scope="module")
def locked(source, random_weights) -> bytes:
    return psic_core.encode(source, model=random_weights.name, key="k")


def test_without_the_key_no_private_metadata_comes_back(locked, source):
    protected = psic_core.decode(locked)
    exif = protected.getexif()
    assert dict(exif) == {0x0112: 6}
    assert not exif.get_ifd(0x8825) and not exif.get_ifd(0x8769)
    assert "xmp" not in protected.info
    for secret in (b"SN-0042", b"Ada Lovelace", b"2026:05:04", b"Acme"):
        assert secret not in locked
    info = psic_core.info(locked)
    assert info["sealed_metadata_bytes"] > len(source.info["exif"]) and info["exif_bytes"] > 0


def test_with_the_key_the_original_bytes_come_back(locked, source):
    full = psic_core.decode(locked, key="k")
    assert full.info["exif"] == source.info["exif"]
    assert full.info["xmp"] == source.info["xmp"]
    assert full.getexif().get_ifd(0x8825)[1] == "N"
    # the key opens metadata even when the protected pixels are asked for
    assert psic_core.decode(locked, key="k", full=False).info["exif"] == source.info["exif"]


def test_orientation_and_colour_profile_are_honoured_in_the_default_view(locked, source):
    protected = psic_core.decode(locked)
    assert protected.info["icc_profile"] == source.info["icc_profile"]
    upright = ImageOps.exif_transpose(protected)
    assert upright.size == (source.height, source.width)


def test_summary_lists_the_sealed_fields(locked):
    summary = psic_core.codec.private_metadata(locked, "k").summary()
    assert summary["gps"] is True and summary["camera"] == "Acme Snap 1"
    assert summary["serial_number"] == "SN-0042" and summary["time"] == "2026:05:04 12:34:56"
    with pytest.raises(PsicKeyError):
        psic_core.codec.private_metadata(locked, "wrong")


def _replace_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    pos = len(container.SIGNATURE)
    while True:
        length, current = struct.unpack(">I4s", data[pos : pos + 8])
        if current == kind:
            new = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
            return data[:pos] + new + data[pos + 12 + length :]
        pos += 12 + length


def test_tampering_is_detected(locked):
    f = container.read(locked)
    flipped = bytearray(f.sealed)
    flipped[-1] ^= 1
    with pytest.raises(PsicIntegrityError, match="authentication"):
        psic_core.decode(_replace_chunk(locked, b"sEAL", bytes(flipped)), key="k")
    f.header.model_name = "other-name"  # a header field the seal authenticates (the CRC is recomputed)
    with pytest.raises(PsicIntegrityError):
        psic_core.decode(container.serialize(f), key="k")
    with pytest.raises(PsicKeyError):
        psic_core.decode(locked, key="wrong")


def test_without_a_key_metadata_is_dropped_unless_kept(source, random_weights):
    dropped = psic_core.encode(source, model=random_weights.name)
    assert psic_core.info(dropped)["sealed_metadata_bytes"] == 0
    assert dict(psic_core.decode(dropped).getexif()) == {0x0112: 6}
    kept = psic_core.decode(psic_core.encode(source, model=random_weights.name, keep_metadata=True))
    assert kept.info["exif"] == source.info["exif"] and kept.info["xmp"] == source.info["xmp"]


def test_strip_removes_private_metadata_and_keeps_the_image(locked):
    stripped = psic_core.codec.strip(locked)
    assert psic_core.info(stripped)["sealed_metadata_bytes"] == 0
    assert container.read(stripped).tiles == container.read(locked).tiles
    assert dict(psic_core.decode(stripped, key="k").getexif()) == {0x0112: 6}


def test_cli_notice_info_and_strip(tmp_path, capsys, jpeg_with_metadata, random_weights):
    jpeg = tmp_path / "gps.jpg"
    jpeg.write_bytes(jpeg_with_metadata)
    assert main(["encode", str(jpeg), "--model", random_weights.name]) == 0
    assert "metadata dropped" in capsys.readouterr().err
    assert main(["encode", str(jpeg), "--model", random_weights.name, "--key", "k", "--force"]) == 0
    capsys.readouterr()
    psic = jpeg.with_suffix(".psic")
    assert main(["info", str(psic), "--key", "k"]) == 0
    out = capsys.readouterr().out
    assert "'gps': True" in out and "SN-0042" in out
    assert main(["strip", str(psic)]) == 0
    assert psic_core.info(psic)["sealed_metadata_bytes"] == 0


def test_iptc_is_sealed_and_returned_byte_identical(jpeg_with_metadata, random_weights):
    record = b"\x1c\x02\x50\x00\x0bAda Lovelace"[:-1]  # IPTC 2:80 By-line
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(record)) + record
    content = b"Photoshop 3.0\x00" + resource
    segment = b"\xff\xed" + struct.pack(">H", len(content) + 2) + content
    jpeg = jpeg_with_metadata[:2] + segment + jpeg_with_metadata[2:]
    data = psic_core.encode(jpeg, model=random_weights.name, key="k")
    assert b"Ada Lovelac" not in data
    assert psic_core.decode(data, key="k").info["iptc"] == content
    assert "iptc" not in psic_core.decode(data).info


def test_pillow_and_imageio_show_no_gps_without_the_key_and_the_original_with_it(tmp_path, source, locked):
    import imageio.v3 as iio

    import psic_plugins

    path = tmp_path / "gps.psic"
    path.write_bytes(locked)
    with Image.open(path) as im:
        assert not im.getexif().get_ifd(0x8825)
    with Image.open(path) as im:
        im.unlock("k")
        exif = im.getexif()
        assert exif.get_ifd(0x8825)[1] == "N" and im.info["exif"] == source.info["exif"]
    with psic_plugins.unlocked("k"), Image.open(path) as im:
        im.load()
        assert im.info["exif"] == source.info["exif"]
    assert "GPS" not in str(iio.immeta(path)) and iio.immeta(path)["exif"] != source.info["exif"]
    meta = iio.immeta(path, key="k")
    assert meta["exif"] == source.info["exif"] and meta["sealed_metadata"]["gps"] is True
    with pytest.raises(PsicKeyError):
        iio.immeta(path, key="wrong")


def test_a_hostile_orientation_value_is_not_made_public():
    """Regression (fuzzer crasher): a non-integer orientation crashed Pillow's EXIF writer in strip/encode."""
    from psic_core.metadata import orientation_exif

    # a big-endian TIFF IFD with one entry: Orientation (0x0112) as the ASCII string "six"
    ascii_orientation = b"Exif\0\0MM\0\x2a\0\0\0\x08" + b"\0\x01" + b"\x01\x12\0\x02\0\0\0\x04six\0" + b"\0" * 4
    assert orientation_exif(ascii_orientation) is None
    assert orientation_exif(b"Exif\0\0garbage") is None
    exif = Image.Exif()
    exif[0x0112] = 6
    public = Image.Exif()
    public.load(orientation_exif(exif.tobytes()))
    assert dict(public) == {0x0112: 6}


@pytest.mark.parametrize("text, rule", [
    ({"": "x"}, "must not be empty"),
    ({"a\0b": "x"}, "must not contain NUL"),
    ({"\u043a\u043b\u044e\u0447": "x"}, "must be Latin-1"),
    ({"k": "\udcff"}, "not valid Unicode"),
    ({"k": b"bytes"}, "are str"),
    ({f"k{i}": "x" for i in range(container.MAX_TEXT_ENTRIES + 1)}, f"at most {container.MAX_TEXT_ENTRIES}"),
])
def test_text_a_reader_would_refuse_is_refused_before_encoding(random_weights, text, rule):
    # b"not an image" would fail later, when the image is read: the text is checked first
    with pytest.raises(ValueError, match=rule):
        psic_core.encode(b"not an image", model=random_weights.name, text=text)


def test_the_writer_accepts_exactly_what_the_reader_reads(photo, random_weights):
    text = {f"k\u00e9{i}": f"value \u2713 {i}\0with NUL" for i in range(container.MAX_TEXT_ENTRIES)}
    data = psic_core.encode(photo, model=random_weights.name, text=text)
    assert container.read(data).text == text
