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

No silent fallback (issue 21): A's model meets B's images under the rules it trained under. Its
:meth:`~iqalab.models.base.IQAModel.select_images` runs on B (TuningIQA's ``missing_camera``: ``refuse`` leaves the
pair out with the reason, ``drop`` / ``unknown`` follow the model's setting and the caption says how many of B's
images), :func:`~iqalab.data.regions.check_regions` runs on B (a pair whose B was never searched for the model's
regions is left out; otherwise the caption counts B's test images scored by the region fallback, not A's), and a
model tested on a centre crop (``train.eval_crop``) larger than B's cached images is left out with the
``cache_size`` to set, instead of being scored on a whole image at another scale than its own test.

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
from iqalab.data.regions import check_regions, summarise_regions
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
    if info.get("separate_attributes"):
        return None, split, "one model per attribute (train.separate_attributes); cross-dataset runs take one model"
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
                 device: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The prediction rows of ``run`` (A's model on every image of B it accepts, ``attribute`` only, in A's MOS
    units) and what the caption must say of B's inputs (:func:`pair_inputs`).

    REQA / SFIQA Table IV test A's model on the whole of B with A's test protocol, so B's images go through the
    rules A's training applied (``select_images``, ``check_regions``) and A's evaluation crop.

    Raises :class:`DataError` (one line naming the experiment, B and the setting) when the model refuses B's images
    (camera parameters under ``missing_camera: refuse``, human regions never searched for) or when its evaluation
    crop is larger than B's cached images."""
    ckpt = load_checkpoint(run.checkpoint)
    model = model_from_checkpoint(ckpt, str(run.checkpoint))
    config: dict[str, Any] = ckpt["config"]
    where = f"experiments.{run.experiment}"
    every = test_ids(ds)
    # B's images play the test role; they are passed as the training role too because a rule may guard that role
    # (TuningIQA's ``drop`` refuses when no training image is left): here that reads "no image of B is left"
    ids = model.select_images(ds, {"train": every, "test": every}, where)["test"]
    camera = model.run_notes()  # what select_images applied to B (TuningIQA: missing_camera and its counts)
    regions = check_regions(model, ds, {"test": ids}, where)
    stats = config.get("cam_stats")
    eval_crop = config.get("eval_crop")
    resolution = str((config.get("train") or {}).get("resolution", "cache"))  # the store A's model was fed from
    if eval_crop is not None and resolution == "cache" and eval_crop > cache.size:
        raise DataError(
            f"{where}: tested on the centre {eval_crop} px crop (train.eval_crop) but the cached images of dataset "
            f"{ds.name!r} are {cache.size} px: set datasets.{ds.name}.cache_size to {eval_crop} or more and re-run "
            f"`iqalab ingest {ds.name}` to test it on {ds.name} as on {run.train_dataset} (a whole {cache.size} px "
            "image would be another input scale)")
    items = eval_items_for(model, ids, eval_crop, resolution, ds=ds, cache=cache, inputs=model.inputs,
                           cam_stats=CamStats(**stats) if stats else None, seed=params.seed)
    target = resolve_device(device)
    model.to(target)
    norm, raw = predict_items(model, items, params.train_config(run.experiment).batch_size, target, with_raw=True)
    scored = model.run_notes()  # what B's images made the model do (BRISQUE: its flat-region fallback on B)
    lo, hi = (float(v) for v in config["mos_range"])
    k_pred, k_mos = model.attributes.index(attribute), ds.attributes.index(attribute)
    scene = ds.images.set_index("image_id").loc[ids, "scene"].astype(str).to_numpy()
    frame = pd.DataFrame({
        "image_id": ids, "attribute": attribute, "pred": norm[:, k_pred].astype(float) * (hi - lo) + lo,
        "mos": items.mos[:, k_mos].astype(float), "split": run.train_split, "role": "test", "scene": scene,
        "model": str(config["model_name"]), "dataset": ds.name, "experiment": run.experiment,
        "raw": raw.astype(float) if raw is not None else float("nan"),
    })[PREDICTION_COLUMNS]
    facts = pair_inputs(len(every), len(ids), camera, regions)
    for key in ("n_fallback", "n_undefined"):  # B's images the original has no score for (BRISQUE, NIQE)
        if scored.get(key) and str(scored.get("variant") or "").startswith(("BRISQUE", "NIQE")):
            facts[key] = int(scored[key])
    return frame, facts


def pair_inputs(n_images: int, n_scored: int, camera: dict[str, Any], regions: dict[str, Any]) -> dict[str, Any]:
    """What a pair's model met in B (``summary.json`` and the caption): B's images and those scored, the
    ``missing_camera`` rule that applied to B's images lacking a camera parameter and their number, and the
    :func:`~iqalab.data.regions.summarise_regions` keys of B (``regions_missing``: B's test images scored by the
    region fallback)."""
    out: dict[str, Any] = {"n_images": n_images, "n_scored": n_scored}
    counts = camera.get("missing_camera_images") or {}
    if counts.get("test"):
        out.update(missing_camera=str(camera.get("missing_camera")), missing_camera_images=int(counts["test"]))
    return out | summarise_regions([regions])


def inputs_notes(inputs: dict[str, dict[str, Any]], runs: list[CrossRun], labels: dict[str, str],
                 exps: list[str]) -> list[str]:
    """Caption sentences on B's inputs per pair of ``exps`` (issue 21): where B's human regions came from, how many
    of B's test images the region fallback scored, and B's images lacking a camera parameter that the model's
    ``missing_camera`` left out or scored with GCPF's learned "unknown" embedding."""
    sources, fallback, camera, flat, undefined = [], [], [], [], []
    for run in runs:
        facts = inputs.get(f"{run.experiment} -> {run.test}")
        if facts is None or run.experiment not in exps:
            continue
        pair = f"{labels[run.experiment]} ({run.train_dataset} → {run.test})"
        if facts.get("regions"):
            detectors = sorted({d for names in facts["regions_detector"].values() for d in names})
            sources.append(f"{pair}: {', '.join(detectors) or 'none'}")
            if facts.get("regions_missing"):
                flag = " (allow_missing_regions)" if facts.get("allow_missing_regions") else ""
                fallback.append(f"{pair}: {facts['regions_missing']} of {facts['n_scored']}{flag}")
        if facts.get("n_fallback"):
            flat.append(f"{pair}: {facts['n_fallback']} of {facts['n_scored']}")
        if facts.get("n_undefined"):
            undefined.append(f"{pair}: {facts['n_undefined']} of {facts['n_scored']}")
        if facts.get("missing_camera_images"):
            how = ("left out" if facts["missing_camera"] == "drop"
                   else "scored with GCPF's learned 'unknown' embedding")
            camera.append(f"{pair}: {facts['missing_camera_images']} of {facts['n_images']} {how} "
                          f"(missing_camera: {facts['missing_camera']})")
    out = []
    if sources:
        out.append("human regions of the test datasets from " + "; ".join(sources))
    if fallback:
        out.append("test images without a detected region, scored by the model's fallback: " + "; ".join(fallback))
    if camera:
        out.append("test images lacking a camera parameter: " + "; ".join(camera))
    if flat:
        out.append("test images given a score by a fallback where the original has none (BRISQUE: a flat region's "
                   "AGGD side given zero variance; NIQE: the patch covariance taken as zero): " + "; ".join(flat))
    if undefined:
        out.append("test images whose original score is undefined (flat: raw score NaN, left out of correlations "
                   "of the raw score; NIQE's [0, 1] prediction 0): " + "; ".join(undefined))
    return out


def experiment_meta(params: Params, root: Path, experiment: str, train_split: str) -> dict[str, Any]:
    """The experiment's predictions JSON as the tables read it: ``train_dataset`` A, the current tags and label,
    the standard protocol (tiers and scene medians are A's scales, not B's), without A's region counts (the
    caption states B's, :func:`inputs_notes`)."""
    exp = params.experiment(experiment)
    info = json.loads((root / "results" / "predictions" / f"{experiment}.json").read_text())
    info.update(train_dataset=exp.dataset, tables=list(exp.tables), protocol="standard",
                label=exp.label or info.get("label") or experiment, status="ok", cross_train_split=train_split)
    for key in ("regions", "regions_detector", "regions_missing", "allow_missing_regions"):
        info.pop(key, None)  # A's test images: the caption states B's (inputs_notes)
    notes = dict(info.get("notes") or {})
    if {notes.pop(key, None) for key in ("n_fallback", "n_undefined")} != {None}:  # A's counts: the caption
        info["notes"] = notes                                                       # states B's (inputs_notes)
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
    inputs: dict[str, dict[str, Any]] = {}  # "<experiment> -> <dataset>": what the model met in B (pair_inputs)
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
            frame, inputs[key] = predict_pair(cross, ds, cache, settings.attribute, params, settings.device)
        except (DataError, ValueError) as exc:  # images refused, eval crop > B's cache, attribute the model lacks
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
                notes = [*inputs_notes(inputs, runs, labels, exps), checkpoint_note(meta, labels, exps)]
                table.caption = table.caption.rstrip(".") + ". " + ". ".join(notes) + "."
                tables[entry.name] = table
    for path in out.glob("*"):
        if path.suffix in {".md", ".csv", ".tex"} and path.stem not in tables:
            path.unlink()
    for table in tables.values():
        table.write(out)
    write_json(out / "summary.json", {
        "attribute": settings.attribute,
        "runs": [{"experiment": c.experiment, "train_dataset": c.train_dataset, "train_split": c.train_split,
                  "test_dataset": c.test, "inputs": inputs[f"{c.experiment} -> {c.test}"]}
                 for c in runs if f"{c.experiment} -> {c.test}" not in skipped],
        "skipped": skipped, "tables": sorted(tables), "seconds": round(time.perf_counter() - started, 1),
        "_provenance": provenance.collect(params)})
    log.info("cross_dataset: %d pairs, %d tables, %d left out, %.1f s", len(runs) - len(skipped), len(tables),
             len(skipped), time.perf_counter() - started)
    return tables
