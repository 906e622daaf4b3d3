"""DBCNN (Zhang et al., TCSVT 2020): S-CNN layout, bilinear pooling against a hand computation, head size,
gradients to both streams, the frozen-streams phase, S-CNN weight loading and a run through the engine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from iqalab.models import build_model, get_model_class
from iqalab.models.backbones import PretrainedUnavailable
from iqalab.models.base import StepContext
from iqalab.models.dbcnn import DBCNN, SCNN, SCNN_CHANNELS, SCNN_STRIDES, bilinear_pool
from iqalab.train.engine import load_checkpoint

ATTRS = ["overall", "noise", "color"]
SMOKE = dict(get_model_class("dbcnn").smoke_params)


def _model(**overrides) -> DBCNN:
    torch.manual_seed(0)
    return build_model("dbcnn", ATTRS, **{**SMOKE, **overrides})


def _batch(n: int = 3, size: int = 64) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(n, 3, size, size, generator=g), "mos_norm": torch.rand(n, len(ATTRS), generator=g)}


def _hand_bilinear(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sec. III-C by loops: B[c1, c2] = mean over locations of a[c1] * b[c2]; signed sqrt; l2 normalisation."""
    n, c1, h, w = a.shape
    c2 = b.shape[1]
    out = np.zeros((n, c1 * c2))
    for i in range(n):
        for p in range(c1):
            for q in range(c2):
                out[i, p * c2 + q] = sum(a[i, p, y, x] * b[i, q, y, x] for y in range(h) for x in range(w)) / (h * w)
    out = np.sign(out) * np.sqrt(np.abs(out))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_bilinear_pool_equals_hand_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3, 2, 3))  # signed values: the signed square root matters
    b = rng.normal(size=(2, 4, 2, 3))
    got = bilinear_pool(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, _hand_bilinear(a, b), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-12)


def test_bilinear_pool_resizes_the_second_map_to_the_first():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1, 2, 2, 2))
    b = rng.normal(size=(1, 3, 4, 4))
    # the release's F.upsample_bilinear aligns corners: 4 -> 2 samples rows and columns 0 and 3 exactly
    # (align_corners=False, iqalab until 2026-12-04, averaged each 2x2 block)
    b_small = b[:, :, [0, 3]][:, :, :, [0, 3]]
    got = bilinear_pool(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, _hand_bilinear(a, b_small), atol=1e-6)


def test_bilinear_pool_takes_the_release_root_of_zero_products():
    """DBCNN.py: sqrt(X + 1e-8) on the (non-negative) pooled map, so a zero product becomes 1e-4 before the
    normalisation, not 0 (sign(0) = 0 would drop it)."""
    a = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    a[0, 0] = 1.0  # channel 1 of a is zero everywhere: its products are 0
    b = torch.ones(1, 2, 2, 2, dtype=torch.float64)
    raw = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    expected = torch.nn.functional.normalize(torch.sqrt(raw + 1e-8), dim=1)
    torch.testing.assert_close(bilinear_pool(a, b), expected)
    assert bilinear_pool(a, b)[0, 2] > 0


def test_scnn_follows_the_paper_layout():
    scnn = SCNN()
    convs = [m for m in scnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(SCNN_CHANNELS) == [48, 48, 64, 64, 64, 64, 128, 128, 128]
    assert [c.stride[0] for c in convs] == list(SCNN_STRIDES) and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in scnn.modules()) == 9
    assert scnn(torch.zeros(1, 3, 64, 64)).shape == (1, 128, 4, 4), "128 channels at 1/16 of the input"


def test_output_shapes_range_and_head_size():
    model = _model()
    model.eval()
    out = model(_batch(n=3))
    assert set(out) == set(ATTRS)
    assert all(v.shape == (3,) and bool(((v >= 0) & (v <= 1)).all()) for v in out.values())
    c1, c2 = model.c1, model.c2
    assert c1 == model.backbone.feature_info.channels()[-1] == 512 and c2 == SMOKE["scnn_channels"][-1]
    assert model.features(_batch()["image"]).shape == (3, c1 * c2)
    assert sum(p.numel() for p in model.heads.parameters()) == (c1 * c2 + 1) * len(ATTRS)


def test_gradients_reach_both_streams_and_heads():
    model = _model()
    model.train()
    model.training_step(_batch(), StepContext(epoch=0, epochs=2)).backward()
    for part in (model.backbone, model.scnn, model.heads):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_frozen_phase_trains_the_heads_only():
    model = _model(freeze_epochs=1)
    model.train()
    model.training_step(_batch(), StepContext(epoch=0, epochs=3)).backward()
    assert all(p.grad is None for p in [*model.backbone.parameters(), *model.scnn.parameters()])
    assert all(p.grad is not None for p in model.heads.parameters())
    model.zero_grad(set_to_none=True)
    model.training_step(_batch(), StepContext(epoch=1, epochs=3)).backward()
    assert all(p.grad is not None for p in model.scnn.parameters())


def test_param_groups_scale_the_streams():
    model = _model(stream_lr_scale=0.01)
    streams, heads = model.param_groups(1e-3)
    assert streams["lr"] == pytest.approx(1e-5) and heads["lr"] == pytest.approx(1e-3)
    assert len(streams["params"]) + len(heads["params"]) == len(list(model.parameters()))


def test_fine_tuning_phase_trains_the_heads_at_the_streams_rate():
    """Released DBCNN.py: phase 2 fine-tunes every parameter at one rate (1e-5), the heads included; without a
    head-only phase the groups keep their own rates."""
    assert _model(freeze_epochs=0, stream_lr_scale=0.01).lr_scales(0) is None
    model = _model(freeze_epochs=2, stream_lr_scale=0.01)
    assert model.lr_scales(0) is None and model.lr_scales(1) is None
    assert model.lr_scales(2) == [1.0, 0.01] and model.lr_scales(5) == [1.0, 0.01]


def test_engine_applies_the_phase_rates_for_the_epoch_only(project, toy_dataset, monkeypatch):
    """The engine trains each epoch at the scheduled rates times ``lr_scales`` and hands the scheduler its own rates
    back (a cosine schedule continues as without the factors)."""
    import iqalab.train.engine as engine
    from iqalab.config import parse_params

    from .conftest import toy_params

    seen = []
    original = engine._iterate_train

    def recording(step_module, model, loader, opt, *args, **kwargs):
        seen.append([g["lr"] for g in opt.param_groups])
        return original(step_module, model, loader, opt, *args, **kwargs)

    monkeypatch.setattr(engine, "_iterate_train", recording)
    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = parse_params(toy_params(e={"dataset": "toy", "model": {"name": "dbcnn", **SMOKE, "freeze_epochs": 1,
                                                                    "stream_lr_scale": 0.1},
                                        "train": {"epochs": 3, "lr": 1e-3, "scheduler": "cosine"}}))
    engine.train_experiment(params, "e", project.root, progress=False)
    cosine = [1e-3 * 0.5 * (1 + np.cos(np.pi * e / 3)) for e in range(3)]
    assert seen[0] == pytest.approx([0.1 * cosine[0], cosine[0]])            # heads alone, at lr
    assert seen[1] == pytest.approx([0.1 * cosine[1], 0.1 * cosine[1]])      # all parts at lr x 0.1
    assert seen[2] == pytest.approx([0.1 * cosine[2], 0.1 * cosine[2]])      # the schedule went on unscaled


def test_backbone_stage_out_of_range_names_the_key():
    with pytest.raises(ValueError, match="backbone_stage"):
        _model(backbone_stage=7)


def test_scnn_weights_load_from_the_released_key_layout(tmp_path):
    source = SCNN(SMOKE["scnn_channels"])
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.classifier.weight"] = torch.zeros(39, 256)  # the classification head is ignored
    path = tmp_path / "scnn.pkl"
    torch.save(state, path)
    model = _model(scnn_weights=str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.scnn.state_dict()[key], value)
    wrapped = tmp_path / "wrapped.pkl"  # pyiqa-style nesting, read by the one release reader
    torch.save({"params": state}, wrapped)
    nested = _model(scnn_weights=str(wrapped))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(nested.scnn.state_dict()[key], value)
    wrong = tmp_path / "wrong.pkl"
    torch.save({"module.features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(PretrainedUnavailable, match="scnn_weights: .*wrong.pkl does not fit this S-CNN"):
        _model(scnn_weights=str(wrong))
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedUnavailable, match=r"^model.scnn_weights: .*junk.pkl is not a torch state dict"):
        _model(scnn_weights=str(junk))  # one line naming the key and the file, not torch's unpickling error
    with pytest.raises(PretrainedUnavailable, match=r"^model.scnn_weights: .*missing.pkl not found$"):
        _model(scnn_weights=str(tmp_path / "missing.pkl"))


def test_engine_trains_dbcnn(project, toy_dataset):
    from iqalab.config import parse_params
    from iqalab.train.engine import (
        PREDICTION_COLUMNS,
        load_checkpoint,
        model_from_checkpoint,
        train_experiment,
    )

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = parse_params(toy_params(e={"dataset": "toy", "model": {"name": "dbcnn", **SMOKE},
                                        "train": {"epochs": 1}}))
    preds = train_experiment(params, "e", project.root, progress=False)
    assert list(preds.columns) == PREDICTION_COLUMNS and np.isfinite(preds.pred).all()
    lo, hi = toy_dataset.mos_range
    assert preds.pred.between(lo, hi).all()
    model = model_from_checkpoint(load_checkpoint(project.root / "build" / "models" / "e" / "scene" / "best.pt"))
    assert isinstance(model, DBCNN) and model.attributes == toy_dataset.attributes


def test_fhiqa_table1_has_its_dbcnn_row_in_both_profiles():
    """FHIQA Table I's DB-CNN row (#27): ``dbcnn_portrait`` on portrait_sim with the per-scene protocol; the
    paper profile runs the released protocol (VGG-16 conv5_3 from ImageNet, heads alone for 50 epochs, then all
    at 1e-5, batch 8, whole images) and keeps the epoch FHIQA's criterion selects (median per-scene val SRCC)."""
    from pathlib import Path

    from iqalab.config import load_params

    repo = Path(__file__).resolve().parents[1]
    for path in (repo / "params.yaml", repo / "params" / "paper.yaml"):
        params = load_params(path)
        exp = params.experiment("dbcnn_portrait")
        assert (exp.dataset, exp.protocol, exp.tables, exp.model.name) == \
            ("portrait_sim", "per_scene", ["fhiqa_table1"], "dbcnn"), path
        assert params.train_config("dbcnn_portrait").monitor == "val_scene_srcc", path
    kwargs, train = params.model_kwargs("dbcnn_portrait"), params.train_config("dbcnn_portrait")
    assert (kwargs["backbone"], kwargs["backbone_stage"], kwargs["pretrained"], kwargs["freeze_epochs"]) == \
        ("vgg16", 4, True, 50)
    assert kwargs["stream_lr_scale"] * train.lr == pytest.approx(1e-5)
    assert (train.epochs, train.batch_size, train.crop, train.patience) == (100, 8, None, 0)


def _phase_params(toy_dataset, project, **model):
    from iqalab.config import parse_params

    from .conftest import toy_params

    if not (project.root / "build" / "datasets" / "toy").exists():
        shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    return parse_params(toy_params(e={"dataset": "toy", "model": {"name": "dbcnn", **SMOKE, "freeze_epochs": 2,
                                                                  "stream_lr_scale": 0.1, **model},
                                      "train": {"epochs": 4, "lr": 1e-3, "optimizer": "adam", "scheduler": "none",
                                                "weight_decay": 5e-4}}))


def test_released_protocol_runs_sgd_on_the_heads_then_a_new_adam_from_the_best_head_only_weights(
        project, toy_dataset, monkeypatch):
    """DBCNN.py's two trainings: SGD (momentum 0.9) on the heads for freeze_epochs, then a new Adam on everything
    loaded from the best head-only epoch's weights, selecting its own best epoch."""
    import iqalab.train.engine as engine

    seen = []  # per epoch: the optimiser, its rates, the weights it starts from and ends with
    original = engine._iterate_train

    def recording(step_module, model, loader, opt, *args, **kwargs):
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        loss = original(step_module, model, loader, opt, *args, **kwargs)
        seen.append({"opt": type(opt).__name__, "lr": [g["lr"] for g in opt.param_groups],
                     "momentum": opt.param_groups[0].get("momentum"), "opt_id": id(opt), "start": start,
                     "end": {k: v.detach().clone() for k, v in model.state_dict().items()}})
        return loss

    monkeypatch.setattr(engine, "_iterate_train", recording)
    # the monitor prefers earlier epochs: the best head-only epoch is the first, not the last
    monkeypatch.setattr(engine, "monitor_score", lambda record, monitor: -float(record["epoch"]))
    params = _phase_params(toy_dataset, project, head_optimizer="sgd", restart_from_best=True)
    engine.train_experiment(params, "e", project.root, progress=False)
    assert [s["opt"] for s in seen] == ["SGD", "SGD", "Adam", "Adam"]
    assert seen[0]["momentum"] == 0.9 and seen[0]["opt_id"] == seen[1]["opt_id"] != seen[2]["opt_id"]
    assert seen[0]["lr"] == pytest.approx([1e-4, 1e-3]) and seen[2]["lr"] == pytest.approx([1e-4, 1e-4])
    heads = [k for k in seen[0]["start"] if k.startswith("heads.")]
    assert any(not torch.equal(seen[0]["end"][k], seen[1]["end"][k]) for k in heads)  # epoch 1 moved the heads
    for key, value in seen[2]["start"].items():  # phase 2 starts from the best (first) head-only epoch's weights
        torch.testing.assert_close(value, seen[0]["end"][key])
    # the streams stayed frozen in phase 1 (BN running statistics move, as in the release's train mode)
    weights = [k for k in seen[0]["start"] if k.startswith(("backbone.", "scnn.")) and "running" not in k
               and "num_batches" not in k]
    for key in weights:
        torch.testing.assert_close(seen[1]["end"][key], seen[0]["start"][key])
    best = load_checkpoint(project.root / "build" / "models" / "e" / "scene" / "best.pt")
    assert best["best_epoch"] == 2  # phase 2 selects among its own epochs (epoch 0 scored higher overall)
    history = json.loads((project.root / "build" / "models" / "e" / "scene" / "history.json").read_text())
    assert [h["epoch"] for h in history["history"]] == [0, 1, 2, 3]


def test_released_protocol_resumes_in_the_phase_it_was_killed_in(project, toy_dataset):
    """A kill after the first Adam epoch resumes with the Adam state (not a new SGD) and ends where an
    uninterrupted run ends."""
    import iqalab.train.engine as engine

    from .conftest import killed_after_epochs

    params = _phase_params(toy_dataset, project, head_optimizer="sgd", restart_from_best=True)
    full = engine.train_experiment(params, "e", project.root, progress=False)
    shutil.rmtree(project.root / "build" / "models")
    with killed_after_epochs(3), pytest.raises(KeyboardInterrupt):
        engine.train_experiment(params, "e", project.root, progress=False)
    saved = load_checkpoint(project.root / "build" / "models" / "e" / "scene" / "last.pt")
    assert saved["epoch"] == 2 and "exp_avg" in next(iter(saved["optimizer"]["state"].values()))  # Adam's state
    resumed = engine.train_experiment(params, "e", project.root, progress=False)
    np.testing.assert_allclose(full.pred.to_numpy(), resumed.pred.to_numpy(), rtol=1e-5, atol=1e-6)


def test_linear_head_scores_in_mos_units_and_weighs_the_loss_in_them():
    """head='linear': the release's fc output is in MOS units (mapped onto the normalised scale for the engine) and
    the MSE is the one on the MOS (span**2 times the normalised one)."""
    model = _model(head="linear", mos_range=[1.0, 5.0])
    model.eval()
    image = torch.randn(2, 3, 64, 64)
    feats = model.features(image)
    raw = model.heads["overall"](feats).squeeze(-1)
    torch.testing.assert_close(model({"image": image})["overall"], (raw - 1.0) / 4.0)
    assert model.loss_scale == 16.0 and _model().loss_scale == 1.0
    target = torch.rand(2, len(model.attributes))
    loss = model.training_step({"image": image, "mos_norm": target}, StepContext(epoch=0, epochs=1))
    pred = model({"image": image})
    mos_mse = torch.stack([((4.0 * pred[a] + 1.0 - (4.0 * target[:, k] + 1.0)) ** 2).mean()
                           for k, a in enumerate(model.attributes)]).mean()
    torch.testing.assert_close(loss, mos_mse)
    with pytest.raises(ValueError, match="mos_range"):
        _model(head="linear")
    with pytest.raises(ValueError, match="freeze_epochs"):
        _model(head_optimizer="sgd")
    with pytest.raises(ValueError, match=r"head_optimizer 'rmsprop': null \(train.optimizer\) or one of adamw, adam, sgd"):
        _model(freeze_epochs=3, head_optimizer="rmsprop")
    assert _model(freeze_epochs=3).optimizer_phases() == []  # one optimiser unless asked
    phases = _model(freeze_epochs=3, head_optimizer="sgd", restart_from_best=True).optimizer_phases()
    assert [(p.start, p.optimizer, p.from_best) for p in phases] == [(0, "sgd", False), (3, None, True)]


def test_release_weights_initialise_the_whole_model_from_a_released_dbcnn(tmp_path):
    """model.release_weights: a DBCNN saved by the release (e.g. its LIVE Challenge model, DataParallel names)
    starts the fine-tuning: VGG-16 and S-CNN as saved, the release's fc in every attribute head."""
    from .test_official_dbcnn import random_release_state

    state = random_release_state(seed=5)
    path = tmp_path / "net_params_best.pkl"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    model = build_model("dbcnn", ATTRS, backbone="vgg16", backbone_stage=4, release_weights=str(path))
    own = model.state_dict()
    torch.testing.assert_close(own["backbone.features_28.weight"], state["features1.28.weight"])
    torch.testing.assert_close(own["scnn.features.25.running_var"], state["features2.25.running_var"])
    for attr in ATTRS:
        torch.testing.assert_close(own[f"heads.{attr}.weight"], state["fc.weight"])
        torch.testing.assert_close(own[f"heads.{attr}.bias"], state["fc.bias"])
    assert own["heads.overall.weight"].data_ptr() != own["heads.noise.weight"].data_ptr()  # heads train apart
    with pytest.raises(PretrainedUnavailable, match="does not fit this DBCNN.*vgg16"):
        build_model("dbcnn", ATTRS, **SMOKE, release_weights=str(path))  # another backbone: refused in one line
    with pytest.raises(PretrainedUnavailable, match="release_weights: .*missing.pkl not found"):
        build_model("dbcnn", ATTRS, backbone="vgg16", backbone_stage=4, release_weights=str(tmp_path / "missing.pkl"))
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedUnavailable, match="junk.pkl is not a torch state dict"):
        build_model("dbcnn", ATTRS, backbone="vgg16", backbone_stage=4, release_weights=str(junk))
