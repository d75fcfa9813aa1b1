"""imageio v3 plugin ``psic``: ``iio.imread/imwrite/improps/immeta/imopen`` for .psic files.

Registered first for every extension and first in imageio's fallback order (``autoload.register_imageio_plugin``),
so .psic content is read here whatever its name; anything that is not a .psic file raises ``InitializationError``
(``autoload.check_imageio_request``) so that imageio goes on to its other plugins. ``properties`` and ``metadata``
read the header only (no model, no torch).
"""

from __future__ import annotations

import io

import numpy as np
from imageio.core.request import URI_BYTES, IOMode, Request
from imageio.core.v3_plugin_api import ImageProperties, PluginV3
from PIL import Image

from psic_core import codec

from . import autoload, keys
from .hookspecs import hookimpl

#: the trailing axes of a pixel for each source mode (grey images are 2-D, like imageio's Pillow plugin)
_PIXEL_AXES = {"L": (), "LA": (2,), "RGB": (3,), "RGBA": (4,)}


class PsicPlugin(PluginV3):
    _request = None  # set once this plugin owns the request (see __init__), so close() leaves others' alone

    def __init__(self, request: Request) -> None:
        # Decide before taking the request over: after an InitializationError imageio hands the same request to the
        # next plugin, and PluginV3.close(), run when this object is collected, would finish it.
        autoload.check_imageio_request(request)
        super().__init__(request)
        self._written = False
        if request.mode.io_mode == IOMode.read:
            file = request.get_file()
            self._start = file.tell()
            head = codec.read_file(file, header_only=True)  # the signature matched: a bad header is an error
            self._info = codec.header_info(head, file.seek(0, io.SEEK_END) - self._start)
            self._icc_profile, self._exif = head.icc_profile, head.exif

    def close(self) -> None:
        if self._request is not None:
            self._request.finish()

    def read(self, *, index=None, key=None, full=None, model=None) -> np.ndarray:
        """The protected image, or the full one with ``key`` (``full`` and ``model`` as in ``psic_core.decode``).

        uint8, (H, W) for grey files and (H, W, 2|3|4) otherwise; ``index=...`` adds a leading batch axis. Without
        ``key`` the key comes from an ``unlocked()`` block or a key provider, if any.
        """
        from . import load_codec_plugins

        self._check_index(index)
        file = self.request.get_file()
        file.seek(self._start)
        psic_file = codec.read_file(file)
        key = keys.key_for(self._info, key)
        load_codec_plugins()
        image = np.array(codec.render(psic_file, key=key, full=full, model=model))  # a writeable copy
        return image[None] if index is Ellipsis else image

    def iter(self, *, key=None, full=None, model=None):
        yield self.read(key=key, full=full, model=model)

    def properties(self, index=None) -> ImageProperties:
        self._check_index(index)
        shape = (self._info["height"], self._info["width"], *_PIXEL_AXES[self._info["mode"]])
        if index is Ellipsis:
            return ImageProperties(shape=(1, *shape), dtype=np.dtype(np.uint8), n_images=1, is_batch=True)
        return ImageProperties(shape=shape, dtype=np.dtype(np.uint8))

    def metadata(self, index=None, exclude_applied: bool = True, key=None) -> dict:
        """The header fields (``psic_core.info``), the ICC profile and the public EXIF when the file has them.

        With ``key`` (``iio.immeta(path, key=...)``) the sealed metadata is unlocked: ``exif`` is then the original
        EXIF, byte for byte, with ``xmp`` / ``iptc`` when present, and ``sealed_metadata`` summarises them. No model
        is loaded. ``exclude_applied`` changes nothing: reading applies none of them (no colour management, no
        rotation).
        """
        self._check_index(index)
        metadata = dict(self._info)
        if self._icc_profile:
            metadata["icc_profile"] = self._icc_profile
        if self._exif:
            metadata["exif"] = self._exif
        if key is not None:
            file = self.request.get_file()
            file.seek(self._start)
            private = codec.private_metadata(file, key)
            metadata["sealed_metadata"] = private.summary()
            metadata.update({k: v for k, v in vars(private).items() if v})
        return metadata

    def write(self, ndimage, *, key=None, quality=None, model=None, text=None, tile=codec.DEFAULT_TILE):
        """Encode one uint8 image: (H, W), (H, W, 1|2|3|4), or a batch or list holding exactly one of those.

        ``key``, ``quality``, ``model``, ``text`` and ``tile`` are ``psic_core.encode``'s. Returns the bytes when
        writing to ``"<bytes>"``.
        """
        from . import load_codec_plugins

        if self._written:
            raise ValueError("a .psic file holds one image, and this one is written already")
        image = _single_image(ndimage)
        load_codec_plugins()
        data = codec.encode(image, key=key, quality=quality, model=model, text=text, tile=tile)
        self.request.get_file().write(data)
        self._written = True
        return data if self.request._uri_type == URI_BYTES else None

    @staticmethod
    def _check_index(index):
        if index not in (None, 0, Ellipsis):
            raise ValueError(f"a .psic file holds one image; index {index!r} is out of range")


def _single_image(ndimage):
    if isinstance(ndimage, (list, tuple)) or np.ndim(ndimage) == 4:
        if len(ndimage) != 1:
            raise ValueError(f"a .psic file holds one image, not {len(ndimage)}")
        ndimage = ndimage[0]
    image = np.asarray(ndimage)
    # the core takes 1, 3 and 4 channels; grey + alpha goes through Pillow's LA mode
    if image.ndim == 3 and image.shape[2] == 2 and image.dtype == np.uint8:
        return Image.fromarray(image)  # Pillow reads (H, W, 2) uint8 as LA
    return image


@hookimpl
def register_image_libraries(register):
    register("imageio", autoload.register_imageio_plugin)
