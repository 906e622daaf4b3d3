"""Captions say what happened to every row: undefined predictions left out, the resolution whole images came at,
logistic fits that fell back to a straight line, REQA tiers that fell back to the mapped MOS (the rule "no silent
fallback": a fallback is stated in the caption of every table it feeds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iqalab.stages import evaluate
from tests.evaluate_fakes import ground_truth, params_dict, with_predictions, write_experiment

BRISQUE_NAN = {"variant": "BRISQUE", "raw_score": "BRISQUE", "raw_lower_is_better": True, "trained": False,
               "n_fallback": 0, "undefined": "nan", "n_undefined": 1}


def _caption(root: Path, table: str) -> str:
    return (root / "results" / "tables" / f"{table}.md").read_text().splitlines()[0]


def _with_raw(root: Path, name: str, raw: np.ndarray) -> None:
    """Add the published raw score to an experiment's predictions, as training writes it for NIQE / BRISQUE."""
    path = root / "results" / "predictions" / f"{name}.parquet"
    pd.read_parquet(path).assign(raw=raw).to_parquet(path, index=False)


def test_an_undefined_prediction_is_left_out_counted_and_the_negated_score_still_correlated(project) -> None:
    """One flat test image of a published BRISQUE with ``undefined: nan`` (NaN raw score and prediction): n drops
    by one, the caption of every table it feeds gives the count, and the other images are still scored on the
    negated raw score the caption names (not on the [0, 1] predictions)."""
    truth = ground_truth(n_images=40, attributes=["overall"])
    rng = np.random.default_rng(3)
    raw = 100.0 - 15.0 * truth["mos"].to_numpy() + rng.normal(0, 8.0, len(truth))  # lower is better
    frame = truth.assign(pred=rng.uniform(0, 1, len(truth)))  # unrelated [0, 1] outputs: must not be scored
    flat = int(np.flatnonzero((truth.role == "test").to_numpy())[0])
    raw[flat] = np.nan
    frame.loc[flat, "pred"] = np.nan
    tables = ["tuningiqa_table2", "reqa_table2"]
    write_experiment(project.root, "brisque", frame, tables=tables, label="BRISQUE", model="brisque",
                     extra_meta={"notes": BRISQUE_NAN})
    _with_raw(project.root, "brisque", raw)
    write_experiment(project.root, "net", with_predictions(truth, "noisy"), tables=tables, label="Net")
    params = project.write_params(params_dict({"brisque": {"tables": tables, "label": "BRISQUE"},
                                               "net": {"tables": tables, "label": "Net"}}))
    out = evaluate.run(params, project.root, figures=False)
    n_test = int((truth.role == "test").sum())
    long = out["all_metrics"].set_index("experiment")
    assert long.loc["brisque", "n"] == n_test - 1 and long.loc["net", "n"] == n_test
    assert long.loc["brisque", "n_undefined"] == 1 and long.loc["net", "n_undefined"] == 0
    test = (truth.role == "test").to_numpy() & np.isfinite(raw)
    expected = stats.spearmanr(-raw[test], truth["mos"].to_numpy()[test]).statistic
    assert long.loc["brisque", "srcc"] == pytest.approx(expected, abs=1e-12)
    for table in ("all_metrics", *tables):
        caption = _caption(project.root, table)
        assert "left out of every metric and of n" in caption and f"BRISQUE: 1 of {n_test}" in caption, table
        assert "Net: " not in caption.split("left out of every metric")[1].split(".")[0], table
        assert "correlations of the negated score for BRISQUE" in caption, table


def test_captions_name_the_max_side_cap_or_do_not_claim_full_resolution() -> None:
    """The published rows' images come from the native store, which a dataset's ``max_side`` may cap: the caption
    names the cap the predictions JSON records (``max_side``; null = none) and, where none is recorded, does not
    claim full resolution."""
    from iqalab.paper_tables.common import baseline_notes

    published = {"variant": "NIQE", "raw_score": "NIQE", "raw_lower_is_better": True, "trained": False}
    retrained = {"variant": "BRISQUE, SVR retrained", "raw_score": None, "trained": True}

    def text(extra: dict) -> str:
        meta = {"niqe": {"notes": published, **extra}, "b": {"notes": retrained, **extra}}
        return " ".join(baseline_notes(meta, {"niqe": "NIQE", "b": "BRISQUE (retrained)"}))

    unknown = text({})
    assert "full resolution" not in unknown and "a max_side cap, if any, is not recorded" in unknown
    assert "each image at full resolution" in text({"max_side": None})
    capped = text({"max_side": 2048})
    assert "full resolution" not in capped
    assert "each image capped at 2048 px on the long side" in capped
    assert "BRISQUE features of each image capped at 2048 px on the long side" in capped
    mixed = " ".join(baseline_notes({"a": {"notes": published, "max_side": 1024}, "c": {"notes": published}},
                                    {"a": "NIQE (a)", "c": "NIQE (c)"}))
    assert "NIQE (a): capped at 1024 px" in mixed and "NIQE (c): at its stored resolution" in mixed


def test_captions_name_the_rows_whose_logistic_fit_fell_back(project) -> None:
    """Four test images are too few for the 4-parameter logistic: the fit falls back to a straight line and every
    table showing the fitted PLCC names that row, attribute and split; a row whose fit held is not named, and a
    table showing raw PLCC only says nothing of it."""
    tiny = ground_truth(n_images=6, attributes=["overall"], seed=2)
    assert (tiny.role == "test").sum() == 4
    big = ground_truth(n_images=60, attributes=["overall"])
    tables = ["tuningiqa_table2", "tuningiqa_table3", "reqa_table2"]
    write_experiment(project.root, "tiny", with_predictions(tiny, "noisy"), tables=tables, label="Tiny")
    write_experiment(project.root, "big", with_predictions(big, "noisy"), tables=tables, label="Big")
    spec = {"tables": tables}
    raw = project.write_params(params_dict({"tiny": {**spec, "label": "Tiny"}, "big": {**spec, "label": "Big"}}))
    out = evaluate.run(raw, project.root, figures=False)
    assert out["all_metrics"].set_index("experiment")["logistic_fallback"].to_dict() == {"tiny": 1.0, "big": 0.0}
    for table in ("all_metrics", *tables):
        caption = _caption(project.root, table)
        assert "PLCC after a linear map instead of the logistic" in caption, table
        assert "Tiny (overall: 1 of 1 split)" in caption and "Big (overall" not in caption, table
    no_fit = params_dict({"tiny": {**spec, "label": "Tiny"}, "big": {**spec, "label": "Big"}})
    no_fit["evaluate"]["logistic"] = False
    evaluate.run(project.write_params(no_fit), project.root, figures=False)
    assert "linear map instead" not in _caption(project.root, "tuningiqa_table2")


def test_captions_name_a_nearly_constant_predictor(project) -> None:
    """A model whose predictions keep the MOS order but span 2 % of its spread (REQA's coarse loss on 0-100 did
    this) gets a fair SRCC; every table naming it says its predictions are nearly constant, with the ratio, and
    a model on the MOS's own spread is not named."""
    truth = ground_truth(n_images=60, attributes=["overall"])
    good = with_predictions(truth, "noisy")
    flat = good.assign(pred=good["mos"].mean() + 0.02 * (good["pred"] - good["mos"].mean()))
    tables = ["tuningiqa_table2", "reqa_table2"]
    write_experiment(project.root, "flat", flat, tables=tables, label="Flat")
    write_experiment(project.root, "good", good, tables=tables, label="Good")
    spec = {"tables": tables}
    out = evaluate.run(project.write_params(params_dict({"flat": {**spec, "label": "Flat"},
                                                         "good": {**spec, "label": "Good"}})),
                       project.root, figures=False)
    spread = out["all_metrics"].set_index("experiment")["spread"]
    test = truth[truth.role == "test"]
    assert spread["flat"] == pytest.approx(0.02 * np.std(good.loc[test.index, "pred"]) / np.std(test["mos"]))
    assert spread["good"] > 0.5
    for table in ("all_metrics", *tables):
        caption = _caption(project.root, table)
        assert "nearly constant predictions" in caption, table
        assert "Flat (overall: 1 of 1 split, SD ratio down to" in caption and "Good (overall" not in caption, table


def _tier_dataset(root: Path, truth: pd.DataFrame, missing: int = 0) -> pd.Series:
    """A published 0-100 tier column (``tier_overall``, named MOS_zscore) for the toy dataset, ``missing`` test
    images without a value."""
    ids = truth.drop_duplicates("image_id").set_index("image_id").mos
    zscore = np.clip(100 * ((ids - 3.0) / 2.0) ** 3 / 2 + 50, 0, 100)
    test_ids = truth.loc[truth.role == "test", "image_id"].unique()[:missing]
    zscore[list(test_ids)] = np.nan
    folder = root / "build" / "datasets" / "toy"
    folder.mkdir(parents=True)
    pd.DataFrame({"image_id": ids.index, "tier_overall": zscore.to_numpy()}).to_parquet(folder / "images.parquet")
    (folder / "dataset.json").write_text(json.dumps({"tier_scale": {"overall": "MOS_zscore (0-100)"}}))
    return zscore


def test_reqa_caption_names_the_rows_whose_tiers_fell_back_to_the_mapped_mos(project) -> None:
    """KonIQ-style tiers from a published column; one test image of one split lacks a value, so that split's
    tiers come from the MOS mapped from 1-5: the caption names the row, split and count beside the scale, and
    the tiers are indeed the mapped MOS's. A row whose MOS leaves the tier scale gets no tiers, and the caption
    says so."""
    truth = ground_truth(n_images=150, attributes=["overall"], mos_range=(1.0, 5.0))
    noisy = with_predictions(truth, "noisy", noise=0.6)
    _tier_dataset(project.root, truth, missing=1)
    write_experiment(project.root, "noisy", noisy, tables=["reqa_table1"])
    outside = noisy.assign(mos=noisy["mos"] + 4.5)  # MOS above the 1-5 range: no 0-100 tier
    write_experiment(project.root, "off", outside, tables=["reqa_table1"], label="Off", dataset="toy2")
    params = project.write_params(params_dict({"noisy": {"tables": ["reqa_table1"]},
                                               "off": {"tables": ["reqa_table1"], "label": "Off",
                                                       "dataset": "toy2"}}, datasets=("toy", "toy2")))
    tables = evaluate.run(params, project.root, figures=False)
    caption = _caption(project.root, "reqa_table1")
    assert "toy: MOS_zscore (0-100)" in caption
    assert ("tiers from the MOS mapped linearly to 0-100 instead of the published tier scale, where test images "
            "lacked a tier value: noisy (split scene: 1 test image without a tier value; MOS mapped from 1-5)"
            ) in caption
    assert "no per-tier metrics (a tier value outside 0-100; see the evaluate log): Off (split scene)" in caption
    table = tables["reqa_table1"].set_index(["metric", "model"])
    test = noisy[noisy.role == "test"]
    linear = (test.mos - 1.0) / 4.0 * 100
    part = test[(linear >= 40) & (linear < 60)]
    assert table.loc[("SROCC", "noisy"), "Fair"] == pytest.approx(stats.spearmanr(part.pred, part.mos).statistic)


def test_caption_notes_tell_apart_rows_that_share_a_label() -> None:
    """The same model on two datasets (one label, as in ``all_metrics``) is named with its dataset in the notes."""
    from iqalab.paper_tables.common import TableContext

    meta = {"b_1": {"train_dataset": "d1"}, "b_2": {"train_dataset": "d2"}, "n_1": {"train_dataset": "d1"}}
    ctx = TableContext(pd.DataFrame(), meta, {"b_1": "BRISQUE", "b_2": "BRISQUE", "n_1": "NIQE"}, {}, True)
    assert ctx.note_labels(list(meta)) == {"b_1": "BRISQUE on d1", "b_2": "BRISQUE on d2", "n_1": "NIQE"}
    assert ctx.note_labels(["b_1", "n_1"]) == {"b_1": "BRISQUE", "n_1": "NIQE"}


@pytest.mark.parametrize("max_side", [None, 1024])
def test_the_dataset_cap_reaches_the_captions_through_the_params(project, max_side) -> None:
    """Predictions JSONs written before ``max_side`` was recorded take the dataset's ``datasets.<name>.max_side``
    (the params that built the store, an evaluate dependency), so the published rows' captions state the cap or
    full resolution instead of "not recorded"; a value the JSON records itself wins."""
    from iqalab.analysis.evaluation import load_predictions

    truth = ground_truth(n_images=20, attributes=["overall"])
    write_experiment(project.root, "niqe", with_predictions(truth, "noisy"), tables=["reqa_table2"], label="NIQE",
                     model="niqe", extra_meta={"notes": {"variant": "NIQE", "raw_score": "NIQE",
                                                         "raw_lower_is_better": True, "trained": False}})
    write_experiment(project.root, "own", with_predictions(truth, "noisy"), tables=["reqa_table2"], label="Own",
                     extra_meta={"max_side": 512})
    spec = params_dict({"niqe": {"tables": ["reqa_table2"], "label": "NIQE"},
                        "own": {"tables": ["reqa_table2"], "label": "Own"}})
    spec["datasets"]["toy"]["max_side"] = max_side
    params = project.write_params(spec)
    _, meta = load_predictions(params, project.root)
    assert meta["niqe"]["max_side"] == max_side and meta["own"]["max_side"] == 512
    evaluate.run(params, project.root, figures=False)
    caption = _caption(project.root, "all_metrics")
    assert "not recorded" not in caption
    expected = "at full resolution" if max_side is None else f"capped at {max_side} px on the long side"
    assert expected in caption


def test_spread_is_left_blank_where_the_predictions_are_not_on_the_test_sets_scale() -> None:
    """``spread`` compares SDs on one MOS scale: a cross-dataset row (predictions in the training set's units,
    e.g. 1-5 against 0-100 MOS) gets none, a within-dataset row gets the SD ratio."""
    from iqalab.analysis.evaluation import EvalInputs, compute_scores

    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 40)
    rows = [pd.DataFrame({"image_id": [f"{ds}{i}" for i in range(40)], "attribute": "overall",
                          "pred": 0.5 * mos + 1, "mos": mos * scale, "split": "s", "role": "test", "scene": "a",
                          "experiment": "m", "dataset": ds, "raw": np.nan})
            for ds, scale in (("toy", 1.0), ("other", 25.0))]
    meta = {"m": {"train_dataset": "toy", "notes": {}, "tables": [], "mos_range": [1, 5]}}
    scores = compute_scores(EvalInputs(pd.concat(rows, ignore_index=True), meta))
    spread = scores[scores.metric == "spread"].set_index("dataset")["value"]
    assert spread["toy"] == pytest.approx(0.5)
    assert np.isnan(spread["other"])
