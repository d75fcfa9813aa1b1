"""Conditional learned codecs. Importing this package registers the built-in backbones."""

from . import hyperprior  # noqa: F401  (registers the built-in backbones)
from .base import ConditionalCodec, condition_tensor
from .registry import BACKBONES, build_backbone, register_backbone

__all__ = ["BACKBONES", "ConditionalCodec", "build_backbone", "condition_tensor", "register_backbone"]
