"""Training augmentation as tensor ops: random resized crop, horizontal flip, colour jitter, occasional greyscale."""

from __future__ import annotations

import math

import torch

from .adapter import resize

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _uniform(generator: torch.Generator, low: float, high: float, n: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_resized_crop(
    image: torch.Tensor, size: int, generator: torch.Generator, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)
) -> torch.Tensor:
    """A crop of random area fraction and aspect ratio of a (3, H, W) image, resized to (size, size)."""
    height, width = image.shape[-2:]
    for _ in range(10):
        area = height * width * _uniform(generator, *scale).item()
        aspect = math.exp(_uniform(generator, math.log(ratio[0]), math.log(ratio[1])).item())
        h, w = round(math.sqrt(area / aspect)), round(math.sqrt(area * aspect))
        if 0 < h <= height and 0 < w <= width:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            break
    else:  # extreme aspect ratio: fall back to the central square
        h = w = min(height, width)
        top, left = (height - h) // 2, (width - w) // 2
    return resize(image[None, :, top : top + h, left : left + w], (size, size))[0]


def colour_jitter(
    batch: torch.Tensor, generator: torch.Generator, strength: float = 0.3, grey_probability: float = 0.1
) -> torch.Tensor:
    """Per-image random brightness, contrast and saturation in [1 - strength, 1 + strength], then some greyscale."""
    n = batch.shape[0]

    def factors():
        return _uniform(generator, 1 - strength, 1 + strength, n).view(n, 1, 1, 1)

    batch = batch * factors()
    mean = (batch * _LUMA).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    batch = (batch - mean) * factors() + mean
    grey = (batch * _LUMA).sum(1, keepdim=True)
    saturation = factors() * (torch.rand(n, generator=generator) >= grey_probability).view(n, 1, 1, 1)
    return ((batch - grey) * saturation + grey).clamp(0, 1)


def augment(images: list[torch.Tensor], size: int, generator: torch.Generator) -> torch.Tensor:
    """A (B, 3, size, size) training batch from differently sized (3, H, W) images."""
    crops = torch.stack([random_resized_crop(image, size, generator) for image in images])
    flip = torch.rand(len(images), generator=generator) < 0.5
    crops = torch.where(flip.view(-1, 1, 1, 1), crops.flip(-1), crops)
    return colour_jitter(crops, generator)
