"""UAEO: uncertainty-aware privacy objective on the protected decoding, and adaptive multi-objective weights.

Candidates. Each pair i of a batch is scored against a set of candidate texts that holds its own one (``mask``,
``positives``; ``candidate_sets`` builds them): a caption pair against the batch's captions, as in CLIP's
contrastive batch; a labelled pair against its source's class prompts, the texts it competes with in zero-shot
classification. With only caption pairs this is the (B, B) batch matrix with the positives on the diagonal.

With the target VLP's normalised embeddings, over the candidates ``j`` of pair ``i`` (``K_i`` of them):

- ``s_ij = logit_scale * cos(img_i, txt_j)`` on the **original** images (no gradient): the VLP's reading;
- evidence ``e_ij = softplus(s_ij)``, Dirichlet ``alpha_ij = e_ij + 1``, strength ``S_i = sum_j alpha_ij``,
  uncertainty ``u_i = K_i / S_i`` in (0, 1] (subjective logic / evidential deep learning);
- pair i is **confident** when ``u_i <= tau`` (``tau`` a fixed value, or the batch median: ``"median"``),
  **uncertain** otherwise.

On the protected decoding ``p_ij = logit_scale * cos(img'_i, txt_j)``:

- confident pairs: ``L_conf = mean_{i in C} (1 + cos(img'_i, txt_pos(i)))`` — push the image away from its own
  text (the +1 keeps the term non-negative, which the inverse-magnitude weights below need). ``confident="centred"``
  measures that cosine against the pair's candidates instead,
  ``L_conf = mean_{i in C} (2 + cos(img'_i, txt_pos(i)) - mean_{j in K_i} cos(img'_i, txt_j))``: the plain cosine
  can fall for every candidate at once and leave the VLP's ranking (what it reads) unchanged; centred, it can
  only fall by moving the image from its own text toward the others (the +2 keeps it non-negative);
- uncertain pairs: soft labels toward the candidates the VLP finds least likely,
  ``q_i = softmax_j(-s_ij / T)``, and ``L_unc = 1/2 [CE_rows(p_U, q_U) + CE_cols(p_U^T, q_U^T)]``, InfoNCE in both
  directions (image -> text over its candidates, text -> image over the uncertain images it is a candidate of).

Adaptive weights (``adaptive_weights``): for losses ``L_k``, ``w_k = (1 / |L_k|) / sum_m (1 / |L_m|)`` computed
on detached values each step, so every term contributes at the same scale whatever its magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


CONFIDENT_LOSSES = ("cosine", "centred")


@dataclass
class UAEOSplit:
    uncertainty: torch.Tensor  # (B,)
    confident: torch.Tensor  # (B,) bool
    soft_targets: torch.Tensor  # (B, C) rows: distribution over the pair's candidates, favouring the least likely
    mask: torch.Tensor  # (B, C) bool: the candidates of each pair
    positives: torch.Tensor  # (B,) the column of each pair's own text


def candidate_sets(captions: list[str], competitors: list[list[str] | None]) -> tuple[list[str], torch.Tensor,
                                                                                        torch.Tensor]:
    """The texts a batch is scored against, the (B, C) mask of each pair's candidates, and each pair's own column.

    ``competitors[i]`` is None for a caption pair (its candidates: the batch's captions) or the texts a labelled
    pair competes with (its own caption among them). Identical texts share one column, so two pairs drawn with the
    same caption are not each other's negatives.
    """
    texts = list(dict.fromkeys(captions + [t for group in competitors if group for t in group]))
    column = {text: j for j, text in enumerate(texts)}
    positives = torch.tensor([column[c] for c in captions])
    mask = torch.zeros(len(captions), len(texts), dtype=torch.bool)
    for i, group in enumerate(competitors):
        if group is not None and captions[i] not in group:
            raise ValueError(f"caption {captions[i]!r} is not among its own competitors")
        mask[i, [column[t] for t in group] if group is not None else positives] = True
    return texts, mask, positives


def evidential_uncertainty(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """u_i = K_i / S_i with Dirichlet alpha = softplus(logits) + 1 over the K_i candidates of each row."""
    mask = torch.ones_like(logits, dtype=torch.bool) if mask is None else mask
    alpha = (F.softplus(logits) + 1) * mask
    return mask.sum(dim=1) / alpha.sum(dim=1)


def split_pairs(clean_logits: torch.Tensor, threshold: float | str = "median", temperature: float = 1.0,
                mask: torch.Tensor | None = None, positives: torch.Tensor | None = None) -> UAEOSplit:
    """Split the batch by the VLP's uncertainty on the original pairs; soft labels toward least-likely candidates.

    Without ``mask``/``positives`` every pair competes with every text and pair i's own text is column i.
    """
    rows = clean_logits.shape[0]
    mask = torch.ones_like(clean_logits, dtype=torch.bool) if mask is None else mask.to(clean_logits.device)
    positives = torch.arange(rows) if positives is None else positives
    with torch.no_grad():
        uncertainty = evidential_uncertainty(clean_logits, mask)
        tau = uncertainty.median() if threshold == "median" else torch.as_tensor(float(threshold))
        confident = uncertainty <= tau
        soft_targets = torch.softmax((-clean_logits / temperature).masked_fill(~mask, -torch.inf), dim=1)
    return UAEOSplit(uncertainty, confident, soft_targets, mask, positives.to(clean_logits.device))


def uaeo_losses(
    protected_image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    split: UAEOSplit,
    confident_loss: str = "cosine",
) -> dict[str, torch.Tensor]:
    """The two privacy terms on normalised embeddings of the protected decodings (B, D) and the texts (C, D)."""
    if confident_loss not in CONFIDENT_LOSSES:
        raise ValueError(f"confident_loss must be one of {', '.join(CONFIDENT_LOSSES)}, not {confident_loss!r}")
    cos = protected_image @ text.t()
    zero = cos.sum() * 0  # keeps the graph (and the device/dtype) when a group is empty
    confident, uncertain = split.confident, ~split.confident
    own = cos.gather(1, split.positives[:, None]).squeeze(1)
    if confident_loss == "centred":
        own = 1 + own - (cos * split.mask).sum(dim=1) / split.mask.sum(dim=1)
    conf = (1 + own[confident]).mean() if confident.any() else zero
    if uncertain.any():
        mask = split.mask[uncertain]  # (U, C): uncertain images against their candidates
        logits = (logit_scale * cos[uncertain]).masked_fill(~mask, -torch.inf)
        targets = split.soft_targets[uncertain]
        rows = torch.where(mask, logits.log_softmax(dim=1), 0.0)
        image_to_text = -(targets * rows).sum(dim=1).mean()
        used = mask.any(dim=0)  # texts that are a candidate of some uncertain image
        columns = targets[:, used] / targets[:, used].sum(dim=0, keepdim=True).clamp_min(1e-12)
        cols = torch.where(mask[:, used], logits[:, used].log_softmax(dim=0), 0.0)
        text_to_image = -(columns * cols).sum(dim=0).mean()
        unc = (image_to_text + text_to_image) / 2
    else:
        unc = zero
    return {"uaeo_confident": conf, "uaeo_uncertain": unc}


def adaptive_weights(losses: dict[str, torch.Tensor], eps: float = 1e-8) -> dict[str, torch.Tensor]:
    """w_k = (1/|L_k|) / sum_m (1/|L_m|), detached: each term is scaled to the same magnitude."""
    inverse = {k: 1.0 / (v.detach().abs() + eps) for k, v in losses.items()}
    total = sum(inverse.values())
    return {k: v / total for k, v in inverse.items()}


def weighted_sum(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    weights = adaptive_weights(losses)
    return sum(weights[k] * losses[k] for k in losses)
