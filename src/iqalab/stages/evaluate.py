"""Stage ``evaluate``: every experiment's test predictions turned into the papers' tables, metrics and figures.

Reads only ``results/predictions/<experiment>.{parquet,json}`` of the experiments listed in ``params.experiments``
(stale files of removed experiments are ignored), the optional fine pairs
``build/datasets/<dataset>/pairs.parquet`` (FG-ACC) and the optional ``results/profile/<experiment>.json``
(GMACs / latency columns of SFIQA Table II). Writes:

- ``results/tables/<name>.{md,csv,tex}`` (:mod:`iqalab.tables`): ``all_metrics`` (long: experiment x split x
  attribute x every metric of :func:`iqalab.analysis.metrics.summarise`, plus FG-ACC) and the paper layouts
  (:mod:`iqalab.paper_tables`, one registered function per table; its docstring lists them), each written only
  when some experiment carries its tag (``experiments.<e>.tables`` in ``params.yaml``);
- ``results/metrics/summary.json``: ``{experiment: {srcc, plcc, plcc_logistic, krcc, rmse[, fg_acc]}}``, means
  over attributes and test splits (small and flat for ``dvc metrics show / diff``), and ``_provenance``: the
  run's :mod:`iqalab.provenance` record (code commit, params hash, lock hash, versions, device, seed);
- ``results/tables/yardstick_<dataset>.{md,csv,tex}`` (issue 23; ``evaluate.yardstick``): per dataset with
  within-dataset test predictions and a canonical folder ``build/datasets/<dataset>``, its models' test SRCC
  next to the learnability references (:mod:`iqalab.analysis.yardstick`): the panel ceiling (simulated data with
  ground truth only), the panel's split-half reliability (when votes exist) and the pixel-feature probe on the
  dataset's square cache (features kept per image in ``build/features/yardstick-*``); the paper tables that
  score whole test sets gain the ceiling and probe rows of their simulated datasets under the model rows
  (labelled "not a model", never ranked; :func:`iqalab.analysis.yardstick.append_reference_rows`);
  ``results/tables/yardstick_summary.{md,csv,tex}``: one row per dataset with the done-when verdicts
  (:func:`iqalab.analysis.yardstick.summary_table`; the README shows it as it is);
- ``results/figures/evaluation/``: scatter of prediction against MOS with the fitted logistic per model, per-tier
  bars, FG-ACC against |dMOS| (:mod:`iqalab.eval_figures`).

Conventions (choices where the papers are silent or disagree):

- all metrics are on ``role == "test"``; each split is scored on its own, then tables show the mean ± sample std
  across splits (REQA Table II also shows the median, as REQA reports medians of 10 runs);
- "PLCC" in the tables is after the 4-parameter logistic map when ``evaluate.logistic`` is true (VQEG practice),
  with "PLCC (raw)" beside it, raw otherwise; the fit is bounded (:func:`iqalab.analysis.metrics.logistic4_fit`)
  unless ``evaluate.logistic_bounds`` is false; per-tier (REQA Eq. 16) and per-scene PLCC are always raw, since
  a logistic fitted inside one 20-point tier or one scene of a handful of images is ill-conditioned. Each caption
  says which;
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

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from iqalab import paper_tables
from iqalab.analysis import yardstick
from iqalab.analysis.evaluation import (
    EvalInputs,
    compute_scores,
    display_labels,
    load_inputs,
    primary_attribute,
    summary_metrics,
)
from iqalab.config import Params
from iqalab.data.cache import ImageCache, NativeStore
from iqalab.data.schema import DataError, read_dataset
from iqalab.eval_figures import evaluation_figures
from iqalab.io import write_json
from iqalab.provenance import collect
from iqalab.tables import Table

log = logging.getLogger(__name__)

#: what the bare SRCC / PLCC columns of a paper table hold, for its yardstick rows (other tables' bare columns
#: get no reference value): the primary attribute, or the mean over attributes (the ablation layouts)
BARE_METRIC_COLUMNS = {"tuningiqa_table2": "primary", "tuningiqa_table4": "mean", "sfiqa_table6": "mean"}


def run(params: Params, root: Path, figures: bool = True) -> dict[str, pd.DataFrame]:
    """Stage ``evaluate``: write the tables, ``summary.json`` and the figures; return ``{table: frame}``.

    The frames are the CSV contents (:meth:`iqalab.tables.Table.to_frame`). Tables of a previous run whose tag
    no experiment carries any more are removed from ``results/tables`` so the folder matches ``params.yaml``.
    """
    started = time.perf_counter()
    root = Path(root)
    record = collect(params)  # also the tables' footer (iqalab.provenance.current)
    inputs = load_inputs(params, root)
    bounds = params.evaluate.logistic_bounds
    scores = compute_scores(inputs, params.evaluate.fine_pairs_only, tier_tags=paper_tables.tags_needing("tier"),
                            scene_tags=paper_tables.tags_needing("scene_median"), logistic_bounds=bounds)
    tables = paper_tables.build_tables(scores, inputs, params.evaluate.logistic, bounds)
    if params.evaluate.yardstick:
        yardsticks, references = yardstick_tables(params, root, inputs)
        whole_test_set = {e.name for e in paper_tables.registered_tables() if not e.needs}
        for name in whole_test_set & set(tables):
            yardstick.append_reference_rows(tables[name], references, BARE_METRIC_COLUMNS.get(name))
        tables.update({t.name: t for t in yardsticks})
    out = root / "results" / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for table in tables.values():
        table.write(out)
    known = {entry.name for entry in paper_tables.registered_tables()} | {"all_metrics"}
    for path in out.glob("*"):
        ours = path.stem in known or path.stem.startswith("yardstick_")
        if path.suffix in {".md", ".csv", ".tex"} and ours and path.stem not in tables:
            path.unlink()
            log.info("removed stale table %s", path.name)
    write_json(root / "results" / "metrics" / "summary.json",
               {**summary_metrics(scores, inputs.experiments), "_provenance": record})
    if figures:
        evaluation_figures(inputs, scores, root / "results" / "figures" / "evaluation", logistic_bounds=bounds)
    log.info("evaluated %d experiments into %d tables in %.1f s", len(inputs.meta), len(tables),
             time.perf_counter() - started)
    return {name: table.to_frame() for name, table in tables.items()}


def yardstick_tables(params: Params, root: Path, inputs: EvalInputs
                     ) -> tuple[list[Table], dict[str, tuple[pd.DataFrame, list[str]]]]:
    """The ``yardstick_<dataset>`` tables (:func:`iqalab.analysis.yardstick.yardstick_table`) of every dataset
    with within-dataset test predictions whose canonical folder exists, and the references of the simulated
    ones (``{dataset: (frame, attributes)}``) that the paper tables show beside their model rows; the probe reads
    the dataset's square cache at its ``cache_size`` (else the native store; without either it is left out,
    with a note)."""
    test = inputs.predictions[inputs.predictions["role"] == "test"]
    train_of = {name: str(info.get("train_dataset")) for name, info in inputs.meta.items()}
    test = test[test["dataset"] == test["experiment"].map(train_of)]
    labels = display_labels(inputs.meta)
    n_boot, seed = params.evaluate.bootstrap, params.seed
    out = []
    simulated_refs: dict[str, tuple[pd.DataFrame, list[str]]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    nature: dict[str, bool] = {}
    for dataset, part in test.groupby("dataset", sort=True):
        started = time.perf_counter()
        folder = Path(root) / "build" / "datasets" / str(dataset)
        if not (folder / "dataset.json").is_file():
            log.info("yardstick: no canonical folder %s; %s left out", folder, dataset)
            continue
        try:
            ds = read_dataset(folder, verify_checksums=False)
        except DataError as err:
            log.warning("yardstick: %s left out (%s)", dataset, err)
            continue
        simulated = bool(ds.meta.get("simulated"))
        spec = params.datasets.get(str(dataset))
        notes: list[str] = []
        pixels: ImageCache | NativeStore | None = None
        where = ""
        try:
            if spec is None:
                raise DataError(f"{dataset} is not in params.datasets (no cache size)")
            pixels, where = ImageCache(ds, spec.cache_size), f"the {spec.cache_size} px square cache"
        except DataError as err:
            try:
                pixels, where = NativeStore(ds), "the native-resolution store"
            except DataError:
                notes.append(f"no pixel-feature probe: {err}")
        features = None if pixels is None else yardstick.dataset_features(
            ds.images, pixels, Path(root) / "build" / "features")
        splits = sorted(part["split"].astype(str).unique())
        # per-scene scales (PIQ23's JOD): every experiment on the dataset uses the per_scene protocol
        protocols = {inputs.meta[str(exp)].get("protocol") for exp in part["experiment"].unique()}
        by_scene = protocols == {"per_scene"}
        references, ref_notes = yardstick.reference_scores(
            ds.images, ds.splits, ds.attributes, splits, features, ds.ratings, simulated, n_boot, seed,
            source=str(folder / "images.parquet"), by_scene=by_scene)
        models = yardstick.model_scores(part, inputs.meta, labels, n_boot, seed, by_scene=by_scene)
        attributes = [a for a in ds.attributes if a in set(part["attribute"])]
        summaries[str(dataset)] = yardstick.summarise_dataset(models, references, primary_attribute(attributes),
                                                              by_scene=by_scene)
        out.append(yardstick.yardstick_table(str(dataset), simulated, models, references, attributes,
                                             [*notes, *ref_notes], where, summaries[str(dataset)]))
        nature[str(dataset)] = simulated
        if simulated and not by_scene:  # within-scene references never sit beside a paper table's pooled rows
            simulated_refs[str(dataset)] = (references, attributes)
        log.info("yardstick of %s (%d splits) in %.1f s", dataset, len(splits), time.perf_counter() - started)
    if summaries:
        out.append(yardstick.summary_table(summaries, nature))
    return out, simulated_refs
