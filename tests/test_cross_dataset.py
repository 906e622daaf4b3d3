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
