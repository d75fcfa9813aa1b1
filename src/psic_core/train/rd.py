"""Rate-distortion training of a conditional codec (both decodings optimised for quality, no privacy term).

This made the bundled pre-privacy weights; see docs/training.md for the exact commands. Example::

    OMP_WAIT_POLICY=PASSIVE python -m psic_core.train.rd --data path/to/photos --lmbda 0.0130 \\
        --minutes 45 --name mshp64-q2 --quality 2 --out mshp64-q2.safetensors --checkpoint runs/q2.ckpt

The checkpoint (model and Adam moments, safetensors) is written every few minutes; rerunning the same command
resumes from it until the step or time budget is spent. ``--init`` starts from trained weights instead of random
ones (a registered name or a .safetensors path): a new quality level is a short fine-tune of a neighbouring one at
its own ``--lmbda``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..models import build_backbone  # noqa: E402
from ..weights import instantiate, registry, save_weights  # noqa: E402
from .data import RandomCropImages  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .losses import rate_distortion  # noqa: E402


def split_parameters(model):
    """CompressAI convention: entropy-bottleneck quantiles train with their own (auxiliary) optimiser."""
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return main, aux


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of training photos")
    parser.add_argument("--backbone", default="mean-scale-hyperprior")
    parser.add_argument("--init", help="start from these weights (registered name or .safetensors path); "
                        "their backbone and N/M replace --backbone/--N/--M")
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--M", type=int, default=96)
    parser.add_argument("--lmbda", type=float, required=True, help="rate-distortion trade-off (CompressAI scale)")
    parser.add_argument("--name", required=True, help="weights name stored in the metadata")
    parser.add_argument("--quality", type=int)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--checkpoint", type=Path, help="resume from / save to this file (outside git)")
    parser.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget, counted across resumes")
    parser.add_argument("--max-steps", type=int, default=10**9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, help="CSV log of the loss terms")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = RandomCropImages(args.data, args.crop, seed=args.seed)
    if args.init:
        info = registry.find(args.init)
        model, init_name = instantiate(info), info.name
    else:
        model, init_name = build_backbone(args.backbone, N=args.N, M=args.M), None
    main_params, aux_params = split_parameters(model)
    optimizer = torch.optim.Adam(main_params, lr=args.lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=1e-3)
    optimizers = {"opt": optimizer, "aux": aux_optimizer}
    progress = {"step": 0, "seconds": 0.0}
    if args.checkpoint and args.checkpoint.exists():
        progress = load_checkpoint(args.checkpoint, model, optimizers)
        data.generator.manual_seed(args.seed + progress["step"])
    budget = args.minutes * 60
    log = open(args.log, "a", newline="") if args.log else None
    writer = None
    bar = tqdm(total=int(budget), initial=int(progress["seconds"]), unit="s", desc=args.name)
    started, last_save = time.monotonic() - progress["seconds"], time.monotonic()
    model.train()
    while progress["seconds"] < budget and progress["step"] < args.max_steps:
        # cosine decay over the time budget, to a tenth of the initial rate
        fraction = progress["seconds"] / budget
        for group in optimizer.param_groups:
            group["lr"] = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * fraction)))
        x = data.batch(args.batch)
        terms = rate_distortion(model(x), x, args.lmbda)
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        optimizer.step()
        aux_loss = model.aux_loss()
        aux_loss.backward()
        aux_optimizer.step()
        progress["step"] += 1
        now = time.monotonic()
        bar.update(int(now - started) - bar.n)
        progress["seconds"] = now - started
        row = {"step": progress["step"], "seconds": round(progress["seconds"], 1)}
        row |= {k: round(v.item(), 6) for k, v in terms.items()} | {"aux": round(aux_loss.item(), 3)}
        if progress["step"] % 10 == 0:
            bar.set_postfix({k: row[k] for k in ("loss", "bpp", "mse_full", "mse_protect")})
        if log:
            writer = writer or csv.DictWriter(log, fieldnames=list(row))
            if log.tell() == 0:
                writer.writeheader()
            writer.writerow(row)
        if args.checkpoint and now - last_save > 300:
            save_checkpoint(args.checkpoint, model, optimizers, progress)
            last_save = now
    bar.close()
    if args.checkpoint:
        save_checkpoint(args.checkpoint, model, optimizers, progress)
    model.update(force=True)
    training = {"script": "psic_core.train.rd", "lmbda": args.lmbda, "steps": progress["step"],
                "batch": args.batch, "crop": args.crop, "data": Path(args.data).name, "seed": args.seed,
                "init": init_name}
    save_weights(model.eval(), args.out, name=args.name, quality=args.quality, extra={"training": training})
    print(f"wrote {args.out} after {progress['step']} steps")


if __name__ == "__main__":
    main()
