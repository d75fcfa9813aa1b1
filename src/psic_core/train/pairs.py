"""(image, caption) training pairs from a captions JSONL and/or a labels CSV (labels become prompt captions).

- captions JSONL: one object per line with ``file`` (relative to the JSONL's folder), ``caption`` and optionally
  ``split`` and ``source``;
- labels CSV: columns ``file`` (relative to the CSV's folder), ``label`` and optionally ``split`` and ``source``;
  each sample gets a caption from a random prompt template ("a photo of a {label}.", ...), and its
  **competitors**: the same template filled with every label of its source (all splits), the candidates a
  zero-shot classifier picks from (with ``train.label_candidates = "source"`` UAEO scores the pair against them).

``source`` groups the pairs (default: the file's name): with ``batching="source"`` every batch comes from one
group, so for a labelled set the batch's captions are the labels the image competes with in zero-shot
classification, and UAEO's least-likely-caption targets re-rank exactly those.

Images are decoded once, resized so the shorter side is ``crop * 9 / 8``, and sampled as random ``crop`` squares
with random horizontal flips, so the object the caption names stays in view.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from ..vlp.prompts import TEMPLATES


class Sample(NamedTuple):
    path: Path
    captions: list[str]  # one is drawn per use
    source: str  # the group for batching="source"
    competitors: list[list[str]] | None = None  # per caption: the texts it competes with (itself included)


@dataclass
class Pair:
    image: torch.Tensor  # uint8 (3, H, W)
    sample: Sample


class PairBatch(NamedTuple):
    images: torch.Tensor  # float (B, 3, crop, crop) in [0, 1]
    captions: list[str]
    competitors: list[list[str] | None]  # per pair, as Sample.competitors for the drawn caption


BATCHING = ("mixed", "source")


def _load(path: Path, short_side: int) -> torch.Tensor:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    scale = short_side / min(rgb.size)
    rgb = rgb.resize((max(short_side, round(rgb.width * scale)), max(short_side, round(rgb.height * scale))),
                     Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def read_captions(path: str | Path, split: str | None) -> list[Sample]:
    path = Path(path)
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                file, caption = record["file"], record["caption"]
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{number}: expected a JSON object with file and caption ({exc})") from None
            if split is None or record.get("split", split) == split:
                items.append(Sample(path.parent / file, [caption], f"{path.name}:{record.get('source', '')}"))
    return items


def read_labels(path: str | Path, split: str | None, templates=TEMPLATES) -> list[Sample]:
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"file", "label"} <= set(rows[0]):
        raise ValueError(f"{path}: needs the columns file and label")
    labels: dict[str, set[str]] = {}
    for r in rows:  # every split: a test-only class still competes, as it does in zero-shot evaluation
        labels.setdefault(r.get("source", ""), set()).add(r["label"])
    competitors = {source: [[t.format(label) for label in sorted(names)] for t in templates]
                   for source, names in labels.items()}
    return [Sample(path.parent / r["file"], [t.format(r["label"]) for t in templates],
                   f"{path.name}:{r.get('source', '')}", competitors[r.get("source", "")])
            for r in rows if split is None or r.get("split", split) == split]


class CaptionedImages:
    def __init__(self, items: list[Sample], crop: int, seed: int = 0, batching: str = "mixed",
                 device: torch.device | str = "cpu"):
        """``device``: where the decoded images live and batches are cut (as ``data.RandomCropImages``)."""
        if not items:
            raise ValueError("no (image, caption) pairs: give a captions JSONL and/or a labels CSV with samples")
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, not {batching!r}")
        self.crop = crop
        self.batching = batching
        self.pairs = [Pair(_load(sample.path, crop * 9 // 8).to(device), sample) for sample in items]
        groups: dict[str, list[int]] = {}
        for index, pair in enumerate(self.pairs):
            groups.setdefault(pair.sample.source, []).append(index)
        self.groups = list(groups.values())
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def _indices(self, size: int) -> list[int]:
        g = self.generator
        if self.batching == "mixed":
            return torch.randint(len(self.pairs), (size,), generator=g).tolist()
        # a group with probability proportional to its size, so every pair is still drawn equally often
        sizes = torch.tensor([len(members) for members in self.groups], dtype=torch.float)
        members = self.groups[int(torch.multinomial(sizes, 1, generator=g))]
        return [members[i] for i in torch.randint(len(members), (size,), generator=g).tolist()]

    def batch(self, size: int) -> PairBatch:
        g, crops, captions, competitors = self.generator, [], [], []
        for index in self._indices(size):
            pair = self.pairs[index]
            image = pair.image
            top = int(torch.randint(image.shape[1] - self.crop + 1, (1,), generator=g))
            left = int(torch.randint(image.shape[2] - self.crop + 1, (1,), generator=g))
            crop = image[:, top : top + self.crop, left : left + self.crop]
            crops.append(crop.flip(2) if torch.rand(1, generator=g) < 0.5 else crop)
            sample = pair.sample
            drawn = int(torch.randint(len(sample.captions), (1,), generator=g))
            captions.append(sample.captions[drawn])
            competitors.append(sample.competitors[drawn] if sample.competitors else None)
        return PairBatch(torch.stack(crops).float().div_(255), captions, competitors)
