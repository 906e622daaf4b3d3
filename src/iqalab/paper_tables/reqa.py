"""REQA (Li and Huo, coarse-to-fine assessment against the range effect) Tables I, II, IV and V-VI: per-tier
performance (Eq. 16), single-database medians and means over random splits, cross-database SROCC, ablations."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iqalab.analysis import metrics
from iqalab.paper_tables.common import (
    TableContext,
    cross_table,
    differing_settings,
    exp_of,
    per_dataset_columns,
    wide_stats,
)
from iqalab.paper_tables.registry import register_table
from iqalab.tables import Table


def tier_table(ctx: TableContext, exps: list[str], name: str, layout: str) -> Table:
    """REQA Tables I, V, VI: blocks SROCC / PLCC, rows = models, columns = tiers + Overall."""
    tiers = list(metrics.TIERS)
    names = {"srcc": "SROCC", "plcc": "PLCC"}
    tier_stats = ctx.stats(exps, names, ["metric", "group"], group="tier", primary_only=True)
    overall_stats = ctx.stats(exps, names, ["metric", "group"], group="all", primary_only=True)
    stats = pd.concat([tier_stats, overall_stats])
    groups = [f"tier:{t}" for t in tiers] + ["all"]
    mean, std = wide_stats(stats, exps, [(m, g) for m in names.values() for g in groups], ["metric", "group"])
    settings = differing_settings(ctx.meta, exps) if name == "reqa_ablation" else None
    rows, data_rows, std_rows = [], [], []
    ordered = sorted(exps, key=lambda e: (ctx.dataset_of(e), exps.index(e)))
    for dataset in dict.fromkeys(ctx.dataset_of(e) for e in ordered):
        for metric in names.values():
            for e in (x for x in ordered if ctx.dataset_of(x) == dataset):
                rows.append((dataset, ctx.primary(e), metric, ctx.labels[e]))
                data_rows.append([mean.loc[e, (metric, g)] for g in groups])
                std_rows.append([std.loc[e, (metric, g)] for g in groups])
    index = pd.MultiIndex.from_tuples(rows, names=["dataset", "attribute", "metric", "model"])
    columns = [*tiers, "Overall"]
    data = pd.DataFrame(data_rows, index=index, columns=columns)
    std_frame = pd.DataFrame(std_rows, index=index, columns=columns)
    if settings is not None:
        lookup = dict(zip(exps, settings))
        data.insert(0, "Settings", [lookup[exp_of(ctx, exps, (r[0], r[3]))] for r in rows])
        std_frame.insert(0, "Settings", np.nan)
    params_of = dict(zip(exps, ctx.params_m(exps)))
    data["Params (M)"] = [params_of[exp_of(ctx, exps, (r[0], r[3]))] for r in rows]
    caption = ctx.caption(layout, exps, [
        "tiers on 0-100 (Excellent >= 80, Good 60-80, Fair 40-60, Poor 20-40, Bad < 20) from " + tier_scales(ctx, exps),
        *tier_fallback_notes(ctx, exps),
        "PLCC raw (REQA Eq. 16); tiers with < 3 test images shown as -"], primary_only=True)
    return Table(name, data, caption, std_frame, ("dataset", "attribute", "metric"), {"Params (M)": None})


def tier_scales(ctx: TableContext, exps: list[str]) -> str:
    """Which scale each dataset's tiers use: a published 0-100 column (``tier_scale``, e.g. KonIQ-10k's
    MOS_zscore) or the ground-truth MOS mapped linearly from its range to 0-100."""
    by_dataset: dict[str, str] = {}
    for e in exps:
        info = ctx.meta[e]
        scale = (info.get("tier_scale") or {}).get(ctx.primary(e))
        lo, hi = (info.get("mos_range") or [0.0, 100.0])[:2]
        by_dataset.setdefault(ctx.dataset_of(e), scale or f"the MOS mapped linearly from {lo:g}-{hi:g}")
    return "; ".join(f"{d}: {s}" for d, s in by_dataset.items())


def tier_fallback_notes(ctx: TableContext, exps: list[str]) -> list[str]:
    """Caption sentences naming the rows (and splits) whose tiers did not come from the scale
    :func:`tier_scales` names: where some test images had no published tier value, the whole split's tiers came
    from the MOS mapped linearly from its range (``tier_from_mos``, the number of images without a value); where
    no tier could be assigned (``tiers_failed``), the row has no per-tier metrics. From the scores of
    :func:`iqalab.analysis.evaluation.compute_scores`, primary attribute."""
    scores = ctx.scoped(exps, primary_only=True)
    names = ctx.note_labels(exps)
    mapped, failed = [], []
    for (exp, split), part in scores.groupby(["experiment", "split"], sort=False):
        values = part.set_index("metric")["value"]
        lo, hi = (ctx.meta[str(exp)].get("mos_range") or [0.0, 100.0])[:2]
        n_missing = int(values.get("tier_from_mos", 0))
        if n_missing > 0:
            mapped.append(f"{names[str(exp)]} (split {split}: {n_missing} test image{'s' if n_missing > 1 else ''}"
                          f" without a tier value; MOS mapped from {lo:g}-{hi:g})")
        if values.get("tiers_failed", 0) > 0:
            failed.append(f"{names[str(exp)]} (split {split})")
    out = []
    if mapped:
        out.append("tiers from the MOS mapped linearly to 0-100 instead of the published tier scale, where test "
                   "images lacked a tier value: " + "; ".join(mapped))
    if failed:
        out.append("no per-tier metrics (a tier value outside 0-100; see the evaluate log): " + "; ".join(failed))
    return out


@register_table("reqa_table1", needs=("tier",))
def reqa_table1(ctx: TableContext, exps: list[str]) -> Table:
    """REQA Table I: SROCC and PLCC per quality tier (Excellent ... Bad, Eq. 16) and overall."""
    return tier_table(ctx, exps, "reqa_table1",
                      "REQA Table I layout: fine-grained (per quality tier) prediction performance")


@register_table("reqa_table2")
def reqa_table2(ctx: TableContext, exps: list[str]) -> Table:
    """REQA Table II: one column block per dataset, SROCC / PLCC as the median and mean ± std over splits."""
    names = {"srcc": "SROCC", **ctx.plcc_names}
    stats = ctx.stats(exps, names, ["metric"], primary_only=True)
    return per_dataset_columns(ctx, exps, stats, list(names.values()), "reqa_table2",
                                "REQA Table II layout: single-database performance, median and mean over "
                                "random splits", with_median=True, params=True)


@register_table("reqa_table4")
def reqa_table4(ctx: TableContext, exps: list[str]) -> Table | None:
    """REQA Table IV: cross-dataset SROCC, one column per train -> test pair."""
    return cross_table(ctx, exps, "reqa_table4", "REQA Table IV layout: SROCC of cross-database evaluations",
                       {"srcc": "SROCC"})


@register_table("reqa_ablation", aliases=("reqa_table5", "reqa_table6"), needs=("tier",))
def reqa_ablation(ctx: TableContext, exps: list[str]) -> Table:
    """REQA Tables V-VI: the per-tier layout of Table I for the ablation rows, with their differing settings."""
    return tier_table(ctx, exps, "reqa_ablation", "REQA Tables V-VI layout: ablations, per-tier performance")
