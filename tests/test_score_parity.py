"""``iqalab score`` against the training engine for a model that reads more than pixels: a small TuningIQA
(``pretrained: false``, smoke sizes) with an ``eval_crop``, person boxes and the seven camera parameters.

The README states that the scores equal the engine's predictions within 1e-5 MOS units (tested in
``tests/test_score.py`` for ``backbone_mlp`` without crop, boxes or camera). Here, after one epoch of training, the
scores of the dataset's test files equal the engine's test predictions (``results/predictions``), the model gets the
very person boxes the engine's evaluation items give it (mapped into the centre-cropped frame), and the camera
standardisation is the checkpoint's ``cam_stats``. Image files carry no camera parameters, so ``score_images`` (the
command) scores with all seven unknown: it matches the engine on the test images whose parameters are unknown in the
dataset too; ``Scorer.score`` given the dataset's parameters matches it on every test image.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from iqalab.data.schema import CAM_COLUMNS, PERSON_BOX, Dataset, read_dataset, write_dataset

from .conftest import TOY_CACHE, toy_params

ATTRS = ["overall", "sharpness", "noise"]


def _with_boxes_and_cameras(src: Path, root: Path, unknown_camera: list[str]) -> Dataset:
    """A copy of the toy dataset ``src`` at ``root`` where every image has its own person box (inside the centre
    of the frame, so that a crop keeps it) and seven camera parameters (all unknown for ``unknown_camera``); the
    tables are rewritten with their checksums, the image files and the cache are the toy's."""
    shutil.copytree(src, root)
    ds = read_dataset(root)
    images = ds.images.copy()
    rng = np.random.default_rng(7)
    n = len(images)
    x0, y0 = rng.uniform(0.15, 0.45, n), rng.uniform(0.15, 0.45, n)
    images[list(PERSON_BOX)] = np.column_stack([x0, y0, x0 + rng.uniform(0.1, 0.4, n), y0 + rng.uniform(0.1, 0.4, n)])
    low = np.array([1.8, 1 / 1000, 100.0, 3000.0, 0.6, 0.6, 0.0])
    high = np.array([8.0, 1 / 30, 3200.0, 7000.0, 1.6, 1.6, 2.0])
    images[list(CAM_COLUMNS)] = rng.uniform(low, high, (n, len(CAM_COLUMNS)))
    images.loc[images["image_id"].isin(unknown_camera), list(CAM_COLUMNS)] = np.nan
    write_dataset(dataclasses.replace(ds, images=images))
    return read_dataset(root, check_files=True)


def _recorded_boxes(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The pixel person boxes every TuningIQA prediction receives, in call order."""
    from iqalab.models.tuningiqa import TuningIQA

    seen: list[torch.Tensor] = []
    real = TuningIQA.predict

    def predict(self, batch):  # noqa: ANN001, ANN202
        seen.append(batch["person_box"].detach().cpu().clone())
        return real(self, batch)

    monkeypatch.setattr(TuningIQA, "predict", predict)
    return seen


def _engine_boxes(ds: Dataset, ids: list[str], eval_crop: int) -> torch.Tensor:
    """The person boxes of the engine's evaluation items for ``ids`` (pixels of the centre ``eval_crop`` square)."""
    from iqalab.data.cache import ImageCache
    from iqalab.models.tuningiqa import TuningIQA
    from iqalab.train.engine import eval_items_for

    model = TuningIQA(ATTRS, **TuningIQA.smoke_params)
    items = eval_items_for(model, ids, eval_crop, ds=ds, cache=ImageCache(ds, TOY_CACHE), inputs=model.inputs,
                           cam_stats=None)
    return torch.stack([items[k]["person_box"] for k in range(len(ids))])


def _fake_detector(boxes: dict[str, np.ndarray]):  # noqa: ANN202
    """A stand-in for the ingest detector: each file's person box as the dataset records it, no face."""
    from iqalab.data import detect

    def detect_one(path, **_kwargs):  # noqa: ANN001, ANN202
        row = {c: float("nan") for c in (*detect.COLUMNS, *detect.SCORES)}
        return row | dict(zip(PERSON_BOX, map(float, boxes[Path(path).name]), strict=True))

    return detect_one


@pytest.mark.slow
def test_tuningiqa_scores_with_crop_boxes_and_camera_equal_the_engines(project, toy_dataset, monkeypatch) -> None:
    """About 15 s on one core: one epoch of a smoke-size TuningIQA, then three scorings of the 5 test files."""
    from iqalab.config import parse_params
    from iqalab.data import detect
    from iqalab.inference import Scorer
    from iqalab.models.tuningiqa import TuningIQA
    from iqalab.stages.score import REGIONS_DETECTED, score_images
    from iqalab.train.engine import train_experiment

    eval_crop = 48  # of the 64 px cache: pixels and boxes shifted by 8 px
    test_ids = sorted(toy_dataset.split_ids("scene", "test"))
    assert len(test_ids) >= 4
    unknown = test_ids[::2]  # half the test images without camera parameters, the other half with all seven
    ds = _with_boxes_and_cameras(toy_dataset.root, project.root / "build" / "datasets" / "toy", unknown)
    assert ds.attributes == ATTRS

    model = {"name": "tuningiqa", **TuningIQA.smoke_params, "pretrained": False}
    params = parse_params(toy_params(e={"dataset": "toy", "model": model,
                                        "train": {"epochs": 1, "eval_crop": eval_crop}}))
    preds = train_experiment(params, "e", project.root, progress=False)
    engine = preds[preds["role"] == "test"].pivot(index="image_id", columns="attribute", values="pred")
    engine = engine.loc[test_ids, ATTRS]
    (ckpt,) = (project.root / "build" / "models" / "e").glob("*/best.pt")

    table = ds.images.set_index("image_id").loc[test_ids]
    files = [ds.image_path(str(p)) for p in table["path"]]
    boxes = {f.name: table.loc[i, list(PERSON_BOX)].to_numpy(float) for f, i in zip(files, test_ids, strict=True)}
    expected_boxes = _engine_boxes(ds, test_ids, eval_crop)
    assert expected_boxes.min() > 0 and expected_boxes.max() < eval_crop, "boxes inside the crop, not clamped"

    # the command's path: files decoded as the cache, regions "detected" (the dataset's boxes), camera unknown
    monkeypatch.setattr(detect, "detect_one", _fake_detector(boxes))
    seen = _recorded_boxes(monkeypatch)
    for batch_size in (1, 3):
        seen.clear()
        frame = score_images(ckpt, files, progress=False, device="cpu", batch_size=batch_size, detect_regions=True,
                             allow_missing_camera=True)
        assert frame["path"].tolist() == [str(f) for f in files]
        assert set(frame["regions"]) == {REGIONS_DETECTED}
        torch.testing.assert_close(torch.cat(seen), expected_boxes, rtol=0, atol=1e-5)
        scored = frame.set_axis(test_ids)[ATTRS]
        np.testing.assert_allclose(scored.loc[unknown].to_numpy(), engine.loc[unknown].to_numpy(), rtol=0, atol=1e-5)

    # the Python scorer given the dataset's camera parameters: every test image, known or unknown camera
    scorer = Scorer(ckpt, "cpu")
    assert scorer.crop == eval_crop and scorer.cam_stats is not None
    decoded = [scorer.decode(f) for f in files]
    cams = table[list(CAM_COLUMNS)].to_numpy(float)
    with_camera = scorer.score(decoded, cam=cams, person_boxes=table[list(PERSON_BOX)].to_numpy(float),
                               batch_size=4, prepared=True)
    np.testing.assert_allclose(pd.DataFrame(with_camera)[ATTRS].to_numpy(), engine.to_numpy(), rtol=0, atol=1e-5)

    # the comparison can fail: the known camera parameters move the scores far beyond the tolerance
    known = [test_ids.index(i) for i in test_ids if i not in unknown]
    blind = scorer.score([decoded[k] for k in known], person_boxes=table[list(PERSON_BOX)].to_numpy(float)[known])
    assert np.abs(pd.DataFrame(blind)[ATTRS].to_numpy() - engine.to_numpy()[known]).max() > 1e-4


@pytest.mark.parametrize("eval_crop", [48, 49])  # 49: an odd size - crop, where a half-pixel shift showed
def test_scorer_boxes_are_the_engines_evaluation_boxes(tmp_path, toy_dataset, monkeypatch, eval_crop) -> None:
    """No training: an untrained checkpoint with ``eval_crop`` and ``cam_stats``; the person boxes ``Scorer.score``
    gives the model equal the engine's evaluation items' boxes, and the scores equal ``predict_items``'s."""
    from iqalab.data.cache import ImageCache
    from iqalab.data.loaders import CamStats
    from iqalab.inference import Scorer
    from iqalab.models import build_model
    from iqalab.models.tuningiqa import TuningIQA
    from iqalab.train.engine import eval_items_for, predict_items, save_checkpoint

    ds = _with_boxes_and_cameras(toy_dataset.root, tmp_path / "toy", [])
    ids = ds.images["image_id"].astype(str).tolist()[:6]
    stats = CamStats.fit(ds.images)
    kwargs = dict(TuningIQA.smoke_params)
    model = build_model("tuningiqa", ATTRS, **kwargs).eval()
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": {
        "model_name": "tuningiqa", "model_kwargs": kwargs, "attributes": ATTRS, "mos_range": [1.0, 5.0],
        "cache_size": TOY_CACHE, "eval_crop": eval_crop, "cam_stats": {"mean": stats.mean, "std": stats.std}}})
    items = eval_items_for(model, ids, eval_crop, ds=ds, cache=ImageCache(ds, TOY_CACHE), inputs=model.inputs,
                           cam_stats=stats)
    engine = np.asarray(predict_items(model, items, 4, torch.device("cpu"))) * 4.0 + 1.0  # mos_range [1, 5]

    seen = _recorded_boxes(monkeypatch)
    scorer = Scorer(ckpt, "cpu")
    table = ds.images.set_index("image_id").loc[ids]
    scores = scorer.score([scorer.decode(ds.image_path(str(p))) for p in table["path"]], prepared=True,
                          cam=table[list(CAM_COLUMNS)].to_numpy(float),
                          person_boxes=table[list(PERSON_BOX)].to_numpy(float), batch_size=4)
    torch.testing.assert_close(torch.cat(seen), torch.stack([items[k]["person_box"] for k in range(len(ids))]),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(pd.DataFrame(scores)[ATTRS].to_numpy(), engine, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cap", [
    66,  # under the toy's 72 px side, over the 64 px cache: the usual case (a cap far above the model's input)
    40,  # under the 64 px cache: the store caps to 40 and resizes up to 64; scoring must not cap the square again
])
def test_a_capped_stores_max_side_reaches_the_checkpoint_and_scoring_without_hand_editing(project, cap) -> None:
    """README ("What it costs", "Where images live"): a dataset's ``max_side`` (``datasets.<name>.max_side``)
    caps its native store, is recorded in every checkpoint trained on it (``config.max_side``), and ``iqalab
    score`` prepares a file exactly as the capped store. Here the cap comes from params through the real ingest
    stage and the real engine (no checkpoint edited by hand; ``tests/test_score.py`` writes it by hand): the
    checkpoint records it, and scoring the dataset's original 72 px files gives the engine's test predictions
    within 1e-5. Every toy image is shrunk by the cap before the 64 px square resize, so a scorer that ignored
    the cap (72 -> 64 directly) scores other pixels: checked too, so the comparison can fail. The model is
    resnet18 barely trained (one epoch at lr 1e-5), so that its scores still differ from image to image."""
    from iqalab.config import parse_params
    from iqalab.data.cache import ImageCache
    from iqalab.stages import ingest
    from iqalab.stages.score import score_images
    from iqalab.train.engine import load_checkpoint, save_checkpoint, train_experiment

    model = {"name": "backbone_mlp", "backbone": "resnet18", "hidden": 8}
    raw = toy_params(e={"dataset": "toy", "model": model, "train": {"epochs": 1, "lr": 1e-5}})
    raw["datasets"]["toy"]["max_side"] = cap
    params = parse_params(raw)
    ds = ingest.run(params, "toy", project.root, progress=False)
    store = ImageCache(ds, TOY_CACHE)
    assert store.max_side == cap and max(store.native.shape(0)) == cap, "the store was built with the params' cap"

    preds = train_experiment(params, "e", project.root, progress=False)
    (ckpt,) = (project.root / "build" / "models" / "e").glob("*/best.pt")
    state = load_checkpoint(ckpt)
    assert state["config"].get("max_side") == cap

    attrs = ds.attributes
    test_ids = sorted(ds.split_ids(ckpt.parent.name, "test"))
    engine = preds[preds["role"] == "test"].pivot(index="image_id", columns="attribute", values="pred")
    engine = engine.loc[test_ids, attrs].to_numpy()
    assert np.ptp(engine, axis=0).min() > 1e-4, "the images get different scores"
    files = [ds.image_path(str(p)) for p in ds.images.set_index("image_id").loc[test_ids, "path"]]
    for batch_size in (1, 4):
        frame = score_images(ckpt, files, progress=False, device="cpu", batch_size=batch_size)
        assert frame["path"].tolist() == [str(f) for f in files]
        np.testing.assert_allclose(frame[attrs].to_numpy(), engine, rtol=0, atol=1e-5)

    # the comparison can fail: the same weights without the recorded cap score the uncapped pixels
    del state["config"]["max_side"]
    uncapped = project.root / "uncapped.pt"
    save_checkpoint(uncapped, state)
    blind = score_images(uncapped, files, progress=False, device="cpu")
    assert np.abs(blind[attrs].to_numpy() - engine).max() > 1e-4
