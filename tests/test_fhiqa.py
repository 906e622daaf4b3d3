"""FHIQA: the top-k fusion of Eq. (1) (hand-checked values, brute force), its reduction to one scene's rescaled
score with a one-hot classifier, the choice of k, and gradient flow to backbone, hyper network, classifier and
rescaler (tiny models, 64 px images)."""

from __future__ import annotations

import itertools

import pytest
import torch

from iqalab.models import build_model
from iqalab.models.base import StepContext
from iqalab.models.fhiqa import FHIQA, topk_rescale

ATTRS = ["overall", "exposure"]


def tiny(**overrides) -> FHIQA:
    torch.manual_seed(0)
    return FHIQA(ATTRS, **{**FHIQA.smoke_params, **overrides})


def batch(n: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 64, 64, generator=g), "mos_norm": torch.rand(n, 2, generator=g),
            "scene_idx": torch.arange(n) % 3}


# -- Eq. (1) ----------------------------------------------------------------------------------------------------
def test_topk_rescale_hand_checked_values():
    q = torch.tensor([[0.4]])
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    a = torch.tensor([[2.0], [1.0], [0.5]])
    b = torch.tensor([[0.1], [0.0], [-0.2]])
    # k=1: scene 0 only -> 2 * 0.4 + 0.1
    assert float(topk_rescale(q, probs, a, b, 1)) == pytest.approx(0.9)
    # k=2: (0.5 * 0.9 + 0.3 * 0.4) / 0.8
    assert float(topk_rescale(q, probs, a, b, 2)) == pytest.approx(0.7125)
    # k=3: (0.45 + 0.12 + 0.2 * 0.0) / 1.0
    assert float(topk_rescale(q, probs, a, b, 3)) == pytest.approx(0.57)
    # k beyond the scene count means every scene
    assert float(topk_rescale(q, probs, a, b, 25)) == pytest.approx(0.57)


def test_topk_rescale_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(4, 2, generator=g)
    probs = torch.rand(4, 6, generator=g).softmax(-1)
    a, b = torch.rand(6, 2, generator=g) + 0.5, torch.randn(6, 2, generator=g) * 0.1
    for k in (1, 3, 6):
        got = topk_rescale(q, probs, a, b, k)
        for i, j in itertools.product(range(4), range(2)):
            order = sorted(range(6), key=lambda s: -float(probs[i, s]))[:k]
            num = sum(float(probs[i, s]) * (float(a[s, j]) * float(q[i, j]) + float(b[s, j])) for s in order)
            den = sum(float(probs[i, s]) for s in order)
            assert float(got[i, j]) == pytest.approx(num / den, rel=1e-5)


def test_one_hot_probabilities_give_that_scenes_rescaled_score():
    q = torch.tensor([[0.3, 0.6], [0.8, 0.1]])
    probs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    a = torch.tensor([[1.2, 0.9], [0.5, 2.0], [1.5, 0.7]])
    b = torch.tensor([[-0.1, 0.05], [0.2, 0.0], [0.1, -0.3]])
    got = topk_rescale(q, probs, a, b, k=3)
    expected = torch.tensor([[1.5 * 0.3 + 0.1, 0.7 * 0.6 - 0.3], [1.2 * 0.8 - 0.1, 0.9 * 0.1 + 0.05]])
    torch.testing.assert_close(got, expected)


# -- the model ----------------------------------------------------------------------------------------------------
def _set_one_hot_classifier(model: FHIQA, scene: int) -> None:
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-40.0)
        last.bias[scene] = 40.0


def _set_scene_table(model: FHIQA, a: torch.Tensor, b: torch.Tensor) -> None:
    """With ``rescaler_layers=0`` the rescaler is one Linear(S, 2A): scene s's (a, b) is column s of the weight."""
    lin = model.rescaler[-1]
    with torch.no_grad():
        lin.bias.zero_()
        lin.weight.copy_(torch.cat([a, b], dim=1).T)


def test_k_all_scenes_with_one_hot_classifier_reduces_to_that_scene():
    model = tiny(n_scenes=3, top_k=3, rescaler_layers=0).eval()
    a = torch.tensor([[1.5, 0.8], [0.6, 1.1], [2.0, 0.5]])
    b = torch.tensor([[0.1, -0.2], [0.25, 0.05], [-0.3, 0.4]])
    _set_scene_table(model, a, b)
    scale, offset = model.scene_table()
    torch.testing.assert_close(scale, a)
    torch.testing.assert_close(offset, b)
    _set_one_hot_classifier(model, scene=1)
    d = model.predict_details(batch())
    torch.testing.assert_close(d["scene_probs"][:, 1], torch.ones(2))
    torch.testing.assert_close(d["quality"], a[1] * d["pre_quality"] + b[1])
    # hand check on one number: Q_f = 0.6 * Q_p + 0.25 for the first attribute of the first image
    assert float(d["quality"][0, 0]) == pytest.approx(0.6 * float(d["pre_quality"][0, 0]) + 0.25, abs=1e-6)
    out = model.predict(batch())
    torch.testing.assert_close(out["exposure"], 1.1 * d["pre_quality"][:, 1] + 0.05)


def test_top_k_selects_how_many_scenes_are_fused():
    model = tiny(n_scenes=3, top_k=1, rescaler_layers=0).eval()
    a = torch.tensor([[1.5, 0.8], [0.6, 1.1], [2.0, 0.5]])
    b = torch.tensor([[0.1, -0.2], [0.25, 0.05], [-0.3, 0.4]])
    _set_scene_table(model, a, b)
    with torch.no_grad():
        model.classifier[-1].weight.zero_()
        model.classifier[-1].bias.copy_(torch.tensor([2.0, 1.0, 0.0]))
    pre = torch.tensor([[0.4, 0.7]])
    logits = model.classifier[-1].bias.unsqueeze(0)
    torch.testing.assert_close(model.fuse(pre, logits), a[0] * pre + b[0])  # k=1: the most likely scene
    model.top_k = 3
    p = logits.softmax(-1)[0]
    expected = sum(p[s] * (a[s] * pre + b[s]) for s in range(3)) / p.sum()
    torch.testing.assert_close(model.fuse(pre, logits), expected)


def test_gradients_reach_backbone_hyper_network_classifier_and_rescaler():
    model = tiny(n_scenes=3, top_k=2).train()
    loss = model.training_step(batch(n=3), StepContext(epoch=0, epochs=1))
    loss.backward()
    for name, part in [("backbone", model.backbone), ("lda", model.lda), ("hyper", model.hyper.weight_gens[0]),
                       ("classifier", model.classifier), ("rescaler in", model.rescaler[0]),
                       ("rescaler out", model.rescaler[-1])]:
        grad = sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None)
        assert grad > 0, f"no gradient reaches {name}"


def test_registry_builds_fhiqa_and_checks_k():
    model = build_model("fhiqa", ATTRS, **{**FHIQA.smoke_params, "top_k": 25})
    assert isinstance(model, FHIQA) and model.top_k == 25
    assert model.rescaler[-1].out_features == 2 * len(ATTRS)
    assert {"image", "scene_idx"} <= set(model.inputs)
    with pytest.raises(ValueError):
        build_model("fhiqa", ATTRS, **{**FHIQA.smoke_params, "top_k": 0})
