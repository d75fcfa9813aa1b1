"""Evaluation metrics with known answers: PSNR, MS-SSIM, seam bands, Bjøntegaard deltas, bpp matching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psic_core.eval import baselines
from psic_core.eval.bdrate import bd_quality, bd_rate
from psic_core.eval.exploit import gaussian_blur, rescale
from psic_core.eval.metrics import ms_ssim, ms_ssim_db, ms_ssim_scales, psnr, seam_psnr, tile_border_mask


def test_psnr_known_values():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == math.inf
    b = a.copy()
    b[..., 0] = 1  # MSE = 1/3
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 * 3))
    assert psnr(a, np.full_like(a, 255)) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        psnr(a, a[:2])


def test_ms_ssim_identity_ordering_and_small_images(photo):
    rgb = np.asarray(photo)
    assert ms_ssim(rgb, rgb) == pytest.approx(1.0)
    mild = baselines.decode(baselines.encode(rgb, "jpeg", 90))
    harsh = baselines.decode(baselines.encode(rgb, "jpeg", 10))
    assert 1.0 > ms_ssim(rgb, mild) > ms_ssim(rgb, harsh) > 0.5
    assert ms_ssim_db(1.0) == math.inf and ms_ssim_db(0.9) == pytest.approx(10.0)
    assert ms_ssim_scales(512, 768) == 5 and ms_ssim_scales(40, 60) == 2 and ms_ssim_scales(8, 100) == 0
    assert 0 < ms_ssim(rgb[:40, :60], harsh[:40, :60]) < 1  # two scales only
    with pytest.raises(ValueError):
        ms_ssim(rgb[:8, :8], rgb[:8, :8])


def test_ms_ssim_agrees_with_pytorch_msssim(kodim07):
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    import torch

    rgb = np.asarray(kodim07.crop((0, 0, 256, 256)))
    coded = baselines.decode(baselines.encode(rgb, "jpeg", 20))

    def tensor(a):
        return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float()

    reference = pytorch_msssim.ms_ssim(tensor(rgb), tensor(coded), data_range=255).item()
    assert ms_ssim(rgb, coded) == pytest.approx(reference, abs=1e-4)


def test_seam_psnr_sees_a_band_of_errors_at_tile_borders():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = tile_border_mask(40, 50, 16, 2)
    assert mask[:, 14:18].all() and mask[30:34, :].all() and not mask[0, 0] and not mask[20, 24]
    test = ref.copy()
    test[mask] ^= 8  # errors only near the borders
    seams = seam_psnr(ref, test, tile=16, band=2)
    assert seams["psnr_elsewhere_db"] == math.inf and seams["psnr_midtile_db"] == math.inf
    assert seams["psnr_border_db"] < 40 and seams["delta_db"] == -math.inf
    noisy = ref.copy()
    noisy[::3] ^= 8  # the same errors everywhere: no seam
    even = seam_psnr(ref, noisy, tile=16, band=2)
    assert abs(even["delta_db"]) < 1.0 and abs(even["delta_elsewhere_db"]) < 1.0
    no_borders = seam_psnr(ref, ref, tile=64)
    assert no_borders["psnr_border_db"] is None and no_borders["delta_db"] is None


# --- Bjøntegaard ---------------------------------------------------------------------------------------------

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [27.0, 30.1, 33.0, 35.6, 38.0]


@pytest.mark.parametrize("factor", [0.8, 1.0, 1.1, 1.5])
@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_bd_rate_of_a_curve_shifted_by_a_rate_factor(factor, method):
    result = bd_rate(RATES, PSNRS, [r * factor for r in RATES], PSNRS, method=method)
    assert result.reason is None
    assert result.value == pytest.approx(100 * (factor - 1), abs=1e-6)
    assert result.overlap == (PSNRS[0], PSNRS[-1])


def test_bd_rate_integrates_only_the_shared_quality_range():
    # log-rate exactly cubic in quality, so every fit is exact; the test curve costs 20 % more bits at equal quality
    # and also reaches higher quality, which must not count
    def log_rate(q):
        return -4 + 0.1 * q + 0.0002 * (q - 30) ** 3

    anchor_q = np.array([26.0, 29.0, 32.0, 35.0])
    test_q = np.array([26.0, 29.0, 32.0, 35.0, 38.0, 41.0])
    result = bd_rate(np.exp(log_rate(anchor_q)), anchor_q, 1.2 * np.exp(log_rate(test_q)), test_q)
    assert result.value == pytest.approx(20.0, abs=1e-6)
    assert result.overlap == (26.0, 35.0)


def test_bd_rate_on_a_linear_log_rate_curve_with_a_quality_offset():
    # log R = (Q - 20) / 5 exactly, so a +1 dB better curve saves a factor exp(-1/5) at equal quality
    q = np.array([26.0, 29.0, 32.0, 35.0, 38.0])
    rates = np.exp((q - 20) / 5)
    result = bd_rate(rates, q, rates, q + 1.0)
    assert result.value == pytest.approx(100 * (math.exp(-0.2) - 1), abs=1e-6)
    assert bd_quality(rates, q, rates, q + 1.0).value == pytest.approx(1.0, abs=1e-9)


def test_bd_rate_reports_why_it_has_no_value():
    few = bd_rate(RATES[:3], PSNRS[:3], RATES, PSNRS)
    assert few.value is None and "3 usable RD points" in few.reason and "at least 4" in few.reason
    repeated = bd_rate([0.1, 0.2, 0.3, 0.4], [30, 30, 31, 31], RATES, PSNRS)
    assert repeated.value is None and "distinct" in repeated.reason
    apart = bd_rate(RATES[:4], PSNRS[:4], RATES[:4], [q + 20 for q in PSNRS[:4]])
    assert apart.value is None and "do not overlap" in apart.reason
    invalid = bd_rate([0.1, 0.2, float("nan"), 0.4, 0.0], PSNRS, RATES, PSNRS)
    assert invalid.value is None and invalid.points == (3, 5)
    assert bd_rate(RATES, PSNRS, RATES, PSNRS).as_dict()["value"] == pytest.approx(0.0, abs=1e-9)


# --- baselines and robustness transforms ---------------------------------------------------------------------


@pytest.mark.parametrize("codec", baselines.CODECS)
def test_match_bpp_finds_the_closest_quality(photo, codec):
    rgb = np.asarray(photo)
    sweep = {q: baselines.code(rgb, codec, q).bpp for q in range(*baselines.QUALITY_RANGE[codec]) if q % 5 == 0}
    target = sorted(sweep.values())[len(sweep) // 2]
    match = baselines.match_bpp(rgb, codec, target)
    assert abs(match.bpp - target) <= min(abs(b - target) for b in sweep.values()) + 1e-12
    lowest = baselines.match_bpp(rgb, codec, 1e-4)  # unreachable: the smallest setting, reported as reached
    assert lowest.quality == baselines.QUALITY_RANGE[codec][0] and lowest.bpp > 1e-4


def test_robustness_transforms_keep_size_and_change_pixels(photo):
    rgb = np.asarray(photo)
    for out in (gaussian_blur(rgb), rescale(rgb)):
        assert out.shape == rgb.shape and out.dtype == np.uint8
        assert 25 < psnr(rgb, out) < 60
    flat = np.full((20, 30, 3), 77, np.uint8)
    assert np.array_equal(gaussian_blur(flat, 1.0), flat)  # a normalised kernel leaves flat areas alone
