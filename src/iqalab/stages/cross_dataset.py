"""Stage ``cross_dataset``: a model trained on dataset A predicts every image of dataset B (REQA Table IV: "training
on one database and testing on the full of another database"; SFIQA Table IV, the overall dimension).

The models are the experiments tagged for those tables (``experiments.<e>.tables`` holds ``reqa_table4`` or
``sfiqa_table4``); the test datasets are ``cross_dataset.datasets`` (default: every dataset of ``params.yaml``)
other than the experiment's own that have ``cross_dataset.attribute``. Nothing is trained here: each experiment's
checkpoint is reused, the one of its ``full_train`` split (every image of A; adapters write it) when it trained
one, else the one of its first split (A's training images of that split: the simulator writes no ``full_train``),
and the table captions say which. B's images are read as A's model was fed in training (the square cache or the
native store, ``train.resolution``) through the engine's evaluation items
(:func:`iqalab.train.engine.eval_items_for`), every image of B (its ``full_test`` split when it has one).
Predictions stay in A's MOS units; SRCC and the PLCC after the logistic map do not depend on the scale.

Writes ``results/cross_dataset/``: ``predictions.parquet`` (the columns of ``results/predictions``, ``dataset`` =
B, ``split`` = the checkpoint's training split), ``summary.json`` (the runs, the pairs left out and why) and the
tables (``reqa_table4`` / ``sfiqa_table4``, :mod:`iqalab.paper_tables`, labelled simulated where the data are).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from iqalab import paper_tables, provenance
from iqalab.analysis.evaluation import EvalInputs, compute_scores, display_labels
from iqalab.config import Params
from iqalab.data.cache import ImageCache
from iqalab.data.loaders import CamStats
from iqalab.data.regions import check_regions
from iqalab.data.schema import PREDICTION_COLUMNS, DataError, Dataset, read_dataset
from iqalab.io import write_json, write_parquet
from iqalab.status import unavailable_reason
from iqalab.tables import Table
from iqalab.train.engine import (
    eval_items_for,
    load_checkpoint,
    model_from_checkpoint,
    predict_items,
    resolve_device,
)

log = logging.getLogger(__name__)

#: the paper tables that read cross-dataset predictions; experiments tagged for them take part
CROSS_TABLES = ("reqa_table4", "sfiqa_table4")
#: the split an experiment trains on every image of its dataset with (:func:`iqalab.data.splits.cross_dataset_splits`)
FULL_TRAIN, FULL_TEST = "full_train", "full_test"


@dataclass(frozen=True)
class CrossRun:
    """One train -> test pair: ``experiment`` (trained on ``train_dataset``, split ``train_split``) on ``test``."""

    experiment: str
    train_dataset: str
    train_split: str
    checkpoint: Path
    test: str


def training_checkpoint(root: Path, experiment: str) -> tuple[Path | None, str, str]:
    """``(checkpoint, split, why none)`` of ``experiment``: its ``full_train`` run when it trained one, else its
    first split's (the rule of :func:`iqalab.inference.experiment_checkpoint`)."""
    meta = root / "results" / "predictions" / f"{experiment}.json"
    if not meta.is_file():
        return None, "", "not trained"
    info = json.loads(meta.read_text())
    status = unavailable_reason(info)
    if status is not None:
        return None, "", status
    splits = [str(s) for s in info.get("splits") or []]
    if not splits:
        return None, "", "no split trained"
    split = FULL_TRAIN if FULL_TRAIN in splits else splits[0]
    ckpt = root / "build" / "models" / experiment / split / "best.pt"
    return (ckpt, split, "") if ckpt.is_file() else (None, split, f"checkpoint {ckpt} missing")


def plan(params: Params, root: Path) -> tuple[list[CrossRun], dict[str, str]]:
    """The pairs to predict and ``{"<experiment> -> <dataset>" or experiment: why left out}``."""
    settings = params.cross_dataset
    tests = settings.datasets if settings.datasets is not None else list(params.datasets)
    runs: list[CrossRun] = []
    skipped: dict[str, str] = {}
    for name, exp in params.experiments.items():
        if not set(exp.tables) & set(CROSS_TABLES):
            continue
        ckpt, split, why = training_checkpoint(root, name)
        if ckpt is None:
            skipped[name] = why
            continue
        for test in tests:
            if test == exp.dataset:
                continue
            if not (root / "build" / "datasets" / test).is_dir():
                skipped[f"{name} -> {test}"] = "test dataset not ingested"
                continue
            runs.append(CrossRun(name, exp.dataset, split, ckpt, test))
    return runs, skipped


def test_ids(ds: Dataset) -> list[str]:
    """Every image of ``ds``: its ``full_test`` split's images when it has one, else the images table's."""
    if FULL_TEST in set(ds.splits["split"]):
        return ds.split_ids(FULL_TEST, "test")
    return ds.images["image_id"].astype(str).tolist()


def predict_pair(run: CrossRun, ds: Dataset, cache: ImageCache, attribute: str, params: Params,
                 device: str) -> pd.DataFrame:
    """The prediction rows of ``run``: A's model on every image of B, ``attribute`` only, in A's MOS units.

    Raises :class:`DataError` when the model needs human regions B's images were never searched for."""
    ckpt = load_checkpoint(run.checkpoint)
    model = model_from_checkpoint(ckpt, str(run.checkpoint))
    config: dict[str, Any] = ckpt["config"]
    ids = test_ids(ds)
    check_regions(model, ds, {"test": ids}, f"cross_dataset ({run.experiment} -> {ds.name})")
    stats = config.get("cam_stats")
    eval_crop = config.get("eval_crop")
    resolution = str((config.get("train") or {}).get("resolution", "cache"))  # the store A's model was fed from
    if eval_crop is not None and resolution == "cache" and eval_crop > cache.size:
        eval_crop = None  # B's cached images are smaller than A's crop: the whole image
    items = eval_items_for(model, ids, eval_crop, resolution, ds=ds, cache=cache, inputs=model.inputs,
                           cam_stats=CamStats(**stats) if stats else None, seed=params.seed)
    target = resolve_device(device)
    model.to(target)
    norm, raw = predict_items(model, items, params.train_config(run.experiment).batch_size, target, with_raw=True)
    lo, hi = (float(v) for v in config["mos_range"])
    k_pred, k_mos = model.attributes.index(attribute), ds.attributes.index(attribute)
    scene = ds.images.set_index("image_id").loc[ids, "scene"].astype(str).to_numpy()
    return pd.DataFrame({
        "image_id": ids, "attribute": attribute, "pred": norm[:, k_pred].astype(float) * (hi - lo) + lo,
        "mos": items.mos[:, k_mos].astype(float), "split": run.train_split, "role": "test", "scene": scene,
        "model": str(config["model_name"]), "dataset": ds.name, "experiment": run.experiment,
        "raw": raw.astype(float) if raw is not None else float("nan"),
    })[PREDICTION_COLUMNS]


def experiment_meta(params: Params, root: Path, experiment: str, train_split: str) -> dict[str, Any]:
    """The experiment's predictions JSON as the tables read it: ``train_dataset`` A, the current tags and label,
    the standard protocol (tiers and scene medians are A's scales, not B's)."""
    exp = params.experiment(experiment)
    info = json.loads((root / "results" / "predictions" / f"{experiment}.json").read_text())
    info.update(train_dataset=exp.dataset, tables=list(exp.tables), protocol="standard",
                label=exp.label or info.get("label") or experiment, status="ok", cross_train_split=train_split)
    return info


def checkpoint_note(meta: dict[str, dict[str, Any]], labels: dict[str, str], exps: list[str]) -> str:
    """Caption sentence: which training images each row's model saw (all of A, or one split's training part)."""
    parts = []
    for e in exps:
        split = meta[e]["cross_train_split"]
        seen = (f"every image of {meta[e]['train_dataset']}" if split == FULL_TRAIN else
                f"the training images of {meta[e]['train_dataset']}'s split {split} (no {FULL_TRAIN} split)")
        parts.append(f"{labels[e]}: {seen}")
    return "models trained on " + "; ".join(parts) + "; nothing retrained for this table"


def run(params: Params, root: Path) -> dict[str, Table]:
    """Stage ``cross_dataset``: predict every planned pair, write predictions, summary and tables; return them."""
    started = time.perf_counter()
    root = Path(root)
    settings = params.cross_dataset
    runs, skipped = plan(params, root)
    frames = []
    datasets: dict[str, tuple[Dataset, ImageCache]] = {}
    for cross in runs:
        key = f"{cross.experiment} -> {cross.test}"
        if cross.test not in datasets:
            ds = read_dataset(root / "build" / "datasets" / cross.test)
            datasets[cross.test] = (ds, ImageCache(ds, params.dataset(cross.test).cache_size))
        ds, cache = datasets[cross.test]
        if settings.attribute not in ds.attributes:
            skipped[key] = f"{cross.test} has no attribute {settings.attribute!r}"
            continue
        try:
            frame = predict_pair(cross, ds, cache, settings.attribute, params, settings.device)
        except (DataError, ValueError) as exc:  # regions never searched, attribute the model lacks
            skipped[key] = str(exc)
            log.warning("cross_dataset %s left out: %s", key, exc)
            continue
        frames.append(frame)
        log.info("cross_dataset %s: %d images", key, len(frame))
    out = root / "results" / "cross_dataset"
    out.mkdir(parents=True, exist_ok=True)
    preds = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PREDICTION_COLUMNS)
    write_parquet(out / "predictions.parquet", preds)
    split_of = {c.experiment: c.train_split for c in runs}
    meta = {e: experiment_meta(params, root, e, split_of[e]) for e in dict.fromkeys(preds["experiment"])}
    tables: dict[str, Table] = {}
    if meta:
        scores = compute_scores(EvalInputs(preds, meta))
        labels = display_labels(meta)
        ctx = paper_tables.TableContext(scores, meta, labels, {}, params.evaluate.logistic)
        for entry in paper_tables.registered_tables():
            if entry.name not in CROSS_TABLES:
                continue
            exps = [e for e in ctx.tagged(*entry.tags)]
            table = entry.build(ctx, exps) if exps else None
            if table is not None:
                table.caption = table.caption.rstrip(".") + ". " + checkpoint_note(meta, labels, exps) + "."
                tables[entry.name] = table
    for path in out.glob("*"):
        if path.suffix in {".md", ".csv", ".tex"} and path.stem not in tables:
            path.unlink()
    for table in tables.values():
        table.write(out)
    write_json(out / "summary.json", {
        "attribute": settings.attribute,
        "runs": [{"experiment": c.experiment, "train_dataset": c.train_dataset, "train_split": c.train_split,
                  "test_dataset": c.test} for c in runs if f"{c.experiment} -> {c.test}" not in skipped],
        "skipped": skipped, "tables": sorted(tables), "seconds": round(time.perf_counter() - started, 1),
        "_provenance": provenance.collect(params)})
    log.info("cross_dataset: %d pairs, %d tables, %d left out, %.1f s", len(runs) - len(skipped), len(tables),
             len(skipped), time.perf_counter() - started)
    return tables
