"""gMAD: group maximum differentiation competition between quality models (pure functions and figures).

Papers:
    Ma, K., Wu, Q., Wang, Z., Duanmu, Z., Yong, H., Li, H., Zhang, L. (2016). Group MAD Competition - A New
    Methodology to Compare Objective Image Quality Models. CVPR 2016, 1664-1673.
    Ma, K., Duanmu, Z., Wang, Z., Wu, Q., Liu, W., Yong, H., Li, H., Zhang, L. (2020). Group Maximum
    Differentiation Competition: Model Comparison with Few Samples. IEEE TPAMI 42(4), 851-864 (the reference
    TuningIQA cites for its Fig. 7).

What this module owns (the stage :mod:`iqalab.stages.gmad` does the I/O around it):

1. **Pair selection** (:func:`select_pairs`). For every ordered pair of models (attacker ``i``, defender ``j``),
   the defender is held fixed at ``L`` quality levels; within level ``l`` the defender claims all images are of
   the same quality, and the attacker picks the pair it rates most differently: its maximum (image ``a``) and
   its minimum (image ``b``) in that level. Both roles are played for every model pair, so ``M`` models give
   up to ``M (M - 1) L`` pairs.
   *Levels* (:func:`level_bands`, :func:`defender_levels`). The papers hold the defender's score (nearly)
   constant inside a level at a few values spread over its range. A level here is a **narrow band** of
   defender scores: ``L`` centres evenly spaced over the defender's score range on the pool (at ``(k + 1/2) /
   L`` of the range), each band ``band_width`` times that range wide (default 0.05; bands may not overlap, so
   ``band_width <= 1 / L``). Images outside every band take no part. The width is reported with every pair
   (``level_width``, in the defender's units) with ``defender_gap = |D(a) - D(b)|``, which is at most the
   width. A band holding fewer than two images gives no pair (logged; the stage reports the missing levels).
   Before issue #27 a level was an equal-count quantile bin, whose width is unbounded in the tails of the
   score distribution (the defender could then "claim equal" two images it scores far apart). Bands are
   invariant to affine rescaling of a model's scores (not to every monotone map). Ties of the attacker are
   broken by a seeded permutation of the pool, so the selection is deterministic given ``seed``.
2. **Verdicts**: the fraction ``p`` of votes preferring image ``a`` (ties count 1/2), from the simulator's
   rater panel (:func:`panel_verdicts`) or from a CSV of human votes (:func:`import_votes`), each with a
   Wilson score interval (:func:`iqalab.analysis.stats.wilson_interval`). ``p`` is "how often the attacker is right".
3. **Scores** (:func:`aggressiveness_matrix`, :func:`resistance_matrix`). With ``p_ij^(l)`` the vote fraction on
   the pair attacker ``i`` chose in defender ``j``'s level ``l`` and ``L_ij`` the levels that have a verdict:

   * aggressiveness of ``i`` against ``j``: ``a_ij = (1 / L_ij) sum_l p_ij^(l)`` - how strongly and how often
     the panel sides with the attacker: 1 = every pair the attacker chose is a clear, correctly ordered
     difference the defender missed; 0.5 = the attacker's pick is a coin flip (the pair looks equal, or the
     attacker is noise); below 0.5 = the attacker orders its own pair wrongly;
   * resistance of ``j`` against ``i``: ``r_ji = (1 / L_ij) sum_l (1 - |2 p_ij^(l) - 1|)`` - how often the
     defender survives: 1 when the panel splits evenly on the pair (the images look equal, as the defender
     claims), 0 when the panel unanimously prefers either image (the defender put two clearly different images
     in one level, whichever way the difference goes).

   In both matrices the **row is the model being scored** and the column its opponent: ``A[i, j]`` is attacker
   ``i`` against defender ``j``, ``R[j, i]`` is defender ``j`` against attacker ``i``; the diagonal is undefined
   (NaN). :func:`model_summary` averages each row (a model's overall aggressiveness / resistance). The paper
   texts are not among the seed papers of this compendium and could not be consulted here: the two formulas are
   our reading of the papers' verbal definitions ("aggressiveness: how strongly the attacker falsifies the
   defender; resistance: how well the defender survives the attacks"), chosen so that both are in [0, 1], 0.5 /
   1 mean "no evidence against the defender", and they need nothing but a vote fraction per pair. The papers
   further aggregate the results into a global ranking by pairwise-comparison scaling.
4. **Global ranking** (:func:`comparison_counts`, :func:`bradley_terry`, :func:`global_ranking`). Every judged
   pair is a contest between its attacker and its defender: each vote for the attacker's better image ``a`` is
   a win of the attacker, every other vote (for ``b``; a tie counts half) a win of the defender, whose claim
   was not refuted in the attacker's favour. The win counts over all pairs and levels are fitted with the
   Bradley-Terry model ``P(i beats j) = 1 / (1 + exp(-(s_i - s_j)))`` by maximum likelihood (scipy), log-
   strengths centred to sum zero, with Wald 95 % intervals from the inverse Fisher information under that
   constraint (its pseudo-inverse). ``prior`` pseudo-wins in each direction of every contested model pair
   keep a model that wins every vote finite (0.5 by default; 0 is the plain MLE). The ranking is reported
   beside the matrices, not instead of them.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import optimize, special, stats

from iqalab.analysis.stats import wilson_interval
from iqalab.sim.observers import Panel

log = logging.getLogger(__name__)

PAPER = ("Ma et al., Group MAD Competition - A New Methodology to Compare Objective Image Quality Models, CVPR 2016; "
         "Ma et al., Group Maximum Differentiation Competition: Model Comparison with Few Samples, TPAMI 2020")
CONFIDENCE = 0.95
#: columns of the pair table written by :func:`select_pairs` (verdict columns are added later)
PAIR_COLUMNS = ["pair_id", "attacker", "defender", "level", "n_level", "level_lo", "level_hi", "level_width",
                "image_a", "image_b", "idx_a", "idx_b", "defender_a", "defender_b", "defender_gap", "attacker_a",
                "attacker_b", "attacker_gap"]
#: default width of a defender level, as a share of the defender's score range on the pool (:func:`level_bands`)
BAND_WIDTH = 0.05
#: columns of the global ranking (:func:`global_ranking`)
RANKING_COLUMNS = ["strength", "se", "ci_low", "ci_high", "rank", "wins", "contests"]
VERDICT_COLUMNS = ["p", "n_votes", "ci_low", "ci_high", "outcome", "source"]


# --------------------------------------------------------------------------------------------- selection
def level_bands(scores: ArrayLike, levels: int, band_width: float = BAND_WIDTH) -> tuple[np.ndarray, float]:
    """Centres and width of the defender's ``levels`` quality levels (module docstring, step 1).

    Centres lie at ``min + (k + 1/2) / levels * range`` of the finite ``scores`` (``k = 0 .. levels - 1``), the
    width (full, in score units) is ``band_width * range``. Raises when ``band_width`` is not in ``(0, 1 /
    levels]`` (bands would overlap). Without finite scores the centres are NaN and the width 0.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if not 0 < band_width <= 1.0 / levels + 1e-12:
        raise ValueError(f"band_width must be in (0, 1/levels] = (0, {1.0 / levels:.4g}] so that the {levels} "
                         f"levels do not overlap, got {band_width}")
    values = np.asarray(scores, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.full(levels, np.nan), 0.0
    lo, span = float(finite.min()), float(finite.max() - finite.min())
    return lo + span * (np.arange(levels) + 0.5) / levels, band_width * span


def defender_levels(scores: ArrayLike, levels: int, band_width: float = BAND_WIDTH) -> np.ndarray:
    """Quality level (0 = lowest) of every image: the band of :func:`level_bands` its score lies in, -1 for
    images between the bands and for non-finite scores (never chosen). A band includes its edges; with a
    constant defender every image is in the one level whose band holds that value."""
    values = np.asarray(scores, dtype=np.float64)
    centres, width = level_bands(values, levels, band_width)
    out = np.full(values.shape, -1, dtype=np.int64)
    finite = np.isfinite(values)
    if not finite.any():
        return out
    distance = np.abs(values[finite][:, None] - centres[None, :])
    nearest = distance.argmin(axis=1)
    inside = distance[np.arange(nearest.size), nearest] <= width / 2 * (1 + 1e-12) + 1e-300
    out[finite] = np.where(inside, nearest, -1)
    return out


def pair_id(attacker: str, defender: str, level: int) -> str:
    """Stable id of the pair ``attacker`` chose in ``defender``'s ``level`` (also a safe file-name stem)."""
    return f"{attacker}__{defender}__L{level}"


def select_pairs(scores: Mapping[str, ArrayLike], levels: int = 5, image_ids: Sequence[str] | None = None,
                 seed: int = 0, band_width: float = BAND_WIDTH) -> pd.DataFrame:
    """The gMAD pairs of every ordered (attacker, defender) model pair (see the module docstring, step 1).

    ``scores`` maps a model name to its scores on the pool (same length and order for every model; higher =
    better). Returns one row per (attacker, defender, level) with at least two images in the level; columns
    :data:`PAIR_COLUMNS`: ``image_a`` / ``idx_a`` is the attacker's maximum in the level, ``image_b`` / ``idx_b``
    its minimum, ``level_lo`` / ``level_hi`` the edges of the defender's band (:func:`level_bands`),
    ``level_width`` its width, ``defender_gap`` the defender's ``|D(a) - D(b)|`` (at most ``level_width``),
    ``attacker_gap`` the attacker's score difference ``a - b`` divided by the attacker's score range on the pool.
    """
    names = list(scores)
    if len(names) < 2:
        raise ValueError(f"gMAD needs at least two models, got {names}")
    arrays = {name: np.asarray(scores[name], dtype=np.float64).ravel() for name in names}
    n = len(arrays[names[0]])
    if any(len(v) != n for v in arrays.values()):
        raise ValueError(f"every model must score the same pool: lengths {[len(v) for v in arrays.values()]}")
    ids = [str(i) for i in range(n)] if image_ids is None else [str(i) for i in image_ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} image ids for a pool of {n} images")
    order = np.random.default_rng(seed).permutation(n)  # seeded tie-break for the attacker's extremes
    rows = []
    for defender in names:
        d = arrays[defender]
        level_of = defender_levels(d, levels, band_width)
        centres, width = level_bands(d, levels, band_width)
        for attacker in names:
            if attacker == defender:
                continue
            s = arrays[attacker]
            finite_s = s[np.isfinite(s)]
            span = float(finite_s.max() - finite_s.min()) if finite_s.size else math.nan
            for level in range(levels):
                members = order[(level_of[order] == level) & np.isfinite(s[order])]
                if len(members) < 2:
                    log.info("gMAD: %s level %d has %d image(s) scored by %s: no pair", defender, level,
                             len(members), attacker)
                    continue
                ia = int(members[np.argmax(s[members])])
                ib = int(members[np.argmin(s[members])])
                if ia == ib:  # the attacker rates the whole level equal: any two images
                    ib = int(members[1] if members[0] == ia else members[0])
                rows.append({
                    "pair_id": pair_id(attacker, defender, level), "attacker": attacker, "defender": defender,
                    "level": level, "n_level": len(members), "level_lo": float(centres[level] - width / 2),
                    "level_hi": float(centres[level] + width / 2), "level_width": float(width),
                    "image_a": ids[ia], "image_b": ids[ib], "idx_a": ia, "idx_b": ib, "defender_a": float(d[ia]),
                    "defender_b": float(d[ib]), "defender_gap": float(abs(d[ia] - d[ib])),
                    "attacker_a": float(s[ia]), "attacker_b": float(s[ib]),
                    "attacker_gap": float((s[ia] - s[ib]) / span) if span > 0 else 0.0,
                })
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


# --------------------------------------------------------------------------------------------- verdicts
def outcome(ci_low: ArrayLike, ci_high: ArrayLike) -> np.ndarray:
    """``attacker_right`` (the interval lies above 1/2), ``attacker_wrong`` (below) or ``equal`` (it holds 1/2;
    the defender's claim stands); ``unknown`` without an interval."""
    lo = np.asarray(ci_low, dtype=np.float64)
    hi = np.asarray(ci_high, dtype=np.float64)
    return np.where(~(np.isfinite(lo) & np.isfinite(hi)), "unknown",
                    np.where(lo > 0.5, "attacker_right", np.where(hi < 0.5, "attacker_wrong", "equal")))


def _with_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    n = frame["n_votes"].to_numpy(dtype=np.float64)
    lo, hi = wilson_interval(frame["p"].to_numpy(dtype=np.float64) * n, n, CONFIDENCE)
    frame["ci_low"], frame["ci_high"] = lo, hi
    frame["outcome"] = outcome(lo, hi)
    return frame


def panel_verdicts(pairs: pd.DataFrame, truth: ArrayLike, n_raters: int = 20, seed: int = 0,
                   panel: Panel | None = None) -> pd.DataFrame:
    """``pairs`` with the simulator panel's verdict on each: :data:`VERDICT_COLUMNS` added.

    ``truth`` is the panel's ground-truth quality of every pool image (1-5, indexed by ``idx_a`` / ``idx_b``;
    :func:`iqalab.sim.observers.true_quality`). Each pair is judged side by side by ``n_raters`` judges drawn
    from the panel (:meth:`Panel.judge`, the vote of :meth:`Panel.prefer`), with a generator seeded by
    ``seed`` and the pair id: a pair's verdict does not depend on which other pairs exist.
    """
    truth = np.asarray(truth, dtype=np.float64)
    panel = panel or Panel(n_raters=max(int(n_raters), 1), seed=seed)
    out = pairs.copy()
    p = np.full(len(out), np.nan)
    for k, (pid, ia, ib) in enumerate(zip(out["pair_id"], out["idx_a"], out["idx_b"])):
        rng = np.random.default_rng([int(seed), zlib.crc32(str(pid).encode())])
        p[k] = float(panel.judge(np.array(truth[int(ia)]), np.array(truth[int(ib)]), int(n_raters), rng))
    out["p"] = p
    out["n_votes"] = float(n_raters)
    out["source"] = "panel"
    return _with_intervals(out)[[*pairs.columns, *VERDICT_COLUMNS]]


def import_votes(path: str | Path) -> pd.DataFrame:
    """Read human votes on exported gMAD pairs from a CSV (lines starting with ``#`` are comments).

    Format: one row per pair, column ``pair_id`` (as in ``pairs.csv``) and either

    * ``votes_a``, ``votes_b`` (non-negative counts of votes for image ``a`` / ``b``) and optionally
      ``votes_equal`` (votes for "same quality", counted 1/2 to each side), or
    * ``fraction`` (share of votes preferring ``a`` in [0, 1], ties counted 1/2) and optionally ``n`` (number of
      votes; without it no confidence interval is given).

    Image ``a`` is the image the attacker rates higher (``path_a`` in ``pairs.csv``). Returns ``pair_id``, ``p``,
    ``n_votes``, ``ci_low``, ``ci_high``, ``outcome``, ``source`` (``"csv"``). Errors name the file, row and
    column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: votes file not found")
    raw = pd.read_csv(path, comment="#", skipinitialspace=True)
    raw.columns = [str(c).strip() for c in raw.columns]
    if "pair_id" not in raw.columns:
        raise ValueError(f"{path}: column 'pair_id' is missing (columns: {list(raw.columns)})")
    dup = raw["pair_id"].astype(str).duplicated()
    if dup.any():
        raise ValueError(f"{path}: row {int(np.flatnonzero(dup)[0]) + 2}: pair_id "
                         f"{raw['pair_id'].iloc[int(np.flatnonzero(dup)[0])]!r} appears twice")

    def numeric(column: str, lo: float = 0.0, hi: float = math.inf) -> np.ndarray:
        values = pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values < lo) | (values > hi)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: row {row + 2}, column {column!r}: {raw[column].iloc[row]!r} is not a "
                             f"number in [{lo:g}, {hi:g}]")
        return values

    if {"votes_a", "votes_b"} <= set(raw.columns):
        a, b = numeric("votes_a"), numeric("votes_b")
        eq = numeric("votes_equal") if "votes_equal" in raw.columns else np.zeros(len(raw))
        n = a + b + eq
        if (n <= 0).any():
            row = int(np.flatnonzero(n <= 0)[0])
            raise ValueError(f"{path}: row {row + 2}: no votes for pair {raw['pair_id'].iloc[row]!r}")
        p = (a + 0.5 * eq) / n
    elif "fraction" in raw.columns:
        p = numeric("fraction", 0.0, 1.0)
        n = numeric("n") if "n" in raw.columns else np.full(len(raw), np.nan)
    else:
        raise ValueError(f"{path}: needs columns votes_a and votes_b (optionally votes_equal), or fraction "
                         f"(optionally n); found {list(raw.columns)}")
    frame = pd.DataFrame({"pair_id": raw["pair_id"].astype(str), "p": p, "n_votes": n, "source": "csv"})
    return _with_intervals(frame)[["pair_id", *VERDICT_COLUMNS]]


def apply_votes(pairs: pd.DataFrame, votes: pd.DataFrame) -> pd.DataFrame:
    """``pairs`` with the verdict columns taken from ``votes`` (:func:`import_votes`) by ``pair_id``.

    A vote for a pair id that is not in ``pairs`` is an error (votes on another run's pairs); pairs without a
    vote keep a NaN ``p`` and outcome ``unknown``.
    """
    unknown = sorted(set(votes["pair_id"]) - set(pairs["pair_id"]))
    if unknown:
        raise ValueError(f"votes for {len(unknown)} pair id(s) not in this gMAD run, e.g. {unknown[:3]}")
    base = pairs.drop(columns=[c for c in VERDICT_COLUMNS if c in pairs.columns])
    out = base.merge(votes[["pair_id", *VERDICT_COLUMNS]], on="pair_id", how="left")
    missing = out["p"].isna()
    if missing.any():
        log.warning("gMAD: %d of %d pairs have no vote", int(missing.sum()), len(out))
    out["outcome"] = out["outcome"].fillna("unknown")
    out["source"] = out["source"].fillna("none")
    return out


def votes_template(pairs: pd.DataFrame) -> pd.DataFrame:
    """A blank vote sheet for a subjective test of the exported pairs (the format :func:`import_votes` reads)."""
    cols = ["pair_id", "image_a", "image_b"] + [c for c in ("path_a", "path_b") if c in pairs.columns]
    sheet = pairs[cols].copy()
    for column in ("votes_a", "votes_b", "votes_equal"):
        sheet[column] = pd.NA
    return sheet


# --------------------------------------------------------------------------------------------- scores
def _matrix(pairs: pd.DataFrame, models: Sequence[str] | None, value: pd.Series, row: str,
            column: str) -> pd.DataFrame:
    models = list(models) if models is not None else sorted(set(pairs["attacker"]) | set(pairs["defender"]))
    frame = pd.DataFrame({"row": pairs[row], "column": pairs[column], "value": value}).dropna(subset=["value"])
    table = frame.groupby(["row", "column"])["value"].mean().unstack()
    out = table.reindex(index=models, columns=models).astype(float)
    for m in models:
        out.loc[m, m] = np.nan
    out.index.name, out.columns.name = row, column
    return out


def aggressiveness_matrix(pairs: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """``A[i, j]``: mean over defender ``j``'s levels of the vote fraction siding with attacker ``i`` (rows:
    attackers, columns: defenders; NaN diagonal and where no pair has a verdict). See the module docstring."""
    return _matrix(pairs, models, pairs["p"].astype(float), "attacker", "defender")


def resistance_matrix(pairs: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """``R[j, i]``: mean over defender ``j``'s levels of ``1 - |2 p - 1|`` on the pairs attacker ``i`` chose
    (rows: defenders, columns: attackers). See the module docstring."""
    survive = 1.0 - (2.0 * pairs["p"].astype(float) - 1.0).abs()
    return _matrix(pairs, models, survive, "defender", "attacker")


def model_summary(aggressiveness: pd.DataFrame, resistance: pd.DataFrame,
                  pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model: mean aggressiveness (row mean of ``A``) and mean resistance (row mean of ``R``) with ranks
    (1 = best); with ``pairs`` also ``attacks_won`` (share of its attacks whose CI lies above 1/2) and
    ``defences_held`` (share of the attacks on it whose CI holds 1/2)."""
    out = pd.DataFrame({"aggressiveness": aggressiveness.mean(axis=1, skipna=True),
                        "resistance": resistance.reindex(aggressiveness.index).mean(axis=1, skipna=True)})
    out["rank_aggressiveness"] = out["aggressiveness"].rank(ascending=False, method="min")
    out["rank_resistance"] = out["resistance"].rank(ascending=False, method="min")
    if pairs is not None and "outcome" in pairs.columns:
        judged = pairs[pairs["outcome"] != "unknown"]
        won = judged.groupby("attacker")["outcome"].apply(lambda o: float((o == "attacker_right").mean()))
        held = judged.groupby("defender")["outcome"].apply(lambda o: float((o == "equal").mean()))
        out["attacks_won"] = won.reindex(out.index).astype(float)
        out["defences_held"] = held.reindex(out.index).astype(float)
    return out.rename_axis("model")


# --------------------------------------------------------------------------------------------- global ranking
def comparison_counts(pairs: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """``W[i, j]``: votes won by model ``i`` against model ``j`` over every judged pair (module docstring, step 4).

    On a pair attacker ``i`` chose in defender ``j``'s level, ``p * n`` votes are wins of ``i`` over ``j`` and
    ``(1 - p) * n`` wins of ``j`` over ``i`` (``n = n_votes``; a pair whose vote count is unknown counts as one
    vote, split ``p`` / ``1 - p``). Pairs without a verdict are left out. Rows and columns follow ``models``.
    """
    models = list(models) if models is not None else sorted(set(pairs["attacker"]) | set(pairs["defender"]))
    out = pd.DataFrame(0.0, index=pd.Index(models, name="winner"), columns=pd.Index(models, name="loser"))
    judged = pairs[pairs["p"].notna()]
    n = judged["n_votes"].astype(float).where(lambda v: np.isfinite(v) & (v > 0), 1.0)
    p = judged["p"].astype(float)
    for attacker, defender, won, lost in zip(judged["attacker"], judged["defender"], p * n, (1.0 - p) * n):
        if attacker in out.index and defender in out.index:
            out.loc[attacker, defender] += won
            out.loc[defender, attacker] += lost
    return out


def bradley_terry(wins: ArrayLike, prior: float = 0.5, confidence: float = CONFIDENCE
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood Bradley-Terry log-strengths from a win-count matrix, with standard errors.

    ``wins[i, j]`` counts the wins of ``i`` over ``j`` (fractional counts allowed). The model is ``P(i beats j)
    = 1 / (1 + exp(-(s_i - s_j)))``; ``prior`` pseudo-wins are added in both directions of every pair that met
    (``wins[i, j] + wins[j, i] > 0``), which keeps an undefeated model finite. The negative log-likelihood is
    convex; it is minimised with L-BFGS-B and its analytic gradient, ``s`` centred to sum zero. Standard errors
    are the square roots of the diagonal of the pseudo-inverse of the Fisher information ``H`` (``H_ii = sum_j
    n_ij q_ij (1 - q_ij)``, ``H_ij = -n_ij q_ij (1 - q_ij)``, ``n_ij`` the contests of ``i`` and ``j``): the
    covariance of the sum-zero estimate. Two models with ``a`` and ``b`` wins give ``s_1 - s_2 = log(a / b)``
    and ``var(s_1) = (1 / a + 1 / b) / 4`` (tested). ``confidence`` is unused here (see :func:`global_ranking`).
    """
    del confidence
    w = np.asarray(wins, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"wins must be a square matrix of non-negative counts, got shape {w.shape}")
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    m = w.shape[0]
    w = w.copy()
    np.fill_diagonal(w, 0.0)
    met = (w + w.T) > 0
    w = w + prior * met
    total = w + w.T

    def nll(s: np.ndarray) -> tuple[float, np.ndarray]:
        diff = s[:, None] - s[None, :]
        value = float(np.sum(w * np.logaddexp(0.0, -diff)))
        q = special.expit(diff)  # P(i beats j)
        grad = -np.sum(w * (1.0 - q), axis=1) + np.sum(w.T * (1.0 - q.T), axis=1)
        return value, grad

    result = optimize.minimize(nll, np.zeros(m), jac=True, method="L-BFGS-B",
                               options={"maxiter": 10000, "gtol": 1e-10, "ftol": 1e-15})
    if not result.success:
        log.warning("Bradley-Terry fit: %s", result.message)
    s = result.x - result.x.mean()
    q = special.expit(s[:, None] - s[None, :])
    info = -total * q * (1.0 - q)
    np.fill_diagonal(info, 0.0)
    np.fill_diagonal(info, -info.sum(axis=1))
    cov = np.linalg.pinv(info)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return s, se


def global_ranking(pairs: pd.DataFrame, models: Sequence[str] | None = None, prior: float = 0.5,
                   confidence: float = CONFIDENCE) -> pd.DataFrame:
    """gMAD's global ranking (module docstring, step 4): Bradley-Terry log-strengths of the models from the
    votes of every judged pair, with a ``confidence`` Wald interval, rank (1 = strongest), votes won and
    contested. Columns :data:`RANKING_COLUMNS`, index ``model``, sorted by rank. Empty without verdicts."""
    models = list(models) if models is not None else sorted(set(pairs["attacker"]) | set(pairs["defender"]))
    if not pairs["p"].notna().any():
        return pd.DataFrame(columns=RANKING_COLUMNS, index=pd.Index([], name="model"))
    counts = comparison_counts(pairs, models)
    strength, se = bradley_terry(counts.to_numpy(), prior)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    out = pd.DataFrame({"strength": strength, "se": se, "ci_low": strength - z * se, "ci_high": strength + z * se,
                        "wins": counts.sum(axis=1).to_numpy(),
                        "contests": (counts + counts.T).sum(axis=1).to_numpy()},
                       index=pd.Index(models, name="model"))
    out["rank"] = out["strength"].rank(ascending=False, method="min").astype(int)
    return out[RANKING_COLUMNS].sort_values("rank", kind="stable")


# --------------------------------------------------------------------------------------------- figures
def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def matrices_figure(aggressiveness: pd.DataFrame, resistance: pd.DataFrame,
                    labels: Mapping[str, str] | None = None, attribute: str = "overall",
                    ranking: pd.DataFrame | None = None) -> plt.Figure:
    """The two gMAD matrices side by side as annotated heat maps (row: the model scored, column: opponent) and,
    with ``ranking`` (:func:`global_ranking`), a third panel: the Bradley-Terry strengths with their intervals."""
    labels = dict(labels or {})
    n = len(aggressiveness)
    side = max(2.4, 0.55 * n + 1.4)
    panels = 3 if ranking is not None and len(ranking) else 2
    fig, axes = plt.subplots(1, panels, figsize=(panels * side + 1.2, side), squeeze=False, layout="constrained")
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="0.85")
    image = None
    for ax, matrix, title, rows, cols in (
            (axes[0][0], aggressiveness, "aggressiveness", "attacker", "defender"),
            (axes[0][1], resistance, "resistance", "defender", "attacker")):
        values = matrix.to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0)
        names = [labels.get(m, m) for m in matrix.index]
        ax.set_xticks(range(n), [labels.get(m, m) for m in matrix.columns], rotation=35, ha="right", fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        ax.set_xlabel(cols, fontsize=8)
        ax.set_ylabel(rows, fontsize=8)
        ax.set_title(f"{title} ({attribute})", fontsize=9)
        for r in range(n):
            for c in range(n):
                if np.isfinite(values[r, c]):
                    ax.text(c, r, _fmt(values[r, c]), ha="center", va="center", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=[axes[0][0], axes[0][1]], shrink=0.8, label="score (row model)")
    if panels == 3:
        ax = axes[0][2]
        order = ranking.sort_values("strength")
        y = np.arange(len(order))
        ax.errorbar(order["strength"], y, xerr=[order["strength"] - order["ci_low"],
                                                order["ci_high"] - order["strength"]],
                    fmt="o", color="C0", ms=3, capsize=2, lw=1)
        ax.axvline(0.0, color="0.6", lw=0.6, ls="--")
        ax.set_yticks(y, [labels.get(m, m) for m in order.index], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(f"Bradley-Terry log-strength ({CONFIDENCE:.0%} CI)", fontsize=8)
        ax.set_title(f"global ranking ({attribute})", fontsize=9)
    return fig


def pair_grid(pairs: pd.DataFrame, model_x: str, model_y: str, load_image: Callable[[str], np.ndarray],
              labels: Mapping[str, str] | None = None) -> plt.Figure:
    """TuningIQA-Fig.-7-like grid for one model pair: one row per defender level; columns: ``model_x``
    attacking ``model_y`` (its best / worst image of the level), then the roles swapped. Each image is titled
    with the attacker's (A) and defender's (D) scores; each pair with the verdict ``p`` and its 95 % CI."""
    labels = dict(labels or {})
    roles = [(model_x, model_y), (model_y, model_x)]
    levels = sorted(set(pairs.loc[pairs["attacker"].isin([model_x, model_y])
                                  & pairs["defender"].isin([model_x, model_y]), "level"]))
    n_rows = max(len(levels), 1)
    fig, grid = plt.subplots(n_rows, 5, figsize=(7.16, 1.95 * n_rows + 0.5), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 0.12, 1, 1]})
    for ax in grid.ravel():
        ax.axis("off")
    axes = grid[:, [0, 1, 3, 4]]  # column 2 is a spacer between the two roles
    for r, level in enumerate(levels):
        for block, (attacker, defender) in enumerate(roles):
            hit = pairs[(pairs["attacker"] == attacker) & (pairs["defender"] == defender)
                        & (pairs["level"] == level)]
            if hit.empty:
                continue
            row = hit.iloc[0]
            for side, key in enumerate(("a", "b")):
                ax = axes[r][2 * block + side]
                ax.imshow(load_image(str(row[f"image_{key}"])))
                ax.set_title(f"A {_fmt(row[f'attacker_{key}'], 3)}  D {_fmt(row[f'defender_{key}'], 3)}",
                             fontsize=6)
            p = row.get("p", np.nan)
            verdict = (f"L{level}: p(a)={_fmt(p)} [{_fmt(row.get('ci_low', np.nan))}, "
                       f"{_fmt(row.get('ci_high', np.nan))}]") if np.isfinite(p) else f"L{level}: no verdict"
            axes[r][2 * block].text(1.02, -0.08, verdict, transform=axes[r][2 * block].transAxes, ha="center",
                                    va="top", fontsize=6)
    for block, (attacker, defender) in enumerate(roles):
        axes[0][2 * block].text(1.02, 1.32, f"{labels.get(attacker, attacker)} attacks "
                                f"{labels.get(defender, defender)}", transform=axes[0][2 * block].transAxes,
                                ha="center", va="bottom", fontsize=8, weight="bold")
    fig.subplots_adjust(wspace=0.05, hspace=0.55)
    return fig
