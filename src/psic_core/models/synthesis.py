"""Conditional synthesis transform: CompressAI's g_s (deconv + inverse GDN blocks) with CLTG biases added after
every block's deconvolution."""

from __future__ import annotations

import torch
from compressai.layers import GDN
from compressai.models.utils import deconv
from torch import nn

from .cltg import CLTG


class ConditionalSynthesis(nn.Module):
    def __init__(self, N: int, M: int, cltg_frequencies: int = 32, cltg_hidden: int = 128):
        super().__init__()
        self.deconvs = nn.ModuleList([deconv(M, N), deconv(N, N), deconv(N, N), deconv(N, 3)])
        self.activations = nn.ModuleList([GDN(N, inverse=True) for _ in range(3)] + [nn.Identity()])
        self.cltg = CLTG([N, N, N, 3], num_frequencies=cltg_frequencies, hidden=cltg_hidden)

    def forward(self, y_hat: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        biases = self.cltg(condition.to(y_hat.dtype).expand(y_hat.shape[0]))
        x = y_hat
        for deconv_layer, activation, bias in zip(self.deconvs, self.activations, biases):
            x = activation(deconv_layer(x) + bias)
        return x
