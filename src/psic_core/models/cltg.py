"""CLTG: Conditional Latent Trigger Generation.

condition (a scalar per image) -> random Fourier features -> MLP -> one bias vector per synthesis block.
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


class CLTG(nn.Module):
    """Maps a condition to additive biases for each synthesis block (``block_channels`` gives their widths)."""

    def __init__(self, block_channels: Sequence[int], num_frequencies: int = 32, hidden: int = 128):
        super().__init__()
        self.block_channels = list(block_channels)
        self.features = FourierFeatures(num_frequencies)
        self.mlp = nn.Sequential(
            nn.Linear(self.features.out_features, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, sum(self.block_channels)),
        )

    def forward(self, condition: torch.Tensor) -> list[torch.Tensor]:
        """condition: shape (B,). Returns one tensor (B, C_i, 1, 1) per block."""
        flat = self.mlp(self.features(condition))
        return [b[:, :, None, None] for b in flat.split(self.block_channels, dim=1)]
