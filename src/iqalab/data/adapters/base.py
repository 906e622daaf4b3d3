"""Shared machinery of the real-dataset adapters: dataset cards, checked reading, image checks, atomic publish.

Every adapter (one module per benchmark) reads ``data/raw/<name>/`` exactly as published and hands the rows to
:func:`publish`, which owns three decisions made once for all of them:

- **Where images live.** The canonical ``path`` column is relative to the output dataset root, so every listed
  image is *hard-linked* into ``<out_root>/images/<path inside the raw folder>`` (no bytes copied, same inode; a
  raw file and its link cannot diverge because nothing writes images). Where a hard link is impossible (another
  file system, a file system without links) the file is copied instead, and ``dataset.json`` records which of
  the two happened (``image_links``). Symbolic links are not used: ``schema.safe_relative_path`` refuses links
  that escape the dataset root, and a link into ``data/`` would.
- **Nothing half-written remains.** Every check (layout, columns, ranges, duplicates, files present, decode)
  runs before anything is written; the dataset is then written into a hidden sibling folder
  ``.<name>.partial-<random>`` and renamed over ``out_root`` only when :func:`iqalab.data.schema.write_dataset`
  has finished. Any exception removes the partial folder; an earlier ``out_root`` stays as it was until the
  final rename.
- **Errors say where.** Raw annotation files are checked with the toolkit of :mod:`iqalab.data.schema`
  (``require_columns``, ``numeric``, ``check_range``, ``check_unique``; the same functions check the canonical
  tables): every error names ``<file> row <i> (line <i+2>) column '<c>'``, ``row`` counting data rows from 0 (the
  pandas index), ``line`` the line a spreadsheet or text editor shows (header on line 1; not given for
  parquet, JSON or MATLAB files).

Images are checked by :func:`iqalab.data.cache.probe_image` (the data package's one image reader, under its
decompression-bomb guard): opened and ``verify()``-ed; ``verify`` checks structure and PNG CRCs but does not decode
every JPEG scan, so a file truncated inside its entropy-coded data may still pass here and is caught by the image
cache, which decodes every image once.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iqalab.data.cache import probe_image
from iqalab.data.schema import (
    CAM_COLUMNS,
    DataError,
    Dataset,
    check_range,
    check_unique,
    numeric,
    require_columns,
    where,
    write_dataset,
)
from iqalab.data.splits import cross_dataset_splits, random_splits
from iqalab.io import sha256_file

log = logging.getLogger(__name__)

#: ``link`` options of :func:`publish`.
LINK_MODES = ("hardlink", "copy")
#: Names a folder must contain before :func:`publish` agrees to replace it.
_CANONICAL_ENTRIES = ("dataset.json", "images.parquet", "splits.parquet", "images")


@dataclass(frozen=True)
class DatasetCard:
    """What an adapter knows about its benchmark before reading a byte: names, scale, provenance, layout."""

    name: str
    title: str
    attributes: tuple[str, ...]
    mos_range: tuple[float, float]
    url: str
    licence: str
    citation: str
    layout: tuple[str, ...]

    def meta(self, mos_range: Sequence[float] | None = None, name: str | None = None,
             **extra: Any) -> dict[str, Any]:
        """The ``dataset.json`` content for this benchmark (``source: real``)."""
        lo, hi = mos_range if mos_range is not None else self.mos_range
        meta: dict[str, Any] = {
            "name": name or self.name,
            "title": self.title,
            "attributes": list(self.attributes),
            "mos_range": [float(lo), float(hi)],
            "source": "real",
            "licence": self.licence,
            "citation": self.citation,
            "url": self.url,
            "adapter": self.name,
        }
        meta.update(extra)
        return meta

    def layout_text(self) -> str:
        return "; ".join(self.layout)


#: The end of an adapter's out-of-range error: a release on another scale is read with ``mos_range=...``.
RANGE_HINT = "pass mos_range=... if the release uses another scale"


def layout_error(card: DatasetCard, raw_root: Path, missing: Sequence[str]) -> DataError:
    """The error for a missing or wrong raw folder: what was expected, where, and where to get it."""
    what = "folder not found" if not raw_root.is_dir() else f"missing {', '.join(missing)}"
    return DataError(
        f"{card.title} raw folder {raw_root}: {what}. Expected layout under {raw_root}: {card.layout_text()}. "
        f"Get {card.title} from {card.url} ({card.licence}), unpack it there, then run `dvc add data` "
        f"(or `dvc commit`); docs/datasets.md describes every adapter."
    )


# --------------------------------------------------------------------------------------------- layouts
#: Entries an unzip leaves that are never part of a dataset (macOS resource forks).
IGNORED_ENTRIES = frozenset({"__MACOSX"})


@dataclass(frozen=True)
class Layout:
    """One arrangement in which a publisher ships a benchmark: the files an adapter reads, by role.

    ``files`` maps a role (``scores``, ``scene_split``, ``images``...) to candidate paths relative to the dataset
    root, the first present one winning; every role is required. ``optional`` roles are looked up the same way
    but may be absent. ``image_dirs`` are folders of which at least one must hold image files (checked by
    ``iqalab data status``; the adapter checks every listed image itself).
    """

    name: str
    files: Mapping[str, tuple[str, ...]]
    optional: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    image_dirs: tuple[str, ...] = ()

    def locate(self, root: Path) -> tuple[dict[str, str], list[str]]:
        """``(role -> found path, missing entries)`` under ``root``; a missing role shows its candidates."""
        def first(candidates: tuple[str, ...]) -> str | None:
            return next((c for c in candidates if (root / c).exists()), None)

        found = {role: hit for role, cands in (*self.files.items(), *self.optional.items())
                 if (hit := first(cands)) is not None}
        missing = [" or ".join(cands) for role, cands in self.files.items() if role not in found]
        return found, missing

    def top_names(self) -> frozenset[str]:
        """The first path components this layout names (what an archive's top folder may be called)."""
        paths = [c for cands in (*self.files.values(), *self.optional.values()) for c in cands]
        return frozenset(PurePosixPath(p).parts[0] for p in (*paths, *self.image_dirs) if p not in (".", ""))


@dataclass(frozen=True)
class FoundLayout:
    """Where an adapter found its benchmark: the dataset ``root`` (``top``, the folder searched, or a single
    folder inside it), the :class:`Layout` that matched and the path of every role present."""

    root: Path
    layout: Layout
    files: Mapping[str, str]
    top: Path

    def __getitem__(self, role: str) -> str:
        return self.files[role]

    def get(self, role: str) -> str | None:
        return self.files.get(role)

    def meta(self, raw_root: Path | None = None) -> dict[str, str]:
        """``dataset.json`` fields recording which layout was read and where (relative to ``raw_root``, by
        default the folder searched)."""
        raw_root = self.top if raw_root is None else Path(raw_root)
        inner = self.root.relative_to(raw_root).as_posix() if self.root != raw_root else "."
        return {"raw_layout": self.layout.name, "raw_layout_root": inner}


def _single_folder(root: Path) -> Path | None:
    """The one visible folder inside ``root`` when it holds nothing else but hidden files (an unzip wrapper)."""
    entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name not in IGNORED_ENTRIES]
    folders = [p for p in entries if p.is_dir()]
    return folders[0] if len(folders) == 1 and len(entries) == 1 else None


def match_layout(raw_root: Path, layouts: Sequence[Layout], depth: int = 2) -> FoundLayout | None:
    """The first of ``layouts`` present in ``raw_root``, or in the single folder an unzip left inside it
    (``depth`` levels at most: ``raw/koniq10k/koniq10k/...``); ``None`` if none is."""
    top = Path(raw_root)
    root: Path | None = top
    for _ in range(depth + 1):
        if root is None or not root.is_dir():
            return None
        for layout in layouts:
            files, missing = layout.locate(root)
            if not missing:
                return FoundLayout(root, layout, files, top)
        root = _single_folder(root)
    return None


def find_layout(card: DatasetCard, raw_root: Path, layouts: Sequence[Layout], depth: int = 2) -> FoundLayout:
    """:func:`match_layout`, logging which layout was found; raises :func:`layout_error` listing, for each
    layout, what is missing at ``raw_root``."""
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise layout_error(card, raw_root, [])
    found = match_layout(raw_root, layouts, depth)
    if found is not None:
        inside = "" if found.root == raw_root else f" in {found.root.relative_to(raw_root)}/"
        log.info("%s: %s layout found%s", card.title, found.layout.name, inside)
        return found
    if len(layouts) == 1:
        raise layout_error(card, raw_root, layouts[0].locate(raw_root)[1])
    report = "; or ".join(f"{', '.join(layout.locate(raw_root)[1])} ({layout.name})" for layout in layouts)
    raise layout_error(card, raw_root, [report])


def open_layout(card: DatasetCard, raw_root: Path, layouts: Sequence[Layout],
                mos_range: Sequence[float] | None = None) -> tuple[FoundLayout, tuple[float, ...]]:
    """Where an adapter starts: the layout found under ``raw_root`` (:func:`find_layout`) and the scale its
    scores are checked against, ``mos_range`` where given, else the card's."""
    found = find_layout(card, raw_root, layouts)
    return found, (tuple(mos_range) if mos_range is not None else card.mos_range)


def guard_out_root(raw_root: Path, out_root: Path) -> None:
    """Refuse to write inside the raw folder (``data/`` is immutable) or over a folder that is not a dataset."""
    raw_abs, out_abs = Path(raw_root).resolve(), Path(out_root).resolve()
    if out_abs == raw_abs or raw_abs in out_abs.parents:
        raise DataError(f"output folder {out_root} lies inside the raw folder {raw_root}: raw data are immutable")
    if out_abs.is_dir() and any(out_abs.iterdir()) and not any((out_abs / e).exists() for e in _CANONICAL_ENTRIES):
        raise DataError(
            f"output folder {out_root} exists, is not empty and holds no canonical dataset "
            f"({', '.join(_CANONICAL_ENTRIES)}); refusing to replace it"
        )


# --------------------------------------------------------------------------------------------- tables
def read_table(path: Path, sheet: int | str = 0) -> pd.DataFrame:
    """Read a CSV, Excel or parquet table; column names are stripped of surrounding blanks."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm", ".xls"):
            frame = pd.read_excel(path, sheet_name=sheet)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except UnicodeDecodeError as exc:  # name the line, as for every other bad cell
        raise DataError(f"{_undecodable_line(path)}: not UTF-8 text ({exc.reason}: "
                        f"{exc.object[exc.start:exc.end]!r}); save the table as UTF-8") from exc
    except Exception as exc:  # pandas/openpyxl/pyarrow raise many types for a damaged file
        raise DataError(f"{path}: cannot be read as a {suffix.lstrip('.') or 'csv'} table ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.reset_index(drop=True)


def _undecodable_line(path: Path) -> str:
    """Where the first line of a text table that is not UTF-8 is: ``<file> row r (line n)`` as :func:`where`
    writes it, or ``<file> line 1 (the header)``."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return where(path, number - 2) if number > 1 else f"{path} line 1 (the header)"
    return str(path)


def relative_image_path(value: Any, file: str | Path, row: int, column: str) -> str:
    """A published image path as a clean POSIX path relative to the raw root (``\\`` becomes ``/``)."""
    text = str(value).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    path = PurePosixPath(text)
    if not text or text in (".", "nan") or path.is_absolute() or ".." in path.parts:
        raise DataError(f"{where(file, row, column)}: {value!r} is not a path inside the dataset folder")
    return path.as_posix()


def read_score_table(raw_root: Path, rel: str, name_column: str,
                     columns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Read the score table ``rel`` (:func:`read_table`), which must have ``name_column`` and ``columns``;
    return it with its image names, each a clean relative path (:func:`relative_image_path`) and none
    repeated."""
    table = read_table(raw_root / rel)
    require_columns(table, rel, [name_column, *columns])
    names = [relative_image_path(v, rel, i, name_column) for i, v in enumerate(table[name_column])]
    check_unique(names, rel, name_column)
    return table, names


def scores_in_range(table: pd.DataFrame, rel: str, column: str, scale: Sequence[float],
                    allow_missing: bool = False) -> np.ndarray:
    """Column ``column`` of the score table ``rel`` as numbers (:func:`~iqalab.data.schema.numeric`), every
    value present inside ``scale``; an out-of-range error ends with :data:`RANGE_HINT`."""
    values = numeric(table, rel, column, allow_missing=allow_missing)
    check_range(values, rel, column, scale, hint=RANGE_HINT)
    return values


def first_existing(raw_root: Path, candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` (relative paths) that is a file under ``raw_root``."""
    for rel in candidates:
        if (raw_root / rel).is_file():
            return rel
    return None


# --------------------------------------------------------------------------------------------- images
def inspect_images(raw_root: Path, rel_paths: Sequence[str], source: str | Path,
                   rows: Sequence[int] | None = None, verify: bool = True, workers: int = 4,
                   line_offset: int | None | str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Check that every listed image exists and opens (PIL ``verify``); return widths and heights.

    ``source`` and ``rows`` name the annotation file and row that listed each image, for the error message.
    """
    raw_root = Path(raw_root)
    rows = list(rows) if rows is not None else list(range(len(rel_paths)))
    for i, rel in enumerate(rel_paths):
        if not (raw_root / rel).is_file():
            raise DataError(f"{where(source, rows[i], line_offset=line_offset)}: image listed but not found: "
                            f"{raw_root / rel}")

    def probe(i: int) -> tuple[int, int]:
        path = raw_root / rel_paths[i]
        try:
            return probe_image(path, verify)
        except Exception as exc:  # UnidentifiedImageError, DecompressionBombError, OSError, SyntaxError...
            raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc}); listed in "
                            f"{where(source, rows[i], line_offset=line_offset)}") from exc

    sizes: list[tuple[int, int]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for size in tqdm(pool.map(probe, range(len(rel_paths))), total=len(rel_paths),
                         desc=f"checking images ({Path(str(source)).name})", leave=False, mininterval=2.0):
            sizes.append(size)
    arr = np.array(sizes, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def overall_images(image_ids: Sequence[str], raw_paths: Sequence[str], widths: np.ndarray,
                   heights: np.ndarray, mos: np.ndarray | Sequence[float],
                   std: np.ndarray | float = np.nan) -> pd.DataFrame:
    """The ``images`` table of a benchmark scored on ``overall`` only, each image its own scene, with no
    condition: ``image_id, raw_path, scene, condition, width, height, mos_overall, std_overall`` (``std``
    NaN where the release gives none)."""
    return pd.DataFrame({
        "image_id": image_ids, "raw_path": raw_paths, "scene": image_ids, "condition": None,
        "width": widths, "height": heights, "mos_overall": mos, "std_overall": std,
    })


def _place(src: Path, dst: Path, mode: str) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copy"


def link_images(raw_root: Path, rel_paths: Sequence[str], dest_root: Path, mode: str = "hardlink") -> str:
    """Place each raw image at ``dest_root/images/<rel>``; return ``hardlink``, ``copy`` or ``mixed``."""
    if mode not in LINK_MODES:
        raise DataError(f"link={mode!r} is not one of {LINK_MODES}")
    used: set[str] = set()
    for rel in tqdm(rel_paths, desc="linking images", leave=False, mininterval=2.0):
        used.add(_place(Path(raw_root) / rel, Path(dest_root) / "images" / rel, mode))
    if mode == "hardlink" and "copy" in used:
        log.warning("hard links were not possible for some images under %s; they were copied", raw_root)
    return used.pop() if len(used) == 1 else ("mixed" if used else mode)


# --------------------------------------------------------------------------------------------- splits
def default_splits(images: pd.DataFrame, n_splits: int, test_fraction: float = 0.2, val_fraction: float = 0.0,
                   seed: int = 0, cross: bool = True) -> pd.DataFrame:
    """REQA's ``random_XX`` image-level splits, plus the cross-dataset ``full_train``/``full_test`` splits."""
    frames = []
    if n_splits > 0:
        frames.append(random_splits(images, n_splits=n_splits, test_fraction=test_fraction,
                                    val_fraction=val_fraction, seed=seed))
    if cross:
        frames.append(cross_dataset_splits(images, seed=seed))
    if not frames:
        raise DataError("no split requested: set n_splits > 0 or cross=True")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------- publish
def file_checksums(raw_root: Path, rel_paths: Iterable[str]) -> dict[str, str]:
    """SHA-256 of the annotation files an adapter read (provenance in ``dataset.json``)."""
    return {rel: sha256_file(Path(raw_root) / rel) for rel in rel_paths}


def publish(raw_root: Path, out_root: Path, images: pd.DataFrame, splits: pd.DataFrame, meta: Mapping[str, Any],
            pairs: pd.DataFrame | None = None, ratings: pd.DataFrame | None = None,
            link: str = "hardlink") -> Dataset:
    """Link images, validate and write the canonical tables into a partial folder, then rename it to ``out_root``.

    ``images`` carries a ``raw_path`` column (relative to ``raw_root``); it becomes ``path = images/<raw_path>``.
    """
    raw_root, out_root = Path(raw_root), Path(out_root)
    guard_out_root(raw_root, out_root)
    if link not in LINK_MODES:
        raise DataError(f"link={link!r} is not one of {LINK_MODES}")
    table = images.copy()
    raw_paths = [str(p) for p in table.pop("raw_path")]
    table.insert(1, "path", [f"images/{p}" for p in raw_paths])
    for col in CAM_COLUMNS:
        if col in table.columns:
            table[col] = table[col].astype(float)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    partial = out_root.parent / f".{out_root.name}.partial-{uuid.uuid4().hex[:8]}"
    old = out_root.parent / f".{out_root.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        partial.mkdir()
        links = link_images(raw_root, raw_paths, partial, link)
        full_meta = dict(meta)
        full_meta["image_links"] = links
        full_meta["raw_root"] = str(raw_root)
        ds = Dataset(root=partial, meta=full_meta, images=table.reset_index(drop=True),
                     splits=splits.reset_index(drop=True), pairs=pairs, ratings=ratings)
        write_dataset(ds, check_files=True)
        if out_root.exists():
            out_root.rename(old)
        partial.rename(out_root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if old.exists() and not out_root.exists():
            old.rename(out_root)
        raise
    shutil.rmtree(old, ignore_errors=True)
    ds.root = out_root
    log.info("adapted %s: %d images, %d split rows -> %s", ds.name, len(ds.images), len(ds.splits), out_root)
    return ds


def publish_release(card: DatasetCard, found: FoundLayout, out_root: Path, images: pd.DataFrame,
                    splits: pd.DataFrame, scale: Sequence[float], dataset_name: str | None, read: Iterable[str],
                    *, pairs: pd.DataFrame | None = None, ratings: pd.DataFrame | None = None,
                    link: str = "hardlink", **extra: Any) -> Dataset:
    """Where an adapter ends: ``card``'s ``dataset.json`` (:meth:`DatasetCard.meta` on ``scale``, with
    ``extra``, the checksums of the annotation files ``read`` and the layout ``found``), then :func:`publish`
    from the folder the layout was found in."""
    meta = card.meta(scale, dataset_name, **extra, raw_files=file_checksums(found.root, read),
                     **found.meta())
    return publish(found.root, out_root, images, splits, meta, pairs=pairs, ratings=ratings, link=link)


AdapterFn = Callable[..., Dataset]
