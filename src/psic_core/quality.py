"""The continuous quality of variable-rate models, checked without torch (the weights registry checks it before a
model loads; the model checks it again at its own edge)."""

from __future__ import annotations

import math
import numbers

#: psic's quality scale for variable-rate models: the per-level families' named points 1 to 4, and all between
VARIABLE_QUALITY_RANGE = (1.0, 4.0)


def check_variable_quality(quality, quality_range=VARIABLE_QUALITY_RANGE, whose: str = "a variable-rate model") -> float:
    """``quality`` as a float inside ``quality_range``; anything else raises ``ValueError`` naming the range."""
    low, high = quality_range
    if isinstance(quality, bool) or not isinstance(quality, numbers.Real) or not math.isfinite(quality) \
            or not low <= quality <= high:
        raise ValueError(f"quality must be a number from {low:g} to {high:g} for {whose} (a psic quality, not "
                         f"JPEG's 0-100), not {quality!r}")
    return float(quality)
