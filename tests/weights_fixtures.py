"""Throw-away codec weights for tests: random-initialised, small, deterministic per seed."""

from __future__ import annotations

from pathlib import Path


def random_codec_weights(path: Path, *, name: str, seed: int = 0, quality: int | None = None,
                         backbone: str = "mean-scale-hyperprior", training: dict | None = None) -> Path:
    """Save a random-initialised N=32/M=48 backbone (entropy tables built) as psic weights at ``path``."""
    import torch

    from psic_core.models import build_backbone
    from psic_core.weights import save_weights

    torch.manual_seed(seed)
    model = build_backbone(backbone, N=32, M=48)
    model.update(force=True)
    save_weights(model.eval(), path, name=name, quality=quality, extra={"training": training} if training else None)
    return path
