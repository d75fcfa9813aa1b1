"""The privacy-training targets, checked per psic weights against a results dictionary (see ``report.py``).

- shield: the target VLP's zero-shot top-1 on the protected decoding is within ``SHIELD_POINTS`` of chance, or
  at least ``SHIELD_RELATIVE_DROP`` below the originals' (relative);
- fidelity: the full decoding's zero-shot top-1 is within ``FIDELITY_POINTS`` of the originals';
- looks: the protected decoding's PSNR is at least the full decoding's minus ``LOOKS_DB`` (same bitstream, so
  the same bpp), on all rate-distortion images.
"""

from __future__ import annotations

SHIELD_POINTS = 0.05
SHIELD_RELATIVE_DROP = 0.80
FIDELITY_POINTS = 0.03
LOOKS_DB = 1.5


def check(result: dict) -> list[dict]:
    """One row per psic weights with the measured values and whether each target holds (None: not measured)."""
    psic = [w["label"] for w in result["weights"] if w["role"] == "psic"]
    zero_shot = _zero_shot(result)
    curves = _all_images_curves(result)
    rows = []
    for label in psic:
        row = {"weights": label}
        original, full, protected = (zero_shot.get(key) for key in ("original", f"{label}/full",
                                                                     f"{label}/protected"))
        if original and protected:
            chance = original["chance_top1"]
            drop = (original["top1"] - protected["top1"]) / original["top1"] if original["top1"] else None
            row |= {"original_top1": original["top1"], "protected_top1": protected["top1"], "chance_top1": chance,
                    "relative_drop": drop,
                    "shield": protected["top1"] <= chance + SHIELD_POINTS
                    or (drop is not None and drop >= SHIELD_RELATIVE_DROP)}
        if original and full:
            row |= {"full_top1": full["top1"], "fidelity": full["top1"] >= original["top1"] - FIDELITY_POINTS}
        psnr = {decoding: _psnr(curves, label, decoding) for decoding in ("full", "protected")}
        if None not in psnr.values():
            delta = psnr["protected"] - psnr["full"]
            row |= {"psnr_full": psnr["full"], "psnr_protected": psnr["protected"], "delta_psnr": delta,
                    "looks": delta >= -LOOKS_DB}
        rows.append(row)
    return rows


def _zero_shot(result: dict) -> dict[str, dict]:
    """Zero-shot scores of the target VLP (the first one) per variant id."""
    if "vlp" not in result or not result.get("vlps"):
        return {}
    target = result["vlps"][0]["name"]
    return {v["id"]: v["results"][target]["zero_shot"] for v in result["vlp"]["variants"] if target in v["results"]}


def _all_images_curves(result: dict) -> dict:
    subsets = (result.get("rd") or {}).get("subsets") or {}
    return subsets.get("all", {}).get("curves", {})


def _psnr(curves: dict, label: str, decoding: str) -> float | None:
    for series, points in curves.items():
        if series.endswith(f" {decoding}") and "(no PSIC)" not in series:
            for point in points:
                if point.get("weights") == label:
                    return point["psnr"]
    return None
