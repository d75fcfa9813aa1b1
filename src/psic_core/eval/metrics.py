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

    taps = torch.arange(WINDOW, dtype=torch.float32) - WINDOW // 2
    g = torch.exp(-(taps**2) / (2 * SIGMA**2))
    return g / g.sum()


def _ssim_terms(x, y, g):
    """Per-channel mean SSIM and contrast-structure terms of (C, 1, H, W) float32 planes ('valid' filtering)."""
    import torch
    import torch.nn.functional as F

    c1, c2 = (K1 * 255) ** 2, (K2 * 255) ** 2
    channels = x.shape[0]
    # the five maps as channels of one image, filtered depthwise (grouped convolution: much faster on CPU than
    # single-channel convolutions)
    stack = torch.cat([x, y, x * x, y * y, x * y]).transpose(0, 1)  # (1, 5C, H, W)
    n = stack.shape[1]
    stack = F.conv2d(stack, g.view(1, 1, 1, -1).expand(n, 1, 1, WINDOW).contiguous(), groups=n)
    stack = F.conv2d(stack, g.view(1, 1, -1, 1).expand(n, 1, WINDOW, 1).contiguous(), groups=n)
    mu_x, mu_y, xx, yy, xy = stack.transpose(0, 1).split(channels)
    sigma_xx, sigma_yy, sigma_xy = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = (2 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
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
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(torch.float32)[:, None]

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
        values = torch.stack(factors).to(torch.float64).clamp(min=0)  # (scales, C)
        per_channel = torch.prod(values ** weights[:, None], dim=0)
    return float(per_channel.mean())


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM) (inf when identical): what RD plots usually show."""
    return math.inf if value >= 1 else -10 * math.log10(1 - value)


def band_mask(height: int, width: int, columns, rows, band: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels within ``band`` pixels of the given column and row positions."""
    mask = np.zeros((height, width), bool)
    for x in columns:
        mask[:, max(x - band, 0) : x + band] = True
    for y in rows:
        mask[max(y - band, 0) : y + band, :] = True
    return mask


def tile_border_mask(height: int, width: int, tile: int, band: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels within ``band`` pixels of an inner tile border (tiles of ``tile`` px)."""
    return band_mask(height, width, range(tile, width, tile), range(tile, height, tile), band)


def masked_psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR over the pixels where ``mask`` (H, W) is true; None when the mask is empty."""
    if not mask.any():
        return None
    diff = reference[mask].astype(np.float64) - test[mask].astype(np.float64)
    mse = np.mean(diff**2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def seam_psnr(reference: np.ndarray, test: np.ndarray, tile: int, band: int = 4) -> dict:
    """PSNR in bands of ``2 * band`` pixels across the tile borders, in the same bands moved half a tile (mid-tile,
    a control with the same geometry and similar content), and everywhere else.

    A visible seam shows as a border PSNR clearly below the mid-tile one: ``delta_db`` is border minus mid-tile
    (``delta_elsewhere_db``: border minus all other pixels).
    """
    height, width = reference.shape[:2]
    border = tile_border_mask(height, width, tile, band)
    half = tile // 2
    mid = band_mask(height, width, range(half, width - band, tile), range(half, height - band, tile), band) & ~border
    near, far, control = (masked_psnr(reference, test, m) for m in (border, ~border, mid))

    def diff(a, b):
        return None if a is None or b is None else a - b

    return {
        "tile": tile,
        "band_px": 2 * band,
        "border_fraction": float(border.mean()),
        "psnr_border_db": near,
        "psnr_midtile_db": control,
        "psnr_elsewhere_db": far,
        "delta_db": diff(near, control),
        "delta_elsewhere_db": diff(near, far),
    }
