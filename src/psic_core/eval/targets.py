"""The privacy-training targets, checked per psic weights against a results dictionary (see ``report.py``).

- shield: the target VLP's zero-shot top-1 on the protected decoding is within ``SHIELD_POINTS`` of chance, or
  at least ``SHIELD_RELATIVE_DROP`` below the originals' (relative);
- fidelity: the full decoding's zero-shot top-1 is within ``FIDELITY_POINTS`` of the originals';
- looks: the protected decoding's PSNR is at least the full decoding's minus ``LOOKS_DB`` (same bitstream, so
  the same bpp), on all rate-distortion images.

Issue 13's targets, each a dict with ``met`` (True, False, or None with a ``reason`` when not measurable):

- retrieval_at_chance: the target VLP's retrieval top-1 over the whole test set on the protected decoding is at
  chance in both directions: at most chance + ``RETRIEVAL_SE`` standard errors of a random ranking's R@1
  (sqrt(p (1 - p) / queries); one right query is already several times chance on a test set of ~160);
- zero_shot_at_chance: the target VLP's zero-shot top-1 on the protected decoding is at most ``SHIELD_POINTS``
  above chance on every labelled source whose originals read at ``READABLE_FACTOR`` x chance or more (the other
  sources say nothing about the shield; reading below chance leaks no label);
- transfer_drop: every held-out VLP's zero-shot top-1 (image-weighted over the sources) falls by at least
  ``TRANSFER_MARGIN_DROP`` of the originals' margin above chance: (original - protected) / (original - chance).
"""

from __future__ import annotations

import math

SHIELD_POINTS = 0.05
SHIELD_RELATIVE_DROP = 0.80
FIDELITY_POINTS = 0.03
LOOKS_DB = 1.5
RETRIEVAL_SE = 2.0
READABLE_FACTOR = 2.0
TRANSFER_MARGIN_DROP = 0.50


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
        target_protected = _vlp_results(result, f"{label}/protected", 0)
        row["retrieval_at_chance"] = retrieval_at_chance(target_protected)
        row["zero_shot_at_chance"] = zero_shot_at_chance(_vlp_results(result, "original", 0), target_protected)
        row["transfer_drop"] = transfer_drop(result, label)
        psnr = {decoding: _psnr(curves, label, decoding) for decoding in ("full", "protected")}
        if None not in psnr.values():
            delta = psnr["protected"] - psnr["full"]
            row |= {"psnr_full": psnr["full"], "psnr_protected": psnr["protected"], "delta_psnr": delta,
                    "looks": delta >= -LOOKS_DB}
        rows.append(row)
    return rows


def _not_measured(reason: str) -> dict:
    return {"met": None, "reason": reason}


def retrieval_at_chance(protected: dict | None) -> dict:
    """Issue 13: whole-test-set retrieval top-1 at chance in both directions (``protected``: one VLP's results on
    the protected decoding)."""
    if protected is None:
        return _not_measured("the VLP section did not measure this decoding")
    whole = protected.get("retrieval_all")
    if not whole:
        return _not_measured("no whole-test-set retrieval in this results file, which predates it")
    row = {}
    for direction, queries in (("i2t", "images"), ("t2i", "texts")):
        value, chance, n = whole[f"{direction}_r1"], whole[f"chance_{direction}_r1"], whole[queries]
        bound = chance + RETRIEVAL_SE * math.sqrt(chance * (1 - chance) / n) if n else None
        row[direction] = {"r1": value, "chance": chance, "bound": bound,
                          "met": None if bound is None else value <= bound}
    measured = [d["met"] for d in row.values() if d["met"] is not None]
    row["met"] = all(measured) if measured else None
    if row["met"] is None:
        row["reason"] = "no retrieval queries"
    return row


def zero_shot_at_chance(original: dict | None, protected: dict | None) -> dict:
    """Issue 13: zero-shot top-1 within ``SHIELD_POINTS`` of chance on every source the originals read well."""
    if original is None or protected is None:
        return _not_measured("the VLP section did not measure the originals and this decoding")
    if "zero_shot_per_source" not in original:
        return _not_measured("no per-source zero-shot scores in the results")
    sources = {}
    for source, o in original["zero_shot_per_source"].items():
        p = protected.get("zero_shot_per_source", {}).get(source)
        chance = o["chance_top1"]
        entry = {"original": o["top1"], "protected": p["top1"] if p else None, "chance": chance}
        if o["top1"] < READABLE_FACTOR * chance:
            entry |= {"met": None, "reason": f"the originals read below {READABLE_FACTOR:g}x chance"}
        elif p is None:
            entry |= {"met": None, "reason": "not measured on this decoding"}
        else:
            entry["met"] = p["top1"] <= chance + SHIELD_POINTS
        sources[source] = entry
    measured = [e["met"] for e in sources.values() if e["met"] is not None]
    if not measured:
        return {"sources": sources} | _not_measured(f"no source's originals read at {READABLE_FACTOR:g}x chance or more")
    return {"sources": sources, "met": all(measured)}


def transfer_drop(result: dict, label: str) -> dict:
    """Issue 13: each held-out VLP's zero-shot top-1 falls by ``TRANSFER_MARGIN_DROP`` of the originals' margin."""
    held_out = [v["name"] for v in result.get("vlps", [])[1:]]
    if "vlp" not in result or not held_out:
        return _not_measured("no held-out VLP was evaluated")
    vlps = {}
    for index, name in enumerate(held_out, start=1):
        original = _vlp_results(result, "original", index)
        protected = _vlp_results(result, f"{label}/protected", index)
        if original is None or protected is None or "zero_shot" not in original or "zero_shot" not in protected:
            vlps[name] = _not_measured("no zero-shot scores on the originals and this decoding")
            continue
        o, p, chance = original["zero_shot"]["top1"], protected["zero_shot"]["top1"], original["zero_shot"][
            "chance_top1"]
        entry = {"original": o, "protected": p, "chance": chance}
        if o - chance <= 0:
            vlps[name] = entry | _not_measured("the originals read at or below chance")
        else:
            drop = (o - p) / (o - chance)
            vlps[name] = entry | {"margin_drop": drop, "met": drop >= TRANSFER_MARGIN_DROP}
    measured = [e["met"] for e in vlps.values() if e["met"] is not None]
    if not measured:
        return {"vlps": vlps} | _not_measured("no held-out VLP reads the originals above chance")
    return {"vlps": vlps, "met": all(measured)}


def _vlp_results(result: dict, variant: str, index: int) -> dict | None:
    """The results of the ``index``-th VLP (0: the target) on ``variant``, None when not measured."""
    vlps = result.get("vlps") or []
    if "vlp" not in result or index >= len(vlps):
        return None
    name = vlps[index]["name"]
    found = next((v for v in result["vlp"]["variants"] if v["id"] == variant), None)
    return None if found is None else found["results"].get(name)


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
