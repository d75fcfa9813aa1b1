"""Rate-distortion training of a conditional codec (both decodings optimised for quality, no privacy term).

This made the bundled pre-privacy weights; see docs/training.md for the exact commands. Example::

    OMP_WAIT_POLICY=PASSIVE python -m psic_core.train.rd --data path/to/photos --lmbda 0.0130 \\
        --minutes 45 --name mshp64-q2 --quality 2 --out mshp64-q2.safetensors --checkpoint runs/q2.ckpt

The checkpoint (model and Adam moments, safetensors) is written every few minutes; rerunning the same command
resumes from it until the step or time budget is spent. ``--init`` starts from trained weights instead of random
ones (a registered name or a .safetensors path): a new quality level is a short fine-tune of a neighbouring one at
its own ``--lmbda``.

A variable-rate backbone (``--backbone mean-scale-hyperprior-vbr``) trains the whole quality ladder in one model:
each batch draws one point of the model's lambda ladder and trains at its lambda and gain, so ``--lmbda`` and
``--quality`` do not apply (they are refused). Its ``--init`` may be one-rate weights of the same transforms (e.g.
``mshp64-rd-q2``): everything that fits is loaded, and the variable-rate parts they lack (the gains and the
reconstruction offsets' network) start fresh, as the trainer reports.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..errors import PsicModelError  # noqa: E402
from ..models import BACKBONES, build_backbone  # noqa: E402
from ..weights import history, init_training_record, instantiate, registry, save_weights, training_record  # noqa: E402
from .data import RandomCropImages  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .config import CROP_MULTIPLE, Integer, Number, argument, prepare_output_files  # noqa: E402
from .device import DEFAULT_CHANNELS_LAST, DEFAULT_COMPILE, DEFAULT_PRECISION, DEVICES, PRECISIONS, Compute  # noqa: E402
from .losses import rate_distortion  # noqa: E402


def split_parameters(model):
    """CompressAI convention: entropy-bottleneck quantiles train with their own (auxiliary) optimiser."""
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    return main, aux


def rd_step(model, x: torch.Tensor, lmbda: float, optimizer, aux_optimizer, main_params, compute: Compute,
            forward=None, quality: float | None = None) -> dict:
    """One optimisation step of the rate-distortion loss (and of the auxiliary quantile loss); ``forward`` is
    ``compute.forward(model)`` when compiled; ``quality``: the rate a variable-rate model codes this batch at."""
    with compute.autocast():
        terms = rate_distortion((model if forward is None else forward)(x, quality=quality), x, lmbda)
    optimizer.zero_grad()
    aux_optimizer.zero_grad()
    terms["loss"].backward()
    torch.nn.utils.clip_grad_norm_(main_params, 1.0)
    optimizer.step()
    terms["aux"] = model.aux_loss()
    terms["aux"].backward()
    aux_optimizer.step()
    return terms


def init_variable_rate(backbone: str, info):
    """The variable-rate ``backbone`` built with the config of one-rate weights ``info`` and loaded with every
    tensor of theirs it has (the shared transforms, hyperprior and entropy models). Returns the model and the
    names of the modules and parameters that start fresh. Tensors the backbone has no place for, or of another
    shape, mean different transforms: refused."""
    from safetensors.torch import load_file

    model = build_backbone(backbone, **info.config)
    try:
        result = model.load_state_dict(load_file(str(info.path)), strict=False)
    except RuntimeError as exc:
        raise PsicModelError(f"{info.name} does not fit the {backbone} backbone: {exc}") from None
    if result.unexpected_keys:
        raise PsicModelError(f"{info.name} does not fit the {backbone} backbone: it has "
                             f"{', '.join(result.unexpected_keys)}, which {backbone} does not")
    model.update(force=False)
    return model, sorted({key.split(".")[0] for key in result.missing_keys})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of training photos")
    parser.add_argument("--backbone", default="mean-scale-hyperprior")
    parser.add_argument("--init", help="start from these weights (registered name or .safetensors path); "
                        "their backbone and N/M replace --backbone/--N/--M, except that one-rate weights under a "
                        "variable-rate --backbone give it their transforms and config")
    parser.add_argument("--N", type=argument(Integer(minimum=1)), default=64)
    parser.add_argument("--M", type=argument(Integer(minimum=1)), default=96)
    parser.add_argument("--lmbda", type=argument(Number(minimum=0, exclusive=True)),
                        help="rate-distortion trade-off (CompressAI scale); required, except for a variable-rate "
                        "backbone, which draws it per batch from its ladder and refuses it")
    parser.add_argument("--name", required=True, help="weights name stored in the metadata")
    parser.add_argument("--quality", type=argument(Integer(minimum=1)),
                        help="the level these weights are (one-rate backbones only)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--checkpoint", type=Path, help="resume from / save to this file (outside git)")
    parser.add_argument("--minutes", type=argument(Number(minimum=0, exclusive=True)), default=45.0,
                        help="wall-clock budget, counted across resumes")
    parser.add_argument("--max-steps", type=argument(Integer()), default=10**9,
                        help="step budget (0: export the start weights unchanged)")
    parser.add_argument("--batch", type=argument(Integer(minimum=1)), default=8)
    parser.add_argument("--crop", type=argument(Integer(multiple=CROP_MULTIPLE)), default=128)
    parser.add_argument("--lr", type=argument(Number(minimum=0, exclusive=True)), default=2e-4)
    parser.add_argument("--threads", type=argument(Integer()), default=0, help="torch threads (0: torch default)")
    parser.add_argument("--seed", type=argument(Integer()), default=0)
    parser.add_argument("--log", type=Path, help="CSV log of the loss terms (every step; every 10 on a GPU)")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} (auto: CUDA if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help="bf16: transforms under bfloat16 autocast, entropy models float32 (train/device.py)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=DEFAULT_CHANNELS_LAST,
                        help="NHWC activations")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=DEFAULT_COMPILE,
                        help="torch.compile the training forward")
    parser.add_argument("--half", action="store_true", help="export float16 outside the entropy path (about 0.7x "
                        "the size; weights.storage_state)")
    args = parser.parse_args(argv)
    if args.backbone not in BACKBONES:
        parser.error(f"--backbone must be one of {', '.join(sorted(BACKBONES))}, not {args.backbone!r}")
    init_info = registry.find(args.init) if args.init else None
    # the backbone trained: the init's, unless one-rate weights start a variable-rate --backbone
    transplant = init_info is not None and BACKBONES[args.backbone].variable_rate \
        and not BACKBONES[init_info.backbone].variable_rate
    variable_rate = BACKBONES[args.backbone if init_info is None or transplant else init_info.backbone].variable_rate
    if variable_rate and (args.lmbda is not None or args.quality is not None):
        parser.error("--lmbda and --quality do not apply to a variable-rate backbone: each batch draws a point of "
                     "its lambda ladder, and the weights cover the whole quality range")
    if not variable_rate and args.lmbda is None:
        parser.error("--lmbda is required (the rate-distortion trade-off of this one-rate backbone)")
    prepare_output_files([args.out, args.checkpoint, args.log])

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    compute = Compute.create(args.device, args.precision, args.channels_last, args.compile)
    data = RandomCropImages(args.data, args.crop, seed=args.seed, device=compute.device)
    if transplant:
        model, fresh = init_variable_rate(args.backbone, init_info)
        print(f"started {args.backbone} from {init_info.name}; fresh: {', '.join(fresh) or 'nothing'}")
        previous = training_record(init_info) or None
        init = {"init": init_info.name, "init_sha256": init_info.sha256, "init_fresh": fresh}
    elif init_info is not None:
        model, previous = instantiate(init_info), training_record(init_info) or None
        init = {"init": init_info.name, "init_sha256": init_info.sha256}
    else:
        model, previous, init = build_backbone(args.backbone, N=args.N, M=args.M), None, {"init": None}
    model = compute.model(model)
    main_params, aux_params = split_parameters(model)
    optimizer = torch.optim.Adam(main_params, lr=args.lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=1e-3)
    optimizers = {"opt": optimizer, "aux": aux_optimizer}
    progress = {"step": 0, "seconds": 0.0}
    # a variable-rate model's ladder point per batch, from its own stream (resumes reseed it as the crops')
    ladder = torch.Generator().manual_seed(args.seed)
    if args.checkpoint and args.checkpoint.exists():
        progress = load_checkpoint(args.checkpoint, model, optimizers)
        data.generator.manual_seed(args.seed + progress["step"])
        ladder.manual_seed(args.seed + progress["step"])
    budget = args.minutes * 60
    log = open(args.log, "a", newline="") if args.log else None
    writer = None
    bar = tqdm(total=int(budget), initial=int(progress["seconds"]), unit="s", desc=args.name)
    started, last_save = time.monotonic() - progress["seconds"], time.monotonic()
    model.train()
    forward = compute.forward(model)
    while progress["seconds"] < budget and progress["step"] < args.max_steps:
        # cosine decay over the time budget, to a tenth of the initial rate
        fraction = progress["seconds"] / budget
        for group in optimizer.param_groups:
            group["lr"] = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * fraction)))
        lmbda, quality = args.lmbda, None
        if variable_rate:
            level = int(torch.randint(model.levels, (1,), generator=ladder))
            lmbda, quality = model.lmbda[level], model.ladder_quality(level)
        terms = rd_step(model, compute.batch(data.batch(args.batch)), lmbda, optimizer, aux_optimizer,
                        main_params, compute, forward, quality)
        if variable_rate:
            terms["quality"] = torch.tensor(quality)
        progress["step"] += 1
        now = time.monotonic()
        bar.update(int(now - started) - bar.n)
        progress["seconds"] = now - started
        if progress["step"] % compute.log_every == 0:
            row = {"step": progress["step"], "seconds": round(progress["seconds"], 1)}
            row |= {k: round(v.item(), 6) for k, v in terms.items()}
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
    model = model.cpu().to(memory_format=torch.contiguous_format)
    model.update(force=True)
    run = {"trainer": "psic_core.train.rd", "lmbda": list(model.lmbda) if variable_rate else args.lmbda,
           "steps": progress["step"],
           "seconds": round(progress["seconds"], 1), "batch": args.batch, "crop": args.crop,
           "data": Path(args.data).name, "seed": args.seed, "lr": args.lr, "compute": compute.describe()} | init
    training = history.extend(previous, run, init_training_record)
    save_weights(model.eval(), args.out, name=args.name, quality=args.quality, extra={"training": training},
                 half=args.half)
    print(f"wrote {args.out} after {progress['step']} steps")


if __name__ == "__main__":
    from ..cli import run_command

    sys.exit(run_command(main, prog="python -m psic_core.train.rd"))
