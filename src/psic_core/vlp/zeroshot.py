"""How well a VLP understands images: zero-shot classification and image-text retrieval, each with its chance level.

The metric functions on similarity matrices are pure; the report functions embed images through an optional
``transform`` (a callable taking and returning an image, e.g. a codec round trip) so the same code measures what a
VLP still sees in decoded images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from math import comb

import torch
from PIL import Image

from .adapter import TargetVLP
from .data import to_tensor
from .prompts import TEMPLATES

ImageLike = Image.Image | torch.Tensor


def chance_hit_rate(num_candidates: int, num_positives: int, k: int) -> float:
    """Probability that a uniformly random ranking puts one of ``num_positives`` candidates in the top ``k``."""
    k = min(k, num_candidates)
    return 1 - comb(num_candidates - num_positives, k) / comb(num_candidates, k)


def topk_hits(scores: torch.Tensor, positives: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Fraction of rows of ``scores`` (queries x candidates) with a positive candidate among the ``k`` best.

    ``positives`` is a boolean matrix of the same shape; ties are broken towards the lower index.
    """
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} differ in shape")
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranked = positives.gather(1, order)
    return {k: ranked[:, :k].any(dim=1).float().mean().item() for k in ks}


def classification_accuracy(logits: torch.Tensor, targets: Sequence[int], ks: Sequence[int] = (1, 5)) -> dict:
    """Top-k accuracy of class ``logits`` (images x classes) for the true class indices, with chance levels."""
    targets = torch.as_tensor(targets)
    positives = torch.zeros_like(logits, dtype=torch.bool)
    positives[torch.arange(len(targets)), targets] = True
    hits = topk_hits(logits, positives, ks)
    classes = logits.shape[1]
    result = {}
    for k in ks:
        result[f"top{k}"] = hits[k]
        result[f"chance_top{k}"] = chance_hit_rate(classes, 1, k)
    return result


def retrieval_recall(similarity: torch.Tensor, text_ids: Sequence | None = None, ks: Sequence[int] = (1, 5)) -> dict:
    """Image->text and text->image recall@k for a square (images x texts) similarity, pair i = (image i, text i).

    ``text_ids`` marks identical captions (same id = same text, so any of them is a correct match); by default
    all captions are distinct. Chance levels account for those duplicates.
    """
    n = similarity.shape[0]
    if similarity.shape != (n, n):
        raise ValueError(f"expected a square similarity matrix, got {tuple(similarity.shape)}")
    ids = list(range(n)) if text_ids is None else list(text_ids)
    positives = torch.tensor([[a == b for b in ids] for a in ids])
    image_to_text = topk_hits(similarity, positives, ks)
    text_to_image = topk_hits(similarity.T, positives, ks)
    sizes = positives.sum(1).tolist()
    result = {}
    for k in ks:
        result[f"i2t_r{k}"] = image_to_text[k]
        result[f"t2i_r{k}"] = text_to_image[k]
        result[f"chance_r{k}"] = sum(chance_hit_rate(n, m, k) for m in sizes) / n
    return result


def paired_cosine(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> dict:
    """Mean cosine similarity of each image with its own caption, and (the chance level) with the other captions."""
    similarity = image_embeddings @ text_embeddings.T
    n = similarity.shape[0]
    own = similarity.diagonal().mean().item()
    other = ((similarity.sum() - similarity.diagonal().sum()) / max(n * n - n, 1)).item()
    return {"mean_cosine_own": own, "mean_cosine_other": other}


@torch.no_grad()
def embed_images(
    vlp: TargetVLP, images: Sequence[ImageLike], transform: Callable | None = None, batch_size: int = 32
) -> torch.Tensor:
    """Normalised embeddings of ``images`` (PIL images or (3, H, W) tensors in [0, 1]), after ``transform``."""
    chunks = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        chunks.append(vlp.encode_image([to_tensor(transform(im) if transform else im) for im in chunk]))
    return torch.cat(chunks)


@torch.no_grad()
def class_embeddings(vlp: TargetVLP, labels: Sequence[str], templates: Sequence[str] = TEMPLATES) -> torch.Tensor:
    """One normalised embedding per label: the mean of its prompt embeddings over ``templates`` (ensembling)."""
    rows = [vlp.encode_text([t.format(label) for t in templates]).mean(0) for label in labels]
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def zero_shot_report(
    vlp: TargetVLP,
    images: Sequence[ImageLike],
    labels: Sequence[str],
    sources: Sequence[str],
    candidates: Mapping[str, Sequence[str]] | None = None,
    transform: Callable | None = None,
    templates: Sequence[str] = TEMPLATES,
    ks: Sequence[int] = (1, 5),
) -> dict[str, dict]:
    """Zero-shot top-k per source, the candidate classes of an image being those of its source.

    ``candidates`` maps each source to its classes (give all labels of the set, not only those in the evaluated
    split); by default they are the distinct ``labels`` seen per source.
    """
    if not len(images) == len(labels) == len(sources):
        raise ValueError("images, labels and sources must have the same length")
    embeddings = embed_images(vlp, images, transform)
    report = {}
    for source in sorted(set(sources)):
        rows = [i for i, s in enumerate(sources) if s == source]
        classes = sorted(candidates[source] if candidates else {labels[i] for i in rows})
        missing = {labels[i] for i in rows} - set(classes)
        if missing:
            raise ValueError(f"labels {sorted(missing)} are not candidates of source {source!r}")
        logits = embeddings[rows] @ class_embeddings(vlp, classes, templates).T
        report[source] = {"images": len(rows), "classes": len(classes)}
        report[source] |= classification_accuracy(logits, [classes.index(labels[i]) for i in rows], ks)
    return report


def retrieval_report(
    vlp: TargetVLP,
    images: Sequence[ImageLike],
    captions: Sequence[str],
    transform: Callable | None = None,
    ks: Sequence[int] = (1, 5),
) -> dict:
    """Image<->caption recall@k and mean paired cosine similarity, with chance levels."""
    if len(images) != len(captions):
        raise ValueError("images and captions must have the same length")
    image_embeddings = embed_images(vlp, images, transform)
    with torch.no_grad():
        text_embeddings = vlp.encode_text(captions)
    text_ids = [captions.index(c) for c in captions]
    report = {"pairs": len(captions)}
    report |= retrieval_recall(image_embeddings @ text_embeddings.T, text_ids, ks)
    return report | paired_cosine(image_embeddings, text_embeddings)
