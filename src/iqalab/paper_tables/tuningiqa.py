"""TuningIQA (Sheng et al., FGLive-10K) Tables 2-4: score regression (SRCC, PLCC) and fine-grained ranking
(FG-ACC, Sec. 4) of the backbones, per attribute, and the ablations."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iqalab.paper_tables.common import TableContext, attribute_order, averaged_table, frame, wide_stats
from iqalab.paper_tables.registry import register_table
from iqalab.tables import Table


@register_table("tuningiqa_table2")
def tuningiqa_table2(ctx: TableContext, exps: list[str]) -> Table:
    """TuningIQA Table 2: Backbone, #Param, score regression (SRCC, PLCC) and FG ranking (FG-ACC) on the overall
    score. Table 4's caption says it averages over the overall score and the attributes, Table 2's does not, and
    its numbers are not such an average (TuningIQA MobileNetV3-S: 0.9308 SRCC in Table 2; Table 2's overall with
    Table 3's four attributes averages 0.8906, Table 4 gives 0.8917): Table 2 reads the overall score.

    FG-ACC is TuningIQA's single-image mode (the order of two regression scores) for every row; a model with a pair
    head (TuningIQA, Eq. 9) also gets ``FG-ACC (pairwise)``, the order its pair head gives the same pairs (the
    paper defines both modes and does not say which Table 2 reports).

    ``Input Size`` is the size each experiment's model was given, as training recorded it (``input_size`` in the
    predictions JSON, :func:`iqalab.models.cards.input_size`): the training crop, with the evaluation input
    beside it where that differs, ``Full res.`` for models run on whole images at their stored resolution."""
    names = {"srcc": "SRCC", **ctx.plcc_names, "fg_acc": "FG-ACC"}
    pairwise = ctx.scores[(ctx.scores["metric"] == "fg_acc_pairwise") & ctx.scores["experiment"].isin(exps)]
    if pairwise["value"].notna().any():
        names["fg_acc_pairwise"] = "FG-ACC (pairwise)"
    mean, std = wide_stats(ctx.stats(exps, names, ["metric"], primary_only=True), exps,
                      list(names.values()), "metric")
    info = frame(ctx.rows(exps), {
        "Backbone": [str((ctx.meta[e].get("model_kwargs") or {}).get("backbone", "-")) for e in exps],
        "Params (M)": ctx.params_m(exps),
        "Input Size": [str(ctx.meta[e].get("input_size") or "-") for e in exps]})
    data = pd.concat([info, mean.set_axis(info.index)], axis=1)
    std = pd.concat([info.map(lambda _: np.nan), std.set_axis(info.index)], axis=1)
    notes = [*ctx.plcc_notes(exps, primary_only=True), "FG-ACC in single-image mode (order of the regression scores)",
             "Input Size: what each model was given in training (test: at evaluation, where it differs); Full "
             "res. = each whole image at its stored resolution"]
    if "fg_acc_pairwise" in names:
        notes.append("FG-ACC (pairwise): order given by the pair head P(a better) (TuningIQA Eq. 9) on the same "
                     "pairs, for models that have one")
    notes += camera_notes(ctx, exps)
    caption = ctx.caption("TuningIQA Table 2 layout: score regression (SRCC, PLCC) and fine-grained ranking "
                          "(FG-ACC) of the overall score", exps, notes, paper_table="tuningiqa_table2",
                          primary_only=True)
    return Table("tuningiqa_table2", data, caption, std, ("dataset",), {"Params (M)": None})


@register_table("tuningiqa_table3")
def tuningiqa_table3(ctx: TableContext, exps: list[str]) -> Table:
    """TuningIQA Table 3: rows Method x Metric (SRCC, PLCC, FG-ACC), one column per attribute."""
    names = {"srcc": "SRCC", **ctx.plcc_names, "fg_acc": "FG-ACC"}
    attrs = attribute_order(ctx, exps)
    stats = ctx.stats(exps, names, ["metric", "attribute"])
    mean, std = wide_stats(stats, exps, [(m, a) for m in names.values() for a in attrs], ["metric", "attribute"])
    rows, data_rows, std_rows = [], [], []
    for e in sorted(exps, key=lambda x: (ctx.dataset_of(x), exps.index(x))):
        for metric in names.values():
            rows.append((ctx.dataset_of(e), ctx.labels[e], metric))
            data_rows.append([mean.loc[e, (metric, a)] for a in attrs])
            std_rows.append([std.loc[e, (metric, a)] for a in attrs])
    index = pd.MultiIndex.from_tuples(rows, names=["dataset", "model", "metric"])
    data = pd.DataFrame(data_rows, index=index, columns=attrs)
    std_frame = pd.DataFrame(std_rows, index=index, columns=attrs)
    caption = ctx.caption("TuningIQA Table 3 layout: multi-attribute performance", exps, ctx.plcc_notes(exps))
    return Table("tuningiqa_table3", data, caption, std_frame, ("dataset", "metric"))


@register_table("tuningiqa_table4")
def tuningiqa_table4(ctx: TableContext, exps: list[str]) -> Table:
    """TuningIQA Table 4: ablation rows (the model settings that differ), SRCC, PLCC, FG-ACC averaged over the
    overall score and the attributes.

    The paper runs GCPF's ablations on FineLive-p, the images with all seven camera parameters (Sec. "Dataset":
    5,559 training and 1,148 test images), and the rest on the whole dataset. The ``Data`` column says which
    images each row trained and was tested on (``train.subset`` and the counts training recorded), and the
    caption says when FineLive-p is the whole dataset (a simulator that records every parameter) and which
    rows kept or dropped images lacking a parameter (TuningIQA's ``missing_camera``)."""
    table = averaged_table(
        ctx, exps, "tuningiqa_table4", "TuningIQA Table 4 layout: ablation, averaged over overall score and attributes",
        {"srcc": "SRCC", **ctx.plcc_names, "fg_acc": "FG-ACC"}, settings=True)
    labels = [data_label(ctx.meta[e]) for e in exps]
    position = list(table.data.columns).index("Settings") + 1
    table.data.insert(position, "Data", labels)
    if table.std is not None:
        table.std.insert(position, "Data", np.nan)
    notes = finelive_notes(ctx, exps) + camera_notes(ctx, exps)
    if notes:
        table.caption = table.caption.rstrip(".") + ". " + ". ".join(notes) + "."
    return table


def image_counts(info: dict) -> tuple[int, int, int] | None:
    """``(train, val, test)`` images of an experiment's runs as training recorded them (``n_images``; the
    first split's when splits differ in size); ``None`` for predictions written before it was recorded."""
    runs = list((info.get("n_images") or {}).values())
    if not runs:
        return None
    first = runs[0]
    return int(first.get("train", 0)), int(first.get("val", 0)), int(first.get("test", 0))


def data_label(info: dict) -> str:
    """The ``Data`` cell of a TuningIQA Table 4 row: FineLive-p (``train.subset: camera_complete``) or all images,
    and the images it trained / was tested on."""
    name = "FineLive-p" if info.get("subset") == "camera_complete" else "all"
    counts = image_counts(info)
    if counts is None:
        return name
    train, val, test = counts
    return f"{name}: {train} train{f' + {val} val' if val else ''} / {test} test"


def finelive_notes(ctx: TableContext, exps: list[str]) -> list[str]:
    """A caption sentence naming FineLive-p, and saying so when it holds the same images as the rows on all
    images (every image of the simulator has its camera parameters)."""
    subset = [e for e in exps if ctx.meta[e].get("subset") == "camera_complete"]
    if not subset:
        return []
    text = ("FineLive-p rows: only the images with all seven camera parameters (train.subset: camera_complete, "
            "the paper's 5,559 train / 1,148 test images of FGLive-10K)")
    whole = {image_counts(ctx.meta[e]) for e in exps if e not in subset} - {None}
    if whole and whole == {image_counts(ctx.meta[e]) for e in subset}:
        text += "; here every image has them, so FineLive-p is the whole dataset"
    return [text]


def camera_notes(ctx: TableContext, exps: list[str]) -> list[str]:
    """Caption sentences for rows whose GCPF met images lacking a camera parameter (TuningIQA's
    ``missing_camera``: ``drop`` left them out, ``unknown`` kept them with the learned embedding)."""
    out = []
    for e in exps:
        notes = ctx.meta[e].get("notes") or {}
        counts = notes.get("missing_camera_images")
        if counts:
            how = ("left out" if notes.get("missing_camera") == "drop"
                   else "kept with GCPF's learned 'unknown' embedding")
            listed = ", ".join(f"{n} {role}" for role, n in counts.items())
            out.append(f"{ctx.labels[e]}: images lacking a camera parameter {how} ({listed})")
    return out
