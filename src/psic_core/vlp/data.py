"""The labelled and captioned image sets (see the data folder's README): records per split, images as tensors."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SPLITS = ("train", "test")


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str
    source: str


@dataclass(frozen=True)
class CaptionedImage:
    path: Path
    caption: str
    source: str


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def _index_file(root: Path, name: str) -> Path:
    path = Path(root) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --data must be the folder holding labelled/ and captioned/")
    return path


def read_labelled(root: str | os.PathLike, split: str) -> list[LabelledImage]:
    """``labelled/labels.csv`` rows of ``split`` (columns file, label, source, split)."""
    _check_split(split)
    index = _index_file(Path(root), "labelled/labels.csv")
    with open(index, newline="", encoding="utf-8") as f:
        return [
            LabelledImage(index.parent / row["file"], row["label"], row["source"])
            for row in csv.DictReader(f)
            if row["split"] == split
        ]


def zero_shot_candidates(root: str | os.PathLike) -> dict[str, list[str]]:
    """The sorted labels of each labelled source over every split: the classes a zero-shot classifier picks from
    (a class that only has test images still competes)."""
    labels: dict[str, set[str]] = {}
    for split in SPLITS:
        for item in read_labelled(root, split):
            labels.setdefault(item.source, set()).add(item.label)
    return {source: sorted(names) for source, names in labels.items()}


def read_captioned(root: str | os.PathLike, split: str) -> list[CaptionedImage]:
    """``captioned/captions.jsonl`` entries of ``split`` (keys file, caption, source, split)."""
    _check_split(split)
    index = _index_file(Path(root), "captioned/captions.jsonl")
    records = []
    with open(index, encoding="utf-8") as f:
        for line in filter(str.strip, f):
            entry = json.loads(line)
            if entry["split"] == split:
                records.append(CaptionedImage(index.parent / entry["file"], entry["caption"], entry["source"]))
    return records


def open_rgb(path: str | os.PathLike) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def to_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """A PIL image (or an already converted tensor) as a float (3, H, W) tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        return image
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
