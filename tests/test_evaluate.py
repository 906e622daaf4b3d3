"""Stage evaluate and the table writers: known models (perfect, noisy, identical) through to the files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iqalab.analysis import evaluation
from iqalab.stages import evaluate
from iqalab.tables import Table, dataset_caption, read_table_csv
from tests.evaluate_fakes import ground_truth, params_dict, with_predictions, write_experiment

TABLE2 = ["tuningiqa_table2", "tuningiqa_table3"]


# --------------------------------------------------------------------------------------------- tables
def _toy_table() -> Table:
    index = pd.MultiIndex.from_tuples([("a", "m1"), ("a", "m2"), ("a", "m3"), ("b", "m1")],
                                      names=["dataset", "model"])
    data = pd.DataFrame({"SRCC": [0.9, 0.95, 0.95, 0.5], "MAE": [0.3, 0.2, 0.4, 0.1], "n": [10, 20, 30, 40]},
                        index=index)
    std = pd.DataFrame({"SRCC": [0.01, np.nan, 0.02, np.nan]}, index=index)
    return Table("toy_table", data, dataset_caption({"a": True, "b": False}), std, group_levels=("dataset",))


def test_best_mask_directions_ties_and_groups() -> None:
    mask = _toy_table().best_mask()
    assert mask["SRCC"].tolist() == [False, True, True, False]  # tie bolded twice; group b has one row
    assert mask["MAE"].tolist() == [False, True, False, False]  # lower is better
    assert not mask["n"].any()  # counts are not ranked


def test_writers_bold_caption_std(tmp_path) -> None:
    table = _toy_table()
    paths = table.write(tmp_path)
    assert sorted(p.suffix for p in paths) == [".csv", ".md", ".tex"]
    md = (tmp_path / "toy_table.md").read_text()
    assert "SIMULATED" in md.splitlines()[0] and "b (real data)" in md.splitlines()[0]
    assert "| a | m2 | **0.9500** | **0.2000** | 20 |" in md
    assert "0.9000 ± 0.0100" in md and "**0.9500 ± 0.0200**" in md
    tex = (tmp_path / "toy_table.tex").read_text()
    assert r"\textbf{0.9500}" in tex and r"\caption{" in tex and "SIMULATED" in tex
    frame = read_table_csv(tmp_path / "toy_table.csv")
    assert list(frame.columns) == ["dataset", "model", "SRCC", "SRCC std", "MAE", "n"]
    np.testing.assert_allclose(frame["SRCC"], [0.9, 0.95, 0.95, 0.5])


# ----------------------------------------------------------------------------------------- the stage
@pytest.fixture
def three_models(project):
    """perfect, noisy and an identical copy of noisy over 3 splits; plus a stale file of a removed experiment."""
    truth = ground_truth(n_images=40, splits=("random_00", "random_01", "random_02"))
    noisy = with_predictions(truth, "noisy", noise=0.8)
    write_experiment(project.root, "perfect", with_predictions(truth, "perfect"), tables=TABLE2, label="Perfect")
    write_experiment(project.root, "noisy", noisy, tables=TABLE2, model_kwargs={"backbone": "resnet18"})
    write_experiment(project.root, "noisy_copy", noisy, tables=TABLE2, model_kwargs={"backbone": "resnet34"})
    write_experiment(project.root, "removed", with_predictions(truth, "perfect"), tables=["sfiqa_table2"])
    spec = {"tables": TABLE2}
    params = project.write_params(params_dict({"perfect": {**spec, "label": "Perfect"}, "noisy": spec,
                                               "noisy_copy": spec}))
    return project, params, truth, noisy


def test_stage_tables_summary_and_figures(three_models) -> None:
    project, params, truth, noisy = three_models
    tables = evaluate.run(params, project.root)
    out = project.root / "results"
    assert set(tables) == {"all_metrics", "tuningiqa_table2", "tuningiqa_table3"}  # sfiqa tag only on stale exp
    for name in tables:
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"{name}.{ext}").is_file()
    summary = json.loads((out / "metrics" / "summary.json").read_text())
    assert set(summary) == {"perfect", "noisy", "noisy_copy", "_provenance"}  # the stale experiment is ignored
    assert summary["perfect"]["srcc"] == pytest.approx(1.0) and summary["perfect"]["rmse"] == pytest.approx(0.0)
    assert summary["noisy"] == summary["noisy_copy"]
    assert summary["noisy"]["srcc"] < 0.99
    table2 = tables["tuningiqa_table2"].set_index("model")
    assert table2.loc["Perfect", "SRCC"] == pytest.approx(1.0)
    assert table2["Backbone"].to_dict() == {"Perfect": "-", "noisy": "resnet18", "noisy_copy": "resnet34"}
    md = (out / "tables" / "tuningiqa_table2.md").read_text()
    assert "SIMULATED" in md.splitlines()[0] and "toy" in md.splitlines()[0]
    perfect_row = next(line for line in md.splitlines() if "| Perfect |" in line)
    noisy_row = next(line for line in md.splitlines() if "| noisy |" in line)
    assert "**1.0000 ± 0.0000**" in perfect_row and "**" not in noisy_row
    figures = {p.name for p in (out / "figures" / "evaluation").iterdir()}
    assert {"scatter_toy_overall.png", "scatter_toy_sharpness.png"} <= figures


def test_all_metrics_and_mean_std_match_scipy(three_models) -> None:
    project, params, truth, noisy = three_models
    tables = evaluate.run(params, project.root, figures=False)
    long = tables["all_metrics"].set_index(["experiment", "split", "attribute"])
    per_split, overall = [], []
    for split in ("random_00", "random_01", "random_02"):
        values = []
        for attr in ("overall", "sharpness"):
            part = noisy[(noisy.split == split) & (noisy.attribute == attr) & (noisy.role == "test")]
            rho = stats.spearmanr(part.pred, part.mos).statistic
            assert long.loc[("noisy", split, attr), "srcc"] == pytest.approx(rho, abs=1e-12)
            assert long.loc[("noisy", split, attr), "krcc"] == pytest.approx(
                stats.kendalltau(part.pred, part.mos).statistic, abs=1e-12)
            values.append(rho)
        per_split.append(np.mean(values))
        overall.append(values[0])
    # Table 2 reads the overall score (mean +- std over splits); Table 4 averages over attributes
    row = tables["tuningiqa_table2"].set_index("model").loc["noisy"]
    assert row["SRCC"] == pytest.approx(np.mean(overall), abs=1e-12)
    assert row["SRCC std"] == pytest.approx(np.std(overall, ddof=1), abs=1e-12)
    table3 = tables["tuningiqa_table3"].set_index(["model", "metric"])
    assert table3.loc[("Perfect", "PLCC"), "overall"] == pytest.approx(1.0)


def test_table4_averages_the_attributes_of_each_split_then_the_splits(project) -> None:
    """TuningIQA Table 4 (and SFIQA's averaged tables, the same builder): each split's SRCC averaged over the
    overall score and the attributes, then mean and std (ddof 1) of those averages over the splits, against
    scipy."""
    truth = ground_truth(n_images=40, splits=("random_00", "random_01", "random_02"))
    noisy = with_predictions(truth, "noisy", noise=0.8)
    write_experiment(project.root, "noisy", noisy, tables=["tuningiqa_table4"])
    params = project.write_params(params_dict({"noisy": {"tables": ["tuningiqa_table4"]}}))
    tables = evaluate.run(params, project.root, figures=False)
    per_split = []
    for split in ("random_00", "random_01", "random_02"):
        test = noisy[(noisy.split == split) & (noisy.role == "test")]
        per_split.append(np.mean([stats.spearmanr(part.pred, part.mos).statistic
                                  for _, part in test.groupby("attribute")]))
    assert len(set(noisy.attribute)) == 2 and len(set(np.round(per_split, 6))) == 3
    row = tables["tuningiqa_table4"].set_index("model").loc["noisy"]
    assert row["SRCC"] == pytest.approx(np.mean(per_split), abs=1e-12)
    assert row["SRCC std"] == pytest.approx(np.std(per_split, ddof=1), abs=1e-12)


def test_fg_acc_from_fine_pairs(project) -> None:
    truth = ground_truth(n_images=30)
    test_ids = truth[(truth.role == "test") & (truth.attribute == "overall")].set_index("image_id").mos
    ids = test_ids.index.to_numpy()
    a, b = ids[:-1], ids[1:]
    fine = np.array([True, False] * (len(a) // 2) + [True] * (len(a) % 2))
    p = (test_ids[a].to_numpy() > test_ids[b].to_numpy()).astype(float)
    # the coarse pairs' preferences contradict the MOS: FG-ACC counts the fine pairs only (evaluate's default),
    # so the perfect model still scores 1 (about 0.5 if the coarse pairs were counted)
    pairs = pd.DataFrame({"image_a": a, "image_b": b, "attribute": "overall", "p": np.where(fine, p, 1.0 - p),
                          "source": "mos", "fine": fine})
    (project.root / "build" / "datasets" / "toy").mkdir(parents=True)
    pairs.to_parquet(project.root / "build" / "datasets" / "toy" / "pairs.parquet")
    write_experiment(project.root, "perfect", with_predictions(truth, "perfect"), tables=TABLE2)
    write_experiment(project.root, "reversed", with_predictions(truth, "reversed"), tables=TABLE2)
    params = project.write_params(params_dict({"perfect": {"tables": TABLE2}, "reversed": {"tables": TABLE2}}))
    tables = evaluate.run(params, project.root)
    long = tables["all_metrics"].set_index(["experiment", "attribute"])
    assert long.loc[("perfect", "overall"), "fg_acc"] == pytest.approx(1.0)
    assert long.loc[("reversed", "overall"), "fg_acc"] == pytest.approx(0.0)
    assert np.isnan(long.loc[("perfect", "sharpness"), "fg_acc"])  # no sharpness pairs
    table3 = tables["tuningiqa_table3"].set_index(["model", "metric"])
    assert table3.loc[("perfect", "FG-ACC"), "overall"] == pytest.approx(1.0)
    assert (project.root / "results" / "figures" / "evaluation" / "fg_acc_dmos_toy.png").is_file()


def test_per_scene_median_hand_case(project) -> None:
    """Scene s0 predicted perfectly (SRCC 1), s1 reversed (-1), s2 with one swap: the median is s2's SRCC."""
    mos = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    rows = []
    for scene, pred in (("s0", mos), ("s1", -mos), ("s2", np.array([1.0, 3.0, 2.0, 4.0, 5.0]))):
        for i in range(5):
            rows.append({"image_id": f"{scene}_{i}", "attribute": "overall", "mos": mos[i], "pred": pred[i],
                         "split": "scene", "role": "test", "scene": scene})
    frame = pd.DataFrame(rows)
    write_experiment(project.root, "fh", frame, tables=["fhiqa_table1"], protocol="per_scene")
    params = project.write_params(params_dict({"fh": {"tables": ["fhiqa_table1"], "protocol": "per_scene"}}))
    table = evaluate.run(params, project.root, figures=False)["fhiqa_table1"].iloc[0]
    expected_srcc = stats.spearmanr([1, 3, 2, 4, 5], mos).statistic  # 0.9, between 1 and -1
    assert table["overall SRCC"] == pytest.approx(expected_srcc)
    assert table["overall KRCC"] == pytest.approx(stats.kendalltau([1, 3, 2, 4, 5], mos).statistic)
    mae_s2 = np.mean(np.abs(np.array([1.0, 3.0, 2.0, 4.0, 5.0]) - mos))
    assert table["overall MAE"] == pytest.approx(np.median([0.0, np.mean(np.abs(-mos - mos)), mae_s2]))


def test_reqa_tier_table_against_hand_binning(project) -> None:
    truth = ground_truth(n_images=150, attributes=["overall"], mos_range=(0.0, 100.0))
    noisy = with_predictions(truth, "noisy", noise=15.0)
    write_experiment(project.root, "perfect", with_predictions(truth, "perfect"), tables=["reqa_table1"],
                     mos_range=(0.0, 100.0))
    write_experiment(project.root, "noisy", noisy, tables=["reqa_table1"], mos_range=(0.0, 100.0))
    params = project.write_params(params_dict({"perfect": {"tables": ["reqa_table1"]},
                                               "noisy": {"tables": ["reqa_table1"]}}))
    table = evaluate.run(params, project.root)["reqa_table1"].set_index(["metric", "model"])
    test = noisy[noisy.role == "test"]
    for tier, (lo, hi) in {"Excellent": (80, 101), "Fair": (40, 60), "Bad": (0, 20)}.items():
        part = test[(test.mos >= lo) & (test.mos < hi)]
        assert table.loc[("SROCC", "noisy"), tier] == pytest.approx(stats.spearmanr(part.pred, part.mos).statistic)
        assert table.loc[("PLCC", "noisy"), tier] == pytest.approx(stats.pearsonr(part.pred, part.mos).statistic)
        assert table.loc[("SROCC", "perfect"), tier] == pytest.approx(1.0)
    overall = stats.spearmanr(test.pred, test.mos).statistic
    assert table.loc[("SROCC", "noisy"), "Overall"] == pytest.approx(overall)
    # the range effect: within-tier correlation of a noisy model is far below its overall correlation
    assert table.loc[("SROCC", "noisy"), "Fair"] < overall
    assert any(p.name.startswith("tiers_toy_overall") for p in
               (project.root / "results" / "figures" / "evaluation").iterdir())


def test_cross_dataset_table_and_stale_tables_removed(project) -> None:
    truth = ground_truth(n_images=30, attributes=["overall"])
    within = with_predictions(truth, "noisy", noise=0.3)
    cross = with_predictions(truth, "noisy", noise=0.6, seed=5).assign(dataset="toy2")
    write_experiment(project.root, "a", pd.concat([within, cross]), tables=["reqa_table4", "reqa_table2"])
    spec = {"tables": ["reqa_table4", "reqa_table2"]}
    params = project.write_params(params_dict({"a": spec}, datasets=("toy", "toy2")))
    tables = evaluate.run(params, project.root, figures=False)
    assert "toy → toy2 SROCC" in tables["reqa_table4"].columns
    test = cross[cross.role == "test"]
    assert tables["reqa_table4"]["toy → toy2 SROCC"].iloc[0] == pytest.approx(
        stats.spearmanr(test.pred, test.mos).statistic)
    # within-dataset tables leave the cross rows out
    test_within = within[within.role == "test"]
    assert tables["reqa_table2"]["toy SROCC mean"].iloc[0] == pytest.approx(
        stats.spearmanr(test_within.pred, test_within.mos).statistic)
    # dropping a tag removes its files on the next run
    params = project.write_params(params_dict({"a": {"tables": ["reqa_table2"]}}, datasets=("toy", "toy2")))
    evaluate.run(params, project.root, figures=False)
    assert not (project.root / "results" / "tables" / "reqa_table4.md").exists()
    assert (project.root / "results" / "tables" / "reqa_table2.md").exists()


def test_display_labels_disambiguate_within_dataset() -> None:
    meta = {"a": {"label": "Net", "dataset": "d1"}, "b": {"label": "Net", "dataset": "d1"},
            "c": {"label": "Net", "dataset": "d2"}}
    assert evaluation.display_labels(meta) == {"a": "Net (a)", "b": "Net (b)", "c": "Net"}
    assert evaluation.primary_attribute(["noise", "overall"]) == "overall"
    assert evaluation.primary_attribute(["noise", "face"]) == "noise"


def test_raw_plcc_beside_the_fitted_one_and_the_bounds_switch(project) -> None:
    """Issue #27: a prediction set that the unconstrained logistic turns into a step at two outliers; the tables
    show raw PLCC beside the fitted one, and ``evaluate.logistic_bounds: false`` restores the unconstrained fit."""
    from iqalab.analysis import metrics

    truth = ground_truth(n_images=80, attributes=["overall"])
    test = (truth.role == "test").to_numpy()
    r = np.random.default_rng(7)
    pred = r.uniform(3.0, 4.6, len(truth))  # no signal in the bulk ...
    mos = r.uniform(2.5, 4.8, len(truth))
    low = np.flatnonzero(test)[:2]  # ... and two low outliers with low MOS
    pred[low], mos[low] = [1.7, 2.5], [1.6, 1.7]
    frame = truth.assign(pred=pred, mos=mos)
    write_experiment(project.root, "stepped", frame, tables=TABLE2)
    x, y = pred[test], mos[test]
    raw, bounded = metrics.plcc(x, y), metrics.plcc_logistic(x, y)
    free = metrics.plcc_logistic(x, y, **metrics.logistic_options(False))
    assert free > bounded + 0.05, "the unconstrained fit steps at the outliers"
    for bounds, fitted in ((True, bounded), (False, free)):
        raw_params = params_dict({"stepped": {"tables": TABLE2}})
        raw_params["evaluate"]["logistic_bounds"] = bounds
        tables = evaluate.run(project.write_params(raw_params), project.root, figures=False)
        row = tables["tuningiqa_table2"].set_index("model").loc["stepped"]
        assert row["PLCC (raw)"] == pytest.approx(raw, abs=1e-9)
        assert row["PLCC"] == pytest.approx(fitted, abs=1e-6)
        assert tables["tuningiqa_table3"].set_index(["model", "metric"]).loc[
            ("stepped", "PLCC (raw)"), "overall"] == pytest.approx(raw, abs=1e-9)
        summary = json.loads((project.root / "results" / "metrics" / "summary.json").read_text())
        assert summary["stepped"]["plcc"] == pytest.approx(raw, abs=1e-6)
        assert summary["stepped"]["plcc_logistic"] == pytest.approx(fitted, abs=1e-6)
    caption = (project.root / "results" / "tables" / "tuningiqa_table2.md").read_text().splitlines()[0]
    assert "unconstrained fit" in caption and "PLCC (raw)" in caption


def test_reqa_tiers_from_a_published_0_100_column(project) -> None:
    """Issue #27: KonIQ-10k's tiers come from MOS_zscore (0-100), kept by the adapter as ``tier_overall``, not from
    the 1-5 MOS mapped linearly; the caption names the scale each dataset's tiers use."""
    truth = ground_truth(n_images=150, attributes=["overall"], mos_range=(1.0, 5.0))
    noisy = with_predictions(truth, "noisy", noise=0.6)
    ids = truth.drop_duplicates("image_id").set_index("image_id").mos
    zscore = np.clip(100 * ((ids - 3.0) / 2.0) ** 3 / 2 + 50, 0, 100)  # monotone in MOS, but not linear
    folder = project.root / "build" / "datasets" / "toy"
    folder.mkdir(parents=True)
    pd.DataFrame({"image_id": ids.index, "tier_overall": zscore.to_numpy()}).to_parquet(folder / "images.parquet")
    (folder / "dataset.json").write_text(json.dumps({"tier_scale": {"overall": "MOS_zscore (0-100)"}}))
    write_experiment(project.root, "noisy", noisy, tables=["reqa_table1"])
    params = project.write_params(params_dict({"noisy": {"tables": ["reqa_table1"]}}))
    tables = evaluate.run(params, project.root, figures=False)
    table = tables["reqa_table1"].set_index(["metric", "model"])
    test = noisy[noisy.role == "test"].assign(tier=lambda f: f.image_id.map(zscore))
    linear = (test.mos - 1.0) / 4.0 * 100
    for tier, (lo, hi) in {"Good": (60, 80), "Fair": (40, 60), "Poor": (20, 40)}.items():
        part = test[(test.tier >= lo) & (test.tier < hi)]
        assert set(part.image_id) != set(test[(linear >= lo) & (linear < hi)].image_id), "the scales differ"
        assert table.loc[("SROCC", "noisy"), tier] == pytest.approx(stats.spearmanr(part.pred, part.mos).statistic)
    caption = (project.root / "results" / "tables" / "reqa_table1.md").read_text().splitlines()[0]
    assert "toy: MOS_zscore (0-100)" in caption


def test_fg_acc_in_both_modes_in_table2(project) -> None:
    """Issue #27: TuningIQA's FG-ACC in single-image mode (order of the scores) and pairwise mode (the pair head's
    P(a better), from ``<experiment>.pairs.parquet``) on the same pairs; Table 2 shows both."""
    truth = ground_truth(n_images=30, attributes=["overall"])
    test_ids = truth[truth.role == "test"].set_index("image_id").mos
    ids = test_ids.index.to_numpy()
    a, b = ids[:-1], ids[1:]
    target = (test_ids[a].to_numpy() > test_ids[b].to_numpy()).astype(float)
    pairs = pd.DataFrame({"image_a": a, "image_b": b, "attribute": "overall", "p": target, "source": "mos",
                          "fine": True})
    (project.root / "build" / "datasets" / "toy").mkdir(parents=True)
    pairs.to_parquet(project.root / "build" / "datasets" / "toy" / "pairs.parquet")
    # the pair head is right on the first 3/4 of the pairs and wrong on the rest; one pair has no probability
    right = np.arange(len(a)) < 0.75 * len(a)
    prob = np.where(right == (target == 1.0), 0.9, 0.1)
    prob[0] = np.nan
    write_experiment(project.root, "tuning", with_predictions(truth, "perfect"), tables=TABLE2)
    pd.DataFrame({"image_a": a, "image_b": b, "attribute": "overall", "split": "scene", "prob_a": prob}).to_parquet(
        project.root / "results" / "predictions" / "tuning.pairs.parquet")
    write_experiment(project.root, "plain", with_predictions(truth, "noisy"), tables=TABLE2)
    params = project.write_params(params_dict({"tuning": {"tables": TABLE2}, "plain": {"tables": TABLE2}}))
    tables = evaluate.run(params, project.root, figures=False)
    expected = right[1:].mean()
    long = tables["all_metrics"].set_index(["experiment", "attribute"])
    assert long.loc[("tuning", "overall"), "fg_acc"] == pytest.approx(1.0)
    assert long.loc[("tuning", "overall"), "fg_acc_pairwise"] == pytest.approx(expected)
    assert np.isnan(long.loc[("plain", "overall"), "fg_acc_pairwise"])
    table2 = tables["tuningiqa_table2"].set_index("model")
    assert table2.loc["tuning", "FG-ACC (pairwise)"] == pytest.approx(expected)
    assert np.isnan(table2.loc["plain", "FG-ACC (pairwise)"])
    assert table2.loc["tuning", "FG-ACC"] == pytest.approx(1.0)
    summary = json.loads((project.root / "results" / "metrics" / "summary.json").read_text())
    assert summary["tuning"]["fg_acc_pairwise"] == pytest.approx(expected) and "fg_acc_pairwise" not in summary["plain"]
    assert "pair head" in (project.root / "results" / "tables" / "tuningiqa_table2.md").read_text().splitlines()[0]


def test_reference_rows_are_never_ranked() -> None:
    """A yardstick row (panel ceiling, probe) above every model takes no bold and leaves the best model's."""
    table = _toy_table()
    table.reference_rows = (("a", "m2"),)
    mask = table.best_mask()
    assert mask["SRCC"].tolist() == [False, False, True, False]  # m3 is now the best ranked row of group a
    assert mask["MAE"].tolist() == [True, False, False, False]
    assert "| a | m2 | 0.9500 | 0.2000 | 20 |" in table.to_markdown()


def test_scene_averaged_correlations_figure_fhiqa_fig3(project) -> None:
    """FHIQA Fig. 3: per test scene the mean of SRCC, raw PLCC and KRCC (scipy's), one box per model and
    attribute, written by the stage for per-scene experiments only."""
    from iqalab.eval_figures import scene_averaged_correlations

    mos = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    swapped = np.array([1.0, 3.0, 2.0, 4.0, 5.0])
    rows = []
    for scene, pred in (("s0", mos), ("s1", -mos), ("s2", swapped), ("s3", mos[:2])):
        for i in range(len(pred)):
            rows.append({"image_id": f"{scene}_{i}", "attribute": "overall", "mos": mos[i], "pred": pred[i],
                         "split": "scene", "role": "test", "scene": scene})
    frame = pd.DataFrame(rows)
    write_experiment(project.root, "fh", frame, tables=["fhiqa_table1"], protocol="per_scene")
    params = project.write_params(params_dict({"fh": {"tables": ["fhiqa_table1"], "protocol": "per_scene"}}))
    evaluate.run(params, project.root, figures=True)
    assert (project.root / "results" / "figures" / "evaluation" / "scene_correlations_toy.png").is_file()
    inputs = evaluation.load_inputs(params, project.root)
    test = inputs.predictions[inputs.predictions["role"] == "test"]
    values = scene_averaged_correlations(test, inputs.meta)
    swap = np.mean([stats.spearmanr(swapped, mos).statistic, stats.pearsonr(swapped, mos).statistic,
                    stats.kendalltau(swapped, mos).statistic])
    # s3 has two images: left out, as in Table I's medians
    np.testing.assert_allclose(np.sort(values["overall", "fh"]), [-1.0, swap, 1.0], rtol=1e-9)
