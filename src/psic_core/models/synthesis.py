"""Conditional synthesis transform: CompressAI's g_s (deconv + inverse GDN blocks) with CLTG biases added after
every block's deconvolution (and, with ``cltg_scales``, CLTG gains multiplying it first).

``sites`` says where CLTG injects biases:

- ``"blocks"`` (the bundled weights): after each of the 4 deconvolutions, the RGB output's included;
- ``"official"`` (from scratch only): the PSIC authors' placement as far as this g_s allows: at the latent scale
  before the first deconvolution (M channels) and twice per hidden block, after its deconvolution and after its
  inverse GDN; none on the RGB output, whose per-channel bias can only tint the whole picture. (Their synthesis has a
  conditional residual block, two biases, at each of H/16, H/8, H/4 and H/2; this one has no layer at H/16 before
  its first deconvolution, so one site there and two at each of the others: 7 sites, not 8.)
- ``"official+rgb"``: the ``"official"`` sites plus the RGB output's, i.e. ``"blocks"`` plus the latent and post-GDN
  sites. Those come from CLTG's zero-initialised extra MLP, so this grows onto ``"blocks"`` weights and decodes
  exactly like them until it trains.

``latent_trigger`` adds CLTG's image-specific ``LatentTrigger`` on ``y_hat``, gated to the protected decoding.
"""

from __future__ import annotations

import torch
from compressai.layers import GDN
from compressai.models.utils import deconv
from torch import nn

from ..conditions import CONDITION_VALUES, PROTECT
from .cltg import CLTG, LatentTrigger

CLTG_SITES = ("blocks", "official", "official+rgb")


class ConditionalSynthesis(nn.Module):
    def __init__(self, N: int, M: int, cltg_frequencies: int = 32, cltg_hidden: int = 128, cltg_scales: bool = False,
                 *, sites: str = "blocks", latent_trigger: bool = False):
        super().__init__()
        if sites not in CLTG_SITES:
            raise ValueError(f"unknown CLTG sites {sites!r}; expected one of {', '.join(CLTG_SITES)}")
        self.deconvs = nn.ModuleList([deconv(M, N), deconv(N, N), deconv(N, N), deconv(N, 3)])
        self.activations = nn.ModuleList([GDN(N, inverse=True) for _ in range(3)] + [nn.Identity()])
        # the extra sites, in order: the latent, then after each hidden block's inverse GDN
        self.extra_sites = sites != "blocks"
        self.cltg = CLTG([N, N, N] if sites == "official" else [N, N, N, 3], num_frequencies=cltg_frequencies,
                         hidden=cltg_hidden, scales=cltg_scales,
                         extra_channels=[M, N, N, N] if self.extra_sites else ())
        self.latent_trigger = LatentTrigger(M, self.cltg.features.out_features, N) if latent_trigger else None

    def forward(self, y_hat: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        condition = condition.to(y_hat.dtype).expand(y_hat.shape[0])
        biases, gains = self.cltg(condition)
        x = y_hat
        if self.extra_sites or self.latent_trigger is not None:
            features = self.cltg.features(condition)
            extra = self.cltg.extra_biases(features)
            if self.latent_trigger is not None:
                x = x + self.latent_trigger(y_hat, features, (condition == CONDITION_VALUES[PROTECT]).to(x.dtype))
            if extra:
                x = x + extra[0]
        for index, (deconv_layer, activation) in enumerate(zip(self.deconvs, self.activations)):
            h = deconv_layer(x)
            if index < len(biases):
                if gains is not None:
                    h = h * (1 + gains[index])
                h = h + biases[index]
            x = activation(h)
            if self.extra_sites and index < 3:
                x = x + extra[1 + index]
        return x
