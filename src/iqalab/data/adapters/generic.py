"""Generic CSV/parquet adapter for FGLive-10K- and SFIQA-Bench-style data (not public; shared on request).

TuningIQA (seed 000, Sec. "FGLive-10K"): 5 attributes, 7 camera parameters, scene-level 451/104 split, fine
pairwise preferences. SFIQA (seed 003, Sec. III, V-A): 6 dimensions incl. fidelity, 3 scenarios, 5-fold 7:1:2.
Whoever holds such data writes it as plain tables; no code is needed.

Folder layout (``raw_root``)::

    images.csv | images.parquet     one row per image (required)
    pairs.csv  | pairs.parquet      pairwise preferences (optional)
    votes.csv  | votes.parquet      per-rater scores (optional)
    <any folders holding the images>

``images`` columns:

- ``image`` (required): image file relative to ``raw_root`` (``/`` or ``\\`` separators);
- ``image_id`` (default: ``image``); ``scene`` (default: the image id); ``condition`` (optional: scenario or
  lighting);
- ``mos_<attr>`` for each attribute (at least one; NaN where an image was not scored for it), optional
  ``std_<attr>`` and ``n_<attr>``;
- optional ``cam_<p>`` for p in aperture, shutter, iso, wb, contrast, saturation, sharpness (NaN = unknown);
- optional ``person_x0..person_y1``, ``face_x0..face_y1``, ``lm0_x..lm4_y`` (normalised 0-1 coordinates);
- optional ``split_<name>`` columns: ``train``/``val``/``test`` per image (blank = not in that split); a name
  starting with ``scene`` is checked scene-level (no scene under two roles);
- any other column is carried along unchanged.

``pairs`` columns: ``image_a``, ``image_b`` (image ids), ``attribute``, ``p`` (probability that a is better: 0,
0.5, 1 or a vote fraction), optional ``source`` (``refined`` by default: human pairwise judgements; ``mos`` for
pairs derived from MOS) and ``fine`` (true by default). ``votes`` columns: ``image_id``, ``rater``,
``attribute``, ``score``.

Options: ``mos_range`` (required: the native rating scale), ``attributes`` (default: every ``mos_`` column in
table order), provenance (``title``, ``licence``, ``citation``, ``url``), and the split protocols added when
``protocols`` lists them (default: only the ``split_`` columns, or ``scene`` when there are none):
``scene`` (scene-level, ``test_fraction``/``val_fraction`` of scenes), ``kfold`` (SFIQA 5-fold 7:1:2, whole scenes
per chunk), ``random`` (REQA ``n_splits`` image-level 80/20).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.data.adapters.base import (
    DatasetCard,
    Layout,
    find_layout,
    inspect_images,
    publish_release,
    read_table,
    relative_image_path,
    scores_in_range,
)
from iqalab.data.schema import (
    CAM_COLUMNS,
    FACE_BOX,
    LANDMARKS,
    PERSON_BOX,
    DataError,
    Dataset,
    check_range,
    check_unique,
    numeric,
    require_columns,
    where,
)
from iqalab.data.splits import (
    cross_dataset_splits,
    kfold_splits,
    normalise_role,
    random_splits,
    scene_split,
)

PROTOCOLS = ("scene", "kfold", "random")

CARD = DatasetCard(
    name="generic",
    title="generic dataset",
    attributes=(),
    mos_range=(0.0, 1.0),
    url="its authors (FGLive-10K and SFIQA-Bench are shared on request)",
    licence="as agreed with the data holder",
    citation="",
    layout=("images.csv or images.parquet (image, mos_<attr>..., optional image_id, scene, condition, std_/n_, "
            "cam_*, split_<name>)", "pairs.csv|parquet (optional)", "votes.csv|parquet (optional)",
            "the image files at the paths in column 'image'"),
)


#: The documented tables (parquet preferred over CSV), at ``raw_root`` or in one folder an unzip left there.
LAYOUTS = (Layout("tables", {"images": ("images.parquet", "images.csv")},
                  {"pairs": ("pairs.parquet", "pairs.csv"), "votes": ("votes.parquet", "votes.csv")}),)


def adapt(raw_root: Path, out_root: Path, *, mos_range: Sequence[float] | None = None,
          attributes: Sequence[str] | None = None, protocols: Sequence[str] | None = None,
          test_fraction: float = 0.2, val_fraction: float = 0.1, n_splits: int = 20, n_folds: int = 5,
          seed: int = 0, cross: bool = True, title: str | None = None, licence: str = "unspecified",
          citation: str = "", url: str = "", link: str = "hardlink", verify: bool = True, workers: int = 4,
          dataset_name: str | None = None) -> Dataset:
    """Turn ``raw_root`` (the documented tables + images) into a canonical dataset at ``out_root``."""
    found = find_layout(CARD, raw_root, LAYOUTS)
    raw_root = found.root
    if mos_range is None or len(mos_range) != 2:
        raise DataError("generic adapter: options.mos_range is required (the native rating scale, e.g. [1, 5])")
    scale = (float(mos_range[0]), float(mos_range[1]))
    rel = found["images"]
    table = read_table(raw_root / rel)
    require_columns(table, rel, ["image"])
    raw_paths = [relative_image_path(v, rel, i, "image") for i, v in enumerate(table["image"])]
    ids = [str(v).strip() for v in table["image_id"]] if "image_id" in table else list(raw_paths)
    if "image_id" in table:
        numeric_ids = table["image_id"].isna().to_numpy()
        if numeric_ids.any():
            row = int(np.flatnonzero(numeric_ids)[0])
            raise DataError(f"{where(rel, row, 'image_id')}: value missing")
    check_unique(ids, rel, "image_id" if "image_id" in table else "image")
    attrs = list(attributes) if attributes else [c[4:] for c in table.columns if c.startswith("mos_")]
    if not attrs:
        raise DataError(f"{where(rel, column='mos_<attribute>')}: no mos_<attribute> column "
                        f"(present: {list(table.columns)})")
    require_columns(table, rel, [f"mos_{a}" for a in attrs])
    images = table.drop(columns=["image"] + [c for c in table.columns if c.startswith("split_")]).copy()
    images["image_id"] = ids
    images["raw_path"] = raw_paths
    images["scene"] = table["scene"].astype(str).str.strip() if "scene" in table else ids
    if "condition" not in images:
        images["condition"] = None
    for a in attrs:
        images[f"mos_{a}"] = scores_in_range(table, rel, f"mos_{a}", scale, allow_missing=True)
        for prefix in ("std", "n"):
            if f"{prefix}_{a}" in table:
                images[f"{prefix}_{a}"] = numeric(table, rel, f"{prefix}_{a}", allow_missing=True)
    for col in (*CAM_COLUMNS, *PERSON_BOX, *FACE_BOX, *LANDMARKS):
        if col in table:
            images[col] = numeric(table, rel, col, allow_missing=True)
    widths, heights = inspect_images(raw_root, raw_paths, rel, verify=verify, workers=workers)
    images["width"], images["height"] = widths, heights
    splits = _splits(table, rel, images, protocols, test_fraction, val_fraction, n_splits, n_folds, seed, cross)
    read = [rel]
    pairs = ratings = None
    if (pairs_rel := found.get("pairs")) is not None:
        pairs = _pairs(read_table(raw_root / pairs_rel), pairs_rel, set(ids), attrs)
        read.append(pairs_rel)
    if (votes_rel := found.get("votes")) is not None:
        ratings = _votes(read_table(raw_root / votes_rel), votes_rel, set(ids), attrs)
        read.append(votes_rel)
    name = dataset_name or found.top.name
    card = DatasetCard(name="generic", title=title or name, attributes=tuple(attrs), mos_range=scale, url=url,
                       licence=licence, citation=citation, layout=CARD.layout)
    return publish_release(card, found, out_root, images, splits, scale, name, read, pairs=pairs,
                           ratings=ratings, link=link)


def _splits(table: pd.DataFrame, rel: str, images: pd.DataFrame, protocols: Sequence[str] | None,
            test_fraction: float, val_fraction: float, n_splits: int, n_folds: int, seed: int,
            cross: bool) -> pd.DataFrame:
    frames = []
    for col in (c for c in table.columns if c.startswith("split_")):
        present = table[col].notna() & (table[col].astype(str).str.strip() != "")
        roles = []
        for i in np.flatnonzero(present.to_numpy()):
            try:
                roles.append(normalise_role(table[col].iloc[i]))
            except ValueError as exc:
                raise DataError(f"{where(rel, int(i), col)}: {exc}") from None
        ids = images["image_id"].to_numpy()[present.to_numpy()]
        frames.append(pd.DataFrame({"image_id": ids, "split": col.removeprefix("split_"), "role": roles}))
    wanted = list(protocols) if protocols is not None else ([] if frames else ["scene"])
    unknown = [p for p in wanted if p not in PROTOCOLS]
    if unknown:
        raise DataError(f"generic adapter: unknown protocol {unknown[0]!r}; choose from {PROTOCOLS}")
    n_scenes = images["scene"].nunique()
    for protocol in wanted:
        if protocol == "scene":
            if n_scenes < 2:
                raise DataError(f"{where(rel, column='scene')}: a scene split needs at least 2 scenes")
            frames.append(scene_split(images, test_fraction, val_fraction, seed))
        elif protocol == "kfold":
            frames.append(kfold_splits(images, n_folds=n_folds, seed=seed, by_scene=True))
        else:
            frames.append(random_splits(images, n_splits=n_splits, test_fraction=test_fraction, seed=seed))
    if cross:
        frames.append(cross_dataset_splits(images, seed=seed))
    if not frames:
        raise DataError("generic adapter: no split (no split_ column, protocols empty and cross false)")
    return pd.concat(frames, ignore_index=True)


def _check_ids(frame: pd.DataFrame, rel: str, columns: Sequence[str], known: set[str]) -> None:
    for col in columns:
        values = frame[col].astype(str).str.strip()
        bad = ~values.isin(known).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where(rel, row, col)}: unknown image id {values.iloc[row]!r} (not in the images table)")
        frame[col] = values


def _check_attributes(frame: pd.DataFrame, rel: str, attrs: Sequence[str]) -> None:
    bad = ~frame["attribute"].astype(str).isin(attrs).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where(rel, row, 'attribute')}: unknown attribute {frame['attribute'].iloc[row]!r} "
                        f"(attributes: {list(attrs)})")


def _pairs(frame: pd.DataFrame, rel: str, known: set[str], attrs: Sequence[str]) -> pd.DataFrame:
    require_columns(frame, rel, ["image_a", "image_b", "attribute", "p"])
    out = frame.copy()
    _check_ids(out, rel, ["image_a", "image_b"], known)
    _check_attributes(out, rel, attrs)
    out["p"] = numeric(out, rel, "p")
    check_range(out["p"].to_numpy(), rel, "p", (0.0, 1.0), what="preference probability range")
    out["source"] = out["source"].astype(str).str.strip() if "source" in out else "refined"
    out["fine"] = out["fine"].map(_as_bool) if "fine" in out else True
    if out["fine"].isna().any():
        row = int(np.flatnonzero(out["fine"].isna().to_numpy())[0])
        raise DataError(f"{where(rel, row, 'fine')}: expected true/false, got {frame['fine'].iloc[row]!r}")
    return out[["image_a", "image_b", "attribute", "p", "source", "fine"]].astype({"fine": bool})


def _votes(frame: pd.DataFrame, rel: str, known: set[str], attrs: Sequence[str]) -> pd.DataFrame:
    require_columns(frame, rel, ["image_id", "rater", "attribute", "score"])
    out = frame.copy()
    _check_ids(out, rel, ["image_id"], known)
    _check_attributes(out, rel, attrs)
    out["rater"] = out["rater"].astype(str)
    out["score"] = numeric(out, rel, "score")
    return out[["image_id", "rater", "attribute", "score"]]


def _as_bool(value: Any) -> bool | None:
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "t", "yes", "y"):
        return True
    if text in ("0", "0.0", "false", "f", "no", "n"):
        return False
    return None
