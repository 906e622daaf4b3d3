"""Annotation statistics of a dataset: how attributes relate, how raters agree, how reliable the MOS is.

Owns the library part of stage ``annotation_stats``:

- :func:`attribute_corr_matrix` - PLCC/SRCC between attribute MOS (TuningIQA Fig. 4, SFIQA Fig. 8);
- :func:`ols_overall` - least-squares regression of overall quality on the attribute MOS (SFIQA Sec. III-C-3,
  "multiple linear regression ... R^2 = 0.9778"), with or without the intercept (Eq. 1 prints none), with CIs,
  p-values, VIF, residuals and both the centred and the uncentred R^2;
- :func:`rater_vs_mos` - each rater's PLCC with the MOS, overall and within MOS tiers (TuningIQA Fig. 5);
- :func:`bt500_screening` - the kurtosis-based observer screening of ITU-R BT.500 (Annex 2, Sec. 2.3.1) of a
  ratings table; :func:`bt500_outlier_counts` / :func:`bt500_rejected` are its array core, which the simulator's
  panel (:meth:`iqalab.sim.observers.Panel.screen`) calls too;
- :func:`wilson_interval` - the Wilson score interval of a proportion (gMAD verdicts, camera-tuning win rates);
- :func:`mos_confidence_intervals` - per-image MOS with its confidence interval (ITU-R BT.500, Sec. 2.2);
- :func:`pair_refinement_summary` - how often pairwise refinement agreed with, flipped or tied the MOS order
  (TuningIQA "Pairwise Comparison", Eq. 2).

Inputs are the canonical tables (``iqalab.data.schema``): ``images`` with ``mos_<attr>`` columns, long
``ratings`` (``image_id``, ``rater``, ``attribute``, ``score``) and ``pairs``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as sps

from iqalab.analysis.metrics import MetricWarning, assign_tiers, plcc, srcc

log = logging.getLogger(__name__)

_METHODS = {"pearson": plcc, "plcc": plcc, "spearman": srcc, "srcc": srcc}


def _mos_columns(images: pd.DataFrame, attrs: Sequence[str] | None) -> list[str]:
    if attrs is None:
        cols = [c for c in images.columns if c.startswith("mos_")]
    else:
        cols = [a if a.startswith("mos_") else f"mos_{a}" for a in attrs]
    missing = [c for c in cols if c not in images.columns]
    if missing:
        raise KeyError(f"images table has no column(s) {missing}; present: {list(images.columns)}")
    return cols


# ------------------------------------------------------------------------------------ attribute relations
def attribute_corr_matrix(images: pd.DataFrame, attrs: Sequence[str] | None = None,
                          method: str = "pearson") -> pd.DataFrame:
    """Correlation between attribute MOS columns (``method``: ``pearson``/``plcc`` or ``spearman``/``srcc``).

    Like ``pandas.DataFrame.corr`` each entry uses the images where both attributes have a score (pairwise
    complete), and the result equals it; here the numbers come from :mod:`iqalab.analysis.metrics` so that every
    correlation in the project has one implementation. Rows/columns are named by attribute (``mos_`` dropped).
    A constant attribute gives NaN entries, as in pandas.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    fn = _METHODS[method]
    cols = _mos_columns(images, attrs)
    names = [c.removeprefix("mos_") for c in cols]
    values = images[cols].to_numpy(dtype=float)
    out = np.full((len(cols), len(cols)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        for i in range(len(cols)):
            for j in range(i, len(cols)):
                both = np.isfinite(values[:, i]) & np.isfinite(values[:, j])
                r = fn(values[both, i], values[both, j])
                if i == j and np.isfinite(r):
                    r = 1.0
                out[i, j] = out[j, i] = r
    return pd.DataFrame(out, index=pd.Index(names, name="attribute"), columns=names)


@dataclass
class OLSResult:
    """Least-squares fit of an overall score on attribute scores.

    ``table`` has one row per term (``const`` first, when there is an intercept) with ``coef``, ``se``, ``t``,
    ``p``, ``ci_low``, ``ci_high`` (95%) and ``vif`` (NaN for the constant). ``residuals`` are indexed like
    the rows used. ``r2`` is always the centred coefficient of determination, ``1 - SSR / sum (y - mean y)^2``,
    so fits with and without an intercept compare; ``r2_uncentered`` is ``1 - SSR / sum y^2``, the R^2 that
    statsmodels (and most packages) report for a model without a constant, which is high whenever the scores
    are far from 0. ``adj_r2`` and ``f_pvalue`` are statsmodels' (uncentred when there is no constant).
    """

    target: str
    predictors: list[str]
    standardised: bool
    n: int
    r2: float
    adj_r2: float
    f_pvalue: float
    table: pd.DataFrame
    residuals: pd.Series
    intercept: bool = True
    r2_uncentered: float = math.nan

    def equation(self, digits: int = 4) -> str:
        """The fitted model in the paper's style, e.g. ``overall = 0.1 + 0.3 x sharpness + ...``."""
        terms = []
        for term, row in self.table.iterrows():
            coef = f"{row['coef']:.{digits}f}"
            terms.append(coef if term == "const" else f"{coef} x {term}")
        return f"{self.target} = " + " + ".join(terms).replace("+ -", "- ")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without residuals) for ``results/stats/<ds>.json``."""
        return {
            "target": self.target, "predictors": self.predictors, "standardised": self.standardised,
            "intercept": self.intercept, "n": self.n, "r2": self.r2, "r2_uncentered": self.r2_uncentered,
            "adj_r2": self.adj_r2, "f_pvalue": self.f_pvalue,
            "equation": self.equation(),
            "terms": {str(t): {k: float(v) for k, v in row.items()} for t, row in self.table.iterrows()},
        }


def ols_overall(images: pd.DataFrame, target: str = "mos_overall", predictors: Sequence[str] | None = None,
                standardise: bool = False, confidence: float = 0.95, intercept: bool = True) -> OLSResult:
    """Ordinary least squares of ``target`` on ``predictors`` (SFIQA Sec. III-C-3; statsmodels ``OLS``).

    SFIQA's Eq. (1) prints no intercept (``Overall = 0.0765 Noise + ... + 0.3076 Fidelity``, R^2 = 0.9778);
    ``intercept=False`` fits that form, the default ``True`` the usual model with a constant. Which R^2 the
    paper reports is not said: a no-constant fit's uncentred R^2 (``r2_uncentered``) is close to 1 for any
    scores far from 0, so both R^2 are kept (:class:`OLSResult`).

    ``predictors`` default to every other ``mos_*`` column; names with or without the ``mos_`` prefix work and
    appear without it in the table. Rows with a missing value in any used column are dropped (logged). With
    ``standardise`` the target and predictors are z-scored first, so coefficients are standardised betas and
    there is no constant. VIF is computed on the design matrix with its constant (statsmodels
    ``variance_inflation_factor``); above ~10 the coefficients of collinear attributes are unreliable, which
    matters here because attribute MOS are strongly correlated (SFIQA Fig. 8).
    """
    target_col = target if target.startswith("mos_") else f"mos_{target}"
    if predictors is None:
        pred_cols = [c for c in _mos_columns(images, None) if c != target_col]
    else:
        pred_cols = _mos_columns(images, predictors)
    import statsmodels.api as sm  # here, not at the top: statsmodels takes 2 s to import and few callers fit OLS
    from statsmodels.stats.outliers_influence import variance_inflation_factor

    if not pred_cols:
        raise ValueError("OLS needs at least one predictor")
    used = images[[target_col, *pred_cols]].astype(float)
    complete = used.dropna()
    if len(complete) < len(used):
        log.info("OLS: dropped %d of %d rows with a missing score", len(used) - len(complete), len(used))
    if len(complete) <= len(pred_cols) + 1:
        raise ValueError(f"OLS needs more rows than terms: {len(complete)} rows, {len(pred_cols) + 1} terms")
    if standardise:
        std = complete.std(ddof=0).replace(0.0, np.nan)
        complete = (complete - complete.mean()) / std
    y = complete[target_col]
    x = complete[pred_cols].rename(columns=lambda c: c.removeprefix("mos_"))
    with_constant = intercept and not standardise
    design = sm.add_constant(x, has_constant="add") if with_constant else x
    fit = sm.OLS(y, design).fit()
    ssr = float(np.sum(fit.resid.to_numpy() ** 2))
    yv = y.to_numpy(dtype=float)
    centred_tss = float(np.sum((yv - yv.mean()) ** 2))
    r2 = 1.0 - ssr / centred_tss if centred_tss > 0 else math.nan
    r2_uncentered = 1.0 - ssr / float(np.sum(yv**2)) if np.any(yv) else math.nan
    ci = fit.conf_int(alpha=1 - confidence)
    table = pd.DataFrame({
        "coef": fit.params, "se": fit.bse, "t": fit.tvalues, "p": fit.pvalues,
        "ci_low": ci[0], "ci_high": ci[1],
    })
    table.index.name = "term"
    vif_design = sm.add_constant(x, has_constant="add").to_numpy(dtype=float)
    vif = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, name in enumerate(x.columns, start=1):
            vif[name] = float(variance_inflation_factor(vif_design, k)) if x.shape[1] > 1 else 1.0
    table["vif"] = [vif.get(str(term), math.nan) for term in table.index]
    return OLSResult(
        target=target_col.removeprefix("mos_"), predictors=list(x.columns), standardised=standardise,
        n=int(fit.nobs), r2=r2, adj_r2=float(fit.rsquared_adj), f_pvalue=float(fit.f_pvalue),
        table=table, residuals=fit.resid.rename("residual"), intercept=with_constant, r2_uncentered=r2_uncentered,
    )


# ------------------------------------------------------------------------------------------- raters
def _ratings_for(ratings: pd.DataFrame, attribute: str | None) -> pd.DataFrame:
    if attribute is None or "attribute" not in ratings.columns:
        return ratings
    return ratings[ratings["attribute"] == attribute]


def equal_tiers(lo: float, hi: float, k: int = 5) -> list[tuple[float, float]]:
    """``k`` equal-width MOS tiers covering ``[lo, hi]`` (e.g. 1-5 in 5 tiers: 1-1.8, ..., 4.2-5.0)."""
    edges = np.linspace(lo, hi, k + 1)
    return [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]


def rater_vs_mos(ratings: pd.DataFrame, images: pd.DataFrame, attribute: str = "overall",
                 tiers: Sequence[tuple[float, float]] | None = None, min_size: int = 3) -> pd.DataFrame:
    """Each rater's PLCC with the MOS, over all images and within MOS tiers (TuningIQA Fig. 5).

    TuningIQA finds raters agree with MOS overall (mean PLCC 0.85) but much less inside a narrow tier (0.24 in
    the 4.2-5.0 tier): the reason for pairwise refinement. ``tiers`` are ``(lo, hi)`` MOS intervals in the
    dataset's native units, contiguous and increasing (default: 5 equal-width tiers over the observed MOS
    range); an image belongs to ``[lo, hi)``, the top tier also to its upper edge. The MOS includes the
    rater's own vote, as in the paper.

    Returns a long frame: ``rater``, ``tier`` (``"all"`` or ``"lo-hi"``), ``lo``, ``hi``, ``n`` (images the rater
    scored in the tier) and ``plcc`` (NaN with fewer than ``min_size`` images or constant scores). Pivot it
    (``pivot(index="tier", columns="rater", values="plcc")``) for the figure.
    """
    mos_col = f"mos_{attribute}"
    own = _ratings_for(ratings, attribute)
    mos = images.set_index("image_id")[mos_col].astype(float)
    frame = pd.DataFrame({"rater": own["rater"].to_numpy(), "score": own["score"].to_numpy(dtype=float),
                          "mos": own["image_id"].map(mos).to_numpy(dtype=float)}).dropna()
    if frame.empty:
        raise ValueError(f"no ratings of attribute {attribute!r} match images with {mos_col}")
    if tiers is None:
        tiers = equal_tiers(float(mos.min()), float(mos.max()))
    edges = [tiers[0][0], *(hi for _, hi in tiers)]
    labels = [f"{lo:g}-{hi:g}" for lo, hi in tiers]
    inside = (frame["mos"] >= edges[0]) & (frame["mos"] <= edges[-1])
    frame["tier"] = pd.Series(pd.NA, index=frame.index, dtype=object)
    frame.loc[inside, "tier"] = np.asarray(assign_tiers(frame.loc[inside, "mos"], edges, labels), dtype=object)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        for rater, part in frame.groupby("rater", sort=True):
            groups = [("all", math.nan, math.nan, part)]
            groups += [(lab, lo, hi, part[part["tier"] == lab]) for lab, (lo, hi) in zip(labels, tiers)]
            for label, lo, hi, sel in groups:
                r = plcc(sel["score"], sel["mos"]) if len(sel) >= min_size else math.nan
                rows.append({"rater": rater, "tier": label, "lo": lo, "hi": hi, "n": len(sel), "plcc": r})
    return pd.DataFrame(rows)


@dataclass
class BT500Report:
    """Outcome of ITU-R BT.500 observer screening: per-rater counts and who is rejected."""

    raters: pd.DataFrame
    rejected: list[Any]
    p_limit: float
    q_limit: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"rejected": [str(r) for r in self.rejected], "n_raters": int(len(self.raters)),
                "p_limit": self.p_limit, "q_limit": self.q_limit}


def bt500_outlier_counts(scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(P, Q, N)`` per rater of ITU-R BT.500 Annex 2, Sec. 2.3.1 for ``scores[n_raters, n_presentations]``
    (NaN = no score).

    For every presentation with mean ``u``, sample standard deviation ``s`` and kurtosis ``beta2 = m4 / m2^2``
    (Pearson, not excess; central moments with 1/N): if ``2 <= beta2 <= 4`` the scores are taken as normal and
    the outlier band is ``u +- 2 s``, otherwise ``u +- sqrt(20) s``; a score at or above the upper limit adds to
    the rater's ``P``, at or below the lower limit to ``Q``; ``N`` counts the rater's scores. Choice: a
    presentation where every score is equal (``s == 0``) or with fewer than 3 scores gives no outliers (the
    standard's ``>=`` would flag everyone).
    """
    x = np.asarray(scores, dtype=np.float64)
    upper, lower = bt500_outlier_mask(x)
    return upper.sum(axis=1), lower.sum(axis=1), np.isfinite(x).sum(axis=1)


def bt500_outlier_mask(scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per score, ``(above, below)`` the outlier band of its presentation (ITU-R BT.500 Annex 2, Sec. 2.3.1; the
    rule of :func:`bt500_outlier_counts`, which sums these masks per rater), for ``scores[n_raters,
    n_presentations]`` (NaN = no score, never an outlier). SFIQA-Bench removes such individual ratings."""
    x = np.asarray(scores, dtype=np.float64)
    known = np.isfinite(x)
    count = known.sum(axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # presentations without a score: NaN moments
        u = np.nanmean(x, axis=0)
        dev = x - u
        m2 = np.nanmean(dev**2, axis=0)
        m4 = np.nanmean(dev**4, axis=0)
        s = np.where(count > 1, np.nanstd(x, axis=0, ddof=1), 0.0)
        beta2 = np.where(m2 > 0, m4 / np.where(m2 > 0, m2, 1.0) ** 2, np.nan)
    band = np.where((beta2 >= 2) & (beta2 <= 4), 2.0, math.sqrt(20.0)) * s
    usable = (s > 0) & (count >= 3)
    return known & usable & (x >= u + band), known & usable & (x <= u - band)


def bt500_rejected(p: ArrayLike, q: ArrayLike, n: ArrayLike, p_limit: float = 0.05, q_limit: float = 0.3
                   ) -> np.ndarray:
    """BT.500's rejection rule on :func:`bt500_outlier_counts`: a rater with ``(P + Q) / N > p_limit`` and
    ``|P - Q| / (P + Q) < q_limit`` (outliers that are frequent and not all on one side) is rejected."""
    p, q, n = (np.asarray(v, dtype=np.float64) for v in (p, q, n))
    pq = p + q
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = pq / n
        asymmetry = np.where(pq > 0, np.abs(p - q) / np.where(pq > 0, pq, 1.0), np.nan)
    return (rate > p_limit) & (asymmetry < q_limit)


def bt500_screening(ratings: pd.DataFrame, attribute: str | None = None, p_limit: float = 0.05,
                    q_limit: float = 0.3) -> BT500Report:
    """Observer screening of ITU-R BT.500 (Annex 2, Sec. 2.3.1, single-stimulus form) of a long ratings table.

    A presentation is an image and attribute; the counts and the rule are :func:`bt500_outlier_counts` and
    :func:`bt500_rejected`. ``attribute`` limits the screening to one attribute; by default every attribute's
    presentations count. Returns per rater ``N``, ``P``, ``Q``, ``outlier_rate``, ``asymmetry`` and
    ``rejected``.
    """
    own = _ratings_for(ratings, attribute)
    keys = ["image_id", "attribute"] if "attribute" in own.columns else ["image_id"]
    frame = own[[*keys, "rater", "score"]].dropna(subset=["score"])
    wide = frame.pivot_table(index="rater", columns=keys, values="score", aggfunc="first", sort=True)
    p, q, n = bt500_outlier_counts(wide.to_numpy(dtype=np.float64))
    per = pd.DataFrame({"N": n, "P": p, "Q": q}, index=wide.index)
    pq = per["P"] + per["Q"]
    per["outlier_rate"] = pq / per["N"]
    per["asymmetry"] = np.where(pq > 0, (per["P"] - per["Q"]).abs() / pq.where(pq > 0, 1), np.nan)
    per["rejected"] = bt500_rejected(p, q, n, p_limit, q_limit)
    rejected = list(per.index[per["rejected"]])
    log.info("BT.500 screening: %d of %d raters rejected", len(rejected), len(per))
    return BT500Report(per.reset_index(), rejected, p_limit, q_limit)


def mos_confidence_intervals(ratings: pd.DataFrame, attribute: str | None = None, confidence: float = 0.95,
                             dist: str = "t") -> pd.DataFrame:
    """Per-image MOS with its confidence interval ``mos +- delta`` (ITU-R BT.500, Sec. 2.2).

    BT.500 gives ``delta = 1.96 s / sqrt(N)`` (``dist="normal"``); the default ``dist="t"`` uses Student's
    ``t_{N-1}`` quantile instead, which is the exact interval for the small panels of IQA studies and tends to
    1.96 for large ``N``. ``s`` is the sample standard deviation (ddof=1); images with one score get NaN bounds.
    Returns ``image_id`` (and ``attribute`` when present), ``n``, ``mos``, ``std``, ``delta``, ``ci_low``,
    ``ci_high``.
    """
    if dist not in ("t", "normal"):
        raise ValueError(f"dist must be 't' or 'normal', got {dist!r}")
    own = _ratings_for(ratings, attribute)
    keys = ["image_id", "attribute"] if "attribute" in own.columns else ["image_id"]
    table = own.groupby(keys, sort=True)["score"].agg(n="count", mos="mean", std=lambda v: v.std(ddof=1))
    table = table.reset_index()
    n = table["n"].to_numpy(dtype=float)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        if dist == "t":
            quantile = np.where(n > 1, sps.t.ppf(1 - alpha / 2, np.maximum(n - 1, 1)), np.nan)
        else:
            quantile = np.full(n.shape, sps.norm.ppf(1 - alpha / 2))
        table["delta"] = quantile * table["std"].to_numpy(dtype=float) / np.sqrt(n)
    table["ci_low"] = table["mos"] - table["delta"]
    table["ci_high"] = table["mos"] + table["delta"]
    return table


# ------------------------------------------------------------------------------------------- pairs
def pair_refinement_summary(pairs: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """How pairwise refinement changed the MOS order (TuningIQA "Pairwise Comparison", Eq. 2).

    For each attribute (and ``"all"``): ``pairs``, ``fine`` (pairs marked fine-grained), ``refined``
    (``source == "refined"``), and over the fine pairs the comparison of the final preference ``p`` with the MOS
    order: ``agree`` (same side), ``flipped`` (opposite side), ``tied`` (``p == 0.5``: refinement says
    equivalent while the MOS differ), ``mos_tied`` (equal MOS; excluded from the other three) and the shares
    ``flip_rate`` / ``tie_rate`` of the fine pairs with unequal MOS.
    """
    lookup = images.set_index("image_id")
    rows = []
    attributes = sorted(pairs["attribute"].astype(str).unique()) if len(pairs) else []
    for attr in [*attributes, "all"]:
        sel = pairs if attr == "all" else pairs[pairs["attribute"].astype(str) == attr]
        fine_mask = sel["fine"].astype(bool) if "fine" in sel.columns else pd.Series(True, index=sel.index)
        fine = sel[fine_mask]
        mos_col = "mos_" + fine["attribute"].astype(str)
        mos_a = np.array([lookup.at[i, c] if c in lookup.columns else np.nan
                          for i, c in zip(fine["image_a"], mos_col)], dtype=float)
        mos_b = np.array([lookup.at[i, c] if c in lookup.columns else np.nan
                          for i, c in zip(fine["image_b"], mos_col)], dtype=float)
        p = fine["p"].to_numpy(dtype=float)
        mos_sign = np.sign(mos_a - mos_b)
        pref_sign = np.sign(p - 0.5)
        decided = np.isfinite(mos_sign) & (mos_sign != 0)
        agree = int((decided & (pref_sign == mos_sign)).sum())
        flipped = int((decided & (pref_sign == -mos_sign)).sum())
        tied = int((decided & (pref_sign == 0)).sum())
        n_decided = int(decided.sum())
        rows.append({
            "attribute": attr, "pairs": len(sel), "fine": len(fine),
            "refined": int((sel["source"] == "refined").sum()) if "source" in sel.columns else 0,
            "agree": agree, "flipped": flipped, "tied": tied, "mos_tied": int((mos_sign == 0).sum()),
            "flip_rate": flipped / n_decided if n_decided else math.nan,
            "tie_rate": tied / n_decided if n_decided else math.nan,
        })
    return pd.DataFrame(rows).set_index("attribute")


# ------------------------------------------------------------------------------------------- proportions
def wilson_interval(successes: ArrayLike, n: ArrayLike, confidence: float = 0.95
                    ) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Wilson score interval of the proportion ``successes / n`` (``statsmodels`` ``proportion_confint``,
    ``method="wilson"``); ``successes`` may be fractional (ties counted 1/2). Vectorised: scalars in, floats
    out. NaN where ``n <= 0`` or an input is unknown; the bounds are exactly 0 at ``successes <= 0`` and
    exactly 1 at ``successes >= n`` (no floating-point dust such as 3e-17), and clipped to [0, 1]."""
    from statsmodels.stats.proportion import proportion_confint  # 1.5 s to import: only where it is used

    k = np.asarray(successes, dtype=np.float64)
    total = np.asarray(n, dtype=np.float64)
    bad = ~(np.isfinite(k) & np.isfinite(total) & (total > 0))
    safe_n = np.where(bad, 1.0, total)
    safe_k = np.where(bad, 0.0, np.clip(k, 0.0, safe_n))
    lo, hi = proportion_confint(safe_k, safe_n, alpha=1.0 - confidence, method="wilson")
    lo = np.where(safe_k <= 0, 0.0, np.clip(lo, 0.0, 1.0))
    hi = np.where(safe_k >= safe_n, 1.0, np.clip(hi, 0.0, 1.0))
    lo, hi = np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi
