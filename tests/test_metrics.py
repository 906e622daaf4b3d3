"""Metrics against scipy.stats, known logistic parameters and hand-computed FG-ACC, medians and tiers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iqalab.analysis import metrics as m


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed: int) -> None:
    r = np.random.default_rng(seed)
    x = r.normal(size=80)
    y = 0.5 * x + r.normal(size=80)
    assert m.srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert m.plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert m.krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_srcc_with_ties_matches_scipy(rng: np.random.Generator) -> None:
    x = rng.integers(1, 6, size=60).astype(float)  # 1-5 votes: many ties
    y = x + rng.integers(-1, 2, size=60)
    assert m.srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert m.krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_krcc_hand_computed() -> None:
    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant -> (5 - 1) / 6
    assert m.krcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


def test_rowwise_correlations_match_scipy(rng: np.random.Generator) -> None:
    a = rng.normal(size=(4, 30))
    b = a + rng.normal(size=(4, 30))
    rows_p = m.pearson_rows(a, b)
    rows_s = m.spearman_rows(a, b)
    for k in range(4):
        assert rows_p[k] == pytest.approx(stats.pearsonr(a[k], b[k]).statistic, abs=1e-12)
        assert rows_s[k] == pytest.approx(stats.spearmanr(a[k], b[k]).statistic, abs=1e-12)


def test_errors_hand_computed() -> None:
    pred, mos = [1.0, 2.0, 4.0], [1.0, 3.0, 2.0]
    assert m.rmse(pred, mos) == pytest.approx(math.sqrt((0 + 1 + 4) / 3))
    assert m.mae(pred, mos) == pytest.approx(1.0)


@pytest.mark.parametrize("fn", [m.srcc, m.plcc, m.krcc, m.plcc_logistic])
def test_constant_input_is_nan_with_warning(fn) -> None:
    with pytest.warns(m.MetricWarning):
        assert math.isnan(fn(np.ones(10), np.arange(10.0)))
    with pytest.warns(m.MetricWarning):
        assert math.isnan(fn(np.arange(10.0), np.full(10, 3.0)))
    with pytest.warns(m.MetricWarning):
        assert math.isnan(fn([1.0], [2.0]))


def test_non_finite_pairs_are_dropped_with_warning() -> None:
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    y = np.array([2.0, 1.0, 3.0, 5.0, np.inf])
    with pytest.warns(m.MetricWarning, match="dropped 2"):
        value = m.srcc(x, y)
    assert value == pytest.approx(stats.spearmanr([1, 2, 4], [2, 1, 5]).statistic)


@pytest.mark.parametrize("params", [(90.0, 10.0, 0.5, 0.1), (1.0, 5.0, 40.0, 8.0), (4.6, 1.2, -2.0, 0.7)])
def test_logistic_fit_recovers_known_parameters(params: tuple[float, ...], rng: np.random.Generator) -> None:
    b1, b2, b3, b4 = params
    x = rng.uniform(b3 - 5 * b4, b3 + 5 * b4, size=300)
    fit = m.logistic4_fit(x, m.logistic4(x, *params))
    assert fit.kind == "logistic4" and not fit.fallback
    assert np.allclose(fit.params, params, rtol=1e-4, atol=1e-6 * max(map(abs, params)))


def test_logistic_fit_with_noise_is_close_and_beats_linear(rng: np.random.Generator) -> None:
    x = rng.uniform(0, 1, size=400)
    y = m.logistic4(x, 85, 15, 0.55, 0.08) + rng.normal(0, 2.0, size=400)
    fit = m.logistic4_fit(x, y)
    assert np.allclose(fit.params, (85, 15, 0.55, 0.08), rtol=0.05)
    linear_sse = np.sum((np.polyval(np.polyfit(x, y, 1), x) - y) ** 2)
    assert fit.sse < linear_sse
    assert m.plcc_logistic(x, y) > m.plcc(x, y)
    assert m.rmse(x * 100, y, logistic=True) < m.rmse(x * 100, y)


@pytest.mark.parametrize(("x", "params"), [
    # evenly spaced predictions: the standardised median is ~1e-17 and the old finite-difference fit left the
    # mid-point there (PLCC 0.795 instead of 1)
    (np.linspace(0.0, 1.0, 100), (5.0, 1.0, 0.2, 0.05)),
    (np.linspace(1.0, 5.0, 60), (90.0, 10.0, 3.8, 0.3)),
    # symmetric predictions: the median is exactly 0 (PLCC 0.875 through the linear fallback before)
    (np.linspace(-1.0, 1.0, 41), (1.0, 0.0, 0.5, 0.15)),
    (np.linspace(-1.0, 1.0, 41), (1.0, 0.0, -0.3, 0.15)),
])
def test_logistic_fit_is_exact_on_exact_logistic_data(x: np.ndarray, params: tuple[float, ...]) -> None:
    y = m.logistic4(x, *params)
    fit = m.logistic4_fit(x, y)
    assert fit.kind == "logistic4" and fit.active == ()
    assert np.allclose(fit.params, params, rtol=1e-6, atol=1e-8)
    assert m.plcc_logistic(x, y) == pytest.approx(1.0, abs=1e-9)
    assert m.summarise(x, y)["plcc_logistic"] == pytest.approx(1.0, abs=1e-9)


def test_logistic_jacobian_matches_finite_differences(rng: np.random.Generator) -> None:
    x = rng.normal(size=30)
    p = np.array([2.0, -1.0, 0.3, 0.7])
    step = 1e-6
    numeric = np.column_stack([(m.logistic4(x, *(p + step * e)) - m.logistic4(x, *(p - step * e))) / (2 * step)
                               for e in np.eye(4)])
    assert np.allclose(m.logistic4_jacobian(x, *p), numeric, atol=1e-7)


def test_logistic_fit_does_not_step_at_two_outliers() -> None:
    # 54 predictions without signal plus two low outliers with low MOS: the unconstrained fit jumps between the
    # outliers and the bulk (width 0.03 SD) and lifts PLCC from 0.24 to 0.50 while SRCC is 0.05
    r = np.random.default_rng(7)
    x = np.concatenate([r.uniform(3.0, 4.6, 54), [1.7, 2.5]])
    y = np.concatenate([r.uniform(2.5, 4.8, 54), [1.6, 1.7]])
    assert m.srcc(x, y) < 0.1 and m.plcc(x, y) == pytest.approx(0.2398, abs=1e-3)
    assert m.plcc_logistic(x, y) <= m.plcc(x, y) + 0.02
    step = m.logistic4_fit(x, y, min_width=0.0, mid_quantile=0.0)  # the switch back to the unconstrained fit
    assert step.kind == "logistic4" and step.params[3] < 0.05 * x.std()
    assert m.plcc(step(x), y) > 0.45


def test_logistic_fit_bounds_hold_and_are_reported(rng: np.random.Generator) -> None:
    # a true width of 0.02 SD is below the default bound: the fit stays at the bound and says so
    x = rng.normal(size=200)
    y = m.logistic4(x, 1.0, 0.0, 0.1, 0.02)
    fit = m.logistic4_fit(x, y)
    assert fit.kind == "logistic4" and "min_width" in fit.active
    assert fit.params[3] == pytest.approx(m.LOGISTIC_MIN_WIDTH * x.std(), rel=1e-6)
    free = m.logistic4_fit(x, y, min_width=0.0, mid_quantile=0.0)
    assert free.active == () and free.params[2:] == pytest.approx((0.1, 0.02), rel=1e-3)
    # a mid-point in the top 5 % of the predictions is pulled back to the 90th percentile
    y = m.logistic4(x, 1.0, 0.0, np.quantile(x, 0.97), 0.5)
    fit = m.logistic4_fit(x, y)
    assert "mid_quantile" in fit.active
    assert fit.params[2] == pytest.approx(np.quantile(x, 1 - m.LOGISTIC_MID_QUANTILE), rel=1e-6)
    with pytest.raises(ValueError):
        m.logistic4_fit(x, y, mid_quantile=0.5)


def test_logistic_fit_falls_back_to_linear_and_flags_it() -> None:
    fit = m.logistic4_fit([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])  # too few points for 4 parameters
    assert fit.fallback and fit.kind == "linear" and "linear" in fit.message
    slope, intercept = np.polyfit([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], 1)
    assert fit.params == pytest.approx((slope, intercept))


def test_logistic_map_is_monotone_and_plcc_logistic_invariant_to_affine_rescaling(rng) -> None:
    x = rng.normal(size=200)
    y = np.tanh(x) * 2 + rng.normal(0, 0.2, size=200)
    fit = m.logistic4_fit(x, y)
    grid = np.linspace(x.min(), x.max(), 50)
    assert np.all(np.diff(fit(grid)) >= 0)
    assert m.plcc_logistic(3 * x + 7, y) == pytest.approx(m.plcc_logistic(x, y), abs=1e-6)


def _pairs() -> pd.DataFrame:
    return pd.DataFrame({
        "image_a": ["a", "a", "b", "c", "d", "a"],
        "image_b": ["b", "c", "c", "d", "e", "e"],
        "attribute": ["overall"] * 5 + ["noise"],
        "p": [1.0, 0.75, 0.5, 0.0, 0.2, 1.0],
        "source": ["refined"] * 6,
        "fine": [True, True, True, True, True, False],
    })


def test_fg_acc_hand_computed() -> None:
    scores = {"a": 0.9, "b": 0.5, "c": 0.6, "d": 0.6, "e": 0.1}
    # overall fine pairs: a>b correct; a>c correct; b~c (p=.5) excluded; c vs d predicted tie (target d better);
    # d vs e target e better (p=.2) but d scored higher -> wrong.  Decided: 4.
    assert m.fg_acc(_pairs(), scores, attribute="overall") == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert m.fg_acc(_pairs(), scores, attribute="overall", predicted_tie="wrong") == pytest.approx(2 / 4)
    # the non-fine pair is only counted without fine_only
    assert m.fg_acc(_pairs(), scores, attribute="noise", fine_only=False) == pytest.approx(1.0)
    with pytest.warns(m.MetricWarning):
        assert math.isnan(m.fg_acc(_pairs(), scores, attribute="noise"))


def test_fg_acc_skips_pairs_without_predictions() -> None:
    scores = pd.Series({"a": 0.9, "b": 0.5})
    assert m.fg_acc(_pairs(), scores, attribute="overall") == pytest.approx(1.0)  # only a-b is scored


def test_fg_acc_pairwise_hand_computed() -> None:
    pairs = _pairs()
    # P(a better) from a pair head, one per row: a>b right (0.8); a>c wrong (0.3 vs p=.75); b~c excluded;
    # c vs d: 0.5 is a predicted tie (half); d vs e right (0.1, target e better); the "noise" row is not fine
    prob = [0.8, 0.3, 0.9, 0.5, 0.1, 0.2]
    assert m.fg_acc_pairwise(pairs, prob, attribute="overall") == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert m.fg_acc_pairwise(pairs, prob, attribute="overall", predicted_tie="wrong") == pytest.approx(2 / 4)
    assert m.fg_acc_pairwise(pairs, prob, attribute="noise", fine_only=False) == pytest.approx(0.0)
    # a Series is aligned on the pairs' index; a missing probability skips the pair
    series = pd.Series(prob, index=pairs.index)[::-1].drop(index=1)
    assert m.fg_acc_pairwise(pairs, series, attribute="overall") == pytest.approx((1 + 0.5 + 1) / 3)
    with pytest.raises(ValueError):
        m.fg_acc_pairwise(pairs, prob[:3])


def test_fg_acc_modes_agree_when_the_pair_head_is_the_score_difference() -> None:
    scores = {"a": 0.9, "b": 0.5, "c": 0.6, "d": 0.6, "e": 0.1}
    pairs = _pairs()
    diff = pairs["image_a"].map(scores) - pairs["image_b"].map(scores)
    prob = 1 / (1 + np.exp(-10 * diff))
    for attribute in ("overall", "noise"):
        assert m.fg_acc_pairwise(pairs, prob, attribute=attribute, fine_only=False) == pytest.approx(
            m.fg_acc(pairs, scores, attribute=attribute, fine_only=False))


def test_per_group_median_hand_computed() -> None:
    frame = pd.DataFrame({
        "scene": ["s1"] * 4 + ["s2"] * 4 + ["s3"] * 4 + ["s4"] * 2,
        "pred": [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2],
        "mos": [1, 2, 3, 4, 4, 3, 2, 1, 1, 2, 4, 3, 5, 6],
    })
    table = m.per_group_metrics(frame, "scene", {"srcc": m.srcc, "mae": m.mae})
    # SRCC per scene: 1, -1, 0.8; s4 has 2 images (< min_size 3) -> NaN and left out of the median
    assert table.set_index("scene")["srcc"].iloc[:3].tolist() == pytest.approx([1.0, -1.0, 0.8])
    assert math.isnan(table.set_index("scene").loc["s4", "srcc"])
    med = m.per_group_median(frame, "scene", {"srcc": m.srcc, "mae": m.mae})
    assert med["srcc"] == pytest.approx(0.8)
    assert med["mae"] == pytest.approx(np.median([0.0, 2.0, 0.5]))


def test_quality_tiers_boundaries() -> None:
    tiers = m.quality_tiers([0, 19.999, 20, 39.9, 40, 60, 79.99, 80, 100])
    assert list(tiers) == ["Bad", "Bad", "Poor", "Poor", "Fair", "Good", "Good", "Excellent", "Excellent"]
    # 1-5 scale maps linearly: 1 -> 0, 4.2 -> 80, 5 -> 100
    assert list(m.quality_tiers([1.0, 1.8, 4.19, 4.2, 5.0], mos_range=(1, 5))) == [
        "Bad", "Poor", "Good", "Excellent", "Excellent"]
    assert pd.isna(m.quality_tiers([np.nan])[0])
    with pytest.raises(ValueError):
        m.quality_tiers([101.0])


def test_per_tier_metrics_matches_direct_computation(rng: np.random.Generator) -> None:
    mos = rng.uniform(0, 100, size=300)
    pred = mos + rng.normal(0, 10, size=300)
    table = m.per_tier_metrics(pred, mos)
    assert list(table.index) == list(m.TIERS)
    assert table["n"].sum() == 300
    good = (mos >= 60) & (mos < 80)
    assert table.loc["Good", "n"] == good.sum()
    assert table.loc["Good", "srcc"] == pytest.approx(stats.spearmanr(pred[good], mos[good]).statistic)
    assert table.loc["Good", "plcc"] == pytest.approx(stats.pearsonr(pred[good], mos[good]).statistic)
    # the range effect: correlation inside a tier is lower than over the whole range
    assert (table["srcc"] < m.srcc(pred, mos)).all()


def test_summarise_and_mean_std(rng: np.random.Generator) -> None:
    runs = []
    for _ in range(3):
        mos = rng.uniform(1, 5, size=60)
        runs.append(m.summarise(mos + rng.normal(0, 0.5, size=60), mos))
    keys = {"n", "srcc", "plcc", "plcc_logistic", "krcc", "rmse", "mae", "rmse_logistic", "mae_logistic",
            "logistic_fallback"}
    assert keys == set(runs[0])
    agg = m.mean_std([*runs, {"srcc": math.nan, "note": "ignored"}])
    values = [r["srcc"] for r in runs]
    assert agg["srcc"]["mean"] == pytest.approx(np.mean(values))
    assert agg["srcc"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert agg["srcc"]["n"] == 3 and "note" not in agg
    assert math.isnan(m.mean_std([{"srcc": 0.5}])["srcc"]["std"])


def test_summarise_constant_prediction_does_not_crash() -> None:
    with pytest.warns(m.MetricWarning):
        out = m.summarise(np.full(20, 0.5), np.linspace(1, 5, 20))
    assert math.isnan(out["srcc"]) and math.isnan(out["plcc_logistic"])
    assert out["mae"] == pytest.approx(np.mean(np.abs(0.5 - np.linspace(1, 5, 20))))


def test_per_tier_metrics_takes_custom_metric_fns(rng: np.random.Generator) -> None:
    """docs/deviations.md: ``per_tier_metrics(metric_fns=...)`` replaces the default SRCC / raw PLCC, e.g. by a
    logistic-mapped PLCC; each tier's value is the function on that tier's images, tiers below ``min_size`` NaN."""
    mos = np.concatenate([rng.uniform(1.0, 4.2, size=200), [4.5, 4.9]])  # 1-5 scale, 2 Excellent images only
    pred = mos + rng.normal(0, 0.4, size=mos.size)

    def plcc_logistic(x: np.ndarray, y: np.ndarray) -> float:
        return m.plcc(m.logistic4_fit(x, y)(x), y)

    fns = {"krcc": lambda x, y: stats.kendalltau(x, y).statistic, "plcc_logistic": plcc_logistic,
           "mae": lambda x, y: float(np.mean(np.abs(x - y)))}
    table = m.per_tier_metrics(pred, mos, mos_range=(1.0, 5.0), metric_fns=fns)
    assert list(table.columns) == ["n", "krcc", "plcc_logistic", "mae"]  # no default srcc / plcc
    tiers = np.asarray(m.quality_tiers(mos, (1.0, 5.0)))
    for tier in ("Good", "Fair", "Poor", "Bad"):
        sel = tiers == tier
        assert table.loc[tier, "n"] == sel.sum() >= 3, tier
        assert table.loc[tier, "krcc"] == pytest.approx(stats.kendalltau(pred[sel], mos[sel]).statistic), tier
        assert table.loc[tier, "mae"] == pytest.approx(np.mean(np.abs(pred[sel] - mos[sel]))), tier
        assert table.loc[tier, "plcc_logistic"] == pytest.approx(plcc_logistic(pred[sel], mos[sel])), tier
    assert table.loc["Excellent", "n"] == 2 and table.loc["Excellent", ["krcc", "plcc_logistic", "mae"]].isna().all()
