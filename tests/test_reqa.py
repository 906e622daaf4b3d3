"""REQA (seed 002): loss terms on hand-made cases, curriculum, ConvLSTM feedback through time, ablation flags,
micro-batch training step and parameter groups."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from iqalab.data.samplers import ScaleMicroBatchSampler
from iqalab.models import build_model, get_model_class
from iqalab.models.base import StepContext
from iqalab.models.reqa import (
    PAPER_STAGE_WEIGHTS,
    REQA,
    FeedbackBlock,
    coarse_loss,
    curriculum_stage,
    curriculum_weights,
    fine_tolerances,
    gradient_loss,
    rank_loss,
    tolerance_loss,
)

# a light backbone with the same four-level (stride 4/8/16/32) layout as ResNet-50
TINY = {"backbone": "mobilenetv3_small_050", "lstm_channels": 8, "embed_dim": 8, "token_dim": 16, "heads": 2,
        "hidden": 16, "pos_grid": 2}
SIZE = 64


def tiny(**overrides) -> REQA:
    torch.manual_seed(0)
    return build_model("reqa", ["overall"], **(TINY | overrides))


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# -- losses by hand ----------------------------------------------------------------------------------------------
def test_tolerance_zero_inside_band_linear_outside():
    s = torch.full((6,), 50.0)
    f = torch.tensor([50.0, 53.0, 47.0, 55.0, 60.0, 38.0], requires_grad=True)
    loss = tolerance_loss(s, f, 5.0)
    assert loss.item() == pytest.approx((0 + 0 + 0 + 0 + 5 + 7) / 6)
    loss.backward()
    np.testing.assert_allclose(f.grad.numpy(), np.array([0, 0, 0, 0, 1, -1]) / 6)
    # the error grows linearly outside the band: shifting by 1 more adds exactly 1 / n
    further = tolerance_loss(s, torch.tensor([50.0, 53.0, 47.0, 55.0, 61.0, 38.0]), 5.0)
    assert further.item() - loss.item() == pytest.approx(1 / 6)


def test_tolerance_zero_is_l1():
    g = torch.Generator().manual_seed(0)
    s, f = torch.rand(20, generator=g) * 100, torch.rand(20, generator=g) * 100
    torch.testing.assert_close(tolerance_loss(s, f, 0.0), torch.nn.functional.l1_loss(f, s))


def test_rank_loss_by_hand():
    s = torch.tensor([10.0, 30.0])
    wrong = rank_loss(s, torch.tensor([40.0, 20.0]))
    assert wrong.shape == (1,)
    # -(s_i - s_j)(f_i - f_j) / (|s_i - s_j| + sigma) * (|s_i - s_j| + 1) = 400 / (20 + 1e-4) * 21
    assert wrong.item() == pytest.approx(400 / (20 + 1e-4) * 21, rel=1e-6)
    assert rank_loss(s, torch.tensor([20.0, 40.0])).item() == 0.0  # right order
    assert rank_loss(torch.tensor([30.0, 30.0]), torch.tensor([40.0, 20.0])).item() == 0.0  # tie in MOS
    assert rank_loss(s, torch.tensor([40.0, 20.0]), offset=0.0).item() == pytest.approx(20 * 20, rel=1e-4)  # Eq. 10


def test_gradient_loss_by_hand():
    s = torch.tensor([10.0, 30.0])
    assert gradient_loss(s, torch.tensor([20.0, 25.0])).item() == pytest.approx(15.0)
    assert gradient_loss(s, torch.tensor([20.0, 0.0])).item() == pytest.approx(0.0)  # same distance, either order
    assert gradient_loss(s, torch.tensor([0.0, 50.0])).item() == pytest.approx(30.0)


def test_coarse_loss_matches_double_loop():
    rng = np.random.default_rng(0)
    s, f = rng.uniform(0, 100, (3, 5)), rng.uniform(0, 100, (3, 5))
    expected = []
    for m in range(3):
        total = 0.0
        for i, j in itertools.combinations(range(5), 2):
            ds, df = s[m, i] - s[m, j], f[m, i] - f[m, j]
            total += max(0.0, -ds * df / (abs(ds) + 1e-4)) * (abs(ds) + 1) + abs(abs(ds) - abs(df))
        expected.append(total)
    got = coarse_loss(torch.tensor(s), torch.tensor(f))
    assert got.item() == pytest.approx(np.mean(expected), rel=1e-9)


def test_coarse_loss_vanishes_for_shifted_truth_and_grows_with_disorder():
    s = torch.tensor([[10.0, 30.0, 50.0, 70.0, 90.0]])
    assert coarse_loss(s, s + 3.0).item() == pytest.approx(0.0, abs=1e-9)
    mild = coarse_loss(s, torch.tensor([[10.0, 30.0, 50.0, 90.0, 70.0]]))
    severe = coarse_loss(s, s.flip(-1))
    assert 0 < mild.item() < severe.item()


@pytest.mark.parametrize(("coarse_scale", "spreads"), [(1.0, True), (100.0, False)])
def test_coarse_term_keeps_the_spread_of_a_model_that_misorders_some_pairs(coarse_scale, spreads):
    # one adjacent pair of five is swapped: on 0-100, Eq. 9's factor |s_i - s_j| + 1 makes the loss fall as the
    # predictions are drawn together (towards a constant); on [0, 1] it falls as they spread to the MOS distances
    model = tiny(coarse_scale=coarse_scale)
    target = torch.tensor([[0.1], [0.3], [0.5], [0.7], [0.9]])
    order = torch.tensor([0.1, 0.3, 0.7, 0.5, 0.9])
    alpha = torch.tensor(0.5, requires_grad=True)  # predictions 0.5 + alpha * (order - 0.5): alpha = spread
    steps = (0.5 + alpha * (order - 0.5)).reshape(1, 5, 1).expand(4, 5, 1)
    model.loss_terms(steps, target)[0].backward()
    assert (alpha.grad.item() < 0) is spreads  # a negative gradient: more spread lowers the loss


def test_coarse_scale_must_be_positive():
    with pytest.raises(ValueError, match="coarse_scale"):
        tiny(coarse_scale=0)


# -- curriculum ---------------------------------------------------------------------------------------------------
def test_curriculum_stages_follow_the_paper_epochs():
    assert [curriculum_stage(e, 40) for e in (0, 9, 10, 19, 20, 29, 30, 39)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [curriculum_stage(e, 4) for e in range(4)] == [0, 1, 2, 3]
    assert curriculum_stage(0, 1) == 0


def test_curriculum_weights_t4_are_the_normalised_table():
    for stage, row in enumerate(PAPER_STAGE_WEIGHTS):
        got = curriculum_weights(stage * 10, 40, 4)
        np.testing.assert_allclose(got, np.asarray(row) / sum(row))
    first, last = curriculum_weights(0, 40, 4), curriculum_weights(39, 40, 4)
    assert first[1] > first[3] and last[3] > last[1]  # easy-to-hard: emphasis moves from l=5 to l=0


def test_curriculum_weights_as_printed_without_normalisation():
    """``normalise_stage_weights=False``: the paper's printed rows (stage 1 sums to 0.917, stage 4 to 1.25)."""
    for stage, row in enumerate(PAPER_STAGE_WEIGHTS):
        np.testing.assert_allclose(curriculum_weights(stage * 10, 40, 4, normalise=False), row)
    assert sum(curriculum_weights(0, 40, 4, normalise=False)) == pytest.approx(11 / 12)
    model = build_model("reqa", ["q"], **{**get_model_class("reqa").smoke_params, "steps": 4,
                                         "normalise_stage_weights": False})
    assert model.loss_weights(StepContext(epoch=39, epochs=40)) == pytest.approx([0.25, 0.25, 0.25, 0.5])


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 6])
def test_curriculum_weights_other_t_sum_to_one_and_keep_coarse_share(steps):
    for epoch in range(0, 40, 5):
        w = curriculum_weights(epoch, 40, steps)
        assert len(w) == steps
        assert sum(w) == pytest.approx(1.0)
        assert min(w) >= 0
        if steps > 1:
            row = PAPER_STAGE_WEIGHTS[curriculum_stage(epoch, 40)]
            assert w[0] == pytest.approx(row[0] / sum(row))


def test_fine_tolerances():
    assert fine_tolerances(4) == [5.0, 2.5, 0.0]
    assert fine_tolerances(3) == [5.0, 0.0]
    assert fine_tolerances(2) == [0.0]
    five = fine_tolerances(5)
    assert five[0] == 5.0 and five[-1] == 0.0 and all(a > b for a, b in zip(five, five[1:]))
    with pytest.raises(ValueError, match="3 values"):
        fine_tolerances(4, [1.0])


# -- ConvLSTM feedback -----------------------------------------------------------------------------------------
def test_feedback_block_state_carries_across_steps():
    torch.manual_seed(0)
    block = FeedbackBlock(in_channels=6, channels=4, downsample=1, out_dim=5)
    x = block.prepare(torch.randn(2, 6, 8, 8))
    assert x.shape == (2, 16, 4, 4)
    v1, state1 = block.step(x, None)
    v2, state2 = block.step(x, state1)
    assert v1.shape == (2, 5) and state1[0].shape == (2, 4, 4, 4)
    assert not torch.allclose(v1, v2)  # same input, different output: the hidden state fed back
    v1_again, _ = block.step(x, None)
    torch.testing.assert_close(v1, v1_again)


def test_output_at_t_differs_from_t1_and_first_step_is_independent_of_t():
    model = tiny(steps=4).eval()
    with torch.no_grad():
        steps = model.forward_steps(images(2))
        single = model.forward_steps(images(2), steps=1)
    assert steps.shape == (4, 2, 1)
    torch.testing.assert_close(steps[0], single[0])
    assert (steps[-1] - steps[0]).abs().max() > 1e-6
    torch.testing.assert_close(model({"image": images(2)})["overall"], steps[-1, :, 0])


def test_gradients_flow_back_through_time():
    model = tiny(steps=3).train()
    model.forward_steps(images(2))[-1].sum().backward()
    hidden_grads = [block.hidden_gates.weight.grad for block in model.blocks]
    assert all(g is not None and g.abs().sum() > 0 for g in hidden_grads)
    # with one step the hidden state is the zero initial state: W_h gets no gradient, so the check above can fail
    model.zero_grad()
    model.forward_steps(images(2), steps=1)[-1].sum().backward()
    assert all(block.hidden_gates.weight.grad.abs().sum() == 0 for block in model.blocks)


# -- ablations ---------------------------------------------------------------------------------------------------
def test_ablation_flags_remove_parts():
    full = tiny().num_parameters()
    no_fn = tiny(use_feedback=False)
    no_te = tiny(use_transformer=False)
    neither = tiny(use_feedback=False, use_transformer=False)
    assert no_fn.num_parameters() < full and no_te.num_parameters() < full
    assert neither.num_parameters() < min(no_fn.num_parameters(), no_te.num_parameters())
    assert len(no_fn.blocks) == 0 and not any("quality_token" in n for n, _ in no_te.named_parameters())
    # the feedback blocks share their weights over time: T changes no parameter count
    assert tiny(steps=2).num_parameters() == tiny(steps=5).num_parameters() == full
    with torch.no_grad():
        out = no_fn.eval().forward_steps(images(2))
    torch.testing.assert_close(out[0], out[-1])


def test_loss_ablations_replace_terms_by_l1():
    target = torch.tensor([[0.1], [0.3], [0.5], [0.7], [0.9]])
    steps = torch.tensor([[[0.9], [0.7], [0.5], [0.3], [0.1]]] * 4)  # reversed order at every step
    full = tiny().loss_terms(steps, target)
    no_coarse = tiny(use_coarse_loss=False).loss_terms(steps, target)
    no_fine = tiny(use_fine_loss=False).loss_terms(steps, target)
    l1 = (steps[0, :, 0] - target[:, 0]).abs().mean() * 100
    # the coarse term is read on [0, 1] (coarse_scale 1) and expressed in 0-100 units
    assert full[0].item() == pytest.approx(coarse_loss(target.T, steps[0].T).item() * 100, rel=1e-5)
    literal = tiny(coarse_scale=100).loss_terms(steps, target)
    assert literal[0].item() == pytest.approx(coarse_loss(target.T * 100, steps[0].T * 100).item(), rel=1e-5)
    assert no_coarse[0].item() == pytest.approx(l1.item(), rel=1e-5)
    for t, tol in zip(range(1, 4), [5.0, 2.5, 0.0]):
        assert full[t].item() == pytest.approx(tolerance_loss(target * 100, steps[t] * 100, tol).item(), rel=1e-5)
        assert no_fine[t].item() == pytest.approx(l1.item(), rel=1e-5)
    assert full[1] < no_fine[1]


# -- training step ---------------------------------------------------------------------------------------------
def test_training_step_on_sampler_batches_and_fallback():
    model = tiny(steps=2).train()
    mos = np.random.default_rng(0).uniform(0, 1, 40)
    sampler = REQA.make_train_sampler(mos, 10, seed=0)
    assert isinstance(sampler, ScaleMicroBatchSampler)
    idx = next(iter(sampler))
    batch = {"image": images(40)[idx], "mos_norm": torch.as_tensor(mos[idx], dtype=torch.float32)[:, None]}
    loss = model.training_step(batch, StepContext(epoch=0, epochs=4))
    assert loss.dim() == 0 and math.isfinite(loss.item())
    loss.backward()
    assert model.backbone.conv_stem.weight.grad.abs().sum() > 0
    # the coarse term sees the micro-batch structure: shuffling images across micro-batches changes the loss
    with torch.no_grad():
        terms = model.loss_terms(model.forward_steps(batch["image"]), batch["mos_norm"])
        perm = torch.tensor([0, 5, 1, 6, 2, 7, 3, 8, 4, 9])
        mixed = model.loss_terms(model.forward_steps(batch["image"][perm]), batch["mos_norm"][perm])
    assert terms[0].item() != pytest.approx(mixed[0].item())
    torch.testing.assert_close(terms[1], mixed[1])  # the fine term is order-free
    # a batch that is not made of micro-batches (7 images) trains with L1 in place of the coarse term
    odd = {"image": images(7), "mos_norm": torch.rand(7, 1)}
    assert math.isfinite(model.training_step(odd, StepContext(epoch=1, epochs=4)).item())


def test_missing_mos_skips_micro_batch():
    model = tiny(steps=2).eval()
    target = torch.rand(10, 1)
    target[2, 0] = float("nan")
    with torch.no_grad():
        steps = model.forward_steps(images(10))
        terms = model.loss_terms(steps, target)
    assert all(math.isfinite(t.item()) for t in terms)
    only_second = coarse_loss(target[5:].T, steps[0, 5:].T) * 100
    assert terms[0].item() == pytest.approx(only_second.item(), rel=1e-5)


def test_param_groups_split_backbone_at_ratio():
    model = tiny(backbone_lr_ratio=0.1)
    groups = model.param_groups(2e-4)
    assert [g["lr"] for g in groups] == pytest.approx([2e-5, 2e-4])
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in model.backbone.parameters()} == {id(p) for p in groups[0]["params"]}


# -- through the engine -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_engine_trains_reqa_with_the_micro_batch_sampler(project, toy_dataset, monkeypatch):
    import shutil

    from iqalab.config import parse_params
    from iqalab.train import engine

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    seen: list[int] = []
    original = REQA.training_step

    def spy(self, batch, ctx):
        seen.append(batch["image"].shape[0])
        return original(self, batch, ctx)

    monkeypatch.setattr(REQA, "training_step", spy)
    model = {"name": "reqa", **TINY, "steps": 2}
    params = parse_params(toy_params(e={"dataset": "toy", "model": model, "train": {"epochs": 2, "batch_size": 10}}))
    preds = engine.train_experiment(params, "e", project.root, progress=False)
    assert seen and all(n % 5 == 0 for n in seen)
    assert np.isfinite(preds.pred).all()


def test_prediction_scores_the_training_crop_size_not_the_whole_image():
    """Test-time input (issue #27): the backbone sees only test_crop x test_crop crops, and the score is the mean
    of F_T over them; the old behaviour scored the whole 80 px image, a size never seen in training."""
    model = REQA(["overall"], **(REQA.smoke_params | {"test_crop": 48, "test_crops": 3})).eval()
    seen: list[tuple[int, int]] = []
    handle = model.backbone.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    torch.manual_seed(0)
    image = torch.randn(2, 3, 80, 80)
    pred = model.predict({"image": image})["overall"]
    handle.remove()
    assert seen == [(48, 48)] * 3
    windows = model.test_windows(80, 80)
    assert len(set(windows)) == 3 and windows == model.test_windows(80, 80)
    expected = torch.stack([model.forward_steps(image[..., y:y + h, x:x + w])[-1][:, 0]
                            for y, x, h, w in windows]).mean(dim=0)
    assert torch.allclose(pred, expected, atol=1e-6)
    assert model.test_windows(40, 40) == [(0, 0, 40, 40)]
    centre = REQA(["overall"], **(REQA.smoke_params | {"test_crop": 48, "test_crops": 1}))
    assert centre.test_windows(80, 80) == [(16, 16, 48, 48)]


def test_test_crop_null_scores_the_whole_image():
    """docs/deviations.md: ``test_crop: null`` switches back to scoring the whole image: the backbone sees the full
    input once, even one larger than the default 224 (``test_crops`` is then moot), the score is F_T of the whole
    image, and pixels outside the centre 48 px crop move it, which they cannot do with ``test_crop: 48`` and one
    (centre) crop."""
    whole = tiny(test_crop=None, test_crops=3).eval()
    centre = tiny(test_crop=48, test_crops=1).eval()
    centre.load_state_dict(whole.state_dict())
    seen: list[tuple[int, int]] = []
    handle = whole.backbone.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    image = torch.randn(1, 3, 232, 240, generator=torch.Generator().manual_seed(1))
    pred = whole.predict({"image": image})["overall"]
    handle.remove()
    assert seen == [(232, 240)] and whole.test_windows(232, 240) == [(0, 0, 232, 240)]
    with torch.no_grad():
        assert torch.allclose(pred, whole({"image": image})["overall"], atol=1e-6)
    (y, x, h, w), = centre.test_windows(232, 240)
    outside = 3 * torch.randn(image.shape, generator=torch.Generator().manual_seed(2))
    outside[..., y:y + h, x:x + w] = image[..., y:y + h, x:x + w]  # the same centre crop, the rest redrawn
    assert not torch.allclose(whole.predict({"image": outside})["overall"], pred, atol=1e-4)
    torch.testing.assert_close(centre.predict({"image": outside})["overall"], centre.predict({"image": image})["overall"])
