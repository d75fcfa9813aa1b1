"""The contract every psic backbone fulfils on top of CompressAI's ``CompressionModel``.

The bitstream depends only on the analysis transform, hyperprior and entropy models; the condition enters only
the synthesis transform. So ``compress`` takes no condition and ``decompress`` takes one.

A backbone implements three condition-free steps (see ``hyperprior.py`` for two examples):

- ``forward_latent(x)`` (training): quantised latent for the synthesis and the likelihoods for the rate term;
- ``compress_latent(x)``: strings, the hyper-latent shape and the integer symbols of ``y``;
- ``decode_latent(strings, shape)``: the dequantised latent and the decoded integer symbols.

A variable-rate backbone (``variable_rate = True``, ``vbr.py``) codes at a continuous ``quality``: the three steps
then take it as a keyword (``latent_options``), and the file records it (docs/format.md, ``qLTY``).

The integer symbols feed the latent digest stored in each file: an entropy decode that desynchronises (CompressAI's
known cross-machine float issue) yields different symbols, and the codec raises instead of returning garbage.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import torch

from ..conditions import CONDITION_VALUES, DEFAULT_CONDITION
from .synthesis import ConditionalSynthesis


def condition_tensor(condition: str, device=None) -> torch.Tensor:
    try:
        value = CONDITION_VALUES[condition]
    except KeyError:
        raise ValueError(f"unknown condition {condition!r}; expected one of {sorted(CONDITION_VALUES)}") from None
    return torch.tensor([value], device=device)


def float32_entropy(x: torch.Tensor):
    """Hyperprior and entropy models run in float32 even under a bf16 autocast: a bf16 latent keeps 8 bits of
    mantissa, too coarse for its likelihoods (and the rate term they give)."""
    return torch.autocast(x.device.type, enabled=False)


def symbols_digest(symbols: torch.Tensor) -> bytes:
    """SHA-256 (first 16 bytes) of the integer latent symbols, shape included."""
    ints = symbols.detach().to("cpu", torch.int32).contiguous()
    digest = hashlib.sha256(repr(tuple(ints.shape)).encode())
    digest.update(ints.numpy().tobytes())
    return digest.digest()[:16]


class ConditionalCodec:
    """Mixin placed before a CompressAI model class; ``self.g_s`` must be a ``ConditionalSynthesis``."""

    backbone_name: str = ""
    #: input sides are padded to a multiple of this (4 stride-2 layers in g_a, 2 in h_a)
    padding_multiple: int = 64
    #: entropy-coded strings per image, in the order compress() returns them
    num_strings: int = 2
    #: whether one model codes a continuous range of rates (the latent steps take ``quality``; see vbr.py)
    variable_rate: bool = False

    def condition_synthesis(self, N: int, M: int, cltg_frequencies: int, cltg_hidden: int, cltg_scales: bool, *,
                            cltg_sites: str = "blocks", cltg_latent: bool = False):
        """Replace the backbone's g_s by the conditional one; ``self.config`` is what the weights file records
        (weights recorded before ``cltg_sites`` and ``cltg_latent`` existed have their defaults)."""
        self.g_s = ConditionalSynthesis(N, M, cltg_frequencies, cltg_hidden, cltg_scales, sites=cltg_sites,
                                        latent_trigger=cltg_latent)
        self.config = {"N": N, "M": M, "cltg_frequencies": cltg_frequencies, "cltg_hidden": cltg_hidden,
                       "cltg_scales": cltg_scales, "cltg_sites": cltg_sites, "cltg_latent": cltg_latent}

    def max_symbols(self, shape: tuple[int, int]) -> int:
        """Symbols the entropy coder decodes for a hyper-latent of ``shape`` (y at 4x its resolution, and z)."""
        zh, zw = shape
        return self.config["M"] * 16 * zh * zw + self.config["N"] * zh * zw

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        """The ``shape`` compress() reports for an image of this size (decoders check it before allocating)."""
        return -(-height // self.padding_multiple), -(-width // self.padding_multiple)

    def latent_options(self, quality) -> dict:
        """The keyword arguments of the latent steps for ``quality``: none for a backbone that codes one rate,
        which refuses a quality (its rate is its weights'); a variable-rate backbone checks and passes it."""
        if quality is not None:
            raise ValueError(f"the {self.backbone_name} backbone codes one rate and takes no quality, not {quality!r}")
        return {}

    def forward_latent(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def compress_latent(self, x: torch.Tensor) -> tuple[list[list[bytes]], tuple[int, int], torch.Tensor]:
        raise NotImplementedError

    def decode_latent(self, strings: list[list[bytes]], shape) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, conditions: Iterable[str] = CONDITION_VALUES, quality=None) -> dict:
        """Training pass: one latent (at ``quality`` for a variable-rate backbone), one synthesis per condition."""
        y_hat, likelihoods = self.forward_latent(x, **self.latent_options(quality))
        x_hat = {c: self.g_s(y_hat, condition_tensor(c, x.device)) for c in conditions}
        return {"x_hat": x_hat, "likelihoods": likelihoods, "y_hat": y_hat}

    def compress(self, x: torch.Tensor, quality=None) -> dict:
        strings, shape, symbols = self.compress_latent(x, **self.latent_options(quality))
        return {"strings": strings, "shape": tuple(shape), "latent_digest": symbols_digest(symbols)}

    def decompress(self, strings, shape, condition: str = DEFAULT_CONDITION, quality=None) -> dict:
        y_hat, symbols = self.decode_latent(strings, shape, **self.latent_options(quality))
        x_hat = self.g_s(y_hat, condition_tensor(condition, y_hat.device)).clamp_(0, 1)
        return {"x_hat": x_hat, "latent_digest": symbols_digest(symbols)}

    def synthesis_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters of the synthesis transform and CLTG (what privacy stage 2 trains)."""
        return list(self.g_s.parameters())
