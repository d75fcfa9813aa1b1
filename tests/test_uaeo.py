"""UAEO split and losses on hand-made embeddings, and the adaptive weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from psic_core.train.uaeo import adaptive_weights, evidential_uncertainty, split_pairs, uaeo_losses, weighted_sum


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
