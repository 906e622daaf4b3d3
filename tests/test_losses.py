"""The one masked loss loop (``train.losses.masked_loss``) and the losses built on it, by hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from iqalab.train.losses import masked_huber, masked_l1, masked_loss, masked_mse

NAN = math.nan
ATTRS = ["a", "b", "c"]


def _pred() -> torch.Tensor:
    return torch.tensor([[0.5, 0.2, 0.9], [0.1, 0.4, 0.3], [0.8, 0.6, 0.0]], requires_grad=True)


TARGET = torch.tensor([[0.3, NAN, 1.0], [0.1, NAN, NAN], [0.4, NAN, 0.5]])  # b has no target at all


def test_attributes_without_targets_are_left_out_of_both_means():
    pred = _pred()
    # a: |0.2|, |0|, |0.4| -> 0.2; c: |0.1|, |0.5| -> 0.3; b: none -> skipped; mean over {a, c} = 0.25
    loss = masked_l1({k: pred[:, i] for i, k in enumerate(ATTRS)}, TARGET, ATTRS)
    assert loss.item() == pytest.approx(0.25)
    loss.backward()
    assert torch.all(pred.grad[:, 1] == 0) and pred.grad[1, 2] == 0, "unrated entries get no gradient"
    assert pred.grad[0, 0].item() == pytest.approx(0.5 * (1 / 3)), "a's share: sign / 3 images / 2 attributes"


def test_mse_and_huber_are_the_same_loop():
    pred = _pred()
    as_dict = {k: pred[:, i] for i, k in enumerate(ATTRS)}
    # a: (0.04 + 0 + 0.16) / 3; c: (0.01 + 0.25) / 2
    assert masked_mse(as_dict, TARGET, ATTRS).item() == pytest.approx(((0.2 / 3) + 0.13) / 2)
    # Huber with delta 0.1: quadratic below 0.1 (0.5 x^2), linear above (0.1 (|x| - 0.05))
    a = (0.1 * 0.15 + 0.0 + 0.1 * 0.35) / 3
    c = (0.5 * 0.01 + 0.1 * 0.45) / 2
    assert masked_huber(as_dict, TARGET, ATTRS, delta=0.1).item() == pytest.approx((a + c) / 2)


def test_tensor_and_mapping_predictions_agree_and_a_mapping_needs_the_order():
    pred = _pred()
    l1 = lambda p, t: (p - t).abs().mean()  # noqa: E731
    as_dict = {k: pred[:, i] for i, k in enumerate(ATTRS)}
    assert torch.equal(masked_loss(pred, TARGET, l1), masked_loss(as_dict, TARGET, l1, ATTRS))
    reordered = {"c": pred[:, 2], "a": pred[:, 0], "b": pred[:, 1]}  # the order comes from `attributes`
    assert torch.equal(masked_loss(reordered, TARGET, l1, ATTRS), masked_loss(pred, TARGET, l1))
    with pytest.raises(ValueError, match="needs the attributes"):
        masked_loss(as_dict, TARGET, l1)


def test_no_target_at_all_gives_zero_with_a_graph():
    pred = _pred()
    loss = masked_mse({k: pred[:, i] for i, k in enumerate(ATTRS)}, torch.full((3, 3), NAN), ATTRS)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(pred.grad == 0)
