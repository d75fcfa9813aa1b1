"""Where the shield fails, and whether the target VLP could be fooled at all: per-source zero-shot top-1 of the
target VLP on the labelled sets, for the original, full and protected decodings of psic weights,

- on the **test** and **train** splits (the VLP was trained on the train split; the codec too),
- with the images first resized to a shorter side of 144 px (the scale the PSIC trainer crops at) and 96 px,
- and after a per-image PGD attack on the originals at a few RMS budgets, on both splits (what an image-specific
  perturbation of that size can do; the codec's trigger is one generator shared by every image).

    python benchmarks/shield_diagnostics.py --data ../shared/data --weights mshp64-q1 \
        --out docs/experiments/shield-diagnostics.md

Writes the markdown, a JSON next to it and a bar plot (PNG). About 7 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import psic_core  # noqa: E402
from psic_core.vlp import DEFAULT_VLP, load_vlp  # noqa: E402
from psic_core.vlp.data import open_rgb, read_labelled, zero_shot_candidates  # noqa: E402
from psic_core.vlp.zeroshot import class_embeddings, zero_shot_report  # noqa: E402

PGD_STEPS = 15


def short_side(im: Image.Image, side: int | None) -> Image.Image:
    if side is None:
        return im
    scale = side / min(im.size)
    return im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))), Image.BICUBIC)


def decodings(images: list[Image.Image], weights: str) -> dict[str, list[Image.Image]]:
    full, protected = [], []
    for im in images:
        data = psic_core.encode(np.asarray(im), model=weights)
        full.append(Image.fromarray(psic_core.decode(data, full=True, output="numpy")))
        protected.append(Image.fromarray(psic_core.decode(data, output="numpy")))
    return {"full": full, "protected": protected}


def top1(vlp, images, items, candidates) -> dict[str, float]:
    """Zero-shot top-1 per source (short name), the candidates being the labels of the image's source."""
    report = zero_shot_report(vlp, images, [i.label for i in items], [i.source for i in items], candidates)
    return {source.split("/")[-1]: scores["top1"] for source, scores in report.items()}


def pgd(vlp, image: Image.Image, classes: torch.Tensor, target: int, rms: float) -> Image.Image:
    """Untargeted L2 PGD on the zero-shot cross-entropy, the perturbation's RMS (in [0, 1] units) at most ``rms``."""
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255
    delta = torch.zeros_like(x, requires_grad=True)
    scale = vlp.logit_scale.detach()
    for _ in range(PGD_STEPS):
        logits = scale * vlp.encode_image((x + delta).clamp(0, 1)) @ classes.T
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([target])), delta)
        with torch.no_grad():
            delta += 0.25 * rms * grad / grad.pow(2).mean().sqrt().clamp_min(1e-12)
            delta *= (rms / delta.pow(2).mean().sqrt().clamp_min(1e-12)).clamp(max=1)
    attacked = ((x + delta.detach()).clamp(0, 1)[0].permute(1, 2, 0) * 255).round().byte().numpy()
    return Image.fromarray(attacked)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    vlp = load_vlp(args.vlp).frozen()
    candidates = zero_shot_candidates(args.data)
    classes = {source: class_embeddings(vlp, labels) for source, labels in candidates.items()}
    chance = {source.split("/")[-1]: 1 / len(labels) for source, labels in sorted(candidates.items())}
    rows = []

    def measure(split: str, side: int | None, weights: str | None):
        items = read_labelled(args.data, split)
        originals = [short_side(open_rgb(item.path).convert("RGB"), side) for item in items]
        variants = {"original": originals} | (decodings(originals, weights) if weights else {})
        for decoding, images in variants.items():
            rows.append({"split": split, "short_side": side, "weights": weights if decoding != "original" else None,
                         "decoding": decoding, "top1": top1(vlp, images, items, candidates)})
            print(json.dumps(rows[-1]), flush=True)

    for weights in args.weights:
        measure("test", None, weights)
        measure("train", None, weights)
        for side in (144, 96):
            measure("test", side, weights)
    for split in args.pgd_splits:
        items = read_labelled(args.data, split)
        originals = [open_rgb(item.path).convert("RGB") for item in items]
        for budget in args.pgd_rms:
            attacked = [pgd(vlp, im, classes[item.source], candidates[item.source].index(item.label), budget / 255)
                        for im, item in zip(originals, items)]
            rows.append({"split": split, "short_side": None, "weights": None, "decoding": f"PGD rms {budget:g}/255",
                         "rms": budget, "top1": top1(vlp, attacked, items, candidates)})
            print(json.dumps(rows[-1]), flush=True)
    return {"vlp": args.vlp, "data": str(args.data), "chance": chance, "pgd_steps": PGD_STEPS, "rows": rows}


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(result: dict, command: str, seconds: float, plot: Path) -> str:
    sources = list(result["chance"])
    head = ["split", "images resized to", "decoding"] + [f"`{s}`" for s in sources]
    lines = [
        "# Shield diagnostics",
        "",
        f"Zero-shot top-1 % of the target VLP `{result['vlp']}` (a small CLIP we trained offline on this data: a "
        "demonstration-scale adversary) per labelled source, candidates = the labels of the image's source. "
        f"Generated by `{command}` in {seconds / 60:.1f} min.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 3 + "---:|" * len(sources),
    ]
    for row in result["rows"]:
        name = row["decoding"] if row["weights"] is None else f"`{row['weights']}` {row['decoding']}"
        side = f"shorter side {row['short_side']} px" if row["short_side"] else "as stored"
        lines.append("| " + " | ".join([row["split"], side, name] + [_percent(row["top1"][s]) for s in sources]) + " |")
    lines.append("| | | *chance* | " + " | ".join(_percent(result["chance"][s]) for s in sources) + " |")
    lines += ["", f"PGD: {result['pgd_steps']} steps of untargeted L2 PGD per image on the zero-shot "
              "cross-entropy, RMS of the perturbation at most the budget (1/255 is a PSNR of 48 dB).", "",
              f"![top-1 per source]({plot.name})", ""]
    return "\n".join(lines)


def bar_plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["split"] == "test" and r["short_side"] is None]
    sources = list(result["chance"])
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        label = row["decoding"] if row["weights"] is None else f"{row['weights']} {row['decoding']}"
        ax.bar([j + i * width for j in range(len(sources))], [100 * row["top1"][s] for s in sources], width,
               label=label)
    for j, source in enumerate(sources):
        ax.hlines(100 * result["chance"][source], j - width / 2, j + 0.8 - width / 2, colors="k", linestyles=":")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sources))], sources)
    ax.set_ylabel("zero-shot top-1 % (test split)")
    ax.set_title(f"{result['vlp']}: what each decoding and a per-image attack leave readable (dotted: chance)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding labelled/")
    parser.add_argument("--weights", nargs="+", default=["mshp64-q1"], help="psic weights (names or files)")
    parser.add_argument("--vlp", default=DEFAULT_VLP)
    parser.add_argument("--pgd-rms", nargs="+", type=float, default=[1.0, 3.0], help="PGD budgets, x/255 RMS")
    parser.add_argument("--pgd-splits", nargs="+", choices=["test", "train"], default=["test", "train"],
                        help="labelled splits to attack")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/experiments/shield-diagnostics.md"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot = args.out.with_suffix(".png")
    bar_plot(result, plot)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    command = "python benchmarks/shield_diagnostics.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.write_text(markdown(result, command, time.monotonic() - started, plot))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
