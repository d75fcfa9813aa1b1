"""A target vision-language model (the adversary the protected decoding must fool), wrapped around open_clip.

``TargetVLP`` takes RGB tensors in [0, 1] of any size and does the model's own preprocessing (resize, centre crop,
normalise) as differentiable torch ops, so a codec can be trained through it. Any open_clip model works: a real
CLIP with its ``pretrained`` tag or a local weights file, or one of our small bundled models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .configs import open_clip_library

#: open_clip clamps the learned temperature to this during training
MAX_LOGIT_SCALE = 100.0


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str = "bicubic") -> torch.Tensor:
    """Antialiased resize of a (B, 3, H, W) batch in [0, 1]; bicubic overshoot is clipped as PIL does."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"
    return F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False).clamp(0, 1)


def center_crop_or_pad(x: torch.Tensor, size: tuple[int, int], fill: float = 0.0) -> torch.Tensor:
    height, width = x.shape[-2:]
    pad_h, pad_w = max(size[0] - height, 0), max(size[1] - width, 0)
    if pad_h or pad_w:
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)
        height, width = x.shape[-2:]
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def fit_to_model(x: torch.Tensor, preprocess_cfg: dict) -> torch.Tensor:
    """open_clip's evaluation geometry (``resize_mode`` shortest / longest / squash) on a batch in [0, 1]."""
    size = _pair(preprocess_cfg["size"])
    interpolation = preprocess_cfg.get("interpolation", "bicubic")
    mode = preprocess_cfg.get("resize_mode", "shortest")
    height, width = x.shape[-2:]
    if mode == "squash":
        return resize(x, size, interpolation)
    if mode not in ("shortest", "longest"):
        raise ValueError(f"unsupported open_clip resize_mode {mode!r}")
    pick = max if mode == "shortest" else min
    scale = pick(size[0] / height, size[1] / width)
    scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
    fill = preprocess_cfg.get("fill_color", 0) / 255.0
    return center_crop_or_pad(resize(x, scaled, interpolation), size, fill)


class TargetVLP(nn.Module):
    """An open_clip model with differentiable preprocessing and its tokenizer; embeddings are L2-normalised."""

    def __init__(self, model: nn.Module, tokenizer, name: str):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        cfg = getattr(model.visual, "preprocess_cfg", None) or {
            "size": model.visual.image_size,
            "mean": model.visual.image_mean,
            "std": model.visual.image_std,
        }
        self.preprocess_cfg = dict(cfg)
        self.register_buffer("mean", torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_open_clip(cls, model_name: str, pretrained: str | None = None, device="cpu") -> "TargetVLP":
        """Any open_clip model: ``pretrained`` is one of its tags or a local weights file (None: random init)."""
        open_clip = open_clip_library()
        model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
        return cls(model, open_clip.get_tokenizer(model_name), model_name)

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(self.preprocess_cfg["size"])

    @property
    def logit_scale(self) -> torch.Tensor:
        """The learned inverse temperature (exp of the stored log value), clamped as in open_clip training."""
        return self.model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """RGB in [0, 1] -- a (B, 3, H, W) batch, one (3, H, W) image, or a list of differently sized images --
        to the normalised (B, 3, h, w) model input."""
        if isinstance(images, torch.Tensor):
            batch = self._fit(images)
        elif len(images) == 0:
            raise ValueError("no images given")
        else:
            batch = torch.cat([self._fit(image) for image in images])
        return (batch - self.mean) / self.std

    def _fit(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.unsqueeze(0) if images.dim() == 3 else images
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected RGB images shaped (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
        if not batch.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got {batch.dtype}")
        return fit_to_model(batch.to(device=self.mean.device, dtype=self.mean.dtype), self.preprocess_cfg)

    def encode_image(self, images: torch.Tensor | Sequence[torch.Tensor], normalize: bool = True) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images), normalize=normalize)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not one string")
        return self.tokenizer(list(texts)).to(self.mean.device)

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        return self.model.encode_text(self.tokenize(texts), normalize=normalize)

    def frozen(self) -> "TargetVLP":
        """Eval mode, parameters without gradients: the adversary stays fixed while gradients reach the image."""
        self.requires_grad_(False)
        return self.eval()
