"""Codec table: bpp, PSNR of the full and protected decodings, encode/decode seconds per image, for every bundled
weights file on a folder of images (kodak-like-24 in docs). Writes JSON, markdown and an RD plot.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/codec_table.py --images ../shared/data/eval/kodak-like-24 \
        --out docs/benchmarks/codec
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

import psic_core  # noqa: E402
from psic_core.eval.metrics import psnr  # noqa: E402
from psic_core.weights import load_model, registry  # noqa: E402

REAL_KODAK = {"kodak-like-01.png": "kodim02", "kodak-like-02.png": "kodim07"}


def measure(images: list[Path], weights) -> list[dict]:
    load_model(weights)  # exclude start-up from the timings
    rows = []
    for path in tqdm(images, desc=weights.name, unit="img", file=sys.stderr):
        original = np.asarray(Image.open(path).convert("RGB"))
        started = time.perf_counter()
        data = psic_core.encode(original, model=weights.name, key="bench")
        encode_s = time.perf_counter() - started
        started = time.perf_counter()
        protected = psic_core.decode(data, output="numpy")
        decode_s = time.perf_counter() - started
        full = psic_core.decode(data, key="bench", output="numpy")
        h, w = original.shape[:2]
        rows.append({
            "image": path.name,
            "bpp": 8 * len(data) / (w * h),
            "psnr_full": psnr(original, full),
            "psnr_protected": psnr(original, protected),
            "encode_s": encode_s,
            "decode_s": decode_s,
        })
    return rows


def summarise(rows: list[dict]) -> dict:
    return {k: statistics.mean(r[k] for r in rows) for k in ("bpp", "psnr_full", "psnr_protected", "encode_s", "decode_s")}


def write_markdown(result: dict, path: Path):
    lines = [
        "# Codec table (kodak-like-24)",
        "",
        f"Generated {result['date']} on {result['machine']} by `{result['command']}`.",
        "",
        "Mean over the images. Seconds are wall-clock per image on this machine (torch threads: "
        f"{result['torch_threads']}), model already loaded; encode includes the key lock (scrypt, ~50 ms).",
        "",
        "| weights | SHA-256 | images | bpp | PSNR full (dB) | PSNR protected (dB) | encode s | decode s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in result["models"].items():
        for subset, label in (("all", f"all {len(entry['images'])}"), ("real_kodak", "kodim02+07")):
            s = entry[subset]
            lines.append(
                f"| {name} | `{entry['sha256'][:12]}` | {label} | {s['bpp']:.3f} | {s['psnr_full']:.2f} | "
                f"{s['psnr_protected']:.2f} | {s['encode_s']:.2f} | {s['decode_s']:.2f} |"
            )
    lines += ["", f"![RD plot]({Path(result['plot']).name})", ""]
    path.write_text("\n".join(lines))


def plot(result: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, entry in result["models"].items():
        s = entry["all"]
        ax.scatter([s["bpp"]], [s["psnr_full"]], marker="o", label=f"{name} full")
        ax.scatter([s["bpp"]], [s["psnr_protected"]], marker="x", label=f"{name} protected")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("psic on kodak-like-24 (mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output prefix (writes .json, .md, .png)")
    parser.add_argument("--models", nargs="*", help="weights names (default: all bundled)")
    args = parser.parse_args(argv)

    import torch

    images = sorted(args.images.glob("*.png"))
    if not images:
        parser.error(f"no PNG images in {args.images}")
    weights = [registry.find(n) for n in args.models] if args.models else registry.all()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} "
                   f"{platform.python_version()}, torch {torch.__version__}",
        "torch_threads": torch.get_num_threads(),
        "command": "python benchmarks/codec_table.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "plot": str(args.out.with_suffix(".png")),
        "models": {},
    }
    for w in weights:
        rows = measure(images, w)
        result["models"][w.name] = {
            "sha256": w.sha256,
            "all": summarise(rows),
            "real_kodak": summarise([r for r in rows if r["image"] in REAL_KODAK]),
            "images": rows,
        }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    write_markdown(result, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
