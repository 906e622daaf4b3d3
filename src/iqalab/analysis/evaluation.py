"""Scores of every experiment's test predictions: the numbers behind the papers' tables and ``summary.json``.

:func:`load_predictions` / :func:`load_inputs` read ``results/predictions/<experiment>.{parquet,json}`` of the
experiments in ``params.experiments`` (stale files of removed experiments are ignored), the optional fine pairs
``build/datasets/<dataset>/pairs.parquet`` (FG-ACC), the optional ``tier_<attribute>`` columns of
``build/datasets/<dataset>/images.parquet`` (the 0-100 values REQA's tiers are read from, e.g. KonIQ-10k's
``MOS_zscore``; their scale named by ``dataset.json`` ``tier_scale``) and the optional
``results/profile/<experiment>.json``;
:func:`compute_scores` turns them into one long frame of every metric (:func:`iqalab.analysis.metrics.summarise`,
FG-ACC, per-scene medians for the PIQ23 protocol, per-tier metrics for REQA Eq. 16) and :func:`summary_metrics`
into the small flat ``{experiment: {metric: mean}}`` that ``dvc metrics`` reads. The paper layouts built from
these scores are in :mod:`iqalab.paper_tables`; the stage that writes them is :mod:`iqalab.stages.evaluate`.

Conventions (choices where the papers are silent or disagree) are listed in :mod:`iqalab.stages.evaluate`.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.analysis import metrics
from iqalab.config import Params
from iqalab.data.schema import PREDICTION_COLUMNS
from iqalab.status import run_status, unavailable_reason

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse", "fg_acc", "fg_acc_pairwise")
#: a row whose predictions' SD is under this share of the MOS SD is named in the captions as nearly constant
NEAR_CONSTANT = 0.1
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
    #: per dataset, the 0-100 tier values of its images (index image_id, one column per attribute)
    tiers: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: per experiment with a pair head, its P(a better) on the test pairs (``<experiment>.pairs.parquet``)
    pair_probs: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def experiments(self) -> list[str]:
        """Experiments with predictions, in ``params.yaml`` order."""
        return list(self.meta)


def load_predictions(params: Params, root: Path) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Predictions and metadata of every experiment in ``params.experiments`` that has both files.

    Files of experiments no longer in ``params.yaml`` are ignored (logged); experiments without predictions are
    skipped with a warning (they have not been trained yet). ``tables``, ``protocol`` and ``label`` are taken
    from the current ``params.yaml`` (so retagging an experiment needs no retraining); the metadata gains
    ``train_dataset`` (the JSON's, else its ``dataset``), ``max_side`` (the JSON's, else the dataset's
    ``datasets.<name>.max_side``: the cap of the native store its images were read from, which the captions name)
    and ``status`` (``"ok"``, or why the model could not run: such an experiment is in the metadata but has no
    prediction rows).
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
        spec = params.datasets.get(str(info["dataset"]))
        if "max_side" not in info and spec is not None:  # the store's cap, from the params that built it
            info["max_side"] = spec.max_side
        info["status"] = run_status(info)
        if unavailable_reason(info) is not None:
            log.warning("experiment %s did not run (%s): listed as unavailable", name, info["status"])
            meta[name] = info
            continue
        frame = pd.read_parquet(parquet)
        if "raw" not in frame.columns:  # predictions written before raw scores were recorded
            frame = frame.assign(raw=np.nan)
        # whether any raw score was recorded: what a published model's rows correlate (scored_values)
        info["raw_recorded"] = bool(frame["raw"].notna().any())
        missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{parquet}: missing columns {missing}")
        frame = frame.assign(experiment=name)
        frames.append(frame[PREDICTION_COLUMNS])
        meta[name] = info
    if folder.is_dir():
        stale = sorted({p.stem.removesuffix(".pairs") for p in folder.glob("*.parquet")} - set(params.experiments))
        if stale:
            log.info("ignoring predictions of experiments not in params.yaml: %s", stale)
    columns = list(PREDICTION_COLUMNS)
    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    for col in ("split", "role", "attribute", "dataset", "experiment", "image_id"):
        predictions[col] = predictions[col].astype(str)
    return predictions, meta


def load_tier_values(folder: Path) -> tuple[pd.DataFrame | None, dict[str, str]]:
    """The ``tier_<attribute>`` columns of a canonical dataset's ``images.parquet`` (index ``image_id``, columns
    the attributes) and ``dataset.json``'s ``tier_scale`` (attribute -> scale name); ``(None, {})`` when the
    dataset has none (its tiers come from the MOS mapped to 0-100)."""
    import pyarrow.parquet as pq

    path = Path(folder) / "images.parquet"
    if not path.is_file():
        return None, {}
    columns = [c for c in pq.read_schema(path).names if c.startswith("tier_")]
    if not columns:
        return None, {}
    table = pd.read_parquet(path, columns=["image_id", *columns])
    values = table.set_index(table["image_id"].astype(str))[columns].astype(float)
    values.columns = [c.removeprefix("tier_") for c in columns]
    meta_path = Path(folder) / "dataset.json"
    scale = (json.loads(meta_path.read_text()).get("tier_scale") or {}) if meta_path.is_file() else {}
    return values, {str(k): str(v) for k, v in scale.items()}


def load_inputs(params: Params, root: Path) -> EvalInputs:
    """:func:`load_predictions` plus the fine pairs and tier values of each dataset and the profiles of each
    experiment; an experiment's metadata gains ``tier_scale`` (attribute -> scale name) when its test dataset
    has tier values."""
    predictions, meta = load_predictions(params, root)
    pairs: dict[str, pd.DataFrame] = {}
    tiers: dict[str, pd.DataFrame] = {}
    for dataset in sorted(set(predictions["dataset"])):
        path = Path(root) / "build" / "datasets" / dataset / "pairs.parquet"
        if path.is_file():
            pairs[dataset] = pd.read_parquet(path)
        values, scale = load_tier_values(Path(root) / "build" / "datasets" / dataset)
        if values is not None:
            tiers[dataset] = values
            for info in meta.values():
                if str(info.get("dataset")) == dataset:
                    info["tier_scale"] = {a: scale.get(a, f"tier_{a} (0-100)") for a in values.columns}
    profiles, pair_probs = {}, {}
    for name in meta:
        path = Path(root) / "results" / "profile" / f"{name}.json"
        if path.is_file():
            profiles[name] = json.loads(path.read_text())
        path = Path(root) / "results" / "predictions" / f"{name}.pairs.parquet"
        if path.is_file():
            frame = pd.read_parquet(path)
            if len(frame):
                pair_probs[name] = frame.astype({"image_a": str, "image_b": str, "attribute": str, "split": str})
    return EvalInputs(predictions, meta, pairs, profiles, tiers, pair_probs)


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
def prediction_spread(pred: np.ndarray, mos: np.ndarray) -> float:
    """SD of the predictions over the SD of the MOS on the same test images (pairs with both values finite; NaN
    for fewer than two or constant MOS). Near 1 for predictions on the MOS's own spread; near 0 for a nearly
    constant predictor, whose SRCC and PLCC can still look fair because both ignore the scale (REQA with its
    coarse loss on 0-100, before 2026-12-04: 0.009-0.017 on ugc_sim at SRCC 0.60-0.66)."""
    x, y = metrics.paired_arrays(pred, mos)
    if x.size < 2:
        return math.nan
    sd_mos = float(np.std(y))
    return float(np.std(x) / sd_mos) if sd_mos > 0 else math.nan


def published_untrained(info: Mapping[str, Any]) -> bool:
    """True for a model used as published without training whose raw score was recorded (the official NIQE and
    BRISQUE, zero-shot metrics): its table rows correlate that score (see :func:`scored_values`)."""
    notes = info.get("notes") or {}
    return bool(notes.get("raw_score")) and notes.get("trained") is False


def raw_recorded(part: pd.DataFrame, info: Mapping[str, Any]) -> bool:
    """Whether the experiment's predictions carry its published raw score: ``raw_recorded`` of its metadata
    (:func:`load_predictions`, over all its rows), else whether ``part`` has any raw value."""
    recorded = info.get("raw_recorded")
    return bool(part["raw"].notna().any()) if recorded is None else bool(recorded)


def scored_values(part: pd.DataFrame, info: Mapping[str, Any]) -> np.ndarray:
    """The values whose agreement with MOS the tables report: the predictions, or for a published untrained
    model its raw score, negated when lower is better (NIQE, BRISQUE), so that correlations with MOS are
    positive for a good metric as the papers print them.

    An image whose raw score is undefined (NaN: BRISQUE with ``undefined: nan`` on a flat image) stays NaN, so
    the metrics leave it out and :func:`compute_scores` counts it (``n_undefined``); the other images are still
    scored on the raw score. Only predictions that carry no raw score at all (written before raw scores were
    recorded: ``raw_recorded`` false) are scored on the [0, 1] predictions, and the captions say so
    (:func:`iqalab.paper_tables.common.baseline_notes`).
    """
    if published_untrained(info) and raw_recorded(part, info):
        raw = part["raw"].to_numpy(float)
        return -raw if (info.get("notes") or {}).get("raw_lower_is_better") else raw
    return part["pred"].to_numpy(float)


def undefined_count(values: np.ndarray, mos: np.ndarray) -> int:
    """Test images with a MOS whose scored value is not finite (an undefined prediction): the pairs the metrics
    drop (:func:`iqalab.analysis.metrics.paired_arrays`) that the captions report."""
    return int((np.isfinite(mos) & ~np.isfinite(values)).sum())


def _fine_pairs(pairs: pd.DataFrame, fine_only: bool) -> dict[str, pd.DataFrame]:
    """Decided pairs per attribute (``fine`` only when asked), with the columns :func:`metrics.fg_acc` reads."""
    if fine_only and "fine" in pairs.columns:
        pairs = pairs[pairs["fine"].astype(bool)]
    pairs = pairs[pairs["p"].astype(float) != 0.5]
    if "attribute" not in pairs.columns:
        return {"*": pairs}
    return {str(attr): part for attr, part in pairs.groupby("attribute", sort=False)}


def compute_scores(inputs: EvalInputs, fine_pairs_only: bool = True, tier_tags: Collection[str] = (),
                   scene_tags: Collection[str] = (), logistic_bounds: bool = True) -> pd.DataFrame:
    """Every metric of every test set, long: ``experiment, dataset, train_dataset, split, attribute, group,
    metric, value``.

    ``group`` is ``all`` (the whole test set: :func:`metrics.summarise`, FG-ACC in single-image mode and, for
    a model whose pair head's probabilities were written (TuningIQA), ``fg_acc_pairwise`` on the same pairs:
    :func:`metrics.fg_acc_pairwise`), ``scene_median`` (PIQ23
    protocol, :func:`metrics.per_group_median` of SRCC, raw PLCC, KRCC, MAE over scenes; for experiments with
    ``protocol: per_scene`` or a tag in ``scene_tags``) or ``tier:<Tier>`` (REQA tiers,
    :func:`metrics.per_tier_metrics`, SRCC and raw PLCC and ``n``; for ``protocol: per_tier`` or a tag in
    ``tier_tags``; the tier of an image from its dataset's 0-100 tier value where ``inputs.tiers`` has one for
    every test image, else from the MOS mapped to 0-100). The tag sets come from the paper tables that read those groups
    (:func:`iqalab.paper_tables.tags_needing`). ``logistic_bounds`` picks the bounded logistic fit of
    ``plcc_logistic`` (default) or the unconstrained one (:func:`metrics.logistic_options`); ``plcc`` is raw.

    Group ``all`` also records what the captions must report (:mod:`iqalab.paper_tables.common`):
    ``n_undefined``, the test images with a MOS whose scored value is not finite (left out of every metric, so
    ``n`` is smaller by that many; :func:`undefined_count`), ``spread`` (:func:`prediction_spread`; NaN for a
    published untrained score and for a cross-dataset row, whose predictions are on the training set's MOS
    scale), ``logistic_fallback`` (from :func:`metrics.summarise`),
    and, for per-tier rows only where it happened, ``tier_from_mos`` (the number of test images without a tier
    value, so the whole split's tiers came from the mapped MOS instead) or ``tiers_failed`` (1: no per-tier
    metrics, e.g. a value outside 0-100).
    """
    fit_options = metrics.logistic_options(logistic_bounds)
    test = inputs.predictions[inputs.predictions["role"] == "test"]
    rows: list[tuple[Any, ...]] = []
    pairs = {ds: _fine_pairs(frame, fine_pairs_only) for ds, frame in inputs.pairs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        for (exp, dataset, split, attr), part in test.groupby(
                ["experiment", "dataset", "split", "attribute"], sort=False, observed=True):
            info = inputs.meta[exp]
            key = (exp, dataset, str(info["train_dataset"]), split, attr)
            pred, mos = scored_values(part, info), part["mos"].to_numpy(float)
            untrained = published_untrained(info)
            for name, value in metrics.summarise(pred, mos, **fit_options).items():
                if untrained and name in ("rmse", "mae"):
                    value = math.nan  # a published score is not in MOS units: no raw error
                rows.append((*key, "all", name, value))
            rows.append((*key, "all", "n_undefined", float(undefined_count(pred, mos))))
            # a published score is not on the MOS scale, nor a cross-dataset prediction on the test set's: no spread
            comparable = not untrained and dataset == info["train_dataset"]
            rows.append((*key, "all", "spread", prediction_spread(pred, mos) if comparable else math.nan))
            ds_pairs = pairs.get(dataset)
            if ds_pairs is not None:
                attr_pairs = ds_pairs.get(attr, ds_pairs.get("*"))
                value = math.nan
                if attr_pairs is not None and len(attr_pairs):
                    scores = pd.Series(pred, index=part["image_id"].to_numpy())
                    value = metrics.fg_acc(attr_pairs, scores, fine_only=False)
                rows.append((*key, "all", "fg_acc", value))
                probs = inputs.pair_probs.get(exp)
                if probs is not None and attr_pairs is not None and len(attr_pairs):
                    mine = probs[(probs["split"] == split) & (probs["attribute"] == attr)].drop_duplicates(
                        ["image_a", "image_b"])
                    prob = attr_pairs[["image_a", "image_b"]].astype(str).merge(
                        mine[["image_a", "image_b", "prob_a"]], on=["image_a", "image_b"], how="left")["prob_a"]
                    rows.append((*key, "all", "fg_acc_pairwise",
                                 metrics.fg_acc_pairwise(attr_pairs, prob.to_numpy(float), fine_only=False)))
            tags = set(info.get("tables") or ())
            if info.get("protocol") == "per_scene" or tags & set(scene_tags):
                medians = metrics.per_group_median(part.assign(pred=pred), "scene", SCENE_METRICS)
                if untrained:
                    medians["mae"] = math.nan
                rows.extend((*key, "scene_median", name, value) for name, value in medians.items())
            if info.get("protocol") == "per_tier" or tags & set(tier_tags):
                basis = None
                table = inputs.tiers.get(dataset)
                if table is not None and attr in table.columns:
                    basis = part["image_id"].map(table[attr]).to_numpy(float)
                    if not np.isfinite(basis).all():
                        n_missing = int((~np.isfinite(basis)).sum())
                        log.warning("%s/%s/%s: %d test images without a tier value; tiers from the MOS", exp,
                                    split, attr, n_missing)
                        rows.append((*key, "all", "tier_from_mos", float(n_missing)))  # the caption says so
                        basis = None
                try:
                    tiers = metrics.per_tier_metrics(pred, mos, tuple(info["mos_range"]), tier_values=basis)
                except ValueError as err:
                    log.warning("%s/%s/%s: no per-tier metrics (%s)", exp, split, attr, err)
                    rows.append((*key, "all", "tiers_failed", 1.0))
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
