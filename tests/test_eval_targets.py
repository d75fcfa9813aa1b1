"""The privacy-training target checks on hand-made results."""

from __future__ import annotations

import pytest

from psic_core.eval import targets


def zero_shot(top1: float) -> dict:
    return {"refclip-s": {"zero_shot": {"top1": top1, "chance_top1": 0.10}}}


def result(original: float, full: float, protected: float, psnr_full: float, psnr_protected: float) -> dict:
    variants = [{"id": "original", "results": zero_shot(original)},
                {"id": "w-q1/full", "results": zero_shot(full)},
                {"id": "w-q1/protected", "results": zero_shot(protected)}]
    curves = {"w full": [{"weights": "w-q1", "bpp": 0.5, "psnr": psnr_full}],
              "w protected": [{"weights": "w-q1", "bpp": 0.5, "psnr": psnr_protected}],
              "w-rd (no PSIC) full": [{"weights": "w-q1", "bpp": 0.5, "psnr": 99.0}]}
    return {"weights": [{"label": "w-q1", "role": "psic"}, {"label": "w-rd-q1 (no PSIC)", "role": "baseline"}],
            "vlps": [{"name": "refclip-s"}], "vlp": {"variants": variants},
            "rd": {"subsets": {"all": {"curves": curves}}}}


def test_all_targets_met():
    [row] = targets.check(result(0.60, 0.58, 0.14, 30.0, 28.6))
    assert row["shield"] and row["fidelity"] and row["looks"]
    assert row["delta_psnr"] == pytest.approx(-1.4)


def test_shield_by_relative_drop_alone():
    """0.60 -> 0.11 is an 82 % drop: met even though 0.11 is not within 5 points of a 0.05 chance."""
    r = result(0.60, 0.60, 0.11, 30.0, 30.0)
    for v in r["vlp"]["variants"]:
        v["results"]["refclip-s"]["zero_shot"]["chance_top1"] = 0.05
    [row] = targets.check(r)
    assert row["relative_drop"] == pytest.approx(0.8167, abs=1e-3) and row["shield"]


@pytest.mark.parametrize("values, missed", [
    ((0.60, 0.58, 0.30, 30.0, 29.0), "shield"),
    ((0.60, 0.56, 0.12, 30.0, 29.0), "fidelity"),
    ((0.60, 0.58, 0.12, 30.0, 28.4), "looks"),
])
def test_each_target_can_miss(values, missed):
    [row] = targets.check(result(*values))
    assert {k for k in ("shield", "fidelity", "looks") if not row[k]} == {missed}


def test_unmeasured_sections_leave_targets_out():
    r = result(0.60, 0.58, 0.14, 30.0, 28.6)
    del r["vlp"]
    [row] = targets.check(r)
    assert "shield" not in row and "fidelity" not in row and row["looks"]


def test_report_shows_missed_targets():
    from psic_core.eval.markdown import _targets

    lines = "\n".join(_targets(result(0.60, 0.58, 0.30, 30.0, 29.0)))
    assert "## Targets" in lines and "**missed**" in lines and "30.0 vs 60.0" in lines
