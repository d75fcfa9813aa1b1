"""psic's plugin layer: the Pillow and imageio integrations, keys for image-library reads, third-party plugins.

    import psic_plugins                                  # registers .psic with Pillow and imageio
    from PIL import Image
    Image.open("photo.psic").save("protected.png")      # no key: the protected image
    with psic_plugins.unlocked("secret"):
        Image.open("photo.psic").save("full.png")       # the full image

Plugins are pluggy plugins (project ``psic``) implementing the hooks in ``psic_plugins.hookspecs``; the built-in
integrations are plugins registered through the same hooks, and installed packages add theirs through the
entry-point group ``psic``. An entry-point plugin that fails to load or to validate (a misspelt hook name, a hook
argument that does not exist) is skipped with a ``PsicPluginWarning``; the others keep working. Setting
``PSIC_DISABLE_PLUGIN_AUTOLOAD`` to any non-empty value skips the entry points.
Importing this package never imports torch; decoding and encoding do. docs/plugins.md is the guide.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import warnings
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


class PsicPluginWarning(UserWarning):
    """An installed plugin was skipped: it failed to import or does not match the hook specifications."""


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
    plugins = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        # a module plugin has a __name__, an object plugin its class's __module__
        origin = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "")
        version = _entry_point_versions.get(name) or (
            _psic_version if origin.partition(".")[0] == __name__ else getattr(plugin, "__version__", None))
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        plugins.append({"name": name, "version": version, "hooks": hooks})
    return sorted(plugins, key=lambda plugin: plugin["name"])


#: entry-point plugin name -> its distribution's version
_entry_point_versions: dict[str, str] = {}


def _load_entry_point_plugins() -> None:
    """Register the entry-point plugins one at a time, skipping (and blocking by name) each one that fails.

    A broken third-party package must not break every program that imports psic_plugins, ``psic --help`` included.
    """
    for dist in importlib.metadata.distributions():
        for entry_point in dist.entry_points.select(group=ENTRY_POINT_GROUP):
            name = entry_point.name
            if pm.has_plugin(name) or pm.is_blocked(name):
                continue
            try:
                pm.register(entry_point.load(), name=name)  # validates the hooks pluggy knows...
                pm.check_pending()  # ...and names matching no hook, which pluggy would otherwise never call
            except Exception as exc:  # whatever a third-party import raises
                pm.set_blocked(name)  # unregisters it, if it got that far
                reason = " ".join(str(exc).split())
                # lineno 0: the warning prints as one line (no source line), as a command's stderr should
                warnings.warn_explicit(
                    f"skipped the psic plugin {name!r} ({entry_point.value}, from {dist.name} {dist.version}): "
                    f"{type(exc).__name__}: {reason}; set {DISABLE_AUTOLOAD_VARIABLE}=1 to load no third-party "
                    "plugins", PsicPluginWarning, filename=__name__, lineno=0)
            else:
                _entry_point_versions[name] = dist.version


for _name, _plugin in _BUILTIN_PLUGINS.items():
    pm.register(_plugin, name=_name)
pm.check_pending()  # the built-ins' own hook names
if not os.environ.get(DISABLE_AUTOLOAD_VARIABLE):
    _load_entry_point_plugins()
pm.hook.register_image_libraries.call_historic(kwargs={"register": _register_image_library})

__all__ = [
    "DISABLE_AUTOLOAD_VARIABLE",
    "ENTRY_POINT_GROUP",
    "EnvironmentKey",
    "PsicPluginWarning",
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
