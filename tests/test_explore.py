"""The explore notebook's library: sorting and browsing a dataset, scoring one image with every trained model,
gMAD pairs, and graceful behaviour before the pipeline has produced anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqalab import explore
from iqalab.config import parse_params

from .conftest import toy_params

TINY = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 16}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_resolve_column_names_attributes_camera_parameters_and_columns(toy_dataset):
    assert explore.resolve_column(toy_dataset, None) == f"mos_{toy_dataset.attributes[0]}"
    assert explore.resolve_column(toy_dataset, "noise") == "mos_noise"
    assert explore.resolve_column(toy_dataset, "iso") == "cam_iso"
    assert explore.resolve_column(toy_dataset, "blur") == "blur"
    with pytest.raises(KeyError, match="iso"):
        explore.resolve_column(toy_dataset, "aperture_typo")


def test_sortable_columns_keep_only_varying_camera_parameters(toy_dataset):
    groups = explore.sortable_columns(toy_dataset)
    assert groups["mos"] == [f"mos_{a}" for a in toy_dataset.attributes]
    assert groups["camera"] == ["cam_iso"], "the toy set has only ISO; all-NaN camera columns are left out"
    assert {"blur", "noise_std"} <= set(groups["other"])
    assert not {"width", "height"} & set(groups["other"])
    assert not any(c.startswith(("std_", "n_")) for c in groups["other"])


@pytest.mark.parametrize("by", [None, "sharpness", "iso"])
def test_ranked_is_sorted_both_ways(toy_dataset, by):
    column = explore.resolve_column(toy_dataset, by)
    up = explore.ranked(toy_dataset, by)
    down = explore.ranked(toy_dataset, by, ascending=False)
    assert len(up) == len(toy_dataset.images)
    assert np.all(np.diff(up[column].to_numpy()) >= 0)
    assert np.all(np.diff(down[column].to_numpy()) <= 0)
    assert set(up["image_id"]) == set(toy_dataset.images["image_id"])


def test_ranked_filters_one_scene(toy_dataset):
    scene = toy_dataset.scenes[1]
    part = explore.ranked(toy_dataset, "noise", scene=scene)
    assert len(part) == (toy_dataset.images["scene"] == scene).sum() and set(part["scene"]) == {scene}


def test_spread_spans_lowest_to_highest(toy_dataset):
    picks = explore.spread(toy_dataset.images, "mos_overall", 5)
    values = toy_dataset.images["mos_overall"]
    assert len(picks) == 5
    assert picks["mos_overall"].iloc[0] == values.min() and picks["mos_overall"].iloc[-1] == values.max()
    assert picks["mos_overall"].is_monotonic_increasing
    assert len(explore.spread(toy_dataset.images, "mos_overall", 1000)) == len(values)


def test_sorted_grid_has_one_row_per_column_titled_with_values(toy_dataset):
    fig = explore.sorted_grid(toy_dataset, [None, "iso"], n=4, size=32)
    axes = np.array(fig.axes).reshape(2, 4)
    low_overall = toy_dataset.images["mos_overall"].min()
    assert axes[0, 0].get_title().startswith(f"overall {low_overall:.3g}")
    assert axes[1, 0].get_title().startswith("iso ") and "overall" in axes[1, 0].get_title()
    assert axes[0, 0].images[0].get_array().shape[:2] == (32, 32)


def test_pick_image_defaults_to_the_median(toy_dataset):
    image_id = explore.pick_image(toy_dataset)
    values = toy_dataset.images.set_index("image_id")["mos_overall"]
    rank = (values < values[image_id]).sum()
    assert abs(rank - (len(values) - 1) // 2) <= 0
    assert explore.pick_image(toy_dataset, "s00_01") == "s00_01"
    with pytest.raises(KeyError):
        explore.pick_image(toy_dataset, "nope")


def test_ensure_ingests_only_when_missing(project, monkeypatch):
    from iqalab.stages import ingest

    raw = toy_params()
    raw["datasets"]["toy"].update(cache_size=32, options={"n_scenes": 3, "per_scene": 3, "size": 32})
    params = project.write_params(raw)
    ds = ingest.ensure(params, "toy", project.root)
    assert (project.root / "build" / "datasets" / "toy" / "dataset.json").is_file()
    assert len(ds.images) == 9

    def refuse(*args, **kwargs):
        raise AssertionError("ingest must not run again when the dataset is built")

    monkeypatch.setattr(ingest, "run", refuse)
    again = ingest.ensure(params, "toy", project.root)
    assert again.images["image_id"].tolist() == ds.images["image_id"].tolist()


def test_no_checkpoints_before_training(project, toy_dataset):
    params = parse_params(toy_params(e={"dataset": "toy", "model": TINY}))
    assert explore.trained_checkpoints(params, project.root) == {}
    meta = project.root / "results" / "predictions" / "e.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"splits": ["scene"], "dataset": "toy"}))
    assert explore.trained_checkpoints(params, project.root) == {}, "predictions without a checkpoint are skipped"
    scores = explore.score_image(toy_dataset, "s00_00", {}, params)
    assert scores.empty
    fig = explore.scores_figure(toy_dataset, "s00_00", scores)
    assert any("no trained model" in t.get_text() for t in fig.axes[1].texts)


def test_score_image_matches_the_scorer_and_the_pipeline_predictions(project, toy_dataset):
    from iqalab.inference import Scorer
    from iqalab.train.engine import train_experiment

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = parse_params(toy_params(e={"dataset": "toy", "model": TINY, "label": "Tiny", "train": {"epochs": 1}}))
    preds = train_experiment(params, "e", project.root, progress=False)
    checkpoints = explore.trained_checkpoints(params, project.root)
    assert list(checkpoints) == ["e"] and checkpoints["e"].name == "best.pt"

    test_id = toy_dataset.split_ids("scene", "test")[0]
    train_id = toy_dataset.split_ids("scene", "train")[0]
    scores = explore.score_image(toy_dataset, test_id, checkpoints, params, device="cpu")
    assert scores["attribute"].tolist() == toy_dataset.attributes
    assert set(scores["label"]) == {"Tiny"} and set(scores["role"]) == {"test"}
    row = toy_dataset.images.set_index("image_id").loc[test_id]
    np.testing.assert_allclose(scores["mos"], [row[f"mos_{a}"] for a in toy_dataset.attributes])
    lo, hi = toy_dataset.mos_range
    np.testing.assert_allclose(scores["score_norm"], (scores["score"] - lo) / (hi - lo))

    image = np.asarray(Image.open(toy_dataset.root / row["path"]).convert("RGB"))
    direct = Scorer(checkpoints["e"], "cpu").score([image], cam=np.array([[np.nan, np.nan, row["cam_iso"]] +
                                                                          [np.nan] * 4]))
    np.testing.assert_allclose(scores["score"], [direct[a][0] for a in toy_dataset.attributes], rtol=1e-5)
    # the pipeline scored the same test image from its cache: same model, same preprocessing up to resampling
    mine = preds[(preds.image_id == test_id) & (preds.role == "test")].set_index("attribute")["pred"]
    np.testing.assert_allclose(scores.set_index("attribute")["score"], mine[scores["attribute"]], atol=0.05)
    assert set(explore.score_image(toy_dataset, train_id, checkpoints, params)["role"]) == {"train"}

    fig = explore.scores_figure(toy_dataset, test_id, scores)
    assert len(fig.axes[1].patches) == 1, "one bar per model for the first attribute"


def _gmad_pairs(root, n_levels=2):
    folder = root / "build" / "gmad" / "pool"
    folder.mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for attacker, defender in (("m1", "m2"), ("m2", "m1"), ("m1", "m3")):
        for level in range(n_levels):
            ids = []
            for side in ("a", "b"):
                image_id = f"{attacker}_{defender}_{level}_{side}"
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{image_id}.png")
                ids.append(image_id)
            rows.append({"pair_id": f"{attacker}>{defender}@{level}", "attacker": attacker, "defender": defender,
                         "level": level, "image_a": ids[0], "image_b": ids[1], "attacker_a": 0.9,
                         "attacker_b": 0.1, "defender_a": 0.5, "defender_b": 0.5, "p": 0.8, "ci_low": 0.6,
                         "ci_high": 0.9, "path_a": f"build/gmad/pool/{ids[0]}.png",
                         "path_b": f"build/gmad/pool/{ids[1]}.png"})
    out = root / "results" / "gmad" / "pairs.csv"
    out.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def test_gmad_pairs_absent_empty_and_present(tmp_path):
    assert explore.load_gmad_pairs(tmp_path) is None
    empty = tmp_path / "results" / "gmad" / "pairs.csv"
    empty.parent.mkdir(parents=True)
    pd.DataFrame(columns=["attacker", "defender", "image_a", "image_b"]).to_csv(empty, index=False)
    assert explore.load_gmad_pairs(tmp_path) is None, "a skipped gMAD stage writes an empty pairs.csv"
    shutil.rmtree(tmp_path / "results")

    _gmad_pairs(tmp_path)
    pairs = explore.load_gmad_pairs(tmp_path)
    assert explore.gmad_model_pairs(pairs) == [("m1", "m2"), ("m1", "m3")]
    fig = explore.gmad_figure(pairs, tmp_path, size=24)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2 * 2 * 2, "two levels x two roles x two images for the couple m1/m2"
    assert shown[0].images[0].get_array().shape[:2] == (24, 24)


def test_widgets_wrap_the_same_views(toy_dataset, tmp_path):
    pytest.importorskip("ipywidgets")
    widget = explore.browser(toy_dataset, n=3)
    options = widget.children[0].options
    assert options[0] == "mos_overall" and "cam_iso" in options
    _gmad_pairs(tmp_path, n_levels=1)
    chooser = explore.gmad_browser(explore.load_gmad_pairs(tmp_path), tmp_path)
    assert list(chooser.children[0].options) == ["m1 vs m2", "m1 vs m3"]


def test_image_browser_offers_spread_images_every_attribute_and_scores_each_image_once(toy_dataset, monkeypatch):
    pytest.importorskip("ipywidgets")
    calls: list[str] = []

    def fake_scores(ds, image_id, checkpoints, params=None, device="cpu"):  # noqa: ANN001, ANN202
        calls.append(image_id)
        return pd.DataFrame({"experiment": ["a", "b"], "label": ["A", "B"], "model": "m", "trained_on": ds.name,
                             "attribute": ds.attributes[0], "score": [2.0, 3.0], "score_norm": [0.2, 0.6],
                             "mos": 3.0, "mos_norm": 0.5, "role": "test"})

    monkeypatch.setattr(explore, "score_image", fake_scores)
    widget = explore.image_browser(toy_dataset, {"a": Path("a.pt"), "b": Path("b.pt")}, by="mos_overall", n=4)
    image, attribute, models = widget.children[:3]
    spread = explore.spread(toy_dataset.images, "mos_overall", 4)
    assert [v for _, v in image.options] == spread["image_id"].astype(str).tolist()
    assert list(attribute.options) == list(toy_dataset.attributes) and models.value == ("a", "b")
    first = image.value
    image.value = image.options[0][1]
    image.value = first  # back to an image already scored: not scored again
    assert calls == [first, image.options[0][1]]
