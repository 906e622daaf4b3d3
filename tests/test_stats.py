"""Annotation statistics: pandas-equal correlation matrices, OLS recovery, BT.500 screening, CIs, pairs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from iqalab.analysis import stats


@pytest.fixture
def images() -> pd.DataFrame:
    """Synthetic attribute MOS with a known linear overall = 0.5 + 0.4 sharp + 0.3 noise + 0.2 colour."""
    r = np.random.default_rng(7)
    n = 400
    sharp, noise, colour = r.uniform(1, 5, n), r.uniform(1, 5, n), r.uniform(1, 5, n)
    overall = 0.5 + 0.4 * sharp + 0.3 * noise + 0.2 * colour + r.normal(0, 0.05, n)
    frame = pd.DataFrame({"image_id": [f"im{i:03d}" for i in range(n)], "mos_sharpness": sharp,
                          "mos_noise": noise, "mos_colour": colour, "mos_overall": overall})
    frame.loc[3, "mos_noise"] = np.nan  # a missing attribute score
    return frame


@pytest.mark.parametrize(("method", "pandas_method"), [("pearson", "pearson"), ("srcc", "spearman")])
def test_corr_matrix_equals_pandas(images: pd.DataFrame, method: str, pandas_method: str) -> None:
    ours = stats.attribute_corr_matrix(images, method=method)
    cols = [c for c in images.columns if c.startswith("mos_")]
    expected = images[cols].corr(method=pandas_method)
    np.testing.assert_allclose(ours.to_numpy(), expected.to_numpy(), atol=1e-12)
    assert list(ours.columns) == [c.removeprefix("mos_") for c in cols]


def test_corr_matrix_subset_and_bad_method(images: pd.DataFrame) -> None:
    sub = stats.attribute_corr_matrix(images, ["overall", "sharpness"])
    assert sub.shape == (2, 2) and sub.loc["overall", "sharpness"] > 0.5
    with pytest.raises(ValueError):
        stats.attribute_corr_matrix(images, method="cosine")


def test_ols_recovers_known_coefficients(images: pd.DataFrame) -> None:
    res = stats.ols_overall(images)
    table = res.table
    assert res.n == len(images) - 1  # the row with a missing noise score is dropped
    for term, true in [("const", 0.5), ("sharpness", 0.4), ("noise", 0.3), ("colour", 0.2)]:
        assert table.loc[term, "coef"] == pytest.approx(true, abs=0.02)
        assert table.loc[term, "ci_low"] < true < table.loc[term, "ci_high"]
    assert (table.loc[["sharpness", "noise", "colour"], "p"] < 1e-10).all()
    assert res.r2 > 0.99 and res.adj_r2 <= res.r2
    # independent predictors: VIF close to 1; residuals have mean ~0 and one value per used row
    assert table.loc[["sharpness", "noise", "colour"], "vif"].between(0.99, 1.1).all()
    assert len(res.residuals) == res.n and abs(res.residuals.mean()) < 1e-10
    assert res.equation().startswith("overall = ")
    assert set(res.as_dict()["terms"]) == {"const", "sharpness", "noise", "colour"}


def test_ols_without_intercept_is_eq1_as_printed(images: pd.DataFrame) -> None:
    res = stats.ols_overall(images, intercept=False)
    used = images.dropna()
    x = used[["mos_sharpness", "mos_noise", "mos_colour"]].to_numpy()
    y = used["mos_overall"].to_numpy()
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)  # through the origin
    assert "const" not in res.table.index and res.intercept is False
    assert res.table["coef"].to_numpy() == pytest.approx(coef, rel=1e-9)
    ssr = np.sum((y - x @ coef) ** 2)
    assert res.r2 == pytest.approx(1 - ssr / np.sum((y - y.mean()) ** 2), rel=1e-9)
    assert res.r2_uncentered == pytest.approx(1 - ssr / np.sum(y**2), rel=1e-9)
    # the true model has an intercept of 0.5: forcing it to 0 costs centred R^2 but the uncentred R^2 stays ~1
    with_const = stats.ols_overall(images)
    assert with_const.intercept and res.r2 < with_const.r2 and res.r2_uncentered > 0.99
    out = res.as_dict()
    assert out["intercept"] is False and out["r2_uncentered"] == res.r2_uncentered and "const" not in out["terms"]
    assert res.equation().startswith(f"overall = {coef[0]:.4f} x sharpness")


def test_ols_standardised_betas_and_collinearity() -> None:
    r = np.random.default_rng(3)
    a = r.normal(size=300)
    b = a + r.normal(0, 0.1, size=300)  # nearly collinear with a
    y = 2 * a + r.normal(0, 0.1, size=300)
    frame = pd.DataFrame({"mos_a": a, "mos_b": b, "mos_overall": y})
    res = stats.ols_overall(frame, predictors=["a", "b"], standardise=True)
    assert "const" not in res.table.index
    # standardised beta of a single predictor would equal its correlation; check VIF flags collinearity
    assert (res.table["vif"] > 10).all()
    single = stats.ols_overall(frame, predictors=["a"], standardise=True)
    assert single.table.loc["a", "coef"] == pytest.approx(np.corrcoef(a, y)[0, 1], abs=1e-9)


def _ratings(n_images: int = 60, n_raters: int = 15, random_rater: bool = True, seed: int = 0):
    """Raters = latent quality + small personal noise, rounded to 1-5; optionally one uniform-random rater."""
    r = np.random.default_rng(seed)
    quality = r.uniform(1.0, 5.0, n_images)
    rows = []
    for k in range(n_raters):
        if random_rater and k == n_raters - 1:
            scores = r.integers(1, 6, n_images).astype(float)
        else:
            scores = np.clip(np.round(quality + r.normal(0, 0.3, n_images)), 1, 5)
        rows += [{"image_id": f"im{i}", "rater": f"r{k:02d}", "attribute": "overall", "score": s}
                 for i, s in enumerate(scores)]
    ratings = pd.DataFrame(rows)
    images = ratings.groupby("image_id", as_index=False)["score"].mean().rename(columns={"score": "mos_overall"})
    return ratings, images


@pytest.mark.parametrize("seed", range(3))
def test_bt500_rejects_planted_random_rater(seed: int) -> None:
    # 400 images: enough outliers that the random rater's P and Q are reliably balanced (|P-Q|/(P+Q) < 0.3)
    ratings, _ = _ratings(n_images=400, seed=seed)
    report = stats.bt500_screening(ratings)
    assert report.rejected == ["r14"]
    row = report.raters.set_index("rater").loc["r14"]
    assert row["outlier_rate"] > 0.05 and row["asymmetry"] < 0.3
    clean = stats.bt500_screening(ratings[ratings["rater"] != "r14"])
    assert clean.rejected == []


def test_bt500_one_sided_outliers_are_not_rejected() -> None:
    ratings, _ = _ratings(random_rater=False)
    biased = ratings.copy()
    lenient = biased["rater"] == "r00"
    biased.loc[lenient, "score"] = np.minimum(biased.loc[lenient, "score"] + 2, 5)  # always higher: P only
    row = stats.bt500_screening(biased).raters.set_index("rater").loc["r00"]
    assert row["P"] > 0 and row["Q"] == 0 and not row["rejected"]  # |P - Q| / (P + Q) = 1 >= 0.3


def test_simulator_panel_screens_as_the_ratings_table_does() -> None:
    """One BT.500 implementation: the panel's per-attribute screening equals :func:`stats.bt500_screening` of its
    own ratings table, attribute by attribute (with a planted careless rater, so something is rejected)."""
    from iqalab.sim.observers import Panel, ratings_frame

    panel = Panel(n_raters=12, seed=3, careless=0.0, min_kept=1)
    truth = np.random.default_rng(4).uniform(1, 5, size=(300, 2))
    votes = panel.vote(truth)
    votes[5] = np.random.default_rng(5).integers(1, 6, size=votes[5].shape)  # rater r005 answers at random
    keep = panel.screen(votes, method="bt500")
    ratings = ratings_frame(votes, keep, [f"im{i}" for i in range(300)], ["a", "b"])
    for k, attribute in enumerate(["a", "b"]):
        report = stats.bt500_screening(ratings, attribute)
        assert "r005" in report.rejected
        assert sorted(report.rejected) == [f"r{i:03d}" for i in np.flatnonzero(~keep[:, k])]


def test_wilson_interval_against_scipy_edges_and_fractions() -> None:
    for k, n in ((0, 10), (3, 10), (17, 20), (33, 44), (20, 20), (264, 528)):
        lo, hi = stats.wilson_interval(k, n)
        ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert isinstance(lo, float) and (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert stats.wilson_interval(0, 12)[0] == 0.0 and stats.wilson_interval(12, 12)[1] == 1.0, "exact edges"
    lo, hi = stats.wilson_interval(5.5, 10)  # ties count half: fractional successes are allowed
    assert lo < 0.55 < hi and stats.wilson_interval(5.5, 10, 0.5)[0] > lo, "narrower at lower confidence"
    lo, hi = stats.wilson_interval(np.array([3.0, 1.0, 2.0]), np.array([10.0, 0.0, np.nan]))
    assert lo[0] == pytest.approx(stats.wilson_interval(3, 10)[0]) and np.isnan(lo[1:]).all() and np.isnan(hi[1:]).all()


def test_rater_vs_mos_overall_higher_than_within_tiers() -> None:
    ratings, images = _ratings(n_images=200, random_rater=False)
    table = stats.rater_vs_mos(ratings, images, "overall", tiers=stats.equal_tiers(1, 5))
    assert set(table["tier"]) == {"all", "1-1.8", "1.8-2.6", "2.6-3.4", "3.4-4.2", "4.2-5"}
    all_rows = table[table["tier"] == "all"]
    assert (all_rows["n"] == 200).all()
    # value check against scipy for one rater
    r0 = ratings[ratings["rater"] == "r00"].merge(images, on="image_id")
    assert all_rows.set_index("rater").loc["r00", "plcc"] == pytest.approx(
        sps.pearsonr(r0["score"], r0["mos_overall"]).statistic)
    tiers_mean = table[table["tier"] != "all"].groupby("tier")["plcc"].mean()
    assert all_rows["plcc"].mean() > tiers_mean.max()  # the TuningIQA Fig. 5 effect
    assert table[table["tier"] != "all"].groupby("rater")["n"].sum().eq(200).all()


def test_mos_confidence_intervals_match_scipy() -> None:
    ratings, _ = _ratings(n_images=5, n_raters=8, random_rater=False)
    ci = stats.mos_confidence_intervals(ratings).set_index("image_id")
    scores = ratings[ratings["image_id"] == "im2"]["score"].to_numpy()
    lo, hi = sps.t.interval(0.95, len(scores) - 1, loc=scores.mean(), scale=sps.sem(scores))
    assert ci.loc["im2", "ci_low"] == pytest.approx(lo) and ci.loc["im2", "ci_high"] == pytest.approx(hi)
    normal = stats.mos_confidence_intervals(ratings, dist="normal").set_index("image_id")
    assert normal.loc["im2", "delta"] == pytest.approx(1.959964 * scores.std(ddof=1) / math.sqrt(8), rel=1e-5)
    assert (normal["delta"] <= ci["delta"] + 1e-12).all()  # t quantile > normal quantile


def test_pair_refinement_summary_hand_computed() -> None:
    images = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "mos_overall": [3.0, 3.2, 3.2, 4.0],
                           "mos_noise": [2.0, 2.5, 3.0, 3.5]})
    pairs = pd.DataFrame({
        "image_a": ["a", "a", "b", "c", "a", "a"],
        "image_b": ["b", "c", "c", "d", "d", "b"],
        "attribute": ["overall", "overall", "overall", "overall", "overall", "noise"],
        "p": [0.0, 1.0, 0.5, 0.5, 0.0, 1.0],
        "source": ["refined", "refined", "refined", "refined", "mos", "refined"],
        "fine": [True, True, True, True, False, True],
    })
    out = stats.pair_refinement_summary(pairs, images)
    overall = out.loc["overall"]
    # fine overall pairs: a-b agrees (b better), a-c flipped, b-c equal MOS, c-d tied by refinement
    assert (overall["pairs"], overall["fine"], overall["refined"]) == (5, 4, 4)
    assert (overall["agree"], overall["flipped"], overall["tied"], overall["mos_tied"]) == (1, 1, 1, 1)
    assert overall["flip_rate"] == pytest.approx(1 / 3)
    assert out.loc["noise", "flipped"] == 1  # noise a < b but refinement says a better
    assert out.loc["all", "fine"] == 5 and out.loc["all", "flipped"] == 2
