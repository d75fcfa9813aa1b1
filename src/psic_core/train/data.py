"""Image folders as training data: all photos decoded once into memory, random crops and flips per batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"training data folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


class RandomCropImages:
    """Photos of at least ``crop`` pixels on each side, sampled as random crops with random horizontal flips.

    The decoded photos (uint8) live on ``device``: on a GPU a batch is cut, flipped and converted there, so the
    host only draws the random offsets and the transfer is the photos once, not every batch."""

    def __init__(self, folder: str | Path, crop: int, seed: int = 0, device: torch.device | str = "cpu"):
        self.crop = crop
        self.images: list[torch.Tensor] = []
        for path in list_images(folder):
            with Image.open(path) as im:
                rgb = im.convert("RGB")
            if min(rgb.size) >= crop:
                self.images.append(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).to(device))
        if not self.images:
            raise ValueError(f"no image in {folder} is at least {crop} px on both sides")
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, size: int) -> torch.Tensor:
        g = self.generator
        crops = []
        for index in torch.randint(len(self.images), (size,), generator=g).tolist():
            image = self.images[index]
            top = int(torch.randint(image.shape[1] - self.crop + 1, (1,), generator=g))
            left = int(torch.randint(image.shape[2] - self.crop + 1, (1,), generator=g))
            crop = image[:, top : top + self.crop, left : left + self.crop]
            if torch.rand(1, generator=g) < 0.5:
                crop = crop.flip(2)
            crops.append(crop)
        return torch.stack(crops).float().div_(255)
