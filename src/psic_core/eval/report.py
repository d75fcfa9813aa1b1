"""``python -m psic_core.eval``: the whole evaluation in one command, written as JSON, markdown and PNG plots.

    OMP_WAIT_POLICY=PASSIVE python -m psic_core.eval                 # defaults: docs/results.md (< 30 min, 2 cores)
    OMP_WAIT_POLICY=PASSIVE python -m psic_core.eval --quick         # a smoke run (< 3 min)
    python -m psic_core.eval --images my/photos --vlp-data my/vlpdata --weights a.safetensors \\
        --baseline-weights rd-only.safetensors --vlp refclip-s transfer.safetensors --out report/results.md
    python -m psic_core.eval --render docs/results/results.json     # re-render markdown and plots only

Sections (``--sections``): rd (rate-distortion with JPEG/WebP/no-PSIC baselines and BD-rates), vlp (what the target
and transfer VLPs read from each decoding), robustness (the protected decoding after re-processing), speed (seconds
and peak memory per image size and thread count, large-image decode and tile seams), sheets (contact sheets).
The markdown goes to ``--out``; plots and ``results.json`` go to the folder of the same name without ``.md``. An
existing report is replaced only with ``--force``; ``--render`` always rewrites the page of its JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import baselines, data
from .exploit import QUICK_ROBUSTNESS, ROBUSTNESS
from .speed import SIZES

SECTIONS = ("rd", "vlp", "robustness", "speed", "sheets")
PROG = "python -m psic_core.eval"
SCHEMA = 1

DEMO_VLP_NOTE = (
    "**About the VLPs.** The reference target VLP (`refclip-s`) is a *demonstration-scale* CLIP-style model (a small "
    "ResNet image tower and a 4-layer text transformer, 96 px input) that **we trained offline ourselves**, in "
    "minutes on CPU, on the train splits of the project's offline image data (a few hundred labelled and captioned "
    "photos). It is not OpenAI CLIP or any production model, and its absolute accuracies are low. The numbers below "
    "show how the shield behaves against the model it was trained to fool (and, in the transfer section, against "
    "models it never saw); they are not evidence of protection against large real-world VLPs."
)


# --- options -------------------------------------------------------------------------------------------------


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 3 min on 2 cores): 2 images (the real Kodak ones), 3 labelled test images per "
                        "source, 9 captions, the target VLP only, JPEG q75 and rescale robustness, short JPEG/WebP "
                        "sweeps, small speed images")
    p.add_argument("--data", type=Path, help="data folder holding eval/kodak-like-24, labelled/ and captioned/ "
                   f"(default: ${data.ENV_DATA})")
    p.add_argument("--images", type=Path, help=f"images for rate-distortion (default: <data>/{data.DEFAULT_IMAGE_SET})")
    p.add_argument("--vlp-data", type=Path, help="folder with labelled/labels.csv and captioned/captions.jsonl "
                   "(default: <data>)")
    p.add_argument("--weights", nargs="+", metavar="W", help="psic weights, names or .safetensors paths "
                   "(default: the installed weights made by the PSIC trainer; if there are none, every installed "
                   "weights file that is not a baseline)")
    p.add_argument("--baseline-weights", nargs="+", metavar="W", help="the same backbones trained without PSIC, "
                   "names or paths; their full decoding is the baseline (default: the installed rate-distortion-only "
                   "weights; 'none' for no learned baseline)")
    p.add_argument("--vlp", nargs="+", metavar="VLP", help="target VLP first, then transfer VLPs: registered names, "
                   "psic VLP .safetensors paths or open_clip:<model> (default: refclip-s, then any other registered)")
    p.add_argument("--out", type=Path, default=Path("docs/results.md"), help="markdown report (default: %(default)s)")
    p.add_argument("-f", "--force", action="store_true",
                   help="replace an existing report (--out and the results.json beside it)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to run (default: all)")
    p.add_argument("--max-images", type=int, help="at most this many rate-distortion images (highlighted ones first)")
    p.add_argument("--highlight", nargs="+", metavar="FILE", help="images also reported on their own "
                   "(default: the real Kodak images, from the folder's manifest.csv)")
    p.add_argument("--per-source", type=int, help="labelled test images per source (default: all)")
    p.add_argument("--captions", type=int, help="captioned test pairs (default: all)")
    p.add_argument("--robustness", nargs="+", choices=list(ROBUSTNESS), help="transforms of the protected decoding "
                   "(default: all)")
    p.add_argument("--speed-sizes", nargs="+", metavar="SIZE", type=_size,
                   help=f"WIDTHxHEIGHT or one of {', '.join(SIZES)} (default: 768x512 12MP)")
    p.add_argument("--speed-threads", nargs="+", type=int, help="default: 1 2")
    p.add_argument("--large", metavar="SIZE", type=_size, help="size of the large-image decode memory and seam check "
                   "(default 24MP; none to skip)")
    p.add_argument("--speed-weights", metavar="W", help="weights for the speed section (default: the first psic)")
    p.add_argument("--sheet-images", type=int, help="images per contact sheet (default 4)")
    p.add_argument("--threads", type=int, help="torch threads of the main process (default: torch's choice)")
    p.add_argument("--cache-dir", type=Path, help="keep the .psic encodings here and reuse them on later runs")
    p.add_argument("--note", help="a sentence printed at the top of the report (e.g. what a dry run stands in for)")
    p.add_argument("--render", type=Path, metavar="JSON", help="only re-render the markdown and plots from a results "
                   "JSON (FOLDER/results.json rewrites FOLDER.md and the plots in FOLDER/)")
    return p


def _size(label: str) -> str:
    from .speed import parse_size

    if label != "none":
        try:
            parse_size(label)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return label


def settings(args) -> dict:
    quick = args.quick
    return {
        "mode": "quick" if quick else "default",
        "max_images": args.max_images if args.max_images is not None else (2 if quick else None),
        "sweep": baselines.QUICK_SWEEP if quick else baselines.SWEEP,
        "per_source": args.per_source if args.per_source is not None else (3 if quick else None),
        "captions": args.captions if args.captions is not None else (9 if quick else None),
        "robustness": args.robustness or list(QUICK_ROBUSTNESS if quick else ROBUSTNESS),
        "speed_sizes": args.speed_sizes or (["768x512"] if quick else ["768x512", "12MP"]),
        "speed_threads": args.speed_threads or [1, 2],
        "large": None if args.large == "none" else (args.large or ("1536x1024" if quick else "24MP")),
        "sheet_images": args.sheet_images or (2 if quick else 4),
        "vlp_limit": 1 if quick else None,
    }


# --- environment ---------------------------------------------------------------------------------------------


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for module in ("compressai", "open_clip", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001
            versions[module] = None
    versions |= baselines.versions()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib, "system": platform.platform(),
            "torch_threads": torch.get_num_threads(), "versions": versions}


def git_commit() -> dict | None:
    repo = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the run -------------------------------------------------------------------------------------------------


def run(args, argv: list[str], prog: str) -> dict:
    from psic_core.vlp import DEFAULT_VLP, available_vlps

    from . import exploit, rd, speed
    from .codecs import PSIC, resolve_weights

    started = time.perf_counter()
    cfg = settings(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sections = set(args.sections)
    if "robustness" in sections:
        sections.add("vlp")
    root = args.data or data.default_data_root()
    images_dir = args.images or (root / data.DEFAULT_IMAGE_SET if root else None)
    vlp_root = args.vlp_data or root
    if "rd" in sections and not images_dir:
        raise SystemExit(f"no image folder: pass --data (or --images), or set {data.ENV_DATA}")
    if "rd" in sections and not Path(images_dir).is_dir():
        raise SystemExit(f"image folder {images_dir} does not exist")
    if sections & {"vlp", "sheets"} and vlp_root and not (Path(vlp_root) / "labelled" / "labels.csv").is_file():
        raise SystemExit(f"{vlp_root} has no labelled/labels.csv: pass --vlp-data (the folder holding labelled/ and "
                         "captioned/)")
    if sections & {"vlp", "sheets"} and not vlp_root:
        raise SystemExit("no VLP data: pass --vlp-data or --data (or set PSIC_EVAL_DATA)")
    baseline_specs = [] if args.baseline_weights == ["none"] else args.baseline_weights
    weights = resolve_weights(args.weights, baseline_specs, args.cache_dir, _log)
    psic_weights = [w for w in weights if w.role == PSIC]
    if not psic_weights:
        raise SystemExit("no psic weights to evaluate: install some or pass --weights")

    result = {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"{prog} {shlex.join(argv)}".strip(),
        "mode": cfg["mode"],
        "note": args.note,
        "settings": {k: v for k, v in cfg.items() if k != "sweep"}
        | {"sweep": {k: list(v) for k, v in cfg["sweep"].items()}},
        "sections": [s for s in SECTIONS if s in sections],
        "machine": machine(),
        "git": git_commit(),
        "weights": [w.describe() for w in weights],
        "seconds": {},
    }
    _log(f"psic eval ({cfg['mode']}): {len(psic_weights)} psic weights, {len(weights) - len(psic_weights)} baseline(s)")

    if "rd" in sections:
        t0 = time.perf_counter()
        highlight = data.highlights(images_dir, args.highlight)
        chosen = data.pick_images(data.list_images(images_dir), cfg["max_images"], set(highlight))
        if not chosen:
            raise SystemExit(f"no images in {images_dir}")
        _log(f"rate-distortion on {len(chosen)} images from {images_dir}")
        result["rd"] = rd.run(chosen, weights, highlight, cfg["sweep"], _log) | {"folder": str(images_dir)}
        result["seconds"]["rd"] = time.perf_counter() - t0

    vlps = []
    if sections & {"vlp", "sheets"}:
        specs = args.vlp or [DEFAULT_VLP] + [n for n in available_vlps() if n != DEFAULT_VLP]
        if cfg["vlp_limit"]:
            specs = specs[: cfg["vlp_limit"]]
        vlps = exploit.load_vlps(specs)
        result["vlps"] = [v.describe() for v in vlps]

    with tempfile.TemporaryDirectory(prefix="psic-eval-") as tmp:
        subset_root = data.vlp_subset_root(vlp_root, cfg["per_source"], cfg["captions"], Path(tmp)) if vlps else None
        if "vlp" in sections:
            t0 = time.perf_counter()
            robustness = cfg["robustness"] if "robustness" in sections else []
            _log(f"VLP exploitation on {vlp_root}" + (" (subset)" if subset_root != Path(vlp_root).resolve() else ""))
            result["vlp"] = exploit.run(subset_root, weights, vlps, robustness, _log) | {
                "root": str(vlp_root), "per_source": cfg["per_source"], "captions": cfg["captions"]}
            result["seconds"]["vlp"] = time.perf_counter() - t0
        if "sheets" in sections:
            t0 = time.perf_counter()
            assets = assets_dir(args.out)
            assets.mkdir(parents=True, exist_ok=True)
            w = primary(psic_weights)
            path = assets / f"sheet-{slug(w.label)}.png"
            result["sheets"] = [exploit.contact_sheet(w, vlps[0], subset_root, cfg["sheet_images"], path)]
            result["seconds"]["sheets"] = time.perf_counter() - t0

    if "speed" in sections:
        t0 = time.perf_counter()
        if args.speed_weights:
            speed_w = next((w for w in weights if args.speed_weights in (w.label, w.info.name, str(w.info.path))), None)
        else:
            speed_w = primary(psic_weights)
        if speed_w is None:
            from psic_core.weights import registry

            info = registry.register(args.speed_weights) if Path(args.speed_weights).is_file() else \
                registry.find(args.speed_weights)
            weights_path, weights_label = str(info.path), info.name
        else:
            weights_path, weights_label = str(speed_w.info.path), speed_w.label
        source = speed_source(images_dir)
        _log(f"speed and memory with {weights_label} (source photo {source.name})")
        result["speed"] = speed.run(weights_path, source, cfg["speed_sizes"], cfg["speed_threads"], cfg["large"],
                                    max(cfg["speed_threads"]), log=_log) | {"weights_label": weights_label}
        result["seconds"]["speed"] = time.perf_counter() - t0

    result["coding"] = {w.label: {"encodes": w.encodes, "encode_s": w.encode_seconds, "decode_s": w.decode_seconds}
                        for w in weights}
    result["seconds"]["total"] = time.perf_counter() - started
    return result


def primary(psic_weights):
    """The weights of the contact sheet and the speed section: the default weights when they are evaluated, else the
    first (lowest quality)."""
    from psic_core.weights import DEFAULT_FAMILY, DEFAULT_QUALITY

    default = f"{DEFAULT_FAMILY}-q{DEFAULT_QUALITY}"
    return next((w for w in psic_weights if w.info.name == default), psic_weights[0])


def speed_source(images_dir: Path | None) -> Path:
    """The photo the speed images are made from: the first highlighted image of the RD folder, else the bundled
    Kodak sample."""
    if images_dir and Path(images_dir).is_dir():
        highlight = data.highlights(images_dir)
        files = data.list_images(images_dir)
        for f in files:
            if f.name in highlight:
                return f
        if files:
            return files[0]
    from psic_core.cli import SAMPLE

    return Path(SAMPLE)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def assets_dir(out: Path) -> Path:
    return out.with_suffix("") if out.suffix == ".md" else out.parent / (out.name + "-files")


# --- writing -------------------------------------------------------------------------------------------------


def _clean_json(value):
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    return value


def write(result: dict, out: Path) -> Path:
    from .markdown import render
    from .plots import rd_plot, vlp_plot

    assets = assets_dir(out)
    assets.mkdir(parents=True, exist_ok=True)
    keep = {s.get("file") for s in result.get("sheets", [])}
    for old in assets.glob("*.png"):
        if old.name not in keep:
            old.unlink()
    figures = {}
    for key, subset in result.get("rd", {}).get("subsets", {}).items():
        name = f"rd-{slug(key)}.png"
        rd_plot(subset, assets / name, f"rate-distortion, {subset['title']}")
        figures[f"rd/{key}"] = name
    variants = result.get("vlp", {}).get("variants", [])
    if variants:
        names = [v["name"] for v in result["vlps"]]
        vlp_plot(variants, names, assets / "vlp.png", "what the VLPs read (test splits)")
        figures["vlp"] = "vlp.png"
        robust = result["vlp"].get("robustness", [])
        if robust:
            base = [v for v in variants if v["kind"] in ("original", "protected")]
            vlp_plot(base + robust, names, assets / "robustness.png", "the protected decoding after re-processing")
            figures["robustness"] = "robustness.png"
    result["figures"] = figures
    (assets / "results.json").write_text(json.dumps(_clean_json(result), indent=1) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(result, assets.name, str(assets / "results.json")))
    return out


def _restore(value):
    if value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


def main(argv=None, prog: str = PROG) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)
    if args.render:
        result = _restore(json.loads(args.render.read_text()))
        out = args.render.resolve().parent.with_suffix(".md")  # the page beside the folder holding the JSON
        write(result, out)
        print(out)
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from psic_core.errors import PsicError
    from psic_core.extras import require

    existing = [path for path in (args.out, assets_dir(args.out) / "results.json") if path.exists()]
    if existing and not args.force:  # checked before a run of minutes
        print(f"{prog}: error: {existing[0]} exists; use --force to replace it", file=sys.stderr)
        return 1
    try:
        require("eval", prog)
        result = run(args, argv, prog)
    except (PsicError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    out = write(result, args.out)
    _log(f"wrote {out} and {assets_dir(args.out)}/ in {result['seconds']['total']:.0f} s")
    return 0
