"""Conditional synthesis transform: CompressAI's g_s (deconv + inverse GDN blocks) with CLTG biases added after
every block's deconvolution (and, with ``cltg_scales``, CLTG gains multiplying it first)."""

from __future__ import annotations

import torch
from compressai.layers import GDN
from compressai.models.utils import deconv
from torch import nn

from .cltg import CLTG


class ConditionalSynthesis(nn.Module):
    def __init__(self, N: int, M: int, cltg_frequencies: int = 32, cltg_hidden: int = 128, cltg_scales: bool = False):
        super().__init__()
        self.deconvs = nn.ModuleList([deconv(M, N), deconv(N, N), deconv(N, N), deconv(N, 3)])
        self.activations = nn.ModuleList([GDN(N, inverse=True) for _ in range(3)] + [nn.Identity()])
        self.cltg = CLTG([N, N, N, 3], num_frequencies=cltg_frequencies, hidden=cltg_hidden, scales=cltg_scales)

    def forward(self, y_hat: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        biases, gains = self.cltg(condition.to(y_hat.dtype).expand(y_hat.shape[0]))
        x = y_hat
        for index, (deconv_layer, activation) in enumerate(zip(self.deconvs, self.activations)):
            h = deconv_layer(x)
            if gains is not None:
                h = h * (1 + gains[index])
            x = activation(h + biases[index])
        return x
