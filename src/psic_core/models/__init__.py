"""Conditional learned codecs. Importing this package registers the built-in backbones."""

import warnings

with warnings.catch_warnings():
    # compressai scripts its helpers with torch.jit at import time, which torch >= 2.10 deprecates: not our users' concern
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    from . import checkerboard, hyperprior, vbr  # noqa: F401  (registers the built-in backbones)
from .base import ConditionalCodec, condition_tensor
from .registry import BACKBONES, build_backbone, register_backbone

__all__ = ["BACKBONES", "ConditionalCodec", "build_backbone", "condition_tensor", "register_backbone"]
