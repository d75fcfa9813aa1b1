"""Target VLPs by name: ``load_vlp`` resolves a registered name, a psic VLP weights file, or any open_clip model.

The bundled reference model registers itself here; the plugin hook ``register_vlps`` adds more with
``register_vlp(name, factory)``, where ``factory()`` returns a ``TargetVLP``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from ..errors import PsicModelError
from .adapter import TargetVLP
from .files import load_vlp_file

BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_VLP = "refclip-s"
OPEN_CLIP_PREFIX = "open_clip:"

_factories: dict[str, Callable[[], TargetVLP]] = {}
_lock = threading.Lock()


def register_vlp(name: str, factory: Callable[[], TargetVLP]) -> None:
    with _lock:
        if name in _factories and _factories[name] is not factory:
            raise ValueError(f"a VLP named {name!r} is already registered")
        _factories[name] = factory


def available_vlps() -> list[str]:
    with _lock:
        return sorted(_factories)


def load_vlp(spec: str | os.PathLike = DEFAULT_VLP, pretrained: str | None = None) -> TargetVLP:
    """The target VLP ``spec``, frozen (eval mode, no parameter gradients; gradients still reach the image).

    ``spec`` is a registered name (``available_vlps()``), a path to a psic VLP ``.safetensors`` file, or
    ``open_clip:<model name>`` with ``pretrained`` an open_clip tag or local weights file (real CLIPs, unchanged).
    """
    spec = str(spec)
    if spec.startswith(OPEN_CLIP_PREFIX):
        return TargetVLP.from_open_clip(spec[len(OPEN_CLIP_PREFIX) :], pretrained=pretrained).frozen()
    if pretrained is not None:
        raise PsicModelError(f"pretrained= only applies to open_clip models ({OPEN_CLIP_PREFIX}<model name>)")
    if os.sep in spec or spec.endswith(".safetensors"):
        return load_vlp_file(spec).frozen()
    with _lock:
        factory = _factories.get(spec)
    if factory is None:
        known = ", ".join(available_vlps()) or "none"
        raise PsicModelError(
            f"no VLP named {spec!r} (registered: {known}; or give a .safetensors path or {OPEN_CLIP_PREFIX}<model>)"
        )
    return factory().frozen()


def _bundled(filename: str) -> Callable[[], TargetVLP]:
    return lambda: load_vlp_file(BUNDLED_DIR / filename)


register_vlp(DEFAULT_VLP, _bundled("refclip-s.safetensors"))
