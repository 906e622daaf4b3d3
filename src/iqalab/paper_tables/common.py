"""What the paper tables share: the :class:`TableContext` they read, the reshaping helpers and the layouts that
several papers use (rows averaged over attributes, per-dataset column blocks, cross-dataset columns), plus the
long ``all_metrics`` table every run writes. The conventions these follow are listed in
:mod:`iqalab.stages.evaluate`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.analysis.evaluation import NEAR_CONSTANT, primary_attribute
from iqalab.status import short_status, unavailable_reason
from iqalab.tables import Table, dataset_caption

log = logging.getLogger(__name__)


@dataclass
class TableContext:
    """Scores, metadata, row labels and profiles of one run: what every paper-table function reads."""

    scores: pd.DataFrame
    meta: dict[str, dict[str, Any]]
    labels: dict[str, str]
    profiles: dict[str, dict[str, Any]]
    logistic: bool
    logistic_bounds: bool = True

    @property
    def plcc_key(self) -> str:
        return "plcc_logistic" if self.logistic else "plcc"

    @property
    def plcc_names(self) -> dict[str, str]:
        """The PLCC columns of a table: ``PLCC`` (after the logistic map when ``logistic``) and, beside a fitted
        PLCC, ``PLCC (raw)`` (no map, REQA Eq. 16), so a fit that turns into a step cannot hide (issue #27)."""
        return {"plcc_logistic": "PLCC", "plcc": "PLCC (raw)"} if self.logistic else {"plcc": "PLCC"}

    @property
    def plcc_note(self) -> str:
        if not self.logistic:
            return "PLCC on raw predictions"
        fit = ("bounded fit: width >= 0.1 SD of the predictions, mid-point within their 10-90 % quantiles"
               if self.logistic_bounds else "unconstrained fit")
        return f"PLCC after the 4-parameter logistic map ({fit}); PLCC (raw) without the map"

    def plcc_notes(self, exps: Sequence[str], primary_only: bool = False, cross: bool | None = False) -> list[str]:
        """:attr:`plcc_note` and, when the tables show the fitted PLCC, which rows' fit fell back to a linear map
        (:func:`logistic_fallback_notes` over the rows the table reads: ``primary_only``, ``cross``)."""
        notes = [self.plcc_note]
        if self.logistic:
            notes += logistic_fallback_notes(self.scoped(exps, primary_only, cross), self.note_labels(exps))
        return notes

    def note_labels(self, exps: Sequence[str]) -> dict[str, str]:
        """Row names for caption notes: each experiment's label, with `` on <dataset>`` where two of ``exps``
        share a label (the same model on several datasets, as in ``all_metrics``)."""
        labels = {e: self.labels.get(e, e) for e in exps}
        counts = pd.Series(list(labels.values()), dtype=object).value_counts()
        return {e: f"{label} on {self.dataset_of(e)}" if counts.get(label, 0) > 1 else label
                for e, label in labels.items()}

    def scoped(self, exps: Sequence[str], primary_only: bool = False, cross: bool | None = False) -> pd.DataFrame:
        """The ``all``-group scores of ``exps`` that a table reads: within-dataset rows (``cross`` false), the
        cross-dataset ones (true) or both (``None``); only the primary attribute with ``primary_only``."""
        s = self.scores
        sel = s[s["experiment"].isin(list(exps)) & (s["group"] == "all")]
        if cross is not None:
            sel = sel[(sel["dataset"] != sel["train_dataset"]) if cross else (sel["dataset"] == sel["train_dataset"])]
        if primary_only:
            sel = sel[sel["attribute"] == sel["experiment"].map({e: self.primary(e) for e in exps})]
        return sel

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

    def caption(self, layout: str, exps: Sequence[str], notes: Sequence[str] = (), cross: bool | None = False,
                paper_table: str | None = None, primary_only: bool = False) -> str:
        """The table's caption: layout, datasets (simulated or not), splits, ``notes``, how many test predictions
        of each row were undefined and left out and which rows predicted a nearly constant score (over the rows
        the table reads: ``cross`` false within-dataset, true cross-dataset, ``None`` both; ``primary_only``),
        which baseline variant each row is, where human
        regions came from and, for ``paper_table``, the paper's rows that do not run here."""
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
        ran = {e: self.meta[e] for e in exps if e not in missing}
        scoped, note_labels = self.scoped(list(ran), primary_only, cross), self.note_labels(list(ran))
        notes = [*notes, *undefined_notes(scoped, note_labels), *near_constant_notes(scoped, note_labels),
                 *baseline_notes(ran, self.labels), *region_notes(ran, self.labels),
                 *selection_notes(ran, self.labels), *separate_attribute_notes(ran, self.labels),
                 *precision_notes(ran, self.labels),
                 *not_run_notes(paper_table)]
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


def training_description(info: Mapping[str, Any]) -> str:
    """What a row is, in words (FHIQA Table I's ``Training`` column): a zero-shot ``pyiqa:<metric>`` (published
    weights, not trained here), a classical model used as published, a classical model fitted on the training
    split, or a network trained on its dataset from ImageNet weights, a local file (``pretrained: <file>``,
    ``backbone_weights``, DBCNN's released model ``release_weights``) or random initialisation."""
    model = str(info.get("model") or "")
    notes = info.get("notes") or {}
    kwargs = info.get("model_kwargs") or {}
    data = str(info.get("train_dataset") or info.get("dataset"))
    variant = str(notes.get("variant") or "")
    if model.startswith("pyiqa:"):
        return "zero-shot (published weights; not trained here)"
    if notes.get("trained") is False:
        return "none (published model)"
    if variant.startswith("BRISQUE, SVR retrained"):
        return f"SVR fitted on {data}"
    if variant.startswith("NIQE, pristine model refitted"):
        return f"pristine model refitted on {data}"
    weights, pretrained = kwargs.get("backbone_weights") or kwargs.get("release_weights"), kwargs.get("pretrained")
    if weights:  # a whole model to start from (pyiqa_arch's backbone_weights, DBCNN's release_weights)
        init = f"from {Path(str(weights)).name}"
    elif isinstance(pretrained, str) and pretrained:
        init = f"backbone from {Path(pretrained).name}"
    elif pretrained is True:
        init = "ImageNet backbone"
    else:
        init = "random init"
    return f"trained on {data}, {init}"


def _count_list(counts: Mapping[str, tuple[int, int]]) -> str:
    return "; ".join(f"{label}: {k} of {n}" for label, (k, n) in counts.items())


def undefined_notes(scores: pd.DataFrame, labels: Mapping[str, str]) -> list[str]:
    """A caption sentence giving, per row, how many of its test predictions were undefined (not finite, e.g.
    BRISQUE with ``undefined: nan`` on a flat image) and left out of every metric, out of the test predictions
    with a MOS; summed over the splits and attributes of ``scores`` (the ``all``-group rows a table reads, with
    the ``n`` and ``n_undefined`` of :func:`iqalab.analysis.evaluation.compute_scores`). None when there are
    none."""
    wide = scores[scores["metric"].isin(["n", "n_undefined"])].pivot_table(
        index=["experiment", "dataset", "split", "attribute"], columns="metric", values="value", aggfunc="first",
        sort=False)
    if "n_undefined" not in wide.columns or not (wide["n_undefined"].fillna(0) > 0).any():
        return []
    wide = wide.fillna(0)
    counts: dict[str, tuple[int, int]] = {}
    for exp, part in wide.groupby(level="experiment", sort=False):
        dropped = int(part["n_undefined"].sum())
        if dropped:
            total = dropped + int(part["n"].sum() if "n" in part.columns else 0)
            counts[labels.get(str(exp), str(exp))] = (dropped, total)
    return ["undefined test predictions (not finite), left out of every metric and of n, of the test predictions "
            "over the splits and attributes shown: " + _count_list(counts)]


def _flagged_splits(scores: pd.DataFrame, labels: Mapping[str, str], metric: str,
                    flagged: Callable[[pd.Series], pd.Series]) -> list[tuple[str, pd.Series]]:
    """Per row (experiment, attribute) with at least one split whose ``metric`` value is ``flagged``: the row's
    note head ``"<label> (<attr>: k of n split(s)"`` (left open for a detail) and the flagged values."""
    rows = scores[scores["metric"] == metric].dropna(subset=["value"])
    found = []
    for (exp, attr), part in rows.groupby(["experiment", "attribute"], sort=False):
        hit = part.loc[flagged(part["value"]), "value"]
        if len(hit):
            found.append((f"{labels.get(str(exp), str(exp))} ({attr}: {len(hit)} of {len(part)} "
                          f"split{'s' if len(part) > 1 else ''}", hit))
    return found


def near_constant_notes(scores: pd.DataFrame, labels: Mapping[str, str]) -> list[str]:
    """A caption sentence naming the rows (attribute, splits, least ratio) whose test predictions' SD was under
    :data:`~iqalab.analysis.evaluation.NEAR_CONSTANT` of the MOS SD (``spread`` of
    :func:`iqalab.analysis.evaluation.compute_scores`): their correlations rest on small differences between
    nearly equal scores, and their errors are those of a constant; none when no row was."""
    items = [f"{head}, SD ratio down to {hit.min():.3f})"
             for head, hit in _flagged_splits(scores, labels, "spread", lambda v: v < NEAR_CONSTANT)]
    if not items:
        return []
    return [f"nearly constant predictions (SD under {NEAR_CONSTANT:g} of the MOS SD on the test images; the "
            "correlations rest on small differences between nearly equal scores): " + "; ".join(items)]


def logistic_fallback_notes(scores: pd.DataFrame, labels: Mapping[str, str]) -> list[str]:
    """A caption sentence naming the rows (attribute, splits) whose 4-parameter logistic fit fell back to a
    straight line (``logistic_fallback`` of :func:`iqalab.analysis.metrics.summarise`: too few points, a failed
    fit, or one worse than a line), so their fitted PLCC is that of a linear map; none when no fit fell back."""
    items = [f"{head})" for head, _ in _flagged_splits(scores, labels, "logistic_fallback", lambda v: v > 0)]
    if not items:
        return []
    return ["PLCC after a linear map instead of the logistic, where the logistic fit fell back (too few points, "
            "a failed fit or one worse than a straight line): " + "; ".join(items)]


#: ``max_side`` missing from a predictions JSON (not recorded), as opposed to null (recorded: no cap)
_NOT_RECORDED = object()


def resolution_phrase(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """How whole images reached the rows ``(label, info)`` from the native store: ``at full resolution``, or
    ``capped at N px on the long side (max_side)``, from the ``max_side`` their predictions JSON records (null:
    no cap); where it is not recorded, only that images came at their stored resolution, since a dataset's
    ``max_side`` may have capped the store (README, "What it costs")."""
    def phrase(value: Any) -> str:
        if value is _NOT_RECORDED:
            return "at its stored resolution (a max_side cap, if any, is not recorded with these predictions)"
        return "at full resolution" if value is None else f"capped at {int(value)} px on the long side (max_side)"

    values = {label: info.get("max_side", _NOT_RECORDED) for label, info in rows}
    distinct = {repr(v) for v in values.values()}
    if len(distinct) <= 1:
        return phrase(next(iter(values.values()), _NOT_RECORDED))
    return "; ".join(f"{label}: {phrase(v)}" for label, v in values.items())


def baseline_notes(meta: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """Caption sentences that say which NIQE / BRISQUE (and zero-shot metric) each row is, the resolution its
    images came at (:func:`resolution_phrase`), the sign convention of its correlations (the negated raw score,
    or the [0, 1] prediction when no raw score was recorded: ``raw_recorded`` false) and how many images a
    fallback scored (from the ``notes`` training recorded)."""
    published, retrained, refitted, fallback, worst = [], [], [], [], []
    for exp, info in meta.items():
        notes = info.get("notes") or {}
        label = labels.get(exp, exp)
        variant = str(notes.get("variant") or "")
        is_published = bool(notes.get("raw_score")) and notes.get("trained") is False
        if is_published:
            published.append((label, str(notes["raw_score"]), bool(notes.get("raw_lower_is_better")), info))
        elif variant.startswith("BRISQUE, SVR retrained"):
            retrained.append((label, info))
        elif variant.startswith("NIQE, pristine model refitted"):
            refitted.append(label)
        if notes.get("n_fallback"):
            fallback.append(f"{label}: {int(notes['n_fallback'])}")
        if variant.startswith("NIQE") and notes.get("n_undefined") and not is_published:
            worst.append(f"{label}: {int(notes['n_undefined'])}")  # rows on the [0, 1] prediction: scored 0
    out = []
    if published:
        rows = "; ".join(f"{label} = {score}" for label, score, _, _ in published)
        where = resolution_phrase([(label, info) for label, _, _, info in published])
        text = (f"published scores without training, each image {where} ({rows}; NIQE: the LIVE "
                "pristine model, BRISQUE: the LIVE-trained SVR)")
        no_raw = [label for label, _, _, info in published if info.get("raw_recorded") is False]
        lower = [label for label, _, low, info in published if low and label not in no_raw]
        if lower:
            text += (f"; correlations of the negated score for {', '.join(lower)} (lower is better in the "
                     "original), no raw RMSE/MAE")
        if no_raw:
            text += (f"; correlations of the [0, 1] prediction for {', '.join(no_raw)} (no raw score recorded "
                     "with these predictions), no raw RMSE/MAE")
        out.append(text)
    if retrained:
        labels_r = ", ".join(label for label, _ in retrained)
        out.append(f"{labels_r}: BRISQUE features of each image {resolution_phrase(retrained)}, SVR retrained on "
                   "each training split (REQA/SFIQA protocol)")
    if refitted:
        out.append(f"{', '.join(refitted)}: NIQE with its pristine model refitted on the best-rated training "
                   "images and a logistic fitted on training MOS (not the published NIQE)")
    if fallback:
        out.append("images given a score by a fallback where the original has none (BRISQUE: a flat region's AGGD "
                   "side given zero variance; NIQE: the patch covariance taken as zero where no patch has all 36 "
                   "features), summed over the images every split scored: " + "; ".join(fallback))
    if worst:
        out.append("images whose NIQE is undefined (a feature undefined in every patch, e.g. flat), predicted as the "
                   "worst (0) and kept in the metrics, summed over the images every split scored: " + "; ".join(worst))
    return out


def not_run_notes(paper_table: str | None) -> list[str]:
    """The paper's comparison rows of ``paper_table`` with no counterpart here, with their kind (zero-shot only /
    cannot run); the reasons are in docs/baselines.md (:mod:`iqalab.comparison_rows`)."""
    if paper_table is None:
        return []
    from iqalab.comparison_rows import rows_not_run

    rows = rows_not_run(paper_table)
    if not rows:
        return []
    listed = "; ".join(f"{label} ({reason.split(':', 1)[0]})" for label, reason in rows)
    return [f"paper rows not run here (reasons in docs/baselines.md): {listed}"]


def region_notes(meta: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """Caption sentences on the human regions of the models that read them (issue #21): which detector gave them
    and how many test images a model saw without its region (``allow_missing_regions``: the whole-image / centre
    crop fallback), from the keys training wrote (:func:`iqalab.data.regions.summarise_regions`)."""
    sources, fallback = [], []
    for exp, info in meta.items():
        if not info.get("regions"):
            continue
        label = labels.get(exp, exp)
        detectors = sorted({d for names in (info.get("regions_detector") or {}).values() for d in names})
        sources.append(f"{label}: {', '.join(detectors) or 'none'}")
        if info.get("regions_missing"):
            flag = " (allow_missing_regions)" if info.get("allow_missing_regions") else ""
            fallback.append(f"{label}: {int(info['regions_missing'])}{flag}")
    out = []
    if sources:
        out.append("human regions from " + "; ".join(sources))
    if fallback:
        out.append("test images without a detected region, scored by the model's fallback: " + "; ".join(fallback))
    return out


def selection_notes(meta: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """A caption sentence naming the rows whose kept weights are those of the lowest training loss
    (``model_selection`` of their predictions JSON, :data:`iqalab.train.engine.MODEL_SELECTION`: ``train.monitor:
    train_loss``, the user's choice, e.g. for splits without val images, where the engine refuses a ``val_*``
    monitor), since none of the papers selects a model that way; none otherwise."""
    rows = [labels.get(exp, exp) for exp, info in meta.items()
            if "lowest training loss" in str(info.get("model_selection") or "")]
    if not rows:
        return []
    return ["weights of the epoch with the lowest training loss (train.monitor: train_loss), not selected on "
            "validation images: " + ", ".join(rows)]


def separate_attribute_notes(meta: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """A caption sentence naming the rows trained as one model per attribute (``separate_attributes`` of their
    predictions JSON, ``train.separate_attributes``: PIQ23's protocol, FHIQA seed 001 Sec. IV-D), each model with
    its own best epoch, and saying that their parameter count is that of all the models; none otherwise (one
    model with a head per attribute)."""
    rows = [labels.get(exp, exp) for exp, info in meta.items() if info.get("separate_attributes")]
    if not rows:
        return []
    return ["one model per attribute (train.separate_attributes; PIQ23's protocol), each with its own selected "
            "epoch, Params (M) counting all of them: " + ", ".join(rows)]


def precision_notes(meta: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """A caption sentence naming the rows trained under bf16 autocast (``train_precision`` of their predictions
    JSON, :func:`iqalab.train.engine.training_precision`: ``train.amp`` on CUDA, ``train.cpu_amp`` on a CPU with
    native bf16, AMX or AVX512_BF16), so a table that mixes them with fp32 rows says so; none when every row
    trained in fp32."""
    bf16 = []
    for exp, info in meta.items():
        # one value, or per split (engine._per_split): "<value> (<splits>); <value> (<splits>)"
        for where, splits in _BF16.findall(str(info.get("train_precision", ""))):
            bf16.append(f"{labels.get(exp, exp)} ({where}{'; splits ' + splits if splits else ''})")
    return ["trained under bf16 autocast (predictions in fp32): " + "; ".join(bf16)] if bf16 else []


#: a bf16 entry of ``train_precision``: the device (``CUDA`` / ``CPU with AMX`` / ``CPU with AVX512_BF16``) and,
#: where the splits of an experiment trained differently, its splits
_BF16 = re.compile(r"bf16 autocast[^(;]*\(([^)]*)\); fp32 predictions(?: \(([^)]*)\))?")


def wide_stats(stats: pd.DataFrame, exps: Sequence[str], columns: Sequence[Any], level: str | list[str]
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


def model_defaults(name: Any) -> dict[str, Any]:
    """The keyword defaults of the registered model ``name`` (its ``__init__``): the value a setting left out of
    ``params.yaml`` ran with; ``{}`` for a name the registry does not know."""
    from iqalab.models.registry import default_kwargs, get_model_class

    try:
        cls = get_model_class(str(name))
    except (KeyError, ValueError, ImportError):
        return {}
    return default_kwargs(cls)


def differing_settings(meta: Mapping[str, Mapping[str, Any]], exps: Sequence[str]) -> list[str]:
    """``key=value`` of the model settings that differ among ``exps`` (the ablation rows' configuration); a key set
    for some rows shows, for the others, the model's default (never ``None`` for a setting that ran)."""
    explicit = {e: {"model": meta[e].get("model"), **(meta[e].get("model_kwargs") or {})} for e in exps}
    keys = sorted({k for kw in explicit.values() for k in kw})
    kwargs = {e: {**{k: v for k, v in model_defaults(kw["model"]).items() if k in keys}, **kw}
              for e, kw in explicit.items()}
    differing = [k for k in keys if len({json.dumps(kw.get(k), sort_keys=True, default=str)
                                         for kw in kwargs.values()}) > 1]
    return [", ".join(f"{k}={kwargs[e].get(k)}" for k in differing) or "-" for e in exps]


def attribute_order(ctx: TableContext, exps: Sequence[str]) -> list[str]:
    order: list[str] = []
    for e in exps:
        for attr in ctx.meta[e].get("attributes") or []:
            if attr not in order:
                order.append(attr)
    for attr in ctx.scores.loc[ctx.scores.experiment.isin(exps), "attribute"].unique():
        if attr not in order:
            order.append(str(attr))
    return order


def frame(index: pd.Index, columns: dict[Any, Sequence[Any]]) -> pd.DataFrame:
    out = pd.DataFrame(index=index)
    for col, values in columns.items():
        out[col] = list(values)
    return out


def exp_of(ctx: TableContext, exps: Sequence[str], row: tuple[str, ...]) -> str:
    return next(e for e in exps if ctx.dataset_of(e) == row[0] and ctx.labels[e] == row[1])


def all_metrics_table(ctx: TableContext) -> Table | None:
    """Long table: dataset x experiment x split x attribute x every metric (role test, whole test set)."""
    s = ctx.scores[ctx.scores["group"] == "all"]
    if s.empty:
        return None
    wide = s.pivot_table(index=["dataset", "experiment", "split", "attribute"], columns="metric", values="value",
                         aggfunc="first", sort=False, dropna=False)
    order = ["n", "n_undefined", "srcc", "plcc", "plcc_logistic", "krcc", "rmse", "mae", "rmse_logistic",
             "mae_logistic", "fg_acc", "fg_acc_pairwise", "spread", "logistic_fallback"]
    if "n_undefined" in wide.columns and not (wide["n_undefined"].fillna(0) > 0).any():
        wide = wide.drop(columns="n_undefined")  # shown only when some prediction was undefined
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
                           "spread = SD of the predictions / SD of the MOS (blank for a published score or "
                           "another dataset)",
                           *logistic_fallback_notes(ctx.scoped(exps, cross=None), ctx.note_labels(exps)),
                           "best per dataset x split x attribute in bold"], cross=None)
    return Table("all_metrics", wide, caption, group_levels=("dataset", "split", "attribute"), row_status=status)


def averaged_table(ctx: TableContext, exps: list[str], name: str, layout: str, metric_names: dict[str, str],
                   settings: bool = False, params: bool = False, backbone: bool = False,
                   gmacs: bool = False) -> Table:
    """Rows = experiments, metrics averaged over attributes (TuningIQA Table 4, SFIQA Tables V-VI)."""
    columns = list(metric_names.values())
    mean, std = wide_stats(ctx.stats(exps, metric_names, ["metric"], average_attributes=True), exps, columns, "metric")
    index = ctx.rows(exps)
    lead: dict[Any, Sequence[Any]] = {}
    if backbone:
        lead["Backbone"] = [str((ctx.meta[e].get("model_kwargs") or {}).get("backbone", "-")) for e in exps]
    if settings:
        lead["Settings"] = differing_settings(ctx.meta, exps)
    data, std = mean.set_axis(index), std.set_axis(index)
    if lead:
        info = frame(index, lead)
        data = pd.concat([info, data], axis=1)
        std = pd.concat([info.map(lambda _: np.nan), std], axis=1)
    if params:
        data["Params (M)"] = ctx.params_m(exps)
    if gmacs and ctx.has_profile(exps, "gmacs"):
        data["GMACs"] = ctx.profile_value(exps, "gmacs")
    return Table(name, data, ctx.caption(layout, exps, ctx.plcc_notes(exps)), std, ("dataset",))


def per_dataset_columns(ctx: TableContext, exps: list[str], stats: pd.DataFrame, metric_labels: list[str],
                        name: str, layout: str, with_median: bool, params: bool = False) -> Table:
    """One row per label, one column block per dataset (REQA Table II, SFIQA Table III): each metric's mean
    (and median when ``with_median``) over splits, optionally the label's ``Params (M)``."""
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
    caption = ctx.caption(layout, exps, [f"attribute: {', '.join(attrs)}", *ctx.plcc_notes(exps, primary_only=True)],
                          paper_table=name, primary_only=True)
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


def cross_table(ctx: TableContext, exps: list[str], name: str, layout: str, metric_names: dict[str, str]
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
                                         *ctx.plcc_notes(exps, primary_only=True, cross=True)], cross=True,
                          primary_only=True)
    return Table(name, data, caption, std)


def mark_unavailable(table: Table, ctx: TableContext, exps: Sequence[str]) -> None:
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
