"""Expectation over transformations (EOT) for the PSIC trainer: differentiable image transforms that the protected
decoding passes through before the target VLP reads it for the privacy terms, so that the shield learnt survives
what an image meets after decoding (re-saved as JPEG, rescaled, softened).

EOT is Athalye et al., "Synthesizing Robust Adversarial Examples" (ICML 2018): optimise the expected loss over a
distribution of transformations instead of the loss on the image itself. Per step, with probability
``train.eot_p``, one transform is drawn uniformly from ``train.eot`` with a parameter drawn uniformly from its range
below, and applied to the whole batch; the draws come from the trainer's own ``torch.Generator`` (seeded by
``train.seed`` and the rank), so a run is reproducible and the codec's random streams are unaffected.

- ``"resize"``: down by a factor in [0.5, 1) and back to the original size, bilinear, antialiased on the way down
  (shape-preserving: the VLP then fits the image to its input exactly as it fits an unchanged one);
- ``"jpeg"``: a differentiable JPEG at a quality in [50, 95] (``jpeg``);
- ``"blur"``: a Gaussian blur with sigma in [0.5, 1.5] (``gaussian_blur``).

Every transform maps (B, 3, H, W) in [0, 1] to the same shape and is the identity at its neutral setting (resize
1x, sigma 0, and JPEG at quality 100 up to its rounding and chroma subsampling: see ``jpeg``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TRANSFORMS = ("resize", "jpeg", "blur")
RESIZE_RANGE = (0.5, 1.0)
JPEG_QUALITY_RANGE = (50, 95)
BLUR_SIGMA_RANGE = (0.5, 1.5)

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance): the tables libjpeg (and so Pillow) scales
_LUMA_TABLE = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
_CHROMA_TABLE = torch.full((8, 8), 99.0)
_CHROMA_TABLE[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]])


def quantisation_table(table: torch.Tensor, quality: float) -> torch.Tensor:
    """libjpeg's quality scaling (jcparam.c ``jpeg_quality_scaling``): 5000/q below 50, 200 - 2q from 50, clipped
    to [1, 255] after rounding."""
    quality = min(max(float(quality), 1.0), 100.0)
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return ((table * scale + 50.0) // 100.0).clamp(1, 255)


def _dct_matrix(device, dtype) -> torch.Tensor:
    """The orthonormal 8-point DCT-II: ``D @ block @ D.T`` is the 2-D DCT JPEG codes."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=dtype)


def _round_straight_through(x: torch.Tensor) -> torch.Tensor:
    """Exact rounding forward, identity backward (the straight-through estimator, Bengio et al. 2013), as in
    Reich et al., "Differentiable JPEG: The Devil is in the Details" (WACV 2024): the forward pass then matches
    a real JPEG's rounding, and the gradient does not vanish as it does through ``round``."""
    return x + (torch.round(x) - x).detach()


def _code_blocks(plane: torch.Tensor, table: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """DCT, quantise, dequantise and inverse DCT one (B, H, W) plane (H, W multiples of 8, level-shifted)."""
    b, h, w = plane.shape
    blocks = plane.reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)  # (B, H/8, W/8, 8, 8)
    coefficients = dct @ blocks @ dct.t()
    coefficients = _round_straight_through(coefficients / table) * table
    return (dct.t() @ coefficients @ dct).transpose(2, 3).reshape(b, h, w)


def jpeg(x: torch.Tensor, quality: float) -> torch.Tensor:
    """A differentiable baseline JPEG of ``x`` (B, 3, H, W) in [0, 1] at ``quality`` (1-100), as Pillow saves by
    default: JFIF YCbCr (BT.601 full range), 4:2:0 chroma (2x2 means, back by nearest neighbour: libjpeg's decoder
    upsamples chroma with a triangle filter, so the chroma edges here are a little harder), 8x8 DCT blocks quantised
    by the Annex K tables at libjpeg's quality scaling with straight-through rounding, decoded back to RGB clamped to
    [0, 1]; edges are replicated to a multiple of 16 and cropped off after. Following Shin & Song, "JPEG-resistant
    Adversarial Images" (NIPS 2017 workshop), with the straight-through rounding of Reich et al. (WACV 2024).
    At quality 100 the table is all ones: what remains is the rounding of the coefficients and the chroma
    subsampling (tests/test_eot.py measures both against Pillow)."""
    b, _, h, w = x.shape
    pad_h, pad_w = -h % 16, -w % 16
    rgb = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") * 255.0
    r, g, bl = rgb.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128.0
    dct = _dct_matrix(x.device, x.dtype)
    luma = quantisation_table(_LUMA_TABLE, quality).to(x.device, x.dtype)
    chroma = quantisation_table(_CHROMA_TABLE, quality).to(x.device, x.dtype)
    y = _code_blocks(y - 128.0, luma, dct) + 128.0
    subsampled = F.avg_pool2d(torch.stack([cb, cr], 1), 2) - 128.0
    coded = torch.stack([_code_blocks(c, chroma, dct) for c in subsampled.unbind(1)], 1)
    cb, cr = F.interpolate(coded, scale_factor=2, mode="nearest").unbind(1)
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    bl = y + 1.772 * cb
    return (torch.stack([r, g, bl], 1) / 255.0).clamp(0, 1)[:, :, :h, :w]


def resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Down by ``factor`` (bilinear, antialiased) and back up to the original size (bilinear); 1: unchanged."""
    if factor >= 1:
        return x
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h * factor)), max(1, round(w * factor))), mode="bilinear",
                          antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, kernel truncated at 4 sigma, reflected borders (as eval.exploit.gaussian_blur, the
    robustness check this trains for); sigma 0: unchanged."""
    if sigma <= 0:
        return x
    radius = min(max(1, int(4 * sigma + 0.5)), min(x.shape[-2:]) - 1)
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-(taps**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def check_transforms(name: str, value) -> list[str]:
    """``train.eot``: a list of distinct names from TRANSFORMS (empty: EOT off)."""
    if not (isinstance(value, list) and all(isinstance(v, str) and v in TRANSFORMS for v in value)
            and len(set(value)) == len(value)):
        raise ValueError(f"{name} must be a list of distinct transforms from {', '.join(TRANSFORMS)} "
                         f"(e.g. [\"jpeg\", \"resize\"]; []: off), not {value!r}")
    return value


def draw(transforms: list[str], p: float, generator: torch.Generator) -> tuple[str, float] | None:
    """This step's transform and its parameter, or None (no transform: EOT off, or the draw above ``p``). Always
    draws the same three numbers, so one step's outcome does not shift the next step's draws."""
    u = torch.rand(3, generator=generator).tolist()
    if not transforms or u[0] >= p:
        return None
    name = transforms[min(int(u[1] * len(transforms)), len(transforms) - 1)]
    low, high = {"resize": RESIZE_RANGE, "jpeg": JPEG_QUALITY_RANGE, "blur": BLUR_SIGMA_RANGE}[name]
    return name, low + (high - low) * u[2]


def apply(x: torch.Tensor, drawn: tuple[str, float] | None) -> torch.Tensor:
    """``x`` through the transform ``draw`` returned (None: ``x`` itself)."""
    if drawn is None:
        return x
    name, value = drawn
    return {"resize": resize, "jpeg": jpeg, "blur": gaussian_blur}[name](x, value)
