"""What the fuzzer and the replay test run on each input: every parser entry point, and the documented outcome.

Every input must either work or raise a documented exception (``ALLOWED``); anything else — another exception
type, a crash, a hang — is a bug. Inputs are also run with every chunk CRC recomputed, so mutations reach the
parsers behind the CRC check instead of stopping at it.
"""

from __future__ import annotations

import io
import struct
import zlib

import psic_core
from psic_core import container

#: the documented failure modes (docs/format.md, "Errors")
ALLOWED = (psic_core.PsicError,)
KEY = "fuzz-key"  # the key the seed corpus is locked with


def with_fixed_crcs(data: bytes) -> bytes:
    """``data`` with each chunk's CRC recomputed, as far as the chunk structure can be followed."""
    sig = len(container.SIGNATURE)
    if len(data) < sig:
        return data
    out, pos = bytearray(data[:sig]), sig
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(data):
            break
        body = data[pos + 4 : end]
        out += data[pos:end] + struct.pack(">I", zlib.crc32(body))
        pos = end + 4
    return bytes(out + data[pos:])


def run_core(data: bytes) -> None:
    for call in (
        lambda: psic_core.info(data),
        lambda: psic_core.decode(data),
        lambda: psic_core.decode(data, key=KEY),
        lambda: psic_core.codec.strip(data),
        lambda: psic_core.codec.private_metadata(data, KEY).summary(),
    ):
        try:
            call()
        except ALLOWED:
            pass


def run_plugins(data: bytes) -> None:
    """Pillow and imageio entry points, for inputs that carry the psic signature (others go to other plugins)."""
    if not container.looks_like_psic(data):
        return
    import imageio.v3 as iio
    from PIL import Image

    import psic_plugins  # noqa: F401  (registers the Pillow and imageio plugins)

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except ALLOWED:
        pass
    try:
        iio.imread(data, extension=".psic")
    except ALLOWED:
        pass


def run_all(data: bytes) -> None:
    for variant in (data, with_fixed_crcs(data)):
        run_core(variant)
        run_plugins(variant)
