"""UAEO split and losses on hand-made embeddings, the adaptive weights, and the targeted zero-shot and looks terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from psic_core.train.uaeo import (
    adaptive_weights,
    candidate_sets,
    evidential_uncertainty,
    looks_penalty,
    split_pairs,
    targeted_zero_shot,
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
    assert split.targets[1].argmax() == 2
    assert torch.allclose(split.targets.sum(dim=1), torch.ones(3))
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
    assert split.targets[0, 1] == 0 and split.targets[0].argmax() == 2  # least likely candidate
    assert torch.allclose(split.targets.sum(dim=1), torch.ones(2))


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


def test_correct_split_marks_the_pairs_whose_own_text_ranks_first_on_the_original():
    mask = torch.tensor([[True, True, True, False], [True, True, True, False], [True, True, False, True],
                         [True, True, True, True]])
    logits = torch.tensor([
        [0.2, 0.1, 0.0, 9.0],  # own text 0 first among its candidates (9.0 is not one): correct, though unsure
        [30.0, -10.0, -10.0, 0.0],  # sure, but of text 0 while its own is 1: wrong
        [0.0, 0.1, 50.0, 0.3],  # own text 3 first (50.0 is not a candidate): correct, though unsure
        [0.0, 5.0, 1.0, 4.0],  # own text 2 third: wrong
    ])
    positives = torch.tensor([0, 1, 3, 2])
    split = split_pairs(logits, mask=mask, positives=positives, split_by="correct")
    assert split.confident.tolist() == [True, False, True, False]
    by_uncertainty = split_pairs(logits, threshold=0.5, mask=mask, positives=positives)
    assert by_uncertainty.confident.tolist() == [False, True, False, True]  # the default reads certainty, not rank
    with pytest.raises(ValueError, match="split_by must be one of uncertainty, correct, not 'rank'"):
        split_pairs(logits, split_by="rank")


def test_hard_targets_are_one_hot_on_the_least_likely_text_and_image():
    clean = torch.tensor([[5.0, 4.0, -5.0], [4.0, 5.0, -5.0], [0.0, 0.0, 0.0]])
    split = split_pairs(clean, threshold=0.0, uncertain_targets="hard")  # everything uncertain
    assert split.targets.tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0]]  # row 2's tie goes to the first
    # per text, the image whose original it matches least: text 0 -> image 2, text 1 -> image 2, text 2 -> image 0
    assert split.column_targets.t().tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0]]
    text = torch.eye(3)
    image = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # protected logits 10 * image
    top = math.log(math.exp(10) + 2)  # -log softmax of a 0 entry next to one 10 and another 0
    image_to_text = (top + top + (top - 10)) / 3
    text_to_image = ((math.log(2 * math.exp(10) + 1) - 10) + top + math.log(3)) / 3
    loss = uaeo_losses(image, text, 10.0, split)["uaeo_uncertain"]
    assert math.isclose(float(loss), (image_to_text + text_to_image) / 2, rel_tol=1e-6)


def test_soft_column_targets_are_the_row_targets_normalised_over_the_uncertain_images():
    clean = torch.tensor([[5.0, 4.0, -5.0], [4.0, 5.0, -5.0], [30.0, -9.0, -9.0]])
    split = split_pairs(clean, threshold=0.2)
    assert split.confident.tolist() == [False, False, True]
    expected = split.targets[:2] / split.targets[:2].sum(dim=0)
    assert torch.allclose(split.column_targets[:2], expected) and split.column_targets[2].abs().sum() == 0
    with pytest.raises(ValueError, match="uncertain_targets must be one of soft, hard, not 'argmin'"):
        split_pairs(clean, uncertain_targets="argmin")


def test_harmonic_weights_stay_in_the_graph_and_detached_ones_do_not():
    def gradients(weighting):
        losses = {"a": torch.tensor(1.0, requires_grad=True), "b": torch.tensor(3.0, requires_grad=True)}
        total = weighted_sum(losses, weighting)
        total.backward()
        return float(total.detach()), [float(losses[k].grad) for k in "ab"]

    # both sum to the harmonic mean 2 / (1 + 1/3) = 1.5 ...
    detached_value, detached_grad = gradients("detached")
    harmonic_value, harmonic_grad = gradients("harmonic")
    assert math.isclose(detached_value, 1.5, rel_tol=1e-6) and math.isclose(harmonic_value, 1.5, rel_tol=1e-6)
    # ... detached, the gradient is the weights (3/4, 1/4); harmonic, dH/dL_k = H^2 / (2 L_k^2) = (9/8, 1/8)
    assert detached_grad == pytest.approx([0.75, 0.25], rel=1e-6)
    assert harmonic_grad == pytest.approx([1.125, 0.125], rel=1e-6)
    assert adaptive_weights({"a": torch.tensor(1.0, requires_grad=True)}, "harmonic")["a"].requires_grad
    with pytest.raises(ValueError, match="weighting must be one of detached, harmonic, not 'equal'"):
        adaptive_weights({"a": torch.tensor(1.0)}, "equal")


@pytest.fixture
def zero_shot_batch():
    """Two labelled pairs of one source (cat, dog, fish) and a caption pair; texts as one-hot embeddings."""
    captions = ["a photo of a cat.", "a photo of a dog.", "a red car"]
    classes = ["a photo of a cat.", "a photo of a dog.", "a photo of a fish."]
    texts, mask, positives = candidate_sets(captions, [classes, classes, None])
    assert texts == ["a photo of a cat.", "a photo of a dog.", "a red car", "a photo of a fish."]
    clean = torch.tensor([
        [5.0, 3.0, 0.0, 1.0],  # cat, right: least likely wrong class fish, likeliest wrong dog
        [6.0, 1.0, 0.0, 4.0],  # dog, wrong (reads cat): least likely wrong fish, likeliest wrong cat
        [0.0, 0.0, 9.0, 0.0],  # the caption pair: not part of the term
    ])
    return torch.eye(4), clean, mask, positives, torch.tensor([True, True, False])


def test_targeted_term_is_the_cross_entropy_toward_one_wrong_class_of_the_source(zero_shot_batch):
    text, clean, mask, positives, labelled = zero_shot_batch
    protected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # both read cat

    def loss(image, target_class):
        return float(targeted_zero_shot(image, clean, text, 10.0, mask, positives, labelled, target_class))

    top = math.log(math.exp(10) + 2)  # CE toward a class at logit 0 next to one at 10 and another at 0
    assert math.isclose(loss(protected, "least_likely"), (top + top) / 2, rel_tol=1e-6)  # both toward fish
    assert math.isclose(loss(protected, "likeliest_wrong"), (top + (top - 10)) / 2, rel_tol=1e-6)  # dog, cat
    on_fish = protected.clone()
    on_fish[:2] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert loss(on_fish, "least_likely") < 1e-3  # at the target, the term is (nearly) spent
    with pytest.raises(ValueError, match="target_class must be one of least_likely, likeliest_wrong"):
        loss(protected, "random")


def test_targeted_term_never_targets_the_own_class_and_skips_pairs_without_a_wrong_one(zero_shot_batch):
    text, clean, mask, positives, labelled = zero_shot_batch
    own_least_likely = clean.clone()
    own_least_likely[0] = torch.tensor([-5.0, 3.0, 0.0, 1.0])  # cat is least likely for its own image
    only_first = torch.tensor([True, False, False])
    image = torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 3)  # reads dog: logits 10 on dog
    value = targeted_zero_shot(image, own_least_likely, text, 10.0, mask, positives, only_first)
    assert math.isclose(float(value), math.log(math.exp(10) + 2), rel_tol=1e-6)  # toward fish, not cat
    one_class = mask.clone()
    one_class[:2] = False
    one_class[0, 0] = one_class[1, 1] = True  # a source with a single class: no wrong class to move to
    image.requires_grad_()
    empty = targeted_zero_shot(image, clean, text, 10.0, one_class, positives, labelled)
    assert empty.item() == 0.0 and empty.requires_grad


def _stripes(period: float, size: int = 32) -> torch.Tensor:
    rows = torch.arange(size, dtype=torch.float64)[:, None].expand(size, size)
    return torch.cos(2 * math.pi * rows / period).expand(2, 3, size, size)


def _energy(x: torch.Tensor) -> float:
    return float(x.square().mean())


def test_looks_penalty_is_zero_for_identical_decodings_and_differentiable():
    decoded = torch.rand(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    same = looks_penalty(decoded, decoded.detach().clone())
    assert same.item() == 0.0
    same.backward()
    assert torch.equal(decoded.grad, torch.zeros_like(decoded))  # a finite (zero) gradient where nothing differs
    full = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    protected = (full + 0.1 * torch.randn(1, 3, 8, 8, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: looks_penalty(p, full), (protected,))


def test_looks_penalty_by_hand_for_a_uniform_shift_and_a_finest_stripe():
    bins = 32 * 32
    peak = 1 + bins / (bins + 8)  # all the energy in one frequency bin
    shift = torch.full((2, 3, 32, 32), 0.1, dtype=torch.float64)  # the zero frequency: w_low = 4
    assert math.isclose(float(looks_penalty(shift, torch.zeros_like(shift))), 4 * peak * 0.01, rel_tol=1e-9)
    finest = _stripes(2)  # +1, -1, ...: 0.5 cycles per pixel, w_low = 1 + 3 e^-8
    assert math.isclose(float(looks_penalty(finest, torch.zeros_like(finest))), (1 + 3 * math.exp(-8)) * peak,
                        rel_tol=1e-9)


def test_looks_penalty_is_higher_for_stripes_than_for_white_noise_of_equal_energy():
    torch.manual_seed(0)
    noise = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    noise_cost = float(looks_penalty(noise, torch.zeros_like(noise))) / _energy(noise)
    assert 1.1 < noise_cost < 1.5  # white noise: close to its energy
    costs = []
    for period in (2, 4, 8, 16, 32):
        stripes = _stripes(period)
        costs.append(float(looks_penalty(stripes, torch.zeros_like(stripes))) / _energy(stripes))
    assert min(costs) > noise_cost + 0.5  # every periodic pattern, at any period
    assert costs == sorted(costs)  # and the broader the stripes, the more they cost
    scaled = looks_penalty(3 * noise, torch.zeros_like(noise)) / looks_penalty(noise, torch.zeros_like(noise))
    assert math.isclose(float(scaled), 9, rel_tol=1e-9)  # an energy: quadratic in the difference
