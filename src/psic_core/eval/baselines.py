"""Classical baselines through Pillow: JPEG and WebP round trips, quality sweeps, and matching a target bpp.

JPEG: Pillow's libjpeg, 4:2:0 chroma subsampling (Pillow's default), optimised Huffman tables. WebP: libwebp lossy,
``method=4`` (Pillow's default effort). Sizes are whole files (headers included), like the ``.psic`` sizes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, features

CODECS = ("jpeg", "webp")
CODEC_LABEL = {"jpeg": "JPEG", "webp": "WebP"}
#: default quality sweeps for the RD curves (spanning ~0.1 to ~3 bpp on Kodak-like photos)
SWEEP = {
    "jpeg": (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
    "webp": (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
}
QUICK_SWEEP = {"jpeg": (10, 30, 50, 75, 90), "webp": (5, 30, 50, 75, 90)}
QUALITY_RANGE = {"jpeg": (1, 95), "webp": (0, 100)}


@dataclass(frozen=True)
class Coded:
    codec: str
    quality: int
    data: bytes
    bpp: float


def versions() -> dict:
    return {"pillow": Image.__version__, "libjpeg": features.version("jpg"), "libwebp": features.version("webp")}


def encode(rgb: np.ndarray, codec: str, quality: int) -> bytes:
    """``rgb`` (H, W, 3) uint8 compressed with ``codec`` at ``quality``."""
    buffer = io.BytesIO()
    im = Image.fromarray(rgb, "RGB")
    if codec == "jpeg":
        im.save(buffer, "JPEG", quality=int(quality), optimize=True)
    elif codec == "webp":
        im.save(buffer, "WEBP", quality=int(quality), method=4)
    else:
        raise ValueError(f"unknown baseline codec {codec!r} (one of {CODECS})")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def code(rgb: np.ndarray, codec: str, quality: int) -> Coded:
    data = encode(rgb, codec, quality)
    return Coded(codec, int(quality), data, 8 * len(data) / (rgb.shape[0] * rgb.shape[1]))


def match_bpp(rgb: np.ndarray, codec: str, target_bpp: float) -> Coded:
    """The quality setting whose file size is closest to ``target_bpp`` (binary search; size grows with quality).

    When even the lowest quality is larger than the target, that lowest setting is returned: the caller reports the
    bpp actually reached, so a mismatch is visible rather than hidden.
    """
    low, high = QUALITY_RANGE[codec]
    cache: dict[int, Coded] = {}

    def at(q: int) -> Coded:
        if q not in cache:
            cache[q] = code(rgb, codec, q)
        return cache[q]

    # largest quality whose bpp <= target
    lo, hi = low, high
    if at(lo).bpp > target_bpp:
        return at(lo)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if at(mid).bpp <= target_bpp:
            lo = mid
        else:
            hi = mid - 1
    best = at(lo)
    if lo < high and abs(at(lo + 1).bpp - target_bpp) < abs(best.bpp - target_bpp):
        best = at(lo + 1)
    return best
