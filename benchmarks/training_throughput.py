"""Training throughput of the rate-distortion and the PSIC trainer step, per compute mode.

Times real optimisation steps (forward, backward, Adam, auxiliary quantile step) of the bundled default backbone
(``mshp64-rd-q2`` for the rate-distortion step, ``mshp64-q2`` against ``refclip-s`` for the PSIC step) on random
crops of real photos, for: float32, channels_last, bf16 autocast (entropy models and losses stay float32), both,
``torch.compile``, one vs two threads, and crop/batch shapes at equal pixels per step. Reports steps/s, megapixels/s
and CPU seconds per step (less sensitive than wall time to other work on the machine), over rounds.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/training_throughput.py --data ../shared/data \\
        --out docs/benchmarks/training-throughput.md

writes the markdown, a JSON file and a plot next to it. ``--quick`` runs a few steps per mode (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from psic_core.train.data import RandomCropImages  # noqa: E402
from psic_core.train.device import Compute  # noqa: E402
from psic_core.train.pairs import CaptionedImages, read_captions, read_labels  # noqa: E402
from psic_core.train.config import load_config  # noqa: E402
from psic_core.train.privacy import freeze_for_stage, privacy_step  # noqa: E402
from psic_core.train.rd import rd_step, split_parameters  # noqa: E402
from psic_core.weights import instantiate, registry  # noqa: E402

#: (label, precision, channels_last, compile, threads, batch, crop)
RD_MODES = [
    ("fp32", "fp32", False, False, 2, 8, 128),
    ("fp32, 1 thread", "fp32", False, False, 1, 8, 128),
    ("fp32 channels_last", "fp32", True, False, 2, 8, 128),
    ("bf16", "bf16", False, False, 2, 8, 128),
    ("bf16 channels_last", "bf16", True, False, 2, 8, 128),
    ("bf16, 1 thread", "bf16", False, False, 1, 8, 128),
    ("fp32 compile", "fp32", False, True, 2, 8, 128),
    ("bf16 compile", "bf16", False, True, 2, 8, 128),
    ("fp32 32x64px", "fp32", False, False, 2, 32, 64),
    ("fp32 2x256px", "fp32", False, False, 2, 2, 256),
    ("bf16 32x64px", "bf16", False, False, 2, 32, 64),
    ("bf16 2x256px", "bf16", False, False, 2, 2, 256),
]
PSIC_MODES = [
    ("fp32", "fp32", False, False, 2, 8, 128),
    ("bf16", "bf16", False, False, 2, 8, 128),
    ("bf16 channels_last", "bf16", True, False, 2, 8, 128),
]


def time_steps(step, steps: int, rounds: int) -> dict:
    """Fastest-round wall and median CPU seconds per step over ``rounds`` rounds of ``steps`` steps (after one warm-up round)."""
    step()
    wall, cpu = [], []
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        wall.append((time.perf_counter() - w0) / steps)
        cpu.append((time.process_time() - c0) / steps)
    # the fastest round: other work on the machine only ever slows a round down
    return {"wall_s": min(wall), "cpu_s": statistics.median(cpu),
            "wall_rounds": [round(w, 4) for w in wall]}


def measure_rd(photos: str, mode, steps: int, rounds: int) -> dict:
    label, precision, channels_last, compiled, threads, batch, crop = mode
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    compute = Compute.create("cpu", precision, channels_last, compiled)
    data = RandomCropImages(photos, crop, seed=0)
    model = compute.model(instantiate(registry.find("mshp64-rd-q2")).train())
    main_params, aux_params = split_parameters(model)
    optimizer, aux_optimizer = torch.optim.Adam(main_params, lr=1e-4), torch.optim.Adam(aux_params, lr=1e-3)
    forward = compute.forward(model)

    def step():
        return rd_step(model, compute.batch(data.batch(batch)), 0.025, optimizer, aux_optimizer, main_params,
                       compute, forward)

    started = time.perf_counter()
    first = step()
    first_step_s = time.perf_counter() - started
    result = time_steps(step, steps, rounds)
    return result | {"first_step_s": first_step_s, "first_loss": first["loss"].item(), "pixels": batch * crop * crop}


def measure_psic(data_root: Path, mode, steps: int, rounds: int) -> dict:
    from psic_core.vlp import load_vlp

    label, precision, channels_last, compiled, threads, batch, crop = mode
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    compute = Compute.create("cpu", precision, channels_last)
    items = read_captions(data_root / "captioned/captions.jsonl", "train")
    items += read_labels(data_root / "labelled/labels.csv", "train")
    pairs = CaptionedImages(items, crop, seed=0)
    vlp = load_vlp("refclip-s").frozen()
    model = compute.model(instantiate(registry.find("mshp64-q2")).train())
    params = freeze_for_stage(model, 2)
    optimizer = torch.optim.Adam(params, lr=1e-4)
    cfg = load_config(None, [])["train"]
    text_cache: dict = {}

    def step():
        drawn = pairs.batch(batch)
        drawn = drawn._replace(images=compute.batch(drawn.images))
        terms = privacy_step(model, vlp, drawn, None, cfg, 1.0, text_cache, compute)
        optimizer.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return time_steps(step, steps, rounds) | {"pixels": batch * crop * crop}


def render(results: dict, out: Path, command: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [len(RD_MODES), len(PSIC_MODES)]})
    for ax, trainer in zip(axes, ("rd", "psic")):
        rows = [r for r in results["rows"] if r["trainer"] == trainer and "wall_s" in r]
        base = next(r for r in rows if r["mode"] == "fp32")
        speedups = [base["wall_s"] / r["wall_s"] * r["pixels"] / base["pixels"] for r in rows]
        ax.bar(range(len(rows)), speedups, color=["C1" if "bf16" in r["mode"] else "C0" for r in rows])
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(rows)), [r["mode"] for r in rows], rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{trainer} trainer step")
        ax.set_ylabel("pixels/s relative to fp32, 2 threads")
    fig.suptitle("Training throughput on this CPU (higher is faster)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)

    lines = [
        "# Training throughput", "",
        f"Generated by `{command}`.", "",
        f"Machine: {results['machine']}; torch {results['torch']}; {results['steps']} steps x {results['rounds']} "
        "rounds per mode after one warm-up round; wall time of the fastest round, CPU time the median. Speed-up = pixels/s relative to the fp32, 2-thread row "
        "of the same trainer. CPU s/step counts both threads; it is less sensitive than wall time to other work "
        "on the machine. These numbers were taken while other jobs shared the 2 cores, so single rows can be off "
        "(compare the CPU column); the decisive comparison is the paired, equal-time A/B in "
        "[../experiments/precision-ab.md](../experiments/precision-ab.md).", "",
        f"![throughput]({out.with_suffix('.png').name})", "",
    ]
    for trainer, title in (("rd", "Rate-distortion step (mshp64-rd-q2)"), ("psic", "PSIC stage-2 step (mshp64-q2, "
                                                                                     "refclip-s)")):
        rows = [r for r in results["rows"] if r["trainer"] == trainer]
        base = next(r for r in rows if r["mode"] == "fp32")
        lines += [f"## {title}", "", "| mode | batch x crop | threads | steps/s | Mpixel/s | speed-up | CPU s/step "
                  "| first step s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['mode']} | {r['batch']}x{r['crop']} | {r['threads']} | failed: {r['error']} "
                             "| | | | |")
                continue
            speedup = base["wall_s"] / r["wall_s"] * r["pixels"] / base["pixels"]
            first = f"{r['first_step_s']:.1f}" if "first_step_s" in r else ""
            lines.append(f"| {r['mode']} | {r['batch']}x{r['crop']} | {r['threads']} | {1 / r['wall_s']:.2f} | "
                         f"{r['pixels'] / r['wall_s'] / 1e6:.2f} | {speedup:.2f}x | {r['cpu_s']:.3f} | {first} |")
        lines.append("")
    out.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder (train/, captioned/, "
                        "labelled/)")
    parser.add_argument("--out", type=Path, required=True, help="markdown report; .json and .png beside it")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 steps x 1 round, no torch.compile (smoke test)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one mode (trainer:index), print JSON
    parser.add_argument("--render", action="store_true", help="rewrite the markdown and plot from the JSON beside "
                        "--out (no measuring)")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.out.with_suffix(".json").read_text())
        render(results, args.out, results["command"])
        return
    steps, rounds = (2, 1) if args.quick else (args.steps, args.rounds)
    modes = {"rd": RD_MODES, "psic": PSIC_MODES}
    if args.one:
        trainer, index = args.one.split(":")
        mode = modes[trainer][int(index)]
        measure = measure_rd if trainer == "rd" else measure_psic
        source = str(args.data / "train") if trainer == "rd" else args.data
        print(json.dumps(measure(source, mode, steps, rounds)))
        return
    rows = []
    for trainer, trainer_modes in modes.items():
        for index, mode in enumerate(trainer_modes):
            if args.quick and mode[3]:
                continue
            label, precision, channels_last, compiled, threads, batch, crop = mode
            row = {"trainer": trainer, "mode": label, "precision": precision, "channels_last": channels_last,
                   "compile": compiled, "threads": threads, "batch": batch, "crop": crop}
            # a fresh process per mode: torch's thread pool does not grow back after set_num_threads(1), and a
            # mode that cannot run here (compile without a compiler, say) is a result, not a crash
            run = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--out", str(args.out),
                                  "--steps", str(steps), "--rounds", str(rounds), "--one", f"{trainer}:{index}"],
                                 capture_output=True, text=True)
            if run.returncode == 0:
                row |= json.loads(run.stdout.strip().splitlines()[-1])
            else:
                last = (run.stderr.strip().splitlines() or ["no output"])[-1]
                row["error"] = last[:160]
            print(json.dumps({k: v for k, v in row.items() if k != "wall_rounds"}), flush=True)
            rows.append(row)
    command = "OMP_WAIT_POLICY=PASSIVE python benchmarks/training_throughput.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "torch": torch.__version__, "steps": steps, "rounds": rounds, "rows": rows, "command": command}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    render(results, args.out, command)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
