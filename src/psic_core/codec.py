"""Encode and decode orchestration: image <-> tensor, padding and tiling, container and key lock.

torch is imported lazily, inside the functions that run a model, so ``info`` and header reads stay light.
"""

from __future__ import annotations

import io
import os
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Union

import numpy as np
from PIL import Image

from . import container, lock, metadata
from .conditions import CONDITION_VALUES, DEFAULT_CONDITION
from .container import Header, PsicFile, Tile
from .errors import PsicFormatError, PsicIntegrityError, PsicModelError
from .weights import DEFAULT_QUALITY, WeightsInfo, decodes_sha256, load_model, registry

#: pixels per tile side; 768x512 photos are one tile, larger ones are split so memory stays bounded
DEFAULT_TILE = 1024
#: each tile also codes this many pixels of its neighbours, and decoders cross-fade there: without it, tiles coded
#: independently meet at visible seams (measured about 4.7 dB lower PSNR along the borders at 1024 px tiles)
DEFAULT_TILE_OVERLAP = 32

ImageInput = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray]
PsicInput = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]
Progress = Callable[[int, int], None]


# --- inputs --------------------------------------------------------------------------------------------------


def open_image(image: ImageInput) -> Image.Image:
    """The encoder's input as a loaded PIL image. Files and bytes are checked against psic's size limits before
    their pixels are decoded; unreadable or oversized ones raise ``PsicFormatError`` naming the limit."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ValueError(f"arrays must be uint8 HxW, HxWx1, HxWx3 or HxWx4, not {image.dtype} {image.shape}")
        return Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = io.BytesIO(bytes(image))
    try:
        opened = Image.open(image)
    except Image.DecompressionBombError as exc:  # not an OSError; raised from the header, before any pixels
        raise PsicFormatError(f"the input image is too large: {exc} (Pillow's Image.MAX_IMAGE_PIXELS limit)") from None
    except OSError as exc:  # includes UnidentifiedImageError and missing files
        raise PsicFormatError(f"cannot read the input image: {exc}") from None
    try:
        check_size(*opened.size)
        opened.load()
    except OSError as exc:
        opened.close()
        raise PsicFormatError(f"cannot read the input image: {exc}") from None
    except BaseException:
        opened.close()
        raise
    return opened


def check_size(width: int, height: int) -> None:
    """Refuse an image outside the sizes a .psic file can hold (``container.MAX_SIDE``, ``MAX_PIXELS``)."""
    if not (0 < width <= container.MAX_SIDE and 0 < height <= container.MAX_SIDE) \
            or width * height > container.MAX_PIXELS:
        raise PsicFormatError(f"the input image is {width}x{height}; psic encodes at most {container.MAX_SIDE} "
                              f"pixels a side and {container.MAX_PIXELS} pixels in all")


def _warn_if_multi_frame(im: Image.Image) -> None:
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        warnings.warn(f"the input has {frames} frames (an animation or a multi-page file); a .psic file holds one "
                      f"image, so only frame {im.tell() + 1} is encoded", UserWarning, stacklevel=3)


def _grey_to_8_bits(im: Image.Image) -> Image.Image:
    """Greyscale as 8-bit ``L``. 16-bit and 32-bit integer modes hold 16-bit samples (how Pillow opens 16-bit PNG
    and TIFF), so they are scaled by 255/65535; Pillow's own conversion would clip everything above 255 to white."""
    if im.mode.startswith("I"):
        samples = np.asarray(im).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(samples / 257), 0, 255).astype(np.uint8), "L")
    return im.convert("L")


def to_rgb(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The documented mode rule (docs/format.md, "Source modes").

    Pixels are coded as stored (EXIF orientation stays metadata, not applied). Greyscale (1, L, I, I;16, F) is
    coded as RGB and presented as L again (16-bit samples scaled to 8 bits); palette images are expanded;
    CMYK/YCbCr/LAB/HSV go through Pillow's conversion to RGB. An alpha channel that is fully opaque is dropped; any
    other alpha is kept losslessly (zlib) beside the coded RGB.
    """
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("PA", "La"):
        im = im.convert("LA")
    if im.mode == "RGBa":
        im = im.convert("RGBA")
    has_alpha = im.mode in ("RGBA", "LA")
    grey = im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    alpha = np.asarray(im.getchannel("A")) if has_alpha else None
    if alpha is not None and alpha.min() == 255:
        alpha = None
    if grey and im.mode not in ("L", "LA"):
        im = _grey_to_8_bits(im)
    rgb = np.asarray(im.convert("RGB"))
    mode = ("L" if grey else "RGB") + ("A" if alpha is not None else "")
    return rgb, alpha, mode


# --- encode --------------------------------------------------------------------------------------------------


def _pad(x, multiple: int):
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def encode(
    image: ImageInput,
    *,
    model: str | os.PathLike | None = None,
    quality: float | None = None,
    key: lock.Key | None = None,
    keep_metadata: bool = False,
    text: dict[str, str] | None = None,
    tile: int = DEFAULT_TILE,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    progress: Progress | None = None,
) -> bytes:
    """Encode an image to ``.psic`` bytes.

    ``model`` is a weights name (``"mshp64-q2"``), a family with ``quality`` (``"mshp64"``, 2) or a path to a
    ``.safetensors`` file; by default the bundled default family at ``quality`` (default 2). For variable-rate
    weights (``mean-scale-hyperprior-vbr``) ``quality`` is any number in their range, 1 to 4 (default 2), and the
    file records it (``qLTY``). With ``key`` the full decoding is locked to that key.

    Metadata (docs/format.md): the ICC profile and EXIF orientation stay public. The rest of EXIF, XMP and IPTC is
    sealed under the key; without a key it is dropped, unless ``keep_metadata`` keeps it in the clear. ``text``
    entries follow the reader's rules (``container.check_text``). A multi-frame input (an animation) encodes its
    current frame, with a ``UserWarning``.

    Invalid arguments (``quality`` outside the family's levels or the variable-rate range, ``text`` a reader would
    refuse, an empty key) raise ``ValueError`` or ``PsicKeyError`` before the image is read.
    """
    import torch

    weights = registry.find(model, quality)
    text = dict(text or {})
    try:
        container.check_text(text)
    except PsicFormatError as exc:
        raise ValueError(str(exc)) from None
    if key is not None:
        lock.key_bytes(key)
    im = open_image(image)
    _warn_if_multi_frame(im)
    check_size(*im.size)
    icc, private = metadata.extract(im)
    rgb, alpha, mode = to_rgb(im)
    net = load_model(weights)
    height, width = rgb.shape[:2]
    overlap = min(tile_overlap, tile // 4) if width > tile or height > tile else 0  # one tile: nothing to blend
    rate_quality = None
    if weights.quality_range is not None:
        rate_quality = container.stored_quality(DEFAULT_QUALITY if quality is None else quality)
    header = Header(width, height, mode, tile, tile, weights.name, weights.sha256, dict(CONDITION_VALUES),
                    DEFAULT_CONDITION, tile_overlap=overlap, quality=rate_quality)
    try:
        container._check_header(header)
    except PsicFormatError as exc:
        raise ValueError(str(exc)) from None
    tiles = []
    with torch.inference_mode():
        for index in range(header.tile_count):
            left, top, right, bottom = header.coded_box(index)
            x = torch.from_numpy(np.array(rgb[top:bottom, left:right])).permute(2, 0, 1)[None]
            x = _pad(x.float().div_(255), net.padding_multiple)
            out = net.compress(x, quality=header.quality)
            strings = [s[0] for s in out["strings"]]
            tiles.append(Tile(index, tuple(out["shape"]), out["latent_digest"], strings))
            if progress:
                progress(index + 1, header.tile_count)
    f = PsicFile(header, tiles=tiles, icc_profile=icc, text=text)
    if alpha is not None:
        f.alpha = zlib.compress(alpha.tobytes(), 9)
    master = None
    if key is not None:
        f.lock, master = lock.new_lock(key)
    if keep_metadata:
        f.exif = private.exif
        f.clear_metadata = metadata.PrivateMetadata(xmp=private.xmp, iptc=private.iptc).to_bytes() or None
    else:
        f.exif = metadata.orientation_exif(private.exif)
        if master is not None and private:
            f.sealed = metadata.seal(private, master, container.associated_data(f))
    return container.serialize(f)


# --- decode --------------------------------------------------------------------------------------------------


def read_file(data: PsicInput, *, header_only: bool = False) -> PsicFile:
    """Parse ``.psic`` data from bytes, a path or a binary file object."""
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "read"):
        return container.read(data, header_only=header_only)
    path = Path(data)
    if path.is_dir():
        raise PsicFormatError(f"{path} is a directory, not a .psic file")
    with open(path, "rb") as fp:
        return container.read(fp, header_only=header_only)


def weights_for(f: PsicFile, model: str | os.PathLike | None = None) -> WeightsInfo:
    """The weights that made ``f``; a different ``model`` than the one recorded fails naming the one needed."""
    wanted = f.header.model_sha256
    if model is None:
        return registry.by_sha256(wanted, f.header.model_name)
    info = registry.find(model)
    if info.sha256 != wanted and wanted not in decodes_sha256(info):
        raise PsicModelError(
            f"this file was made with the weights {f.header.model_name} (SHA-256 {wanted}), not {info.name} "
            f"(SHA-256 {info.sha256})"
        )
    return info


def _check_tiles(f: PsicFile, net) -> None:
    """Everything about the tiles that can be checked before allocating or decoding anything."""
    for tile in f.tiles:
        left, top, right, bottom = f.header.coded_box(tile.index)
        if tuple(tile.latent_shape) != net.latent_shape(bottom - top, right - left):
            raise PsicFormatError(f"tile {tile.index}: latent shape {tile.latent_shape} does not fit the tile")
        if len(tile.strings) != net.num_strings:
            raise PsicFormatError(f"tile {tile.index}: {len(tile.strings)} strings, the model codes {net.num_strings}")
        if any(len(s) > 16 * net.max_symbols(tile.latent_shape) + 1024 for s in tile.strings):
            raise PsicFormatError(f"tile {tile.index}: entropy-coded string longer than its symbols allow")


def _latent_options(f: PsicFile, net) -> dict:
    """The latent steps' arguments for the file's recorded quality: a variable-rate model needs one (``qLTY``), a
    one-rate model takes none; a file that does not fit its model is a format error."""
    if net.variable_rate and f.header.quality is None:
        raise PsicFormatError(f"the file records no quality (no qLTY chunk), which its variable-rate weights "
                              f"{f.header.model_name} need (psic strip from before qLTY existed drops the chunk)")
    try:
        return net.latent_options(f.header.quality)
    except ValueError as exc:
        raise PsicFormatError(f"the file's quality does not fit its weights {f.header.model_name}: {exc}") from None


def _decode_latent(net, tile: Tile, options: dict):
    """The tile's dequantised latent (``options``: ``_latent_options``), checked against its digest before any
    synthesis runs."""
    # CompressAI's rANS decoder does not bounds-check its reads, so hostile strings would read past their end (an
    # empty string segfaults). Zero padding beyond the worst-case reads keeps every read inside our buffer: at
    # most 8 initial bytes, 4 per symbol, and escape (bypass) runs bounded by 16 bytes per input byte; garbage
    # then fails the digest.
    from .models.base import symbols_digest

    guard = bytes(4 * net.max_symbols(tile.latent_shape) + 64)
    try:
        y_hat, symbols = net.decode_latent([[s + bytes(16 * len(s)) + guard] for s in tile.strings],
                                           tile.latent_shape, **options)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise PsicFormatError(f"tile {tile.index} cannot be entropy-decoded: {exc}") from None
    if symbols_digest(symbols) != tile.latent_digest:
        raise PsicIntegrityError(
            f"tile {tile.index}: the decoded latent does not match the file's digest (entropy decoder "
            "desynchronised, e.g. a different machine's float results, or corrupt data)"
        )
    return y_hat


def _ramp(length: int, overlap: int, before: bool) -> np.ndarray:
    """Weights of a tile's pixels along one axis: a linear fade-in over the ``2 * overlap`` pixels it shares with
    the neighbour decoded before it (``before``), 1 elsewhere."""
    weights = np.ones(length, np.float32)
    if before and overlap:
        fade = (np.arange(2 * overlap, dtype=np.float32) + 0.5) / (2 * overlap)
        weights[: 2 * overlap] = fade[:length]
    return weights


def _blend(out: np.ndarray, pixels: np.ndarray, h: Header, index: int) -> None:
    """Write a decoded coded region into ``out``, cross-fading with what the tiles decoded before it (left, above)
    wrote into the shared overlap; tiles are decoded in row-major order, so those are always already there."""
    left, top, right, bottom = h.coded_box(index)
    core_left, core_top, _, _ = h.tile_box(index)
    wx = _ramp(right - left, h.tile_overlap, core_left > 0)
    wy = _ramp(bottom - top, h.tile_overlap, core_top > 0)
    weight = (wy[:, None] * wx[None, :])[:, :, None]
    region = out[top:bottom, left:right]
    blended = weight * pixels + (1 - weight) * region if (core_left > 0 or core_top > 0) else pixels
    region[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def decode_pixels(f: PsicFile, condition: str, model=None, progress: Progress | None = None) -> np.ndarray:
    """The decoded RGB pixels (H, W, 3) uint8 of a parsed file under ``condition``, one tile at a time."""
    import torch

    from .models import condition_tensor

    net = load_model(weights_for(f, model))
    h = f.header
    if set(h.conditions) - set(CONDITION_VALUES) or any(CONDITION_VALUES[k] != v for k, v in h.conditions.items()):
        raise PsicFormatError(f"unsupported condition table {h.conditions}")
    _check_tiles(f, net)
    options = _latent_options(f, net)
    out = np.empty((h.height, h.width, 3), np.uint8)
    with torch.inference_mode():
        for tile in f.tiles:
            left, top, right, bottom = h.coded_box(tile.index)
            y_hat = _decode_latent(net, tile, options)
            x_hat = net.g_s(y_hat, condition_tensor(condition)).clamp_(0, 1)
            pixels = x_hat[0, :, : bottom - top, : right - left].mul(255).permute(1, 2, 0).numpy()
            _blend(out, pixels, h, tile.index)
            if progress:
                progress(tile.index + 1, len(f.tiles))
    return out


def present(f: PsicFile, rgb: np.ndarray, private: metadata.PrivateMetadata | None = None) -> Image.Image:
    """Turn decoded RGB into the image the file describes: source mode, alpha, ICC profile, and the metadata
    available (``private``: unsealed with the key, else any kept in the clear; public EXIF otherwise)."""
    im = Image.fromarray(rgb, "RGB")
    if f.header.mode.startswith("L"):
        im = im.convert("L")
    if f.header.mode.endswith("A"):
        if f.alpha is None:
            raise PsicFormatError("the header announces alpha but the aLPH chunk is missing")
        try:
            plane = zlib.decompressobj().decompress(f.alpha, f.header.width * f.header.height + 1)
        except zlib.error:
            raise PsicFormatError("the aLPH chunk is not valid zlib data") from None
        if len(plane) != f.header.width * f.header.height:
            raise PsicFormatError("the aLPH chunk does not match the image size")
        im.putalpha(Image.frombytes("L", im.size, plane))
    if f.icc_profile:
        im.info["icc_profile"] = f.icc_profile
    private = private or available_metadata(f)
    exif = private.exif or f.exif
    if exif:
        im.info["exif"] = exif
    if private.xmp:
        im.info["xmp"] = private.xmp
    if private.iptc:
        im.info["iptc"] = private.iptc
    return im


def available_metadata(f: PsicFile, master: bytes | None = None) -> metadata.PrivateMetadata:
    """Private metadata readable with ``master`` (sealed) or by anyone (kept in the clear)."""
    if master is not None and f.sealed:
        return metadata.unseal(f.sealed, master, container.associated_data(f))
    return metadata.PrivateMetadata.from_bytes(f.clear_metadata or b"")


def decode(
    data: PsicInput,
    *,
    key: lock.Key | None = None,
    full: bool | None = None,
    model: str | os.PathLike | None = None,
    output: str = "pil",
    progress: Progress | None = None,
):
    """Decode ``.psic`` data. Without a key: the protected decoding. With the right key: the full decoding.

    A wrong key raises ``PsicKeyError``; see ``lock.condition_for`` for ``full``. ``output`` is ``"pil"`` (a
    PIL image in the source mode) or ``"numpy"`` (its array).
    """
    if output not in ("pil", "numpy"):
        raise ValueError("output must be 'pil' or 'numpy'")
    im = render(read_file(data), key=key, full=full, model=model, progress=progress)
    return np.asarray(im) if output == "numpy" else im


def render(f: PsicFile, *, key=None, full: bool | None = None, model=None, progress: Progress | None = None):
    """The decode path for an already parsed file (what ``decode`` and the image-library plugins call)."""
    condition, master = lock.access(f, key, full)
    private = available_metadata(f, master)  # before decoding: a tampered file fails fast
    return present(f, decode_pixels(f, condition, model, progress), private)


def private_metadata(data: PsicInput, key: lock.Key) -> metadata.PrivateMetadata:
    """The sealed metadata of a locked file, unsealed with ``key`` (no model load)."""
    f = read_file(data)
    if f.lock is None:
        return available_metadata(f)
    return available_metadata(f, lock.unlock(key, f.lock))


def strip(data: PsicInput) -> bytes:
    """The same file without private metadata (sealed or clear) and with only the orientation left in EXIF; the
    image stream, lock and ICC profile are untouched."""
    f = read_file(data)
    f.exif = metadata.orientation_exif(f.exif)
    f.sealed = f.clear_metadata = None
    return container.serialize(f)


def info(data: PsicInput) -> dict:
    """Header fields of a ``.psic`` file, without loading a model or importing torch."""
    f = read_file(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        size = len(data)
    elif hasattr(data, "read"):
        size = None
    else:
        size = os.path.getsize(data)
    return header_info(f, size)


def header_info(f: PsicFile, size: int | None = None) -> dict:
    """The fields ``info`` reports, for a parsed file (``size``: the file's length in bytes, when known)."""
    h = f.header
    result = {
        "format_version": h.version,
        "width": h.width,
        "height": h.height,
        "mode": h.mode,
        "model": h.model_name,
        "model_sha256": h.model_sha256,
        "default_condition": h.default_condition,
        "conditions": dict(h.conditions),
        "locked": f.locked,
        "full_decoding": "locked (needs the key)" if f.locked else "open (encoded without a key)",
        "tiles": h.tile_count,
        "tile_size": [h.tile_width, h.tile_height],
        **({"quality": h.quality} if h.quality is not None else {}),
        "icc_profile_bytes": len(f.icc_profile or b""),
        "exif_bytes": len(f.exif or b""),
        "sealed_metadata_bytes": len(f.sealed or b""),
        "clear_metadata_bytes": len(f.clear_metadata or b""),
        "text": dict(f.text),
        "skipped_chunks": list(f.skipped_chunks),
    }
    if f.lock:
        result["scrypt"] = {"log2_n": f.lock.log2_n, "r": f.lock.r, "p": f.lock.p}
    if size is not None:
        result["bytes"] = size
        result["bpp"] = round(8 * size / (h.width * h.height), 4)
    return result


__all__ = ["check_size", "decode", "encode", "header_info", "info", "open_image", "private_metadata", "read_file",
           "render", "strip"]
