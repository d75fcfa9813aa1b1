"""Checkerboard context-model backbone (He et al., CVPR 2021; the spatial context ELIC builds on): the mean-scale
hyperprior's transforms, with ``y`` coded in two passes (anchors from the hyperprior alone, then the non-anchors
with the decoded anchors as context), and psic's conditional synthesis.

The entropy model is CompressAI's, assembled as ``Cheng2020AnchorCheckerboard`` assembles it (HyperpriorLatentCodec
over a CheckerboardLatentCodec and a HyperLatentCodec); the transforms are ``MeanScaleHyperprior``'s, so N and M
are independent (Cheng2020's residual transforms tie M to N) and the synthesis is the same ConditionalSynthesis as
the other families'. Strings per image: the anchors of ``y``, its non-anchors, then ``z``.
"""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import (CheckerboardLatentCodec, GaussianConditionalLatentCodec, HyperLatentCodec,
                                      HyperpriorLatentCodec)
from compressai.layers import GDN, CheckerboardMaskedConv2d
from compressai.models import SimpleVAECompressionModel
from compressai.models.utils import conv, deconv
from torch import nn

from .base import ConditionalCodec, float32_entropy
from .registry import register_backbone


def _analysis(N: int, M: int) -> nn.Sequential:
    return nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))


def _hyper_analysis(N: int, M: int) -> nn.Sequential:
    return nn.Sequential(conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True), conv(N, N),
                         nn.LeakyReLU(inplace=True), conv(N, N))


def _hyper_synthesis(N: int, M: int) -> nn.Sequential:
    """z_hat -> (scales, means) hyperprior parameters of y, 2M channels."""
    return nn.Sequential(deconv(N, M), nn.LeakyReLU(inplace=True), deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
                         conv(M * 3 // 2, M * 2, stride=1, kernel_size=3))


def _entropy_parameters(M: int) -> nn.Sequential:
    """Pointwise (as CheckerboardLatentCodec requires): context (2M) + hyperprior (2M) -> (scales, means), 2M."""
    return nn.Sequential(nn.Conv2d(M * 4, M * 10 // 3, 1), nn.LeakyReLU(inplace=True),
                         nn.Conv2d(M * 10 // 3, M * 8 // 3, 1), nn.LeakyReLU(inplace=True),
                         nn.Conv2d(M * 8 // 3, M * 2, 1))


@register_backbone("checkerboard-hyperprior")
class PsicCheckerboardHyperprior(ConditionalCodec, SimpleVAECompressionModel):
    num_strings = 3

    def __init__(self, N: int = 64, M: int = 96, cltg_frequencies: int = 32, cltg_hidden: int = 128,
                 cltg_scales: bool = False):
        super().__init__()
        self.g_a = _analysis(N, M)
        self.latent_codec = HyperpriorLatentCodec(latent_codec={
            "y": CheckerboardLatentCodec(
                latent_codec={"y": GaussianConditionalLatentCodec(quantizer="ste")},
                entropy_parameters=_entropy_parameters(M),
                context_prediction=CheckerboardMaskedConv2d(M, 2 * M, kernel_size=5, stride=1, padding=2),
            ),
            "hyper": HyperLatentCodec(entropy_bottleneck=EntropyBottleneck(N), h_a=_hyper_analysis(N, M),
                                      h_s=_hyper_synthesis(N, M), quantizer="ste"),
        })
        self.condition_synthesis(N, M, cltg_frequencies, cltg_hidden, cltg_scales)

    def forward_latent(self, x):
        y = self.g_a(x)
        with float32_entropy(y):
            out = self.latent_codec(y.float())
        return out["y_hat"], out["likelihoods"]

    def _symbols(self, y_hat: torch.Tensor, hyper_params: torch.Tensor) -> torch.Tensor:
        """The integers the rANS coder coded: ``y_hat`` less the means of its pass (CompressAI's checkerboard codec
        returns only ``y_hat``). The means are recomputed as ``_forward_twopass`` computes them; the masked context
        convolution sees only anchors, so at the non-anchors ``context_prediction(y_hat)`` is the anchors' context.
        Last-bit differences from the coding pass's means vanish in the rounding."""
        checkerboard = self.latent_codec["y"]
        means = torch.zeros_like(y_hat)
        context = checkerboard.context_prediction(y_hat)
        for step, step_context in (("anchor", torch.zeros_like(context)), ("non_anchor", context)):
            params = checkerboard.entropy_parameters(checkerboard.merge(step_context, hyper_params))
            _, step_means = checkerboard["y"]._chunk(params)
            checkerboard._copy(means, step_means, step)
        return (y_hat - means).round()

    def compress_latent(self, x):
        y = self.g_a(x)
        hyper = self.latent_codec["hyper"].compress(y)
        y_out = self.latent_codec["y"].compress(y, hyper["params"])
        return [*y_out["strings"], *hyper["strings"]], hyper["shape"], self._symbols(y_out["y_hat"], hyper["params"])

    def decode_latent(self, strings, shape):
        *y_strings, z_strings = strings
        hyper = self.latent_codec["hyper"].decompress([z_strings], shape)
        y_shape = (self.config["M"], 4 * shape[0], 4 * shape[1])  # h_a halves y twice
        y_hat = self.latent_codec["y"].decompress(y_strings, y_shape, hyper["params"])["y_hat"]
        return y_hat, self._symbols(y_hat, hyper["params"])
