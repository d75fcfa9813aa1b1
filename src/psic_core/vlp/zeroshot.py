"""How well a VLP understands images: zero-shot classification, image-text retrieval and the attack success rate
of a decoding against the originals, each with its chance level.

The metric functions on embeddings and similarity matrices are pure; the report functions embed images through an
optional ``transform`` (a callable taking and returning an image, e.g. a codec round trip) so the same code measures
what a VLP still sees in decoded images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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


def ranked_hits(scores: torch.Tensor, positives: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Per row of ``scores`` (queries x candidates): whether a positive candidate is among the ``k`` best.

    ``positives`` is a boolean matrix of the same shape; ties are broken towards the lower index.
    """
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} differ in shape")
    order = scores.argsort(dim=1, descending=True, stable=True)
    return positives.gather(1, order[:, :k]).any(dim=1)


def topk_hits(scores: torch.Tensor, positives: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Fraction of rows of ``scores`` (queries x candidates) with a positive candidate among the ``k`` best."""
    return {k: ranked_hits(scores, positives, k).float().mean().item() for k in ks}


@dataclass(frozen=True)
class Readings:
    """Per test pair (an image and its label or caption): its group (the source, or the captions), whether the VLP
    reads it right at top-1, and the chance that a uniformly random ranking of the same candidates does."""

    groups: tuple[str, ...]
    correct: torch.Tensor  # bool, one per pair
    chance: torch.Tensor  # float, one per pair

    def __post_init__(self):
        if not len(self.groups) == len(self.correct) == len(self.chance):
            raise ValueError("groups, correct and chance must have one entry per pair")

    def __add__(self, other: Readings) -> Readings:
        return Readings(self.groups + other.groups, torch.cat([self.correct, other.correct]),
                        torch.cat([self.chance, other.chance]))

    def subset(self, rows: Sequence[int]) -> Readings:
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return Readings(tuple(self.groups[i] for i in rows), self.correct[index], self.chance[index])


def attack_success(reference: Readings, attacked: Readings) -> dict:
    """The share of the pairs read right on the reference (the originals) that are read wrong on the attacked
    decoding, over all pairs and per group.

    ``chance_asr`` is that share for a decoding that leaves the VLP guessing uniformly among the same candidates:
    the mean of 1 - chance over the reference's right pairs. ``asr`` and ``chance_asr`` are None when the reference
    reads no pair of the group right.
    """
    if reference.groups != attacked.groups:
        raise ValueError("the reference and attacked readings are not of the same pairs")
    groups = reference.groups
    report = {"all": _attack_rate(reference.correct, attacked.correct, reference.chance)}
    report["per_source"] = {}
    for group in sorted(set(groups)):
        rows = torch.tensor([g == group for g in groups])
        report["per_source"][group] = _attack_rate(reference.correct[rows], attacked.correct[rows],
                                                   reference.chance[rows])
    return report


def _attack_rate(reference: torch.Tensor, attacked: torch.Tensor, chance: torch.Tensor) -> dict:
    right = int(reference.sum())
    flipped = int((reference & ~attacked).sum())
    return {"pairs": len(reference), "reference_correct": right, "flipped": flipped,
            "asr": flipped / right if right else None,
            "chance_asr": (1 - chance[reference]).mean().item() if right else None}


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


def source_classes(
    labels: Sequence[str], sources: Sequence[str], candidates: Mapping[str, Sequence[str]] | None = None
) -> dict[str, list[str]]:
    """The sorted candidate classes of each source present in ``sources`` (default: the distinct ``labels`` seen
    per source); every label must be a candidate of its source."""
    if len(labels) != len(sources):
        raise ValueError("labels and sources must have the same length")
    seen: dict[str, set[str]] = {}
    for label, source in zip(labels, sources):
        seen.setdefault(source, set()).add(label)
    classes = {}
    for source in sorted(seen):
        classes[source] = sorted(candidates[source] if candidates else seen[source])
        missing = seen[source] - set(classes[source])
        if missing:
            raise ValueError(f"labels {sorted(missing)} are not candidates of source {source!r}")
    return classes


def zero_shot_scores(
    image_embeddings: torch.Tensor,
    labels: Sequence[str],
    sources: Sequence[str],
    classes: Mapping[str, Sequence[str]],
    label_embeddings: Mapping[str, torch.Tensor],
    ks: Sequence[int] = (1, 5),
) -> tuple[dict[str, dict], Readings]:
    """Zero-shot top-k per source from normalised embeddings, the candidates of an image being ``classes`` of its
    source (see ``source_classes``), and the top-1 readings of every image (in the order given)."""
    if not len(image_embeddings) == len(labels) == len(sources):
        raise ValueError("image_embeddings, labels and sources must have the same length")
    report = {}
    correct = torch.zeros(len(labels), dtype=torch.bool)
    chance = torch.zeros(len(labels))
    for source in sorted(set(sources)):
        names = list(classes[source])
        rows = [i for i, s in enumerate(sources) if s == source]
        logits = image_embeddings[rows] @ torch.stack([label_embeddings[name] for name in names]).T
        targets = [names.index(labels[i]) for i in rows]
        report[source] = {"images": len(rows), "classes": len(names)}
        report[source] |= classification_accuracy(logits, targets, ks)
        positives = torch.nn.functional.one_hot(torch.tensor(targets), len(names)).bool()
        correct[rows] = ranked_hits(logits, positives)
        chance[rows] = 1 / len(names)
    return report, Readings(tuple(sources), correct, chance)


def whole_set_retrieval(
    similarity: torch.Tensor, positives: torch.Tensor, groups: Sequence[str]
) -> tuple[dict, Readings]:
    """Retrieval top-1 over a whole test set, as the PSIC paper measures it: image->text R@1 among all its texts
    and text->image R@1 among all its images, overall and per group, with the readings of every image (i2t).

    ``similarity`` is images x distinct texts, ``positives`` marks each image's own text(s); ``groups`` names each
    image's group. A group's text->image queries are the texts of its images. Chance is the hit rate of a uniformly
    random ranking, averaged over the queries (1 / candidates when every query has one right answer).
    """
    images, texts = similarity.shape
    if positives.shape != similarity.shape or len(groups) != images:
        raise ValueError("positives must match similarity (images x texts) and groups have one entry per image")
    if not (positives.any(1).all() and positives.any(0).all()):
        raise ValueError("every image needs a text of its own and every text an image of its own")
    i2t, t2i = ranked_hits(similarity, positives), ranked_hits(similarity.T, positives.T)
    i2t_chance, t2i_chance = positives.sum(1) / texts, positives.sum(0) / images
    report = _retrieval_top1(i2t, i2t_chance, t2i, t2i_chance)
    report["per_source"] = {}
    for group in sorted(set(groups)):
        rows = torch.tensor([g == group for g in groups])
        queries = positives[rows].any(0)
        report["per_source"][group] = _retrieval_top1(i2t[rows], i2t_chance[rows], t2i[queries], t2i_chance[queries])
    return report, Readings(tuple(groups), i2t, i2t_chance.float())


def _retrieval_top1(i2t: torch.Tensor, i2t_chance: torch.Tensor, t2i: torch.Tensor, t2i_chance: torch.Tensor) -> dict:
    return {"images": len(i2t), "texts": len(t2i),
            "i2t_r1": i2t.float().mean().item(), "chance_i2t_r1": i2t_chance.float().mean().item(),
            "t2i_r1": t2i.float().mean().item(), "chance_t2i_r1": t2i_chance.float().mean().item()}


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
    classes = source_classes(labels, sources, candidates)
    embeddings = embed_images(vlp, images, transform)
    names = sorted({name for group in classes.values() for name in group})
    label_embeddings = dict(zip(names, class_embeddings(vlp, names, templates)))
    return zero_shot_scores(embeddings, labels, sources, classes, label_embeddings, ks)[0]


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
    return retrieval_scores(image_embeddings, text_embeddings, captions, ks)


def retrieval_scores(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, captions: Sequence[str], ks: Sequence[int] = (1, 5)
) -> dict:
    """``retrieval_report`` from normalised embeddings of the images and of their ``captions``."""
    text_ids = [captions.index(c) for c in captions]
    report = {"pairs": len(captions)}
    report |= retrieval_recall(image_embeddings @ text_embeddings.T, text_ids, ks)
    return report | paired_cosine(image_embeddings, text_embeddings)
