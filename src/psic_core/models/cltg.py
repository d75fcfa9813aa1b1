"""CLTG: Conditional Latent Trigger Generation.

condition (a scalar per image) -> random Fourier features -> MLP -> one bias vector per synthesis block, and with
``scales=True`` also one per-channel gain vector per block (a second MLP, FiLM-style: ``x * (1 + s) + b``). A bias
shifts every pixel of a channel alike; a gain multiplies the image's own features, so the trigger can differ from
image to image. The gain MLP's last layer starts at zero: a model grown from bias-only weights decodes exactly as
before until it trains.
``extra_channels`` adds a third MLP for biases at further sites (the synthesis' ``cltg_sites``), its last layer
zero-initialised for the same reason; ``LatentTrigger`` is the image-specific trigger at the latent scale.
The Fourier frequencies are a fixed (seeded) buffer saved with the weights, so the features of the two conditions
are distinct even though the condition values are the integers 0 and 1 (integer frequencies would map both to
the same sin/cos point).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class FourierFeatures(nn.Module):
    def __init__(self, num_frequencies: int = 32, scale: float = 1.0, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("frequencies", torch.randn(num_frequencies, generator=generator) * scale)

    @property
    def out_features(self) -> int:
        return 2 * self.frequencies.numel()

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * condition[:, None] * self.frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, outputs))


class CLTG(nn.Module):
    """Maps a condition to additive biases (and optionally gains) for each synthesis block (``block_channels``
    gives their widths)."""

    def __init__(self, block_channels: Sequence[int], num_frequencies: int = 32, hidden: int = 128,
                 scales: bool = False, *, extra_channels: Sequence[int] = ()):
        super().__init__()
        self.block_channels = list(block_channels)
        self.extra_channels = list(extra_channels)
        self.features = FourierFeatures(num_frequencies)
        self.mlp = _mlp(self.features.out_features, hidden, sum(self.block_channels))
        self.scales = _mlp(self.features.out_features, hidden, sum(self.block_channels)) if scales else None
        self.extra = _mlp(self.features.out_features, hidden, sum(self.extra_channels)) if extra_channels else None
        for grown in (self.scales, self.extra):
            if grown is not None:
                nn.init.zeros_(grown[-1].weight)
                nn.init.zeros_(grown[-1].bias)

    @staticmethod
    def _split(flat: torch.Tensor, channels: list[int]) -> list[torch.Tensor]:
        return [v[:, :, None, None] for v in flat.split(channels, dim=1)]

    def _per_block(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return self._split(flat, self.block_channels)

    def extra_biases(self, features: torch.Tensor) -> list[torch.Tensor]:
        """The biases of the extra sites from ``features`` (this module's Fourier features of the condition), one
        (B, C_i, 1, 1) tensor per site; empty without ``extra_channels``."""
        return self._split(self.extra(features), self.extra_channels) if self.extra is not None else []

    def forward(self, condition: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """condition: shape (B,). Returns the biases and the gains (None without ``scales``), one (B, C_i, 1, 1)
        tensor per block."""
        features = self.features(condition)
        gains = self._per_block(self.scales(features)) if self.scales is not None else None
        return self._per_block(self.mlp(features)), gains


class LatentTrigger(nn.Module):
    """An image-specific trigger: a per-pixel residual on the latent ``y_hat`` from a small conv head over ``y_hat``
    and the condition's Fourier features (broadcast over the latent grid), so it can differ from image to image and
    place itself where each image is. Its last convolution starts at zero (a grown model decodes exactly like its
    init until it trains), and the caller's ``gate`` (1 for the protected decoding, 0 for the full one) multiplies
    it, so the full decoding gets exactly no trigger by construction."""

    def __init__(self, latent_channels: int, feature_channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(latent_channels + feature_channels, hidden, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(hidden, latent_channels, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, y_hat: torch.Tensor, features: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """y_hat: (B, M, h, w); features: (B, F); gate: (B,). Returns the (B, M, h, w) residual."""
        grid = features[:, :, None, None].expand(-1, -1, *y_hat.shape[-2:])
        return self.net(torch.cat([y_hat, grid], dim=1)) * gate[:, None, None, None]
