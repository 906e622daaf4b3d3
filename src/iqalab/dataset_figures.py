"""Figures of a dataset's annotations (stage ``annotation_stats``), after the papers' dataset figures.

- :func:`mos_distributions` - per-attribute MOS histograms with a density per condition (SFIQA Figs. 2-3,
  TuningIQA Fig. 4 right);
- :func:`attribute_scatter` - pairwise scatter matrix of the attribute MOS (TuningIQA Fig. 4 left);
- :func:`correlation_heatmaps` - PLCC and SRCC matrices with the values printed in the cells (TuningIQA Fig. 4,
  SFIQA Fig. 8);
- :func:`ols_coefficients` / :func:`ols_residuals` - the regression of overall quality on the other attributes
  (SFIQA Sec. III-C-3) with 95% CIs, and its residuals against the fitted values;
- :func:`rater_tiers` - each rater's PLCC with the MOS overall and within MOS tiers (TuningIQA Fig. 5);
- :func:`bt500_outliers` - ITU-R BT.500 observer screening, per rater;
- :func:`mos_intervals` - per-image MOS with its confidence interval, images sorted by MOS;
- :func:`pair_refinement` - what the pairwise refinement did to the MOS order of fine pairs (TuningIQA Eq. 2);
- :func:`camera_mos` / :func:`camera_correlation` - MOS against each camera parameter, and their SRCC;
- :func:`parameter_sweep_montage` - images of one scene sorted by one camera parameter (simulator issue);
- :func:`region_montage` - person/face boxes and landmarks per condition with the detection rates (issue #21).

Every function takes tables (or results of :mod:`iqalab.analysis.stats`) and returns a matplotlib figure sized for a paper
column (3.5 in) or page (7.16 in); the stage saves them with :func:`iqalab.plots.save`. Styling is seaborn's
``paper`` context, applied only inside these functions (:func:`figure_style`), so callers' settings are untouched.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FixedLocator

from iqalab.analysis.annotation import sweep_selection
from iqalab.analysis.stats import BT500Report, OLSResult
from iqalab.plots import COLUMN_WIDTH_IN, PAGE_WIDTH_IN

if TYPE_CHECKING:
    from iqalab.analysis.annotation import AnnotationAnalysis
    from iqalab.data.schema import Dataset

log = logging.getLogger(__name__)

#: conditions beyond this many are not drawn as separate densities (a legend of 30 colours reads as noise)
MAX_CONDITION_HUES = 8
#: camera parameters spanning more than this ratio are drawn on a log axis (shutter, ISO)
LOG_AXIS_RATIO = 20.0


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Seaborn ``whitegrid`` style in the ``paper`` context, scoped to the figures built inside the block."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=0.85):
        yield


def _tight(fig: plt.Figure, title: bool = False, **kwargs: float) -> None:
    """``tight_layout`` leaving a strip at the bottom for the "simulated data" label (and, with ``title``, room
    for the suptitle at the top)."""
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.14 / height, 1, 1 - (0.22 / height if title else 0)), **kwargs)


def _grid(n: int, max_cols: int = 3, width: float = PAGE_WIDTH_IN, row_height: float = 1.9,
          sharey: bool = False) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width if cols > 1 else COLUMN_WIDTH_IN, row_height * rows),
                             squeeze=False, sharey=sharey)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _conditions(images: pd.DataFrame) -> list[str]:
    """Distinct non-null conditions, or [] when there are none, only one, or too many to colour."""
    if "condition" not in images.columns:
        return []
    values = sorted(images["condition"].dropna().astype(str).unique())
    return values if 1 < len(values) <= MAX_CONDITION_HUES else []


# ------------------------------------------------------------------------------------------- distributions
def mos_distributions(images: pd.DataFrame, attributes: Sequence[str], mos_range: tuple[float, float],
                      title: str = "") -> plt.Figure:
    """One panel per attribute: MOS histogram (density) and, when the dataset has 2-8 conditions, a kernel
    density per condition (SFIQA Figs. 2-3 show per-scenario MOS distributions; TuningIQA Fig. 4 right)."""
    conditions = _conditions(images)
    with figure_style():
        fig, axes = _grid(len(attributes))
        bins = np.linspace(mos_range[0], mos_range[1], 21)
        palette = dict(zip(conditions, sns.color_palette("colorblind", len(conditions))))
        for ax, attr in zip(axes, attributes):
            values = images[f"mos_{attr}"].astype(float)
            ax.hist(values.dropna(), bins=bins, density=True, color="0.8", edgecolor="0.55", linewidth=0.4,
                    label="all")
            for cond in conditions:
                sel = values[images["condition"].astype(str) == cond].dropna()
                if sel.nunique() > 1:
                    sns.kdeplot(x=sel, ax=ax, color=palette[cond], label=f"{cond} (n={len(sel)})",
                                linewidth=1.1, clip=mos_range, warn_singular=False)
            ax.set(xlim=mos_range, xlabel=f"MOS {attr}", ylabel="density")
        fig.suptitle(title or "MOS distributions", fontsize=9, x=0.01, ha="left")
        if conditions:
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, fontsize=6, frameon=False, loc="upper right", ncol=len(labels))
        _tight(fig, title=True)
    return fig


# ------------------------------------------------------------------------------------------- relations
def attribute_scatter(images: pd.DataFrame, attributes: Sequence[str], mos_range: tuple[float, float],
                      max_points: int = 3000, seed: int = 0) -> plt.Figure:
    """Pairwise scatter matrix of the attribute MOS (TuningIQA Fig. 4): histograms on the diagonal, scatter
    below it, the PLCC of each pair above it. At most ``max_points`` images are drawn (a seeded sample)."""
    n = len(attributes)
    cols = [f"mos_{a}" for a in attributes]
    data = images[cols].astype(float)
    if len(data) > max_points:
        data = data.sample(max_points, random_state=seed)
    side = min(PAGE_WIDTH_IN, max(COLUMN_WIDTH_IN, 1.25 * n))
    with figure_style():
        fig, axes = plt.subplots(n, n, figsize=(side, side), squeeze=False)
        bins = np.linspace(mos_range[0], mos_range[1], 16)
        ticks = FixedLocator(np.linspace(mos_range[0], mos_range[1], 3))
        for i in range(n):
            for j in range(n):
                ax = axes[i][j]
                if i == j:
                    ax.hist(data[cols[i]].dropna(), bins=bins, color="0.6", edgecolor="white", linewidth=0.3)
                    ax.set(xlim=mos_range, yticks=[])
                    ax.grid(False)
                    ax.xaxis.set_major_locator(ticks)
                elif i > j:
                    ax.scatter(data[cols[j]], data[cols[i]], s=3, alpha=0.45, linewidths=0, color="C0")
                    ax.set(xlim=mos_range, ylim=mos_range)
                    ax.xaxis.set_major_locator(ticks)
                    ax.yaxis.set_major_locator(ticks)
                else:
                    both = data[[cols[i], cols[j]]].dropna()
                    r = both.corr().iloc[0, 1] if len(both) > 2 else math.nan
                    ax.text(0.5, 0.5, f"{r:.2f}" if np.isfinite(r) else "n/a", ha="center", va="center",
                            fontsize=9, transform=ax.transAxes)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    ax.grid(False)
                if i == n - 1:
                    ax.set_xlabel(attributes[j], fontsize=7)
                elif i != j or i < n - 1:
                    ax.tick_params(labelbottom=False)
                if j == 0 and i > 0:
                    ax.set_ylabel(attributes[i], fontsize=7)
                elif j > 0:
                    ax.tick_params(labelleft=False)
                ax.tick_params(labelsize=6)
        fig.suptitle("attribute MOS: scatter (below), PLCC (above)", fontsize=9)
        _tight(fig, title=True, pad=0.3, h_pad=0.2, w_pad=0.2)
    return fig


def correlation_heatmaps(plcc_matrix: pd.DataFrame, srcc_matrix: pd.DataFrame) -> plt.Figure:
    """PLCC and SRCC matrices side by side, values printed in the cells (TuningIQA Fig. 4, SFIQA Fig. 8)."""
    n = len(plcc_matrix)
    with figure_style():
        fig, axes = plt.subplots(1, 3, figsize=(PAGE_WIDTH_IN, 0.42 * n + 1.4),
                                 gridspec_kw={"width_ratios": [1, 1, 0.05]})
        for ax, (name, matrix) in zip(axes, (("PLCC", plcc_matrix), ("SRCC", srcc_matrix))):
            sns.heatmap(matrix.astype(float), ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", annot=True, fmt=".2f",
                        annot_kws={"fontsize": 7}, cbar=ax is axes[0], cbar_ax=axes[2], linewidths=0.4)
            ax.set(title=name, xlabel="", ylabel="")
            ax.tick_params(labelsize=7)
            ax.tick_params(axis="x", rotation=45)
            ax.tick_params(axis="y", rotation=0)
        axes[2].tick_params(labelsize=6)
        _tight(fig)
    return fig


# ------------------------------------------------------------------------------------------- regression
def ols_coefficients(raw: OLSResult, standardised: OLSResult | None = None) -> plt.Figure:
    """Coefficients with 95% CIs of the OLS of overall on the other attributes (SFIQA Sec. III-C-3): raw
    (MOS units, constant left out of the plot) and, when given, standardised betas; R^2 in the titles."""
    panels = [("raw", raw)] + ([("standardised", standardised)] if standardised is not None else [])
    with figure_style():
        fig, axes = plt.subplots(1, len(panels), figsize=(PAGE_WIDTH_IN if len(panels) > 1 else COLUMN_WIDTH_IN,
                                                          0.32 * len(raw.predictors) + 1.2), squeeze=False)
        for ax, (label, result) in zip(axes[0], panels):
            table = result.table.drop(index="const", errors="ignore")
            y = np.arange(len(table))[::-1]
            err = np.vstack([table["coef"] - table["ci_low"], table["ci_high"] - table["coef"]])
            ax.errorbar(table["coef"], y, xerr=err, fmt="o", color="C0", ms=4, capsize=2, lw=1)
            ax.axvline(0, color="0.5", lw=0.6)
            ax.set_yticks(y, [f"{t}  (VIF {v:.1f})" for t, v in zip(table.index, table["vif"])], fontsize=7)
            ax.set(xlabel="coefficient (95% CI)",
                   title=f"{label}: R$^2$={result.r2:.3f}, adj. {result.adj_r2:.3f}, n={result.n}")
            ax.title.set_fontsize(8)
        fig.suptitle(f"OLS: {raw.target} ~ " + " + ".join(raw.predictors), fontsize=9)
        _tight(fig)
    return fig


def ols_residuals(result: OLSResult, images: pd.DataFrame) -> plt.Figure:
    """Residuals of the OLS fit against its fitted values (a curve or funnel says the linear model misses
    something, e.g. a saturating attribute near the top of the scale)."""
    observed = images.loc[result.residuals.index, f"mos_{result.target}"].astype(float)
    fitted = observed - result.residuals
    with figure_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.4))
        ax.scatter(fitted, result.residuals, s=5, alpha=0.5, linewidths=0)
        ax.axhline(0, color="0.4", lw=0.7)
        if len(fitted) > 10:
            order = np.argsort(fitted.to_numpy())
            window = max(5, len(order) // 15)
            smooth = pd.Series(result.residuals.to_numpy()[order]).rolling(window, center=True).mean()
            ax.plot(fitted.to_numpy()[order], smooth, color="C3", lw=1, label=f"running mean ({window})")
            ax.legend(fontsize=6, frameon=False)
        ax.set(xlabel=f"fitted {result.target}", ylabel="residual",
               title=f"OLS residuals (RMSE {float(np.sqrt((result.residuals ** 2).mean())):.3f})")
        ax.title.set_fontsize(8)
        _tight(fig)
    return fig


# ------------------------------------------------------------------------------------------- raters
def rater_tiers(table: pd.DataFrame, attribute: str) -> plt.Figure:
    """Each rater's PLCC with the MOS over all images and within MOS tiers (TuningIQA Fig. 5), from
    :func:`iqalab.analysis.stats.rater_vs_mos`; raters the dataset's screening removed are drawn as crosses when the
    table has a boolean ``kept`` column."""
    order = list(dict.fromkeys(table["tier"]))
    data = table.dropna(subset=["plcc"])
    with figure_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.5))
        kept = data[data["kept"]] if "kept" in data.columns else data
        sns.boxplot(data=kept, x="tier", y="plcc", order=order, ax=ax, color="0.85", fliersize=0, linewidth=0.7)
        state = np.random.get_state()  # seaborn jitters from numpy's global generator: seed it, then restore it
        np.random.seed(0)
        try:
            sns.stripplot(data=kept, x="tier", y="plcc", order=order, ax=ax, size=2.5, color="C0", jitter=0.2)
        finally:
            np.random.set_state(state)
        if "kept" in data.columns and (~data["kept"]).any():
            removed = data[~data["kept"]]
            xs = [order.index(t) for t in removed["tier"]]
            ax.scatter(xs, removed["plcc"], marker="x", s=12, color="C3", linewidths=0.8,
                       label="removed by screening")
            ax.legend(fontsize=6, frameon=False, loc="lower left")
        means = kept.groupby("tier")["plcc"].mean()
        for k, tier in enumerate(order):
            if tier in means.index:
                ax.text(k, 1.04, f"{means[tier]:.2f}", ha="center", va="bottom", fontsize=6)
        ax.set(xlabel="MOS tier", ylabel="rater-vs-MOS PLCC", ylim=(min(-0.2, float(data["plcc"].min()) - 0.05)
                                                                     if len(data) else -0.2, 1.15))
        ax.set_title(f"{attribute}: rater agreement overall and within tiers (mean above)", fontsize=8)
        ax.tick_params(axis="x", labelsize=6, rotation=30)
        _tight(fig)
    return fig


def bt500_outliers(report: BT500Report, builder_removed: Sequence[str] = ()) -> plt.Figure:
    """Per-rater outlier rate ``(P+Q)/N`` and asymmetry ``|P-Q|/(P+Q)`` of ITU-R BT.500 screening, with the
    rejection region (rate above ``p_limit`` and asymmetry below ``q_limit``) shaded."""
    per = report.raters
    rejected = per["rejected"].to_numpy(dtype=bool)
    asym = per["asymmetry"].fillna(0.0).to_numpy(dtype=float)
    with figure_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.5))
        top = max(0.12, float(per["outlier_rate"].max()) * 1.15 if len(per) else 0.12)
        ax.axvspan(report.p_limit, top, ymax=report.q_limit / 1.05, color="C3", alpha=0.08, lw=0)
        ax.scatter(per["outlier_rate"][~rejected], asym[~rejected], s=14, color="C0", label="kept")
        ax.scatter(per["outlier_rate"][rejected], asym[rejected], s=18, marker="x", color="C3", label="rejected")
        flagged = set(map(str, builder_removed))
        for row, a in zip(per.itertuples(index=False), asym):
            if str(row.rater) in flagged or row.rejected:
                ax.annotate(str(row.rater), (row.outlier_rate, a), fontsize=5, xytext=(2, 2),
                            textcoords="offset points")
        ax.set(xlim=(0, top), ylim=(-0.03, 1.05), xlabel="outlier rate (P+Q)/N", ylabel="asymmetry |P-Q|/(P+Q)")
        ax.set_title(f"BT.500 screening: {int(rejected.sum())} of {len(per)} raters rejected", fontsize=8)
        if flagged:
            ax.plot([], [], " ", label="named: removed by the\ndataset's own screening")
        ax.legend(fontsize=6, frameon=False, loc="upper right")
        _tight(fig)
    return fig


def mos_intervals(ci_table: pd.DataFrame, attributes: Sequence[str], mos_range: tuple[float, float]) -> plt.Figure:
    """Per-image MOS (sorted) with its confidence band, one panel per attribute (ITU-R BT.500 Sec. 2.2)."""
    with figure_style():
        fig, axes = _grid(len(attributes), row_height=1.7, sharey=True)
        for ax, attr in zip(axes, attributes):
            part = ci_table[ci_table["attribute"] == attr] if "attribute" in ci_table.columns else ci_table
            part = part.sort_values("mos")
            x = np.arange(len(part))
            ax.fill_between(x, part["ci_low"], part["ci_high"], color="C0", alpha=0.3, lw=0, label="95% CI")
            ax.plot(x, part["mos"], color="C0", lw=0.8, label="MOS")
            ax.set(xlabel="images sorted by MOS", ylim=mos_range, title=f"{attr}: mean half-width "
                   f"{float(part['delta'].mean()):.2f}")
            ax.title.set_fontsize(8)
        axes[0].set_ylabel("MOS")
        axes[0].legend(fontsize=6, frameon=False, loc="upper left")
        _tight(fig)
    return fig


# ------------------------------------------------------------------------------------------- pairs
def pair_refinement(summary: pd.DataFrame) -> plt.Figure:
    """Fine pairs per attribute split by what refinement did to the MOS order: agreed, flipped, tied (p=0.5),
    or MOS already tied (TuningIQA "Pairwise Comparison"); bars are shares of the fine pairs, ``n`` printed."""
    parts = ["agree", "flipped", "tied", "mos_tied"]
    colours = ["C2", "C3", "C1", "0.6"]
    counts = summary[parts].astype(float)
    totals = counts.sum(axis=1)
    shares = counts.div(totals.where(totals > 0, 1.0), axis=0)
    with figure_style():
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 0.3 * len(shares) + 1.3))
        left = np.zeros(len(shares))
        y = np.arange(len(shares))[::-1]
        for part, colour in zip(parts, colours):
            ax.barh(y, shares[part], left=left, color=colour, label=part.replace("_", " "), height=0.7)
            left += shares[part].to_numpy()
        ax.set_yticks(y, list(shares.index), fontsize=7)
        for yi, n in zip(y, totals):
            ax.text(1.01, yi, f"n={int(n)}", va="center", fontsize=6)
        ax.set(xlabel="share of fine pairs", xlim=(0, 1.15))
        ax.legend(fontsize=6, frameon=False, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.3))
        ax.set_title("pairwise refinement of fine pairs vs. the MOS order", fontsize=8)
        _tight(fig)
    return fig


# ------------------------------------------------------------------------------------------- camera
def _log_axis(values: pd.Series) -> bool:
    finite = values.dropna()
    return bool(len(finite) and finite.min() > 0 and finite.max() / finite.min() > LOG_AXIS_RATIO)


def camera_mos(images: pd.DataFrame, cam_columns: Sequence[str], attribute: str) -> plt.Figure:
    """MOS of ``attribute`` against each camera parameter (log axis for parameters spanning > 20x), with the
    median MOS per parameter bin."""
    with figure_style():
        fig, axes = _grid(len(cam_columns), max_cols=4, row_height=1.6, sharey=True)
        y_all = images[f"mos_{attribute}"].astype(float)
        for ax, col in zip(axes, cam_columns):
            x = images[col].astype(float)
            ok = x.notna() & y_all.notna()
            ax.scatter(x[ok], y_all[ok], s=3, alpha=0.4, linewidths=0)
            log_x = _log_axis(x[ok])
            if log_x:
                ax.set_xscale("log")
            if x[ok].nunique() > 3:
                xs = np.log(x[ok]) if log_x else x[ok]
                edges = np.unique(np.quantile(xs, np.linspace(0, 1, 9)))
                if len(edges) > 2:
                    idx = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, len(edges) - 2)
                    med = pd.DataFrame({"x": x[ok].to_numpy(), "y": y_all[ok].to_numpy(), "b": idx}).groupby("b")
                    ax.plot(med["x"].median(), med["y"].median(), color="C3", lw=1, marker=".", ms=3)
            ax.set_xlabel(col.removeprefix("cam_"), fontsize=7)
            ax.tick_params(labelsize=6)
        axes[0].set_ylabel(f"MOS {attribute}")
        fig.suptitle(f"{attribute} MOS against camera parameters (red: binned median)", fontsize=9)
        _tight(fig)
    return fig


def camera_correlation(matrix: pd.DataFrame) -> plt.Figure:
    """SRCC of each camera parameter (rows) with each attribute MOS (columns), values in the cells."""
    with figure_style():
        fig, ax = plt.subplots(figsize=(min(PAGE_WIDTH_IN, 0.7 * matrix.shape[1] + 1.6),
                                        0.32 * matrix.shape[0] + 1.0))
        sns.heatmap(matrix.astype(float), ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", annot=True, fmt=".2f",
                    annot_kws={"fontsize": 7}, linewidths=0.4, cbar_kws={"shrink": 0.8})
        ax.set(xlabel="attribute", ylabel="camera parameter", title="SRCC: camera parameter vs. MOS")
        ax.title.set_fontsize(8)
        ax.tick_params(labelsize=7)
        _tight(fig)
    return fig


def _format_value(column: str, value: float) -> str:
    if column == "cam_shutter" and 0 < value < 1:
        return f"1/{1 / value:.0f} s"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def parameter_sweep_montage(root: Path, images: pd.DataFrame, cam_columns: Sequence[str], attribute: str,
                            max_images: int = 8, image_px: int = 96,
                            load: Callable[[pd.Series], np.ndarray] | None = None) -> plt.Figure | None:
    """Example images across a parameter sweep: one row per camera parameter, the images of one scene sorted
    by it (:func:`iqalab.analysis.annotation.sweep_selection`), titled with the value and the ``attribute`` MOS. ``load`` maps an images
    row to its pixels (e.g. from the image cache); by default the file under ``root`` is decoded at
    ``image_px``. ``None`` when no parameter varies within a scene."""
    from iqalab.data.cache import decode_image
    from iqalab.data.schema import safe_relative_path

    if load is None:
        def load(row: pd.Series) -> np.ndarray:
            return decode_image(safe_relative_path(root, row["path"]), image_px)

    rows = []
    for col in cam_columns:
        picked = sweep_selection(images, col, cam_columns, max_images)
        if picked is not None:
            rows.append((col, *picked))
    if not rows:
        return None
    n_cols = max(len(r[2]) for r in rows)
    cell = PAGE_WIDTH_IN / max(n_cols, 4)
    with figure_style():
        fig, axes = plt.subplots(len(rows), n_cols, figsize=(cell * n_cols, (cell + 0.25) * len(rows)),
                                 squeeze=False)
        for r, ax, row in _grid_cells(axes, [chosen for _, _, chosen in rows]):
            col = rows[r][0]
            ax.imshow(load(row))
            extra = f" (+{int(row['other_changes'])})" if row["other_changes"] else ""
            ax.set_title(f"{_format_value(col, float(row[col]))}{extra} | {float(row[f'mos_{attribute}']):.2f}",
                         fontsize=6, pad=2)
        for r, (col, scene, _) in enumerate(rows):
            axes[r][0].text(-0.08, 0.5, f"{col.removeprefix('cam_')}\n{scene}", transform=axes[r][0].transAxes,
                            ha="right", va="center", fontsize=6)
        fig.suptitle(f"one scene per parameter, sorted by it (title: value (+other parameters changed) | "
                     f"{attribute} MOS)", fontsize=7)
        _tight(fig, title=True, pad=0.3, h_pad=0.3, w_pad=0.2)
    return fig


def _grid_cells(axes: np.ndarray, chosen: Sequence[pd.DataFrame]) -> Iterator[tuple[int, plt.Axes, pd.Series]]:
    """The image cells of a montage grid: ``(row index, axis, image row)`` for row ``r``'s images ``chosen[r]``
    left to right; every axis of the grid is turned off, so cells beyond a row's images stay blank."""
    for r, picked in enumerate(chosen):
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(picked):
                yield r, ax, picked.iloc[c]


def annotation_figure_makers(ds: Dataset, result: AnnotationAnalysis,
                             load: Callable[[pd.Series], np.ndarray] | None = None,
                             ) -> dict[str, Callable[[], plt.Figure | None]]:
    """The figures :func:`iqalab.analysis.annotation.analyse` allows, as name -> function drawing it (the stage
    draws, saves and closes them one at a time); ``load`` reads the sweep montage's images (default: decode)."""
    images, attrs, rng = ds.images, ds.attributes, ds.mos_range
    makers: dict[str, Callable[[], plt.Figure | None]] = {
        "mos_distributions": lambda: mos_distributions(images, attrs, rng, f"{ds.name}: MOS distributions"),
    }
    if result.plcc is not None:
        makers["attribute_scatter"] = lambda: attribute_scatter(images, attrs, rng)
        makers["attribute_correlation"] = lambda: correlation_heatmaps(result.plcc, result.srcc)
    if result.ols is not None:
        makers["ols_coefficients"] = lambda: ols_coefficients(result.ols, result.ols_standardised)
        makers["ols_residuals"] = lambda: ols_residuals(result.ols, images)
    if result.rater_table is not None:
        makers["rater_vs_mos"] = lambda: rater_tiers(result.rater_table, result.main_attribute)
    if result.bt500 is not None:
        makers["bt500_screening"] = lambda: bt500_outliers(result.bt500, result.dataset_removed)
    if result.ci is not None and len(result.ci):
        ci_attrs = [a for a in attrs if (result.ci["attribute"] == a).any()]
        makers["mos_confidence"] = lambda: mos_intervals(result.ci, ci_attrs, rng)
    if result.pairs is not None and result.pairs.loc["all", "fine"] > 0:
        makers["pair_refinement"] = lambda: pair_refinement(result.pairs)
    if result.camera_columns:
        makers["camera_mos"] = lambda: camera_mos(images, result.camera_columns, result.main_attribute)
        makers["camera_correlation"] = lambda: camera_correlation(result.camera_srcc)
        if "sweep" not in result.skipped:
            makers["parameter_sweep"] = lambda: parameter_sweep_montage(
                ds.root, images, result.camera_columns, result.main_attribute, load=load)
    if "regions" in result.report:
        makers["regions"] = lambda: region_montage(ds.root, images, load=load)
    return makers


def region_montage(root: Path, images: pd.DataFrame, group: str = "condition", per_group: int = 6,
                   image_px: int = 128, seed: int = 0,
                   load: Callable[[pd.Series], np.ndarray] | None = None) -> plt.Figure | None:
    """Detections and detection rates per group (issue #21; the regions of TuningIQA's HFE and SFIQA's views).

    One row per ``group`` value (condition or scenario; one row when the column is empty): ``per_group`` images
    drawn at random (``seed``) with the person box (blue), the face box (green) and the five landmarks (red); the
    row label gives the share of images with a face and with a person, and the title the detectors of
    ``images.parquet`` (``face_detector`` / ``person_detector``, :mod:`iqalab.data.regions`). Boxes are normalised,
    so any ``load`` (e.g. the square image cache) draws them in place. ``None`` when the table has no box columns.
    """
    from matplotlib.patches import Rectangle

    from iqalab.data.cache import decode_image
    from iqalab.data.regions import detection_rates
    from iqalab.data.schema import FACE_BOX, LANDMARKS, PERSON_BOX, safe_relative_path

    if not set(FACE_BOX) <= set(images.columns) and not set(PERSON_BOX) <= set(images.columns):
        return None
    if load is None:
        def load(row: pd.Series) -> np.ndarray:
            return decode_image(safe_relative_path(root, row["path"]), image_px)

    def coords(row: pd.Series, cols: Sequence[str]) -> np.ndarray | None:
        if not set(cols) <= set(row.index):
            return None
        values = row[list(cols)].to_numpy(dtype=float)
        return None if np.isnan(values).any() else values

    labels = images[group].fillna("all").astype(str) if group in images.columns else pd.Series("all", images.index)
    groups = sorted(labels.unique())
    rates = detection_rates(images, group).set_index("group")
    n_cols = max(1, min(per_group, int(labels.value_counts().max())))
    cell = PAGE_WIDTH_IN / max(n_cols, 4)
    with figure_style():
        fig, axes = plt.subplots(len(groups), n_cols, figsize=(cell * n_cols, (cell + 0.1) * len(groups)),
                                 squeeze=False)
        members = [images[labels == name] for name in groups]
        chosen = [m.sample(min(n_cols, len(m)), random_state=seed) for m in members]
        for _, ax, row in _grid_cells(axes, chosen):
            pixels = load(row)
            h, w = pixels.shape[:2]
            ax.imshow(pixels)
            for cols, colour in ((PERSON_BOX, "tab:blue"), (FACE_BOX, "tab:green")):
                box = coords(row, cols)
                if box is not None:
                    ax.add_patch(Rectangle((box[0] * w, box[1] * h), (box[2] - box[0]) * w,
                                           (box[3] - box[1]) * h, fill=False, edgecolor=colour, linewidth=0.8))
            marks = coords(row, LANDMARKS)
            if marks is not None:
                ax.scatter(marks[0::2] * w, marks[1::2] * h, s=2, c="tab:red", linewidths=0)
        for r, name in enumerate(groups):
            axes[r][0].text(-0.08, 0.5, f"{name} (n={len(members[r])})\nface {rates.loc[name, 'face']:.0%}\n"
                                        f"person {rates.loc[name, 'person']:.0%}",
                            transform=axes[r][0].transAxes, ha="right", va="center", fontsize=6)
        detectors = []
        for kind in ("face", "person"):
            col = f"{kind}_detector"
            names = sorted(images[col].dropna().astype(str).unique()) if col in images.columns else []
            detectors.append(f"{kind}: {', '.join(names) if names else 'dataset boxes'}")
        fig.suptitle(f"regions (person blue, face green, landmarks red); {'; '.join(detectors)}", fontsize=7)
        _tight(fig, title=True, pad=0.3, h_pad=0.3, w_pad=0.2)
    return fig
