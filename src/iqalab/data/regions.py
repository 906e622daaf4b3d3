"""Human regions of a dataset: detection at ingest (cached), their provenance, and the refusal of region models.

Three of the four papers' models look at people: TuningIQA's human-aware feature extractor (person box, seed 000,
Sec. "Human-aware Feature Extraction"), SFIQA-Assessor's face and eyes-and-mouth views (seed 003, Sec. IV-A) and
the face-region attributes of PIQ23 (FHIQA, seed 001, Sec. IV-D). This module

- fills the person box, face box and five landmarks of every image that lacks them, at ingest
  (:func:`fill_regions`, called by ``01_ingest`` when ``datasets.<name>.detect.enabled``), with the detectors of
  :mod:`iqalab.data.detect`, and stores them in ``images.parquet`` beside :data:`PROVENANCE`: which detector
  (name and version) produced each box and its confidence. Boxes a dataset already has are kept and marked
  ``dataset``;
- caches every detection under ``build/detections/<dataset>/<settings>.parquet``, keyed by the SHA-256 of the
  image file and by a hash of the detector settings and versions: re-running ingest (another cache size, a
  re-download) does not detect again, and training never detects;
- tells which images a model has no region for (:func:`check_regions`): a model that reads ``person_box``,
  ``face_box`` or ``landmarks`` (its ``inputs``; SFIQA-Assessor's eyes-and-mouth view reads the landmarks)
  refuses a dataset where regions were never looked for, unless the model option ``allow_missing_regions`` is
  set; the counts go into the predictions JSON (:func:`summarise_regions`). Face boxes a dataset gives come
  without a search for landmarks, so where their landmark columns are empty the landmarks are unknown (not
  "none"): the model's template landmarks stand in only when ``allow_missing_regions`` says so.

An image has a region when its box is known; it has *none* when a detector looked and found nothing (or the
dataset is simulated and writes the box columns: the simulator knows where its people are); it is *unknown*
otherwise. Only unknown regions are refused: an empty detection is a fact about the image, and the model's
documented fallback (whole image for TuningIQA, centre square for SFIQA) applies to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from iqalab.data.detect import COLUMNS, SCORES, detector_versions, face_to_body
from iqalab.data.schema import FACE_BOX, LANDMARKS, PERSON_BOX, DataError, Dataset, write_dataset
from iqalab.io import sha256_file, write_parquet

log = logging.getLogger(__name__)

#: provenance columns written beside the boxes (``*_detector`` is null where nobody looked)
PROVENANCE = ("face_detector", "face_detector_version", "face_score", "person_detector", "person_detector_version",
              "person_score")
#: batch keys that are regions, the columns behind them and the provenance prefix of what fills them (the five
#: landmarks come with a detected face: MTCNN's points; a face box a dataset gives comes without them)
REGIONS: dict[str, tuple[str, tuple[str, ...]]] = {"person_box": ("person", PERSON_BOX), "face_box": ("face", FACE_BOX),
                                                   "landmarks": ("face", LANDMARKS)}
FLUSH_EVERY = 256


class DetectionConfig(BaseModel):
    """``datasets.<name>.detect``: region detection at ingest (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="detect person/face boxes and landmarks for images without them")
    person: Literal["face_rule", "hog", "fasterrcnn"] = Field(
        "face_rule", description="person detector: upper-body box from the MTCNN face (offline default), OpenCV "
                                 "HOG people detector, or torchvision Faster R-CNN (TuningIQA's; local weights)")
    face_threshold: float = Field(0.9, gt=0, lt=1, description="minimal MTCNN face probability")
    person_threshold: float = Field(0.5, description="minimal person score (Faster R-CNN score; HOG SVM margin)")
    min_face_size: int = Field(20, ge=8, description="MTCNN's smallest face side in pixels (after max_side)")
    retry_threshold: float | None = Field(
        0.9, gt=0, lt=1, description="when MTCNN finds no face: retry with relaxed candidate stages on the image "
                                     "and its histogram-equalised copy, keeping faces of at least this "
                                     "probability (null = no retries; iqalab.data.detect.find_face)")
    max_side: int = Field(1024, ge=64, description="longer side images are shrunk to before detection")
    fasterrcnn_arch: Literal["fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
                             "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn"] = \
        "fasterrcnn_resnet50_fpn"
    fasterrcnn_weights: str | None = Field(None, description="local weights file of fasterrcnn_arch (relative to "
                                                             "the project root); else the torch hub cache")

    @model_validator(mode="after")
    def _score_range(self) -> DetectionConfig:
        if self.person == "fasterrcnn" and not 0 < self.person_threshold < 1:
            raise ValueError("person_threshold: a Faster R-CNN score threshold lies in (0, 1)")
        return self

    def settings(self) -> dict[str, Any]:
        """Everything that changes a detection: the settings and the detectors' versions."""
        fields = self.model_dump(exclude={"enabled", "fasterrcnn_weights"})
        if self.person != "fasterrcnn":
            fields.pop("fasterrcnn_arch")
        return {**fields, **detector_versions(self.person, self.fasterrcnn_arch, self.retry_threshold)}

    def key(self) -> str:
        """Short hash of :meth:`settings`: names the cache file."""
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------- face-region patch geometry
def face_window_array(boxes: np.ndarray, height: int, width: int, margin: float = 0.1) -> np.ndarray:
    """Face-region windows (seed 001 Sec. IV-D: Exposure and Details judged on the face): float32 ``[B, 4]``
    integer-valued pixel windows (x0, y0, x1, y1) from face boxes ``[B, 4]`` in pixels of a ``height x width``
    image, each padded by ``margin`` x its width / height on each side (outwards to whole pixels), clipped to
    the image and at least one pixel wide. Rows without a box (NaN) get the whole image. The one rule of the
    model (:func:`iqalab.models.hyperiqa.face_windows`) and of the loader's pre-cut face patches
    (:class:`iqalab.data.loaders.PatchItems`)."""
    fb = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        size = np.maximum(fb[:, 2:] - fb[:, :2], np.float32(0.0))
        lo = np.floor(fb[:, :2] - np.float32(margin) * size)
        hi = np.ceil(fb[:, 2:] + np.float32(margin) * size)
    limit = np.array([width, height], dtype=np.float32)
    lo = np.minimum(np.maximum(lo, np.float32(0.0)), limit - 1)
    hi = np.maximum(np.minimum(hi, limit), lo + 1)  # at least one pixel
    win = np.concatenate([lo, hi], axis=1)
    whole = np.array([0.0, 0.0, width, height], dtype=np.float32)
    return np.where(np.isfinite(fb).all(axis=1)[:, None], win, whole).astype(np.float32)


def region_squares(windows: np.ndarray, side: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squares drawn inside windows: ``windows`` ``[B, 4]`` (x0, y0, x1, y1, whole pixels), ``side`` the patch
    side (clipped to the image), ``u`` uniform draws ``[B, n, 2]`` in [0, 1). Each square has side
    ``s = min(side, window width, window height)`` at an integer position uniform inside its window. Returns
    ``x0 [B, n]``, ``y0 [B, n]`` and ``s [B]`` (float64, integer-valued): a square of side ``s < side`` (a face
    smaller than the patch) is taken whole and resized to ``side`` by the caller."""
    win = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
    u = np.asarray(u, dtype=np.float64)
    s = np.minimum(float(side), np.minimum(win[:, 2] - win[:, 0], win[:, 3] - win[:, 1]))
    span_x = np.maximum(win[:, 2] - win[:, 0] - s + 1, 1.0)
    span_y = np.maximum(win[:, 3] - win[:, 1] - s + 1, 1.0)
    x0 = win[:, None, 0] + np.floor(u[..., 0] * span_x[:, None])
    y0 = win[:, None, 1] + np.floor(u[..., 1] * span_y[:, None])
    return x0, y0, s


# ----------------------------------------------------------------------------------------------- ingest
def _with_region_columns(images: pd.DataFrame) -> pd.DataFrame:
    images = images.copy()
    for col in (*COLUMNS, "face_score", "person_score"):
        if col not in images.columns:
            images[col] = np.nan
        images[col] = images[col].astype(float)
    for col in ("face_detector", "face_detector_version", "person_detector", "person_detector_version"):
        if col not in images.columns:
            images[col] = None
        images[col] = images[col].astype(object)
    return images


def _known(images: pd.DataFrame, cols: Iterable[str]) -> np.ndarray:
    cols = list(cols)
    if not set(cols) <= set(images.columns):
        return np.zeros(len(images), dtype=bool)
    return np.isfinite(images[cols].to_numpy(dtype=float)).all(axis=1)


def _looked(images: pd.DataFrame, kind: str) -> np.ndarray:
    col = f"{kind}_detector"
    return images[col].notna().to_numpy() if col in images.columns else np.zeros(len(images), dtype=bool)


class DetectionCache:
    """Detections of one settings key, by image SHA-256; written atomically every :data:`FLUSH_EVERY` new rows."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = Path(folder) / f"{key}.parquet"
        frame = pd.read_parquet(self.path) if self.path.is_file() else None
        self.rows: dict[str, dict[str, float]] = {} if frame is None else {
            str(r.pop("sha256")): r for r in frame.to_dict(orient="records")}
        self.pending = 0

    def get(self, digest: str) -> dict[str, float] | None:
        return self.rows.get(digest)

    def put(self, digest: str, row: Mapping[str, float]) -> None:
        self.rows[digest] = {c: float(row[c]) for c in (*COLUMNS, *SCORES)}
        self.pending += 1
        if self.pending >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        frame = pd.DataFrame([{"sha256": k, **v} for k, v in self.rows.items()])
        write_parquet(self.path, frame)
        self.pending = 0


def fill_regions(ds: Dataset, cfg: DetectionConfig, cache_dir: Path, root: Path | None = None,
                 progress: bool = True) -> Dataset:
    """Detect the regions ``ds`` lacks, record their provenance and rewrite ``ds`` (tables and checksums).

    Rows whose face (person) box is known keep it, marked ``dataset``; a missing person box next to a known face
    is derived from it when ``cfg.person == "face_rule"`` (no image needed); every other row lacking a region is
    detected once (or read from the cache). A row where the detector found nothing keeps NaN boxes with the
    detector's name: "looked, none". The dataset's ``dataset.json`` gets a ``regions`` summary.

    Args:
        ds: a validated dataset (its folder is rewritten in place).
        cfg: the detection settings (``datasets.<name>.detect``).
        cache_dir: folder of the detection cache of this dataset.
        root: project root ``cfg.fasterrcnn_weights`` is relative to.
        progress: show a progress bar.

    Raises:
        iqalab.data.detect.DetectorUnavailable: the configured detector cannot run (what to install or where to
            put the weights is in the message).
    """
    from iqalab.data import detect

    started = time.perf_counter()
    images = _with_region_columns(ds.images)
    versions = detector_versions(cfg.person, cfg.fasterrcnn_arch, cfg.retry_threshold)
    source = f"{ds.meta.get('source') or 'dataset'} boxes"
    for kind, cols in (("face", FACE_BOX), ("person", PERSON_BOX)):
        given = _known(images, cols) & ~_looked(images, kind)
        images.loc[given, f"{kind}_detector"] = "dataset"
        images.loc[given, f"{kind}_detector_version"] = source
    need_face = ~_known(images, FACE_BOX) & ~_looked(images, "face")
    need_person = ~_known(images, PERSON_BOX) & ~_looked(images, "person")
    if cfg.person == "face_rule":  # a person from a known face needs no image
        derive = np.flatnonzero(need_person & ~need_face & _known(images, FACE_BOX))
        if len(derive):
            w, h = images["width"].to_numpy(float)[derive], images["height"].to_numpy(float)[derive]
            scale = np.stack([w, h, w, h], axis=1)
            face = images[list(FACE_BOX)].to_numpy(float)[derive] * scale
            body = np.stack([face_to_body(f, wi, hi)[0] for f, wi, hi in zip(face, w, h, strict=True)]) / scale
            images.loc[images.index[derive], list(PERSON_BOX)] = body.clip(0, 1)
            images.loc[images.index[derive], "person_detector"] = versions["person_detector"]
            images.loc[images.index[derive], "person_detector_version"] = versions["person_detector_version"]
            need_person[derive] = False
    todo = np.flatnonzero(need_face | need_person)
    summary: dict[str, Any] = {"settings": cfg.settings(), "images": len(images), "given_face": int(
        (images["face_detector"] == "dataset").sum()), "given_person": int((images["person_detector"] == "dataset")
                                                                           .sum()), "detected": 0, "from_cache": 0}
    if len(todo):
        weights = None
        if cfg.person == "fasterrcnn":
            local = cfg.fasterrcnn_weights
            if local is not None and root is not None and not Path(local).is_absolute():
                local = str(root / local)
            weights = detect.require_fasterrcnn_weights(cfg.fasterrcnn_arch, local)
        cache = DetectionCache(cache_dir, cfg.key())
        results = []
        try:
            for i in tqdm(todo, disable=not progress, desc=f"detect regions ({ds.name})", leave=False):
                path = ds.image_path(str(images["path"].iloc[i]))
                digest = sha256_file(path)
                row = cache.get(digest)
                if row is None:
                    row = detect.detect_one(path, person=cfg.person, face_threshold=cfg.face_threshold,
                                            person_threshold=cfg.person_threshold, min_face_size=cfg.min_face_size,
                                            retry_threshold=cfg.retry_threshold,
                                            arch=cfg.fasterrcnn_arch, weights=weights, max_side=cfg.max_side)
                    cache.put(digest, row)
                    summary["detected"] += 1
                else:
                    summary["from_cache"] += 1
                results.append(row)
        finally:
            cache.flush()
        found = pd.DataFrame(results, index=images.index[todo])
        for kind, cols, need in (("face", (*FACE_BOX, *LANDMARKS), need_face), ("person", PERSON_BOX, need_person)):
            rows = images.index[todo][need[todo]]
            images.loc[rows, list(cols)] = found.loc[rows, list(cols)].to_numpy()
            images.loc[rows, f"{kind}_score"] = found.loc[rows, f"{kind}_score"].to_numpy()
            images.loc[rows, f"{kind}_detector"] = versions[f"{kind}_detector"]
            images.loc[rows, f"{kind}_detector_version"] = versions[f"{kind}_detector_version"]
    summary["faces"] = int(_known(images, FACE_BOX).sum())
    summary["persons"] = int(_known(images, PERSON_BOX).sum())
    summary["seconds"] = round(time.perf_counter() - started, 2)
    log.info("regions of %s: %d of %d images with a face, %d with a person (%d detected, %d from the cache, "
             "%.1f s)", ds.name, summary["faces"], len(images), summary["persons"], summary["detected"],
             summary["from_cache"], summary["seconds"])
    ds.images = images
    ds.meta = {**ds.meta, "regions": summary}
    write_dataset(ds)
    return ds


# --------------------------------------------------------------------------------------------- training
def needed_regions(model: Any) -> list[str]:
    """The region batch keys a model reads (its ``inputs``), in :data:`REGIONS` order."""
    return [key for key in REGIONS if key in model.inputs]


def region_status(ds: Dataset, key: str) -> pd.Series:
    """Per image (indexed by ``image_id``): ``"present"``, ``"none"`` (looked, nothing found) or ``"unknown"``."""
    kind, cols = REGIONS[key]
    images = ds.images
    present = _known(images, cols)
    looked = _looked(images, kind)
    if key == "landmarks" and "face_detector" in images.columns:
        # a face box the dataset gave was not a search for landmarks: where they are absent, nobody looked
        looked &= (images["face_detector"] != "dataset").to_numpy()
    if ds.meta.get("simulated") and set(cols) <= set(images.columns) and not looked.any():
        looked = np.ones(len(images), dtype=bool)  # the simulator writes its ground truth, NaN = nobody there
    status = np.where(present, "present", np.where(looked, "none", "unknown"))
    return pd.Series(status, index=images["image_id"].to_numpy(), name=key)


def check_regions(model: Any, ds: Dataset, ids: Mapping[str, list[str]], where: str) -> dict[str, Any]:
    """Refuse a dataset whose images were never searched for the regions ``model`` needs (one-line
    :class:`DataError`), unless the model's ``allow_missing_regions`` is set; else return what the predictions
    JSON records: the regions used, the detectors and the test images without a region.

    Args:
        model: the built model (``inputs``, ``allow_missing_regions``).
        ds: the dataset.
        ids: image ids by role (``train``/``val``/``test``) of this run.
        where: params key path of the experiment (``experiments.<name>``), for the message.
    """
    needed = needed_regions(model)
    if not needed:
        return {}
    allow = bool(getattr(model, "allow_missing_regions", False))
    used = list(dict.fromkeys(i for role in ids.values() for i in role))
    out: dict[str, Any] = {"needed": needed, "allow_missing": allow, "missing_test_ids": set(), "detectors": {}}
    for key in needed:
        kind, _ = REGIONS[key]
        status = region_status(ds, key).loc[used]
        unknown = int((status == "unknown").sum())
        if unknown and not allow and key == "landmarks":
            raise DataError(
                f"{where}: model {getattr(model, 'registry_name', type(model).__name__)!r} needs landmarks but "
                f"{unknown} of {len(used)} images of dataset {ds.name!r} have a face box from the dataset and no "
                f"landmarks ({LANDMARKS[0]}..{LANDMARKS[-1]} columns): add them to the dataset, or set {where}.model."
                f"allow_missing_regions: true to place the model's template landmarks in each face box")
        if unknown and not allow:
            raise DataError(
                f"{where}: model {getattr(model, 'registry_name', type(model).__name__)!r} needs {key} regions but "
                f"{unknown} of {len(used)} images of dataset {ds.name!r} have none (never detected): set "
                f"datasets.{ds.name}.detect.enabled: true and re-run ingest, or set {where}.model."
                f"allow_missing_regions: true to keep the whole-image/centre-crop fallback")
        if unknown:
            log.warning("%s: %d of %d images of %s have no %s (allow_missing_regions: the model's fallback is "
                        "used)", where, unknown, len(used), ds.name, key)
        test = status.loc[[i for i in ids.get("test", []) if i in status.index]]
        out["missing_test_ids"] |= set(test.index[test != "present"])
        col = f"{kind}_detector"
        if col in ds.images.columns:
            names = ds.images.set_index("image_id").loc[used, col].dropna()
            out["detectors"][key] = sorted(set(names.astype(str)))
        else:
            out["detectors"][key] = ["simulator"] if ds.meta.get("simulated") and \
                set(REGIONS[key][1]) <= set(ds.images.columns) else []
    return out


def summarise_regions(checks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The predictions-JSON keys from the :func:`check_regions` results of every split of an experiment:
    ``regions`` (batch keys), ``regions_detector`` (detector names per key), ``regions_missing`` (distinct test
    images evaluated without their region, i.e. with the model's fallback) and ``allow_missing_regions``.
    Empty for models without regions."""
    checks = [c for c in checks if c]
    if not checks:
        return {}
    missing: set[str] = set().union(*(c["missing_test_ids"] for c in checks))
    detectors: dict[str, list[str]] = {}
    for c in checks:
        for key, names in c["detectors"].items():
            detectors[key] = sorted(set(detectors.get(key, [])) | set(names))
    return {"regions": checks[0]["needed"], "regions_detector": detectors, "regions_missing": len(missing),
            "allow_missing_regions": any(c["allow_missing"] for c in checks)}


# ------------------------------------------------------------------------------------------------ reporting
def detection_rates(images: pd.DataFrame, group: str = "condition") -> pd.DataFrame:
    """Share of images with a face box and with a person box per ``group`` value (condition or scenario) and over
    all images (row ``"all"``): columns ``group``, ``n``, ``face``, ``person`` (fractions; 0 without box columns).
    The ``02_annotation_stats`` montage (:func:`iqalab.dataset_figures.region_montage`) prints these rates."""
    labels = images[group].fillna("all").astype(str) if group in images.columns else pd.Series("all", images.index)
    face, person = _known(images, FACE_BOX), _known(images, PERSON_BOX)
    rows = [{"group": name, "n": int(mask.sum()), "face": float(face[mask].mean()),
             "person": float(person[mask].mean())}
            for name, mask in ((g, (labels == g).to_numpy()) for g in sorted(labels.unique()))]
    if len(rows) > 1 or rows[0]["group"] != "all":
        rows.append({"group": "all", "n": len(images), "face": float(face.mean()), "person": float(person.mean())})
    return pd.DataFrame(rows, columns=["group", "n", "face", "person"])
