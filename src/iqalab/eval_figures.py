"""Figures of the evaluation and significance stages (``evaluate``, ``significance``).

- :func:`scatter_logistic`: predicted score against MOS per model with the fitted 4-parameter logistic
  (the REQA Fig. 5 / VQEG view; ``iqalab.analysis.metrics.logistic4_fit``);
- :func:`tier_bars`: SROCC / PLCC per REQA quality tier (Table I as bars);
- :func:`fg_acc_by_dmos`: accuracy of the predicted order of image pairs against the MOS gap |dMOS| (how
  TuningIQA's FG-ACC degrades as pairs get finer);
- :func:`significance_grid`: the REQA Table III 1/0/-1 matrix as a coloured grid;
- :func:`scene_correlation_boxes`: FHIQA Fig. 3, the distribution over test scenes of the averaged correlation
  (mean of SRCC, PLCC and KRCC within each scene) per model and attribute, for the per-scene (PIQ23) protocol.

Every figure of simulated data carries the "simulated data" stamp (:func:`iqalab.plots.label_simulated`);
:func:`evaluation_figures` writes the stage's set with :func:`iqalab.plots.save`.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap

from iqalab.analysis import metrics
from iqalab.plots import COLUMN_WIDTH_IN, PAGE_WIDTH_IN, label_simulated, save

if TYPE_CHECKING:
    from iqalab.analysis.evaluation import EvalInputs

log = logging.getLogger(__name__)


def safe_name(text: str) -> str:
    """A file-name-safe version of a dataset / attribute / experiment name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def first_split(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the first (sorted) split in ``frame``: one test set per model, so points are not repeated."""
    if frame.empty:
        return frame
    return frame[frame["split"] == sorted(frame["split"].unique())[0]]


def scatter_logistic(test: pd.DataFrame, labels: Mapping[str, str], title: str, simulated: bool,
                     max_cols: int = 5, logistic_bounds: bool = True) -> plt.Figure:
    """One panel per experiment: prediction (x) against MOS (y) and the fitted logistic, SRCC/PLCC in the title.

    ``test`` holds one dataset's, one attribute's test rows (columns ``experiment``, ``split``, ``pred``,
    ``mos``); the first split of each experiment is drawn. PLCC is after the drawn logistic map (bounded unless
    ``logistic_bounds`` is false, as in the tables), raw PLCC beside it. Axis labels only on the outer panels and
    three ticks per axis keep a 20-model grid quick to render.
    """
    exps = list(dict.fromkeys(test["experiment"]))
    n = max(len(exps), 1)
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    width = PAGE_WIDTH_IN if cols > 1 else COLUMN_WIDTH_IN
    panel = width / cols
    height = panel * rows + 1.0  # room for the suptitle above and the simulated-data stamp below
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.5 / height, top=1 - 0.6 / height, wspace=0.35,
                        hspace=0.6)
    for k, (ax, exp) in enumerate(zip(axes.ravel(), exps)):
        part = first_split(test[test["experiment"] == exp])
        x, y = part["pred"].to_numpy(float), part["mos"].to_numpy(float)
        ax.scatter(x, y, s=4, alpha=0.6, linewidths=0, rasterized=True)
        stats = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics.MetricWarning)
            finite = np.isfinite(x) & np.isfinite(y)
            if finite.sum() >= 2 and np.ptp(x[finite]) > 0 and np.ptp(y[finite]) > 0:
                fit = metrics.logistic4_fit(x, y, **metrics.logistic_options(logistic_bounds))
                grid = np.linspace(np.nanmin(x), np.nanmax(x), 60)
                ax.plot(grid, fit(grid), color="C3", lw=1.0)
                stats = (f"\nSRCC {metrics.srcc(x, y):.3f} PLCC {metrics.plcc(fit(x), y):.3f}"
                         f" (raw {metrics.plcc(x, y):.3f})")
        ax.set_title(f"{labels.get(exp, exp)}{stats}", fontsize=6)
        ax.locator_params(nbins=3)
        ax.tick_params(labelsize=5, length=2, pad=1)
        if k // cols == rows - 1 or k + cols >= len(exps):
            ax.set_xlabel("prediction", fontsize=6)
        if k % cols == 0:
            ax.set_ylabel("MOS", fontsize=6)
    for ax in axes.ravel()[len(exps):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=8, y=1 - 0.12 / height)
    label_simulated(fig, simulated)
    return fig


def tier_bars(tier_scores: pd.DataFrame, labels: Mapping[str, str], title: str, simulated: bool) -> plt.Figure:
    """Grouped bars: SROCC (left) and PLCC (right) per quality tier, one bar per model (mean over splits).

    ``tier_scores`` is the long score frame restricted to one dataset's ``tier:<Tier>`` groups.
    """
    tiers = list(metrics.TIERS)
    exps = list(dict.fromkeys(tier_scores["experiment"]))
    legend_rows = math.ceil(len(exps) / 5)
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 2.2 + 0.18 * legend_rows), sharey=True)
    width = 0.8 / max(len(exps), 1)
    for ax, (metric, name) in zip(axes, (("srcc", "SROCC"), ("plcc", "PLCC"))):
        part = tier_scores[tier_scores["metric"] == metric]
        means = part.groupby(["experiment", "group"])["value"].mean()
        for k, exp in enumerate(exps):
            values = [means.get((exp, f"tier:{t}"), np.nan) for t in tiers]
            ax.bar(np.arange(len(tiers)) + (k - (len(exps) - 1) / 2) * width, values, width,
                   label=labels.get(exp, exp))
        ax.set_xticks(np.arange(len(tiers)), tiers, fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.axhline(0, color="0.5", lw=0.5)
    axes[0].set_ylabel("correlation within tier", fontsize=7)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=6, loc="lower left", bbox_to_anchor=(0.01, 0.0), ncol=min(5, len(exps)),
               frameon=False)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.045 * legend_rows, 1, 1))
    label_simulated(fig, simulated)
    return fig


def scene_averaged_correlations(test: pd.DataFrame, meta: Mapping[str, Mapping]) -> dict[tuple[str, str], np.ndarray]:
    """``{(attribute, experiment): values}``: per test scene of the first split, the mean of SRCC, raw PLCC and
    KRCC between the scored values (:func:`iqalab.analysis.evaluation.scored_values`: NIQE and BRISQUE negated,
    as Table I) and the MOS within the scene (FHIQA seed 001 Sec. IV-A "the averaged correlations", Fig. 3);
    scenes with fewer than 3 images or an undefined correlation are left out."""
    from iqalab.analysis.evaluation import SCENE_METRICS, scored_values

    # Table I's within-scene correlations (raw PLCC), without its MAE
    correlations = {name: fn for name, fn in SCENE_METRICS.items() if name != "mae"}
    out: dict[tuple[str, str], np.ndarray] = {}
    for (exp, attr), part in first_split(test).groupby(["experiment", "attribute"], sort=False):
        pred = scored_values(part, meta[exp])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics.MetricWarning)
            table = metrics.per_group_metrics(part.assign(pred=pred), "scene", correlations)
        averaged = table[list(correlations)].mean(axis=1, skipna=False).to_numpy(float)
        out[str(attr), str(exp)] = averaged[np.isfinite(averaged)]
    return out


def scene_correlation_boxes(values: Mapping[tuple[str, str], np.ndarray], labels: Mapping[str, str], title: str,
                            simulated: bool) -> plt.Figure | None:
    """FHIQA Fig. 3: one panel per attribute, one box per model over the test scenes' averaged correlations
    (:func:`scene_averaged_correlations`); None when no scene has a value."""
    if not any(len(v) for v in values.values()):
        return None
    attrs = list(dict.fromkeys(a for a, _ in values))
    exps = list(dict.fromkeys(e for _, e in values))
    fig, axes = plt.subplots(1, len(attrs), figsize=(PAGE_WIDTH_IN, 0.9 + 0.22 * len(exps)), sharey=True,
                             squeeze=False)
    for ax, attr in zip(axes[0], attrs):
        data = [values.get((attr, e), np.array([])) for e in exps]
        ax.boxplot([d if len(d) else [np.nan] for d in data], orientation="horizontal", widths=0.6,
                   tick_labels=[labels.get(e, e) for e in exps], flierprops={"markersize": 2})
        ax.set_title(attr, fontsize=8)
        ax.set_xlabel("mean of SRCC, PLCC, KRCC within a scene", fontsize=6)
        ax.axvline(0, color="0.5", lw=0.5)
        ax.tick_params(labelsize=6)
    axes[0][0].invert_yaxis()  # the first model on top
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    label_simulated(fig, simulated)
    return fig


def pair_correct(pairs: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Per decided pair with both images in ``test`` (one experiment, one split): ``|dMOS|`` and the credit of
    the predicted order (1 right, 0 wrong, 0.5 predicted tie; the :func:`iqalab.analysis.metrics.fg_acc` rules)."""
    out = []
    pairs = pairs[pairs["p"].astype(float) != 0.5]
    for attr, part in test.groupby("attribute", sort=False):
        attr_pairs = pairs[pairs["attribute"] == attr] if "attribute" in pairs.columns else pairs
        if attr_pairs.empty:
            continue
        pred = pd.Series(part["pred"].to_numpy(float), index=part["image_id"].to_numpy())
        mos = pd.Series(part["mos"].to_numpy(float), index=part["image_id"].to_numpy())
        pa, pb = attr_pairs["image_a"].map(pred), attr_pairs["image_b"].map(pred)
        ma, mb = attr_pairs["image_a"].map(mos), attr_pairs["image_b"].map(mos)
        keep = (pa.notna() & pb.notna()).to_numpy()
        if not keep.any():
            continue
        target = np.sign(attr_pairs["p"].to_numpy(float)[keep] - 0.5)
        predicted = np.sign((pa - pb).to_numpy()[keep])
        credit = np.where(predicted == 0, 0.5, (predicted == target).astype(float))
        out.append(pd.DataFrame({"attribute": attr, "dmos": np.abs((ma - mb).to_numpy()[keep]),
                                 "credit": credit}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["attribute", "dmos", "credit"])


def fg_acc_by_dmos(test: pd.DataFrame, pairs: pd.DataFrame, labels: Mapping[str, str], title: str,
                   simulated: bool, n_bins: int = 5) -> plt.Figure | None:
    """Accuracy of the predicted order against the MOS gap of the pair, one line per model.

    All decided pairs (fine or not) with both images in a model's first test split count, pooled over
    attributes; bins are quantiles of |dMOS| shared by all models so the lines are comparable. ``None`` when no
    pair falls inside any test split.
    """
    per_exp = {exp: pair_correct(pairs, first_split(part)) for exp, part in test.groupby("experiment", sort=False)}
    per_exp = {exp: frame for exp, frame in per_exp.items() if len(frame)}
    if not per_exp:
        return None
    gaps = np.concatenate([frame["dmos"].to_numpy(float) for frame in per_exp.values()])
    edges = np.unique(np.quantile(gaps, np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([gaps.min(), gaps.min() + 1e-9])
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.4))
    for exp, frame in per_exp.items():
        idx = np.clip(np.searchsorted(edges, frame["dmos"].to_numpy(float), side="right") - 1, 0, edges.size - 2)
        acc = frame.groupby(idx)["credit"].mean()
        centres = (edges[:-1] + edges[1:]) / 2
        ax.plot(centres[acc.index.to_numpy()], acc.to_numpy(), marker="o", ms=3, label=labels.get(exp, exp))
    ax.axhline(0.5, color="0.5", lw=0.5, ls="--")
    ax.set(xlabel="|ΔMOS| of the pair", ylabel="accuracy of predicted order", ylim=(0, 1.02))
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    label_simulated(fig, simulated)
    return fig


def significance_grid(matrix: pd.DataFrame, title: str, simulated: bool) -> plt.Figure:
    """The 1/0/-1 matrix as a grid: green = row model significantly better, red = worse, grey = no difference.

    Cells show their value up to 12 models; beyond that the colours alone (the CSV/Markdown hold the numbers).
    """
    values = matrix.to_numpy(dtype=float)
    n = len(matrix)
    size = min(PAGE_WIDTH_IN, max(COLUMN_WIDTH_IN, 0.45 * n + 1.5))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    cmap = ListedColormap(["#d7301f", "#d9d9d9", "#1a9850"])
    ax.imshow(values, cmap=cmap, vmin=-1.5, vmax=1.5)
    if n <= 12:  # numbers in the cells while they stay legible; colours alone for larger grids
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(values[i, j]):d}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(n), [str(c) for c in matrix.columns], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), [str(r) for r in matrix.index], fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    label_simulated(fig, simulated)
    return fig


def evaluation_figures(inputs: EvalInputs, scores: pd.DataFrame, folder: Path,
                       formats: Sequence[str] = ("png", "pdf"), logistic_bounds: bool = True) -> list[Path]:
    """Write the stage's figures: ``scatter_<dataset>_<attribute>`` (PNG only: a grid of up to ~20 rasterised
    panels per attribute is slow as PDF and gains nothing), ``tiers_<dataset>_<attribute>`` (when tier metrics
    exist), ``scene_correlations_<dataset>`` (FHIQA Fig. 3, for experiments with ``protocol: per_scene``) and
    ``fg_acc_dmos_<dataset>`` (when the dataset has pairs), the last three in ``formats``. Stale figures are
    removed."""
    from iqalab.analysis.evaluation import display_labels

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = display_labels(inputs.meta)
    test = inputs.predictions[inputs.predictions["role"] == "test"]
    simulated = {str(info.get("dataset")): bool(info.get("simulated")) for info in inputs.meta.values()}
    written: list[Path] = []

    def emit(fig: plt.Figure | None, stem: str) -> None:
        if fig is None:
            return
        written.extend(save(fig, folder / stem, formats))
        plt.close(fig)

    for (dataset, attr), part in test.groupby(["dataset", "attribute"], sort=False):
        sim = simulated.get(dataset, False)
        fig = scatter_logistic(part, labels, f"{dataset} ({'simulated' if sim else 'real'}): {attr}", sim,
                               logistic_bounds=logistic_bounds)
        written.extend(save(fig, folder / f"scatter_{safe_name(dataset)}_{safe_name(attr)}", ("png",)))
        plt.close(fig)
        tiers = scores[(scores["dataset"] == dataset) & (scores["attribute"] == attr)
                       & scores["group"].str.startswith("tier:")]
        if not tiers.empty:
            emit(tier_bars(tiers, labels, f"{dataset}: {attr} per quality tier", sim),
                 f"tiers_{safe_name(dataset)}_{safe_name(attr)}")
    per_scene = [e for e, info in inputs.meta.items() if info.get("protocol") == "per_scene"]
    for dataset, part in test[test["experiment"].isin(per_scene)].groupby("dataset", sort=False):
        values = scene_averaged_correlations(part, inputs.meta)
        emit(scene_correlation_boxes(values, labels, f"{dataset}: averaged correlation per test scene (FHIQA Fig. 3 "
                                     "layout)", simulated.get(dataset, False)),
             f"scene_correlations_{safe_name(dataset)}")
    for dataset, pairs in inputs.pairs.items():
        part = test[test["dataset"] == dataset]
        if part.empty:
            continue
        emit(fg_acc_by_dmos(part, pairs, labels, f"{dataset}: pair order accuracy by MOS gap",
                            simulated.get(dataset, False)), f"fg_acc_dmos_{safe_name(dataset)}")
    keep = {p.name for p in written}
    for path in folder.glob("*"):
        if path.suffix.lstrip(".") in formats and path.name not in keep:
            path.unlink()
    log.info("wrote %d evaluation figures to %s", len(written), folder)
    return written
