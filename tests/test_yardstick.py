"""The learnability yardstick (issue 23): panel ceiling, split-half reliability, pixel-feature probe, verdict,
and the ``yardstick_<dataset>`` table the evaluate stage writes next to the model rows."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from iqalab.analysis import yardstick as Y
from iqalab.stages import evaluate
from iqalab.tables import read_table_csv
from tests.evaluate_fakes import params_dict, write_experiment


# ------------------------------------------------------------------------------------------- panel ceiling
def test_ceiling_equals_scipy() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(size=50)
    mos = truth + rng.normal(0, 0.7, 50)
    out = Y.panel_ceiling(mos, truth)
    assert out["srcc"] == pytest.approx(stats.spearmanr(mos, truth)[0], abs=1e-12)
    assert out["plcc"] == pytest.approx(stats.pearsonr(mos, truth)[0], abs=1e-12)
    assert out["n"] == 50 and out["srcc"] < 0.99  # the panel's noise keeps it below 1


def test_missing_ground_truth_is_refused_in_one_line() -> None:
    images = pd.DataFrame({"image_id": ["a", "b"], "mos_overall": [1.0, 2.0], "true_overall": [1.0, 2.0]})
    with pytest.raises(Y.YardstickError) as err:
        Y.ground_truth(images, ["overall", "noise"], "build/datasets/x/images.parquet")
    message = str(err.value)
    assert "\n" not in message and "images.parquet" in message and "noise" in message
    with pytest.raises(Y.YardstickError, match="non-finite"):
        Y.ground_truth(images.assign(true_overall=[1.0, np.nan]), ["overall"])
    truth = Y.ground_truth(images, ["overall"])
    assert truth.loc["b", "overall"] == 2.0


def test_split_half_reliability_tracks_the_panel_noise() -> None:
    rng = np.random.default_rng(0)
    quality = rng.uniform(1, 5, 40)
    rows = []
    for noise, tag in ((0.2, "clean"), (50.0, "noise")):
        for i, q in enumerate(quality):
            for r in range(10):
                rows.append({"image_id": f"{tag}{i}", "rater": f"r{r}", "attribute": tag,
                             "score": q + rng.normal(0, noise), "kept": True})
    votes = pd.DataFrame(rows)
    votes.loc[0, "kept"] = False  # a screened vote is left out, not an error
    clean = Y.split_half_reliability(votes, [f"clean{i}" for i in range(40)], "clean")
    noisy = Y.split_half_reliability(votes, [f"noise{i}" for i in range(40)], "noise")
    assert clean["spearman_brown"] > 0.95 and abs(noisy["spearman_brown"]) < 0.5
    r = clean["r_half"]
    assert clean["spearman_brown"] == pytest.approx(2 * r / (1 + r)) and clean["n"] == 40
    assert np.isnan(Y.split_half_reliability(votes, ["clean0", "clean1"], "clean")["spearman_brown"])


# ------------------------------------------------------------------------------------------------ features
def _photo(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.uniform(0, 255, (size, size, 3)), sigma=(3, 3, 0))
    base = (base - base.min()) / (np.ptp(base) + 1e-9) * 200 + 20
    return base.astype(np.uint8)


def test_pixel_features_follow_blur_noise_and_colour() -> None:
    img = _photo(0)
    names = list(Y.PIXEL_FEATURES)
    ref = Y.pixel_features(img)
    blurred = Y.pixel_features(ndimage.gaussian_filter(img, sigma=(2, 2, 0)))
    noisy = Y.pixel_features(np.clip(img + np.random.default_rng(1).normal(0, 20, img.shape), 0, 255)
                             .astype(np.uint8))
    grey = Y.pixel_features(np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8))
    assert np.isfinite(ref).all() and ref.shape == (len(names),)
    assert blurred[names.index("log_lap_var")] < ref[names.index("log_lap_var")]
    assert noisy[names.index("noise_sigma")] > ref[names.index("noise_sigma")] + 5
    assert grey[names.index("colourfulness")] < 0.5 < ref[names.index("colourfulness")]
    face = Y.pixel_features(img, (0.25, 0.25, 0.75, 0.75))
    assert ref[names.index("has_face")] == 0 and face[names.index("has_face")] == 1
    luma = img[12:36, 12:36].astype(float) @ np.array([0.299, 0.587, 0.114]) / 255
    assert face[names.index("face_luma_mean")] == pytest.approx(luma.mean(), abs=1e-9)


def test_probe_recovers_a_known_pixel_function_and_caches_features(tmp_path, caplog) -> None:
    """The target is the blur applied to each image: the probe ranks held-out images by it; a target unrelated
    to the pixels is not recovered. Features are read back from the per-image cache the second time."""
    rng = np.random.default_rng(0)
    n = 90
    blur = rng.uniform(0, 3, n)
    images = {f"i{k}": ndimage.gaussian_filter(_photo(k % 6), sigma=(blur[k], blur[k], 0)) for k in range(n)}
    table = pd.DataFrame({"image_id": list(images)})
    feats = Y.dataset_features(table, images, tmp_path)
    assert list(feats.columns) == Y.feature_names() and np.isfinite(feats.to_numpy()).all()
    mos = pd.DataFrame({"sharpness": 5 - blur, "random": rng.normal(size=n)}, index=list(images))
    ids = list(images)
    out = Y.probe_scores(feats, mos, ids[:65], ids[65:], n_boot=100).set_index("attribute")
    assert out.loc["sharpness", "srcc"] > 0.85
    assert out.loc["sharpness", "ci_low"] <= out.loc["sharpness", "srcc"] <= out.loc["sharpness", "ci_high"]
    assert abs(out.loc["random", "srcc"]) < 0.5
    with caplog.at_level("INFO", logger="iqalab.analysis.yardstick"):
        again = Y.dataset_features(table, images, tmp_path)
    pd.testing.assert_frame_equal(again, feats)
    assert f"{n} images: 0 computed, {n} from the cache" in caplog.text
    with pytest.raises(Y.YardstickError, match="too small"):
        Y.probe_scores(feats, mos, ids[:2], ids[2:10])


# ------------------------------------------------------------------------------------------------- verdict
def test_summary_ratio_and_ci_verdicts() -> None:
    models = pd.DataFrame({"model": ["a", "a", "b", "n"], "trained": [True, True, True, False],
                           "split": ["s0", "s1", "s0", "s0"], "attribute": "overall",
                           "srcc": [0.6, 0.7, 0.5, 0.9], "ci_low": [0.55, 0.62, 0.3, 0.85],
                           "ci_high": [0.65, 0.76, 0.7, 0.95]})
    refs = pd.DataFrame({"split": ["s0", "s1", "s2"], "attribute": "overall", "reference": Y.PROBE,
                         "srcc": [0.8, 0.8, 0.1]})
    out = Y.summarise_dataset(models, refs, "overall")
    assert out["best_model"] == "a" and out["best_srcc"] == pytest.approx(0.65)  # untrained "n" is not a candidate
    assert out["probe_srcc"] == pytest.approx(0.8)  # over a's splits only
    assert out["ratio"] == pytest.approx(0.65 / 0.8) and out["ratio_met"] is True
    assert out["ci_half_width_max"] == pytest.approx(0.2) and out["ci_met"] is False
    assert out["widest_model"] == "b"
    assert out["best_ci_half_width"] == pytest.approx((0.05 + 0.07) / 2) and out["best_ci_met"] is True
    narrow = Y.summarise_dataset(models[models["model"] != "b"], refs, "overall")
    assert narrow["ci_half_width_max"] == pytest.approx(0.07) and narrow["ci_met"] is True
    summary = Y.summary_table({"d1": out, "d2": Y.summarise_dataset(models.iloc[:0], refs, "overall")},
                              {"d1": True, "d2": False})
    frame = summary.to_frame().set_index("dataset")
    assert frame.loc["d1", "best trained model"] == "a"
    assert frame.loc["d1", "ratio (>= 0.8)"] == pytest.approx(0.65 / 0.8) and frame.loc["d1", "ratio verdict"] == "met"
    assert frame.loc["d1", "its CI verdict"] == "met"
    assert frame.loc["d1", "widest: whose"] == "b"
    assert frame.loc["d1", "widest verdict"] == "NOT met"
    assert frame.loc["d2", "best trained model"] == "–" and frame.loc["d2", "ratio verdict"] == "–"
    assert "d1 (SIMULATED" in summary.caption and "d2 (real data)" in summary.caption


def test_within_scenes_drops_scene_offsets_and_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    scenes = np.repeat(["a", "b", "c", "d"], 12)
    mos = rng.normal(size=48)
    mos = mos - pd.Series(mos).groupby(scenes).transform("mean").to_numpy()  # anchored at each scene's mean
    offsets = pd.Series({"a": -3.0, "b": 2.0, "c": 0.5, "d": 5.0})
    pred = mos + offsets.loc[scenes].to_numpy() + rng.normal(0, 0.1, 48)  # right within scenes, offsets wrong
    centred = Y.within_scenes(pred, scenes)
    assert np.allclose(pd.Series(centred).groupby(scenes).mean(), 0.0, atol=1e-12)
    test = pd.DataFrame({"image_id": [f"i{i}" for i in range(48)], "attribute": "overall", "pred": pred, "mos": mos,
                         "split": "scene", "role": "test", "scene": scenes, "experiment": "m"})
    meta = {"m": {"model": "backbone_mlp"}}
    pooled = Y.model_scores(test, meta, {"m": "M"}, n_boot=0).iloc[0]
    within = Y.model_scores(test, meta, {"m": "M"}, n_boot=0, by_scene=True).iloc[0]
    assert pooled["srcc"] == pytest.approx(stats.spearmanr(pred, mos)[0], abs=1e-12)
    assert within["srcc"] == pytest.approx(stats.spearmanr(centred, Y.within_scenes(mos, scenes))[0], abs=1e-12)
    assert within["srcc"] > 0.95 > pooled["srcc"]  # the offsets no longer count
    with pytest.raises(Y.YardstickError, match="scene"):
        Y.model_scores(test.drop(columns="scene"), meta, {"m": "M"}, n_boot=0, by_scene=True)
    with pytest.raises(Y.YardstickError, match="3 scene labels"):
        Y.within_scenes(pred, scenes[:3])


def test_within_scenes_centres_both_sides_on_the_images_scored_on_both() -> None:
    """An undefined prediction (NaN) leaves its image out of its scene's mean on both sides, so the prediction and
    the MOS are centred on the same images; centring the MOS on all of them would shift that scene."""
    rng = np.random.default_rng(7)
    scenes = np.repeat(["a", "b", "c"], 8)
    mos = rng.normal(size=24) + np.repeat([0.0, 3.0, -2.0], 8)
    pred = mos + rng.normal(0, 0.3, 24)
    pred[[0, 9]] = np.nan
    mos[0] = 25.0  # an unscored outlier: in scene a's MOS mean, it would shift the whole scene by 25 / 8
    keep = np.isfinite(pred)
    expected = stats.spearmanr(Y.within_scenes(pred[keep], scenes[keep]), Y.within_scenes(mos[keep], scenes[keep]))[0]
    got = Y._with_ci(pred, mos, 0, 0, scenes)
    assert got["n"] == 22 and got["srcc"] == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------------------------- the stage
def _toy_project(project, toy_dataset, truth: bool, protocol: str = "standard"):
    """The toy dataset copied under the project's build/datasets, one perfect-ish and one noisy experiment on
    its scene split (predictions of its real image ids), optionally with ground-truth columns."""
    folder = project.root / "build" / "datasets" / "toy"
    shutil.copytree(toy_dataset.root, folder)
    images = pd.read_parquet(folder / "images.parquet")
    rng = np.random.default_rng(0)
    splits = toy_dataset.splits[toy_dataset.splits["split"] == "scene"]
    if protocol == "per_scene":  # two test scenes, so that a reading within scenes differs from a pooled one
        scene_of = images.set_index("image_id")["scene"]
        test_scenes = sorted(scene_of.unique())[:2]
        splits = splits.assign(role=np.where(splits["image_id"].map(scene_of).isin(test_scenes), "test", "train"))
        pd.concat([toy_dataset.splits[toy_dataset.splits["split"] != "scene"], splits]).to_parquet(
            folder / "splits.parquet", index=False)
    if truth:
        offset = images["scene"].map({s: 2.0 * k for k, s in enumerate(sorted(images["scene"].unique()))})
        for attr in toy_dataset.attributes:
            images[f"true_{attr}"] = images[f"mos_{attr}"] + rng.normal(0, 0.3, len(images)) + offset
        images.to_parquet(folder / "images.parquet", index=False)
    frames = []
    for attr in toy_dataset.attributes:
        part = splits.merge(images[["image_id", "scene", f"mos_{attr}"]], on="image_id")
        part = part[part["role"].isin(["test", "val"])]
        frames.append(pd.DataFrame({"image_id": part["image_id"], "attribute": attr,
                                    "mos": part[f"mos_{attr}"], "split": "scene", "role": part["role"],
                                    "scene": part["scene"]}))
    base = pd.concat(frames, ignore_index=True)
    good = base.assign(pred=base["mos"] + rng.normal(0, 0.05, len(base)))
    bad = base.assign(pred=rng.normal(size=len(base)))
    tags = ["tuningiqa_table2", "tuningiqa_table3"]
    write_experiment(project.root, "good", good, label="Good", tables=tags, protocol=protocol)
    write_experiment(project.root, "bad", bad, label="Bad", tables=tags, protocol=protocol)
    spec = {"tables": tags, "protocol": protocol}
    params = project.write_params(params_dict({"good": {**spec, "label": "Good"}, "bad": spec}, bootstrap=50))
    return params, images, splits


@pytest.mark.parametrize("truth", [True, False])
def test_stage_writes_the_yardstick_next_to_the_models(project, toy_dataset, truth) -> None:
    params, images, splits = _toy_project(project, toy_dataset, truth)
    tables = evaluate.run(params, project.root, figures=False)
    assert "yardstick_toy" in tables and "yardstick_summary" in tables
    summary = read_table_csv(project.root / "results" / "tables" / "yardstick_summary.csv").set_index("dataset")
    assert summary.loc["toy", "best trained model"] == "Good"
    folder = project.root / "results" / "tables"
    md = (folder / "yardstick_toy.md").read_text()
    assert "SIMULATED" in md.splitlines()[0] and "Issue 23 done-when" in md
    frame = read_table_csv(folder / "yardstick_toy.csv").set_index("model")
    assert {"Good", "Bad", Y.PROBE} <= set(frame.index)
    assert set(frame.loc[[Y.PROBE], "row"]) == {"reference, not a model"}
    assert (Y.CEILING in frame.index) is truth
    if truth:
        test_ids = splits.loc[splits["role"] == "test", "image_id"]
        sel = images.set_index("image_id").loc[test_ids]
        expected = stats.spearmanr(sel["mos_overall"], sel["true_overall"])[0]
        assert frame.loc[Y.CEILING, "overall SRCC"] == pytest.approx(expected, abs=1e-9)
        # the reference row beats every model, yet the best model keeps its bold and the reference gets none
        ceiling_line = next(line for line in md.splitlines() if Y.CEILING in line)
        assert "**" not in ceiling_line
    else:
        assert "no panel ceiling" in md
    good_line = next(line for line in md.splitlines() if "| Good |" in line)
    assert "**" in good_line
    assert frame.loc["Good", "overall SRCC"] > frame.loc["Bad", "overall SRCC"]
    assert np.isfinite(frame.loc["Good", "overall ratio to probe"])
    assert list((project.root / "build" / "features").glob("yardstick-*"))  # features cached per image
    # the paper tables carry the same references under their model rows, marked and never ranked
    table2 = read_table_csv(folder / "tuningiqa_table2.csv").set_index("model")
    probe_row = f"{Y.PROBE}: not a model"
    assert table2.loc[probe_row, "SRCC"] == pytest.approx(frame.loc[Y.PROBE, "overall SRCC"])
    assert (f"{Y.CEILING}: not a model" in table2.index) is truth
    line = next(x for x in (folder / "tuningiqa_table2.md").read_text().splitlines() if probe_row in x)
    assert "**" not in line
    table3 = read_table_csv(folder / "tuningiqa_table3.csv")
    probe3 = table3[table3["model"] == probe_row].set_index("metric")
    assert set(probe3.index) == {"SRCC", "PLCC (raw)"}  # the logistic PLCC row would be empty: left out
    assert probe3.loc["SRCC", "sharpness"] == pytest.approx(frame.loc[Y.PROBE, "sharpness SRCC"])


def test_stage_without_dataset_folder_or_with_yardstick_off(project, toy_dataset) -> None:
    params, _, _ = _toy_project(project, toy_dataset, truth=True)
    stale = project.root / "results" / "tables" / "yardstick_gone.md"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("old")
    raw = params.model_dump() if hasattr(params, "model_dump") else dict(params)
    raw["evaluate"]["yardstick"] = False
    off = project.write_params(params_dict({"good": {"label": "Good"}, "bad": {}}) | {"evaluate": raw["evaluate"]})
    tables = evaluate.run(off, project.root, figures=False)
    assert not any(name.startswith("yardstick_") for name in tables) and not stale.exists()
    assert not any("not a model" in str(key) for frame in tables.values() for key in frame.get("model", []))
    shutil.rmtree(project.root / "build" / "datasets" / "toy")
    tables = evaluate.run(params, project.root, figures=False)
    assert not any(name.startswith("yardstick_") for name in tables)


def test_stage_scores_per_scene_scales_within_scenes(project, toy_dataset) -> None:
    """A dataset whose experiments all use the per_scene protocol (PIQ23's JOD) is scored within scenes: the
    ceiling is the SRCC of the scene-centred MOS and ground truth, the tables say so, and no within-scene
    reference row is put beside a paper table's pooled rows."""
    params, images, splits = _toy_project(project, toy_dataset, truth=True, protocol="per_scene")
    evaluate.run(params, project.root, figures=False)
    folder = project.root / "results" / "tables"
    frame = read_table_csv(folder / "yardstick_toy.csv").set_index("model")
    test_ids = splits.loc[splits["role"] == "test", "image_id"]
    sel = images.set_index("image_id").loc[test_ids]
    expected = stats.spearmanr(Y.within_scenes(sel["mos_overall"], sel["scene"]),
                               Y.within_scenes(sel["true_overall"], sel["scene"]))[0]
    pooled = stats.spearmanr(sel["mos_overall"], sel["true_overall"])[0]
    assert frame.loc[Y.CEILING, "overall SRCC"] == pytest.approx(expected, abs=1e-6)  # the CSV keeps 6 digits
    assert abs(expected - pooled) > 0.01  # the toy's scenes have offsets: the two readings differ
    assert "within scenes" in (folder / "yardstick_toy.md").read_text()
    summary = read_table_csv(folder / "yardstick_summary.csv").set_index("dataset")
    assert summary.loc["toy", "SRCC scored"] == "within scenes"
    table2 = read_table_csv(folder / "tuningiqa_table2.csv")
    assert not table2["model"].astype(str).str.contains("not a model").any()


def test_the_readme_counts_the_probe_features_the_code_computes() -> None:
    """README's "random forest on N hand-made and M BRISQUE features" names the probe's real feature counts
    (:func:`feature_names`: the hand-made ones, then BRISQUE's), so neither can drift from the other."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    said = re.search(r"random forest on (\d+) hand-made and (\d+) BRISQUE features", readme)
    assert said is not None, "README no longer describes the probe's features"
    names = Y.feature_names()
    hand = [n for n in names if not n.startswith("brisque_")]
    assert hand == list(Y.PIXEL_FEATURES) and names[len(hand):] == [n for n in names if n.startswith("brisque_")]
    assert (int(said[1]), int(said[2])) == (len(hand), len(names) - len(hand))
    feats = Y.dataset_features(pd.DataFrame({"image_id": ["a"]}), {"a": _photo(0)}, None)
    assert feats.shape == (1, len(names))
