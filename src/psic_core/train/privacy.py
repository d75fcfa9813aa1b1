"""The PSIC trainer: rate-distortion of both decodings + UAEO privacy on the protected one, in two stages.

Loss per step, for a batch of (image, caption) pairs and the frozen target VLP:

    rd      = bpp + lmbda * 255^2 * (MSE(protected) + MSE(full)) / 2
    privacy = adaptive_weights-weighted sum of UAEO's confident and uncertain terms (train/uaeo.py; a group with
              no pair this step is left out of the sum); a caption pair is scored against the batch's captions,
              and so is a labelled pair unless ``train.label_candidates = "source"`` (then: its source's class
              prompts); plus ``train.targeted * L_targeted`` (uaeo.targeted_zero_shot, labelled pairs; 0: off)
    keep    = 1 - cos(VLP(full decoding), VLP(original))          # the full decoding keeps its semantics
    looks   = uaeo.looks_penalty(protected, full decoding)   # frequency-weighted energy of their difference (0: off)
    loss    = rd + beta_stage * (|rd| / |privacy|) * privacy + gamma * keep + train.looks * lmbda * 255^2 * looks

With ``vlp.ensemble``, privacy and keep are each the mean over the target VLPs (vlp.name and the ensemble's), each
VLP scoring with its own texts and logit scale. With ``train.eot``, the protected decoding that privacy reads first
goes, with probability ``train.eot_p``, through one random transform (resize, JPEG or blur; train/eot.py).

``|rd| / |privacy|`` (detached) is the privacy-vs-quality inverse-magnitude balance: ``beta_stage`` is then the
privacy term's share relative to rate-distortion, whatever the raw scales. Stage 1 trains every weight with a
small beta (quality first); stage 2 freezes analysis, hyperprior and entropy models (so bitstreams made before it
stay valid) and trains only the synthesis transform and CLTG with a large beta.

Run ``psic train --config train.toml [--set section.key=value ...]``; under ``torchrun`` it trains with
DistributedDataParallel on every process (same code path; rank 0 logs, checkpoints and exports).
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
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..models import build_backbone  # noqa: E402
from ..weights import (  # noqa: E402
    ENTROPY_MODELS, ENTROPY_PATH, decodes_sha256, history, init_training_record, instantiate, registry, save_weights, training_record)
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .config import check_ready, load_config  # noqa: E402
from .data import RandomCropImages  # noqa: E402
from . import eot  # noqa: E402
from .device import Compute, resolve_device  # noqa: E402
from .losses import rate_distortion  # noqa: E402
from .pairs import CaptionedImages, PairBatch, read_captions, read_labels  # noqa: E402
from .uaeo import (  # noqa: E402
    candidate_sets, looks_penalty, split_pairs, targeted_zero_shot, uaeo_losses, weighted_sum)

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
        self.device = resolve_device(device)
        cuda = self.device.type == "cuda"
        if cuda and self.world > 1 and device in ("auto", "cuda"):
            self.device = torch.device(f"cuda:{local}")  # one GPU per torchrun process
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


#: the trigger options and their defaults (the bundled bias-only CLTG); a non-default value the init weights lack
#: is grown onto them
TRIGGER_DEFAULTS = {"cltg_scales": False, "cltg_sites": "blocks", "cltg_latent": False}


def build_model(config: dict):
    m = config["model"]
    wanted = {key: m[key] for key in TRIGGER_DEFAULTS}
    if m["init"]:
        info = registry.find(m["init"])
        grow = {key: value for key, value in wanted.items()
                if value != TRIGGER_DEFAULTS[key] and value != info.config.get(key, TRIGGER_DEFAULTS[key])}
        return instantiate(info, grow or None).train(), info
    return build_backbone(m["backbone"], N=m["N"], M=m["M"], **wanted), None


def _vlp_terms(vlp, text_cache: dict, pairs: PairBatch, protected_images: torch.Tensor, full_images: torch.Tensor,
               cfg: dict, compute: Compute) -> dict[str, torch.Tensor]:
    """One target VLP's privacy and keep terms, with its own texts (cached in ``text_cache``) and logit scale."""
    x = pairs.images
    n = x.shape[0]
    competitors = pairs.competitors if cfg["label_candidates"] == "source" else [None] * n
    texts, mask, positives = candidate_sets(pairs.captions, competitors)
    # the targeted term always scores a labelled pair against its source's classes, whatever label_candidates says
    zero_shot = candidate_sets(pairs.captions, pairs.competitors) if cfg["targeted"] else None
    missing = list(dict.fromkeys(t for t in texts + (zero_shot[0] if zero_shot else []) if t not in text_cache))
    if missing:
        with torch.no_grad():
            text_cache.update(zip(missing, vlp.encode_text(missing)))
    text = torch.stack([text_cache[t] for t in texts])
    scale = vlp.logit_scale
    with torch.no_grad():
        with compute.autocast():
            original = vlp.encode_image(x).float()
        split = split_pairs(scale * original @ text.t(), cfg["threshold"], cfg["temperature"], mask, positives,
                            cfg["split_by"], cfg["uncertain_targets"])
    with compute.autocast():
        protected = vlp.encode_image(protected_images).float()
        full = vlp.encode_image(full_images).float()
    terms = uaeo_losses(protected, text, scale, split, cfg["confident"])
    with torch.no_grad():  # live readout: the share of pairs whose protected decoding the VLP no longer matches
        ranked = (protected @ text.t()).masked_fill(~split.mask, -torch.inf)
        terms["fooled"] = (ranked.argmax(dim=1) != split.positives).float().mean()
    # an empty group's term is a constant 0, whose inverse-magnitude weight would take (nearly) the whole sum
    groups = {"uaeo_confident": split.confident, "uaeo_uncertain": ~split.confident}
    privacy = weighted_sum({k: terms[k] for k, members in groups.items() if members.any()}, cfg["weighting"])
    if zero_shot:
        zero_shot_texts, zero_shot_mask, zero_shot_positives = zero_shot
        zero_shot_text = torch.stack([text_cache[t] for t in zero_shot_texts])
        labelled = torch.tensor([c is not None for c in pairs.competitors], device=x.device)
        terms["targeted"] = targeted_zero_shot(protected, scale * original @ zero_shot_text.t(), zero_shot_text,
                                               scale, zero_shot_mask, zero_shot_positives, labelled,
                                               cfg["targeted_class"])
        privacy = privacy + cfg["targeted"] * terms["targeted"]
    terms["keep_full"] = (1 - F.cosine_similarity(full, original)).mean()
    terms["privacy"] = privacy
    terms["confident_share"] = split.confident.float().mean()
    return terms


def privacy_step(model, vlp, pairs: PairBatch, photos: torch.Tensor | None, cfg: dict, beta: float,
                 text_cache: dict, compute: Compute, generator: torch.Generator | None = None
                 ) -> dict[str, torch.Tensor]:
    """The loss terms of one step. Under bf16 the codec and the VLP's image tower run in autocast; the embeddings
    and decodings come back to float32 before any loss, and every loss runs outside autocast.

    ``vlp`` is one target VLP, or a list of them (``vlp.ensemble``): each one's privacy and keep terms (and the
    logged UAEO terms, fooled share and confident share) are then averaged, each VLP with its own texts, cached in
    ``text_cache[k]`` for the k-th (one VLP: in ``text_cache`` itself). With ``train.eot`` set, the protected
    decoding the privacy terms read goes through one transform drawn from ``generator`` (eot.draw)."""
    x = pairs.images
    batch = x if photos is None else torch.cat([x, photos])
    with compute.autocast():
        out = model(batch)
    terms = rate_distortion(out, batch, cfg["lmbda"])
    n = x.shape[0]
    protected_images = out["x_hat"]["protect"][:n]
    # EOT on what the privacy terms read only: the rate-distortion term scores the decoding a person sees, and
    # the keep term asks that the key holder's own decoding keep its meaning, which no later transform changes
    eot_transform = eot.draw(cfg["eot"], cfg["eot_p"], generator) if cfg["eot"] else None
    if eot_transform:
        protected_images = eot.apply(protected_images.float(), eot_transform)
    if isinstance(vlp, (list, tuple)):
        vlps, caches = list(vlp), [text_cache.setdefault(k, {}) for k in range(len(vlp))]
    else:
        vlps, caches = [vlp], [text_cache]
    per_vlp = [_vlp_terms(v, cache, pairs, protected_images, out["x_hat"]["full"][:n], cfg, compute)
               for v, cache in zip(vlps, caches)]
    for key in per_vlp[0]:
        terms[key] = torch.stack([t[key] for t in per_vlp]).mean()
    privacy = terms["privacy"]
    balance = terms["loss"].detach().abs() / privacy.detach().abs().clamp_min(1e-8)
    terms["loss"] = terms["loss"] + beta * balance * privacy + cfg["gamma"] * terms["keep_full"]
    if cfg["looks"]:
        # in the distortion's units (lmbda * 255^2 per unit of squared difference): train.looks is its weight
        # relative to the distortion term
        terms["looks"] = looks_penalty(out["x_hat"]["protect"].float(), out["x_hat"]["full"].float())
        terms["loss"] = terms["loss"] + cfg["looks"] * cfg["lmbda"] * 255**2 * terms["looks"]
    return terms


def train(config: dict) -> Path | None:
    """Train as ``config`` (from ``load_config``) says; returns the exported weights' path (None without output.out)."""
    check_ready(config)
    cfg, out_cfg = config["train"], config["output"]
    ctx = DistributedContext(cfg["device"])
    compute = Compute.create(str(ctx.device), cfg["precision"], cfg["channels_last"], cfg["compile"])
    torch.manual_seed(cfg["seed"] + ctx.rank)
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    data_cfg = config["data"]
    items = []
    if data_cfg["captions"]:
        items += read_captions(data_cfg["captions"], data_cfg["split"] or None)
    if data_cfg["labels"]:
        items += read_labels(data_cfg["labels"], data_cfg["split"] or None)
    pairs = CaptionedImages(items, cfg["crop"], seed=cfg["seed"] + ctx.rank, batching=cfg["batching"],
                            device=compute.device)
    photos = (RandomCropImages(data_cfg["images"], cfg["crop"], cfg["seed"] + ctx.rank, device=compute.device)
              if data_cfg["images"] else None)

    from ..vlp import load_vlp

    vlp_names = [config["vlp"]["name"], *config["vlp"]["ensemble"]]
    vlps = [load_vlp(config["vlp"]["name"], pretrained=config["vlp"]["pretrained"] or None).frozen().to(ctx.device)]
    vlps += [load_vlp(name).frozen().to(ctx.device) for name in config["vlp"]["ensemble"]]
    vlp = vlps if len(vlps) > 1 else vlps[0]
    # EOT's draws come from their own stream, so turning EOT on leaves the codec's and the data's draws unchanged
    eot_generator = torch.Generator().manual_seed(cfg["seed"] + ctx.rank)
    model, init_info = build_model(config)
    model = compute.model(model)
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
        forward = compute.forward(ddp)
        budget = cfg["minutes"][index] * 60
        bar = tqdm(total=int(budget), initial=int(progress["seconds"]), unit="s", desc=f"stage {stage}",
                   disable=not ctx.main)
        started, last_save = time.monotonic() - progress["seconds"], time.monotonic()
        while progress["seconds"] < budget and progress["step"] < cfg["max_steps"][index]:
            fraction = progress["seconds"] / budget
            for group in optimizer.param_groups:
                group["lr"] = cfg["lr"][index] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * fraction)))
            drawn = pairs.batch(cfg["batch"])
            drawn = drawn._replace(images=compute.batch(drawn.images))
            extra = compute.batch(photos.batch(cfg["photo_batch"])) if photos and cfg["photo_batch"] else None
            terms = privacy_step(forward, vlp, drawn, extra, cfg, cfg["beta"][index], text_cache, compute,
                                 eot_generator)
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
            if progress["step"] % compute.log_every == 0:
                row = {"stage": stage, "step": progress["step"], "seconds": round(progress["seconds"], 1)}
                row |= {k: round(v.item(), 6) for k, v in terms.items()}
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
                    "stage_steps": progress.get("stage_steps", []) + [progress["step"]],
                    "stage_seconds": progress.get("stage_seconds", []) + [round(progress["seconds"], 1)]}
        if checkpoint and ctx.main:
            save_checkpoint(checkpoint, model, optimizers, progress)
    result = None
    if ctx.main and out_cfg["out"]:
        model = model.cpu().to(memory_format=torch.contiguous_format)
        model.update(force=True)
        run = {"trainer": "psic_core.train.privacy", "vlp": config["vlp"]["name"], "train": cfg,
               "vlps": vlp_names,
               "steps": progress.get("stage_steps"), "seconds": progress.get("stage_seconds"),
               "compute": compute.describe(), "init": init_info.name if init_info else None}
        if init_info:
            run["init_sha256"] = init_info.sha256
        previous = (training_record(init_info) or None) if init_info else None
        training = history.extend(previous, run, init_training_record)  # the init's whole chain comes along
        # stage 2 leaves analysis, hyperprior and entropy models as they were: files made with the init still
        # decode with these weights, and the weights say so (weights.DECODES_KEY)
        decodes = [init_info.sha256, *decodes_sha256(init_info)] if init_info and stages == [2] else []
        result = Path(out_cfg["out"])
        save_weights(model.eval(), result, name=out_cfg["name"] or result.stem, quality=out_cfg["quality"] or None,
                     extra={"training": training}, half=out_cfg["half"], decodes=decodes,
                     keep_float32=ENTROPY_PATH if decodes else ENTROPY_MODELS)
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
