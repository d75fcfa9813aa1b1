"""psic's plugin layer: the Pillow and imageio integrations, keys for image-library reads, third-party plugins.

    import psic_plugins                                  # registers .psic with Pillow and imageio
    from PIL import Image
    Image.open("photo.psic").save("protected.png")      # no key: the protected image
    with psic_plugins.unlocked("secret"):
        Image.open("photo.psic").save("full.png")       # the full image

Plugins are pluggy plugins (project ``psic``) implementing the hooks in ``psic_plugins.hookspecs``; the built-in
integrations are plugins registered through the same hooks, and installed packages add theirs through the
entry-point group ``psic``. Setting ``PSIC_DISABLE_PLUGIN_AUTOLOAD`` to any non-empty value skips the entry points.
Importing this package never imports torch; decoding and encoding do. docs/plugins.md is the guide.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

import pluggy

from psic_core import __version__ as _psic_version
from psic_core.weights import registry

from . import hookspecs
from . import imageio as _imageio_integration
from . import pillow as _pillow_integration
from .autoload import install_autoload, register_imageio_plugin, uninstall_autoload
from .hookspecs import hookimpl
from .keys import EnvironmentKey, unlocked
from .pillow import register_psic_opener

ENTRY_POINT_GROUP = "psic"
DISABLE_AUTOLOAD_VARIABLE = "PSIC_DISABLE_PLUGIN_AUTOLOAD"
_BUILTIN_PLUGINS = {"psic.pillow": _pillow_integration, "psic.imageio": _imageio_integration}

pm = pluggy.PluginManager("psic")
pm.add_hookspecs(hookspecs)

_image_libraries: set[str] = set()
_lazy_hooks_called: set[str] = set()
_lazy_hooks_lock = threading.RLock()


def _register_image_library(name: str, install: Callable[[], None]) -> None:
    install()
    _image_libraries.add(name)


def _register_backbone(name: str, cls: type) -> None:
    from psic_core.models import register_backbone  # imports torch, as the backbone classes do anyway

    register_backbone(name)(cls)


def _register_vlp(name: str, factory: Callable) -> None:
    from psic_core.vlp import register_vlp  # imports torch and open_clip

    register_vlp(name, factory)


def _call_historic_once(hook_name: str, register: Callable) -> None:
    # under the lock for the whole call, so a second thread never goes on before the plugins have registered
    with _lazy_hooks_lock:
        if hook_name in _lazy_hooks_called:
            return
        _lazy_hooks_called.add(hook_name)  # first: pluggy records a historic call even when a plugin fails in it
        getattr(pm.hook, hook_name).call_historic(kwargs={"register": register})


def load_codec_plugins() -> None:
    """Run the ``register_backbones`` and ``register_weights`` hooks, once (plugins registered later are called
    as they register).

    The Pillow and imageio integrations call this before they encode or decode. Call it before using
    ``psic_core`` directly with backbones or weights that plugins provide (the core never imports plugins).
    """
    _call_historic_once("register_backbones", _register_backbone)
    _call_historic_once("register_weights", registry.register)


def load_vlp_plugins() -> None:
    """Run the ``register_vlps`` hook, once: plugins' VLPs join ``psic_core.vlp.available_vlps()``.

    Training and evaluation entry points call this before resolving a VLP name (the core never imports plugins).
    """
    _call_historic_once("register_vlps", _register_vlp)


def image_libraries() -> list[str]:
    """Names of the image libraries psic is installed in (``pillow``, ``imageio``, and plugins' ones)."""
    return sorted(_image_libraries)


def list_plugins() -> list[dict]:
    """The registered plugins as ``{"name", "version", "hooks"}`` dicts, sorted by name (for ``psic plugins``).

    ``version`` is the distribution's for entry-point plugins, psic's for plugins defined in psic_plugins (the
    built-ins, ``EnvironmentKey``), else the plugin's ``__version__`` or None.
    """
    versions = {id(plugin): dist.version for plugin, dist in pm.list_plugin_distinfo()}
    plugins = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        # a module plugin has a __name__, an object plugin its class's __module__
        origin = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "")
        version = versions.get(id(plugin)) or (
            _psic_version if origin.partition(".")[0] == __name__ else getattr(plugin, "__version__", None))
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        plugins.append({"name": name, "version": version, "hooks": hooks})
    return sorted(plugins, key=lambda plugin: plugin["name"])


for _name, _plugin in _BUILTIN_PLUGINS.items():
    pm.register(_plugin, name=_name)
if not os.environ.get(DISABLE_AUTOLOAD_VARIABLE):
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
pm.check_pending()  # a misspelt hook name in a plugin fails here, instead of silently never being called
pm.hook.register_image_libraries.call_historic(kwargs={"register": _register_image_library})

__all__ = [
    "DISABLE_AUTOLOAD_VARIABLE",
    "ENTRY_POINT_GROUP",
    "EnvironmentKey",
    "hookimpl",
    "image_libraries",
    "install_autoload",
    "list_plugins",
    "load_codec_plugins",
    "load_vlp_plugins",
    "pm",
    "register_imageio_plugin",
    "register_psic_opener",
    "uninstall_autoload",
    "unlocked",
]
