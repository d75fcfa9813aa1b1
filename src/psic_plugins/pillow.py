"""Pillow format ``PSIC`` (extension ``.psic``, MIME type ``image/x-psic``).

``Image.open`` reads the header only: size, mode and ``im.info["psic"]`` (the ``psic_core.info`` fields), plus
``im.info["icc_profile"]`` / ``im.info["exif"]`` when the file has them. No model is loaded and torch is not
imported. ``load()`` decodes: there is no Pillow decoder for a learned codec, so ``load`` is overridden and the
core's ``render`` produces the pixels, the way Pillow formats without a C decoder do it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from psic_core import codec, container
from psic_core.errors import PsicError, PsicFormatError, PsicIntegrityError, PsicKeyError, PsicModelError
from psic_core.lock import Key, key_bytes

from . import autoload, keys
from .hookspecs import hookimpl


class UnidentifiedPsicImageError(PsicFormatError, UnidentifiedImageError):
    """``Image.open`` found the .psic signature but no valid header: both the core's and Pillow's error type."""


class PsicImageLoadError(PsicError, OSError):
    """``load()`` failed. Every such failure is an ``OSError``, as Pillow's own decoding failures are (image code
    catches ``OSError`` for "cannot read this image"), and also the psic error it came from (the subclasses below)."""


class BrokenPsicImageError(PsicImageLoadError, PsicFormatError):
    """Invalid or corrupt image data (``load`` or ``verify``): a ``PsicFormatError`` and an ``OSError``."""


class PsicImageIntegrityError(BrokenPsicImageError, PsicIntegrityError):
    """Image data that passed its CRCs but not the latent digest: a ``PsicIntegrityError`` and an ``OSError``."""


class PsicImageKeyError(PsicImageLoadError, PsicKeyError):
    """A wrong key for the file being loaded: a ``PsicKeyError`` and an ``OSError``."""


class PsicImageModelError(PsicImageLoadError, PsicModelError):
    """The weights the file needs are not installed: a ``PsicModelError`` and an ``OSError``."""


#: the load error for each psic error, most specific first
_LOAD_ERRORS = ((PsicIntegrityError, PsicImageIntegrityError), (PsicFormatError, BrokenPsicImageError),
                (PsicKeyError, PsicImageKeyError), (PsicModelError, PsicImageModelError), (PsicError, PsicImageLoadError))


def _load_error(exc: PsicError, filename) -> PsicImageLoadError:
    error_class = next(load_error for psic_error, load_error in _LOAD_ERRORS if isinstance(exc, psic_error))
    return error_class(f"{filename or 'image'}: {exc}")


@dataclass(frozen=True)
class PillowOptions:
    """What ``register_psic_opener`` sets; the defaults apply after ``import psic_plugins``."""

    #: ask the ``psic_key_for`` hook for the key of a locked file opened without one
    key_providers: bool = True
    #: ``quality`` and ``model`` for ``im.save`` calls that do not pass them (None: the core's defaults); a
    #: quality is a level of a per-level family or a number in the range of variable-rate weights
    quality: float | None = None
    model: str | os.PathLike | None = None


_options = PillowOptions()


class PsicImageFile(ImageFile.ImageFile):
    format = "PSIC"
    format_description = "psic privacy-shielded image"

    def _open(self):
        try:
            head = codec.read_file(self.fp, header_only=True)  # the chunks before the first tile
        except PsicFormatError as exc:
            raise UnidentifiedPsicImageError(f"cannot identify image file {self.filename or self.fp!r}: {exc}") \
                from exc
        size = self.fp.seek(0, os.SEEK_END)  # Image.open hands the file over at offset 0
        self._psic_info = codec.header_info(head, size)
        self._size = (head.header.width, head.header.height)
        self._mode = head.header.mode
        self.info["psic"] = self._psic_info
        if head.icc_profile:
            self.info["icc_profile"] = head.icc_profile
        if head.exif:
            self.info["exif"] = head.exif
        # an enclosing unlocked() block's key, kept for a load() that may run after the block
        self._psic_key = keys.active_key()

    def unlock(self, key: Key) -> PsicImageFile:
        """Decode the full image with ``key`` when the pixels are loaded; returns the image (for chaining).

        A wrong key raises ``PsicImageKeyError`` (a ``PsicKeyError`` and an ``OSError``) from ``load()``.
        """
        if self._im is not None:
            raise ValueError("unlock() must come before the pixels are loaded (they are decoded already)")
        key_bytes(key)  # an empty or non-text key fails here
        self._psic_key = key
        return self

    def load(self):
        if self._im is None:
            self._decode()
        return Image.Image.load(self)

    def _decode(self):
        from . import load_codec_plugins

        if self.fp is None:
            raise OSError("cannot load this image: its file is closed")
        self.fp.seek(0)
        try:
            psic_file = codec.read_file(self.fp)
            key = keys.key_for(self._psic_info, self._psic_key, providers=_options.key_providers)
            load_codec_plugins()
            decoded = codec.render(psic_file, key=key)
        except PsicError as exc:
            raise _load_error(exc, self.filename) from exc
        self.im = decoded.im  # decoded is a temporary: its pixels move over, no copy
        self.readonly = 0
        # with the key, the unsealed metadata (original EXIF, XMP, IPTC) replaces the public header fields
        self.info.update({k: v for k, v in decoded.info.items() if k != "psic"})
        self._exif = None  # getexif() re-reads info["exif"]
        # what ImageFile.load does once the pixels are in
        if self._exclusive_fp and self._close_exclusive_fp_after_loading:
            self.fp.close()
        self.fp = None

    def getexif(self):
        """EXIF as Pillow gives it; with a key set (``unlock`` or ``unlocked()``) the pixels and the sealed EXIF
        are decoded first, so the original EXIF comes back."""
        if self._psic_key is not None and self._im is None:
            self.load()
        return super().getexif()

    def verify(self):
        """Check the whole file's structure and CRCs without decoding (no model, no torch)."""
        self.fp.seek(0)
        try:
            codec.read_file(self.fp)
        except PsicFormatError as exc:
            raise BrokenPsicImageError(f"{self.filename or 'image'}: {exc}") from exc
        super().verify()


def save(im: Image.Image, fp, filename):
    """Pillow's save handler: ``im.save(path_or_file, "PSIC", key=..., quality=..., model=...)``.

    Further options: ``keep_metadata`` (keep EXIF in the clear), ``text`` (a dict of tEXt entries), ``tile``.
    Any mode Pillow has is accepted; the core decides how it is coded (docs/format.md, "Source modes").
    """
    from . import load_codec_plugins

    options = im.encoderinfo
    load_codec_plugins()
    fp.write(codec.encode(
        im,
        model=options.get("model", _options.model),
        quality=options.get("quality", _options.quality),
        key=options.get("key"),
        keep_metadata=options.get("keep_metadata", False),
        text=options.get("text"),
        tile=options.get("tile", codec.DEFAULT_TILE),
    ))


def register_psic_opener(*, key_providers: bool = True, quality: float | None = None,
                         model: str | os.PathLike | None = None) -> None:
    """Register the PSIC format with Pillow and set its options (see ``PillowOptions``; omitted ones reset).

    ``import psic_plugins`` already calls it with the defaults; call it again to change them.
    """
    global _options
    _options = PillowOptions(key_providers=key_providers, quality=quality, model=model)
    autoload.register_pillow_format(PsicImageFile, save, container.looks_like_psic)


@hookimpl
def register_image_libraries(register):
    register("pillow", register_psic_opener)
