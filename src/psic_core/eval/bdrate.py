"""Bjøntegaard delta rate and delta quality (VCEG-M33) between two rate-distortion curves.

BD-rate: fit log(rate) as a cubic polynomial of the quality (PSNR or MS-SSIM in dB) for each curve (least squares;
exact interpolation with four points), integrate both fits over the quality range the two curves share, and turn the
mean log-rate difference into a percentage: ``100 * (exp(mean difference) - 1)``. Negative means the test curve
needs fewer bits than the anchor for the same quality. BD-quality swaps the roles (quality as a cubic of log rate,
integrated over the shared log-rate range; positive means the test curve is better).

``method="pchip"`` uses piecewise-cubic Hermite interpolation instead of the global cubic (the variant of later
common-test-condition documents), which behaves better when a curve has many points spread over a wide range.

Too few points, repeated qualities, or curves that do not overlap give a value of ``None`` with the reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

#: points a cubic needs
MIN_POINTS = 4


@dataclass(frozen=True)
class BDResult:
    value: float | None  # percent for BD-rate, dB for BD-quality
    reason: str | None = None  # why value is None
    overlap: tuple[float, float] | None = None  # the integration interval
    points: tuple[int, int] = (0, 0)  # points used (anchor, test)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["overlap"] = list(self.overlap) if self.overlap else None
        d["points"] = list(self.points)
        return d


def _clean(rates: Sequence[float], quality: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite points with a positive rate, sorted by rate."""
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"{name}: rates and qualities must be 1-D sequences of the same length")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.argsort(r)
    return r[order], q[order]


def _check(x: np.ndarray, name: str, what: str) -> str | None:
    if len(x) < MIN_POINTS:
        plural = "s" if len(x) != 1 else ""
        return f"{name} has {len(x)} usable RD point{plural}; the cubic fit needs at least {MIN_POINTS}"
    if len(np.unique(np.round(x, 9))) < MIN_POINTS:
        return f"{name} has fewer than {MIN_POINTS} distinct {what} values"
    return None


def _integral(x: np.ndarray, y: np.ndarray, low: float, high: float, method: str) -> float:
    """Integral over [low, high] of the fit of y as a function of x."""
    order = np.argsort(x)
    x, y = x[order], y[order]
    if method == "cubic":
        poly = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(poly, high) - np.polyval(poly, low))
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        # pchip needs strictly increasing x: average y over repeated x
        ux, inverse = np.unique(x, return_inverse=True)
        uy = np.bincount(inverse, weights=y) / np.bincount(inverse)
        return float(PchipInterpolator(ux, uy).integrate(low, high))
    raise ValueError(f"unknown BD method {method!r} (cubic or pchip)")


def _delta(x_anchor, y_anchor, x_test, y_test, method) -> tuple[float | None, str | None, tuple[float, float] | None]:
    low, high = max(x_anchor.min(), x_test.min()), min(x_anchor.max(), x_test.max())
    if not high > low:
        return None, (
            f"the curves do not overlap (anchor {x_anchor.min():.4g}..{x_anchor.max():.4g}, "
            f"test {x_test.min():.4g}..{x_test.max():.4g})"
        ), None
    mean_anchor = _integral(x_anchor, y_anchor, low, high, method) / (high - low)
    mean_test = _integral(x_test, y_test, low, high, method) / (high - low)
    return mean_test - mean_anchor, None, (float(low), float(high))


def _bd(anchor_rates, anchor_quality, test_rates, test_quality, method: str, along_quality: bool):
    """The shared Bjøntegaard steps: clean both curves, check the fitted axis, integrate the difference.

    ``along_quality``: integrate log-rate over quality (BD-rate); otherwise quality over log-rate (BD-quality).
    Returns (difference, reason it is n/a, overlap on the integrated axis, points per curve).
    """
    ra, qa = _clean(anchor_rates, anchor_quality, "anchor")
    rt, qt = _clean(test_rates, test_quality, "test")
    points = (len(ra), len(rt))
    axis = "quality" if along_quality else "rate"
    fitted = (qa, qt) if along_quality else (ra, rt)
    reason = _check(fitted[0], "the anchor curve", axis) or _check(fitted[1], "the test curve", axis)
    if reason:
        return None, reason, None, points
    if along_quality:
        diff, reason, overlap = _delta(qa, np.log(ra), qt, np.log(rt), method)
    else:
        diff, reason, overlap = _delta(np.log(ra), qa, np.log(rt), qt, method)
    if diff is None:
        return None, f"{'quality' if along_quality else 'log-rate'} ranges: {reason}", None, points
    return diff, None, overlap, points


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
    method: str = "cubic",
) -> BDResult:
    """Average rate difference (percent) of ``test`` against ``anchor`` at equal quality; negative = test saves bits."""
    diff, reason, overlap, points = _bd(anchor_rates, anchor_quality, test_rates, test_quality, method, True)
    if diff is None:
        return BDResult(None, reason, None, points)
    return BDResult(100.0 * (math.exp(diff) - 1.0), None, overlap, points)


def bd_quality(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
    method: str = "cubic",
) -> BDResult:
    """Average quality difference (dB) of ``test`` against ``anchor`` at equal rate; positive = test is better."""
    diff, reason, overlap, points = _bd(anchor_rates, anchor_quality, test_rates, test_quality, method, False)
    if diff is None:
        return BDResult(None, reason, None, points)
    return BDResult(diff, None, (math.exp(overlap[0]), math.exp(overlap[1])), points)


__all__ = ["BDResult", "MIN_POINTS", "bd_quality", "bd_rate"]
