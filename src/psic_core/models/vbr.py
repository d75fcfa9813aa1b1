"""Variable-rate mean-scale hyperprior: one model for the whole quality ladder (Kamisli, Racapé and Choi,
"Variable-Rate Learned Image Compression with Multi-Objective Optimization and Quantization-Reconstruction
Offsets", DCC 2024), CompressAI's ``MeanScaleHyperprior`` transforms and VBR gains with psic's conditional synthesis.

The latent is scaled by a gain before rounding (a finer quantisation step for a larger gain, so more bits) and the
decoder adds learned quantisation-reconstruction offsets (CompressAI's ``QuantABCD``) to the non-zero symbols. The
model holds one gain per lambda of its ladder (``lmbda``, 8 points from 0.0018 to 0.18; the gains are a parameter
saved with the weights, but CompressAI's training path detaches them, and so does this one, so they keep its
initial values 0.1 to 1). psic's ``quality`` is a continuous number in ``quality_range`` (``VARIABLE_QUALITY_RANGE``,
1 to 4) that places itself on the ladder linearly; its gain is interpolated in log space between the two
neighbouring ladder gains (the continuous rate control the paper gets from CompressAI's ``inputscale``). The
quality's end points are the ladder's end points, and every ladder point is a quality (``ladder_quality``): those
are what training draws, one per batch. The hyper-latent ``z`` is coded at one fixed rate
(CompressAI's ``vr_entbttlnck=False``): it is a small share of the bits, and its decoder needs no quality.

The gain is a function of the recorded quality and the weights alone, so a decoder computes it exactly as the
encoder did (``gain``: float64 on the CPU, then float32).
"""

from __future__ import annotations

import torch
from compressai.models.vbr import MeanScaleHyperpriorVbr
from compressai.ops import quantize_ste

from ..quality import VARIABLE_QUALITY_RANGE, check_variable_quality
from .base import ConditionalCodec, float32_entropy
from .registry import register_backbone

@register_backbone("mean-scale-hyperprior-vbr")
class PsicMeanScaleHyperpriorVbr(ConditionalCodec, MeanScaleHyperpriorVbr):
    variable_rate = True
    quality_range = VARIABLE_QUALITY_RANGE

    def __init__(self, N: int = 64, M: int = 96, cltg_frequencies: int = 32, cltg_hidden: int = 128,
                 cltg_scales: bool = False, *, cltg_sites: str = "blocks", cltg_latent: bool = False):
        super().__init__(N=N, M=M)
        self.condition_synthesis(N, M, cltg_frequencies, cltg_hidden, cltg_scales, cltg_sites=cltg_sites,
                                 cltg_latent=cltg_latent)

    def latent_options(self, quality) -> dict:
        if quality is None:
            raise ValueError("a variable-rate model needs a quality: a number from "
                             f"{self.quality_range[0]:g} to {self.quality_range[1]:g}")
        return {"quality": check_variable_quality(quality, self.quality_range)}

    def ladder_quality(self, level: int) -> float:
        """The quality of ladder point ``level`` (0 .. levels - 1), where ``gain`` is that trained gain itself."""
        low, high = self.quality_range
        return low + (high - low) * level / (self.levels - 1)

    def gain(self, quality: float) -> torch.Tensor:
        """The latent gain at ``quality``: log-linear between the two neighbouring trained gains (a 0-d float32
        tensor, computed on the CPU in float64 so encoder and decoder agree bit for bit)."""
        low, high = self.quality_range
        position = (check_variable_quality(quality, self.quality_range) - low) / (high - low) * (self.levels - 1)
        below = min(int(position), self.levels - 2)
        weight = position - below
        logs = self.Gain.detach().to("cpu", torch.float64).abs().log()
        gain = ((1 - weight) * logs[below] + weight * logs[below + 1]).exp()
        return gain.to(torch.float32)

    def _scales_means(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scales, means = self.h_s(z_hat).chunk(2, 1)
        return scales, means

    def _offsets(self, symbols: torch.Tensor, scales: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """The reconstruction offsets of the symbols' magnitudes (``QuantABCD`` of the scaled standard deviation
        and the gain), zero where a symbol is zero, as in CompressAI's VBR models."""
        stdev = self.gaussian_conditional.lower_bound_scale(scales * gain)[..., None]
        offsets = -self.QuantABCD(torch.cat([stdev, gain.expand(stdev.shape)], dim=-1))[..., 0]
        return torch.where(symbols.abs() < 1e-4, torch.zeros_like(offsets), offsets)

    def forward_latent(self, x, quality=None):
        gain = self.gain(self.latent_options(quality)["quality"]).to(x.device)
        y = self.g_a(x)
        with float32_entropy(y):
            y = y.float()
            z = self.h_a(y)
            _, z_likelihoods = self.entropy_bottleneck(z)
            # the hyper-latent as the decoder gets it (rounded around the medians), straight-through for training
            medians = self.entropy_bottleneck._get_medians()
            z_hat = quantize_ste(z - medians) + medians
            scales, means = self._scales_means(z_hat)
            scaled = (y - means) * gain
            magnitudes = quantize_ste(scaled.abs())
            symbols = torch.sign(scaled).detach() * magnitudes
            y_hat = torch.sign(scaled).detach() * (magnitudes + self._offsets(symbols, scales, gain)) / gain + means
            _, y_likelihoods = self.gaussian_conditional(y * gain, scales * gain, means=means * gain)
            return y_hat, {"y": y_likelihoods, "z": z_likelihoods}

    def compress_latent(self, x, quality=None):
        gain = self.gain(self.latent_options(quality)["quality"]).to(x.device)
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales, means = self._scales_means(z_hat)
        indexes = self.gaussian_conditional.build_indexes(scales * gain)
        y_strings = self.gaussian_conditional.compress(y * gain, indexes, means=means * gain)
        symbols = self.gaussian_conditional.quantize(y * gain, "symbols", means * gain)
        return [y_strings, z_strings], z.size()[-2:], symbols

    def decode_latent(self, strings, shape, quality=None):
        gain = self.gain(self.latent_options(quality)["quality"])
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        gain = gain.to(z_hat.device)
        scales, means = self._scales_means(z_hat)
        indexes = self.gaussian_conditional.build_indexes(scales * gain)
        symbols = self.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
        y_hat = torch.sign(symbols) * (symbols.abs() + self._offsets(symbols, scales, gain)) / gain + means
        return y_hat, symbols
