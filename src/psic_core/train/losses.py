"""Rate-distortion terms shared by every trainer."""

from __future__ import annotations

import math

import torch


def bits_per_pixel(likelihoods: dict[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    return sum(torch.log(l).sum() for l in likelihoods.values()) / (-math.log(2) * num_pixels)


def rate_distortion(output: dict, x: torch.Tensor, lmbda: float) -> dict[str, torch.Tensor]:
    """bpp + lmbda * 255^2 * MSE for every decoding in ``output["x_hat"]`` (CompressAI's convention)."""
    n, _, h, w = x.shape
    terms = {"bpp": bits_per_pixel(output["likelihoods"], n * h * w)}
    for condition, x_hat in output["x_hat"].items():
        terms[f"mse_{condition}"] = torch.mean((x_hat - x) ** 2)
    distortion = sum(terms[f"mse_{c}"] for c in output["x_hat"]) / len(output["x_hat"])
    terms["loss"] = terms["bpp"] + lmbda * 255**2 * distortion
    return terms
