"""Backbone registry: architectures are found by name, never hard-wired.

A backbone is a CompressAI model class made condition-aware (see ``base.ConditionalCodec``). Registering a new one
(for example a joint-autoregressive or Cheng2020-style model) is a decorator away::

    @register_backbone("my-backbone")
    class MyBackbone(ConditionalCodec, SomeCompressAIModel): ...
"""

from __future__ import annotations

from typing import Callable, TypeVar

BACKBONES: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_backbone(name: str) -> Callable[[T], T]:
    """Class decorator registering a conditional codec architecture under ``name``."""

    def decorator(cls: T) -> T:
        if name in BACKBONES and BACKBONES[name] is not cls:
            raise ValueError(f"backbone {name!r} is already registered by {BACKBONES[name].__qualname__}")
        BACKBONES[name] = cls
        cls.backbone_name = name
        return cls

    return decorator


def build_backbone(name: str, **config):
    """Instantiate the backbone registered as ``name`` with its config (N, M, cltg options...)."""
    from ..errors import PsicModelError

    try:
        cls = BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES)) or "none"
        raise PsicModelError(f"unknown backbone {name!r} (registered: {known})") from None
    return cls(**config)
