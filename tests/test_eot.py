"""The PSIC trainer's EOT transforms (train/eot.py): differentiable, shape-preserving, neutral at their neutral
setting, the JPEG approximation close to Pillow's, and the per-step draws reproducible."""

import io
from importlib.resources import files

import numpy as np
import pytest
import torch
from PIL import Image

from psic_core.train import eot
from psic_core.train.config import load_config


def photo_crop() -> np.ndarray:
    """A 192 x 256 crop of the bundled Kodak sample (kodim07: flowers, leaves, a window: texture and edges)."""
    rgb = np.asarray(Image.open(files("psic_core") / "samples" / "kodim07.png").convert("RGB"))
    return rgb[100:292, 200:456].copy()


def as_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((a - b) ** 2)))


@pytest.mark.parametrize("transform, value", [(eot.resize, 0.6), (eot.gaussian_blur, 0.8)])
def test_resize_and_blur_pass_gradcheck_and_keep_the_shape(transform, value):
    x = torch.rand(1, 3, 10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                   requires_grad=True)
    assert transform(x, value).shape == x.shape
    assert torch.autograd.gradcheck(lambda t: transform(t, value), (x,))


def test_jpeg_keeps_the_shape_and_passes_a_finite_non_zero_gradient():
    # straight-through rounding: the gradient is that of the same pipeline without the rounding, which gradcheck's
    # finite differences (through the rounding steps) cannot check; so: finite, non-zero, and where it should be
    x = torch.rand(2, 3, 20, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    x.requires_grad_(True)
    y = eot.jpeg(x, 75)
    assert y.shape == x.shape
    (y[0] * torch.linspace(0, 1, 28, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() > 0
    assert x.grad[1].abs().sum() == 0  # images do not mix


def test_neutral_settings_are_the_identity():
    x = as_tensor(photo_crop())
    assert torch.equal(eot.resize(x, 1.0), x)
    assert torch.equal(eot.gaussian_blur(x, 0.0), x)
    # JPEG at quality 100 keeps the coefficient rounding and the 4:2:0 chroma: within 40 dB PSNR of the photo
    # (measured 42.7 dB; Pillow's own quality-100 JPEG of it: 44.2 dB)
    assert psnr(eot.jpeg(x, 100)[0].permute(1, 2, 0).numpy(), x[0].permute(1, 2, 0).numpy()) > 40


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_the_differentiable_jpeg_is_close_to_pillows(quality):
    rgb = photo_crop()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    pillow = np.asarray(Image.open(buffer)).astype(np.float64) / 255
    ours = eot.jpeg(as_tensor(rgb), quality)[0].permute(1, 2, 0).numpy()
    original = rgb / 255
    # measured 41.8 (q50), 42.1 (q75), 42.5 (q95) dB between the two, while each is 31.5-40 dB from the photo:
    # the remaining difference is mostly libjpeg's triangle-filtered chroma upsampling against nearest here
    assert psnr(ours, pillow) > 40
    assert abs(psnr(ours, original) - psnr(pillow, original)) < 1.5
    # and quality matters the way it does for Pillow's
    if quality == 50:
        assert psnr(ours, original) < psnr(eot.jpeg(as_tensor(rgb), 95)[0].permute(1, 2, 0).numpy(), original)


def test_jpeg_of_an_odd_size_is_padded_and_cropped_back():
    x = torch.rand(1, 3, 13, 21, generator=torch.Generator().manual_seed(2))
    y = eot.jpeg(x, 90)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1


def test_quantisation_tables_follow_libjpeg_scaling():
    luma = eot.quantisation_table(eot._LUMA_TABLE, 50)
    assert torch.equal(luma, eot._LUMA_TABLE)  # quality 50 is the Annex K table itself
    assert torch.equal(eot.quantisation_table(eot._LUMA_TABLE, 100), torch.ones(8, 8))
    assert eot.quantisation_table(eot._LUMA_TABLE, 75)[0, 0] == 8  # (16 * 50 + 50) // 100


def test_draws_are_reproducible_from_the_generator_and_respect_p_and_the_ranges():
    def draws(transforms, p, seed=0, count=200):
        g = torch.Generator().manual_seed(seed)
        return [eot.draw(transforms, p, g) for _ in range(count)]

    assert draws(["jpeg", "blur"], 0.5) == draws(["jpeg", "blur"], 0.5)
    assert draws(["jpeg", "blur"], 0.5) != draws(["jpeg", "blur"], 0.5, seed=1)
    assert all(d is None for d in draws(["jpeg"], 0.0)) and all(d is None for d in draws([], 1.0))
    every = draws(list(eot.TRANSFORMS), 1.0)
    assert {name for name, _ in every} == set(eot.TRANSFORMS)
    ranges = {"resize": eot.RESIZE_RANGE, "jpeg": eot.JPEG_QUALITY_RANGE, "blur": eot.BLUR_SIGMA_RANGE}
    assert all(ranges[name][0] <= value <= ranges[name][1] for name, value in every)
    applied = sum(d is not None for d in draws(["resize"], 0.3, count=1000))
    assert 240 < applied < 360
    x = torch.rand(1, 3, 16, 16)
    assert eot.apply(x, None) is x


def test_config_checks_the_eot_keys_naming_the_allowed_values():
    config = load_config(None, ['train.eot=["jpeg", "resize"]', "train.eot_p=0.7"])["train"]
    assert config["eot"] == ["jpeg", "resize"] and config["eot_p"] == 0.7
    assert load_config(None, [])["train"]["eot"] == []
    with pytest.raises(ValueError, match="resize, jpeg, blur"):
        load_config(None, ['train.eot=["webp"]'])
    with pytest.raises(ValueError, match="distinct"):
        load_config(None, ['train.eot=["jpeg", "jpeg"]'])
    with pytest.raises(ValueError, match="train.eot_p"):
        load_config(None, ["train.eot_p=1.5"])
