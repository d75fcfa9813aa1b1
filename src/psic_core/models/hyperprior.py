"""Hyperprior backbones: scale hyperprior (Ballé et al. 2018) and mean-scale hyperprior (Minnen et al. 2018),
CompressAI's transforms and entropy models with psic's conditional synthesis."""

from __future__ import annotations

import torch
from compressai.models import MeanScaleHyperprior, ScaleHyperprior
from compressai.ops import quantize_ste

from .base import ConditionalCodec, float32_entropy
from .registry import register_backbone


@register_backbone("scale-hyperprior")
class PsicScaleHyperprior(ConditionalCodec, ScaleHyperprior):
    def __init__(self, N: int = 64, M: int = 96, cltg_frequencies: int = 32, cltg_hidden: int = 128,
                 cltg_scales: bool = False, *, cltg_sites: str = "blocks", cltg_latent: bool = False):
        super().__init__(N=N, M=M)
        self.condition_synthesis(N, M, cltg_frequencies, cltg_hidden, cltg_scales, cltg_sites=cltg_sites,
                                 cltg_latent=cltg_latent)

    def _scales(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.h_s(z_hat)

    def forward_latent(self, x):
        y = self.g_a(x)
        with float32_entropy(y):
            y = y.float()
            z = self.h_a(torch.abs(y))
            z_hat, z_likelihoods = self.entropy_bottleneck(z)
            _, y_likelihoods = self.gaussian_conditional(y, self._scales(z_hat))
        # straight-through rounding: the synthesis trains on the latent it will really receive
        return quantize_ste(y), {"y": y_likelihoods, "z": z_likelihoods}

    def compress_latent(self, x):
        y = self.g_a(x)
        z = self.h_a(torch.abs(y))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        indexes = self.gaussian_conditional.build_indexes(self._scales(z_hat))
        y_strings = self.gaussian_conditional.compress(y, indexes)
        symbols = self.gaussian_conditional.quantize(y, "symbols")
        return [y_strings, z_strings], z.size()[-2:], symbols

    def decode_latent(self, strings, shape):
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        indexes = self.gaussian_conditional.build_indexes(self._scales(z_hat))
        symbols = self.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
        return symbols, symbols


@register_backbone("mean-scale-hyperprior")
class PsicMeanScaleHyperprior(ConditionalCodec, MeanScaleHyperprior):
    def __init__(self, N: int = 64, M: int = 96, cltg_frequencies: int = 32, cltg_hidden: int = 128,
                 cltg_scales: bool = False, *, cltg_sites: str = "blocks", cltg_latent: bool = False):
        super().__init__(N=N, M=M)
        self.condition_synthesis(N, M, cltg_frequencies, cltg_hidden, cltg_scales, cltg_sites=cltg_sites,
                                 cltg_latent=cltg_latent)

    def _scales_means(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scales, means = self.h_s(z_hat).chunk(2, 1)
        return scales, means

    def forward_latent(self, x):
        y = self.g_a(x)
        with float32_entropy(y):
            y = y.float()
            z = self.h_a(y)
            z_hat, z_likelihoods = self.entropy_bottleneck(z)
            scales, means = self._scales_means(z_hat)
            _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
            return quantize_ste(y - means) + means, {"y": y_likelihoods, "z": z_likelihoods}

    def compress_latent(self, x):
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales, means = self._scales_means(z_hat)
        indexes = self.gaussian_conditional.build_indexes(scales)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
        symbols = self.gaussian_conditional.quantize(y, "symbols", means)
        return [y_strings, z_strings], z.size()[-2:], symbols

    def decode_latent(self, strings, shape):
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales, means = self._scales_means(z_hat)
        indexes = self.gaussian_conditional.build_indexes(scales)
        symbols = self.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
        return symbols + means, symbols
