"""Training engine on the toy dataset: predictions, checkpoints, exact resume, clear checkpoint errors."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import torch

from iqalab.config import parse_params
from iqalab.models.backbones import PretrainedUnavailable, create_backbone
from iqalab.train.engine import (
    PREDICTION_COLUMNS,
    CheckpointError,
    cpu_native_bf16,
    load_checkpoint,
    model_from_checkpoint,
    train_experiment,
)

from .conftest import TOY_CACHE, toy_params

TINY = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 16}


def _setup(project, toy_dataset, **train):
    dest = project.root / "build" / "datasets" / "toy"
    shutil.copytree(toy_dataset.root, dest)
    return parse_params(toy_params(e={"dataset": "toy", "model": TINY, "train": train}))


@pytest.mark.parametrize("max_side", [None, 48])
def test_the_native_store_cap_is_recorded_with_the_predictions(project, toy_dataset, max_side):
    """The predictions JSON records the cap of the native store the run read (``max_side``; null: full
    resolution), which the captions name, and the checkpoint carries it for scoring."""
    from iqalab.data.cache import build_cache
    from iqalab.data.schema import read_dataset
    from iqalab.train.engine import load_checkpoint

    params = _setup(project, toy_dataset, epochs=1)
    if max_side is not None:
        build_cache(read_dataset(project.root / "build" / "datasets" / "toy"), TOY_CACHE, progress=False,
                    max_side=max_side)
    train_experiment(params, "e", project.root, progress=False)
    meta = json.loads((project.root / "results" / "predictions" / "e.json").read_text())
    assert "max_side" in meta and meta["max_side"] == max_side
    config = load_checkpoint(project.root / "build" / "models" / "e" / "scene" / "best.pt")["config"]
    assert config.get("max_side") == max_side


def test_train_writes_predictions_and_checkpoints(project, toy_dataset):
    params = _setup(project, toy_dataset, epochs=2)
    preds = train_experiment(params, "e", project.root, progress=False)
    assert list(preds.columns) == PREDICTION_COLUMNS
    on_disk = pd.read_parquet(project.root / "results" / "predictions" / "e.parquet")
    pd.testing.assert_frame_equal(on_disk, preds)
    test_ids = set(toy_dataset.split_ids("scene", "test"))
    assert set(preds[preds.role == "test"].image_id) == test_ids
    assert set(preds.attribute) == set(toy_dataset.attributes)
    lo, hi = toy_dataset.mos_range
    assert preds.pred.between(lo, hi).all(), "sigmoid outputs mapped back into the MOS range"
    truth = toy_dataset.images.set_index("image_id")
    for attr, part in preds.groupby("attribute"):  # each row's MOS is its own image's
        np.testing.assert_allclose(part.mos.to_numpy(), truth.loc[part.image_id, f"mos_{attr}"].to_numpy())
    run_dir = project.root / "build" / "models" / "e" / "scene"
    history = json.loads((run_dir / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1] and all("val_srcc" in h for h in history)
    ckpt = load_checkpoint(run_dir / "best.pt")
    model = model_from_checkpoint(ckpt)
    assert model.attributes == toy_dataset.attributes


def test_resume_after_interruption_matches_uninterrupted(project, toy_dataset):
    params = _setup(project, toy_dataset, epochs=3)
    full = train_experiment(params, "e", project.root, progress=False)
    run_dir = project.root / "build" / "models" / "e" / "scene"
    full_history = json.loads((run_dir / "history.json").read_text())["history"]
    shutil.rmtree(project.root / "build" / "models")
    # interrupted run: only 1 epoch done, then resumed with the same config up to 3
    short = parse_params(toy_params(e={"dataset": "toy", "model": TINY, "train": {"epochs": 3}}))
    state_after_one = None

    import iqalab.train.engine as engine

    from .conftest import killed_after_epochs

    with killed_after_epochs(1), pytest.raises(KeyboardInterrupt):
        train_experiment(short, "e", project.root, progress=False)
    state_after_one = load_checkpoint(run_dir / "last.pt")
    assert state_after_one["epoch"] == 0
    trained_epochs = []  # README "a fault costs at most the current epoch": the resumed run trains epochs 1 and 2 only
    iterate = engine._iterate_train

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        trained_epochs.append(kwargs.get("desc", args[-1] if args else None))
        return iterate(*args, **kwargs)

    engine._iterate_train = counting
    try:
        resumed = train_experiment(short, "e", project.root, progress=False)
    finally:
        engine._iterate_train = iterate
    assert len(trained_epochs) == 2, trained_epochs
    resumed_history = json.loads((run_dir / "history.json").read_text())["history"]
    assert [h["epoch"] for h in resumed_history] == [0, 1, 2]
    for a, b in zip(full_history, resumed_history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(full.pred.to_numpy(), resumed.pred.to_numpy(), rtol=1e-5, atol=1e-6)


def test_checkpoint_of_another_model_names_the_keys(project, toy_dataset):
    params = _setup(project, toy_dataset, epochs=1)
    train_experiment(params, "e", project.root, progress=False)
    ckpt = load_checkpoint(project.root / "build" / "models" / "e" / "scene" / "best.pt")
    ckpt["config"]["model_kwargs"]["hidden"] = 32  # a model the weights do not fit
    with pytest.raises(CheckpointError, match=r"does not fit model 'backbone_mlp'.*keys with another shape"):
        model_from_checkpoint(ckpt, "best.pt")
    del ckpt["model"]
    with pytest.raises(CheckpointError, match="not an iqalab checkpoint"):
        model_from_checkpoint(ckpt, "best.pt")


def test_truncated_checkpoint_refused(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"model": {"w": torch.zeros(100)}}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="best.pt: cannot be loaded"):
        load_checkpoint(path)


def test_pretrained_offline_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(PretrainedUnavailable, match=r"pretrained: /path/to/resnet18.pth"):
        create_backbone("resnet18", pretrained=True)
    assert time.monotonic() - start < 5


def test_pretrained_from_local_file(tmp_path):
    reference = create_backbone("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    loaded = create_backbone("resnet18", pretrained=str(path))
    for (name, a), b in zip(reference.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_pretrained_local_file_for_feature_maps(tmp_path):
    reference = create_backbone("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    features = create_backbone("resnet18", pretrained=str(path), features_only=True)
    x = torch.randn(1, 3, 64, 64)
    reference.eval()
    features.eval()
    with torch.no_grad():
        pooled = reference(x)
        last = features(x)[-1].mean(dim=(2, 3))
    torch.testing.assert_close(pooled, last)


def test_pretrained_wrong_file_names_it(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"something": torch.zeros(3)}, path)
    with pytest.raises(PretrainedUnavailable, match="other.pth"):
        create_backbone("resnet18", pretrained=str(path))


def test_constant_predictions_leave_null_in_history(project, toy_dataset, monkeypatch):
    """A model whose validation scores are constant has no SRCC (NaN): training completes, history says null."""
    import warnings

    from iqalab.models import get_model_class
    from iqalab.plots import learning_curves

    cls = get_model_class("backbone_mlp")

    def constant(self, batch):
        return {a: torch.full((batch["image"].shape[0],), 0.5) for a in self.attributes}

    monkeypatch.setattr(cls, "predict", constant)
    params = _setup(project, toy_dataset, epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preds = train_experiment(params, "e", project.root, progress=False)
    lo, hi = toy_dataset.mos_range
    np.testing.assert_allclose(preds.pred, lo + 0.5 * (hi - lo))  # the mid-point of the range: norm x (hi - lo) + lo
    history = json.loads((project.root / "build" / "models" / "e" / "scene" / "history.json").read_text())
    assert [h["val_srcc"] for h in history["history"]] == [None, None]
    fig = learning_curves(project.root / "build" / "models" / "e")
    assert fig is not None


def test_subsampled_pairs_keep_every_attribute_of_a_kept_image_pair():
    """max_pairs counts image pairs (PairItems' unit) and a kept pair keeps all its attribute rows (Eq. 11 sums
    over them); fine pairs come first. Cutting rows instead would keep 7 rows here, splitting pairs."""
    from iqalab.train.engine import _subsample_pairs

    rows = []
    for k in range(6):  # 6 image pairs x 3 attributes; pairs 4 and 5 carry one fine row each
        for attr in ("overall", "face", "noise"):
            rows.append((f"a{k}", f"b{k}", attr, 1.0, k >= 4 and attr == "face"))
    rows.append(("a0", "outside", "overall", 1.0, True))  # an image outside the training images: never kept
    pairs = pd.DataFrame(rows, columns=["image_a", "image_b", "attribute", "p", "fine"])
    train = {f"a{k}" for k in range(6)} | {f"b{k}" for k in range(6)}
    kept = _subsample_pairs(pairs, train, limit=3, seed=0)
    per_pair = kept.groupby(["image_a", "image_b"])["attribute"].apply(sorted)
    assert len(per_pair) == 3
    assert all(attrs == ["face", "noise", "overall"] for attrs in per_pair)
    assert {("a4", "b4"), ("a5", "b5")} <= set(per_pair.index)
    assert "outside" not in set(kept["image_b"])
    assert kept.equals(_subsample_pairs(pairs, train, limit=3, seed=0))
    assert len(_subsample_pairs(pairs, train, limit=100, seed=0)) == 18


def test_scene_median_srcc_is_the_median_of_per_scene_srcc():
    """FHIQA's criterion by hand: scene 0 in order (1), scene 1 reversed (-1), scene 2 one swap (0.5), scene 3
    has 2 images (left out); the median is 0.5, while the pooled SRCC over all images is another number."""
    from iqalab.train.engine import mean_srcc, scene_median_srcc

    target = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 5, 6], float)[:, None]
    pred = np.array([1, 2, 3, 3, 2, 1, 2, 1, 3, 9, 0], float)[:, None]
    scenes = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3])
    assert scene_median_srcc(pred, target, scenes) == pytest.approx(0.5)
    assert mean_srcc(pred, target) != pytest.approx(0.5)


def test_monitor_last_keeps_every_epoch_and_val_scene_srcc_is_maximised():
    from iqalab.train.engine import monitor_score

    assert monitor_score({"epoch": 3, "train_loss": 9.0}, "last") > monitor_score({"epoch": 2, "train_loss": 0.1},
                                                                                 "last")
    good, bad = {"epoch": 0, "val_scene_srcc": 0.8}, {"epoch": 1, "val_scene_srcc": 0.2}
    assert monitor_score(good, "val_scene_srcc") > monitor_score(bad, "val_scene_srcc")
    assert monitor_score({"epoch": 0, "train_loss": 0.5, "val_scene_srcc": 0.1}, "train_loss") == -0.5
    assert monitor_score({"epoch": 0, "val_srcc": float("nan")}, "val_srcc") == -float("inf")


def test_a_val_monitor_without_val_images_is_refused_and_the_selection_is_recorded(project, toy_dataset):
    """No silent fallback to the training loss: a ``val_*`` monitor on a split without val images (here
    ``val_images: train``) refuses in one line before training; ``train_loss`` chosen explicitly trains, and
    the predictions JSON records how the kept weights were chosen, which the captions state."""
    from iqalab.paper_tables.common import selection_notes

    refused = _setup(project, toy_dataset, epochs=1, val_images="train")
    with pytest.raises(ValueError, match=r"^experiments\.e\.train\.monitor: 'val_srcc' needs val images, and "
                                         r"split 'scene' of dataset 'toy' has none \(val_images: train"):
        train_experiment(refused, "e", project.root, progress=False)
    assert not (project.root / "results" / "predictions" / "e.json").exists()
    assert not (project.root / "build" / "models" / "e" / "scene" / "best.pt").exists()

    chosen = parse_params(toy_params(e={"dataset": "toy", "model": TINY,
                                        "train": {"epochs": 1, "val_images": "train", "monitor": "train_loss"}}))
    train_experiment(chosen, "e", project.root, progress=False)
    meta = json.loads((project.root / "results" / "predictions" / "e.json").read_text())
    assert meta["model_selection"] == "lowest training loss"
    assert selection_notes({"e": meta}, {"e": "Tiny"}) == [
        "weights of the epoch with the lowest training loss (train.monitor: train_loss), not selected on validation "
        "images: Tiny"]
    assert selection_notes({"e": meta | {"model_selection": "best val SRCC"}}, {"e": "Tiny"}) == []


def test_select_ids_camera_complete_subset_and_val_images_trained_on(toy_dataset):
    """FineLive-p: only images with all seven camera parameters, in every role; val_images=train: the val
    images join the training images and no role 'val' is left."""
    import copy

    from iqalab.config import TrainConfig
    from iqalab.data.schema import CAM_COLUMNS
    from iqalab.train.engine import select_ids

    ds = copy.copy(toy_dataset)
    ds.images = toy_dataset.images.copy()
    complete = ds.images["image_id"].iloc[::2].tolist()
    ds.images.loc[ds.images["image_id"].isin(complete), list(CAM_COLUMNS)] = 1.0
    every = select_ids(ds, "scene", TrainConfig())
    sub = select_ids(ds, "scene", TrainConfig(subset="camera_complete"))
    for role in ("train", "val", "test"):
        assert sub[role] == [i for i in every[role] if i in set(complete)]
    assert sub["train"] and len(sub["train"]) < len(every["train"])
    merged = select_ids(ds, "scene", TrainConfig(val_images="train"))
    assert merged["train"] == every["train"] + every["val"] and merged["val"] == []
    assert merged["test"] == every["test"]


def test_val_images_trained_on_leave_no_val_predictions(project, toy_dataset):
    params = _setup(project, toy_dataset, epochs=2, val_images="train", monitor="last")
    preds = train_experiment(params, "e", project.root, progress=False)
    assert set(preds.role) == {"test"}
    history = json.loads((project.root / "build" / "models" / "e" / "scene" / "history.json").read_text())
    assert all("val_srcc" not in h for h in history["history"])
    best = load_checkpoint(project.root / "build" / "models" / "e" / "scene" / "best.pt")
    assert best["epoch"] == 1, "monitor 'last' keeps the last epoch's weights"


def test_cpu_autocast_needs_native_bf16_and_the_opt_in(monkeypatch):
    """bf16 autocast applies on CUDA with train.amp; on a CPU only with train.cpu_amp as well and where the CPU has
    native bf16 units (AMX or AVX512_BF16); what applied, and on which units, is what the predictions JSON
    records."""
    from iqalab.config import TrainConfig
    from iqalab.train import engine

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    default, opted, off = TrainConfig(), TrainConfig(cpu_amp=True), TrainConfig(cpu_amp=True, amp=False)
    for units in (None, "AMX", "AVX512_BF16"):
        monkeypatch.setattr(engine, "cpu_native_bf16", lambda units=units: units)
        amx = units is not None
        assert not engine.autocast_in_effect(default, cpu) and not engine.autocast_in_effect(off, cpu)
        assert engine.autocast_in_effect(opted, cpu) is amx
        assert engine.autocast_in_effect(default, cuda) and not engine.autocast_in_effect(off, cuda)
        assert engine.training_precision(opted, cpu) == (
            f"bf16 autocast, channels_last (CPU with {units}); fp32 predictions" if amx else "fp32")
        assert engine.training_precision(opted, cpu, trainable=False) == "fp32 (not trained)"
        # channels_last: on CUDA with or without autocast, on a CPU only under autocast
        assert engine.channels_last_in_effect(off, cuda) and engine.channels_last_in_effect(default, cuda)
        assert not engine.channels_last_in_effect(TrainConfig(amp=False, channels_last=False), cuda)
        assert engine.channels_last_in_effect(opted, cpu) is amx and not engine.channels_last_in_effect(off, cpu)
        assert engine.training_precision(off, cuda) == "fp32, channels_last (CUDA)"
        assert engine.training_precision(default, cuda) == "bf16 autocast, channels_last (CUDA); fp32 predictions"
        assert engine.training_precision(default, cpu) == "fp32"


@pytest.mark.skipif(cpu_native_bf16() is None, reason="CPU autocast needs native bf16 units (AMX or AVX512_BF16)")
def test_cpu_amp_trains_in_bf16_and_records_it(project, toy_dataset):
    """With train.cpu_amp on a CPU with native bf16 the run trains under bf16 autocast in channels_last, predicts in fp32
    (finite predictions in the MOS range) and says so in the predictions JSON; the default run says fp32."""
    params = _setup(project, toy_dataset, epochs=1, cpu_amp=True)
    preds = train_experiment(params, "e", project.root, progress=False)
    meta = json.loads((project.root / "results" / "predictions" / "e.json").read_text())
    assert meta["train_precision"] == f"bf16 autocast, channels_last (CPU with {cpu_native_bf16()}); fp32 predictions"
    lo, hi = toy_dataset.mos_range
    assert preds.pred.between(lo, hi).all() and preds.pred.dtype == np.float64
    plain = parse_params(toy_params(e={"dataset": "toy", "model": TINY, "train": {"epochs": 1}}))
    train_experiment(plain, "e", project.root, progress=False)  # another configuration: trained anew
    assert json.loads((project.root / "results" / "predictions" / "e.json").read_text())["train_precision"] == "fp32"


def test_every_optimizer_name_builds_its_optimizer_and_an_unknown_one_lists_the_names():
    """The engine builds each of ``config.OPTIMIZERS`` (the ``train.optimizer`` names) and refuses another name,
    from ``train`` or from a model's optimiser phase, listing them."""
    from iqalab.config import OPTIMIZERS, TrainConfig
    from iqalab.models import build_model
    from iqalab.models.base import OptimizerPhase
    from iqalab.train.engine import _optimizer, optimizer_phases

    model = build_model("backbone_mlp", ["overall"], backbone=TINY["backbone"], hidden=TINY["hidden"])
    built = {name: type(_optimizer(model, TrainConfig(optimizer=name))) for name in OPTIMIZERS}
    assert built == {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    assert type(_optimizer(model, TrainConfig(optimizer="adamw"), "sgd")) is torch.optim.SGD  # a phase's choice
    with pytest.raises(ValueError, match="optimizer 'rmsprop': one of adamw, adam, sgd"):
        _optimizer(model, TrainConfig(), "rmsprop")
    model.optimizer_phases = lambda: [OptimizerPhase(0, "sgd"), OptimizerPhase(1, "rmsprop")]
    with pytest.raises(ValueError, match="here: optimizer phase with optimizer 'rmsprop': one of adamw, adam, sgd"):
        optimizer_phases(model, 3, "here")
