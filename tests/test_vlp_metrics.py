"""Zero-shot, retrieval and attack-success metrics on hand-made similarities and a fake VLP with known answers;
training helpers."""

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
    Readings,
    attack_success,
    chance_hit_rate,
    classification_accuracy,
    paired_cosine,
    retrieval_recall,
    retrieval_report,
    source_classes,
    topk_hits,
    whole_set_retrieval,
    zero_shot_report,
    zero_shot_scores,
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


# --- whole-test-set retrieval and attack success: a 3-source toy with known answers -----------------------------


def toy_readings(correct: list[bool], chance: list[float]) -> Readings:
    """Two labelled sources (a: 3 pairs, 1/3 chance; b: 2 pairs, 1/2 chance) and 2 captions (1/4 chance)."""
    return Readings(("a", "a", "a", "b", "b", "captions", "captions"), torch.tensor(correct), torch.tensor(chance))


TOY_CHANCE = [1 / 3] * 3 + [1 / 2] * 2 + [1 / 4] * 2


def test_attack_success_counts_pairs_right_on_the_reference_and_wrong_after():
    reference = toy_readings([True, True, False, True, False, True, True], TOY_CHANCE)
    attacked = toy_readings([False, True, True, False, False, False, False], TOY_CHANCE)
    report = attack_success(reference, attacked)
    a, b, captions = (report["per_source"][g] for g in ("a", "b", "captions"))
    assert (a["pairs"], a["reference_correct"], a["flipped"]) == (3, 2, 1)
    assert a["asr"] == pytest.approx(0.5) and a["chance_asr"] == pytest.approx(2 / 3)
    assert b["asr"] == 1.0 and b["chance_asr"] == pytest.approx(0.5)  # a pair wrong on the reference never counts
    assert captions["asr"] == 1.0 and captions["chance_asr"] == pytest.approx(0.75)
    overall = report["all"]
    assert (overall["pairs"], overall["reference_correct"], overall["flipped"]) == (7, 5, 4)
    assert overall["asr"] == pytest.approx(4 / 5)
    # chance: a random reader misses each right pair with 1 - its chance, averaged over the right pairs
    assert overall["chance_asr"] == pytest.approx((2 * 2 / 3 + 1 / 2 + 2 * 3 / 4) / 5)


def test_attack_success_is_none_where_the_reference_reads_nothing():
    nothing = toy_readings([False] * 7, TOY_CHANCE)
    report = attack_success(nothing, toy_readings([True] * 7, TOY_CHANCE))
    assert report["all"]["asr"] is None and report["all"]["chance_asr"] is None
    assert report["per_source"]["a"] == {"pairs": 3, "reference_correct": 0, "flipped": 0, "asr": None,
                                         "chance_asr": None}
    same = attack_success(toy_readings([True] * 7, TOY_CHANCE), toy_readings([True] * 7, TOY_CHANCE))
    assert same["all"]["asr"] == 0.0
    with pytest.raises(ValueError, match="same pairs"):
        attack_success(nothing, Readings(("a",), torch.tensor([True]), torch.tensor([0.5])))
    with pytest.raises(ValueError, match="one entry per pair"):
        Readings(("a", "b"), torch.tensor([True]), torch.tensor([0.5]))


def test_readings_concatenate_and_subset():
    both = toy_readings([True] * 7, TOY_CHANCE) + Readings(("c",), torch.tensor([False]), torch.tensor([0.1]))
    assert both.groups[-1] == "c" and len(both.correct) == 8
    part = both.subset([0, 7])
    assert part.groups == ("a", "c") and part.correct.tolist() == [True, False]
    assert part.chance.tolist() == pytest.approx([1 / 3, 0.1])


def test_whole_set_retrieval_on_a_hand_made_similarity():
    # 5 images (a, a, b, captions, captions) x 4 distinct texts: "cat" (both a images), "dog" (b), two captions
    positives = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]).bool()
    similarity = torch.tensor([
        [0.9, 0.1, 0.0, 0.0],  # right
        [0.1, 0.8, 0.0, 0.0],  # reads "dog": wrong
        [0.0, 0.7, 0.2, 0.0],  # right
        [0.0, 0.0, 0.1, 0.6],  # wrong
        [0.0, 0.0, 0.0, 0.5],  # right
    ])
    report, readings = whole_set_retrieval(similarity, positives, ["a", "a", "b", "captions", "captions"])
    assert (report["images"], report["texts"]) == (5, 4)
    assert report["i2t_r1"] == pytest.approx(3 / 5) and report["chance_i2t_r1"] == pytest.approx(1 / 4)
    # text->image (columns): cat -> image 0 (right), dog -> image 1 (wrong), caption 1 -> image 2 (wrong),
    # caption 2 -> image 3 (wrong); chance: cat has 2 of 5 images, the others 1
    assert report["t2i_r1"] == pytest.approx(1 / 4)
    assert report["chance_t2i_r1"] == pytest.approx((2 / 5 + 3 * 1 / 5) / 4)
    a = report["per_source"]["a"]
    assert (a["images"], a["texts"], a["i2t_r1"], a["t2i_r1"]) == (2, 1, 0.5, 1.0)
    assert a["chance_t2i_r1"] == pytest.approx(2 / 5)
    captions = report["per_source"]["captions"]
    assert (captions["images"], captions["texts"], captions["i2t_r1"], captions["t2i_r1"]) == (2, 2, 0.5, 0.0)
    assert readings.groups[3] == "captions" and readings.correct.tolist() == [True, False, True, False, True]
    assert readings.chance.tolist() == pytest.approx([1 / 4] * 5)
    with pytest.raises(ValueError, match="every image"):
        whole_set_retrieval(similarity, positives & False, ["a"] * 5)
    with pytest.raises(ValueError, match="one entry per image"):
        whole_set_retrieval(similarity, positives, ["a"])


def test_zero_shot_scores_give_per_image_readings():
    labels = ["red", "green", "blue", "red", "blue"]
    sources = ["a", "a", "a", "b", "b"]
    colour = dict(zip(COLOURS, torch.eye(3)))
    images = torch.stack([colour[c] for c in ("red", "blue", "blue", "red", "red")])
    classes = source_classes(labels, sources, {"a": COLOURS, "b": ["red", "blue"]})
    report, readings = zero_shot_scores(images, labels, sources, classes, colour, ks=(1,))
    assert report["a"]["top1"] == pytest.approx(2 / 3) and report["b"] == {
        "images": 2, "classes": 2, "top1": 0.5, "chance_top1": 0.5}
    assert readings.correct.tolist() == [True, False, True, True, False]
    assert readings.chance.tolist() == pytest.approx([1 / 3] * 3 + [1 / 2] * 2)
    with pytest.raises(ValueError, match="not candidates"):
        source_classes(labels, sources, {"a": ["red"], "b": ["red", "blue"]})


def test_evaluate_on_a_toy_data_folder(tmp_path):
    """Labelled sources a and b (red and green things) and two captions, read by the ColourVLP."""
    from psic_core.vlp.evaluate import evaluate

    (tmp_path / "labelled").mkdir()
    (tmp_path / "captioned").mkdir()
    rows = [("r.png", "red", "a", "red"), ("g.png", "green", "a", "green"), ("b.png", "red", "b", "green"),
            ("t.png", "green", "b", "green")]  # the third shows the wrong colour
    for name, _, _, shown in rows:
        solid(shown).save(tmp_path / "labelled" / name)
    (tmp_path / "labelled/labels.csv").write_text(
        "file,label,source,split\n" + "".join(f"{n},{label},{s},test\n" for n, label, s, _ in rows)
        + "x.png,blue,b,train\n")
    captions = [("c1.png", "a red scarf", "red"), ("c2.png", "blue sky", "blue")]
    for name, _, shown in captions:
        solid(shown).save(tmp_path / "captioned" / name)
    (tmp_path / "captioned/captions.jsonl").write_text("".join(
        json.dumps({"file": n, "caption": c, "source": "s", "split": "test"}) + "\n" for n, c, _ in captions))
    report = evaluate(ColourVLP(), tmp_path, readings=True)
    assert report["zero_shot"]["a"]["top1"] == 1.0 and report["zero_shot"]["b"]["top1"] == 0.5
    assert report["zero_shot"]["b"]["classes"] == 3  # blue competes in b: it has a train image
    whole = report["retrieval_all"]
    # texts: the test labels red and green, then the two captions (blue, a train-only label, is no test text). The
    # red scarf ties with the label "red" and the tie goes to the first text, so that caption image reads wrong
    assert (whole["images"], whole["texts"]) == (6, 4) and whole["chance_i2t_r1"] == pytest.approx(1 / 4)
    assert whole["per_source"]["captions"]["i2t_r1"] == 0.5 and whole["per_source"]["a"]["i2t_r1"] == 1.0
    assert set(whole["per_source"]) == {"a", "b", "captions"}
    readings = report["readings"]
    assert readings.groups == ("a", "a", "b", "b", "captions", "captions")
    assert readings.correct.tolist() == [True, True, False, True, False, True]
    assert readings.chance.tolist() == pytest.approx([1 / 2] * 2 + [1 / 3] * 2 + [1 / 4] * 2)
    assert "readings" not in evaluate(ColourVLP(), tmp_path)
