"""Contrastive training of a small open_clip model on the train splits of the labelled and captioned sets.

Labelled images pair with prompts made from their label (a random template each time), captioned images with
their caption. Images sharing a class (or an identical caption) are all positives for each other, so a batch
holding several "animal" stamps does not push them apart. Example::

    OMP_WAIT_POLICY=PASSIVE python -m psic_core.vlp.train --data path/to/data --minutes 40 \\
        --out src/psic_core/vlp/weights/refclip-s.safetensors --checkpoint runs/refclip-s.ckpt --log runs/refclip-s.csv

The checkpoint (model and AdamW moments, safetensors) is written every few minutes; rerunning the same command
resumes from it until the time budget is spent.
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
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from ..train.config import Integer, Number, argument, prepare_output_files  # noqa: E402
from .adapter import TargetVLP, resize  # noqa: E402
from .augment import augment  # noqa: E402
from .data import CaptionedImage, LabelledImage, open_rgb, read_captioned, read_labelled, to_tensor  # noqa: E402
from ..train.device import DEVICES, PRECISIONS, Compute  # noqa: E402
from ..weights import history  # noqa: E402
from .files import describe_vlp_file, load_vlp_file, save_vlp  # noqa: E402
from .prompts import prompts  # noqa: E402

#: exported files must stay small enough to ship inside the package
MAX_EXPORT_BYTES = 20 * 1024 * 1024


class PairedImages:
    """Training pairs held in memory: images cached at ``cache_side`` px (shorter side), texts, positive keys."""

    def __init__(self, labelled: list[LabelledImage], captioned: list[CaptionedImage], cache_side: int):
        self.images: list[torch.Tensor] = []
        index: dict[Path, int] = {}
        self.pairs: list[tuple[int, tuple[str, ...], str]] = []

        def image_index(path: Path) -> int:
            if path not in index:
                image = to_tensor(open_rgb(path))[None]
                scale = cache_side / min(image.shape[-2:])
                size = (round(image.shape[-2] * scale), round(image.shape[-1] * scale))
                index[path] = len(self.images)
                self.images.append(resize(image, size)[0])
            return index[path]

        for item in labelled:
            self.pairs.append((image_index(item.path), tuple(prompts(item.label)), f"label:{item.source}:{item.label}"))
        for item in captioned:
            self.pairs.append((image_index(item.path), (item.caption,), f"caption:{item.caption.strip().lower()}"))

    def batch(self, indices: list[int], size: int, generator: torch.Generator):
        texts, keys, images = [], [], []
        for i in indices:
            image, choices, key = self.pairs[i]
            images.append(self.images[image])
            texts.append(choices[int(torch.randint(len(choices), (1,), generator=generator))])
            keys.append(key)
        return augment(images, size, generator), texts, keys


def contrastive_loss(image_emb, text_emb, logit_scale, keys: list[str]):
    """Symmetric InfoNCE where every pair with the same key is a positive (targets spread evenly over them)."""
    logits = logit_scale * image_emb @ text_emb.T
    ids = torch.tensor([keys.index(k) for k in keys], device=logits.device)
    positives = (ids[:, None] == ids[None, :]).float()
    targets = positives / positives.sum(1, keepdim=True)
    loss = -(targets * F.log_softmax(logits, 1)).sum(1).mean() - (targets * F.log_softmax(logits.T, 1)).sum(1).mean()
    hit = positives.gather(1, logits.argmax(1, keepdim=True)).mean()
    return loss / 2, hit


def parameter_groups(model, weight_decay: float):
    """No decay on gains, biases, the temperature and positional embeddings (as in open_clip's trainer)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        exempt = p.ndim < 2 or "logit_scale" in name or "positional_embedding" in name
        (plain if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder holding labelled/ and captioned/")
    parser.add_argument("--model", default="refclip-s", help="open_clip model config name")
    parser.add_argument("--name", help="name stored in the weights (default: --model)")
    parser.add_argument("--out", required=True, type=Path, help="exported weights (.safetensors, fp16)")
    parser.add_argument("--checkpoint", type=Path, help="resume from / save to this file (outside git)")
    parser.add_argument("--log", type=Path, help="CSV log of loss, in-batch accuracy and learning rate")
    parser.add_argument("--minutes", type=argument(Number(minimum=0, exclusive=True)), default=40.0,
                        help="wall-clock budget, counted across resumes")
    # at least 2: the contrastive loss needs other pairs in the batch to tell apart
    parser.add_argument("--batch", type=argument(Integer(minimum=2)), default=64)
    parser.add_argument("--lr", type=argument(Number(minimum=0, exclusive=True)), default=5e-4)
    parser.add_argument("--weight-decay", type=argument(Number(minimum=0)), default=0.1)
    parser.add_argument("--warmup", type=argument(Integer(minimum=1)), default=100, help="linear warm-up steps")
    parser.add_argument("--threads", type=argument(Integer(minimum=1)), default=1, help="torch threads")
    parser.add_argument("--seed", type=argument(Integer()), default=0)
    parser.add_argument("--init", type=Path, help="continue these exported VLP weights (.safetensors) instead of a "
                        "fresh --model (their open_clip config wins)")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} (auto: CUDA if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",  # no A/B of the VLP trainer under bf16 yet
                        help="bf16: both towers under bfloat16 autocast, the contrastive loss in float32")
    args = parser.parse_args(argv)
    # the indexes before the model is built and the images are read: a wrong --data fails at once
    labelled, captioned = read_labelled(args.data, "train"), read_captioned(args.data, "train")
    if not labelled and not captioned:
        raise ValueError(f"{args.data}: no training pairs in labelled/ or captioned/")
    prepare_output_files([args.out, args.checkpoint, args.log])

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    compute = Compute.create(args.device, args.precision)
    if args.init:
        previous = describe_vlp_file(args.init).training or None
        vlp = load_vlp_file(args.init).requires_grad_(True).train()
    else:
        previous, vlp = None, TargetVLP.from_open_clip(args.model).train()
    vlp = vlp.to(compute.device)
    size = vlp.image_size[0]
    # cache a margin above the model size so random crops keep detail
    data = PairedImages(labelled, captioned, cache_side=round(size * 1.5))
    optimizer = torch.optim.AdamW(
        parameter_groups(vlp.model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-6
    )
    progress = {"step": 0, "seconds": 0.0}
    if args.checkpoint and args.checkpoint.exists():
        progress = load_checkpoint(args.checkpoint, vlp.model, {"opt": optimizer})
    generator = torch.Generator().manual_seed(args.seed + progress["step"])
    budget = args.minutes * 60
    log = open(args.log, "a", newline="") if args.log else None
    writer = None
    bar = tqdm(total=int(budget), initial=int(progress["seconds"]), unit="s", desc=args.name or args.model)
    started, last_save = time.monotonic() - progress["seconds"], time.monotonic()
    order: list[int] = []
    while progress["seconds"] < budget:
        # linear warm-up, then cosine decay over the time budget to zero
        fraction = progress["seconds"] / budget
        lr = args.lr * min(1.0, (progress["step"] + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * fraction))
        for group in optimizer.param_groups:
            group["lr"] = lr
        if len(order) < args.batch:
            order += torch.randperm(len(data.pairs), generator=generator).tolist()
        indices, order = order[: args.batch], order[args.batch :]
        images, texts, keys = data.batch(indices, size, generator)
        with compute.autocast():
            image_embeddings = vlp.encode_image(compute.batch(images)).float()
            text_embeddings = vlp.encode_text(texts).float()
        loss, hit = contrastive_loss(image_embeddings, text_embeddings, vlp.logit_scale, keys)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            vlp.model.logit_scale.clamp_(0, math.log(100))
        progress["step"] += 1
        now = time.monotonic()
        progress["seconds"] = now - started
        bar.update(int(progress["seconds"]) - bar.n)
        row = {"step": progress["step"], "seconds": round(progress["seconds"], 1), "lr": f"{lr:.3g}",
               "loss": round(loss.item(), 4), "batch_acc": round(hit.item(), 3),
               "logit_scale": round(vlp.logit_scale.item(), 2)}
        bar.set_postfix({k: row[k] for k in ("loss", "batch_acc", "logit_scale")})
        if log:
            writer = writer or csv.DictWriter(log, fieldnames=list(row))
            if log.tell() == 0:
                writer.writeheader()
            writer.writerow(row)
            log.flush()
        if args.checkpoint and now - last_save > 180:
            save_checkpoint(args.checkpoint, vlp.model, {"opt": optimizer}, progress)
            last_save = now
    bar.close()
    if args.checkpoint:
        save_checkpoint(args.checkpoint, vlp.model, {"opt": optimizer}, progress)
    run = {"trainer": "psic_core.vlp.train", "steps": progress["step"], "seconds": round(progress["seconds"], 1),
           "minutes": args.minutes, "batch": args.batch, "lr": args.lr, "seed": args.seed, "pairs": len(data.pairs),
           "data": "labelled+captioned train splits", "compute": compute.describe(),
           "init": str(args.init) if args.init else None}
    training = history.extend(previous, run)
    save_vlp(vlp.cpu(), args.out, name=args.name or args.model, training=training)
    size_bytes = args.out.stat().st_size
    print(f"wrote {args.out} ({size_bytes / 1e6:.1f} MB) after {progress['step']} steps")
    if size_bytes > MAX_EXPORT_BYTES:
        print(f"warning: {args.out} exceeds {MAX_EXPORT_BYTES // 2**20} MiB, too large to bundle")


if __name__ == "__main__":
    from ..cli import run_command

    sys.exit(run_command(main, prog="python -m psic_core.vlp.train"))
