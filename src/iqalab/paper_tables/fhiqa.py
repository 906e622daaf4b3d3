"""FHIQA (Chahine et al., Generalized Portrait Quality Assessment) Table I: per attribute the median over
scenes of SRCC, PLCC, KRCC and MAE (the PIQ23 per-scene protocol)."""

from __future__ import annotations

from iqalab.paper_tables.common import TableContext, attribute_order, wide_stats
from iqalab.paper_tables.registry import register_table
from iqalab.tables import Table


@register_table("fhiqa_table1", needs=("scene_median",))
def fhiqa_table1(ctx: TableContext, exps: list[str]) -> Table:
    """FHIQA Table I: per attribute, the median across scenes of SRCC, PLCC, KRCC, MAE (PIQ23 protocol)."""
    names = {"srcc": "SRCC", "plcc": "PLCC", "krcc": "KRCC", "mae": "MAE"}
    attrs = attribute_order(ctx, exps)
    stats = ctx.stats(exps, names, ["attribute", "metric"], group="scene_median")
    mean, std = wide_stats(stats, exps, [(a, m) for a in attrs for m in names.values()], ["attribute", "metric"])
    caption = ctx.caption("FHIQA Table I layout: median across scenes of each metric (PIQ23 protocol)", exps,
                          ["PLCC raw within scenes; MAE in MOS units; scenes with < 3 test images left out"])
    data = mean.set_axis(ctx.rows(exps))
    data[("Params (M)", "")] = ctx.params_m(exps)
    return Table("fhiqa_table1", data, caption, std.set_axis(ctx.rows(exps)), ("dataset",),
                 {("Params (M)", ""): None})
