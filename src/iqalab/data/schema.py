"""The canonical tables every adapter and the simulator produce (the contract ``docs/datasets.md`` refers to).

A dataset folder holds::

    images.parquet   image_id, path, scene, condition, width, height, mos_<a>, std_<a>, n_<a>, cam_<p>,
                     optional person_/face_ boxes and lm<k>_x/y landmarks (normalised 0-1 image coordinates)
    pairs.parquet    image_a, image_b, attribute, p, source, fine          (optional)
    ratings.parquet  image_id, rater, attribute, score                     (optional)
    splits.parquet   image_id, split, role
    dataset.json     name, attributes, mos_range, source, licence, citation, row counts, sha256 of each table

:func:`write_dataset` validates before it writes and writes ``dataset.json`` last, atomically, so a folder
without a matching ``dataset.json`` is known to be partial. :func:`read_dataset` validates again and checks the
table checksums. Every error is a :class:`DataError` naming the file, the row and the column.

The checking functions here (:func:`where`, :func:`require_columns`, :func:`require_not_null`, :func:`numeric`,
:func:`check_range`, :func:`check_unique`) are the package's one table-validation toolkit: the adapters check the
raw annotation files of each benchmark with them too. Why not pandera: most checks here span tables or read
their bounds from ``dataset.json`` (ids known to the images table, scene-level split leakage, checksums, MOS
range), raw releases need per-file coercion, and every message must name file, row and, for text tables, the
editor line; pandera would cover the per-column third of it behind an extra dependency whose failure reports
would still have to be translated into these messages.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.io import sha256_file, write_json, write_parquet

log = logging.getLogger(__name__)

#: The seven camera parameters of TuningIQA (Sec. "FGLive-10K"), in GCPF node order.
CAM_PARAMS: tuple[str, ...] = ("aperture", "shutter", "iso", "wb", "contrast", "saturation", "sharpness")
CAM_COLUMNS: tuple[str, ...] = tuple(f"cam_{p}" for p in CAM_PARAMS)
#: Camera tuning's step of one lattice move per parameter (:mod:`iqalab.analysis.tuning`, which names it
#: ``DEFAULT_STEPS`` and explains the units); here so that the params' defaults need not import the tuning code
DEFAULT_TUNING_STEPS: dict[str, float] = {"aperture": 0.25, "shutter": 0.5, "iso": 0.5, "wb": 400.0, "contrast": 0.15,
                                          "saturation": 0.2, "sharpness": 0.5}
PERSON_BOX = ("person_x0", "person_y0", "person_x1", "person_y1")
FACE_BOX = ("face_x0", "face_y0", "face_x1", "face_y1")
LANDMARKS = tuple(f"lm{k}_{c}" for k in range(5) for c in ("x", "y"))
#: ``results/predictions/<experiment>.parquet``, long (one row per image, attribute and split): ``pred`` in
#: dataset units, ``raw`` the model's published score in its own units (NIQE, BRISQUE; NaN for models without one)
PREDICTION_COLUMNS = ["image_id", "attribute", "pred", "mos", "split", "role", "scene", "model", "dataset",
                      "experiment", "raw"]
ROLES = ("train", "val", "test")
TABLES = ("images", "pairs", "ratings", "splits")
PAIR_SOURCES = ("mos", "refined")


class DataError(ValueError):
    """A dataset violates the canonical contract; the message names file, row and column."""


#: Files whose rows an editor shows as lines (header on line 1): errors name that line as well as the row.
TEXT_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".xls")


def where(file: str | Path, row: int | None = None, column: str | None = None,
          line_offset: int | None | str = "auto", unit: str = "row") -> str:
    """The location part of an error: ``file row i (line i+offset) column 'c'``.

    ``row`` counts data rows from 0 (the pandas index). ``line`` is the line a spreadsheet or text editor shows:
    with ``line_offset="auto"`` it is given for text and spreadsheet tables (header on line 1, so offset 2) and
    left out for parquet, JSON and MATLAB files; an int or ``None`` decides explicitly. ``unit`` names the
    position otherwise (``"entry"``: a MATLAB array's 1-based entry number, passed as ``row``).
    """
    text = str(file)
    if line_offset == "auto":
        line_offset = 2 if Path(text).suffix.lower() in TEXT_TABLE_SUFFIXES else None
    if row is not None:
        text += f" {unit} {row}"
        if line_offset is not None:
            text += f" (line {row + int(line_offset)})"
    if column is not None:
        text += f" column '{column}'"
    return text


@dataclass
class Dataset:
    """A dataset in canonical form, as read from (or about to be written to) ``root``."""

    root: Path
    meta: dict[str, Any]
    images: pd.DataFrame
    splits: pd.DataFrame
    pairs: pd.DataFrame | None = None
    ratings: pd.DataFrame | None = None
    _scene_index: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def attributes(self) -> list[str]:
        return list(self.meta["attributes"])

    @property
    def mos_range(self) -> tuple[float, float]:
        lo, hi = self.meta["mos_range"]
        return float(lo), float(hi)

    @property
    def scenes(self) -> list[str]:
        return sorted(self.images["scene"].astype(str).unique())

    def image_path(self, image_id_or_path: str) -> Path:
        """Absolute path of an image given its relative ``path`` value."""
        return self.root / image_id_or_path

    def only_attribute(self, attribute: str) -> Dataset:
        """The same dataset with one attribute: ``attributes`` is ``[attribute]`` and the pairs and ratings of other
        attributes are left out; images, splits and files are shared. A model built on it has one head and its
        loaders read that attribute's MOS only (``train.separate_attributes``: one model per attribute, PIQ23's
        protocol, FHIQA seed 001 Sec. IV-D)."""
        if attribute not in self.attributes:
            raise DataError(f"{where('dataset.json', column='attributes')}: dataset {self.name!r} has no attribute "
                            f"{attribute!r}; attributes: {self.attributes}")

        def keep(frame: pd.DataFrame | None) -> pd.DataFrame | None:
            return None if frame is None else frame[frame["attribute"] == attribute].reset_index(drop=True)

        return replace(self, meta={**self.meta, "attributes": [attribute]}, pairs=keep(self.pairs),
                       ratings=keep(self.ratings))

    def split_ids(self, split: str, role: str) -> list[str]:
        """Image ids with ``role`` in ``split`` (in images-table order, for determinism)."""
        sel = self.splits[(self.splits["split"] == split) & (self.splits["role"] == role)]
        if sel.empty and split not in set(self.splits["split"]):
            raise DataError(
                f"{where('splits.parquet', column='split')}: no split named '{split}' in dataset "
                f"'{self.name}'; available: {sorted(self.splits['split'].unique())}"
            )
        wanted = set(sel["image_id"])
        return [i for i in self.images["image_id"] if i in wanted]


# --------------------------------------------------------------------------------------------- validation
# The one table-checking toolkit: the canonical tables below and every adapter's raw annotation files
# (:mod:`iqalab.data.adapters`) are checked with these functions; each error names file, row and column.
def _first_bad(mask: pd.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def require_columns(frame: pd.DataFrame, file: str | Path, columns: Sequence[str]) -> None:
    """Every name in ``columns`` must be a column of ``frame`` (the error lists what is there)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where(file, column=missing[0])}: required column missing (missing: {missing}; "
            f"present: {list(frame.columns)})"
        )


def require_not_null(frame: pd.DataFrame, file: str | Path, columns: Sequence[str],
                     line_offset: int | None | str = "auto") -> None:
    """No missing value (blank, NaN or None) in ``columns``."""
    for col in columns:
        bad = frame[col].isna().to_numpy()
        if bad.any():
            raise DataError(f"{where(file, _first_bad(bad), col, line_offset)}: missing value (NaN/None) not allowed")


def numeric(frame: pd.DataFrame, file: str | Path, column: str, allow_missing: bool = False, coerce: bool = True,
            line_offset: int | None | str = "auto") -> np.ndarray:
    """Column ``column`` as float64; a value that is not a number raises naming its row, and so do a missing
    value (unless ``allow_missing``) and an infinite one.

    ``coerce`` accepts numbers written as text (a raw CSV or spreadsheet cell); a canonical table passes
    ``coerce=False`` so that a column stored as text is refused rather than read back as strings later.
    """
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) & raw.notna().to_numpy()
    if bad.any():
        row = _first_bad(bad)
        raise DataError(f"{where(file, row, column, line_offset)}: expected a number, got {raw.iloc[row]!r}")
    if not coerce and not pd.api.types.is_numeric_dtype(raw):
        row = _first_bad(raw.notna()) if raw.notna().any() else 0
        raise DataError(f"{where(file, row, column, line_offset)}: expected numbers, got {raw.iloc[row]!r} "
                        f"(a column of {raw.dtype} values)")
    if not allow_missing and np.isnan(values).any():
        raise DataError(f"{where(file, _first_bad(np.isnan(values)), column, line_offset)}: "
                        "missing value (NaN/None) not allowed")
    if np.isinf(values).any():
        raise DataError(f"{where(file, _first_bad(np.isinf(values)), column, line_offset)}: "
                        "infinite value not allowed")
    return values


def check_range(values: np.ndarray | Sequence[float], file: str | Path, column: str, bounds: Sequence[float],
                rows: Sequence[int] | None = None, line_offset: int | None | str = "auto", what: str = "MOS range",
                hint: str = "", unit: str = "row") -> None:
    """Every present value must lie in the closed interval ``bounds``; the error names the first offending row
    (``rows[i]`` when the values were taken from a subset of the file's rows; ``unit`` as :func:`where`) and
    ends with ``hint``."""
    lo, hi = float(bounds[0]), float(bounds[1])
    values = np.asarray(values, dtype=float)
    bad = ~np.isnan(values) & ((values < lo - 1e-9) | (values > hi + 1e-9))
    if bad.any():
        i = _first_bad(bad)
        row = int(rows[i]) if rows is not None else i
        raise DataError(f"{where(file, row, column, line_offset, unit)}: {values[i]:g} outside the {what} "
                        f"[{lo:g}, {hi:g}]" + (f" ({hint})" if hint else ""))


def check_unique(values: Sequence[Any], file: str | Path, column: str, rows: Sequence[int] | None = None,
                 line_offset: int | None | str = "auto", what: str = "name", unit: str = "row") -> None:
    """No value may repeat; the error names the repeat's row and the row that listed it first (``unit`` as
    :func:`where`)."""
    first: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in first:
            row = int(rows[i]) if rows is not None else i
            prev = int(rows[first[value]]) if rows is not None else first[value]
            raise DataError(f"{where(file, row, column, line_offset, unit)}: duplicate {what} {value!r} "
                            f"(first listed at {unit} {prev})")
        first[value] = i


def safe_relative_path(root: Path, rel: str, file: str = "images.parquet", row: int | None = None) -> Path:
    """Resolve ``rel`` inside ``root``; refuse absolute paths, ``..`` and symlinks that escape the root."""
    candidate = Path(str(rel))
    if candidate.is_absolute() or ".." in candidate.parts:
        raise DataError(f"{where(file, row, 'path')}: path {rel!r} escapes the dataset root {root}")
    full = (root / candidate).resolve()
    root_resolved = root.resolve()
    if root_resolved != full and root_resolved not in full.parents:
        raise DataError(f"{where(file, row, 'path')}: path {rel!r} resolves outside the dataset root {root}")
    return full


def validate_images(images: pd.DataFrame, meta: dict[str, Any], root: Path | None = None,
                    check_files: bool = False) -> None:
    """Check ``images.parquet`` against the contract (and, with ``check_files``, that every file exists)."""
    file = "images.parquet"
    attrs = list(meta["attributes"])
    lo, hi = (float(v) for v in meta["mos_range"])
    base = ["image_id", "path", "scene", "width", "height"]
    mos_cols = [f"mos_{a}" for a in attrs]
    require_columns(images, file, base + ["condition"] + mos_cols + list(CAM_COLUMNS))
    require_not_null(images, file, base)
    check_unique(images["image_id"].tolist(), file, "image_id", what="image id")
    numeric_cols = ["width", "height", *mos_cols, *CAM_COLUMNS]
    numeric_cols += [c for a in attrs for c in (f"std_{a}", f"n_{a}") if c in images.columns]
    numeric_cols += [c for c in (*PERSON_BOX, *FACE_BOX, *LANDMARKS) if c in images.columns]
    for col in numeric_cols:
        numeric(images, file, col, allow_missing=True, coerce=False)
    for col in ("width", "height"):
        bad = (images[col] <= 0).to_numpy()
        if bad.any():
            raise DataError(f"{where(file, _first_bad(bad), col)}: image size must be positive")
    for col in mos_cols:
        values = images[col].to_numpy(dtype=float)
        if np.isnan(values).all():
            raise DataError(f"{where(file, column=col)}: attribute has no score at all")
        check_range(values, file, col, (lo, hi), hint="declared in dataset.json")
    for col in (*PERSON_BOX, *FACE_BOX, *LANDMARKS):
        if col in images.columns:
            values = images[col].to_numpy(dtype=float)
            bad = ~np.isnan(values) & ((values < -1e-6) | (values > 1 + 1e-6))
            if bad.any():
                raise DataError(f"{where(file, _first_bad(bad), col)}: normalised coordinate outside [0, 1]")
    if root is not None:
        for row, rel in enumerate(images["path"].astype(str)):
            full = safe_relative_path(root, rel, file, row)
            if check_files and not full.is_file():
                raise DataError(f"{where(file, row, 'path')}: image file not found: {full}")


def validate_splits(splits: pd.DataFrame, images: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Check ``splits.parquet``: known ids and roles, one role per image per split, scene-level disjointness."""
    file = "splits.parquet"
    require_columns(splits, file, ["image_id", "split", "role"])
    require_not_null(splits, file, ["image_id", "split", "role"])
    known = set(images["image_id"])
    unknown = ~splits["image_id"].isin(known).to_numpy()
    if unknown.any():
        row = _first_bad(unknown)
        raise DataError(f"{where(file, row, 'image_id')}: unknown image id {splits['image_id'].iloc[row]!r}")
    bad_role = ~splits["role"].isin(ROLES).to_numpy()
    if bad_role.any():
        row = _first_bad(bad_role)
        raise DataError(f"{where(file, row, 'role')}: role {splits['role'].iloc[row]!r} not one of {ROLES}")
    dup = splits.duplicated(["image_id", "split"]).to_numpy()
    if dup.any():
        row = _first_bad(dup)
        raise DataError(f"{where(file, row, 'image_id')}: image listed twice in split {splits['split'].iloc[row]!r}")
    scene_level = set(meta.get("scene_level_splits", []))
    scene_of = images.set_index("image_id")["scene"]
    for split in sorted(set(splits["split"])):
        if not (split in scene_level or split.startswith("scene")):
            continue
        part = splits[splits["split"] == split]
        scenes = part.assign(scene=part["image_id"].map(scene_of))
        roles_per_scene = scenes.groupby("scene")["role"].nunique()
        leaking = roles_per_scene[roles_per_scene > 1]
        if len(leaking):
            scene = leaking.index[0]
            row = int(np.flatnonzero((scenes["scene"] == scene).to_numpy())[0])
            row = int(part.index[row]) if isinstance(part.index[row], (int, np.integer)) else row
            raise DataError(
                f"{where(file, row, 'role')}: scene {scene!r} appears in more than one role of the "
                f"scene-level split {split!r}"
            )


def validate_pairs(pairs: pd.DataFrame, images: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Check ``pairs.parquet``: known ids and attributes, ``p`` in [0, 1], known source."""
    file = "pairs.parquet"
    require_columns(pairs, file, ["image_a", "image_b", "attribute", "p", "source", "fine"])
    require_not_null(pairs, file, ["image_a", "image_b", "attribute", "p", "source", "fine"])
    known = set(images["image_id"])
    for col in ("image_a", "image_b"):
        bad = ~pairs[col].isin(known).to_numpy()
        if bad.any():
            row = _first_bad(bad)
            raise DataError(f"{where(file, row, col)}: unknown image id {pairs[col].iloc[row]!r}")
    bad = ~pairs["attribute"].isin(meta["attributes"]).to_numpy()
    if bad.any():
        row = _first_bad(bad)
        raise DataError(f"{where(file, row, 'attribute')}: unknown attribute {pairs['attribute'].iloc[row]!r}")
    check_range(numeric(pairs, file, "p", coerce=False), file, "p", (0.0, 1.0), what="preference probability range")
    bad = ~pairs["source"].isin(PAIR_SOURCES).to_numpy()
    if bad.any():
        raise DataError(f"{where(file, _first_bad(bad), 'source')}: source not one of {PAIR_SOURCES}")


def validate_ratings(ratings: pd.DataFrame, images: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Check ``ratings.parquet`` (long format votes)."""
    file = "ratings.parquet"
    require_columns(ratings, file, ["image_id", "rater", "attribute", "score"])
    require_not_null(ratings, file, ["image_id", "rater", "attribute", "score"])
    bad = ~ratings["image_id"].isin(set(images["image_id"])).to_numpy()
    if bad.any():
        row = _first_bad(bad)
        raise DataError(f"{where(file, row, 'image_id')}: unknown image id {ratings['image_id'].iloc[row]!r}")
    bad = ~ratings["attribute"].isin(meta["attributes"]).to_numpy()
    if bad.any():
        raise DataError(f"{where(file, _first_bad(bad), 'attribute')}: unknown attribute")
    numeric(ratings, file, "score", coerce=False)


def validate_meta(meta: dict[str, Any]) -> None:
    """Check ``dataset.json``'s required keys and their types (a hand-edited file fails here, not later)."""
    if not isinstance(meta, dict):
        raise DataError(f"dataset.json: expected a JSON object, got {type(meta).__name__}")
    for key in ("name", "attributes", "mos_range", "source"):
        if key not in meta:
            raise DataError(f"{where('dataset.json', column=key)}: required key missing")
    bounds = meta["mos_range"]
    if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in bounds)):
        raise DataError(f"{where('dataset.json', column='mos_range')}: expected [low, high] numbers, got {bounds!r}")
    lo, hi = bounds
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DataError(f"{where('dataset.json', column='mos_range')}: invalid range {meta['mos_range']}")
    attrs = meta["attributes"]
    if not isinstance(attrs, (list, tuple)) or not all(isinstance(a, str) and a for a in attrs):
        raise DataError(f"{where('dataset.json', column='attributes')}: expected a list of names, got {attrs!r}")
    if not attrs:
        raise DataError(f"{where('dataset.json', column='attributes')}: empty attribute list")
    if len(set(attrs)) != len(attrs):
        raise DataError(f"{where('dataset.json', column='attributes')}: duplicate attribute in {attrs}")
    for key in ("checksums", "counts"):
        if not isinstance(meta.get(key, {}), dict):
            raise DataError(f"{where('dataset.json', column=key)}: expected a JSON object, got {meta[key]!r}")


def validate(ds: Dataset, check_files: bool = False) -> None:
    """Validate every table of ``ds`` against the contract."""
    validate_meta(ds.meta)
    validate_images(ds.images, ds.meta, ds.root, check_files=check_files)
    validate_splits(ds.splits, ds.images, ds.meta)
    if ds.pairs is not None:
        validate_pairs(ds.pairs, ds.images, ds.meta)
    if ds.ratings is not None:
        validate_ratings(ds.ratings, ds.images, ds.meta)


# --------------------------------------------------------------------------------------------- read/write
def complete_images_table(images: pd.DataFrame, attributes: list[str]) -> pd.DataFrame:
    """Add the nullable columns a producer may leave out (condition, cam_*, std_/n_) as NaN/None."""
    images = images.copy()
    if "condition" not in images.columns:
        images["condition"] = None
    for col in CAM_COLUMNS:
        if col not in images.columns:
            images[col] = np.nan
    for a in attributes:
        for prefix in ("std", "n"):
            if f"{prefix}_{a}" not in images.columns:
                images[f"{prefix}_{a}"] = np.nan
    for col in ("image_id", "scene"):  # ids as text; missing stays missing so the validator names the row
        images[col] = images[col].where(images[col].isna(), images[col].astype(str))
    return images


def write_dataset(ds: Dataset, check_files: bool = True) -> Path:
    """Validate and write ``ds`` to ``ds.root``: tables first, ``dataset.json`` (with checksums) last."""
    ds.images = complete_images_table(ds.images, ds.attributes)
    validate(ds, check_files=check_files)
    root = Path(ds.root)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "dataset.json"
    if marker.exists():
        marker.unlink()  # the folder is incomplete until the new marker lands
    checksums: dict[str, str] = {}
    counts: dict[str, int] = {}
    for table in TABLES:
        frame = getattr(ds, table)
        path = root / f"{table}.parquet"
        if frame is None:
            if path.exists():
                path.unlink()
            continue
        write_parquet(path, frame.reset_index(drop=True))
        checksums[f"{table}.parquet"] = sha256_file(path)
        counts[table] = len(frame)
    meta = dict(ds.meta)
    meta["counts"] = counts
    meta["checksums"] = checksums
    meta.setdefault("scene_level_splits", [s for s in ds.splits["split"].unique() if str(s).startswith("scene")])
    write_json(marker, meta)
    ds.meta = meta
    log.info("wrote dataset %s to %s (%d images)", ds.name, root, len(ds.images))
    return root


def read_dataset(root: str | Path, check_files: bool = False, verify_checksums: bool = True) -> Dataset:
    """Read and validate a canonical dataset folder; partial or corrupt folders raise :class:`DataError`."""
    root = Path(root)
    if not root.is_dir():
        # the ingest stage writes build/datasets/<name>: name the command for that dataset
        command = f"iqalab ingest {root.name}" if root.parent.name == "datasets" else "iqalab ingest <dataset>"
        raise DataError(f"dataset folder not found: {root} (run the ingest stage first: {command})")
    marker = root / "dataset.json"
    if not marker.is_file():
        raise DataError(f"{marker}: missing: the dataset folder is incomplete (an interrupted ingest?); rerun ingest")
    try:
        meta = json.loads(marker.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{marker}: not valid JSON ({exc})") from exc
    validate_meta(meta)
    frames: dict[str, pd.DataFrame | None] = {}
    for table in TABLES:
        path = root / f"{table}.parquet"
        expected = meta.get("checksums", {}).get(f"{table}.parquet")
        if not path.exists():
            if table in ("images", "splits") or expected:
                raise DataError(f"{path}: table missing")
            frames[table] = None
            continue
        if verify_checksums and expected and sha256_file(path) != expected:
            raise DataError(f"{path}: checksum does not match dataset.json (corrupt or partially written); rerun ingest")
        try:
            frames[table] = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path}: cannot be read as parquet ({exc})") from exc
    ds = Dataset(root=root, meta=meta, images=frames["images"], splits=frames["splits"],  # type: ignore[arg-type]
                 pairs=frames["pairs"], ratings=frames["ratings"])
    validate(ds, check_files=check_files)
    return ds
