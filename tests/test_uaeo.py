"""UAEO split and losses on hand-made embeddings, and the adaptive weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from psic_core.train.uaeo import (
    adaptive_weights,
    candidate_sets,
    evidential_uncertainty,
    split_pairs,
    uaeo_losses,
    weighted_sum,
)


def test_uncertainty_is_low_for_a_peaked_row_and_high_for_a_flat_one():
    logits = torch.tensor([[20.0, -5.0, -5.0, -5.0], [0.0, 0.0, 0.0, 0.0]])
    u = evidential_uncertainty(logits)
    assert u[0] < 0.25 < u[1] and float(u[1]) < 1


def test_split_marks_known_confident_and_uncertain_pairs():
    logits = torch.tensor([
        [30.0, -10.0, -10.0],  # sure of caption 0
        [1.0, 0.5, 0.0],  # unsure, caption 2 least likely
        [20.0, -10.0, 25.0],  # sure
    ])
    split = split_pairs(logits, threshold=0.5)
    assert split.confident.tolist() == [True, False, True]
    assert split.soft_targets[1].argmax() == 2
    assert torch.allclose(split.soft_targets.sum(dim=1), torch.ones(3))
    assert split_pairs(logits, threshold="median").confident.sum() == 2  # median: half (rounded up) confident


def test_confident_loss_is_one_plus_the_cosine_with_the_own_caption():
    text = F.normalize(torch.eye(3), dim=1)
    image = F.normalize(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]), dim=1)
    split = split_pairs(torch.full((3, 3), 0.0), threshold=2.0)  # everything confident
    losses = uaeo_losses(image, text, 10.0, split)
    assert math.isclose(float(losses["uaeo_confident"]), (1 + 1 / math.sqrt(2) + 1 + 1 + 1 - 1) / 3, rel_tol=1e-5)
    assert float(losses["uaeo_uncertain"]) == 0.0


def test_uncertain_loss_falls_when_the_image_moves_to_the_least_likely_caption():
    text = F.normalize(torch.eye(3), dim=1)
    clean = torch.tensor([[5.0, 4.0, -5.0], [4.0, 5.0, -5.0], [0.0, 0.0, 0.0]])
    split = split_pairs(clean, threshold=0.0)  # everything uncertain
    toward_own = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    toward_least_likely = F.normalize(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), dim=1)
    far = uaeo_losses(toward_own, text, 10.0, split)["uaeo_uncertain"]
    near = uaeo_losses(toward_least_likely, text, 10.0, split)["uaeo_uncertain"]
    assert near < far


def test_gradients_flow_to_the_protected_embeddings_only():
    image = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    text = F.normalize(torch.randn(4, 8), dim=1)
    split = split_pairs(10 * torch.randn(4, 4))
    loss = weighted_sum(uaeo_losses(image, text, 10.0, split))
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_adaptive_weights_normalise_inverse_magnitudes():
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(-0.5), "c": torch.tensor(1.0)}
    w = adaptive_weights(losses)
    assert math.isclose(sum(float(v) for v in w.values()), 1.0, rel_tol=1e-6)
    # w_k * |L_k| is the same for every term
    scaled = [float(w[k] * losses[k].abs()) for k in losses]
    assert max(scaled) - min(scaled) < 1e-6
    assert not w["a"].requires_grad


def test_candidate_sets_give_captions_the_batch_and_labelled_pairs_their_classes():
    captions = ["a dog on grass", "a photo of a cat.", "a red car"]
    texts, mask, positives = candidate_sets(captions, [None, ["a photo of a cat.", "a photo of a fish."], None])
    assert texts == ["a dog on grass", "a photo of a cat.", "a red car", "a photo of a fish."]
    assert positives.tolist() == [0, 1, 2]
    assert mask.tolist() == [[True, True, True, False], [False, True, False, True], [True, True, True, False]]
    with pytest.raises(ValueError, match="not among its own competitors"):
        candidate_sets(["a photo of a cat."], [["a photo of a dog."]])


def test_masked_split_reads_only_the_candidates():
    mask = torch.tensor([[True, False, True], [False, True, True]])
    logits = torch.tensor([[10.0, 50.0, -10.0], [0.0, 0.0, 0.0]])
    split = split_pairs(logits, threshold=0.5, mask=mask, positives=torch.tensor([0, 2]))
    assert split.confident.tolist() == [True, False]  # the non-candidate 50 does not add evidence to row 1's rival
    assert math.isclose(float(split.uncertainty[1]), 2 / (2 * (math.log(2) + 1)), rel_tol=1e-5)
    assert split.soft_targets[0, 1] == 0 and split.soft_targets[0].argmax() == 2  # least likely candidate
    assert torch.allclose(split.soft_targets.sum(dim=1), torch.ones(2))


def test_masked_losses_use_each_pairs_own_text_and_ignore_other_texts():
    mask = torch.tensor([[True, False, True], [False, True, True]])
    split = split_pairs(torch.zeros(2, 3), threshold=2.0, mask=mask, positives=torch.tensor([2, 1]))
    text = F.normalize(torch.eye(3), dim=1)
    image = F.normalize(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), dim=1)
    losses = uaeo_losses(image, text, 10.0, split)  # confident: row 0 sits on its own text, row 1 is orthogonal
    assert math.isclose(float(losses["uaeo_confident"]), (2 + 1) / 2, rel_tol=1e-5)

    clean = torch.tensor([[3.0, 0.0, -3.0], [0.0, 3.0, -3.0]])
    first = split_pairs(clean[:1], threshold=0.0, mask=mask[:1], positives=torch.tensor([0]))  # uncertain
    moved = text.clone()
    moved[1] = F.normalize(torch.tensor([1.0, 0.0, 0.5]), dim=0)  # text 1 is not a candidate of row 0 ...
    before, after = (float(uaeo_losses(image[:1], t, 10.0, first)["uaeo_uncertain"]) for t in (text, moved))
    assert math.isclose(before, after, rel_tol=1e-6)  # ... so moving it changes nothing
    uncertain = split_pairs(clean, threshold=0.0, mask=mask)
    image.requires_grad_()
    uaeo_losses(image, text, 10.0, uncertain)["uaeo_uncertain"].backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_centred_confident_loss_ignores_a_uniform_fall_and_rewards_moving_to_a_rival():
    text = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=1)
    split = split_pairs(torch.zeros(1, 2), threshold=2.0)  # one confident pair, own text 0, rival text 1
    on_own = F.normalize(torch.tensor([[1.0, 0.5, 0.0]]), dim=1)
    away_from_both = F.normalize(torch.tensor([[1.0, 0.5, 3.0]]), dim=1)  # every cosine falls, the ranking stays
    to_rival = F.normalize(torch.tensor([[0.5, 1.0, 0.0]]), dim=1)

    def loss(image, kind):
        return float(uaeo_losses(image, text, 10.0, split, confident_loss=kind)["uaeo_confident"])

    assert loss(away_from_both, "cosine") < loss(on_own, "cosine")  # the plain cosine rewards the uniform fall
    assert loss(to_rival, "centred") < loss(away_from_both, "centred") < loss(on_own, "centred")
    assert math.isclose(loss(on_own, "centred"), 2 + (1 - 0.5) / math.sqrt(1.25) / 2, rel_tol=1e-5)
    with pytest.raises(ValueError, match="confident_loss must be one of"):
        uaeo_losses(on_own, text, 10.0, split, confident_loss="hinge")
