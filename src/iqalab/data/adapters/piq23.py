"""PIQ23 (portrait image quality) adapter, with the official scene and device splits.

N. Chahine, A.-S. Calarasanu, D. Garcia-Civiero, T. Cayla, S. Ferradans, J. Ponce, "An image quality
assessment dataset for portraits", CVPR 2023. The FHIQA paper (seed 001, Sec. IV-A) evaluates on its scene
split: 35 training / 15 test scenes of 50 (about 30% of the 5116 images), metrics per scene, median across scenes.

Published in two pieces that users combine in two ways, both read (``dataset.json`` records which:
``raw_layout``): the GitHub repository (https://github.com/DXOMARK-Research/PIQ2023) keeps the score files under
``Scores/``; the image download (5 GB, after a form) holds ``Overall/``, ``Details/``, ``Exposure/`` and the same
``Scores_*.csv`` at its top level but no split files, so the ``Test split/`` folder (or its ``Scene Split.csv``)
is copied in from the repository. Either may sit inside one folder an unzip left in ``raw_root``. The files:

- ``Scores/Scores_{Overall,Details,Exposure}.csv`` (or top-level ``Scores_*.csv``): IMAGE PATH (Windows path with backslashes, e.g.
  ``Overall\\66_Indoor_Scene_0.jpg``), JOD, JOD STD, CI LOW, CI HIGH, CI RANGE, QUALITY LEVEL, CLUSTER,
  TOTAL COMPARISONS, IMAGE, SCENE, ATTRIBUTE, SCENE IDX, CONDITION;
- ``Test split/Scene Split.csv`` (SCENE, SPLIT, NB IMAGES) and ``Test split/Device Split.csv`` (IMAGE, SPLIT);
- optionally ``Metadata/Image Metadata.csv`` (Image, Device) -> a ``device`` column;
- the images at the IMAGE PATHs (``Overall/``, ``Details/``, ``Exposure/``). The release says each folder holds
  the images "of the corresponding regions of interest": ``Details/`` and ``Exposure/`` entries are what the
  experts judged for those attributes.

The three attributes join on IMAGE (outer join: an image scored for one attribute only keeps NaN for the
others). ``path`` is the first of its Overall, Details, Exposure paths found on disk. ``std_<a>`` = JOD STD,
``n_<a>`` = TOTAL COMPARISONS (pairwise comparisons, not raters). JOD scores are per-scene scales
(``meta.scale_per_scene``): compare within a scene only. Their native range is not bounded; unless ``mos_range``
is given the declared range is [floor(min JOD), ceil(max JOD)] over all attributes (recorded in dataset.json),
which fixes the [0, 1] normalisation models train in.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.data.adapters.base import (
    RANGE_HINT,
    DatasetCard,
    Layout,
    find_layout,
    first_existing,
    inspect_images,
    publish_release,
    read_table,
    relative_image_path,
)
from iqalab.data.schema import DataError, Dataset, check_range, check_unique, numeric, require_columns, where
from iqalab.data.splits import cross_dataset_splits, mapped_split, piq23_scene_split

log = logging.getLogger(__name__)

ATTRIBUTES = ("overall", "details", "exposure")
SCORE_FILES = {a: f"Scores/Scores_{a.capitalize()}.csv" for a in ATTRIBUTES}
SCENE_SPLIT = "Test split/Scene Split.csv"
DEVICE_SPLIT = "Test split/Device Split.csv"
METADATA = "Metadata/Image Metadata.csv"
SCORE_COLUMNS = ("IMAGE PATH", "IMAGE", "JOD", "JOD STD", "SCENE", "CONDITION")
IMAGE_DIRS = ("Overall", "Details", "Exposure")
#: The repository's layout, then the image download's (score files at the top, splits copied in).
LAYOUTS = (
    Layout("GitHub repository (Scores/, Test split/)",
           {**{f"scores_{a}": (f,) for a, f in SCORE_FILES.items()}, "scene_split": (SCENE_SPLIT,)},
           {"device_split": (DEVICE_SPLIT,), "metadata": (METADATA,)}, image_dirs=IMAGE_DIRS),
    Layout("image download (Scores_*.csv at the top)",
           {**{f"scores_{a}": (f.split("/", 1)[1],) for a, f in SCORE_FILES.items()},
            "scene_split": (SCENE_SPLIT, SCENE_SPLIT.split("/", 1)[1])},
           {"device_split": (DEVICE_SPLIT, DEVICE_SPLIT.split("/", 1)[1]),
            "metadata": (METADATA, METADATA.split("/", 1)[1])}, image_dirs=IMAGE_DIRS),
)

CARD = DatasetCard(
    name="piq23",
    title="PIQ23",
    attributes=ATTRIBUTES,
    mos_range=(-10.0, 10.0),  # placeholder; the adapter derives the range from the data (see module doc)
    url="https://github.com/DXOMARK-Research/PIQ2023 (images: https://corp.dxomark.com/data-base-piq23/)",
    licence="non-commercial research only, PIQ23 terms and conditions",
    citation="N. Chahine, A.-S. Calarasanu, D. Garcia-Civiero, T. Cayla, S. Ferradans, J. Ponce. An image "
             "quality assessment dataset for portraits. CVPR 2023.",
    layout=tuple(f"{f} (IMAGE PATH, JOD, JOD STD, ..., IMAGE, SCENE, CONDITION; or at the top level as in the "
                 "image download)" for f in SCORE_FILES.values())
    + (SCENE_SPLIT + " (SCENE, SPLIT; the image download has none: copy Test split/ from the GitHub repository)",
       DEVICE_SPLIT + " (IMAGE, SPLIT; optional)", METADATA + " (optional)", "Overall/, Details/, Exposure/ with the images named in IMAGE PATH"),
)


def _scores(raw_root: Path, attr: str, rel: str) -> pd.DataFrame:
    table = read_table(raw_root / rel)
    require_columns(table, rel, SCORE_COLUMNS)
    names = [str(v).strip() for v in table["IMAGE"]]
    check_unique(names, rel, "IMAGE")
    paths = [relative_image_path(v, rel, i, "IMAGE PATH") for i, v in enumerate(table["IMAGE PATH"])]
    jod = numeric(table, rel, "JOD")
    std = numeric(table, rel, "JOD STD", allow_missing=True)
    count = numeric(table, rel, "TOTAL COMPARISONS", allow_missing=True) if "TOTAL COMPARISONS" in table \
        else np.full(len(names), np.nan)
    return pd.DataFrame({
        "image_id": names, f"path_{attr}": paths, f"scene_{attr}": table["SCENE"].astype(str).str.strip(),
        f"condition_{attr}": table["CONDITION"].astype(str).str.strip(), f"mos_{attr}": jod,
        f"std_{attr}": std, f"n_{attr}": count, f"row_{attr}": np.arange(len(names)),
    })


def adapt(raw_root: Path, out_root: Path, *, val_scenes: int = 0, device_split: bool = True, seed: int = 0,
          cross: bool = True, mos_range: tuple[float, float] | None = None, link: str = "hardlink",
          verify: bool = True, workers: int = 4, dataset_name: str | None = None) -> Dataset:
    """Turn ``raw_root`` (PIQ23 as published) into a canonical dataset at ``out_root``.

    Splits: ``scene`` (official 35/15 scenes; ``val_scenes`` training scenes moved to val), ``device`` (the
    official device split, if its file is present and ``device_split``), ``full_train``/``full_test``.
    """
    found = find_layout(CARD, raw_root, LAYOUTS)
    raw_root = found.root
    score_files = {a: found[f"scores_{a}"] for a in ATTRIBUTES}
    merged: pd.DataFrame | None = None
    order: dict[str, None] = {}  # images in file order: Overall's, then any only in Details, then Exposure
    for attr in ATTRIBUTES:
        part = _scores(raw_root, attr, score_files[attr])
        order.update(dict.fromkeys(part["image_id"]))
        merged = part if merged is None else merged.merge(part, on="image_id", how="outer")
    assert merged is not None
    merged = merged.set_index("image_id").loc[list(order)].reset_index()
    # scene and condition must agree across the three files
    scene = merged[[f"scene_{a}" for a in ATTRIBUTES]].bfill(axis=1).iloc[:, 0]
    condition = merged[[f"condition_{a}" for a in ATTRIBUTES]].bfill(axis=1).iloc[:, 0]
    for attr in ATTRIBUTES:
        clash = merged[f"scene_{attr}"].notna() & (merged[f"scene_{attr}"] != scene)
        if clash.any():
            i = int(np.flatnonzero(clash.to_numpy())[0])
            row = int(merged[f"row_{attr}"].iloc[i])
            raise DataError(f"{where(score_files[attr], row, 'SCENE')}: scene {merged[f'scene_{attr}'].iloc[i]!r} "
                            f"of image {merged['image_id'].iloc[i]!r} differs from {scene.iloc[i]!r} in another "
                            "score file")
    if mos_range is None:
        jods = merged[[f"mos_{a}" for a in ATTRIBUTES]].to_numpy(dtype=float)
        scale = (float(math.floor(np.nanmin(jods))), float(math.ceil(np.nanmax(jods))))
        if scale[0] == scale[1]:
            scale = (scale[0] - 1.0, scale[1] + 1.0)
    else:
        scale = (float(mos_range[0]), float(mos_range[1]))
        for attr in ATTRIBUTES:
            present = merged[f"row_{attr}"].notna().to_numpy()
            check_range(merged[f"mos_{attr}"].to_numpy()[present], score_files[attr], "JOD", scale,
                        rows=merged[f"row_{attr}"].to_numpy()[present].astype(int), hint=RANGE_HINT)
    raw_paths, sources, rows = [], [], []
    moved: list[tuple[str, str]] = []  # (listed first, read instead): the file listed first is not on disk
    for i in range(len(merged)):
        candidates = [merged[f"path_{a}"].iloc[i] for a in ATTRIBUTES if isinstance(merged[f"path_{a}"].iloc[i], str)]
        first_attr = next(a for a in ATTRIBUTES if isinstance(merged[f"path_{a}"].iloc[i], str))
        chosen = first_existing(raw_root, candidates) or candidates[0]
        if chosen != candidates[0] and (raw_root / chosen).is_file():
            moved.append((candidates[0], chosen))
        raw_paths.append(chosen)
        sources.append(score_files[first_attr])
        rows.append(int(merged[f"row_{first_attr}"].iloc[i]))
    if moved:  # not silent: every model reads that image's region file as the whole image
        log.warning("PIQ23: %d image(s) listed first at a file that is not on disk are read from another "
                    "attribute's file (a region of interest, not the full frame), e.g. %s -> %s; the dataset "
                    "card records them (path_substituted)", len(moved), *moved[0])
    missing = [k for k, p in enumerate(raw_paths) if not (raw_root / p).is_file()]
    if missing:
        k = missing[0]
        raise DataError(f"{where(sources[k], rows[k], 'IMAGE PATH')}: image listed but not found: "
                        f"{raw_root / raw_paths[k]}")
    widths, heights = inspect_images(raw_root, raw_paths, "Scores_*.csv", rows=rows, verify=verify,
                                     workers=workers)
    columns: dict[str, Any] = {"image_id": merged["image_id"], "raw_path": raw_paths, "scene": scene,
                               "condition": condition, "width": widths, "height": heights}
    for attr in ATTRIBUTES:
        for prefix in ("mos", "std", "n"):
            columns[f"{prefix}_{attr}"] = merged[f"{prefix}_{attr}"].to_numpy(dtype=float)
    images = pd.DataFrame(columns)
    read = list(score_files.values()) + [found["scene_split"]]
    metadata = found.get("metadata")
    if metadata:
        meta_table = read_table(raw_root / metadata)
        require_columns(meta_table, metadata, ["Image", "Device"])
        device_of = dict(zip(meta_table["Image"].astype(str).str.strip(), meta_table["Device"].astype(str)))
        images["device"] = [device_of.get(i) for i in images["image_id"]]
        read.append(metadata)
    splits = [_scene_split(raw_root, found["scene_split"], images, val_scenes, seed)]
    device_file = found.get("device_split")
    if device_split and device_file:
        table = read_table(raw_root / device_file)
        require_columns(table, device_file, ["IMAGE", "SPLIT"])
        role_of = dict(zip(table["IMAGE"].astype(str).str.strip(), table["SPLIT"].astype(str)))
        try:
            splits.append(mapped_split(images, role_of, name="device"))
        except (KeyError, ValueError) as exc:
            raise DataError(f"{device_file}: {exc.args[0]}") from exc
        read.append(device_file)
    elif device_split:
        log.warning("PIQ23: %s not found; no device split", raw_root / DEVICE_SPLIT)
    if cross:
        splits.append(cross_dataset_splits(images, seed=seed))
    range_source = "given" if mos_range is not None else "floor/ceil of the JOD scores"
    substituted = {"path_substituted": {listed: used for listed, used in moved}} if moved else {}
    return publish_release(CARD, found, out_root, images, pd.concat(splits, ignore_index=True), scale,
                           dataset_name, read, link=link, scale_per_scene=True, mos_range_source=range_source,
                           scene_level_splits=["scene"], **substituted)


def _scene_split(raw_root: Path, rel: str, images: pd.DataFrame, val_scenes: int, seed: int) -> pd.DataFrame:
    table = read_table(raw_root / rel)
    require_columns(table, rel, ["SCENE", "SPLIT"])
    scenes = [str(s).strip() for s in table["SCENE"]]
    check_unique(scenes, rel, "SCENE")
    role_of = dict(zip(scenes, table["SPLIT"].astype(str)))
    try:
        return piq23_scene_split(images, role_of, val_scenes=val_scenes, seed=seed)
    except (KeyError, ValueError) as exc:
        raise DataError(f"{rel}: {exc.args[0]}") from exc
