"""The papers' result tables, one module per paper, one registered function per table.

=====================  =========================================================================================
name (tag)             layout
=====================  =========================================================================================
tuningiqa_table2       TuningIQA Table 2: Backbone, Params (M), SRCC, PLCC, FG-ACC of the overall score
tuningiqa_table3       TuningIQA Table 3: per attribute, rows Method x {SRCC, PLCC, FG-ACC}
tuningiqa_table4       TuningIQA Table 4: ablation rows (the model settings that differ), SRCC, PLCC, FG-ACC
fhiqa_table1           FHIQA Table I: per attribute the median over scenes of SRCC, PLCC, KRCC, MAE (PIQ23)
reqa_table1            REQA Table I: SROCC and PLCC per quality tier (Excellent ... Bad) and overall
reqa_table2            REQA Table II: per dataset SROCC / PLCC, median and mean ± std across the random splits
reqa_table4            REQA Table IV: cross-dataset SROCC, one column per train -> test pair
reqa_ablation          REQA Tables V-VI (also tags reqa_table5 / reqa_table6): per-tier layout of ablation rows
sfiqa_table2           SFIQA Table II: per dimension SRCC / PLCC, Params (M), GMACs and latency when profiled
sfiqa_table3           SFIQA Table III: SRCC / PLCC per dataset (the overall dimension)
sfiqa_table4           SFIQA Table IV: cross-dataset SRCC / PLCC per train -> test pair
sfiqa_table5           SFIQA Table V: backbones, SRCC / PLCC averaged over dimensions, Params (M), GMACs
sfiqa_table6           SFIQA Table VI: module ablation (differing settings), averaged SRCC / PLCC, Params, GMACs
=====================  =========================================================================================

A new table is a function in its paper's module decorated with ``@register_table("<paper>_tableN")``
(:func:`~iqalab.paper_tables.registry.register_table`); :func:`table_names` lists what ``experiments.<e>.tables``
may hold, and :func:`build_tables` builds every table some experiment is tagged for.
"""

from __future__ import annotations

import pandas as pd

from iqalab.analysis.evaluation import EvalInputs, display_labels

# the paper modules register their tables on import (registry.PAPERS fixes the order)
from iqalab.paper_tables import fhiqa, reqa, sfiqa, tuningiqa  # noqa: F401
from iqalab.paper_tables.common import TableContext, all_metrics_table, mark_unavailable
from iqalab.paper_tables.registry import (
    PaperTable,
    register_table,
    registered_tables,
    table_names,
    tags_needing,
)
from iqalab.tables import Table

__all__ = ["PaperTable", "TableContext", "build_tables", "register_table", "registered_tables", "table_names",
           "tags_needing"]


def build_tables(scores: pd.DataFrame, inputs: EvalInputs, logistic: bool = True,
                 logistic_bounds: bool = True) -> dict[str, Table]:
    """``all_metrics`` and every paper table whose tag some experiment with predictions carries.

    ``scores`` is :func:`iqalab.analysis.evaluation.compute_scores` of ``inputs``; ``logistic`` picks the PLCC
    the tables show (after the 4-parameter logistic map, then also raw beside it, or raw only), ``logistic_bounds``
    only what the captions say about the fit. A table whose tagged experiments all lack
    predictions (or that no experiment is tagged for) is left out; rows of experiments that could not run keep
    their place with their status (:func:`~iqalab.paper_tables.common.mark_unavailable`).
    """
    ctx = TableContext(scores, inputs.meta, display_labels(inputs.meta), inputs.profiles, logistic, logistic_bounds)
    tables: dict[str, Table] = {}
    table = all_metrics_table(ctx)
    if table is not None:
        tables[table.name] = table
    missing = ctx.unavailable
    for entry in registered_tables():
        exps = [e for e in ctx.tagged(*entry.tags) if e in set(scores["experiment"]) or e in missing]
        if all(e in missing for e in exps):  # nothing measured (or nothing tagged): no table
            continue
        table = entry.build(ctx, exps)
        if table is not None:
            mark_unavailable(table, ctx, exps)
            tables[entry.name] = table
    return tables
