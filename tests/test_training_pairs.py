"""Training pairs: captions JSONL and labels CSV readers, prompt captions, and batching by source."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from psic_core.train.pairs import CaptionedImages, read_captions, read_labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six labelled images from two sources and two captioned ones without a source column."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / f"{i}.png")
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "source", "split"])
        writer.writeheader()
        for i in range(6):
            source = "ab"[i // 3]
            writer.writerow({"file": f"{i}.png", "label": f"{source}-thing {i}", "source": source,
                             "split": "test" if i == 5 else "train"})
    with open(root / "captions.jsonl", "w") as f:
        for i in (6, 7):
            f.write(json.dumps({"file": f"{i}.png", "caption": f"picture number {i}"}) + "\n")
    return root


def items(folder, split="train"):
    return read_labels(folder / "labels.csv", split) + read_captions(folder / "captions.jsonl", split)


def test_readers_keep_the_split_and_name_the_source(folder):
    pairs = items(folder)
    assert [p.path.name for p in pairs] == ["0.png", "1.png", "2.png", "3.png", "4.png", "6.png", "7.png"]
    assert [p.source for p in pairs] == ["labels.csv:a"] * 3 + ["labels.csv:b"] * 2 + ["captions.jsonl:"] * 2
    assert all("a-thing 0" in c for c in pairs[0].captions) and len(pairs[0].captions) > 1  # several templates
    assert pairs[-1].captions == ["picture number 7"]


def test_labelled_pairs_compete_with_every_label_of_their_source(folder):
    pairs = items(folder)
    b_pair = pairs[3]  # b-thing 3; b-thing 5 is only in the test split but is still a zero-shot candidate
    assert len(b_pair.competitors) == len(b_pair.captions)
    for caption, competitors in zip(b_pair.captions, b_pair.competitors):
        assert caption in competitors
        assert sorted(competitors) == sorted(caption.replace("b-thing 3", f"b-thing {i}") for i in (3, 4, 5))
    assert all(p.competitors is None for p in pairs[-2:])  # caption pairs compete with the batch instead


def group_of(caption: str) -> str:
    return "a" if "a-thing" in caption else "b" if "b-thing" in caption else "captions"


def test_source_batches_come_from_one_source(folder):
    data = CaptionedImages(items(folder), crop=32, seed=1, batching="source")
    seen = set()
    for _ in range(40):
        x, captions, competitors = data.batch(6)
        assert x.shape == (6, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
        groups = {group_of(c) for c in captions}
        assert len(groups) == 1
        for caption, group in zip(captions, competitors):
            assert (group is None) == (groups == {"captions"}) and (group is None or caption in group)
        seen |= groups
    assert seen == {"a", "b", "captions"}


def test_mixed_batches_mix_sources(folder):
    data = CaptionedImages(items(folder), crop=32, seed=1)
    mixed = [len({group_of(c) for c in data.batch(8)[1]}) > 1 for _ in range(20)]
    assert any(mixed)


def test_unknown_batching_is_rejected(folder):
    with pytest.raises(ValueError, match="batching must be one of"):
        CaptionedImages(items(folder), crop=32, batching="by-colour")
