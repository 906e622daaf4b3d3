"""CGFIQA-40K (balanced generic face image quality) adapter, with its official split.

W.-T. Chen, G. Krishnan, Q. Gao, S.-Y. Kuo, S. Ma, J. Wang, "DSL-FIQA: Assessing facial image quality via
dual-set degradation learning and landmark-guided transformer", CVPR 2024. SFIQA (seed 003, Sec. V-A, Tables
III, IV) uses "the official training, validation, and test split".

Published (https://github.com/DSL-FIQA/DSL-FIQA) as ``{train,val,test}/img/*.png`` with one
``{train,val,test}/label.json`` per part: ``{"Image": [file names], "MOS": [scores]}`` (MOS in [0, 1]). A single
``label.json`` at the top holding ``{"train": {...}, "val": {...}, "test": {...}}`` in the same shape is also
read. ``image_id`` is ``<part>/<file name>``, so equal file names in two parts do not collide. Rows in error
messages are list positions counted from 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.data.adapters.base import (
    RANGE_HINT,
    DatasetCard,
    FoundLayout,
    Layout,
    inspect_images,
    open_layout,
    overall_images,
    publish_release,
    relative_image_path,
)
from iqalab.data.schema import DataError, Dataset, check_range, check_unique, where
from iqalab.data.splits import cross_dataset_splits

PARTS = ("train", "val", "test")
LABEL = "label.json"
#: The repository's per-part label files, or one top-level label file holding the three parts.
LAYOUTS = (
    Layout("per-part label.json", {f"label_{p}": (f"{p}/{LABEL}",) for p in PARTS},
           image_dirs=tuple(f"{p}/img" for p in PARTS)),
    Layout("one label.json with train/val/test", {"label": (LABEL,)}, image_dirs=tuple(f"{p}/img" for p in PARTS)),
)

CARD = DatasetCard(
    name="cgfiqa",
    title="CGFIQA-40K",
    attributes=("overall",),
    mos_range=(0.0, 1.0),
    url="https://github.com/DSL-FIQA/DSL-FIQA",
    licence="research use, see the repository",
    citation="W.-T. Chen, G. Krishnan, Q. Gao, S.-Y. Kuo, S. Ma, J. Wang. DSL-FIQA: Assessing facial image "
             "quality via dual-set degradation learning and landmark-guided transformer. CVPR 2024.",
    layout=tuple(f"{p}/{LABEL} ({{\"Image\": [...], \"MOS\": [...]}}) and {p}/img/*.png" for p in PARTS),
)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as JSON ({exc})") from exc


def _labels(found: FoundLayout) -> dict[str, tuple[str, dict[str, Any]]]:
    """part -> (label file relative path, {"Image": [...], "MOS": [...]})."""
    if found.get("label") is None:
        return {p: (found[f"label_{p}"], _load_json(found.root / found[f"label_{p}"])) for p in PARTS}
    content = _load_json(found.root / LABEL)
    if not (isinstance(content, dict) and all(p in content for p in PARTS)):
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise DataError(f"{found.root / LABEL}: expected the parts {list(PARTS)} as keys (found {keys}), or one "
                        f"{LABEL} per part in {', '.join(p + '/' for p in PARTS)}")
    return {p: (f"{LABEL}[{p}]", content[p]) for p in PARTS}


def adapt(raw_root: Path, out_root: Path, *, seed: int = 0, cross: bool = True,
          mos_range: tuple[float, float] | None = None, link: str = "hardlink", verify: bool = True,
          workers: int = 4, dataset_name: str | None = None) -> Dataset:
    """Turn ``raw_root`` (CGFIQA-40K as published) into a canonical dataset at ``out_root``."""
    found, scale = open_layout(CARD, raw_root, LAYOUTS, mos_range)
    raw_root = found.root
    ids: list[str] = []
    raw_paths: list[str] = []
    mos: list[float] = []
    roles: list[str] = []
    sources: list[str] = []
    rows: list[int] = []
    for part, (source, content) in _labels(found).items():
        if not isinstance(content, dict) or "Image" not in content or "MOS" not in content:
            keys = sorted(content) if isinstance(content, dict) else type(content).__name__
            raise DataError(f"{where(source, column='Image')}: expected keys 'Image' and 'MOS' (found {keys})")
        names, scores = list(content["Image"]), list(content["MOS"])
        if len(names) != len(scores):
            raise DataError(f"{source}: {len(names)} images but {len(scores)} MOS values")
        values = np.array([_score(s, source, i) for i, s in enumerate(scores)], dtype=float)
        check_range(values, source, "MOS", scale, line_offset=None, hint=RANGE_HINT)
        clean = [relative_image_path(n, source, i, "Image") for i, n in enumerate(names)]
        check_unique(clean, source, "Image", line_offset=None)
        ids += [f"{part}/{n}" for n in clean]
        raw_paths += [f"{part}/img/{n}" for n in clean]
        mos += values.tolist()
        roles += [part] * len(clean)
        sources += [source] * len(clean)
        rows += list(range(len(clean)))
    widths, heights = _inspect_by_source(raw_root, raw_paths, sources, rows, verify, workers)
    images = overall_images(ids, raw_paths, widths, heights, mos)
    splits = [pd.DataFrame({"image_id": ids, "split": "official", "role": roles})]
    if cross:
        splits.append(cross_dataset_splits(images, seed=seed))
    label_files = [found[f"label_{p}"] for p in PARTS] if found.get("label") is None else [LABEL]
    return publish_release(CARD, found, out_root, images, pd.concat(splits, ignore_index=True), scale,
                           dataset_name, label_files, link=link)


def _score(value: Any, source: str, row: int) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where(source, row, 'MOS', None)}: expected a number, got {value!r}") from None
    if not np.isfinite(score):
        raise DataError(f"{where(source, row, 'MOS', None)}: missing or infinite MOS")
    return score


def _inspect_by_source(raw_root: Path, raw_paths: list[str], sources: list[str], rows: list[int], verify: bool,
                       workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Check the images label file by label file, so an error names the file and position that listed it."""
    widths, heights = np.zeros(len(raw_paths), np.int64), np.zeros(len(raw_paths), np.int64)
    for source in dict.fromkeys(sources):
        idx = [i for i, s in enumerate(sources) if s == source]
        w, h = inspect_images(raw_root, [raw_paths[i] for i in idx], source, rows=[rows[i] for i in idx],
                              verify=verify, workers=workers, line_offset=None)
        widths[idx], heights[idx] = w, h
    return widths, heights
