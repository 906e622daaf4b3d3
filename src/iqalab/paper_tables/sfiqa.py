"""SFIQA (Jiang et al., SFIQA-Bench / SFIQA-Assessor) Tables II-VI: per-dimension performance and cost,
per-dataset and cross-dataset performance, backbones and the module ablation."""

from __future__ import annotations

from iqalab.paper_tables.common import (
    TableContext,
    attribute_order,
    averaged_table,
    cross_table,
    per_dataset_columns,
    wide_stats,
)
from iqalab.paper_tables.registry import register_table
from iqalab.tables import Table


@register_table("sfiqa_table2")
def sfiqa_table2(ctx: TableContext, exps: list[str]) -> Table:
    """SFIQA Table II: per dimension SRCC / PLCC, then Params (M), GMACs and latency (when profiled)."""
    names = {"srcc": "SRCC", **ctx.plcc_names}
    attrs = attribute_order(ctx, exps)
    stats = ctx.stats(exps, names, ["attribute", "metric"])
    mean, std = wide_stats(stats, exps, [(a, m) for a in attrs for m in names.values()], ["attribute", "metric"])
    index = ctx.rows(exps)
    data, std = mean.set_axis(index), std.set_axis(index)
    data[("Params (M)", "")] = ctx.params_m(exps)
    for key, label in (("gmacs", "GMACs"), ("latency_ms", "Latency (ms)")):
        if ctx.has_profile(exps, key):
            data[(label, "")] = ctx.profile_value(exps, key)
    devices = sorted({str(ctx.profiles[e]["device"]) for e in exps if ctx.profiles.get(e, {}).get("device")})
    notes = ctx.plcc_notes(exps) + ([f"latency measured on {', '.join(devices)}"] if devices else [])
    caption = ctx.caption("SFIQA Table II layout: per-dimension performance and cost", exps, notes, paper_table="sfiqa_table2")
    return Table("sfiqa_table2", data, caption, std, ("dataset",))


@register_table("sfiqa_table3")
def sfiqa_table3(ctx: TableContext, exps: list[str]) -> Table:
    """SFIQA Table III: SRCC / PLCC per dataset (primary attribute), one row per method."""
    names = {"srcc": "SRCC", **ctx.plcc_names}
    stats = ctx.stats(exps, names, ["metric"], primary_only=True)
    return per_dataset_columns(ctx, exps, stats, list(names.values()), "sfiqa_table3",
                                "SFIQA Table III layout: performance per dataset", with_median=False, params=True)


@register_table("sfiqa_table4")
def sfiqa_table4(ctx: TableContext, exps: list[str]) -> Table | None:
    """SFIQA Table IV: cross-dataset SRCC / PLCC per train -> test pair."""
    return cross_table(ctx, exps, "sfiqa_table4", "SFIQA Table IV layout: cross-dataset performance",
                       {"srcc": "SRCC", **ctx.plcc_names})


@register_table("sfiqa_table5")
def sfiqa_table5(ctx: TableContext, exps: list[str]) -> Table:
    """SFIQA Table V: backbones, SRCC / PLCC averaged over dimensions, Params (M), GMACs."""
    return averaged_table(
        ctx, exps, "sfiqa_table5", "SFIQA Table V layout: backbones, SRCC/PLCC averaged over the dimensions",
        {"srcc": "SRCC", **ctx.plcc_names}, params=True, backbone=True, gmacs=True)


#: Table VI's check-mark columns: (column, model argument, the view's name or the value that earns the mark);
#: unset arguments take SFIQA-Assessor's defaults (all three views, both modules)
TABLE6_MARKS = (("Original View", "views", "original"), ("Face View", "views", "face"),
                ("Eyes-Mouth View", "views", "eyes_mouth"), ("CFF", "use_cross_view", True),
                ("TSA", "use_task_self_attn", True))


def module_marks(ctx: TableContext, exps: list[str]) -> dict[str, list[str]]:
    """Table VI's leading columns per experiment: ✓ / ✗ for each view and module (the paper's rows, e.g.
    "original + eyes-mouth" = ✓ ✗ ✓ ✓ ✓)."""
    out: dict[str, list[str]] = {}
    for column, arg, mark in TABLE6_MARKS:
        values = []
        for e in exps:
            kw = ctx.meta[e].get("model_kwargs") or {}
            on = mark in (kw.get("views") or ("original", "face", "eyes_mouth")) if arg == "views" \
                else kw.get(arg, True) is mark
            values.append("✓" if on else "✗")
        out[column] = values
    return out


@register_table("sfiqa_table6")
def sfiqa_table6(ctx: TableContext, exps: list[str]) -> Table:
    """SFIQA Table VI: module ablation (✓/✗ per view and module, then the differing settings), averaged SRCC /
    PLCC, Params (M), GMACs."""
    table = averaged_table(
        ctx, exps, "sfiqa_table6", "SFIQA Table VI layout: module ablation, SRCC/PLCC averaged over the dimensions",
        {"srcc": "SRCC", **ctx.plcc_names}, settings=True, params=True, gmacs=True)
    for pos, (column, values) in enumerate(module_marks(ctx, exps).items()):
        table.data.insert(pos, column, values)
        if table.std is not None:
            table.std.insert(pos, column, float("nan"))
        table.directions[column] = None
    return table
