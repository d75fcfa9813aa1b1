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


# --- issue 13's targets: a 3-source toy (two labelled sources and the captions), a target and a held-out VLP ---


def toy_vlp_results(per_source: dict[str, float], overall: float, i2t: float, t2i: float) -> dict:
    """One VLP's results: zero-shot top-1 per source (chances a: 0.10, b: 0.25), overall top-1 (chance 0.15), and
    whole-test-set retrieval over 100 images and 50 texts (chances 0.02 and 0.01)."""
    chances = {"a": 0.10, "b": 0.25}
    return {"zero_shot": {"top1": overall, "chance_top1": 0.15},
            "zero_shot_per_source": {s: {"top1": v, "chance_top1": chances[s]} for s, v in per_source.items()},
            "retrieval_all": {"images": 100, "texts": 50, "i2t_r1": i2t, "chance_i2t_r1": 0.02, "t2i_r1": t2i,
                              "chance_t2i_r1": 0.01}}


def issue13_result(protected_target: dict, protected_transfer: dict) -> dict:
    original = {"target": toy_vlp_results({"a": 0.60, "b": 0.40}, 0.55, 0.30, 0.20),
                "held-out": toy_vlp_results({"a": 0.50, "b": 0.45}, 0.55, 0.20, 0.10)}
    variants = [{"id": "original", "results": original},
                {"id": "w-q1/protected", "results": {"target": protected_target, "held-out": protected_transfer}}]
    return {"weights": [{"label": "w-q1", "role": "psic"}], "vlps": [{"name": "target"}, {"name": "held-out"}],
            "vlp": {"variants": variants}}


def shielded() -> dict:
    return toy_vlp_results({"a": 0.12, "b": 0.30}, 0.20, 0.03, 0.01)


def test_issue13_targets_met():
    # b's originals (0.40) read below 2x its chance (0.25): b is not checked even though 0.30 is 5 points over
    [row] = targets.check(issue13_result(shielded(), toy_vlp_results({"a": 0.2, "b": 0.3}, 0.30, 0.1, 0.1)))
    retrieval = row["retrieval_at_chance"]
    # bound = chance + 2 sqrt(p (1 - p) / n): 0.02 + 2 * 0.014 = 0.048 (images), 0.01 + 2 * 0.0141 = 0.038 (texts)
    assert retrieval["met"] and retrieval["i2t"]["bound"] == pytest.approx(0.048, abs=1e-3)
    assert retrieval["t2i"]["bound"] == pytest.approx(0.01 + 2 * (0.01 * 0.99 / 50) ** 0.5)
    sources = row["zero_shot_at_chance"]
    assert sources["met"] and sources["sources"]["a"]["met"] and sources["sources"]["b"]["met"] is None
    transfer = row["transfer_drop"]
    # (0.55 - 0.30) / (0.55 - 0.15) = 62.5 % of the margin
    assert transfer["met"] and transfer["vlps"]["held-out"]["margin_drop"] == pytest.approx(0.625)


@pytest.mark.parametrize("target, transfer_top1, missed", [
    (toy_vlp_results({"a": 0.12, "b": 0.30}, 0.20, 0.05, 0.01), 0.30, "retrieval_at_chance"),  # i2t over 0.048
    (toy_vlp_results({"a": 0.12, "b": 0.30}, 0.20, 0.03, 0.04), 0.30, "retrieval_at_chance"),  # t2i over 0.038
    (toy_vlp_results({"a": 0.16, "b": 0.30}, 0.20, 0.03, 0.01), 0.30, "zero_shot_at_chance"),  # a: 6 points over
    (shielded(), 0.40, "transfer_drop"),  # (0.55 - 0.40) / 0.40 = 37.5 % of the margin
])
def test_each_issue13_target_can_miss(target, transfer_top1, missed):
    [row] = targets.check(issue13_result(target, toy_vlp_results({"a": 0.3, "b": 0.3}, transfer_top1, 0.1, 0.1)))
    checks = ("retrieval_at_chance", "zero_shot_at_chance", "transfer_drop")
    assert {k for k in checks if row[k]["met"] is False} == {missed}
    assert all(row[k]["met"] for k in checks if k != missed)


def test_issue13_targets_say_why_they_are_not_measurable():
    old = issue13_result(shielded(), shielded())
    for variant in old["vlp"]["variants"]:  # a results file from before whole-set retrieval
        for r in variant["results"].values():
            del r["retrieval_all"]
    unreadable = issue13_result(shielded(), shielded())
    original = unreadable["vlp"]["variants"][0]["results"]
    original["target"]["zero_shot_per_source"]["a"]["top1"] = 0.15  # below 2x chance: no source is checkable
    original["held-out"]["zero_shot"]["top1"] = 0.15  # at chance: no margin to fall from
    [row_old] = targets.check(old)
    [row_unreadable] = targets.check(unreadable)
    no_vlp = issue13_result(shielded(), shielded())
    del no_vlp["vlp"]
    [row_no_vlp] = targets.check(no_vlp)
    one_vlp = issue13_result(shielded(), shielded())
    one_vlp["vlps"] = one_vlp["vlps"][:1]
    [row_one_vlp] = targets.check(one_vlp)
    for check, reason in [(row_old["retrieval_at_chance"], "predates"),
                          (row_unreadable["zero_shot_at_chance"], "2x chance"),
                          (row_unreadable["transfer_drop"], "above chance"),
                          (row_no_vlp["retrieval_at_chance"], "did not measure"),
                          (row_no_vlp["zero_shot_at_chance"], "did not measure"),
                          (row_no_vlp["transfer_drop"], "no held-out VLP"),
                          (row_one_vlp["transfer_drop"], "no held-out VLP")]:
        assert check["met"] is None and reason in check["reason"]


def test_report_shows_issue13_targets():
    from psic_core.eval.markdown import _targets

    text = "\n".join(_targets(issue13_result(shielded(), toy_vlp_results({"a": 0.3, "b": 0.3}, 0.40, 0.1, 0.1))))
    assert "Issue 13's targets" in text
    assert "I→T 3.0 (chance 2.0, bound 4.8)" in text and "`b` not checked" in text
    assert "`held-out` 40.0 vs 55.0 (chance 15.0; falls by 37.5 % of the margin) missed: **missed**" in text
    old = issue13_result(shielded(), shielded())
    del old["vlp"]
    assert "n/a (no held-out VLP was evaluated)" in "\n".join(_targets(old))
