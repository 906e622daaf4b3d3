"""FHIQA (Chahine et al., Generalized Portrait Quality Assessment) Table I: per attribute the median over
scenes of SRCC, PLCC, KRCC and MAE (the PIQ23 per-scene protocol)."""

from __future__ import annotations

from iqalab.paper_tables.common import TableContext, attribute_order, training_description, wide_stats
from iqalab.paper_tables.registry import register_table
from iqalab.tables import Table


@register_table("fhiqa_table1", needs=("scene_median",))
def fhiqa_table1(ctx: TableContext, exps: list[str]) -> Table:
    """FHIQA Table I: per attribute, the median across scenes of SRCC, PLCC, KRCC, MAE (PIQ23 protocol).

    The paper's rows differ in what they start from (DB-CNN from its LIVE Challenge model, MUSIQ from KonIQ-10k
    or PaQ-2-PiQ, the HyperIQA family from ImageNet) and were all fine-tuned on PIQ23; the ``Training`` column
    says what each row here is (:func:`~iqalab.paper_tables.common.training_description`): trained on which
    dataset from which weights, zero-shot, or a classical model used as published."""
    names = {"srcc": "SRCC", "plcc": "PLCC", "krcc": "KRCC", "mae": "MAE"}
    attrs = attribute_order(ctx, exps)
    stats = ctx.stats(exps, names, ["attribute", "metric"], group="scene_median")
    mean, std = wide_stats(stats, exps, [(a, m) for a in attrs for m in names.values()], ["attribute", "metric"])
    caption = ctx.caption("FHIQA Table I layout: median across scenes of each metric (PIQ23 protocol)", exps,
                          ["PLCC raw within scenes; MAE in MOS units; scenes with < 3 test images left out"])
    data = mean.set_axis(ctx.rows(exps))
    data.insert(0, ("Training", ""), [training_description(ctx.meta[e]) for e in exps])
    std = std.set_axis(ctx.rows(exps))
    std.insert(0, ("Training", ""), float("nan"))
    data[("Params (M)", "")] = ctx.params_m(exps)
    return Table("fhiqa_table1", data, caption, std, ("dataset",),
                 {("Params (M)", ""): None})
