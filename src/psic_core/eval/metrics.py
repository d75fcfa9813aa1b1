"""Image-quality metrics on uint8 arrays."""

from __future__ import annotations

import math

import numpy as np


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit images (inf when identical)."""
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {test.shape}")
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def bits_per_pixel(num_bytes: int, width: int, height: int) -> float:
    return 8 * num_bytes / (width * height)
