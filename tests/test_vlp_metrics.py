"""Zero-shot and retrieval metrics on hand-made similarities and a fake VLP with known answers; training helpers."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from psic_core.vlp.augment import augment
from psic_core.vlp.data import read_captioned, read_labelled, zero_shot_candidates
from psic_core.vlp.train import contrastive_loss
from psic_core.vlp.zeroshot import (
    chance_hit_rate,
    classification_accuracy,
    paired_cosine,
    retrieval_recall,
    retrieval_report,
    topk_hits,
    zero_shot_report,
)

COLOURS = ("red", "green", "blue")


class ColourVLP:
    """Images embed as their strongest channel, texts as the colour word they name: answers are known."""

    def encode_image(self, images):
        return F.one_hot(torch.stack([im.mean((1, 2)).argmax() for im in images]), 3).float()

    def encode_text(self, texts):
        return F.one_hot(torch.tensor([next(i for i, c in enumerate(COLOURS) if c in t) for t in texts]), 3).float()


def solid(colour: str) -> Image.Image:
    return Image.new("RGB", (12, 8), {"red": (200, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 200)}[colour])


def test_chance_hit_rate():
    assert chance_hit_rate(10, 1, 1) == pytest.approx(0.1)
    assert chance_hit_rate(10, 1, 5) == pytest.approx(0.5)
    assert chance_hit_rate(4, 2, 1) == pytest.approx(0.5)
    assert chance_hit_rate(4, 1, 5) == 1.0


def test_topk_hits_and_classification_accuracy():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.4, 0.0, 0.6]])
    result = classification_accuracy(logits, [0, 1, 1, 1], ks=(1, 2))
    assert result["top1"] == pytest.approx(0.5) and result["top2"] == pytest.approx(0.75)
    assert result["chance_top1"] == pytest.approx(1 / 3) and result["chance_top2"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        topk_hits(logits, torch.zeros(2, 3, dtype=torch.bool), (1,))


def test_retrieval_recall_on_a_hand_made_similarity():
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.0, 0.1, 0.3]])
    result = retrieval_recall(similarity, ks=(1, 2))
    # image->text: rows 0 and 2 rank their own text first, row 1 ranks it second
    assert result["i2t_r1"] == pytest.approx(2 / 3) and result["i2t_r2"] == pytest.approx(1.0)
    # text->image (columns): every text scores its own image highest
    assert result["t2i_r1"] == pytest.approx(1.0)
    assert result["chance_r1"] == pytest.approx(1 / 3) and result["chance_r2"] == pytest.approx(2 / 3)


def test_retrieval_counts_identical_captions_as_matches():
    similarity = torch.tensor([[0.1, 0.9, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    assert retrieval_recall(similarity, ks=(1,))["i2t_r1"] == pytest.approx(1 / 3)
    same = retrieval_recall(similarity, text_ids=[0, 0, 2], ks=(1,))
    assert same["i2t_r1"] == 1.0 and same["chance_r1"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)


def test_paired_cosine():
    images = torch.eye(2)
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    result = paired_cosine(images, texts)
    assert result["mean_cosine_own"] == pytest.approx((1.0 + 0.8) / 2)
    assert result["mean_cosine_other"] == pytest.approx((0.6 + 0.0) / 2)


def test_zero_shot_report_with_known_answers():
    images = [solid(c) for c in ("red", "green", "blue", "red", "green")]
    labels = ["red", "green", "blue", "blue", "green"]
    sources = ["a", "a", "a", "a", "b"]
    report = zero_shot_report(ColourVLP(), images, labels, sources, candidates={"a": COLOURS, "b": COLOURS}, ks=(1,))
    assert report["a"] == {"images": 4, "classes": 3, "top1": 0.75, "chance_top1": pytest.approx(1 / 3)}
    assert report["b"]["top1"] == 1.0
    # the evaluation feeds decoded images through a transform: here one that turns everything blue
    blue = zero_shot_report(ColourVLP(), images, labels, sources, transform=lambda im: solid("blue"), ks=(1,))
    assert blue["a"]["top1"] == 0.5 and blue["b"]["classes"] == 1  # default candidates: labels seen per source
    with pytest.raises(ValueError, match="not candidates"):
        zero_shot_report(ColourVLP(), images, labels, sources, candidates={"a": ["red"], "b": ["green"]})


def test_retrieval_report_with_a_transform():
    images = [solid(c) for c in COLOURS]
    captions = ["something red", "a green thing", "blue sky"]
    report = retrieval_report(ColourVLP(), images, captions, ks=(1,))
    assert report["i2t_r1"] == report["t2i_r1"] == 1.0 and report["mean_cosine_own"] == 1.0
    spoiled = retrieval_report(ColourVLP(), images, captions, transform=lambda im: solid("red"), ks=(1,))
    assert spoiled["i2t_r1"] == pytest.approx(1 / 3) and spoiled["mean_cosine_own"] == pytest.approx(1 / 3)


def test_contrastive_loss_treats_shared_keys_as_positives():
    embeddings = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    # the two cats tie: with a shared key each is a right answer for the other, the loss spreads over both
    loss, hit = contrastive_loss(embeddings, embeddings, 50.0, ["cat", "cat", "dog"])
    assert hit == 1.0 and loss.item() == pytest.approx(2 / 3 * math.log(2), abs=1e-4)
    _, hit_distinct = contrastive_loss(embeddings, embeddings, 50.0, ["cat", "kitten", "dog"])
    assert hit_distinct.item() == pytest.approx(2 / 3)


def test_augment_gives_a_batch_in_range():
    generator = torch.Generator().manual_seed(0)
    batch = augment([torch.rand(3, 50, 70), torch.rand(3, 40, 40)], 24, generator)
    assert batch.shape == (2, 3, 24, 24) and batch.min() >= 0 and batch.max() <= 1


def test_data_records(tmp_path):
    (tmp_path / "labelled").mkdir()
    (tmp_path / "captioned").mkdir()
    (tmp_path / "labelled/labels.csv").write_text("file,label,source,split\na.png,cat,s1,train\nb.png,dog,s1,test\n")
    lines = [{"file": "c.png", "caption": "A goat.", "source": "s2", "split": "test"}]
    (tmp_path / "captioned/captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert [(r.path.name, r.label) for r in read_labelled(tmp_path, "test")] == [("b.png", "dog")]
    assert read_captioned(tmp_path, "test")[0].caption == "A goat."
    assert read_captioned(tmp_path, "train") == []
    assert zero_shot_candidates(tmp_path) == {"s1": ["cat", "dog"]}  # every split: the test-only dog competes too
    with pytest.raises(ValueError):
        read_labelled(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match="--data"):
        read_labelled(tmp_path / "nowhere", "train")
