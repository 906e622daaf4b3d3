"""Is model A really better than model B? Significance tests for IQA comparisons.

Owns the library part of stage ``significance``:

- :func:`residual_f_test_matrix` - REQA Table III: the 1/0/-1 matrix of a one-sided F-test on the variances
  of the residuals after the 4-parameter logistic map (the VQEG / LIVE protocol);
- :func:`pitman_morgan_test` - the paired alternative: equal variances of two residual sets on the *same*
  images (the F-test assumes independent samples, which residuals on one test set are not);
- :func:`paired_bootstrap_srcc` and :func:`bootstrap_ci` - vectorised image-level bootstraps;
- :func:`wilcoxon_across_splits` and :func:`split_metric_matrix` - tests on a metric over repeated splits
  (REQA Table III as the paper computes it: the SROCC of the train-test iterations);
- :func:`compare_tests` - every pairwise verdict side by side, flagging where the tests disagree.
- :func:`choose_split`, :func:`align_split`, :func:`per_split_srcc`, :func:`bootstrap_table` - the models'
  prediction tables aligned on the images they all predicted, the inputs of the tests above.

A note on REQA Sec. IV-C-2: the text says "the SROCC scores of each method when training and testing on CLIVE
are utilized for the test ... with a 95% confidence level". That is the main reading here
(:func:`split_metric_matrix`: the SROCC of every model on each of the train-test iterations, 20 random splits
in the paper profile, compared pairwise by a paired two-sided t-test at 0.05; the paper names no test, and the
t-test on the SROCC of repeated runs is the common BIQA practice; a Wilcoxon signed-rank test is the option,
though it cannot reach p < 0.05 with fewer than 6 splits). The classic residual F-test matrix of one test set
(:func:`residual_f_test_matrix`, what Table III's layout resembles) stays as a second output. Verdicts
everywhere: ``1`` row model significantly better, ``-1`` significantly worse, ``0`` indistinguishable at level
``alpha``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from iqalab.analysis import metrics
from iqalab.analysis.metrics import ArrayLike, logistic4_fit, paired_arrays

log = logging.getLogger(__name__)

#: Elements per bootstrap chunk (resamples x images); bounds memory at a few tens of MB per array.
_CHUNK_ELEMENTS = 2_000_000


# ------------------------------------------------------------------------------------------ residuals
def logistic_residuals(pred: ArrayLike, mos: ArrayLike) -> np.ndarray:
    """``mos - f(pred)`` with ``f`` the fitted 4-parameter logistic (:func:`iqalab.analysis.metrics.logistic4_fit`)."""
    x, y = paired_arrays(pred, mos)
    return y - logistic4_fit(x, y)(x)


@dataclass(frozen=True)
class FTest:
    """One-sided F-tests on two residual variances, in both directions."""

    var_a: float
    var_b: float
    f: float  # var_a / var_b
    p_a_better: float  # P(F >= var_b/var_a) under H0: small means A's variance is significantly smaller
    p_b_better: float

    def verdict(self, alpha: float = 0.05) -> int:
        """1 if A is significantly better (smaller variance), -1 if significantly worse, else 0."""
        if self.p_a_better < alpha:
            return 1
        if self.p_b_better < alpha:
            return -1
        return 0


def residual_f_test(res_a: ArrayLike, res_b: ArrayLike) -> FTest:
    """F-test of residual variances (Sheikh et al., TIP 2006, Sec. V-B; used for REQA Table III).

    ``F = var_b / var_a`` with ``(n_b - 1, n_a - 1)`` degrees of freedom for "A better", and the reverse for "B
    better"; sample variances use ddof=1. The residual means are ~0 after the logistic map, so the 4 fitted
    parameters are not subtracted from the degrees of freedom (as in the LIVE protocol).
    """
    a = np.asarray(res_a, dtype=float)
    b = np.asarray(res_b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    var_a, var_b = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    if var_a == var_b:  # identical residuals (or both perfect): no evidence either way
        return FTest(var_a, var_b, 1.0, 1.0, 1.0)
    if var_a == 0 or var_b == 0:
        a_better = var_a == 0
        return FTest(var_a, var_b, var_a / var_b if var_b else math.inf,
                     0.0 if a_better else 1.0, 1.0 if a_better else 0.0)
    p_a = float(stats.f.sf(var_b / var_a, b.size - 1, a.size - 1))
    p_b = float(stats.f.sf(var_a / var_b, a.size - 1, b.size - 1))
    return FTest(var_a, var_b, var_a / var_b, p_a, p_b)


def residual_f_test_matrix(preds_by_model: Mapping[str, ArrayLike], mos: ArrayLike,
                           alpha: float = 0.05) -> pd.DataFrame:
    """REQA Table III: entry (row, column) is 1 if the row model's residual variance after the logistic map is
    significantly smaller than the column model's (one-sided F-test at ``alpha``), -1 if significantly larger,
    0 otherwise. The matrix is antisymmetric with a zero diagonal; identical predictions give 0.

    All models must predict the same images in the same order as ``mos``.
    """
    names = list(preds_by_model)
    residuals = {name: logistic_residuals(preds_by_model[name], mos) for name in names}
    out = pd.DataFrame(0, index=pd.Index(names, name="model"), columns=names, dtype=int)
    for i, row in enumerate(names):
        for col in names[i + 1:]:
            v = residual_f_test(residuals[row], residuals[col]).verdict(alpha)
            out.loc[row, col], out.loc[col, row] = v, -v
    return out


def pitman_morgan_test(res_a: ArrayLike, res_b: ArrayLike, alternative: str = "two-sided") -> dict[str, float]:
    """Pitman-Morgan test of equal variances for paired samples (Pitman 1939; Morgan 1939).

    With ``u = a + b`` and ``v = a - b``, ``cov(u, v) = var(a) - var(b)``, so equal variances is zero
    correlation ``r`` between ``u`` and ``v``: ``t = r sqrt((n - 2) / (1 - r^2))`` with ``n - 2`` degrees of
    freedom. Equivalent form: ``t = (F - 1) sqrt(n - 2) / (2 sqrt(F (1 - r_ab^2)))`` with ``F = var_a/var_b``.
    ``alternative``: ``"less"`` tests var_a < var_b (A better), ``"greater"`` var_a > var_b.
    Returns ``t``, ``df``, ``p``, ``var_ratio`` (var_a / var_b) and ``r`` (NaN results when undefined).
    """
    a, b = paired_arrays(res_a, res_b)
    n = a.size
    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(f"alternative must be two-sided, less or greater, got {alternative!r}")
    var_a, var_b = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    ratio = var_a / var_b if var_b > 0 else math.nan
    u, v = a + b, a - b
    if n < 3 or np.ptp(u) == 0 or np.ptp(v) == 0:
        same = np.ptp(v) == 0  # identical residuals: variances equal, nothing to test
        return {"t": 0.0 if same else math.nan, "df": float(n - 2), "p": 1.0 if same else math.nan,
                "var_ratio": ratio, "r": 0.0 if same else math.nan}
    r = float(metrics.pearson_rows(u, v))
    df = n - 2
    t = r * math.sqrt(df / max(1.0 - r * r, 1e-300))
    if alternative == "two-sided":
        p = 2.0 * float(stats.t.sf(abs(t), df))
    elif alternative == "less":
        p = float(stats.t.cdf(t, df))
    else:
        p = float(stats.t.sf(t, df))
    return {"t": t, "df": float(df), "p": min(p, 1.0), "var_ratio": ratio, "r": r}


# ------------------------------------------------------------------------------------------- bootstrap
_ROW_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "srcc": metrics.spearman_rows,
    "plcc": metrics.pearson_rows,
    "rmse": lambda p, m: np.sqrt(np.mean((p - m) ** 2, axis=-1)),
    "mae": lambda p, m: np.mean(np.abs(p - m), axis=-1),
}


def _resample_chunks(n: int, n_boot: int, seed: int) -> Any:
    """Yield index arrays [chunk, n] drawn with replacement; same seed, same resamples."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def _percentile_ci(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(finite, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def bootstrap_distribution(metric_fn: str | Callable[[np.ndarray, np.ndarray], float], pred: ArrayLike,
                           mos: ArrayLike, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """The metric on ``n_boot`` image-level resamples (with replacement) of ``(pred, mos)``.

    ``metric_fn`` is a name in ``srcc``, ``plcc``, ``rmse``, ``mae`` (vectorised over resamples with numpy) or
    any callable ``(pred, mos) -> float`` (called once per resample, with a progress bar).
    """
    x, y = paired_arrays(pred, mos)
    out = np.empty(n_boot)
    done = 0
    if isinstance(metric_fn, str):
        if metric_fn not in _ROW_METRICS:
            raise ValueError(f"vectorised metrics are {sorted(_ROW_METRICS)}; pass a callable for others")
        row_fn = _ROW_METRICS[metric_fn]
        for idx in _resample_chunks(x.size, n_boot, seed):
            out[done:done + len(idx)] = row_fn(x[idx], y[idx])
            done += len(idx)
        return out
    bar = tqdm(total=n_boot, desc="bootstrap", disable=n_boot < 200, leave=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        for idx in _resample_chunks(x.size, n_boot, seed):
            for row in idx:
                out[done] = metric_fn(x[row], y[row])
                done += 1
            bar.update(len(idx))
    bar.close()
    return out


def bootstrap_ci(metric_fn: str | Callable[[np.ndarray, np.ndarray], float], pred: ArrayLike, mos: ArrayLike,
                 n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Percentile bootstrap confidence interval of a metric over images.

    Returns ``estimate`` (the metric on the full data), ``ci_low``, ``ci_high`` and ``std`` (bootstrap standard
    error). Percentile intervals are simple and adequate for correlations away from +-1; for values near 1 they
    are slightly conservative on the upper side.
    """
    x, y = paired_arrays(pred, mos)
    boot = bootstrap_distribution(metric_fn, x, y, n_boot, seed)  # validates a metric name first
    estimate = float(_ROW_METRICS[metric_fn](x, y) if isinstance(metric_fn, str) else metric_fn(x, y))
    lo, hi = _percentile_ci(boot, confidence)
    finite = boot[np.isfinite(boot)]
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return {"estimate": estimate, "ci_low": lo, "ci_high": hi, "std": std, "n_boot": float(n_boot)}


def paired_bootstrap_srcc(pred_a: ArrayLike, pred_b: ArrayLike, mos: ArrayLike, n_boot: int = 2000,
                          seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Paired bootstrap of ``SRCC(a) - SRCC(b)``: both models are scored on the same resampled images.

    Pairing removes the shared image-sampling noise, so small but consistent differences are detected. The
    two-sided p-value is the share of centred bootstrap differences at least as far from 0 as the observed
    one, ``(1 + #{|d* - d| >= |d|}) / (1 + B)`` (Efron & Tibshirani 1993, Sec. 16.4). Returns ``srcc_a``,
    ``srcc_b``, ``diff``, ``ci_low``, ``ci_high`` (percentile), ``p``.
    """
    a = np.asarray(pred_a, dtype=float).ravel()
    b = np.asarray(pred_b, dtype=float).ravel()
    m = np.asarray(mos, dtype=float).ravel()
    if not (a.size == b.size == m.size):
        raise ValueError(f"lengths differ: {a.size}, {b.size}, {m.size}")
    keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(m)
    a, b, m = a[keep], b[keep], m[keep]
    srcc_a, srcc_b = float(metrics.spearman_rows(a, m)), float(metrics.spearman_rows(b, m))
    diff = srcc_a - srcc_b
    boot = np.empty(n_boot)
    done = 0
    for idx in _resample_chunks(m.size, n_boot, seed):
        rank_m = stats.rankdata(m[idx], axis=-1)
        boot[done:done + len(idx)] = (
            metrics.pearson_rows(stats.rankdata(a[idx], axis=-1), rank_m)
            - metrics.pearson_rows(stats.rankdata(b[idx], axis=-1), rank_m)
        )
        done += len(idx)
    boot = boot[np.isfinite(boot)]
    lo, hi = _percentile_ci(boot, confidence)
    if boot.size == 0 or not np.isfinite(diff):
        p = math.nan
    elif diff == 0:
        p = 1.0
    else:
        p = float((1 + np.sum(np.abs(boot - diff) >= abs(diff))) / (1 + boot.size))
    return {"srcc_a": srcc_a, "srcc_b": srcc_b, "diff": diff, "ci_low": lo, "ci_high": hi, "p": p,
            "n_boot": float(n_boot)}


# -------------------------------------------------------------------------------------- across splits
def wilcoxon_across_splits(metric_a_list: Sequence[float], metric_b_list: Sequence[float],
                           alternative: str = "two-sided") -> dict[str, float]:
    """Wilcoxon signed-rank test of a metric over repeated splits (paired by split), plus a paired t-test.

    The splits' test sets overlap, so both tests are somewhat optimistic (Nadeau & Bengio 2003); use them to
    rank evidence, not as exact error rates. All-zero differences give ``p = 1``. Returns ``n``,
    ``mean_diff``, ``median_diff``, ``statistic`` and ``p`` (Wilcoxon), ``t`` and ``p_t`` (paired t).
    """
    a = np.asarray(metric_a_list, dtype=float)
    b = np.asarray(metric_b_list, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"need one value per split for both models: {a.size} vs {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    out: dict[str, float] = {"n": float(d.size), "mean_diff": float(d.mean()) if d.size else math.nan,
                             "median_diff": float(np.median(d)) if d.size else math.nan}
    if d.size == 0 or np.all(d == 0):
        out.update(statistic=math.nan, p=1.0 if d.size else math.nan, t=math.nan,
                   p_t=1.0 if d.size else math.nan)
        return out
    w = stats.wilcoxon(a[keep], b[keep], alternative=alternative)
    out.update(statistic=float(w.statistic), p=float(w.pvalue))
    if d.size > 1 and np.ptp(d) > 0:
        t = stats.ttest_rel(a[keep], b[keep], alternative=alternative)
        out.update(t=float(t.statistic), p_t=float(t.pvalue))
    else:
        out.update(t=math.nan, p_t=math.nan)
    return out


#: tests :func:`split_metric_matrix` can use on the per-split metric values
SPLIT_TESTS = ("t", "wilcoxon")


def split_metric_matrix(metric_by_model: Mapping[str, Sequence[float]], alpha: float = 0.05,
                        higher_is_better: bool = True, test: str = "t") -> pd.DataFrame:
    """1/0/-1 matrix from per-split metric values: REQA Table III as the paper computes it (Sec. IV-C-2, "the
    SROCC scores of each method when training and testing on CLIVE", over its train-test iterations).

    Entry (row, column) is 1 if the row model's metric is significantly better over the paired splits, -1 if
    worse, else 0. ``test="t"`` (default): paired two-sided t-test at ``alpha`` (needs >= 2 splits with a
    varying difference; direction from the mean difference). ``test="wilcoxon"``: two-sided Wilcoxon
    signed-rank test (direction from the median difference; with fewer than 6 splits its smallest p-value is
    above 0.05, so every entry is 0).
    """
    if test not in SPLIT_TESTS:
        raise ValueError(f"test must be one of {SPLIT_TESTS}, got {test!r}")
    names = list(metric_by_model)
    out = pd.DataFrame(0, index=pd.Index(names, name="model"), columns=names, dtype=int)
    for i, row in enumerate(names):
        for col in names[i + 1:]:
            res = wilcoxon_across_splits(metric_by_model[row], metric_by_model[col])
            if test == "t":
                v = _sign_verdict(res["p_t"], res["mean_diff"], alpha, higher_is_better)
            else:
                v = _sign_verdict(res["p"], res["median_diff"] or res["mean_diff"], alpha, higher_is_better)
            out.loc[row, col], out.loc[col, row] = v, -v
    return out


def _sign_verdict(p: float, diff: float, alpha: float, higher_is_better: bool = True) -> int:
    if not (np.isfinite(p) and np.isfinite(diff)) or p >= alpha or diff == 0:
        return 0
    better = diff > 0 if higher_is_better else diff < 0
    return 1 if better else -1


# ------------------------------------------------------------------------------------------- summary
def compare_tests(preds_by_model: Mapping[str, ArrayLike], mos: ArrayLike,
                  metric_by_split: Mapping[str, Sequence[float]] | None = None, alpha: float = 0.05,
                  n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every test's verdict for every pair of models, and whether they agree.

    One row per unordered pair ``(model_a, model_b)`` with the verdict for A (1 better, -1 worse, 0 no
    difference) from: ``f_test`` (residual F-test, REQA Table III), ``pitman_morgan`` (paired variance test on
    the same residuals), ``bootstrap_srcc`` (paired bootstrap p of the SRCC difference) and, with
    ``metric_by_split``, ``wilcoxon_splits``. ``agree`` is True when all verdicts are equal; the p-values are
    kept next to the verdicts so a reader can see how close a disagreement is.
    """
    names = list(preds_by_model)
    residuals = {name: logistic_residuals(preds_by_model[name], mos) for name in names}
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            f = residual_f_test(residuals[a], residuals[b])
            pm = pitman_morgan_test(residuals[a], residuals[b])
            boot = paired_bootstrap_srcc(preds_by_model[a], preds_by_model[b], mos, n_boot=n_boot, seed=seed)
            row: dict[str, Any] = {
                "model_a": a, "model_b": b,
                "f_test": f.verdict(alpha), "p_f": min(f.p_a_better, f.p_b_better),
                "pitman_morgan": _sign_verdict(pm["p"], 1.0 - pm["var_ratio"], alpha),
                "p_pitman_morgan": pm["p"],
                "bootstrap_srcc": _sign_verdict(boot["p"], boot["diff"], alpha), "p_bootstrap": boot["p"],
            }
            verdicts = [row["f_test"], row["pitman_morgan"], row["bootstrap_srcc"]]
            if metric_by_split is not None:
                w = wilcoxon_across_splits(metric_by_split[a], metric_by_split[b])
                row["wilcoxon_splits"] = _sign_verdict(w["p"], w["median_diff"] or w["mean_diff"], alpha)
                row["p_wilcoxon"] = w["p"]
                verdicts.append(row["wilcoxon_splits"])
            row["agree"] = len(set(verdicts)) == 1
            rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        log.info("tests disagree on %d of %d model pairs", int((~table["agree"]).sum()), len(table))
    return table


# --------------------------------------------------------------------------------------------- prediction tables
@dataclass
class AlignedSplit:
    """Predictions of several models on the same images of one split: ``preds`` [image x model], ``mos``."""

    split: str
    preds: pd.DataFrame
    mos: pd.Series

    @property
    def models(self) -> list[str]:
        return list(self.preds.columns)


def align_split(part: pd.DataFrame, split: str, models: list[str]) -> AlignedSplit:
    """Join the ``models``' test predictions of ``split`` on ``image_id``, keeping images every model predicted.

    ``part`` holds one dataset's, one attribute's test rows with an ``experiment`` column. The MOS of an image
    must agree across models (they are the same ground truth); a mismatch raises ``ValueError``.
    """
    rows = part[(part["split"] == split) & part["experiment"].isin(models)]
    preds = rows.pivot_table(index="image_id", columns="experiment", values="pred", aggfunc="first")
    preds = preds.reindex(columns=models).dropna(axis=0, how="any")
    mos_table = rows.pivot_table(index="image_id", columns="experiment", values="mos", aggfunc="first")
    mos_table = mos_table.reindex(index=preds.index, columns=models)
    spread = (mos_table.max(axis=1) - mos_table.min(axis=1)).to_numpy(float)
    if spread.size and np.nanmax(spread) > 1e-9 * max(1.0, float(np.nanmax(np.abs(mos_table.to_numpy())))):
        raise ValueError(f"split {split}: models disagree on the MOS of the same image_id; not the same test set")
    preds.columns.name = None
    return AlignedSplit(split, preds, mos_table.iloc[:, 0].rename("mos"))


def choose_split(part: pd.DataFrame, models: list[str]) -> tuple[str | None, list[str]]:
    """The first split (sorted) every model has; else the one shared by the most models. Returns it and the
    models that have it (in the given order)."""
    have = {split: set(g["experiment"]) for split, g in part.groupby("split", sort=True)}
    if not have:
        return None, []
    full = [s for s, exps in have.items() if set(models) <= exps]
    split = full[0] if full else max(sorted(have), key=lambda s: len(have[s] & set(models)))
    return split, [m for m in models if m in have[split]]


def per_split_srcc(part: pd.DataFrame, models: list[str]) -> tuple[list[str], dict[str, list[float]]]:
    """SRCC of each model on every split all ``models`` share, each split on its aligned images."""
    have = {split: set(g["experiment"]) for split, g in part.groupby("split", sort=True)}
    common = [s for s, exps in have.items() if set(models) <= exps]
    values: dict[str, list[float]] = {m: [] for m in models}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        for split in common:
            aligned = align_split(part, split, models)
            for m in models:
                values[m].append(metrics.srcc(aligned.preds[m], aligned.mos) if len(aligned.mos) >= 3 else np.nan)
    return common, values


def bootstrap_table(test: pd.DataFrame, labels: dict[str, str], n_boot: int, seed: int) -> pd.DataFrame:
    """Bootstrap 95% CIs of SRCC and raw PLCC per dataset x attribute x model x split (vectorised resamples)."""
    rows = []
    groups = test.groupby(["dataset", "attribute", "experiment", "split"], sort=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        for (dataset, attr, exp, split), part in tqdm(groups, desc="bootstrap CIs", disable=len(groups) < 50,
                                                      leave=False):
            row: dict[str, Any] = {"dataset": dataset, "attribute": attr, "model": labels[exp], "split": split,
                                   "n": len(part)}
            for name in ("srcc", "plcc"):
                ci = bootstrap_ci(name, part["pred"].to_numpy(float), part["mos"].to_numpy(float), n_boot, seed)
                row[name.upper()] = ci["estimate"]
                row[f"{name.upper()} low"] = ci["ci_low"]
                row[f"{name.upper()} high"] = ci["ci_high"]
            rows.append(row)
    return pd.DataFrame(rows)
