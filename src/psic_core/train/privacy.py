"""The PSIC trainer: rate-distortion of both decodings + UAEO privacy on the protected one, in two stages.

Loss per step, for a batch of (image, caption) pairs and the frozen target VLP:

    rd      = bpp + lmbda * 255^2 * (MSE(protected) + MSE(full)) / 2
    privacy = adaptive_weights-weighted sum of UAEO's confident and uncertain terms (train/uaeo.py); a caption
              pair is scored against the batch's captions, and so is a labelled pair unless
              ``train.label_candidates = "source"`` (then: its source's class prompts)
    keep    = 1 - cos(VLP(full decoding), VLP(original))          # the full decoding keeps its semantics
    loss    = rd + beta_stage * (|rd| / |privacy|) * privacy + gamma * keep

``|rd| / |privacy|`` (detached) is the privacy-vs-quality inverse-magnitude balance: ``beta_stage`` is then the
privacy term's share relative to rate-distortion, whatever the raw scales. Stage 1 trains every weight with a
small beta (quality first); stage 2 freezes analysis, hyperprior and entropy models (so bitstreams made before it
stay valid) and trains only the synthesis transform and CLTG with a large beta.

Run ``psic train --config train.toml [--set section.key=value ...]``; under ``torchrun`` it trains with
DistributedDataParallel on every process (same code path; rank 0 logs, checkpoints and exports).
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import math
import os
import time
import tomllib
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..models import build_backbone  # noqa: E402
from ..weights import instantiate, registry, save_weights, training_record  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .data import RandomCropImages  # noqa: E402
from .losses import rate_distortion  # noqa: E402
from .pairs import CaptionedImages, PairBatch, read_captions, read_labels  # noqa: E402
from .uaeo import CONFIDENT_LOSSES, candidate_sets, split_pairs, uaeo_losses, weighted_sum  # noqa: E402

LABEL_CANDIDATES = ("batch", "source")

DEFAULTS: dict[str, dict] = {
    "data": {"captions": "", "labels": "", "images": "", "split": "train"},
    "model": {"init": "", "backbone": "mean-scale-hyperprior", "N": 64, "M": 96,
              "cltg_scales": False},  # CLTG gains as well as biases (grown onto init weights that lack them)
    "vlp": {"name": "refclip-s", "pretrained": ""},  # pretrained: open_clip tag or local file, for open_clip:NAME
    "train": {
        "stages": [1, 2],
        "minutes": [10.0, 40.0],  # per stage, wall clock, counted across resumes
        "max_steps": [10**9, 10**9],
        "beta": [0.1, 1.0],  # privacy share relative to rate-distortion, per stage
        "lr": [1e-4, 1e-4],
        "gamma": 1.0,  # weight of the full decoding's semantic-keeping term
        "lmbda": 0.025,
        "batch": 8,
        "photo_batch": 0,  # extra rate-distortion-only crops per step from data.images
        "crop": 128,
        "batching": "mixed",  # "source": every batch from one source (its labels compete in zero-shot)
        "label_candidates": "batch",  # a labelled pair's UAEO candidates: the batch's captions, or "source" (its
        # source's class prompts, as zero-shot classification compares)
        "confident": "cosine",  # confident pairs' term: the paper's cosine, or "centred" on the candidates
        "threshold": "median",  # UAEO uncertainty split: a value in (0, 1] or the batch median
        "temperature": 1.0,  # softness of the least-likely-caption labels
        "seed": 0,
        "threads": 0,
        "device": "auto",
    },
    "output": {"out": "", "name": "", "quality": 0, "checkpoint": "", "log": ""},
}


def load_config(path: str | None, overrides: list[str]) -> dict:
    """Defaults, then the TOML file, then ``section.key=value`` overrides (values parsed as Python literals)."""
    config = copy.deepcopy(DEFAULTS)
    if path:
        with open(path, "rb") as f:
            for section, values in tomllib.load(f).items():
                if section not in config:
                    raise ValueError(f"{path}: unknown section [{section}] (known: {', '.join(config)})")
                config[section].update(values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in config:
            raise ValueError(f"override {item!r} must look like section.key=value")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        config[section][name] = value
    unknown = {f"{s}.{k}" for s in config for k in config[s] if k not in DEFAULTS[s]}
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    return config


def freeze_for_stage(model, stage: int) -> list[torch.nn.Parameter]:
    """Stage 1: every weight trains. Stage 2: only the synthesis transform (with CLTG)."""
    trainable = set(map(id, model.synthesis_parameters())) if stage == 2 else None
    for p in model.parameters():
        p.requires_grad_(trainable is None or id(p) in trainable)
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(".quantiles")]


class DistributedContext:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        self.device = torch.device(f"cuda:{local}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model, find_unused: bool):
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # the entropy bottleneck's quantiles train through their own auxiliary loss, outside the DDP forward; left
        # to DDP they would be all-reduced with undefined gradients. Each rank fits them itself; rank 0's export.
        quantiles = [name for name, _ in model.named_parameters() if name.endswith(".quantiles")]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, quantiles)
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)

    def close(self):
        if self.world > 1:
            torch.distributed.destroy_process_group()


def build_model(config: dict):
    m = config["model"]
    if m["init"]:
        info = registry.find(m["init"])
        grow = {"cltg_scales": True} if m["cltg_scales"] and not info.config.get("cltg_scales") else None
        return instantiate(info, grow).train(), info
    return build_backbone(m["backbone"], N=m["N"], M=m["M"], cltg_scales=bool(m["cltg_scales"])), None


def privacy_step(model, vlp, pairs: PairBatch, photos: torch.Tensor | None, cfg: dict, beta: float,
                 text_cache: dict) -> dict[str, torch.Tensor]:
    x = pairs.images
    batch = x if photos is None else torch.cat([x, photos])
    out = model(batch)
    terms = rate_distortion(out, batch, cfg["lmbda"])
    n = x.shape[0]
    competitors = pairs.competitors if cfg["label_candidates"] == "source" else [None] * n
    texts, mask, positives = candidate_sets(pairs.captions, competitors)
    missing = [t for t in texts if t not in text_cache]
    if missing:
        with torch.no_grad():
            text_cache.update(zip(missing, vlp.encode_text(missing)))
    text = torch.stack([text_cache[t] for t in texts])
    scale = vlp.logit_scale
    with torch.no_grad():
        original = vlp.encode_image(x)
        split = split_pairs(scale * original @ text.t(), cfg["threshold"], cfg["temperature"], mask, positives)
    protected = vlp.encode_image(out["x_hat"]["protect"][:n])
    terms.update(uaeo_losses(protected, text, scale, split, cfg["confident"]))
    with torch.no_grad():  # live readout: the share of pairs whose protected decoding the VLP no longer matches
        ranked = (protected @ text.t()).masked_fill(~split.mask, -torch.inf)
        terms["fooled"] = (ranked.argmax(dim=1) != split.positives).float().mean()
    privacy = weighted_sum({k: terms[k] for k in ("uaeo_confident", "uaeo_uncertain")})
    full = vlp.encode_image(out["x_hat"]["full"][:n])
    terms["keep_full"] = (1 - F.cosine_similarity(full, original)).mean()
    balance = terms["loss"].detach().abs() / privacy.detach().abs().clamp_min(1e-8)
    terms["privacy"] = privacy
    terms["confident_share"] = split.confident.float().mean()
    terms["loss"] = terms["loss"] + beta * balance * privacy + cfg["gamma"] * terms["keep_full"]
    return terms


def train(config: dict) -> Path | None:
    cfg, out_cfg = config["train"], config["output"]
    ctx = DistributedContext(cfg["device"])
    torch.manual_seed(cfg["seed"] + ctx.rank)
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    data_cfg = config["data"]
    items = []
    if data_cfg["captions"]:
        items += read_captions(data_cfg["captions"], data_cfg["split"] or None)
    if data_cfg["labels"]:
        items += read_labels(data_cfg["labels"], data_cfg["split"] or None)
    for key, allowed in (("label_candidates", LABEL_CANDIDATES), ("confident", CONFIDENT_LOSSES)):
        if cfg[key] not in allowed:
            raise ValueError(f"train.{key} must be one of {', '.join(allowed)}, not {cfg[key]!r}")
    pairs = CaptionedImages(items, cfg["crop"], seed=cfg["seed"] + ctx.rank, batching=cfg["batching"])
    photos = RandomCropImages(data_cfg["images"], cfg["crop"], cfg["seed"] + ctx.rank) if data_cfg["images"] else None

    from ..vlp import load_vlp

    vlp = load_vlp(config["vlp"]["name"], pretrained=config["vlp"]["pretrained"] or None).frozen().to(ctx.device)
    model, init_info = build_model(config)
    model.to(ctx.device)
    checkpoint = Path(out_cfg["checkpoint"]) if out_cfg["checkpoint"] else None
    progress = {"stage_index": 0, "step": 0, "seconds": 0.0}
    log_file = open(out_cfg["log"], "a", newline="") if out_cfg["log"] and ctx.main else None
    writer, text_cache = None, {}
    stages = list(cfg["stages"])
    if checkpoint and checkpoint.exists():
        progress = load_checkpoint(checkpoint, model, {})
    while progress["stage_index"] < len(stages):
        index = progress["stage_index"]
        stage = int(stages[index])
        params = freeze_for_stage(model, stage)
        optimizer = torch.optim.Adam(params, lr=cfg["lr"][index])
        aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
        aux_optimizer = torch.optim.Adam(aux, lr=1e-3) if aux else None
        optimizers = {"opt": optimizer} | ({"aux": aux_optimizer} if aux_optimizer else {})
        if checkpoint and checkpoint.exists() and progress["step"] > 0:
            load_checkpoint(checkpoint, model, optimizers)  # resume this stage's optimiser moments
        ddp = ctx.wrap(model, find_unused=stage == 1)
        ddp.train()
        budget = cfg["minutes"][index] * 60
        bar = tqdm(total=int(budget), initial=int(progress["seconds"]), unit="s", desc=f"stage {stage}",
                   disable=not ctx.main)
        started, last_save = time.monotonic() - progress["seconds"], time.monotonic()
        while progress["seconds"] < budget and progress["step"] < cfg["max_steps"][index]:
            fraction = progress["seconds"] / budget
            for group in optimizer.param_groups:
                group["lr"] = cfg["lr"][index] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * fraction)))
            drawn = pairs.batch(cfg["batch"])
            drawn = drawn._replace(images=drawn.images.to(ctx.device))
            extra = photos.batch(cfg["photo_batch"]).to(ctx.device) if photos and cfg["photo_batch"] else None
            terms = privacy_step(ddp, vlp, drawn, extra, cfg, cfg["beta"][index], text_cache)
            for opt in optimizers.values():
                opt.zero_grad()
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            if aux_optimizer:
                aux_loss = model.aux_loss()
                aux_loss.backward()
                aux_optimizer.step()
            progress["step"] += 1
            now = time.monotonic()
            progress["seconds"] = now - started
            bar.update(int(progress["seconds"]) - bar.n)
            row = {"stage": stage, "step": progress["step"], "seconds": round(progress["seconds"], 1)}
            row |= {k: round(v.item(), 6) for k, v in terms.items()}
            if progress["step"] % 10 == 0:
                bar.set_postfix({k: row[k] for k in ("loss", "bpp", "mse_protect", "fooled", "keep_full")})
            if log_file:
                writer = writer or csv.DictWriter(log_file, fieldnames=list(row))
                if log_file.tell() == 0:
                    writer.writeheader()
                writer.writerow(row)
            if checkpoint and ctx.main and now - last_save > 300:
                save_checkpoint(checkpoint, model, optimizers, progress)
                last_save = now
        bar.close()
        progress = {"stage_index": index + 1, "step": 0, "seconds": 0.0,
                    "stage_steps": progress.get("stage_steps", []) + [progress["step"]]}
        if checkpoint and ctx.main:
            save_checkpoint(checkpoint, model, optimizers, progress)
    result = None
    if ctx.main and out_cfg["out"]:
        model.update(force=True)
        training = {"trainer": "psic_core.train.privacy", "vlp": config["vlp"]["name"], "train": cfg,
                    "steps": progress.get("stage_steps"), "init": init_info.name if init_info else None}
        if init_info:
            training["init_sha256"] = init_info.sha256
            previous = training_record(init_info)
            if previous.get("trainer") == training["trainer"]:
                training["continues"] = previous  # more PSIC training on PSIC weights: keep their history
        result = Path(out_cfg["out"])
        save_weights(model.eval().cpu(), result, name=out_cfg["name"] or result.stem,
                     quality=out_cfg["quality"] or None, extra={"training": training})
    ctx.close()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="psic train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="TOML file with [data] [model] [vlp] [train] [output] sections")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set train.lmbda=0.0130")
    args = parser.parse_args(argv)
    result = train(load_config(args.config, args.set))
    if result:
        print(f"wrote {result}")


if __name__ == "__main__":
    main()
