"""HyperIQA / SEM-HyperIQA / SEM-HyperIQA-CO: patch protocol, generated target weights, parameter count,
losses, learning-rate groups and gradient flow (tiny resnet18 models, 64 px images)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from iqalab.models import build_model
from iqalab.models.base import StepContext
from iqalab.models.hyperiqa import (
    DOCUMENTED_PARAMS,
    PAPER_PARAMS_M,
    PIQ23_SCALES,
    HyperIQA,
    SemHyperIQA,
    SemHyperIQACO,
    crop_patches,
    patch_protocol,
    random_patch_offsets,
    sample_patches,
    target_network,
)

ATTRS = ["overall", "details"]
CTX = StepContext(epoch=0, epochs=1)


def tiny(cls: type = HyperIQA, attrs: list[str] = ATTRS, **overrides) -> HyperIQA:
    torch.manual_seed(0)
    return cls(attrs, **{**cls.smoke_params, **overrides})


def batch(n: int = 2, size: int = 64, seed: int = 0, n_attrs: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, size, size, generator=g), "mos_norm": torch.rand(n, n_attrs, generator=g),
            "scene_idx": torch.arange(n) % 2}


# -- multi-scale patch protocol -----------------------------------------------------------------------------------
def test_protocol_at_full_resolution_gives_the_paper_scales():
    assert patch_protocol(3000, 4000) == [(224, 5), (672, 3), (1344, 1)]
    assert patch_protocol(3000, 4000, PIQ23_SCALES, reference_side=None) == list(PIQ23_SCALES)


def test_protocol_scales_patches_by_the_patch_rate_on_small_images():
    # a 448 px cache is a third of the 1344 px reference: every patch keeps its share of the scene
    assert patch_protocol(448, 600) == [(75, 5), (224, 3), (448, 1)]
    # only the scales asked for, in the order asked
    assert patch_protocol(448, 600, [(672, 3)]) == [(224, 3)]
    assert patch_protocol(896, 896, [(1344, 1), (224, 5)]) == [(896, 1), (149, 5)]
    # without a reference, sizes are pixels clipped to the short side
    assert patch_protocol(300, 500, PIQ23_SCALES, reference_side=None) == [(224, 5), (300, 3), (300, 1)]
    # a floor keeps tiny caches usable
    assert patch_protocol(64, 64, [(224, 5)], min_patch=16) == [(16, 5)]


@pytest.mark.parametrize("scales", [[], [(0, 5)], [(224, 0)]])
def test_protocol_rejects_empty_or_invalid_scales(scales):
    with pytest.raises(ValueError):
        patch_protocol(448, 448, scales)


def test_patches_are_the_image_squares_at_the_offsets():
    image = torch.arange(2 * 3 * 20 * 30, dtype=torch.float32).reshape(2, 3, 20, 30)
    offsets = torch.tensor([[[0, 0], [12, 22]], [[5, 7], [3, 1]]])
    patches = crop_patches(image, 8, offsets)
    assert patches.shape == (2, 2, 3, 8, 8)
    torch.testing.assert_close(patches[0, 1], image[0, :, 12:20, 22:30])
    torch.testing.assert_close(patches[1, 0], image[1, :, 5:13, 7:15])


def test_random_offsets_stay_inside_and_reach_both_borders():
    off = random_patch_offsets(50, 20, 40, 70, 16, torch.Generator().manual_seed(1))
    ys, xs = off[..., 0], off[..., 1]
    assert int(ys.min()) == 0 and int(ys.max()) == 40 - 16
    assert int(xs.min()) == 0 and int(xs.max()) == 70 - 16


def test_sample_patches_is_seeded_and_clips_to_the_image():
    image = torch.randn(2, 3, 40, 50)
    a = sample_patches(image, 24, 3, torch.Generator().manual_seed(3))
    b = sample_patches(image, 24, 3, torch.Generator().manual_seed(3))
    c = sample_patches(image, 24, 3, torch.Generator().manual_seed(4))
    assert a.shape == (2, 3, 3, 24, 24)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    assert sample_patches(image, 100, 2).shape == (2, 2, 3, 40, 40)


def test_model_patch_side_follows_the_protocol():
    model = tiny(patch_size=672, reference_side=1344)
    assert model.patch_side(448, 512) == 224
    assert tiny(patch_size=48).patch_side(40, 64) == 40


# -- hyper network ----------------------------------------------------------------------------------------------
def test_target_weights_come_from_the_hyper_network():
    model = tiny().eval()
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        p1, p1_again, p2 = model.generated_params(x1), model.generated_params(x1), model.generated_params(x2)
    for w1, w1b, w2 in zip(p1["weights"] + [p1["last_weights"]], p1_again["weights"] + [p1_again["last_weights"]],
                           p2["weights"] + [p2["last_weights"]]):
        torch.testing.assert_close(w1, w1b)
        assert not torch.allclose(w1, w2), "changing the image must change the generated weights"
        assert not torch.allclose(w1[0], w1[1]), "each patch gets its own target network"
    # sizes: target_in -> target_sizes, then one output per attribute
    assert [tuple(w.shape) for w in p1["weights"]] == [(2, 16, 32), (2, 8, 16), (2, 8, 8), (2, 4, 8)]
    assert tuple(p1["last_weights"].shape) == (2, len(ATTRS), 4)


def test_patch_scores_are_the_generated_network_applied_to_the_lda_vector():
    model = tiny().eval()
    patches = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        q = model.patch_outputs(patches)["q"][0]
        vec, hyper = model.encode(patches[0])
        params = model.hyper(hyper)
        manual = []
        for i in range(2):  # one explicit MLP per patch
            h = vec[i]
            for w, b in zip(params["weights"], params["biases"]):
                h = torch.sigmoid(F.linear(h, w[i], b[i]))
            manual.append(F.linear(h, params["last_weights"][i], params["last_biases"][i]) + 0.5)
        torch.testing.assert_close(q, torch.stack(manual))
        # and the output really depends on the generated weights
        params["last_weights"] = params["last_weights"] * 2
        assert not torch.allclose(target_network(vec, params) + 0.5, q)


def test_resnet50_parameter_count_matches_the_documented_27_38_m():
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = HyperIQA(["overall"], backbone="resnet50")
        three = HyperIQA(["overall", "exposure", "details"], backbone="resnet50")
    n = model.num_parameters()
    assert n == DOCUMENTED_PARAMS["hyperiqa"]
    assert abs(n / 1e6 - PAPER_PARAMS_M) < 0.005
    # the original sizes: 224-d target input, 112 x 7 x 7 hyper feature, FC 224-112-56-28-14-1
    assert model.hyper.weight_gens[0].out_channels == 224 * 112 // 49
    assert model.lda.fc_last.out_features == 224 - 3 * 16
    # every further attribute adds one last-layer generator (112 -> 14 weights, 112 -> 1 bias)
    assert three.num_parameters() - n == 2 * ((112 * 14 + 14) + (112 + 1))


def test_output_is_independent_of_input_resolution_in_shape():
    model = tiny(patch_size=48, n_patches=3).eval()
    for size in (48, 80):
        out = model.predict(batch(size=size))
        assert set(out) == set(ATTRS) and all(v.shape == (2,) for v in out.values())


# -- prediction, loss, optimisation --------------------------------------------------------------------------------
def test_predict_is_deterministic_and_averages_the_rounds():
    model = tiny(test_rounds=3).eval()
    b = batch()
    p1, p2 = model.predict(b), model.predict(b)
    torch.testing.assert_close(p1["overall"], p2["overall"])
    g = torch.Generator().manual_seed(model.eval_seed)
    with torch.no_grad():
        rounds = torch.stack([model.image_outputs(b["image"], g)["quality"] for _ in range(3)])
    torch.testing.assert_close(torch.stack([p1[a] for a in ATTRS], dim=1), rounds.mean(0))
    assert not torch.allclose(rounds[0], rounds[1]), "rounds must use different patches"


def test_l1_training_loss_labels_every_patch_with_its_image_score():
    model = tiny().train()
    b = batch()
    b["mos_norm"][1, 1] = float("nan")
    torch.manual_seed(5)
    loss = model.training_step(b, CTX)
    torch.manual_seed(5)
    q = model.image_outputs(b["image"])["q_patches"]  # [B, n, A]
    target = b["mos_norm"].unsqueeze(1).expand_as(q)
    per_attr = [(q[..., k] - target[..., k]).abs()[~torch.isnan(target[..., k])].mean() for k in range(2)]
    torch.testing.assert_close(loss, torch.stack(per_attr).mean())


def test_huber_loss_option_matches_torch():
    model = tiny(cls=HyperIQA, loss="huber", huber_delta=0.05).train()
    b = batch()
    torch.manual_seed(2)
    loss = model.training_step(b, CTX)
    torch.manual_seed(2)
    q = model.image_outputs(b["image"])["q_patches"]
    t = b["mos_norm"].unsqueeze(1).expand_as(q)
    expected = torch.stack([F.huber_loss(q[..., k], t[..., k], delta=0.05) for k in range(2)]).mean()
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError):
        tiny(loss="mse")


def test_param_groups_give_the_backbone_the_lower_rate():
    """As the original's solver: the ResNet module ``res``, which holds the LDA layers, at ``lr``, the hyper
    network at ``lr * lr_ratio`` (here: backbone + LDA at ``lr * backbone_lr_scale``, the rest at ``lr``)."""
    model = tiny(backbone_lr_scale=0.1)
    groups = model.param_groups(2e-4)
    assert [g["lr"] for g in groups] == pytest.approx([2e-5, 2e-4])
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    low = {id(p) for p in [*model.backbone.parameters(), *model.lda.parameters()]}
    assert low == {id(p) for p in groups[0]["params"]}
    assert {id(p) for p in model.hyper.parameters()} <= {id(p) for p in groups[1]["params"]}


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_gradients_reach_backbone_lda_and_hyper_network():
    model = tiny().train()
    model.training_step(batch(), CTX).backward()
    for part in (model.backbone, model.lda, model.hyper.reduce, model.hyper.weight_gens[0],
                 model.hyper.bias_gens[0], model.hyper.last_weight_gens[1]):
        assert _grad_norm(part) > 0


# -- SEM-HyperIQA and -CO ------------------------------------------------------------------------------------------
def test_sem_classifier_reads_the_concatenated_patch_features():
    model = tiny(SemHyperIQA, n_scenes=4, scene_pool_width=None, n_patches=3)
    # official layout: H pooled to hyper_in x 1 x n_scenes per patch, patches concatenated
    assert model.classifier[0].in_features == 3 * 16 * 4
    assert model.classifier[-1].out_features == 4
    hyper = torch.randn(2, 3, 16, 2, 2)
    swapped = hyper[:, [1, 0, 2]]
    assert not torch.allclose(model.scene_logits(hyper), model.scene_logits(swapped)), "concatenation, not a mean"


def test_sem_rescaler_starts_as_identity_and_co_does_not_rescale():
    model = tiny(SemHyperIQA).eval()
    details = model.predict_details(batch())
    torch.testing.assert_close(details["quality"], details["pre_quality"], atol=1e-2, rtol=0)
    assert details["scene_probs"].shape == (2, 3)
    torch.testing.assert_close(details["scene_probs"].sum(-1), torch.ones(2))
    co = build_model("sem_hyperiqa_co", ATTRS, **SemHyperIQA.smoke_params).eval()
    assert not hasattr(co, "rescaler")
    d = co.predict_details(batch())
    torch.testing.assert_close(d["quality"], d["pre_quality"])


HEAD_SIZES = {"n_scenes": 30, "classifier_hidden": 500, "rescaler_hidden": 100}


def test_head_init_release_is_piq23s_init_of_the_classifier_and_rescaler():
    """``head_init="release"``: every linear layer of the scene classifier and the rescaler Kaiming-normal (std
    ``sqrt(2 / fan_in)``) with zero biases, as PIQ23's ``weights_init_xavier`` (``sem_hyperiqa_util.py``), and no
    other parameter drawn otherwise; the bias-free rescaler maps 0 to 0, is positively homogeneous, and gives a
    and b near 0 on the near-uniform scene vector of an untrained classifier."""
    model = tiny(SemHyperIQA, head_init="release", **HEAD_SIZES)
    layers = [m for part in (model.classifier, model.rescaler) for m in part if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 3 + 4  # classifier_layers = 3, rescaler_layers = 3 hidden + the output
    for layer in layers:
        assert not layer.bias.any()
        expected = math.sqrt(2.0 / layer.in_features)
        weight = layer.weight.detach()
        assert float(weight.std()) == pytest.approx(expected, rel=0.15)
        assert abs(float(weight.mean())) < 0.1 * expected
    default = tiny(SemHyperIQA, **HEAD_SIZES)
    others = {k: v for k, v in default.state_dict().items() if not k.startswith(("classifier.", "rescaler."))}
    mine = model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in others.items()), "only the classifier and rescaler change"
    s = HEAD_SIZES["n_scenes"]
    probs = torch.rand(4, s, generator=torch.Generator().manual_seed(1)).softmax(-1)
    with torch.no_grad():
        assert not model.rescaler(torch.zeros(1, s)).any()
        torch.testing.assert_close(model.rescaler(3.0 * probs), 3.0 * model.rescaler(probs))
        a, b = model.rescale_params(torch.full((1, s), 1.0 / s))
    assert float(torch.cat([a, b]).abs().max()) < 0.25  # root-mean-square about sqrt(2) / 30 = 0.05
    co = tiny(SemHyperIQACO, head_init="release", **HEAD_SIZES)
    assert not any(layer.bias.any() for layer in co.classifier if isinstance(layer, torch.nn.Linear))
    with pytest.raises(ValueError, match="head_init must be one of identity, release"):
        tiny(SemHyperIQA, head_init="kaiming")


def test_head_init_identity_is_the_default_and_starts_every_scene_at_a_1_b_0():
    model = tiny(SemHyperIQA, **HEAD_SIZES)
    assert model.head_init == "identity"
    explicit = tiny(SemHyperIQA, head_init="identity", **HEAD_SIZES)
    assert all(torch.equal(v, explicit.state_dict()[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        a, b = model.rescale_params(torch.eye(HEAD_SIZES["n_scenes"]))
    torch.testing.assert_close(a, torch.ones_like(a), atol=0.02, rtol=0)
    torch.testing.assert_close(b, torch.zeros_like(b), atol=0.02, rtol=0)
    torch.testing.assert_close(model.rescaler[-1].bias, torch.tensor([1.0, 1.0, 0.0, 0.0]))


def test_sem_rescaling_is_affine_in_the_pre_quality():
    model = tiny(SemHyperIQA)
    with torch.no_grad():
        model.rescaler[-1].weight.normal_()
    logits = torch.randn(2, 3)
    q = torch.rand(2, 2)
    a, b = model.rescale_params(logits.softmax(-1))
    torch.testing.assert_close(model.fuse(q, logits), a * q + b)
    torch.testing.assert_close(model.fuse(2 * q, logits) - model.fuse(q, logits), a * q)


@pytest.mark.parametrize("name", ["sem_hyperiqa", "sem_hyperiqa_co"])
def test_sem_loss_is_huber_plus_half_cross_entropy(name):
    b = batch(n=4)
    b["scene_idx"] = torch.tensor([0, 2, 1, -1])  # -1: unknown scene, ignored
    model = build_model(name, ATTRS, **SemHyperIQA.smoke_params).train()
    torch.manual_seed(7)
    loss = model.training_step(b, CTX)
    torch.manual_seed(7)
    out = model.image_outputs(b["image"])
    huber = torch.stack([F.huber_loss(out["quality"][:, k], b["mos_norm"][:, k], delta=0.1) for k in range(2)])
    ce = F.cross_entropy(out["logits"][:3], b["scene_idx"][:3])
    torch.testing.assert_close(loss, huber.mean() + 0.5 * ce)
    assert math.isfinite(float(loss.detach()))


def test_sem_gradients_reach_classifier_rescaler_and_backbone():
    model = tiny(SemHyperIQA).train()
    model.training_step(batch(n=3), CTX).backward()
    for part in (model.backbone, model.hyper.weight_gens[0], model.classifier, model.rescaler[0],
                 model.rescaler[-1]):
        assert _grad_norm(part) > 0


def test_scene_index_beyond_n_scenes_is_a_clear_error():
    model = tiny(SemHyperIQA, n_scenes=2).train()
    b = batch()
    b["scene_idx"] = torch.tensor([0, 2])
    with pytest.raises(ValueError, match="n_scenes"):
        model.training_step(b, CTX)
