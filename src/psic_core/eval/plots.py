"""PNG plots of a results dictionary (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(series: str) -> dict:
    if series.startswith("JPEG"):
        return {"color": "tab:gray", "marker": "s", "linestyle": "--"}
    if series.startswith("WebP"):
        return {"color": "tab:olive", "marker": "^", "linestyle": "--"}
    if "(no PSIC)" in series:
        return {"marker": "D", "linestyle": "-.", "markerfacecolor": "none"}
    if series.endswith("protected"):
        return {"marker": "x", "linestyle": ":"}
    return {"marker": "o", "linestyle": "-"}


def rd_plot(subset: dict, path: Path, title: str) -> None:
    """PSNR and MS-SSIM (dB) against bpp for every curve of one subset (matched single points left out)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {}
    for series, points in subset["curves"].items():
        if " @ " in series:
            continue
        style = _style(series)
        if "color" not in style:  # psic full, protected and the no-PSIC baseline of one family share a colour
            fam = series.rsplit(" ", 1)[0].replace(" (no PSIC)", "")
            colours.setdefault(fam, f"C{len(colours)}")
            style["color"] = colours[fam]
        for ax, key in zip(axes, ("psnr", "msssim_db")):
            pts = [p for p in points if math.isfinite(p[key])]
            ax.plot([p["bpp"] for p in pts], [p[key] for p in pts], label=series, **style)
    for ax, label in zip(axes, ("PSNR (dB)", "MS-SSIM (dB)")):
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def vlp_plot(variants: list[dict], vlp_names: list[str], path: Path, title: str) -> None:
    """Zero-shot top-1 and image->text R@1 per variant and VLP, with the chance levels as dashed lines."""
    plt = _pyplot()
    labels = [v["title"] for v in variants]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.9 + 0.32 * len(labels) * max(1, len(vlp_names)) ** 0.5 + 1.2))
    height = 0.8 / max(1, len(vlp_names))
    for ax, (group, key, chance, name) in zip(axes, (("zero_shot", "top1", "chance_top1", "zero-shot top-1"),
                                                     ("retrieval", "i2t_r1", "chance_r1", "image->text R@1"))):
        for j, vlp in enumerate(vlp_names):
            values = [v["results"][vlp][group][key] for v in variants]
            ys = [i + (j - (len(vlp_names) - 1) / 2) * height for i in range(len(labels))]
            ax.barh(ys, values, height=height, label=vlp)
            c = variants[0]["results"][vlp][group][chance]
            ax.axvline(c, color=f"C{j}", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{name} (dashed: chance)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
