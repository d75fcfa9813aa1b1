"""The ``.psic`` v1 container: pure Python, no torch. docs/format.md is the specification this implements.

A file is the 9-byte signature followed by chunks; each chunk is ``length (u32 BE) | type (4 ASCII letters) |
data | CRC-32 of type and data (u32 BE)``. A type starting with an upper-case letter is critical (a reader that
does not know it must reject the file), a lower-case one is ancillary (skipped when unknown).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from .errors import PsicFormatError

SIGNATURE = b"\x89PSIC\r\n\x1a\n"
FORMAT_VERSION = 1

#: largest image psic writes or reads (each side and pixel count); Pillow's own MAX_IMAGE_PIXELS applies on top
MAX_SIDE = 65_535
MAX_PIXELS = 1 << 27
MAX_CHUNK = 1 << 30
#: a tile is decoded in one piece, so its side bounds the decoder's working memory (~1 GB at 2048)
MAX_TILE = 2048
MAX_OVERLAP = 256
#: bounds on optional metadata so a hostile file cannot make a reader hold arbitrary amounts of it
MAX_METADATA = 16 << 20
MAX_TEXT_ENTRIES = 64

# source modes: the pixels are always coded as RGB; these record how to present them again
MODES = ("RGB", "L", "RGBA", "LA")

# chunk types
HEAD, LOCK, TILE, IEND = b"HEAD", b"LOCK", b"TILE", b"IEND"
ALPHA, ICC, EXIF, TEXT, SEALED, CLEAR_METADATA = b"aLPH", b"iCCP", b"eXIf", b"tEXt", b"sEAL", b"mETA"
#: the quality a variable-rate model coded at; ancillary so that readers from before it still open such files
QUALITY = b"qLTY"


@dataclass
class Header:
    width: int
    height: int
    mode: str
    tile_width: int
    tile_height: int
    model_name: str
    model_sha256: str
    conditions: dict[str, float]
    default_condition: str = "protect"
    version: int = FORMAT_VERSION
    #: pixels each tile's coded region extends into its neighbours; decoders blend across the overlap (no seams)
    tile_overlap: int = 0
    #: the quality a variable-rate model coded the tiles at (the ``qLTY`` chunk); None for one-rate models
    quality: float | None = None

    @property
    def tile_grid(self) -> tuple[int, int]:
        """(columns, rows) of the tile grid, tiles in row-major order."""
        return -(-self.width // self.tile_width), -(-self.height // self.tile_height)

    @property
    def tile_count(self) -> int:
        cols, rows = self.tile_grid
        return cols * rows

    def tile_box(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of tile ``index`` in image pixels."""
        cols, _ = self.tile_grid
        left, top = (index % cols) * self.tile_width, (index // cols) * self.tile_height
        return left, top, min(left + self.tile_width, self.width), min(top + self.tile_height, self.height)

    def coded_box(self, index: int) -> tuple[int, int, int, int]:
        """The region tile ``index`` codes: its box grown by the overlap on every side, within the image."""
        left, top, right, bottom = self.tile_box(index)
        ov = self.tile_overlap
        return max(left - ov, 0), max(top - ov, 0), min(right + ov, self.width), min(bottom + ov, self.height)


@dataclass
class Lock:
    """scrypt parameters, salt and verifier for the key that unlocks the full decoding (never the key)."""

    salt: bytes
    verifier: bytes
    log2_n: int = 14
    r: int = 8
    p: int = 1
    kdf: int = 1  # 1 = scrypt + HKDF-SHA256 (docs/format.md)


@dataclass
class Tile:
    index: int
    latent_shape: tuple[int, int]
    latent_digest: bytes
    strings: list[bytes]


@dataclass
class PsicFile:
    header: Header
    lock: Lock | None = None
    tiles: list[Tile] = field(default_factory=list)
    alpha: bytes | None = None  # zlib-compressed alpha plane, width*height bytes
    icc_profile: bytes | None = None
    exif: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)
    sealed: bytes | None = None  # AEAD-sealed private metadata (see metadata.py)
    clear_metadata: bytes | None = None  # private metadata kept in the clear on request (metadata.py's record)
    skipped_chunks: list[str] = field(default_factory=list)

    @property
    def locked(self) -> bool:
        return self.lock is not None


# --- rules shared by writing and reading --------------------------------------------------------------------


def check_text_entry(keyword: str, value: str, entries_before: int) -> None:
    """The rules for one ``tEXt`` entry, the same for writers and readers (a writer must not write what a reader
    refuses): at most ``MAX_TEXT_ENTRIES`` entries; a keyword of Latin-1 text, not empty, without NUL (NUL ends the
    keyword); a value of Unicode text (stored as UTF-8)."""
    if entries_before >= MAX_TEXT_ENTRIES:
        raise PsicFormatError(f"at most {MAX_TEXT_ENTRIES} tEXt entries are allowed")
    if not isinstance(keyword, str) or not isinstance(value, str):
        raise PsicFormatError(f"tEXt keywords and values are str, not {type(keyword).__name__}: "
                              f"{type(value).__name__}")
    if not keyword:
        raise PsicFormatError("a tEXt keyword must not be empty")
    if "\0" in keyword:
        raise PsicFormatError(f"a tEXt keyword must not contain NUL: {keyword!r}")
    try:
        keyword.encode("latin-1")
    except UnicodeEncodeError:
        raise PsicFormatError(f"a tEXt keyword must be Latin-1 text: {keyword!r}") from None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PsicFormatError(f"the tEXt value of {keyword!r} is not valid Unicode text") from None


def check_text(text: dict[str, str]) -> None:
    """``check_text_entry`` for every entry of a writer's ``text``."""
    for entries_before, (keyword, value) in enumerate(text.items()):
        check_text_entry(keyword, value, entries_before)


# --- writing -------------------------------------------------------------------------------------------------


def stored_quality(quality: float) -> float:
    """``quality`` as the ``qLTY`` chunk stores it (float32): what an encoder must code at, so that the decoder,
    which has only the stored value, derives the same rate."""
    return struct.unpack(">f", struct.pack(">f", quality))[0]


def _chunk(kind: bytes, data: bytes) -> bytes:
    if len(data) > MAX_CHUNK:
        raise PsicFormatError(f"{kind.decode()} chunk of {len(data)} bytes exceeds the format limit")
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _short_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise PsicFormatError(f"name too long for the header: {text[:40]!r}...")
    return bytes([len(raw)]) + raw


def _encode_header(h: Header) -> bytes:
    _check_header(h)
    out = struct.pack(">BBIIBHHH", h.version, 0, h.width, h.height, MODES.index(h.mode), h.tile_width, h.tile_height,
                      h.tile_overlap)
    names = list(h.conditions)
    out += bytes([names.index(h.default_condition), len(names)])
    for name in names:
        out += _short_str(name) + struct.pack(">f", h.conditions[name])
    return out + _short_str(h.model_name) + bytes.fromhex(h.model_sha256)


def _encode_lock(lk: Lock) -> bytes:
    return bytes([lk.kdf, lk.log2_n, lk.r, lk.p, len(lk.salt)]) + lk.salt + lk.verifier


def associated_data(f: PsicFile) -> bytes:
    """The header fields sealed metadata authenticates: HEAD and LOCK chunk data, as serialised."""
    return _encode_header(f.header) + (_encode_lock(f.lock) if f.lock else b"")


def serialize(f: PsicFile) -> bytes:
    head = _chunk(HEAD, _encode_header(f.header))
    if len(f.tiles) != f.header.tile_count:
        raise PsicFormatError(f"{len(f.tiles)} tiles for a grid of {f.header.tile_count}")
    parts = [SIGNATURE, head]
    if f.lock:
        parts.append(_chunk(LOCK, _encode_lock(f.lock)))
    if f.header.quality is not None:
        parts.append(_chunk(QUALITY, struct.pack(">f", f.header.quality)))
    if f.icc_profile:
        parts.append(_chunk(ICC, f.icc_profile))
    if f.exif:
        parts.append(_chunk(EXIF, f.exif))
    check_text(f.text)
    for keyword, value in f.text.items():
        parts.append(_chunk(TEXT, keyword.encode("latin-1") + b"\0" + value.encode("utf-8")))
    if f.sealed:
        parts.append(_chunk(SEALED, f.sealed))
    if f.clear_metadata:
        parts.append(_chunk(CLEAR_METADATA, f.clear_metadata))
    if f.alpha is not None:
        parts.append(_chunk(ALPHA, f.alpha))
    for tile in f.tiles:
        data = struct.pack(">IHH", tile.index, *tile.latent_shape) + tile.latent_digest + bytes([len(tile.strings)])
        data += b"".join(struct.pack(">I", len(s)) + s for s in tile.strings)
        parts.append(_chunk(TILE, data))
    parts.append(_chunk(IEND, b""))
    return b"".join(parts)


# --- reading -------------------------------------------------------------------------------------------------


class _Reader:
    """Bounded reads from a chunk's data; running past its end is a format error."""

    def __init__(self, data: bytes, kind: bytes):
        self.data, self.pos, self.kind = data, 0, kind.decode()

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PsicFormatError(f"{self.kind} chunk is too short")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def short_str(self) -> str:
        try:
            return self.take(self.take(1)[0]).decode("utf-8")
        except UnicodeDecodeError:
            raise PsicFormatError(f"{self.kind} chunk holds a name that is not UTF-8") from None

    def done(self):
        if self.pos != len(self.data):
            raise PsicFormatError(f"{self.kind} chunk has {len(self.data) - self.pos} unexpected trailing bytes")


def _check_header(h: Header):
    if h.version != FORMAT_VERSION:
        raise PsicFormatError(f"unsupported .psic format version {h.version} (this reader supports {FORMAT_VERSION})")
    if not (0 < h.width <= MAX_SIDE and 0 < h.height <= MAX_SIDE) or h.width * h.height > MAX_PIXELS:
        raise PsicFormatError(f"image size {h.width}x{h.height} is outside psic's limits")
    if h.mode not in MODES:
        raise PsicFormatError(f"unknown source mode {h.mode!r}")
    for side in (h.tile_width, h.tile_height):
        if side < 64 or side % 64 or side > MAX_TILE:
            raise PsicFormatError(f"tile side {side} must be a multiple of 64 between 64 and {MAX_TILE}")
    if not 0 <= h.tile_overlap <= MAX_OVERLAP or 4 * h.tile_overlap > min(h.tile_width, h.tile_height):
        raise PsicFormatError(f"tile overlap {h.tile_overlap} must be 0..{MAX_OVERLAP} and at most a quarter tile")
    if h.default_condition not in h.conditions:
        raise PsicFormatError("default condition missing from the condition table")
    if len(h.model_sha256) != 64:
        raise PsicFormatError("model SHA-256 must be 32 bytes")
    if h.quality is not None and not math.isfinite(h.quality):
        raise PsicFormatError(f"quality {h.quality} is not a finite number")


def _decode_header(data: bytes) -> Header:
    r = _Reader(data, HEAD)
    version, _flags, width, height, mode, tile_w, tile_h, overlap = r.unpack(">BBIIBHHH")
    if version != FORMAT_VERSION:
        raise PsicFormatError(f"unsupported .psic format version {version} (this reader supports {FORMAT_VERSION})")
    if mode >= len(MODES):
        raise PsicFormatError(f"unknown source mode {mode}")
    default_index, count = r.unpack(">BB")
    conditions = {}
    for _ in range(count):
        name = r.short_str()
        (conditions[name],) = r.unpack(">f")
    if default_index >= count:
        raise PsicFormatError("default condition index outside the condition table")
    model_name = r.short_str()
    sha = r.take(32).hex()
    r.done()
    header = Header(width, height, MODES[mode], tile_w, tile_h, model_name, sha, conditions,
                    list(conditions)[default_index], version, overlap)
    _check_header(header)
    return header


def _decode_lock(data: bytes) -> Lock:
    r = _Reader(data, LOCK)
    kdf, log2_n, rr, p, salt_len = r.unpack(">BBBBB")
    if kdf != 1:
        raise PsicFormatError(f"unknown key derivation {kdf}")
    salt, verifier = r.take(salt_len), r.take(32)
    r.done()
    return Lock(salt, verifier, log2_n, rr, p, kdf)


def _decode_tile(data: bytes) -> Tile:
    r = _Reader(data, TILE)
    index, zh, zw = r.unpack(">IHH")
    digest = r.take(16)
    strings = [r.take(r.unpack(">I")[0]) for _ in range(r.take(1)[0])]
    r.done()
    if not strings or zh == 0 or zw == 0:
        raise PsicFormatError("TILE chunk without entropy-coded strings")
    return Tile(index, (zh, zw), digest, strings)


def _read_exact(fp: BinaryIO, n: int, what: str) -> bytes:
    data = fp.read(n)
    if len(data) != n:
        raise PsicFormatError(f"file truncated in {what}")
    return data


def _stream_size(fp: BinaryIO) -> int | None:
    try:
        here = fp.tell()
        end = fp.seek(0, io.SEEK_END)
        fp.seek(here)
        return end - here
    except (OSError, AttributeError, ValueError):
        return None


def read(source: bytes | bytearray | memoryview | BinaryIO, *, header_only: bool = False) -> PsicFile:
    """Parse a .psic file from bytes or a binary file object (read from its current position).

    ``header_only`` stops before the first TILE chunk (what an image library's ``open`` needs). Every problem
    raises ``PsicFormatError``; chunk lengths are checked against the bytes left before anything is read.
    """
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    remaining = _stream_size(fp)
    if _read_exact(fp, len(SIGNATURE), "the signature") != SIGNATURE:
        raise PsicFormatError("not a .psic file (bad signature)")
    if remaining is not None:
        remaining -= len(SIGNATURE)
    result: PsicFile | None = None
    seen: set[bytes] = set()
    while True:
        length, kind = struct.unpack(">I4s", _read_exact(fp, 8, "a chunk header"))
        if not kind.isalpha() or not kind.isascii():
            raise PsicFormatError(f"invalid chunk type {kind!r}")
        name = kind.decode("ascii")
        if length > MAX_CHUNK or (remaining is not None and 12 + length > remaining):
            raise PsicFormatError(f"{name} chunk length {length} runs past the end of the file")
        if remaining is not None:
            remaining -= 12 + length
        if header_only and kind == TILE and result is not None:
            return result
        data = _read_exact(fp, length, f"the {name} chunk")
        (crc,) = struct.unpack(">I", _read_exact(fp, 4, f"the {name} CRC"))
        if zlib.crc32(kind + data) != crc:
            raise PsicFormatError(f"CRC mismatch in the {name} chunk (the file is corrupt)")
        if result is None:
            if kind != HEAD:
                raise PsicFormatError("the first chunk must be HEAD")
            result = PsicFile(_decode_header(data))
            seen.add(kind)
            continue
        if kind in seen and kind in (HEAD, LOCK, QUALITY, ALPHA, ICC, EXIF, SEALED, CLEAR_METADATA):
            raise PsicFormatError(f"duplicate {name} chunk")
        seen.add(kind)
        if kind == IEND:
            if length:
                raise PsicFormatError("IEND chunk must be empty")
            break
        elif kind == LOCK:
            if result.tiles:
                raise PsicFormatError("LOCK chunk after image data")
            result.lock = _decode_lock(data)
        elif kind == QUALITY:
            if result.tiles:
                raise PsicFormatError("qLTY chunk after image data")
            r = _Reader(data, QUALITY)
            (result.header.quality,) = r.unpack(">f")
            r.done()
            _check_header(result.header)
        elif kind == TILE:
            tile = _decode_tile(data)
            if tile.index != len(result.tiles) or tile.index >= result.header.tile_count:
                raise PsicFormatError(f"TILE {tile.index} out of order or outside the tile grid")
            result.tiles.append(tile)
        elif kind in (ALPHA, ICC, EXIF, SEALED, CLEAR_METADATA):
            if length > MAX_METADATA and kind != ALPHA:
                raise PsicFormatError(f"{name} chunk larger than the {MAX_METADATA}-byte metadata limit")
            attribute = {ALPHA: "alpha", ICC: "icc_profile", EXIF: "exif", SEALED: "sealed",
                         CLEAR_METADATA: "clear_metadata"}[kind]
            setattr(result, attribute, data)
        elif kind == TEXT:
            keyword, sep, value = data.partition(b"\0")
            if not sep:
                raise PsicFormatError("tEXt chunk without the NUL after its keyword")
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise PsicFormatError("tEXt value is not UTF-8") from None
            check_text_entry(keyword.decode("latin-1"), value, len(result.text))
            result.text[keyword.decode("latin-1")] = value
        elif name[0].isupper():
            raise PsicFormatError(f"unknown critical chunk {name}: this file needs a newer psic")
        else:
            result.skipped_chunks.append(name)
    if len(result.tiles) != result.header.tile_count:
        raise PsicFormatError(f"file has {len(result.tiles)} of {result.header.tile_count} tiles")
    if fp.read(1):
        raise PsicFormatError("data after the IEND chunk")
    return result


def looks_like_psic(prefix: bytes) -> bool:
    """Cheap magic check for image libraries (``_accept``)."""
    return prefix[: len(SIGNATURE)] == SIGNATURE
