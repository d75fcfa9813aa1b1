"""Registering the ``.psic`` format with Pillow and imageio, and the opt-in start-up hook that does it lazily.

Both registration paths use the functions here:

- ``import psic_plugins`` registers the full integrations at once (``register_pillow_format`` with the real
  ``PsicImageFile``, ``register_imageio_plugin``);
- the start-up hook, for programs that cannot be edited: ``install_autoload()`` copies this file into
  site-packages as ``psic_autoload.py`` next to a ``psic_autoload.pth`` whose line calls ``install()`` at every
  interpreter start. ``install()`` only puts a watcher on ``sys.meta_path``. Nothing of psic, Pillow, numpy or
  torch is imported until the program itself imports ``PIL.Image`` or ``imageio``; the format is then registered
  with placeholders that import ``psic_plugins`` (and replace themselves) the first time a .psic file is opened or
  saved, and torch is imported only when pixels are decoded.

So this module uses the standard library only, imports nothing heavy at module level, and works on its own as
the top-level module ``psic_autoload``.
"""

import sys

FORMAT = "PSIC"
EXTENSION = ".psic"
MIME_TYPE = "image/x-psic"
#: ``psic_core.container.SIGNATURE``, repeated so that start-up imports nothing of psic (a test keeps them equal)
SIGNATURE = b"\x89PSIC\r\n\x1a\n"
IMAGEIO_PLUGIN = "psic"
SHIM_MODULE = "psic_autoload"
PTH_FILE = "psic_autoload.pth"


# --- registration, shared by both paths ----------------------------------------------------------------------


def register_pillow_format(open_factory, save, accept) -> None:
    """Register the PSIC format, its ``.psic`` extension and MIME type with Pillow (re-registering replaces), refuse
    multi-frame saves, and make saves to a PSIC path whole-or-nothing (``_save_psic_paths_whole``)."""
    from PIL import Image

    Image.register_open(FORMAT, open_factory, accept)
    Image.register_save(FORMAT, save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME_TYPE)
    Image.register_save_all(FORMAT, _refuse_save_all)
    _save_psic_paths_whole(Image)


def _refuse_save_all(im, fp, filename):
    # Pillow's handler for save_all=True or append_images: without one it fails with a bare KeyError
    raise ValueError("a .psic file holds one image: save without save_all=True or append_images (the current frame "
                     "is encoded)")


def _save_psic_paths_whole(Image) -> None:
    """Wrap ``Image.Image.save`` (once) so that a PSIC save to a path encodes in memory before touching the file.

    Pillow opens the target path, truncating it, before it calls a format's save handler, so a failed encode (a bad
    option, missing weights) would leave an existing file empty. The wrapper runs Pillow's save into a buffer and
    writes the file only once that succeeded. Saves in other formats, or to file objects, are Pillow's own.
    """
    import functools
    import io
    import os

    pillow_save = Image.Image.save
    if getattr(pillow_save, "psic_whole_file", False):
        return

    @functools.wraps(pillow_save)
    def save(self, fp, format=None, **params):
        if not isinstance(fp, (str, bytes, os.PathLike)):
            return pillow_save(self, fp, format, **params)
        extension = os.path.splitext(os.fsdecode(fp))[1].lower()
        if (format.upper() if format else Image.EXTENSION.get(extension)) != FORMAT:
            return pillow_save(self, fp, format, **params)
        encoded = io.BytesIO()
        pillow_save(self, encoded, FORMAT, **params)
        with open(fp, "wb") as target:
            target.write(encoded.getbuffer())

    save.psic_whole_file = True
    Image.Image.save = save


def check_imageio_request(request) -> None:
    """Raise imageio's ``InitializationError`` unless psic takes ``request``: reading data that starts with the
    .psic signature, whatever its name, or writing to a ``.psic`` name."""
    from imageio.core.request import InitializationError, IOMode

    if request.mode.io_mode == IOMode.read:
        if not _accept(request.firstbytes):
            raise InitializationError("not a .psic file")
    elif (request.extension or "").lower() != EXTENSION:
        raise InitializationError(f"psic writes .psic files, not {request.extension or 'unnamed ones'}")


def open_imageio_request(request, **kwargs):
    """imageio's constructor for the ``psic`` plugin: decides from the request first, so that the requests psic
    does not take (every other file, see ``register_imageio_plugin``) never import psic_plugins."""
    check_imageio_request(request)
    from psic_plugins.imageio import PsicPlugin

    return PsicPlugin(request, **kwargs)


def register_imageio_plugin() -> None:
    """Register psic's imageio v3 plugin, first for every extension and first in imageio's fallback order
    (idempotent).

    imageio imports ``open_imageio_request`` from this module, and the plugin class
    (``psic_plugins.imageio.PsicPlugin``) only for the requests psic takes.
    """
    from imageio.config import FileExtension, PluginConfig, known_extensions, known_plugins

    config = PluginConfig(name=IMAGEIO_PLUGIN, class_name="open_imageio_request", module_name=__name__)
    # First in the fallback order as well: imageio tries plugins in this order for data without a known extension
    # (bytes, file objects). psic's check is one signature compare; behind Pillow, a .psic file would be read
    # through psic's Pillow format, but without imageio's key= option.
    others = [(name, other) for name, other in known_plugins.items() if name != IMAGEIO_PLUGIN]
    known_plugins.clear()
    known_plugins[IMAGEIO_PLUGIN] = config
    known_plugins.update(others)
    # imageio tries the entries of an extension in list order, so psic's entry goes first
    entry = FileExtension(extension=EXTENSION, priority=[IMAGEIO_PLUGIN], name="PSIC",
                          description="psic privacy-shielded image compression")
    previous = [e for e in known_extensions.get(EXTENSION, []) if e.priority != [IMAGEIO_PLUGIN]]
    known_extensions[EXTENSION] = [entry, *previous]
    # and first for every other extension: a .psic file renamed photo.png is psic content, and only psic's plugin
    # takes key=; for the files psic does not take this costs one signature compare
    for formats in known_extensions.values():
        if formats and IMAGEIO_PLUGIN not in formats[0].priority:
            formats[0].priority.insert(0, IMAGEIO_PLUGIN)


# --- the start-up hook ---------------------------------------------------------------------------------------


def _accept(prefix: bytes) -> bool:
    return prefix[: len(SIGNATURE)] == SIGNATURE


def _open_lazily(fp, filename):
    from psic_plugins.pillow import PsicImageFile  # importing psic_plugins replaces these placeholders

    return PsicImageFile(fp, filename)


def _save_lazily(im, fp, filename):
    from psic_plugins.pillow import save

    save(im, fp, filename)


def _register_placeholders_with_pillow():
    register_pillow_format(_open_lazily, _save_lazily, _accept)


class _LoaderWithCallback:
    """Wraps a module's loader to run ``callback`` once the module has executed."""

    def __init__(self, loader, callback):
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # hand the module its real loader back first: importlib.resources, inspect and pickle look at it
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        try:
            self.callback()
        except Exception as exc:  # a start-up convenience must never break the program's own import
            import warnings

            warnings.warn(f"psic autoload could not register .psic with {module.__name__}: {exc}", stacklevel=2)


class _AfterImport:
    """A ``sys.meta_path`` entry that runs a callback after a watched module is first imported, then goes away."""

    def __init__(self, callbacks: dict):
        self.callbacks = callbacks

    def find_spec(self, fullname, path=None, target=None):
        callback = self.callbacks.pop(fullname, None)
        if callback is None:
            return None
        if not self.callbacks and self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:  # the spec the import gets without this watcher
            find_spec = getattr(finder, "find_spec", None)
            spec = None if finder is self or find_spec is None else find_spec(fullname, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoaderWithCallback(spec.loader, callback)
                return spec
        return None


_installed = False


def install() -> None:
    """Register .psic with Pillow and imageio when the program imports them (at once for those already imported)."""
    global _installed
    if _installed:
        return
    _installed = True
    callbacks = {"PIL.Image": _register_placeholders_with_pillow, "imageio": register_imageio_plugin}
    for name in [name for name in callbacks if name in sys.modules]:
        callbacks.pop(name)()
    if callbacks:
        sys.meta_path.insert(0, _AfterImport(callbacks))


def install_autoload(site_dir=None) -> list:
    """Write ``psic_autoload.pth`` and ``psic_autoload.py`` (byte-compiled, as pip does) into ``site_dir``
    (default: this environment's site-packages), so that every interpreter of the environment registers .psic
    with Pillow and imageio lazily.

    Returns the paths written. Run it again after upgrading psic (the hook is a copy of this file), and run
    ``uninstall_autoload`` before uninstalling psic.
    """
    import py_compile

    pth, shim, compiled = _hook_files(site_dir)
    with open(__file__, encoding="utf-8") as source:
        shim.write_text(source.read(), encoding="utf-8")
    # compiled now, so that start-up loads bytecode even where PYTHONDONTWRITEBYTECODE keeps Python from caching it
    py_compile.compile(str(shim), cfile=str(compiled), doraise=True)
    pth.write_text(f"import {SHIM_MODULE}; {SHIM_MODULE}.install()\n", encoding="utf-8")  # last: it needs the rest
    return [pth, shim, compiled]


def uninstall_autoload(site_dir=None) -> list:
    """Remove what ``install_autoload`` wrote into ``site_dir``; returns the paths removed."""
    removed = []
    for path in _hook_files(site_dir):  # the .pth first, so that no interpreter starting meanwhile misses the module
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def _hook_files(site_dir):
    """The .pth, the module and its bytecode in ``site_dir`` (default: this environment's site-packages)."""
    # imported here: this module runs at every interpreter start, where none of these is loaded yet
    import importlib.util
    import sysconfig
    from pathlib import Path

    target = Path(site_dir or sysconfig.get_paths()["purelib"])
    shim = target / f"{SHIM_MODULE}.py"
    return target / PTH_FILE, shim, Path(importlib.util.cache_from_source(str(shim)))
