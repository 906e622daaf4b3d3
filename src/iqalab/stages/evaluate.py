"""Stage ``04_evaluate``: every experiment's test predictions turned into the papers' tables, metrics and figures.

Reads only ``results/predictions/<experiment>.{parquet,json}`` of the experiments listed in ``params.experiments``
(stale files of removed experiments are ignored), the optional fine pairs
``build/datasets/<dataset>/pairs.parquet`` (FG-ACC) and the optional ``results/profile/<experiment>.json``
(GMACs / latency columns of SFIQA Table II). Writes:

- ``results/tables/<name>.{md,csv,tex}`` (:mod:`iqalab.tables`): ``all_metrics`` (long: experiment x split x
  attribute x every metric of :func:`iqalab.analysis.metrics.summarise`, plus FG-ACC) and the paper layouts, each written
  only when some experiment carries its tag (``experiments.<e>.tables`` in ``params.yaml``):

  ==================  ============================================================================================
  tag                 layout
  ==================  ============================================================================================
  tuningiqa_table2    TuningIQA Table 2: Backbone, Params (M), SRCC, PLCC, FG-ACC averaged over attributes
  tuningiqa_table3    TuningIQA Table 3: per attribute, rows Method x {SRCC, PLCC, FG-ACC}
  tuningiqa_table4    TuningIQA Table 4: ablation rows (the model settings that differ), SRCC, PLCC, FG-ACC
  fhiqa_table1        FHIQA Table I: per attribute the median over scenes of SRCC, PLCC, KRCC, MAE (PIQ23)
  reqa_table1         REQA Table I: SROCC and PLCC per quality tier (Excellent ... Bad) and overall
  reqa_table2         REQA Table II: per dataset SROCC / PLCC, median and mean ± std across the random splits
  reqa_table4         REQA Table IV: cross-dataset SROCC, one column per train -> test pair
  reqa_ablation       REQA Tables V-VI (also tags reqa_table5 / reqa_table6): per-tier layout of ablation rows
  sfiqa_table2        SFIQA Table II: per dimension SRCC / PLCC, Params (M), GMACs and latency when profiled
  sfiqa_table3        SFIQA Table III: SRCC / PLCC per dataset (the overall dimension)
  sfiqa_table4        SFIQA Table IV: cross-dataset SRCC / PLCC per train -> test pair
  sfiqa_table5        SFIQA Table V: backbones, SRCC / PLCC averaged over dimensions, Params (M), GMACs
  sfiqa_table6        SFIQA Table VI: module ablation (differing settings), averaged SRCC / PLCC, Params, GMACs
  ==================  ============================================================================================

- ``results/metrics/summary.json``: ``{experiment: {srcc, plcc, plcc_logistic, krcc, rmse[, fg_acc]}}``, means
  over attributes and test splits (small and flat for ``dvc metrics show / diff``);
- ``results/figures/evaluation/``: scatter of prediction against MOS with the fitted logistic per model, per-tier
  bars, FG-ACC against |dMOS| (:mod:`iqalab.eval_figures`).

Conventions (choices where the papers are silent or disagree):

- all metrics are on ``role == "test"``; each split is scored on its own, then tables show the mean ± sample std
  across splits (REQA Table II also shows the median, as REQA reports medians of 10 runs);
- "PLCC" in the tables is after the 4-parameter logistic map when ``evaluate.logistic`` is true (VQEG practice),
  raw otherwise; per-tier (REQA Eq. 16) and per-scene PLCC are always raw, since a logistic fitted inside one
  20-point tier or one scene of a handful of images is ill-conditioned. Each caption says which;
- averaged-over-attributes columns average the per-attribute metric within a split, then across splits;
- single-score tables (REQA, SFIQA Tables III-IV) use the ``overall`` attribute when the dataset has one, else
  the first attribute ("the primary attribute");
- cross-dataset rows are those whose ``dataset`` column (the test set) differs from the experiment's training
  dataset (``train_dataset`` in the experiment JSON, else its ``dataset``); every other table uses only
  within-dataset rows;
- rows are labelled with the experiment's ``label``; two experiments with the same label on one dataset get the
  experiment key appended. The same label on different datasets shares a row in per-dataset column layouts
  (REQA Table II, SFIQA Table III), as in the papers;
- ``Params (M)`` (TuningIQA Table 2, FHIQA Table I, REQA Tables I/II, SFIQA Tables II/V/VI) is the experiment's
  ``n_params`` (every tensor of the trained model; the numbers a classical model fitted; a zero-shot model's
  network); it is not ranked except in the SFIQA tables, whose subject is model size;
- an experiment whose model could not run (a zero-shot ``pyiqa:<metric>`` without pyiqa or its weights: its
  predictions JSON has a ``status`` other than ``ok``, :mod:`iqalab.status`) still gets its row in every table it
  is tagged for: its metric cells read the status (``pyiqa not installed`` / ``weights unavailable``), the CSV
  has a ``status`` column, the caption gives the full reason, and ``summary.json`` leaves it out. A table whose
  tagged experiments all lack predictions is not written.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.analysis import metrics
from iqalab.config import Params
from iqalab.io import write_json
from iqalab.status import run_status, short_status, unavailable_reason
from iqalab.tables import Table, dataset_caption

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("image_id", "attribute", "pred", "mos", "split", "role", "scene", "model", "dataset",
                      "experiment")
#: Tags whose tables need per-tier metrics and per-scene medians (computed for these or the protocol's asking).
TIER_TAGS = frozenset({"reqa_table1", "reqa_ablation", "reqa_table5", "reqa_table6"})
SCENE_TAGS = frozenset({"fhiqa_table1"})
ABLATION_TAGS = ("reqa_ablation", "reqa_table5", "reqa_table6")
SUMMARY_KEYS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse", "fg_acc")
SCENE_METRICS: dict[str, metrics.MetricFn] = {"srcc": metrics.srcc, "plcc": metrics.plcc, "krcc": metrics.krcc,
                                               "mae": metrics.mae}


# ------------------------------------------------------------------------------------------------ inputs
@dataclass
class EvalInputs:
    """Everything the stage reads: predictions (all roles), experiment metadata, fine pairs, profiles."""

    predictions: pd.DataFrame
    meta: dict[str, dict[str, Any]]
    pairs: dict[str, pd.DataFrame] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def experiments(self) -> list[str]:
        """Experiments with predictions, in ``params.yaml`` order."""
        return list(self.meta)


def load_predictions(params: Params, root: Path) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Predictions and metadata of every experiment in ``params.experiments`` that has both files.

    Files of experiments no longer in ``params.yaml`` are ignored (logged); experiments without predictions are
    skipped with a warning (they have not been trained yet). ``tables``, ``protocol`` and ``label`` are taken
    from the current ``params.yaml`` (so retagging an experiment needs no retraining); the metadata gains
    ``train_dataset`` (the JSON's, else its ``dataset``) and ``status`` (``"ok"``, or why the model could not
    run: such an experiment is in the metadata but has no prediction rows).
    """
    folder = Path(root) / "results" / "predictions"
    frames, meta = [], {}
    for name, exp in params.experiments.items():
        parquet, meta_path = folder / f"{name}.parquet", folder / f"{name}.json"
        if not (parquet.is_file() and meta_path.is_file()):
            log.warning("experiment %s: no predictions under %s yet; left out", name, folder)
            continue
        info = json.loads(meta_path.read_text())
        # presentation keys follow the current params.yaml (retagging needs no retraining)
        info.update(tables=list(exp.tables), protocol=exp.protocol, label=exp.label or info.get("label") or name)
        info.setdefault("dataset", exp.dataset)
        info.setdefault("train_dataset", info["dataset"])
        info["status"] = run_status(info)
        if unavailable_reason(info) is not None:
            log.warning("experiment %s did not run (%s): listed as unavailable", name, info["status"])
            meta[name] = info
            continue
        frame = pd.read_parquet(parquet)
        missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{parquet}: missing columns {missing}")
        frame = frame.assign(experiment=name)
        frames.append(frame[list(PREDICTION_COLUMNS)])
        meta[name] = info
    if folder.is_dir():
        stale = sorted({p.stem for p in folder.glob("*.parquet")} - set(params.experiments))
        if stale:
            log.info("ignoring predictions of experiments not in params.yaml: %s", stale)
    columns = list(PREDICTION_COLUMNS)
    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    for col in ("split", "role", "attribute", "dataset", "experiment", "image_id"):
        predictions[col] = predictions[col].astype(str)
    return predictions, meta


def load_inputs(params: Params, root: Path) -> EvalInputs:
    """:func:`load_predictions` plus the fine pairs of each dataset and the profiles of each experiment."""
    predictions, meta = load_predictions(params, root)
    pairs: dict[str, pd.DataFrame] = {}
    for dataset in sorted(set(predictions["dataset"])):
        path = Path(root) / "build" / "datasets" / dataset / "pairs.parquet"
        if path.is_file():
            pairs[dataset] = pd.read_parquet(path)
    profiles = {}
    for name in meta:
        path = Path(root) / "results" / "profile" / f"{name}.json"
        if path.is_file():
            profiles[name] = json.loads(path.read_text())
    return EvalInputs(predictions, meta, pairs, profiles)


def primary_attribute(attributes: Sequence[str]) -> str:
    """``overall`` when present, else the first attribute: the score single-MOS tables (REQA, SFIQA) report."""
    return "overall" if "overall" in attributes else str(attributes[0])


def display_labels(meta: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Row label per experiment: its ``label``; duplicates within one dataset get ``(experiment)`` appended."""
    labels = {name: str(info.get("label") or name) for name, info in meta.items()}
    seen: dict[tuple[str, str], list[str]] = {}
    for name, info in meta.items():
        seen.setdefault((str(info.get("dataset")), labels[name]), []).append(name)
    for names in seen.values():
        if len(names) > 1:
            for name in names:
                labels[name] = f"{labels[name]} ({name})"
    return labels


# ----------------------------------------------------------------------------------------------- scores
def _fine_pairs(pairs: pd.DataFrame, fine_only: bool) -> dict[str, pd.DataFrame]:
    """Decided pairs per attribute (``fine`` only when asked), with the columns :func:`metrics.fg_acc` reads."""
    if fine_only and "fine" in pairs.columns:
        pairs = pairs[pairs["fine"].astype(bool)]
    pairs = pairs[pairs["p"].astype(float) != 0.5]
    if "attribute" not in pairs.columns:
        return {"*": pairs}
    return {str(attr): part for attr, part in pairs.groupby("attribute", sort=False)}


def compute_scores(inputs: EvalInputs, fine_pairs_only: bool = True) -> pd.DataFrame:
    """Every metric of every test set, long: ``experiment, dataset, train_dataset, split, attribute, group,
    metric, value``.

    ``group`` is ``all`` (the whole test set: :func:`metrics.summarise` and FG-ACC), ``scene_median`` (PIQ23
    protocol, :func:`metrics.per_group_median` of SRCC, raw PLCC, KRCC, MAE over scenes; for experiments with
    ``protocol: per_scene`` or the FHIQA tag) or ``tier:<Tier>`` (REQA tiers, :func:`metrics.per_tier_metrics`,
    SRCC and raw PLCC and ``n``; for ``protocol: per_tier`` or a REQA tier-table tag).
    """
    test = inputs.predictions[inputs.predictions["role"] == "test"]
    rows: list[tuple[Any, ...]] = []
    pairs = {ds: _fine_pairs(frame, fine_pairs_only) for ds, frame in inputs.pairs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        for (exp, dataset, split, attr), part in test.groupby(
                ["experiment", "dataset", "split", "attribute"], sort=False, observed=True):
            info = inputs.meta[exp]
            key = (exp, dataset, str(info["train_dataset"]), split, attr)
            pred, mos = part["pred"].to_numpy(float), part["mos"].to_numpy(float)
            for name, value in metrics.summarise(pred, mos).items():
                rows.append((*key, "all", name, value))
            ds_pairs = pairs.get(dataset)
            if ds_pairs is not None:
                attr_pairs = ds_pairs.get(attr, ds_pairs.get("*"))
                value = math.nan
                if attr_pairs is not None and len(attr_pairs):
                    scores = pd.Series(pred, index=part["image_id"].to_numpy())
                    value = metrics.fg_acc(attr_pairs, scores, fine_only=False)
                rows.append((*key, "all", "fg_acc", value))
            tags = set(info.get("tables") or ())
            if info.get("protocol") == "per_scene" or tags & SCENE_TAGS:
                medians = metrics.per_group_median(part, "scene", SCENE_METRICS)
                rows.extend((*key, "scene_median", name, value) for name, value in medians.items())
            if info.get("protocol") == "per_tier" or tags & TIER_TAGS:
                try:
                    tiers = metrics.per_tier_metrics(pred, mos, tuple(info["mos_range"]))
                except ValueError as err:
                    log.warning("%s/%s/%s: no per-tier metrics (%s)", exp, split, attr, err)
                    continue
                for tier, tier_row in tiers.iterrows():
                    rows.extend((*key, f"tier:{tier}", name, float(tier_row[name]))
                                for name in ("srcc", "plcc", "n"))
    columns = ["experiment", "dataset", "train_dataset", "split", "attribute", "group", "metric", "value"]
    scores = pd.DataFrame(rows, columns=columns)
    scores["value"] = scores["value"].astype(float)
    return scores


def summary_metrics(scores: pd.DataFrame, experiments: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{experiment: {metric: mean}}`` over attributes and test splits, within-dataset rows, NaN left out."""
    within = scores[(scores["group"] == "all") & (scores["dataset"] == scores["train_dataset"])
                    & scores["metric"].isin(SUMMARY_KEYS)]
    means = within.groupby(["experiment", "metric"])["value"].mean()
    out: dict[str, dict[str, float]] = {}
    for exp in experiments:
        if exp not in means.index.get_level_values(0):
            continue
        values = means.loc[exp]
        out[exp] = {k: round(float(values[k]), 6) for k in SUMMARY_KEYS
                    if k in values.index and np.isfinite(values[k])}
    return out


# ------------------------------------------------------------------------------------------ table helpers
@dataclass
class _Context:
    scores: pd.DataFrame
    meta: dict[str, dict[str, Any]]
    labels: dict[str, str]
    profiles: dict[str, dict[str, Any]]
    logistic: bool

    @property
    def plcc_key(self) -> str:
        return "plcc_logistic" if self.logistic else "plcc"

    @property
    def plcc_note(self) -> str:
        return ("PLCC after the 4-parameter logistic map" if self.logistic else "PLCC on raw predictions")

    @property
    def unavailable(self) -> dict[str, str]:
        """Experiment -> status, for the experiments whose model could not run (no predictions)."""
        return {e: str(info["status"]) for e, info in self.meta.items() if unavailable_reason(info) is not None}

    def tagged(self, *tags: str) -> list[str]:
        return [e for e, info in self.meta.items() if set(info.get("tables") or ()) & set(tags)]

    def dataset_of(self, exp: str) -> str:
        return str(self.meta[exp]["train_dataset"])

    def primary(self, exp: str) -> str:
        return primary_attribute(self.meta[exp].get("attributes") or
                                 sorted(set(self.scores.loc[self.scores.experiment == exp, "attribute"])))

    def caption(self, layout: str, exps: Sequence[str], notes: Sequence[str] = (), cross: bool = False) -> str:
        datasets: dict[str, bool] = {}
        for exp in exps:
            names = {self.dataset_of(exp)}
            if cross:
                names |= set(self.scores.loc[self.scores.experiment == exp, "dataset"])
            for name in sorted(names):
                datasets[name] = datasets.get(name, False) or bool(self.meta[exp].get("simulated", False))
        missing = self.unavailable
        n_splits = sorted({len(set(self.scores.loc[self.scores.experiment == e, "split"])) for e in exps
                           if e not in missing})
        split_note = ("one test split per experiment" if n_splits == [1]
                      else f"mean ± std over {'/'.join(map(str, n_splits))} test splits")
        gone = [f"{self.labels[e]}: {missing[e]}" for e in exps if e in missing]
        if gone:
            notes = [*notes, "no predictions (zero-shot model could not run), row kept: " + "; ".join(gone)]
        return ". ".join([layout, dataset_caption(datasets), split_note, *notes]) + "."

    def stats(self, exps: Sequence[str], metric_names: Mapping[str, str], by: Sequence[str], group: str = "all",
              primary_only: bool = False, average_attributes: bool = False, cross: bool = False) -> pd.DataFrame:
        """Mean / std / median / count across splits of each metric, indexed by ``experiment`` and ``by``."""
        s = self.scores
        sel = s[s["experiment"].isin(exps) & s["metric"].isin(list(metric_names))]
        sel = sel[sel["group"].str.startswith("tier:")] if group == "tier" else sel[sel["group"] == group]
        sel = sel[(sel["dataset"] != sel["train_dataset"]) if cross else (sel["dataset"] == sel["train_dataset"])]
        if primary_only:
            sel = sel[sel["attribute"] == sel["experiment"].map({e: self.primary(e) for e in exps})]
        sel = sel.assign(metric=sel["metric"].map(metric_names))
        if average_attributes:
            keys = ["experiment", "dataset", "train_dataset", "split", "group", "metric"]
            sel = sel.groupby(keys, sort=False)["value"].mean().reset_index()
        return sel.groupby(["experiment", *by], sort=False)["value"].agg(["mean", "std", "median", "count"])

    def rows(self, exps: Sequence[str]) -> pd.MultiIndex:
        return pd.MultiIndex.from_tuples([(self.dataset_of(e), self.labels[e]) for e in exps],
                                         names=["dataset", "model"])

    def params_m(self, exps: Sequence[str]) -> list[float]:
        values = []
        for e in exps:
            n = self.meta[e].get("n_params")
            values.append(float(n) / 1e6 if n else math.nan)
        return values

    def profile_value(self, exps: Sequence[str], key: str) -> list[float]:
        values = []
        for e in exps:
            value = self.profiles.get(e, {}).get(key)
            values.append(math.nan if value is None else float(value))  # None: not applicable (classical)
        return values

    def has_profile(self, exps: Sequence[str], key: str) -> bool:
        return any(np.isfinite(self.profile_value(exps, key)))


def _wide(stats: pd.DataFrame, exps: Sequence[str], columns: Sequence[Any], level: str | list[str]
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and std frames, rows = experiments (in order), columns in the given order (missing -> NaN)."""
    if stats.empty:
        empty = pd.DataFrame(np.nan, index=list(exps), columns=pd.Index(list(columns), tupleize_cols=False))
        return empty, empty.copy()
    mean = stats["mean"].unstack(level)
    std = stats["std"].unstack(level)
    if isinstance(mean.columns, pd.MultiIndex):
        idx = pd.MultiIndex.from_tuples(list(columns))
    else:
        idx = pd.Index(list(columns))
    return mean.reindex(index=list(exps), columns=idx), std.reindex(index=list(exps), columns=idx)


def _differing_settings(meta: Mapping[str, Mapping[str, Any]], exps: Sequence[str]) -> list[str]:
    """``key=value`` of the model settings that differ among ``exps`` (the ablation rows' configuration)."""
    kwargs = {e: {"model": meta[e].get("model"), **(meta[e].get("model_kwargs") or {})} for e in exps}
    keys = sorted({k for kw in kwargs.values() for k in kw})
    differing = [k for k in keys if len({json.dumps(kw.get(k), sort_keys=True, default=str)
                                         for kw in kwargs.values()}) > 1]
    return [", ".join(f"{k}={kwargs[e].get(k)}" for k in differing) or "-" for e in exps]


def _attribute_order(ctx: _Context, exps: Sequence[str]) -> list[str]:
    order: list[str] = []
    for e in exps:
        for attr in ctx.meta[e].get("attributes") or []:
            if attr not in order:
                order.append(attr)
    for attr in ctx.scores.loc[ctx.scores.experiment.isin(exps), "attribute"].unique():
        if attr not in order:
            order.append(str(attr))
    return order


def _frame(index: pd.Index, columns: dict[Any, Sequence[Any]]) -> pd.DataFrame:
    out = pd.DataFrame(index=index)
    for col, values in columns.items():
        out[col] = list(values)
    return out


# ------------------------------------------------------------------------------------------ paper tables
def all_metrics_table(ctx: _Context) -> Table | None:
    """Long table: dataset x experiment x split x attribute x every metric (role test, whole test set)."""
    s = ctx.scores[ctx.scores["group"] == "all"]
    if s.empty:
        return None
    wide = s.pivot_table(index=["dataset", "experiment", "split", "attribute"], columns="metric", values="value",
                         aggfunc="first", sort=False, dropna=False)
    order = ["n", "srcc", "plcc", "plcc_logistic", "krcc", "rmse", "mae", "rmse_logistic", "mae_logistic",
             "fg_acc", "logistic_fallback"]
    wide = wide[[c for c in order if c in wide.columns]]
    wide.columns.name = None
    missing = ctx.unavailable
    status = {(ctx.dataset_of(e), e, "-", "-"): short_status(text) for e, text in missing.items()}
    if status:  # one row per experiment that could not run, its cells reading the status
        extra = pd.DataFrame(np.nan, index=pd.MultiIndex.from_tuples(list(status), names=wide.index.names),
                             columns=wide.columns)
        wide = pd.concat([wide, extra])
    exps = list(dict.fromkeys([*s["experiment"], *missing]))
    caption = ctx.caption("Every metric of every test split and attribute (role test)", exps,
                          ["PLCC/RMSE/MAE raw and after the 4-parameter logistic (_logistic)",
                           "best per dataset x split x attribute in bold"])
    return Table("all_metrics", wide, caption, group_levels=("dataset", "split", "attribute"), row_status=status)


def tuningiqa_table2(ctx: _Context, exps: list[str]) -> Table:
    """TuningIQA Table 2: Backbone, #Param, score regression (SRCC, PLCC) and FG ranking (FG-ACC)."""
    names = {"srcc": "SRCC", ctx.plcc_key: "PLCC", "fg_acc": "FG-ACC"}
    mean, std = _wide(ctx.stats(exps, names, ["metric"], average_attributes=True), exps,
                      ["SRCC", "PLCC", "FG-ACC"], "metric")
    info = _frame(ctx.rows(exps), {
        "Backbone": [str((ctx.meta[e].get("model_kwargs") or {}).get("backbone", "-")) for e in exps],
        "Params (M)": ctx.params_m(exps)})
    data = pd.concat([info, mean.set_axis(info.index)], axis=1)
    std = pd.concat([info.map(lambda _: np.nan), std.set_axis(info.index)], axis=1)
    caption = ctx.caption("TuningIQA Table 2 layout: score regression (SRCC, PLCC) and fine-grained ranking "
                          "(FG-ACC), averaged over attributes", exps, [ctx.plcc_note])
    return Table("tuningiqa_table2", data, caption, std, ("dataset",), {"Params (M)": None})


def tuningiqa_table3(ctx: _Context, exps: list[str]) -> Table:
    """TuningIQA Table 3: rows Method x Metric (SRCC, PLCC, FG-ACC), one column per attribute."""
    names = {"srcc": "SRCC", ctx.plcc_key: "PLCC", "fg_acc": "FG-ACC"}
    attrs = _attribute_order(ctx, exps)
    stats = ctx.stats(exps, names, ["metric", "attribute"])
    mean, std = _wide(stats, exps, [(m, a) for m in names.values() for a in attrs], ["metric", "attribute"])
    rows, data_rows, std_rows = [], [], []
    for e in sorted(exps, key=lambda x: (ctx.dataset_of(x), exps.index(x))):
        for metric in names.values():
            rows.append((ctx.dataset_of(e), ctx.labels[e], metric))
            data_rows.append([mean.loc[e, (metric, a)] for a in attrs])
            std_rows.append([std.loc[e, (metric, a)] for a in attrs])
    index = pd.MultiIndex.from_tuples(rows, names=["dataset", "model", "metric"])
    data = pd.DataFrame(data_rows, index=index, columns=attrs)
    std_frame = pd.DataFrame(std_rows, index=index, columns=attrs)
    caption = ctx.caption("TuningIQA Table 3 layout: multi-attribute performance", exps, [ctx.plcc_note])
    return Table("tuningiqa_table3", data, caption, std_frame, ("dataset", "metric"))


def _exp_of(ctx: _Context, exps: Sequence[str], row: tuple[str, ...]) -> str:
    return next(e for e in exps if ctx.dataset_of(e) == row[0] and ctx.labels[e] == row[1])


def _averaged_table(ctx: _Context, exps: list[str], name: str, layout: str, metric_names: dict[str, str],
                    settings: bool = False, params: bool = False, backbone: bool = False,
                    gmacs: bool = False) -> Table:
    """Rows = experiments, metrics averaged over attributes (TuningIQA Table 4, SFIQA Tables V-VI)."""
    columns = list(metric_names.values())
    mean, std = _wide(ctx.stats(exps, metric_names, ["metric"], average_attributes=True), exps, columns, "metric")
    index = ctx.rows(exps)
    lead: dict[Any, Sequence[Any]] = {}
    if backbone:
        lead["Backbone"] = [str((ctx.meta[e].get("model_kwargs") or {}).get("backbone", "-")) for e in exps]
    if settings:
        lead["Settings"] = _differing_settings(ctx.meta, exps)
    data, std = mean.set_axis(index), std.set_axis(index)
    if lead:
        info = _frame(index, lead)
        data = pd.concat([info, data], axis=1)
        std = pd.concat([info.map(lambda _: np.nan), std], axis=1)
    if params:
        data["Params (M)"] = ctx.params_m(exps)
    if gmacs and ctx.has_profile(exps, "gmacs"):
        data["GMACs"] = ctx.profile_value(exps, "gmacs")
    return Table(name, data, ctx.caption(layout, exps, [ctx.plcc_note]), std, ("dataset",))


def fhiqa_table1(ctx: _Context, exps: list[str]) -> Table:
    """FHIQA Table I: per attribute, the median across scenes of SRCC, PLCC, KRCC, MAE (PIQ23 protocol)."""
    names = {"srcc": "SRCC", "plcc": "PLCC", "krcc": "KRCC", "mae": "MAE"}
    attrs = _attribute_order(ctx, exps)
    stats = ctx.stats(exps, names, ["attribute", "metric"], group="scene_median")
    mean, std = _wide(stats, exps, [(a, m) for a in attrs for m in names.values()], ["attribute", "metric"])
    caption = ctx.caption("FHIQA Table I layout: median across scenes of each metric (PIQ23 protocol)", exps,
                          ["PLCC raw within scenes; MAE in MOS units; scenes with < 3 test images left out"])
    data = mean.set_axis(ctx.rows(exps))
    data[("Params (M)", "")] = ctx.params_m(exps)
    return Table("fhiqa_table1", data, caption, std.set_axis(ctx.rows(exps)), ("dataset",),
                 {("Params (M)", ""): None})


def _tier_table(ctx: _Context, exps: list[str], name: str, layout: str) -> Table:
    """REQA Tables I, V, VI: blocks SROCC / PLCC, rows = models, columns = tiers + Overall."""
    tiers = list(metrics.TIERS)
    names = {"srcc": "SROCC", "plcc": "PLCC"}
    tier_stats = ctx.stats(exps, names, ["metric", "group"], group="tier", primary_only=True)
    overall_stats = ctx.stats(exps, names, ["metric", "group"], group="all", primary_only=True)
    stats = pd.concat([tier_stats, overall_stats])
    groups = [f"tier:{t}" for t in tiers] + ["all"]
    mean, std = _wide(stats, exps, [(m, g) for m in names.values() for g in groups], ["metric", "group"])
    settings = _differing_settings(ctx.meta, exps) if name == "reqa_ablation" else None
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
        data.insert(0, "Settings", [lookup[_exp_of(ctx, exps, (r[0], r[3]))] for r in rows])
        std_frame.insert(0, "Settings", np.nan)
    params_of = dict(zip(exps, ctx.params_m(exps)))
    data["Params (M)"] = [params_of[_exp_of(ctx, exps, (r[0], r[3]))] for r in rows]
    caption = ctx.caption(layout, exps, [
        "tiers of the ground-truth MOS mapped to 0-100 (Excellent >= 80, Good 60-80, Fair 40-60, Poor 20-40, "
        "Bad < 20); PLCC raw (REQA Eq. 16); tiers with < 3 test images shown as -"])
    return Table(name, data, caption, std_frame, ("dataset", "attribute", "metric"), {"Params (M)": None})


def reqa_table2(ctx: _Context, exps: list[str]) -> Table:
    """REQA Table II: one column block per dataset, SROCC / PLCC as the median and mean ± std over splits."""
    names = {"srcc": "SROCC", ctx.plcc_key: "PLCC"}
    stats = ctx.stats(exps, names, ["metric"], primary_only=True)
    return _per_dataset_columns(ctx, exps, stats, list(names.values()), "reqa_table2",
                                "REQA Table II layout: single-database performance, median and mean over "
                                "random splits", with_median=True, params=True)


def sfiqa_table3(ctx: _Context, exps: list[str]) -> Table:
    """SFIQA Table III: SRCC / PLCC per dataset (primary attribute), one row per method."""
    names = {"srcc": "SRCC", ctx.plcc_key: "PLCC"}
    stats = ctx.stats(exps, names, ["metric"], primary_only=True)
    return _per_dataset_columns(ctx, exps, stats, list(names.values()), "sfiqa_table3",
                                "SFIQA Table III layout: performance per dataset", with_median=False, params=True)


def _per_dataset_columns(ctx: _Context, exps: list[str], stats: pd.DataFrame, metric_labels: list[str],
                         name: str, layout: str, with_median: bool, params: bool = False) -> Table:
    labels = list(dict.fromkeys(ctx.labels[e] for e in exps))
    datasets = list(dict.fromkeys(ctx.dataset_of(e) for e in exps))
    stat_names = ["median", "mean"] if with_median else ["mean"]
    columns = [(d, m, s) if with_median else (d, m) for d in datasets for m in metric_labels for s in stat_names]
    data = pd.DataFrame(np.nan, index=pd.Index(labels, name="model"), columns=pd.MultiIndex.from_tuples(columns))
    std = data.copy()
    for e in exps:
        for m in metric_labels:
            if (e, m) not in stats.index:
                continue
            row = stats.loc[(e, m)]
            for s in stat_names:
                col = (ctx.dataset_of(e), m, s) if with_median else (ctx.dataset_of(e), m)
                data.loc[ctx.labels[e], col] = row[s]
                if s == "mean":
                    std.loc[ctx.labels[e], col] = row["std"]
    attrs = sorted({ctx.primary(e) for e in exps})
    caption = ctx.caption(layout, exps, [f"attribute: {', '.join(attrs)}", ctx.plcc_note])
    directions: dict[Any, str | None] = {}
    if params:  # one row per label: the first of its experiments with a known count
        column = ("Params (M)", "", "") if with_median else ("Params (M)", "")
        known = {}
        for e, value in zip(exps, ctx.params_m(exps)):
            if np.isfinite(value):
                known.setdefault(ctx.labels[e], value)
        data[column] = [known.get(label, np.nan) for label in labels]
        directions[column] = None
    return Table(name, data, caption, std, directions=directions)


def _cross_table(ctx: _Context, exps: list[str], name: str, layout: str, metric_names: dict[str, str]
                 ) -> Table | None:
    """REQA Table IV / SFIQA Table IV: rows = models, columns = (train -> test, metric), primary attribute."""
    stats = ctx.stats(exps, metric_names, ["train_dataset", "dataset", "metric"], primary_only=True, cross=True)
    if stats.empty:
        log.info("%s: no cross-dataset predictions among %s; table not written", name, exps)
        return None
    labels = list(dict.fromkeys(ctx.labels[e] for e in exps))
    pairs = list(dict.fromkeys((tr, te) for _, tr, te, _m in stats.index))
    columns = pd.MultiIndex.from_tuples([(f"{tr} → {te}", m) for tr, te in pairs for m in metric_names.values()])
    data = pd.DataFrame(np.nan, index=pd.Index(labels, name="model"), columns=columns)
    std = data.copy()
    for (e, tr, te, m), row in stats.iterrows():
        data.loc[ctx.labels[e], (f"{tr} → {te}", m)] = row["mean"]
        std.loc[ctx.labels[e], (f"{tr} → {te}", m)] = row["std"]
    caption = ctx.caption(layout, exps, ["trained on the first dataset, tested on the whole second one",
                                         ctx.plcc_note], cross=True)
    return Table(name, data, caption, std)


def sfiqa_table2(ctx: _Context, exps: list[str]) -> Table:
    """SFIQA Table II: per dimension SRCC / PLCC, then Params (M), GMACs and latency (when profiled)."""
    names = {"srcc": "SRCC", ctx.plcc_key: "PLCC"}
    attrs = _attribute_order(ctx, exps)
    stats = ctx.stats(exps, names, ["attribute", "metric"])
    mean, std = _wide(stats, exps, [(a, m) for a in attrs for m in names.values()], ["attribute", "metric"])
    index = ctx.rows(exps)
    data, std = mean.set_axis(index), std.set_axis(index)
    data[("Params (M)", "")] = ctx.params_m(exps)
    for key, label in (("gmacs", "GMACs"), ("latency_ms", "Latency (ms)")):
        if ctx.has_profile(exps, key):
            data[(label, "")] = ctx.profile_value(exps, key)
    devices = sorted({str(ctx.profiles[e]["device"]) for e in exps if ctx.profiles.get(e, {}).get("device")})
    notes = [ctx.plcc_note] + ([f"latency measured on {', '.join(devices)}"] if devices else [])
    caption = ctx.caption("SFIQA Table II layout: per-dimension performance and cost", exps, notes)
    return Table("sfiqa_table2", data, caption, std, ("dataset",))


#: name -> (tags that select its rows, builder)
PAPER_TABLES: dict[str, tuple[tuple[str, ...], Callable[[_Context, list[str]], Table | None]]] = {
    "tuningiqa_table2": (("tuningiqa_table2",), tuningiqa_table2),
    "tuningiqa_table3": (("tuningiqa_table3",), tuningiqa_table3),
    "tuningiqa_table4": (("tuningiqa_table4",), lambda c, e: _averaged_table(
        c, e, "tuningiqa_table4", "TuningIQA Table 4 layout: ablation, averaged over overall score and attributes",
        {"srcc": "SRCC", c.plcc_key: "PLCC", "fg_acc": "FG-ACC"}, settings=True)),
    "fhiqa_table1": (("fhiqa_table1",), fhiqa_table1),
    "reqa_table1": (("reqa_table1",), lambda c, e: _tier_table(
        c, e, "reqa_table1", "REQA Table I layout: fine-grained (per quality tier) prediction performance")),
    "reqa_table2": (("reqa_table2",), reqa_table2),
    "reqa_table4": (("reqa_table4",), lambda c, e: _cross_table(
        c, e, "reqa_table4", "REQA Table IV layout: SROCC of cross-database evaluations", {"srcc": "SROCC"})),
    "reqa_ablation": (ABLATION_TAGS, lambda c, e: _tier_table(
        c, e, "reqa_ablation", "REQA Tables V-VI layout: ablations, per-tier performance")),
    "sfiqa_table2": (("sfiqa_table2",), sfiqa_table2),
    "sfiqa_table3": (("sfiqa_table3",), sfiqa_table3),
    "sfiqa_table4": (("sfiqa_table4",), lambda c, e: _cross_table(
        c, e, "sfiqa_table4", "SFIQA Table IV layout: cross-dataset performance",
        {"srcc": "SRCC", c.plcc_key: "PLCC"})),
    "sfiqa_table5": (("sfiqa_table5",), lambda c, e: _averaged_table(
        c, e, "sfiqa_table5", "SFIQA Table V layout: backbones, SRCC/PLCC averaged over the dimensions",
        {"srcc": "SRCC", c.plcc_key: "PLCC"}, params=True, backbone=True, gmacs=True)),
    "sfiqa_table6": (("sfiqa_table6",), lambda c, e: _averaged_table(
        c, e, "sfiqa_table6", "SFIQA Table VI layout: module ablation, SRCC/PLCC averaged over the dimensions",
        {"srcc": "SRCC", c.plcc_key: "PLCC"}, settings=True, params=True, gmacs=True)),
}


def build_tables(scores: pd.DataFrame, inputs: EvalInputs, logistic: bool = True) -> dict[str, Table]:
    """``all_metrics`` and every paper table whose tag some experiment with predictions carries."""
    ctx = _Context(scores, inputs.meta, display_labels(inputs.meta), inputs.profiles, logistic)
    tables: dict[str, Table] = {}
    table = all_metrics_table(ctx)
    if table is not None:
        tables[table.name] = table
    missing = ctx.unavailable
    for name, (tags, builder) in PAPER_TABLES.items():
        exps = [e for e in ctx.tagged(*tags) if e in set(scores["experiment"]) or e in missing]
        if all(e in missing for e in exps):  # nothing measured (or nothing tagged): no table
            continue
        table = builder(ctx, exps)
        if table is not None:
            _mark_unavailable(table, ctx, exps)
            tables[name] = table
    return tables


def _mark_unavailable(table: Table, ctx: _Context, exps: Sequence[str]) -> None:
    """Give the rows of experiments that could not run their short status (shown in their empty cells): rows
    are matched on the ``experiment`` index level, else on ``model`` (the label) and ``dataset`` when present."""
    missing = {e: status for e, status in ctx.unavailable.items() if e in exps}
    if not missing:
        return
    names = list(table.data.index.names)
    for key in table.data.index:
        parts = dict(zip(names, key if isinstance(key, tuple) else (key,)))
        for e, status in missing.items():
            if "experiment" in parts:
                hit = parts["experiment"] == e
            elif "model" in parts:
                hit = parts["model"] == ctx.labels[e] and parts.get("dataset", ctx.dataset_of(e)) == ctx.dataset_of(e)
            else:
                hit = False
            if hit:
                table.row_status[key] = short_status(status)


# ------------------------------------------------------------------------------------------------- stage
def run(params: Params, root: Path, figures: bool = True) -> dict[str, pd.DataFrame]:
    """Stage ``04_evaluate``: write the tables, ``summary.json`` and the figures; return ``{table: frame}``.

    The frames are the CSV contents (:meth:`iqalab.tables.Table.to_frame`). Tables of a previous run whose tag
    no experiment carries any more are removed from ``results/tables`` so the folder matches ``params.yaml``.
    """
    started = time.perf_counter()
    root = Path(root)
    inputs = load_inputs(params, root)
    scores = compute_scores(inputs, params.evaluate.fine_pairs_only)
    tables = build_tables(scores, inputs, params.evaluate.logistic)
    out = root / "results" / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for table in tables.values():
        table.write(out)
    known = set(PAPER_TABLES) | {"all_metrics"}
    for path in out.glob("*"):
        if path.suffix in {".md", ".csv", ".tex"} and path.stem in known and path.stem not in tables:
            path.unlink()
            log.info("removed stale table %s", path.name)
    write_json(root / "results" / "metrics" / "summary.json", summary_metrics(scores, inputs.experiments))
    if figures:
        from iqalab import eval_figures

        eval_figures.evaluation_figures(inputs, scores, root / "results" / "figures" / "evaluation")
    log.info("evaluated %d experiments into %d tables in %.1f s", len(inputs.meta), len(tables),
             time.perf_counter() - started)
    return {name: table.to_frame() for name, table in tables.items()}
