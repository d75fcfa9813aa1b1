"""Rate-distortion on a folder of images: psic (full and protected decodings), the same backbones trained without
PSIC, JPEG and WebP (quality sweeps, and matched per image to each psic weights' bpp), BD-rates between the curves.

Curves are means over the images of each subset (all images, and each highlighted image on its own): mean bpp,
mean PSNR, mean MS-SSIM (shown in dB as -10 log10(1 - mean MS-SSIM)).
"""

from __future__ import annotations

import re
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from . import baselines
from .baselines import CODEC_LABEL
from .bdrate import bd_quality, bd_rate
from .codecs import PSIC, EvalWeights
from .data import load_rgb
from .metrics import ms_ssim, ms_ssim_db, psnr

def family(name: str) -> str:
    """Weights of one family differ only in quality: ``mshp64-q2`` -> ``mshp64``."""
    return re.sub(r"[-_]q\d+$", "", name)


def series_of(w: EvalWeights, decoding: str) -> str:
    suffix = " (no PSIC)" if w.role != PSIC else ""
    return f"{family(w.info.name)}{suffix} {decoding}"


def _quality(reference, decoded) -> dict:
    return {"psnr": psnr(reference, decoded), "msssim": ms_ssim(reference, decoded)}


def measure(images: list[Path], weights: list[EvalWeights], sweep: dict[str, tuple[int, ...]],
            log: Callable[[str], None] = print) -> list[dict]:
    """One row per image and coded version: series, setting, bpp, PSNR, MS-SSIM."""
    rows = []
    for index, path in enumerate(images):
        started = time.perf_counter()
        rgb = load_rgb(path)
        for w in weights:
            coded = w.round_trip(rgb, protected=w.role == PSIC)
            decodings = ("full", "protected") if w.role == PSIC else ("full",)
            for decoding in decodings:
                rows.append({"image": path.name, "series": series_of(w, decoding), "weights": w.label,
                             "setting": w.label, "bpp": coded["bpp"]} | _quality(rgb, coded[decoding]))
            if w.role == PSIC:
                for codec in baselines.CODECS:
                    match = baselines.match_bpp(rgb, codec, coded["bpp"])
                    rows.append({"image": path.name, "series": f"{CODEC_LABEL[codec]} @ {w.label}",
                                 "weights": w.label, "setting": f"q{match.quality}", "bpp": match.bpp,
                                 "target_bpp": coded["bpp"], "matched": True}
                                | _quality(rgb, baselines.decode(match.data)))
        for codec, qualities in sweep.items():
            for q in qualities:
                c = baselines.code(rgb, codec, q)
                rows.append({"image": path.name, "series": CODEC_LABEL[codec], "setting": f"q{q}", "bpp": c.bpp}
                            | _quality(rgb, baselines.decode(c.data)))
        log(f"  rd {index + 1}/{len(images)} {path.name} ({time.perf_counter() - started:.1f} s)")
    return rows


def aggregate(rows: list[dict], subset: set[str] | None = None) -> dict[str, list[dict]]:
    """Mean point per (series, setting) over the images in ``subset`` (all when None), sorted by bpp."""
    groups = defaultdict(list)
    for row in rows:
        if subset is None or row["image"] in subset:
            groups[(row["series"], row["setting"])].append(row)
    curves = defaultdict(list)
    for (series, setting), members in groups.items():
        point = {
            "setting": setting,
            "images": len(members),
            "bpp": statistics.fmean(r["bpp"] for r in members),
            "psnr": statistics.fmean(r["psnr"] for r in members),
            "msssim": statistics.fmean(r["msssim"] for r in members),
        }
        point["msssim_db"] = ms_ssim_db(point["msssim"])
        if "target_bpp" in members[0]:
            point["target_bpp"] = statistics.fmean(r["target_bpp"] for r in members)
        if members[0].get("weights"):
            point["weights"] = members[0]["weights"]
        curves[series].append(point)
    return {series: sorted(points, key=lambda p: p["bpp"]) for series, points in sorted(curves.items())}


def _bd_entry(curves, test: str, anchor: str, note: str) -> dict:
    t, a = curves[test], curves[anchor]
    entry = {"test": test, "anchor": anchor, "note": note}
    for metric, key in (("psnr", "psnr"), ("msssim", "msssim_db")):
        args = ([p["bpp"] for p in a], [p[key] for p in a], [p["bpp"] for p in t], [p[key] for p in t])
        entry[f"bd_rate_{metric}"] = bd_rate(*args).as_dict()
        entry[f"bd_rate_{metric}_pchip"] = bd_rate(*args, method="pchip").as_dict()
        entry[f"bd_{metric}_db"] = bd_quality(*args).as_dict()
    return entry


def bd_table(curves: dict[str, list[dict]], weights: list[EvalWeights]) -> list[dict]:
    """BD-rates: psic full against each baseline (same family trained without PSIC, JPEG, WebP), and psic protected
    against psic full."""
    from ..weights import base_init, training_record

    entries = []
    families = sorted({family(w.info.name) for w in weights if w.role == PSIC})
    baseline_families = sorted({family(w.info.name) for w in weights if w.role != PSIC})
    baseline_by_name = {w.info.name: family(w.info.name) for w in weights if w.role != PSIC}
    for fam in families:
        full, protected = f"{fam} full", f"{fam} protected"
        if full not in curves:
            continue
        # the anchor is the family the psic weights were first initialised from (their metadata), else the same
        # family name, else every baseline family
        inits = {baseline_by_name.get(base_init(training_record(w.info))) for w in weights
                 if w.role == PSIC and family(w.info.name) == fam} - {None}
        chosen = sorted(inits) or ([fam] if fam in baseline_families else baseline_families)
        anchors = [f"{b} (no PSIC) full" for b in chosen]
        for anchor in (a for a in anchors if a in curves):
            entries.append(_bd_entry(curves, full, anchor, "psic full vs the backbone trained without PSIC"))
        for codec in baselines.CODECS:
            if CODEC_LABEL[codec] in curves:
                entries.append(_bd_entry(curves, full, CODEC_LABEL[codec], f"psic full vs {CODEC_LABEL[codec]}"))
        if protected in curves:
            entries.append(_bd_entry(curves, protected, full, "cost of the shield: protected vs full, same bitstreams"))
    return entries


def run(images: list[Path], weights: list[EvalWeights], highlight: dict[str, str], sweep, log=print) -> dict:
    rows = measure(images, weights, sweep, log)
    names = [p.name for p in images]
    subsets = {"all": {"title": f"all {len(names)} images", "images": names}}
    for file, title in highlight.items():
        if file in names:
            subsets[title] = {"title": f"{title} ({file})", "images": [file]}
    for key, subset in subsets.items():
        subset["curves"] = aggregate(rows, set(subset["images"]))
        subset["bd"] = bd_table(subset["curves"], weights)
    return {"images": names, "highlights": highlight, "sweep": {k: list(v) for k, v in sweep.items()},
            "subsets": subsets, "rows": rows}


def training_objective(model: str, images: list[Path], lmbda: float, protected: bool = False) -> dict:
    """Mean bpp (real ``.psic`` files, container included), PSNR and the rate-distortion cost a trainer at ``lmbda``
    minimises, J = bpp + λ·255²·MSE, of ``model``'s full (or protected) decoding over ``images``: one number to
    compare snapshots of one model at one λ (A/Bs, learning curves)."""
    import numpy as np

    import psic_core

    bpps, psnrs, mses = [], [], []
    for path in images:
        rgb = load_rgb(path)
        data = psic_core.encode(rgb, model=model)
        decoded = psic_core.decode(data, full=not protected, output="numpy", model=model)
        bpps.append(8 * len(data) / (rgb.shape[0] * rgb.shape[1]))
        psnrs.append(psnr(rgb, decoded))
        mses.append(float(np.mean((rgb.astype(np.float64) - decoded) ** 2)) / 255**2)
    bpp, mse = statistics.fmean(bpps), statistics.fmean(mses)
    return {"bpp": bpp, "psnr": statistics.fmean(psnrs), "mse": mse, "cost": bpp + lmbda * 255**2 * mse}
