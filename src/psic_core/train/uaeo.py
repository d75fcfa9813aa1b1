"""UAEO: uncertainty-aware privacy objective on the protected decoding, adaptive multi-objective weights, and the
PSIC trainer's optional targeted zero-shot and looks terms.

Candidates. Each pair i of a batch is scored against a set of candidate texts that holds its own one (``mask``,
``positives``; ``candidate_sets`` builds them): a caption pair against the batch's captions, as in CLIP's
contrastive batch; a labelled pair against its source's class prompts, the texts it competes with in zero-shot
classification. With only caption pairs this is the (B, B) batch matrix with the positives on the diagonal.

With the target VLP's normalised embeddings, over the candidates ``j`` of pair ``i`` (``K_i`` of them):

- ``s_ij = logit_scale * cos(img_i, txt_j)`` on the **original** images (no gradient): the VLP's reading;
- evidence ``e_ij = softplus(s_ij)``, Dirichlet ``alpha_ij = e_ij + 1``, strength ``S_i = sum_j alpha_ij``,
  uncertainty ``u_i = K_i / S_i`` in (0, 1] (subjective logic / evidential deep learning);
- pair i is **confident** when ``u_i <= tau`` (``tau`` a fixed value, or the batch median: ``"median"``),
  **uncertain** otherwise (``split_by="uncertainty"``). ``split_by="correct"``, the official code's split: pair i
  is confident when the VLP ranks its own text first among its candidates, ``argmax_j s_ij = pos(i)`` (the official
  code ranks a symmetrised evidence matrix; this ranks image -> text, what zero-shot classification reads).

On the protected decoding ``p_ij = logit_scale * cos(img'_i, txt_j)``:

- confident pairs: ``L_conf = mean_{i in C} (1 + cos(img'_i, txt_pos(i)))`` — push the image away from its own
  text (the +1 keeps the term non-negative, which the inverse-magnitude weights below need). ``confident="centred"``
  measures that cosine against the pair's candidates instead,
  ``L_conf = mean_{i in C} (2 + cos(img'_i, txt_pos(i)) - mean_{j in K_i} cos(img'_i, txt_j))``: the plain cosine
  can fall for every candidate at once and leave the VLP's ranking (what it reads) unchanged; centred, it can
  only fall by moving the image from its own text toward the others (the +2 keeps it non-negative);
- uncertain pairs: soft labels toward the candidates the VLP finds least likely,
  ``q_i = softmax_j(-s_ij / T)``, and ``L_unc = 1/2 [CE_rows(p_U, q_U) + CE_cols(p_U^T, q_U^T)]``, InfoNCE in both
  directions (image -> text over its candidates, text -> image over the uncertain images it is a candidate of;
  a text's column targets are its column of ``q`` over those images, normalised). ``uncertain_targets="hard"``,
  the official code's targets: one-hot rows on ``argmin_j s_ij`` (the least likely candidate) and one-hot columns on
  the uncertain image whose original the VLP matches least with that text (the official code ranges the columns
  over every image of the batch and only the uncertain pairs' own captions).

Adaptive weights (``adaptive_weights``): for losses ``L_k``, ``w_k = (1 / |L_k|) / sum_m (1 / |L_m|)``.
``weighting="detached"`` (ours) computes them on detached values each step, so every term contributes at the same
scale whatever its magnitude and the gradient of ``sum_k w_k L_k`` is ``sum_k w_k grad L_k``.
``weighting="harmonic"`` (the official code's) keeps them in the graph: ``sum_k w_k L_k`` is then the harmonic mean
``K / sum_m (1 / L_m)`` and its gradient ``dH/dL_k = H^2 / (K L_k^2)`` favours the smaller term.

Targeted zero-shot term (``targeted_zero_shot``), for labelled pairs, whose candidates are their source's class
prompts: zero-shot classification ranks exactly those, and pushing away from the own caption inside a mixed batch
does not decide which of them wins. Each labelled pair gets one wrong class of its source, chosen on the original:
``"least_likely"`` (``argmin_{j != pos(i)} s_ij``) or ``"likeliest_wrong"`` (``argmax_{j != pos(i)} s_ij``, the
runner-up when the VLP is right: the nearest wrong class), ties to the first; then
``L_targeted = mean_i CE(softmax_{j in K_i} p_ij, target_i)`` over the labelled pairs with a wrong class.

Looks term (``looks_penalty``) on ``d = protected - full``: the power spectrum ``P_f = |FFT2(d)|^2`` (orthonormal, per
image and channel, so ``mean_f P_f = mean d^2``), ``L_looks = mean_f w_low(f) w_peak(f) P_f`` with
``w_low = 1 + 3 exp(-r_f / r_0)`` (``r_f`` the radial frequency in cycles per pixel, ``r_0 = 1/16``) and
``w_peak = 1 + P_f / (P_f + 8 mean_g P_g)``: white noise costs about 1.3x its energy, a periodic stripe 2x (the
finest) to 7x (the broadest), a uniform tint 8x (the reasons are at ``looks_penalty``).

The PSIC config's keys for these options (train/config.py, defaults first): ``train.split_by`` uncertainty|correct,
``train.uncertain_targets`` soft|hard, ``train.weighting`` detached|harmonic, ``train.confident`` cosine|centred,
``train.targeted`` (weight, 0: off) with ``train.targeted_class`` least_likely|likeliest_wrong, ``train.looks``
(weight, 0: off); ``train.gamma = 0`` drops the trainer's keep term, as the official code has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


CONFIDENT_LOSSES = ("cosine", "centred")
SPLITS = ("uncertainty", "correct")
UNCERTAIN_TARGETS = ("soft", "hard")
WEIGHTINGS = ("detached", "harmonic")
TARGETED_CLASSES = ("least_likely", "likeliest_wrong")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


@dataclass
class UAEOSplit:
    uncertainty: torch.Tensor  # (B,)
    confident: torch.Tensor  # (B,) bool
    targets: torch.Tensor  # (B, C) rows: distribution over the pair's candidates, favouring the least likely
    column_targets: torch.Tensor  # (B, C) columns: distribution over the uncertain images a text is a candidate of
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
                mask: torch.Tensor | None = None, positives: torch.Tensor | None = None,
                split_by: str = "uncertainty", uncertain_targets: str = "soft") -> UAEOSplit:
    """Split the batch into confident and uncertain pairs on the VLP's reading of the original pairs, and the
    uncertain pairs' targets toward least-likely candidates (module docstring: ``split_by``, ``uncertain_targets``).

    Without ``mask``/``positives`` every pair competes with every text and pair i's own text is column i.
    ``threshold`` applies to ``split_by="uncertainty"`` only.
    """
    _check_choice("split_by", split_by, SPLITS)
    _check_choice("uncertain_targets", uncertain_targets, UNCERTAIN_TARGETS)
    rows = clean_logits.shape[0]
    mask = torch.ones_like(clean_logits, dtype=torch.bool) if mask is None else mask.to(clean_logits.device)
    positives = (torch.arange(rows) if positives is None else positives).to(clean_logits.device)
    with torch.no_grad():
        uncertainty = evidential_uncertainty(clean_logits, mask)
        if split_by == "correct":
            confident = clean_logits.masked_fill(~mask, -torch.inf).argmax(dim=1) == positives
        else:
            tau = uncertainty.median() if threshold == "median" else torch.as_tensor(float(threshold))
            confident = uncertainty <= tau
        candidates_of_uncertain = mask & ~confident[:, None]  # the uncertain images each text column competes for
        if uncertain_targets == "hard":
            least_text = clean_logits.masked_fill(~mask, torch.inf).argmin(dim=1)
            targets = F.one_hot(least_text, clean_logits.shape[1]).to(clean_logits.dtype)
            least_image = clean_logits.masked_fill(~candidates_of_uncertain, torch.inf).argmin(dim=0)
            column_targets = F.one_hot(least_image, rows).t().to(clean_logits.dtype) * candidates_of_uncertain
        else:
            targets = torch.softmax((-clean_logits / temperature).masked_fill(~mask, -torch.inf), dim=1)
            column_targets = targets * candidates_of_uncertain
            column_targets = column_targets / column_targets.sum(dim=0, keepdim=True).clamp_min(1e-12)
    return UAEOSplit(uncertainty, confident, targets, column_targets, mask, positives)


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
        targets = split.targets[uncertain]
        rows = torch.where(mask, logits.log_softmax(dim=1), 0.0)
        image_to_text = -(targets * rows).sum(dim=1).mean()
        used = mask.any(dim=0)  # texts that are a candidate of some uncertain image
        columns = split.column_targets[uncertain][:, used]
        cols = torch.where(mask[:, used], logits[:, used].log_softmax(dim=0), 0.0)
        text_to_image = -(columns * cols).sum(dim=0).mean()
        unc = (image_to_text + text_to_image) / 2
    else:
        unc = zero
    return {"uaeo_confident": conf, "uaeo_uncertain": unc}


def adaptive_weights(losses: dict[str, torch.Tensor], weighting: str = "detached",
                     eps: float = 1e-8) -> dict[str, torch.Tensor]:
    """w_k = (1/|L_k|) / sum_m (1/|L_m|): each term is scaled to the same magnitude; ``"detached"`` outside the
    graph, ``"harmonic"`` inside it (module docstring)."""
    _check_choice("weighting", weighting, WEIGHTINGS)
    inverse = {k: 1.0 / ((v.detach() if weighting == "detached" else v).abs() + eps) for k, v in losses.items()}
    total = sum(inverse.values())
    return {k: v / total for k, v in inverse.items()}


def weighted_sum(losses: dict[str, torch.Tensor], weighting: str = "detached") -> torch.Tensor:
    weights = adaptive_weights(losses, weighting)
    return sum(weights[k] * losses[k] for k in losses)


def targeted_zero_shot(protected_image: torch.Tensor, clean_logits: torch.Tensor, text: torch.Tensor,
                       logit_scale: torch.Tensor | float, mask: torch.Tensor, positives: torch.Tensor,
                       labelled: torch.Tensor, target_class: str = "least_likely") -> torch.Tensor:
    """Cross-entropy of each labelled pair's protected logits over its candidates (its source's class prompts)
    toward one wrong class chosen on the original (module docstring); ``labelled`` (B,) bool marks the rows whose
    ``mask`` row holds their source's classes. Zero, in the graph, when no labelled pair has a wrong class."""
    _check_choice("target_class", target_class, TARGETED_CLASSES)
    mask = mask.to(clean_logits.device)
    positives = positives.to(clean_logits.device)
    with torch.no_grad():
        wrong = mask.clone()
        wrong[torch.arange(len(positives), device=mask.device), positives] = False
        if target_class == "least_likely":
            target = clean_logits.masked_fill(~wrong, torch.inf).argmin(dim=1)
        else:
            target = clean_logits.masked_fill(~wrong, -torch.inf).argmax(dim=1)
        rows = labelled.to(mask.device) & wrong.any(dim=1)
    logits = (logit_scale * protected_image @ text.t()).masked_fill(~mask, -torch.inf)
    if not rows.any():
        return protected_image.sum() * 0
    return F.cross_entropy(logits[rows], target[rows])


def _visibility_weight(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """w_low on the FFT grid: 1 + 3 exp(-r / r_0), r the radial frequency in cycles per pixel, r_0 = 1/16."""
    fy = torch.fft.fftfreq(height, device=like.device, dtype=like.dtype)[:, None]
    fx = torch.fft.fftfreq(width, device=like.device, dtype=like.dtype)[None, :]
    return 1 + 3 * torch.exp(-torch.sqrt(fy**2 + fx**2) * 16)


def looks_penalty(protected: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """Frequency-weighted energy of the difference between the protected and the full decoding (B, 3, H, W).

    Chosen over MS-SSIM: it names the two faults to avoid directly, needs no minimum size (MS-SSIM's five scales
    need 161 px, the training crops are 64-128 px) and is exactly 0 for identical decodings. The difference's power
    spectrum is weighted twice:

    - ``w_low``: a broad, low-frequency difference (a tint, bands, blotches) is seen as part of the picture, while
      fine grain hides in the image's own texture; so low frequencies cost up to 4x their energy (the weight is
      1 + 3 exp(-16 r), above 2 for periods longer than about 15 px) and none less than 1x;
    - ``w_peak``: a periodic pattern (stripes, a grid at the synthesis transform's upsampling period) puts its energy
      into a few frequency bins far above the spectrum's mean power, white noise spreads it evenly (its periodogram
      bins exceed 8 times their mean in e^-8 of the bins); so a bin costs up to 2x its energy the more it stands
      out, ``1 + P_f / (P_f + 8 mean P)``.
    """
    spectrum = torch.fft.fft2(protected - full, norm="ortho")
    power = spectrum.real.square() + spectrum.imag.square()  # not abs(): its gradient is undefined at 0
    mean_power = power.mean(dim=(-2, -1), keepdim=True)
    peak = 1 + power / (power + 8 * mean_power + 1e-20)  # 1e-20: 0/0 where the decodings are identical
    return (_visibility_weight(*power.shape[-2:], power) * peak * power).mean()
