"""Checkerboard context-model backbone (He et al., CVPR 2021; the spatial context ELIC builds on): the mean-scale
hyperprior's transforms, with ``y`` coded in two passes (anchors from the hyperprior alone, then the non-anchors
with the decoded anchors as context), and psic's conditional synthesis.

The entropy model is CompressAI's, assembled as ``Cheng2020AnchorCheckerboard`` assembles it (HyperpriorLatentCodec
over a CheckerboardLatentCodec and a HyperLatentCodec; CompressAI's two-pass forward trains it, and a subclass codes
the same strings while returning the integer symbols the latent digest needs); the transforms are
``MeanScaleHyperprior``'s, so N and M are independent (Cheng2020's residual transforms tie M to N) and the synthesis
is the same ConditionalSynthesis as the other families'. Strings per image: the anchors of ``y``, its non-anchors,
then ``z``.
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


class CheckerboardSymbolsLatentCodec(CheckerboardLatentCodec):
    """CompressAI's checkerboard codec, coding the same strings, with the integer symbols of both passes returned
    (CompressAI's ``compress``/``decompress`` return only ``y_hat``; the latent digest hashes the symbols).

    Per pass as in ``CheckerboardLatentCodec.compress``: the two checkerboard halves side by side (``unembed``),
    the anchors' context all zero, the non-anchors' the context prediction of the decoded anchors. Two savings over
    it: the anchors' context convolution is not run (its output is zeroed), and the encoder dequantises its own
    symbols instead of entropy-decoding the string it just wrote (the same values when decoding is exact, and the
    digest refuses the file where it is not).
    """

    def _two_passes(self, side_params: torch.Tensor, code_pass) -> tuple[torch.Tensor, torch.Tensor]:
        """``code_pass(i, indexes, means)`` codes half ``i`` and returns its integer symbols."""
        gaussian = self["y"].gaussian_conditional
        side = self.unembed(side_params)
        y_hat_, symbols_ = [], []
        for i in range(2):
            if i == 0:
                context = torch.zeros_like(side[0])  # context and hyperprior parameters both have 2M channels
            else:
                anchors = self.embed(torch.stack([y_hat_[0], torch.zeros_like(y_hat_[0])]))
                context = self.unembed(self.context_prediction(anchors))[1]
            scales, means = self["y"]._chunk(self.entropy_parameters(self.merge(context, side[i])))
            symbols_.append(code_pass(i, gaussian.build_indexes(scales), means).to(means.dtype))
            y_hat_.append(symbols_[i] + means)  # not GaussianConditional.dequantize: it adds into float symbols
        return self.embed(torch.stack(y_hat_)), self.embed(torch.stack(symbols_))

    def compress_symbols(self, y: torch.Tensor, side_params: torch.Tensor):
        """The strings of the two passes (anchors, non-anchors) and the integer symbols."""
        gaussian = self["y"].gaussian_conditional
        halves, strings = self.unembed(y), []

        def code_pass(i, indexes, means):
            strings.append(gaussian.compress(halves[i], indexes, means))
            return gaussian.quantize(halves[i], "symbols", means)

        _, symbols = self._two_passes(side_params, code_pass)
        return strings, symbols

    def decompress_symbols(self, strings, side_params: torch.Tensor):
        """``y_hat`` and the integer symbols from the two passes' strings (``y`` at ``side_params``' size)."""
        gaussian = self["y"].gaussian_conditional
        return self._two_passes(side_params, lambda i, indexes, means: gaussian.decompress(strings[i], indexes))


@register_backbone("checkerboard-hyperprior")
class PsicCheckerboardHyperprior(ConditionalCodec, SimpleVAECompressionModel):
    num_strings = 3

    def __init__(self, N: int = 64, M: int = 96, cltg_frequencies: int = 32, cltg_hidden: int = 128,
                 cltg_scales: bool = False, *, cltg_sites: str = "blocks", cltg_latent: bool = False):
        super().__init__()
        self.g_a = _analysis(N, M)
        self.latent_codec = HyperpriorLatentCodec(latent_codec={
            "y": CheckerboardSymbolsLatentCodec(
                latent_codec={"y": GaussianConditionalLatentCodec(quantizer="ste")},
                entropy_parameters=_entropy_parameters(M),
                context_prediction=CheckerboardMaskedConv2d(M, 2 * M, kernel_size=5, stride=1, padding=2),
            ),
            "hyper": HyperLatentCodec(entropy_bottleneck=EntropyBottleneck(N), h_a=_hyper_analysis(N, M),
                                      h_s=_hyper_synthesis(N, M), quantizer="ste"),
        })
        self.condition_synthesis(N, M, cltg_frequencies, cltg_hidden, cltg_scales, cltg_sites=cltg_sites,
                                 cltg_latent=cltg_latent)

    def forward_latent(self, x):
        y = self.g_a(x)
        with float32_entropy(y):
            out = self.latent_codec(y.float())
        return out["y_hat"], out["likelihoods"]

    def compress_latent(self, x):
        y = self.g_a(x)
        hyper = self.latent_codec["hyper"].compress(y)
        y_strings, symbols = self.latent_codec["y"].compress_symbols(y, hyper["params"])
        return [*y_strings, *hyper["strings"]], hyper["shape"], symbols

    def decode_latent(self, strings, shape):
        *y_strings, z_strings = strings
        hyper = self.latent_codec["hyper"].decompress([z_strings], shape)
        return self.latent_codec["y"].decompress_symbols(y_strings, hyper["params"])
