"""UAEO: uncertainty-aware privacy objective on the protected decoding, and adaptive multi-objective weights.

Notation for a batch of B (image, caption) pairs, with the target VLP's normalised embeddings:

- ``s_ij = logit_scale * cos(img_i, txt_j)`` on the **original** images (no gradient): the VLP's reading;
- evidence ``e_ij = softplus(s_ij)``, Dirichlet ``alpha_ij = e_ij + 1``, strength ``S_i = sum_j alpha_ij``,
  uncertainty ``u_i = B / S_i`` in (0, 1] (subjective logic / evidential deep learning);
- pair i is **confident** when ``u_i <= tau`` (``tau`` a fixed value, or the batch median: ``"median"``),
  **uncertain** otherwise.

On the protected decoding ``p_ij = logit_scale * cos(img'_i, txt_j)``:

- confident pairs: ``L_conf = mean_{i in C} (1 + cos(img'_i, txt_i))`` — push the image away from its own
  caption (the +1 keeps the term non-negative, which the inverse-magnitude weights below need);
- uncertain pairs: soft labels toward the captions the VLP finds least likely,
  ``q_i = softmax_j(-s_ij / T)``, and ``L_unc = 1/2 [CE_rows(p_U, q_U) + CE_cols(p_U^T, q_U^T)]``, InfoNCE in both
  directions (image -> text over captions, text -> image over the uncertain images).

Adaptive weights (``adaptive_weights``): for losses ``L_k``, ``w_k = (1 / |L_k|) / sum_m (1 / |L_m|)`` computed
on detached values each step, so every term contributes at the same scale whatever its magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class UAEOSplit:
    uncertainty: torch.Tensor  # (B,)
    confident: torch.Tensor  # (B,) bool
    soft_targets: torch.Tensor  # (B, B) rows: distribution over captions, favouring the least likely


def evidential_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """u_i = K / S_i with Dirichlet alpha = softplus(logits) + 1 over the K candidate captions of each row."""
    alpha = F.softplus(logits) + 1
    return logits.shape[1] / alpha.sum(dim=1)


def split_pairs(clean_logits: torch.Tensor, threshold: float | str = "median", temperature: float = 1.0) -> UAEOSplit:
    """Split the batch by the VLP's uncertainty on the original pairs; soft labels toward least-likely captions."""
    with torch.no_grad():
        uncertainty = evidential_uncertainty(clean_logits)
        tau = uncertainty.median() if threshold == "median" else torch.as_tensor(float(threshold))
        confident = uncertainty <= tau
        soft_targets = torch.softmax(-clean_logits / temperature, dim=1)
    return UAEOSplit(uncertainty, confident, soft_targets)


def uaeo_losses(
    protected_image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    split: UAEOSplit,
) -> dict[str, torch.Tensor]:
    """The two privacy terms on normalised embeddings of the protected decodings (B, D) and captions (B, D)."""
    cos = protected_image @ text.t()
    zero = cos.sum() * 0  # keeps the graph (and the device/dtype) when a group is empty
    confident, uncertain = split.confident, ~split.confident
    conf = (1 + cos.diagonal()[confident]).mean() if confident.any() else zero
    if uncertain.any():
        logits = logit_scale * cos[uncertain]  # (U, B): uncertain images against every caption
        targets = split.soft_targets[uncertain]
        image_to_text = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
        columns = targets / targets.sum(dim=0, keepdim=True).clamp_min(1e-12)
        text_to_image = -(columns * logits.log_softmax(dim=0)).sum(dim=0).mean()
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
