"""Image-quality metrics on uint8 arrays: PSNR, MS-SSIM, and PSNR near tile borders (seam visibility).

MS-SSIM follows Wang, Simoncelli and Bovik (2003) as learned-compression papers use it: 11-tap Gaussian window
(sigma 1.5), K1 = 0.01, K2 = 0.03, five scales with the published weights, 2x2 average pooling between scales,
computed per RGB channel and averaged. Images whose shorter side is too small for five scales get fewer scales (the
weights of the scales used, renormalised); ``ms_ssim_scales`` says how many.
"""

from __future__ import annotations

import math

import numpy as np

#: the five-scale weights of Wang et al. (2003)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit images (inf when identical)."""
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {test.shape}")
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def bits_per_pixel(num_bytes: int, width: int, height: int) -> float:
    return 8 * num_bytes / (width * height)


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales an image of this size supports (the window must fit at the coarsest one)."""
    side, scales = min(height, width), 0
    while scales < len(MS_SSIM_WEIGHTS) and side >= WINDOW:
        scales += 1
        side //= 2
    return scales


def _gaussian_window():
    import torch

    taps = torch.arange(WINDOW, dtype=torch.float64) - WINDOW // 2
    g = torch.exp(-(taps**2) / (2 * SIGMA**2))
    return g / g.sum()


def _filter(x, g):
    """Separable 'valid' Gaussian filtering of a (C, 1, H, W) float64 tensor."""
    import torch.nn.functional as F

    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def _ssim_terms(x, y, g):
    c1, c2 = (K1 * 255) ** 2, (K2 * 255) ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sigma_xx = _filter(x * x, g) - mu_x**2
    sigma_yy = _filter(y * y, g) - mu_y**2
    sigma_xy = _filter(x * y, g) - mu_x * mu_y
    cs = (2 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    # per channel means
    return (luminance * cs).mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Multi-scale SSIM of two uint8 images (H, W) or (H, W, C), in [0, 1] (1 when identical).

    Raises ``ValueError`` for images smaller than the 11-pixel window."""
    import torch
    import torch.nn.functional as F

    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {test.shape}")
    scales = ms_ssim_scales(*reference.shape[:2])
    if scales == 0:
        raise ValueError(f"MS-SSIM needs images of at least {WINDOW}x{WINDOW} pixels, not {reference.shape[:2]}")

    def planes(a):
        a = a[:, :, None] if a.ndim == 2 else a
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(torch.float64)[:, None]

    x, y = planes(reference), planes(test)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    g = _gaussian_window()
    factors = []
    with torch.no_grad():
        for scale in range(scales):
            ssim, cs = _ssim_terms(x, y, g)
            factors.append(ssim if scale == scales - 1 else cs)
            if scale < scales - 1:
                x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        # negative contrast-structure terms (anti-correlated images) are clipped as usual
        values = torch.stack(factors).clamp(min=0)  # (scales, C)
        per_channel = torch.prod(values ** weights[:, None], dim=0)
    return float(per_channel.mean())


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM) (inf when identical): what RD plots usually show."""
    return math.inf if value >= 1 else -10 * math.log10(1 - value)


def tile_border_mask(height: int, width: int, tile: int, band: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels within ``band`` pixels of an inner tile border (tiles of ``tile`` px)."""
    mask = np.zeros((height, width), bool)
    for edge in range(tile, width, tile):
        mask[:, max(edge - band, 0) : edge + band] = True
    for edge in range(tile, height, tile):
        mask[max(edge - band, 0) : edge + band, :] = True
    return mask


def masked_psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR over the pixels where ``mask`` (H, W) is true; None when the mask is empty."""
    if not mask.any():
        return None
    diff = reference[mask].astype(np.float64) - test[mask].astype(np.float64)
    mse = np.mean(diff**2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def seam_psnr(reference: np.ndarray, test: np.ndarray, tile: int, band: int = 4) -> dict:
    """PSNR in a band of ``2 * band`` pixels across the tile borders versus everywhere else.

    A visible seam shows as a band PSNR clearly below the rest; ``delta_db`` is band minus elsewhere.
    """
    mask = tile_border_mask(reference.shape[0], reference.shape[1], tile, band)
    near, far = masked_psnr(reference, test, mask), masked_psnr(reference, test, ~mask)
    return {
        "tile": tile,
        "band_px": 2 * band,
        "border_fraction": float(mask.mean()),
        "psnr_border_db": near,
        "psnr_elsewhere_db": far,
        "delta_db": None if near is None or far is None else near - far,
    }
