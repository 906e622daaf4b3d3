"""Significance tests: hand cases (antisymmetry, identical -> 0, clearly better -> 1) and scipy cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from iqalab.analysis import metrics
from iqalab.analysis import significance as sig


@pytest.fixture(scope="module")
def models() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """MOS and three models: good (small noise), good_copy (same predictions) and poor (large noise)."""
    r = np.random.default_rng(11)
    mos = r.uniform(0, 100, 300)
    good = metrics.logistic4(mos, 1.0, 0.0, 50.0, 15.0) + r.normal(0, 0.02, 300)  # monotone, squashed
    poor = mos / 100 + r.normal(0, 0.25, 300)
    return {"good": good, "good_copy": good.copy(), "poor": poor}, mos


def test_f_test_matrix_hand_cases(models) -> None:
    preds, mos = models
    table = sig.residual_f_test_matrix(preds, mos)
    assert list(table.index) == ["good", "good_copy", "poor"]
    np.testing.assert_array_equal(table.to_numpy(), -table.to_numpy().T)  # antisymmetric, zero diagonal
    assert table.loc["good", "good_copy"] == 0  # identical predictions
    assert table.loc["good", "poor"] == 1 and table.loc["poor", "good"] == -1
    assert table.loc["good_copy", "poor"] == 1


def test_f_test_values_match_scipy_f_distribution() -> None:
    r = np.random.default_rng(2)
    a, b = r.normal(0, 1.0, 50), r.normal(0, 1.3, 40)
    res = sig.residual_f_test(a, b)
    ratio = np.var(b, ddof=1) / np.var(a, ddof=1)
    assert res.f == pytest.approx(1 / ratio)
    assert res.p_a_better == pytest.approx(1 - stats.f.cdf(ratio, 39, 49))
    assert res.p_b_better == pytest.approx(1 - stats.f.cdf(1 / ratio, 49, 39))
    # one-sided tests in opposite directions: p-values of a continuous F add to 1
    assert res.p_a_better + res.p_b_better == pytest.approx(1.0)


def test_pitman_morgan_matches_its_closed_form_and_pearsonr() -> None:
    r = np.random.default_rng(5)
    shared = r.normal(size=120)
    a = shared + r.normal(0, 0.3, 120)  # variance ~1.1 vs ~3.3
    b = shared + r.normal(0, 1.5, 120)
    out = sig.pitman_morgan_test(a, b)
    f = np.var(a, ddof=1) / np.var(b, ddof=1)
    r_ab = np.corrcoef(a, b)[0, 1]
    t_closed = (f - 1) * math.sqrt(118) / (2 * math.sqrt(f * (1 - r_ab**2)))
    assert out["t"] == pytest.approx(t_closed, rel=1e-9)
    assert out["p"] == pytest.approx(stats.pearsonr(a + b, a - b).pvalue, rel=1e-6)
    assert out["p"] < 0.01 and out["var_ratio"] < 1
    less = sig.pitman_morgan_test(a, b, alternative="less")
    assert less["p"] == pytest.approx(out["p"] / 2, rel=1e-6)
    same = sig.pitman_morgan_test(a, a)
    assert same["p"] == 1.0 and same["t"] == 0.0


def test_pitman_morgan_holds_its_level_under_the_null() -> None:
    r = np.random.default_rng(9)
    shared = r.normal(size=(200, 60))
    pvals = [sig.pitman_morgan_test(s + r.normal(size=60), s + r.normal(size=60))["p"] for s in shared]
    assert 0.01 < np.mean(np.asarray(pvals) < 0.05) < 0.11


def test_bootstrap_ci_vectorised_equals_loop_and_covers_estimate(models) -> None:
    preds, mos = models
    fast = sig.bootstrap_ci("srcc", preds["poor"], mos, n_boot=150, seed=3)
    slow = sig.bootstrap_ci(metrics.srcc, preds["poor"], mos, n_boot=150, seed=3)
    for key in ("estimate", "ci_low", "ci_high", "std"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-12)
    assert fast["estimate"] == pytest.approx(stats.spearmanr(preds["poor"], mos).statistic)
    assert fast["ci_low"] < fast["estimate"] < fast["ci_high"]
    again = sig.bootstrap_ci("srcc", preds["poor"], mos, n_boot=150, seed=3)
    assert again == fast  # seeded: reproducible
    # the interval narrows with more images
    wide = sig.bootstrap_ci("plcc", preds["poor"][:50], mos[:50], n_boot=300, seed=0)
    narrow = sig.bootstrap_ci("plcc", preds["poor"], mos, n_boot=300, seed=0)
    assert narrow["ci_high"] - narrow["ci_low"] < wide["ci_high"] - wide["ci_low"]


def test_bootstrap_rejects_unknown_metric_name(models) -> None:
    preds, mos = models
    with pytest.raises(ValueError, match="vectorised metrics"):
        sig.bootstrap_ci("krcc", preds["poor"], mos, n_boot=10)


def test_bootstrap_chunks_do_not_change_results(models, monkeypatch: pytest.MonkeyPatch) -> None:
    preds, mos = models
    whole = sig.bootstrap_distribution("mae", preds["poor"], mos, n_boot=64, seed=1)
    monkeypatch.setattr(sig, "_CHUNK_ELEMENTS", 300 * 5)  # 5 resamples per chunk
    chunked = sig.bootstrap_distribution("mae", preds["poor"], mos, n_boot=64, seed=1)
    np.testing.assert_allclose(whole, chunked)


def test_paired_bootstrap_srcc(models) -> None:
    preds, mos = models
    better = sig.paired_bootstrap_srcc(preds["good"], preds["poor"], mos, n_boot=500, seed=0)
    assert better["diff"] == pytest.approx(
        stats.spearmanr(preds["good"], mos).statistic - stats.spearmanr(preds["poor"], mos).statistic)
    assert 0 < better["ci_low"] < better["diff"] < better["ci_high"]
    assert better["p"] < 0.01
    same = sig.paired_bootstrap_srcc(preds["good"], preds["good_copy"], mos, n_boot=200, seed=0)
    assert same["diff"] == 0 and same["p"] == 1.0 and same["ci_low"] == same["ci_high"] == 0


def test_wilcoxon_across_splits_matches_scipy() -> None:
    r = np.random.default_rng(4)
    a = 0.85 + r.normal(0, 0.01, 20)
    b = a - 0.02 + r.normal(0, 0.01, 20)
    out = sig.wilcoxon_across_splits(a, b)
    assert out["p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert out["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["p"] < 0.01 and out["median_diff"] > 0
    tie = sig.wilcoxon_across_splits(a, a)
    assert tie["p"] == 1.0 and tie["mean_diff"] == 0


def test_split_metric_matrix_and_compare_tests(models) -> None:
    preds, mos = models
    r = np.random.default_rng(8)
    by_split = {"good": 0.9 + r.normal(0, 0.01, 10), "good_copy": None, "poor": 0.6 + r.normal(0, 0.01, 10)}
    by_split["good_copy"] = by_split["good"].copy()
    matrix = sig.split_metric_matrix(by_split)
    np.testing.assert_array_equal(matrix.to_numpy(), -matrix.to_numpy().T)
    assert matrix.loc["good", "poor"] == 1 and matrix.loc["good", "good_copy"] == 0
    table = sig.compare_tests(preds, mos, metric_by_split=by_split, n_boot=200).set_index(["model_a", "model_b"])
    assert len(table) == 3
    row = table.loc[("good", "poor")]
    assert (row["f_test"], row["pitman_morgan"], row["bootstrap_srcc"], row["wilcoxon_splits"]) == (1, 1, 1, 1)
    assert row["agree"]
    twin = table.loc[("good", "good_copy")]
    assert (twin["f_test"], twin["pitman_morgan"], twin["bootstrap_srcc"]) == (0, 0, 0) and twin["agree"]


def test_reqa_table3_over_few_splits_is_a_paired_t_test() -> None:
    """REQA Table III from the SROCC of the train-test iterations: with the default run's 3 splits a Wilcoxon test
    can never reject (smallest two-sided p = 0.25), the paired t-test can."""
    by_split = {"reqa": np.array([0.82, 0.85, 0.80]), "dbcnn": np.array([0.78, 0.80, 0.77]),
                "noisy": np.array([0.70, 0.86, 0.60])}
    matrix = sig.split_metric_matrix(by_split)
    t = stats.ttest_rel(by_split["reqa"], by_split["dbcnn"])
    assert t.pvalue < 0.05 and matrix.loc["reqa", "dbcnn"] == 1 and matrix.loc["dbcnn", "reqa"] == -1
    assert stats.ttest_rel(by_split["reqa"], by_split["noisy"]).pvalue > 0.05
    assert matrix.loc["reqa", "noisy"] == 0
    wilcoxon = sig.split_metric_matrix(by_split, test="wilcoxon")
    assert (wilcoxon.to_numpy() == 0).all()
    with pytest.raises(ValueError, match="test must be"):
        sig.split_metric_matrix(by_split, test="anova")


@pytest.mark.parametrize("seed", range(2))
def test_compare_tests_flags_disagreement(seed: int) -> None:
    # B = A's errors x 1.05 plus a little noise: residual variances differ by ~10%, too little for the unpaired
    # F-test, but on the same images the paired tests (Pitman-Morgan, paired bootstrap) detect it.
    r = np.random.default_rng(seed)
    mos = r.uniform(0, 1, 200)
    shared = r.normal(0, 0.1, 200)
    a = mos + shared
    b = mos + 1.05 * shared + r.normal(0, 0.01, 200)
    row = sig.compare_tests({"a": a, "b": b}, mos, n_boot=200).iloc[0]
    assert (row["f_test"], row["pitman_morgan"], row["bootstrap_srcc"]) == (0, 1, 1)
    assert not row["agree"]
