"""The .psic container on its own: serialise/parse, and every malformed input raises PsicFormatError."""

from __future__ import annotations

import struct
import zlib

import pytest

from psic_core import container
from psic_core.container import Header, Lock, PsicFile, Tile
from psic_core.errors import PsicFormatError


def make_file(width=200, height=130, tile=128, **extra) -> PsicFile:
    header = Header(width, height, "RGB", tile, tile, "mshp64-q2", "ab" * 32, {"protect": 0.0, "full": 1.0},
                    tile_overlap=16)
    tiles = [Tile(i, (2, 3), bytes(range(16)), [b"y-string-%d" % i, b"z"]) for i in range(header.tile_count)]
    return PsicFile(header, tiles=tiles, **extra)


def chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of every chunk."""
    out, pos = [], len(container.SIGNATURE)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((pos, kind))
        pos += 12 + length
    return out


def rechunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_round_trip_keeps_every_field():
    f = make_file(lock=Lock(b"s" * 16, b"v" * 32), icc_profile=b"icc", exif=b"Exif\0\0MM", text={"Title": "ünï"},
                  sealed=b"sealed", alpha=zlib.compress(b"\xff" * 10))
    parsed = container.read(container.serialize(f))
    assert parsed == f
    assert parsed.header.tile_grid == (2, 2)
    assert parsed.header.tile_box(3) == (128, 128, 200, 130)
    assert parsed.header.coded_box(3) == (112, 112, 200, 130) and parsed.header.coded_box(0) == (0, 0, 144, 130)


def test_overlap_is_bounded():
    f = make_file()
    f.header.tile_overlap = 40  # more than a quarter of a 128 px tile
    with pytest.raises(PsicFormatError, match="overlap"):
        container.serialize(f)


def test_header_only_stops_before_image_data():
    data = container.serialize(make_file())
    parsed = container.read(data, header_only=True)
    assert parsed.header.width == 200 and parsed.tiles == []


def test_every_truncation_is_a_format_error():
    data = container.serialize(make_file(lock=Lock(b"s" * 16, b"v" * 32), text={"a": "b"}))
    for end in range(len(data)):
        with pytest.raises(PsicFormatError):
            container.read(data[:end])


def test_any_flipped_bit_after_the_signature_is_caught():
    data = container.serialize(make_file(tile=256))
    for position in range(len(container.SIGNATURE), len(data)):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x10
        with pytest.raises(PsicFormatError):
            container.read(bytes(corrupt))


@pytest.mark.parametrize("prefix", [b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\x89PSIC\r\n\x1a"])
def test_foreign_signature(prefix):
    with pytest.raises(PsicFormatError, match="signature|truncated"):
        container.read(prefix + b"\0" * 64)
    assert not container.looks_like_psic(prefix)


def splice(data: bytes, before: bytes, new_chunk: bytes) -> bytes:
    offset = next(pos for pos, kind in chunks(data) if kind == before)
    return data[:offset] + new_chunk + data[offset:]


def test_unknown_ancillary_chunk_is_skipped_and_critical_rejected():
    data = container.serialize(make_file())
    parsed = container.read(splice(data, b"TILE", rechunk(b"zzZz", b"future")))
    assert parsed.skipped_chunks == ["zzZz"]
    with pytest.raises(PsicFormatError, match="unknown critical chunk ZZZZ"):
        container.read(splice(data, b"TILE", rechunk(b"ZZZZ", b"future")))


def test_future_version_is_rejected():
    data = container.serialize(make_file())
    head_offset, _ = chunks(data)[0]
    (length,) = struct.unpack(">I", data[head_offset : head_offset + 4])
    payload = bytes([2]) + data[head_offset + 9 : head_offset + 8 + length]
    data = data[:head_offset] + rechunk(b"HEAD", payload) + data[head_offset + 12 + length :]
    with pytest.raises(PsicFormatError, match="version 2"):
        container.read(data)


@pytest.mark.parametrize("width,height", [(0, 10), (10, 0), (70_000, 10), (30_000, 30_000)])
def test_dimensions_outside_limits(width, height):
    f = make_file()
    f.header.width, f.header.height = width, height
    with pytest.raises(PsicFormatError, match="limits"):
        container.serialize(f)
    # a hostile file announcing them is rejected while parsing the header, before anything is allocated
    data = container.serialize(make_file())
    head_offset, _ = chunks(data)[0]
    (length,) = struct.unpack(">I", data[head_offset : head_offset + 4])
    payload = bytearray(data[head_offset + 8 : head_offset + 8 + length])
    payload[2:10] = struct.pack(">II", width, height)
    hostile = data[:head_offset] + rechunk(b"HEAD", bytes(payload)) + data[head_offset + 12 + length :]
    with pytest.raises(PsicFormatError, match="limits"):
        container.read(hostile)


def test_structure_rules():
    data = container.serialize(make_file())
    offsets = dict((kind, pos) for pos, kind in chunks(data))
    with pytest.raises(PsicFormatError, match="after the IEND"):
        container.read(data + b"x")
    with pytest.raises(PsicFormatError, match="first chunk must be HEAD"):
        container.read(container.SIGNATURE + data[offsets[b"TILE"] :])
    with pytest.raises(PsicFormatError, match="duplicate"):
        container.read(splice(data, b"TILE", rechunk(b"iCCP", b"a") + rechunk(b"iCCP", b"b")))
    missing_tile = data[: offsets[b"TILE"]] + data[offsets[b"IEND"] :]
    with pytest.raises(PsicFormatError, match="tiles"):
        container.read(missing_tile)


def test_chunk_length_checked_against_file_size():
    data = bytearray(container.serialize(make_file()))
    offset = dict((kind, pos) for pos, kind in chunks(bytes(data)))[b"TILE"]
    data[offset : offset + 4] = struct.pack(">I", 0x7FFFFFFF)
    with pytest.raises(PsicFormatError, match="past the end"):
        container.read(bytes(data))
