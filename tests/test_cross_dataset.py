"""Stage cross_dataset (REQA Table IV, SFIQA Table IV): a model trained on dataset A predicts every image of B."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from scipy.stats import spearmanr

from iqalab.config import parse_params
from iqalab.stages import cross_dataset
from iqalab.train.engine import train_experiment

from .conftest import TOY_CACHE, toy_params

TINY = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 16}


@pytest.fixture
def two_datasets(project, toy_dataset, tmp_path_factory):
    """The shared toy dataset as A and a second toy dataset (other seed) as B, both under the project."""
    from iqalab.data.cache import build_cache
    from iqalab.data.schema import read_dataset
    from iqalab.data.toy import build_toy

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    other = build_toy(project.root / "build" / "datasets" / "toy_b", n_scenes=3, per_scene=4, size=72, seed=5)
    build_cache(read_dataset(other.root), TOY_CACHE, progress=False)
    raw = toy_params(e={"dataset": "toy", "model": TINY, "train": {"epochs": 1}, "tables": ["reqa_table4"]},
                     plain={"dataset": "toy", "model": TINY, "train": {"epochs": 1}})
    raw["datasets"]["toy_b"] = {"source": "toy", "builder": "toy", "cache_size": TOY_CACHE,
                                "options": {"n_scenes": 3, "per_scene": 4, "size": 72}}
    raw["cross_dataset"] = {"attribute": "overall", "device": "cpu"}
    return parse_params(raw), read_dataset(other.root)


def test_cross_dataset_predicts_every_image_of_b_and_writes_table_iv(project, two_datasets):
    params, other = two_datasets
    train_experiment(params, "e", project.root, progress=False)
    train_experiment(params, "plain", project.root, progress=False)  # not tagged: takes no part
    tables = cross_dataset.run(params, project.root)
    out = project.root / "results" / "cross_dataset"
    preds = pd.read_parquet(out / "predictions.parquet")
    assert set(preds.experiment) == {"e"} and set(preds.dataset) == {"toy_b"}
    assert sorted(preds.image_id) == sorted(other.images.image_id) and set(preds.attribute) == {"overall"}
    assert set(preds.role) == {"test"} and set(preds.split) == {"scene"}
    mos = other.images.set_index("image_id").loc[preds.image_id, "mos_overall"].to_numpy()
    assert preds.mos.to_numpy() == pytest.approx(mos)
    table = tables["reqa_table4"].data
    assert list(table.columns) == [("toy → toy_b", "SROCC")]
    assert table.iloc[0, 0] == pytest.approx(spearmanr(preds.pred, preds.mos)[0])
    assert (out / "reqa_table4.md").is_file() and "split scene (no full_train split)" in \
        (out / "reqa_table4.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert [r["test_dataset"] for r in summary["runs"]] == ["toy_b"] and summary["skipped"] == {}


def test_training_checkpoint_prefers_full_train(project):
    root = project.root
    (root / "results" / "predictions").mkdir(parents=True)
    (root / "results" / "predictions" / "e.json").write_text(json.dumps({"splits": ["scene", "full_train"]}))
    for split in ("scene", "full_train"):
        (root / "build" / "models" / "e" / split).mkdir(parents=True)
        (root / "build" / "models" / "e" / split / "best.pt").write_bytes(b"x")
    ckpt, split, why = cross_dataset.training_checkpoint(root, "e")
    assert (split, why) == ("full_train", "") and ckpt == root / "build" / "models" / "e" / "full_train" / "best.pt"
    (root / "results" / "predictions" / "e.json").write_text(json.dumps({"splits": ["scene"]}))
    assert cross_dataset.training_checkpoint(root, "e")[1] == "scene"
    assert cross_dataset.training_checkpoint(root, "missing")[0] is None


# ---------------------------------------------------------------------- no silent fallback on B's inputs (issue 21)
GCPF = {"name": "tuningiqa", "backbone": "mobilenetv3_small_050", "human_backbone": "mobilenetv3_small_050",
        "hfe_dim": 16, "embed_dim": 32, "gcpf_dim": 16, "head_hidden": 16, "use_hfe": False, "use_gcpf": True}
HFE = {**GCPF, "use_hfe": True, "use_gcpf": False}


def _fake_run(root, name, kwargs, ds, eval_crop=None, **meta):
    """A checkpoint of ``name`` as the engine writes it (untrained weights) and its predictions JSON (``meta``
    added): the stage reuses checkpoints, so nothing needs training here."""
    import torch

    from iqalab.models.registry import build_model
    from iqalab.train.engine import save_checkpoint

    torch.manual_seed(0)
    options = {k: v for k, v in kwargs.items() if k != "name"}
    model = build_model(kwargs["name"], ds.attributes, **options)
    config = {"model_name": kwargs["name"], "model_kwargs": options, "attributes": ds.attributes,
              "mos_range": list(ds.mos_range), "cache_size": TOY_CACHE, "eval_crop": eval_crop, "cam_stats": None,
              "train": {"resolution": "cache"}, "split": "scene", "seed": 0}
    save_checkpoint(root / "build" / "models" / name / "scene" / "best.pt",
                    {"model": model.state_dict(), "config": config})
    path = root / "results" / "predictions" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"experiment": name, "label": name, "model": kwargs["name"], "dataset": "toy",
                                "attributes": ds.attributes, "mos_range": list(ds.mos_range), "simulated": True,
                                "splits": ["scene"], "status": "ok", "notes": {}, **meta}))


@pytest.fixture
def fake_pairs(project, toy_dataset, tmp_path_factory, one_thread):
    """A (the shared toy dataset) and B (``toy_b``): the first 4 images of B have all seven camera parameters, the
    others ISO only (as the toy builder writes); B's person boxes are known on 9 images, the simulator's "nobody
    there" (NaN) on the last 3."""
    from iqalab.data.cache import build_cache
    from iqalab.data.schema import CAM_COLUMNS, PERSON_BOX, read_dataset, write_dataset
    from iqalab.data.toy import build_toy

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    other = build_toy(project.root / "build" / "datasets" / "toy_b", n_scenes=3, per_scene=4, size=72, seed=5)
    images = other.images
    for col in CAM_COLUMNS:
        images[col] = [100.0 if k < 4 else (images.loc[k, col] if col in images.columns else float("nan"))
                       for k in range(len(images))]
    for col, value in zip(PERSON_BOX, (0.2, 0.1, 0.8, 0.9), strict=True):
        images[col] = [value] * 9 + [float("nan")] * 3
    other.images = images
    write_dataset(other)
    other = read_dataset(other.root)
    build_cache(other, TOY_CACHE, progress=False)

    def params(**experiments):
        raw = toy_params(**{name: {"dataset": "toy", "model": kwargs, "tables": ["reqa_table4"]}
                            for name, kwargs in experiments.items()})
        raw["datasets"]["toy_b"] = {"source": "toy", "builder": "toy", "cache_size": TOY_CACHE,
                                    "options": {"n_scenes": 3, "per_scene": 4, "size": 72}}
        raw["cross_dataset"] = {"attribute": "overall", "device": "cpu", "datasets": ["toy_b"]}
        return parse_params(raw)

    return project.root, toy_dataset, other, params


def test_cross_dataset_applies_the_models_missing_camera_rule_to_b(fake_pairs):
    """TuningIQA's GCPF on B: ``refuse`` leaves the pair out in one line, ``drop`` scores only B's images with every
    parameter, ``unknown`` scores all of them; the caption says how many of B's images each rule applied to."""
    root, a, b, make = fake_pairs
    experiments = {f"gcpf_{mode}": {**GCPF, "missing_camera": mode} for mode in ("refuse", "drop", "unknown")}
    for name, kwargs in experiments.items():
        _fake_run(root, name, kwargs, a)
    tables = cross_dataset.run(make(**experiments), root)
    summary = json.loads((root / "results" / "cross_dataset" / "summary.json").read_text())
    why = summary["skipped"]["gcpf_refuse -> toy_b"]
    assert "\n" not in why and "experiments.gcpf_refuse" in why and "'toy_b'" in why and "missing_camera" in why
    preds = pd.read_parquet(root / "results" / "cross_dataset" / "predictions.parquet")
    complete = sorted(b.images.image_id[:4])
    assert sorted(preds.loc[preds.experiment == "gcpf_drop", "image_id"]) == complete
    assert sorted(preds.loc[preds.experiment == "gcpf_unknown", "image_id"]) == sorted(b.images.image_id)
    inputs = {r["experiment"]: r["inputs"] for r in summary["runs"]}
    assert inputs["gcpf_drop"]["missing_camera_images"] == inputs["gcpf_unknown"]["missing_camera_images"] == 8
    caption = tables["reqa_table4"].caption
    assert "gcpf_drop (toy → toy_b): 8 of 12 left out (missing_camera: drop)" in caption
    assert "gcpf_unknown (toy → toy_b): 8 of 12 scored with GCPF's learned 'unknown' embedding" in caption


def test_cross_dataset_caption_counts_the_region_fallback_of_b_not_a(fake_pairs):
    """The region-fallback count of the caption is B's test images without a region (3 of 12), not the count A's
    training recorded (5)."""
    root, a, b, make = fake_pairs
    _fake_run(root, "hfe", HFE, a, regions=["person_box"], regions_detector={"person_box": ["dataset"]},
              regions_missing=5, allow_missing_regions=False)
    tables = cross_dataset.run(make(hfe=HFE), root)
    caption = tables["reqa_table4"].caption
    assert "scored by the model's fallback: hfe (toy → toy_b): 3 of 12" in caption
    assert "hfe: 5" not in caption and "human regions of the test datasets from hfe (toy → toy_b): simulator" in caption
    summary = json.loads((root / "results" / "cross_dataset" / "summary.json").read_text())
    assert summary["runs"][0]["inputs"]["regions_missing"] == 3


def test_cross_dataset_refuses_an_eval_crop_larger_than_the_cache_of_b(fake_pairs):
    """A model tested on a centre crop larger than B's cached images is left out naming the cache size to set,
    not scored on B's whole image at another scale."""
    root, a, _, make = fake_pairs
    _fake_run(root, "e", TINY, a, eval_crop=TOY_CACHE + 32)
    tables = cross_dataset.run(make(e=TINY), root)
    summary = json.loads((root / "results" / "cross_dataset" / "summary.json").read_text())
    why = summary["skipped"]["e -> toy_b"]
    assert "\n" not in why and "experiments.e" in why and f"datasets.toy_b.cache_size to {TOY_CACHE + 32}" in why
    assert summary["runs"] == [] and tables == {}


def test_cross_dataset_caption_counts_brisques_flat_fallback_on_b_not_a(fake_pairs):
    """BRISQUE's flat-region fallback (undefined in the original) is counted on B's images: one flat image of B
    gives "1 of 12"; the count A's training recorded (7) is not what the caption states."""
    import numpy as np
    from PIL import Image

    from iqalab.data.cache import build_cache
    from iqalab.data.schema import read_dataset

    root, a, b, make = fake_pairs
    flat = b.image_path(str(b.images["path"].iloc[0]))
    Image.fromarray(np.full((72, 72, 3), 128, np.uint8)).save(flat)
    b = read_dataset(b.root, verify_checksums=False)
    build_cache(b, TOY_CACHE, progress=False)
    _fake_run(root, "brisque", {"name": "brisque"}, a, notes={"variant": "BRISQUE", "raw_score": "BRISQUE",
                                                                "raw_lower_is_better": True, "trained": False,
                                                                "n_fallback": 7})
    tables = cross_dataset.run(make(brisque={"name": "brisque"}), root)
    caption = tables["reqa_table4"].caption
    assert ("a fallback where the original has none (BRISQUE: a flat region's AGGD side given zero variance; "
            "NIQE: the patch covariance taken as zero): brisque (toy → toy_b): 1 of 12") in caption
    assert "brisque: 7" not in caption
