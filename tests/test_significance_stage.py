"""Stage significance: F-test matrix, paired tests and bootstrap CIs from fake predictions on shared images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from iqalab.analysis import significance as sig
from iqalab.stages import significance
from iqalab.tables import read_table_csv
from tests.evaluate_fakes import ground_truth, params_dict, with_predictions, write_experiment


def _setup(project, splits=("random_00",), bootstrap=50, drop_images=0):
    """good (small noise), bad (large noise), bad_copy (identical to bad); ``good`` misses some test images."""
    truth = ground_truth(n_images=60, splits=splits)
    good = with_predictions(truth, "noisy", noise=0.15, seed=3)
    bad = with_predictions(truth, "noisy", noise=1.2, seed=4)
    if drop_images:
        good = good[~good.image_id.isin([f"img{i:03d}" for i in range(drop_images)])]
    for name, frame in (("good", good), ("bad", bad), ("bad_copy", bad)):
        write_experiment(project.root, name, frame)
    params = project.write_params(params_dict({"good": {}, "bad": {}, "bad_copy": {}}, bootstrap=bootstrap))
    return params, truth, good, bad


def test_f_test_matrix_antisymmetric_identical_zero_and_files(project) -> None:
    params, truth, good, bad = _setup(project)
    results = significance.run(params, project.root)
    matrix = results["f_test_toy_overall"]
    values = matrix.to_numpy()
    np.testing.assert_array_equal(values, -values.T)
    assert (np.diag(values) == 0).all()
    assert matrix.loc["bad", "bad_copy"] == 0 and matrix.loc["bad_copy", "bad"] == 0
    assert matrix.loc["good", "bad"] == 1 and matrix.loc["bad", "good"] == -1
    out = project.root / "results" / "significance"
    for ext in ("md", "csv", "tex", "png", "pdf"):
        assert (out / f"f_test_toy_overall.{ext}").is_file()
    md = (out / "f_test_toy_overall.md").read_text()
    assert "SIMULATED" in md.splitlines()[0]
    assert "**" not in md.split("\n", 1)[1]  # no bold in a verdict matrix
    csv = read_table_csv(out / "f_test_toy_overall.csv").set_index("model")
    assert csv.loc["good", "bad"] == 1
    # identical models: every paired test says "no difference" and they agree
    compare = results["compare_tests_toy_overall"].set_index(["model_a", "model_b"])
    same = compare.loc[("bad", "bad_copy")]
    assert same["f_test"] == 0 and same["pitman_morgan"] == 0 and same["bootstrap_srcc"] == 0 and same["agree"]
    assert compare.loc[("bad", "good"), "pitman_morgan"] == -1  # pairs follow params order (sorted keys)
    assert "wilcoxon_splits" not in compare.columns  # one split only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["toy/overall"]["table3"].startswith("not computed: 1 common split")
    assert not (out / "split_srcc_toy_overall.md").exists()


def test_alignment_on_common_images_matches_library(project) -> None:
    params, truth, good, bad = _setup(project, drop_images=10)
    results = significance.run(params, project.root, figures=False)
    summary = json.loads((project.root / "results" / "significance" / "summary.json").read_text())
    test_ids = set(truth[(truth.role == "test") & (truth.attribute == "overall")].image_id)
    common = sorted(test_ids & set(good.image_id))
    assert summary["toy/overall"]["n_images"] == len(common) < len(test_ids)
    pick = {name: frame[(frame.role == "test") & (frame.attribute == "overall")].set_index("image_id").loc[common]
            for name, frame in (("good", good), ("bad", bad), ("bad_copy", bad))}
    expected = sig.residual_f_test_matrix({k: v.pred for k, v in pick.items()}, pick["good"].mos)
    got = results["f_test_toy_overall"]
    pd.testing.assert_frame_equal(got, expected.loc[got.index, got.columns], check_names=False)
    # the p-values too: they move with any misalignment (another image set, rows paired by position)
    residuals = {k: sig.logistic_residuals(v.pred, v.mos) for k, v in pick.items()}
    compare = results["compare_tests_toy_overall"].set_index(["model_a", "model_b"])
    f = sig.residual_f_test(residuals["bad"], residuals["good"])
    assert compare.loc[("bad", "good"), "p_f"] == pytest.approx(min(f.p_a_better, f.p_b_better), rel=1e-9)
    assert compare.loc[("bad", "good"), "p_pitman_morgan"] == pytest.approx(
        sig.pitman_morgan_test(residuals["bad"], residuals["good"])["p"], rel=1e-9)


def test_wilcoxon_across_splits_and_bootstrap_ci(project) -> None:
    params, truth, good, bad = _setup(project, splits=("random_00", "random_01", "random_02", "random_03"))
    results = significance.run(params, project.root, figures=False)
    compare = results["compare_tests_toy_overall"].set_index(["model_a", "model_b"])
    assert "wilcoxon_splits" in compare.columns
    assert compare.loc[("bad", "bad_copy"), "wilcoxon_splits"] == 0
    assert (project.root / "results" / "significance" / "split_srcc_toy_overall.md").is_file()
    ci = results["bootstrap_ci"]
    assert len(ci) == 3 * 2 * 4  # models x attributes x splits
    assert (ci["SRCC low"] <= ci["SRCC"]).all() and (ci["SRCC"] <= ci["SRCC high"]).all()
    assert (ci["PLCC low"] <= ci["PLCC high"]).all()
    widths = ci.assign(width=ci["SRCC high"] - ci["SRCC low"]).groupby("model")["width"].mean()
    assert widths["good"] < widths["bad"]  # a better model has a tighter interval
    # each row's estimates are the test images' SRCC and raw PLCC of that model, attribute and split (scipy)
    from scipy import stats

    for name, frame in (("good", good), ("bad", bad)):
        for split in ("random_00", "random_03"):
            part = frame[(frame.role == "test") & (frame.attribute == "overall") & (frame.split == split)]
            row = ci[(ci.model == name) & (ci.attribute == "overall") & (ci.split == split)].iloc[0]
            assert row["n"] == len(part)
            assert row["SRCC"] == pytest.approx(stats.spearmanr(part.pred, part.mos).statistic, abs=1e-12)
            assert row["PLCC"] == pytest.approx(stats.pearsonr(part.pred, part.mos).statistic, abs=1e-12)


def test_no_bootstrap_and_split_choice(project) -> None:
    truth = ground_truth(n_images=40, splits=("a_split", "b_split"))
    only_b = with_predictions(truth, "noisy", noise=0.3)
    write_experiment(project.root, "both", with_predictions(truth, "noisy", noise=0.5, seed=2))
    write_experiment(project.root, "only_b", only_b[only_b.split == "b_split"])
    params = project.write_params(params_dict({"both": {}, "only_b": {}}, bootstrap=0))
    results = significance.run(params, project.root, figures=False)
    summary = json.loads((project.root / "results" / "significance" / "summary.json").read_text())
    assert summary["toy/overall"]["split"] == "b_split"  # the first split both models have
    assert "bootstrap_ci" not in results
    assert "bootstrap_srcc" not in results["compare_tests_toy_overall"].columns
    assert not (project.root / "results" / "significance" / "bootstrap_ci.csv").exists()


def test_mismatched_ground_truth_is_an_error(project) -> None:
    truth = ground_truth(n_images=30)
    other = truth.assign(mos=truth.mos + 0.5)
    write_experiment(project.root, "x", with_predictions(truth, "noisy"))
    write_experiment(project.root, "y", with_predictions(other, "noisy"))
    params = project.write_params(params_dict({"x": {}, "y": {}}))
    with pytest.raises(ValueError, match="disagree on the MOS"):
        significance.run(params, project.root, figures=False)


def test_reqa_table3_from_the_srocc_of_the_splits(project) -> None:
    """Issue #27: REQA Table III is computed from the SROCC of every train-test iteration (paired t-test), also
    with the default run's 3 splits; the residual F-test stays as the second output."""
    from scipy import stats

    splits = ("random_00", "random_01", "random_02")
    params, truth, good, bad = _setup(project, splits=splits, bootstrap=0)
    results = significance.run(params, project.root)
    out = project.root / "results" / "significance"
    matrix = results["split_srcc_toy_overall"]
    srcc = {}
    for name, frame in (("good", good), ("bad", bad)):
        test = frame[(frame.role == "test") & (frame.attribute == "overall")]
        srcc[name] = [stats.spearmanr(g.pred, g.mos).statistic for _, g in test.groupby("split")]
    summary = json.loads((out / "summary.json").read_text())["toy/overall"]
    np.testing.assert_allclose(summary["split_srcc"]["good"], srcc["good"], atol=1e-12)
    expected = 1 if stats.ttest_rel(srcc["good"], srcc["bad"]).pvalue < 0.05 else 0
    assert expected == 1 and matrix.loc["good", "bad"] == 1 and matrix.loc["bad", "good"] == -1
    assert matrix.loc["bad", "bad_copy"] == 0
    assert summary["table3"] == "split_srcc_toy_overall" and summary["common_splits"] == 3
    for ext in ("md", "csv", "tex", "png", "pdf"):
        assert (out / f"split_srcc_toy_overall.{ext}").is_file()
        assert (out / f"f_test_toy_overall.{ext}").is_file()
    assert "t-test on the SROCC" in (out / "split_srcc_toy_overall.md").read_text().splitlines()[0]
