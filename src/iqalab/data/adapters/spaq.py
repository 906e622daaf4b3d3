"""SPAQ (Smartphone Photography Attribute and Quality) adapter, with EXIF mapped onto camera parameters.

Y. Fang, H. Zhu, Y. Zeng, K. Ma, Z. Wang, "Perceptual quality assessment of smartphone photography", CVPR 2020,
pp. 3677-3686.

Published as ``Annotations/MOS and Image attribute scores.xlsx`` (Image name, MOS, Brightness, Colorfulness,
Contrast, Noisiness, Sharpness; all 0-100), ``Annotations/EXIF_tags.xlsx`` (Image name, Focal length, F-number,
Exposure time, ISO, Brightness, Flash, ...), optionally ``Annotations/Scene category labels.xlsx`` (per-image
scene-class probabilities) and the 11,125 images in ``TestImage/``.

EXIF -> TuningIQA's camera-parameter columns (so GCPF trains on real parameters): ``cam_aperture`` = F-number,
``cam_shutter`` = exposure time in seconds, ``cam_iso`` = ISO. ``cam_wb``/``cam_contrast``/``cam_saturation``/
``cam_sharpness`` stay NaN unless the workbook has a White balance/Contrast/Saturation/Sharpness column (EXIF
tags 0xA403, 0xA408-0xA40A: small enumerations, stored as published). Exposure times are read as seconds;
``"1/50"`` strings are parsed as fractions; values above ``max_exposure_s`` (30 s; the release uses 1,000,000 as
an "unknown" sentinel) become NaN with a logged count. The top scene class, where the scene workbook is
present, becomes ``condition``; SPAQ has no shared scenes, so ``scene`` is the image itself.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.data.adapters.base import (
    DatasetCard,
    Layout,
    default_splits,
    inspect_images,
    open_layout,
    publish_release,
    read_score_table,
    read_table,
    scores_in_range,
)
from iqalab.data.schema import DataError, Dataset, check_unique, numeric, require_columns, where

log = logging.getLogger(__name__)

SCORES = "Annotations/MOS and Image attribute scores.xlsx"
EXIF = "Annotations/EXIF_tags.xlsx"
SCENES = "Annotations/Scene category labels.xlsx"
IMAGES = "TestImage"
#: Annotations and images; the EXIF workbook is not needed with ``exif: false`` (:data:`LAYOUTS_NO_EXIF`).
LAYOUTS = (Layout("release", {"scores": (SCORES,), "exif": (EXIF,), "images": (IMAGES,)}, {"scenes": (SCENES,)},
                  image_dirs=(IMAGES,)),)
LAYOUTS_NO_EXIF = (Layout("release without EXIF", {"scores": (SCORES,), "images": (IMAGES,)},
                          {"scenes": (SCENES,)}, image_dirs=(IMAGES,)),)
NAME = "Image name"
#: workbook column -> attribute
ATTRIBUTE_COLUMNS = {"MOS": "overall", "Brightness": "brightness", "Colorfulness": "colorfulness",
                     "Contrast": "contrast", "Noisiness": "noisiness", "Sharpness": "sharpness"}
#: camera parameter -> accepted EXIF column names (case-insensitive)
EXIF_COLUMNS = {
    "aperture": ("F-number", "FNumber", "F number"),
    "shutter": ("Exposure time", "ExposureTime"),
    "iso": ("ISO", "ISOSpeedRatings", "ISO speed"),
    "wb": ("White balance", "WhiteBalance"),
    "contrast": ("Contrast",),
    "saturation": ("Saturation",),
    "sharpness": ("Sharpness",),
}
REQUIRED_EXIF = ("aperture", "shutter", "iso")

CARD = DatasetCard(
    name="spaq",
    title="SPAQ",
    attributes=tuple(ATTRIBUTE_COLUMNS.values()),
    mos_range=(0.0, 100.0),
    url="https://github.com/h4nwei/SPAQ",
    licence="research use, see the repository",
    citation="Y. Fang, H. Zhu, Y. Zeng, K. Ma, Z. Wang. Perceptual quality assessment of smartphone "
             "photography. CVPR 2020, pp. 3677-3686.",
    layout=(SCORES + " (Image name, MOS, Brightness, Colorfulness, Contrast, Noisiness, Sharpness)",
            EXIF + " (Image name, F-number, Exposure time, ISO, ...)",
            SCENES + " (optional)", IMAGES + "/<Image name>"),
)


def parse_exposure(value: Any, max_exposure_s: float = 30.0) -> float:
    """Exposure time in seconds from a number or a ``"1/50"``/``"0.02 s"`` string; NaN if unknown."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return float("nan")
    if isinstance(value, (int, float, np.integer, np.floating)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().removesuffix("s").removesuffix("sec").strip()
        try:
            seconds = float(Fraction(text))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{value!r} is not an exposure time") from None
    return seconds if 0 < seconds <= max_exposure_s else float("nan")


def _exif_column(frame: pd.DataFrame, aliases: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in frame.columns}
    return next((lowered[a.lower()] for a in aliases if a.lower() in lowered), None)


def _camera_parameters(raw_root: Path, names: list[str], max_exposure_s: float) -> pd.DataFrame:
    exif = read_table(raw_root / EXIF)
    require_columns(exif, EXIF, [NAME])
    columns = {p: _exif_column(exif, aliases) for p, aliases in EXIF_COLUMNS.items()}
    missing = [EXIF_COLUMNS[p][0] for p in REQUIRED_EXIF if columns[p] is None]
    if missing:
        require_columns(exif, EXIF, missing)
    exif_names = [str(v).strip() for v in exif[NAME]]
    check_unique(exif_names, EXIF, NAME)
    row_of = {n: i for i, n in enumerate(exif_names)}
    absent = [n for n in names if n not in row_of]
    if absent:
        raise DataError(f"{where(EXIF, column=NAME)}: no EXIF row for image {absent[0]!r} "
                        f"({len(absent)} images without EXIF; pass exif: false to skip camera parameters)")
    order = [row_of[n] for n in names]
    cam: dict[str, np.ndarray] = {}
    for param, col in columns.items():
        if col is None:
            cam[f"cam_{param}"] = np.full(len(names), np.nan)
            continue
        if param == "shutter":
            values = np.empty(len(exif))
            for i, v in enumerate(exif[col]):
                try:
                    values[i] = parse_exposure(v, max_exposure_s)
                except ValueError as exc:
                    raise DataError(f"{where(EXIF, i, col)}: {exc}") from None
            unknown = int(np.isnan(values).sum())
            if unknown:
                log.info("SPAQ: %d exposure times unknown or above %g s -> NaN", unknown, max_exposure_s)
        else:
            values = numeric(exif, EXIF, col, allow_missing=True)
            bad = values <= 0 if param in ("aperture", "iso") else np.zeros(len(values), bool)
            values = np.where(bad, np.nan, values)
        cam[f"cam_{param}"] = values[order]
    return pd.DataFrame(cam)


def adapt(raw_root: Path, out_root: Path, *, exif: bool = True, max_exposure_s: float = 30.0,
          n_splits: int = 20, test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0,
          cross: bool = True, mos_range: tuple[float, float] | None = None, link: str = "hardlink",
          verify: bool = True, workers: int = 4, dataset_name: str | None = None) -> Dataset:
    """Turn ``raw_root`` (SPAQ as published) into a canonical dataset at ``out_root``."""
    found, scale = open_layout(CARD, raw_root, LAYOUTS if exif else LAYOUTS_NO_EXIF, mos_range)
    raw_root = found.root
    table, names = read_score_table(raw_root, SCORES, NAME, list(ATTRIBUTE_COLUMNS))
    columns: dict[str, Any] = {"image_id": names, "raw_path": [f"{IMAGES}/{n}" for n in names],
                               "scene": names, "condition": None}
    for col, attr in ATTRIBUTE_COLUMNS.items():
        columns[f"mos_{attr}"] = scores_in_range(table, SCORES, col, scale, allow_missing=(attr != "overall"))
    read = [SCORES]
    if (raw_root / SCENES).is_file():
        scenes = read_table(raw_root / SCENES)
        require_columns(scenes, SCENES, [NAME])
        classes = [c for c in scenes.columns if c != NAME]
        if classes:
            probs = scenes[classes].apply(pd.to_numeric, errors="coerce").fillna(-1).to_numpy()
            best = dict(zip(scenes[NAME].astype(str).str.strip(), np.asarray(classes)[probs.argmax(axis=1)]))
            columns["condition"] = [best.get(n) for n in names]
            read.append(SCENES)
    widths, heights = inspect_images(raw_root, columns["raw_path"], SCORES, verify=verify, workers=workers)
    images = pd.DataFrame(columns).assign(width=widths, height=heights)
    if exif:
        images = pd.concat([images, _camera_parameters(raw_root, names, max_exposure_s)], axis=1)
        read.append(EXIF)
    splits = default_splits(images, n_splits, test_fraction, val_fraction, seed, cross)
    cameras = "EXIF: aperture=F-number, shutter=exposure time (s), iso=ISO" if exif else "none"
    return publish_release(CARD, found, out_root, images, splits, scale, dataset_name, read, link=link,
                           camera_parameters=cameras)
