"""Decode-once image cache: every image resized to ``size x size`` and stored as one uint8 memory-mapped array.

``build/datasets/<ds>/cache/<size>.npy`` holds ``[N, size, size, 3]`` in the order of ``images.parquet``; beside it
``<size>.json`` records the shape, the images table's checksum and a CRC32 per image. Loaders memory-map the array,
so no epoch decodes a JPEG again; each image's CRC is checked the first time a process reads it, so a corrupted cache
is reported with the file named instead of being trained on. The resize is anisotropic (the whole frame is kept and
normalised box coordinates stay valid); this is the documented cost of a fixed-shape cache.
"""

from __future__ import annotations

import json
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from iqalab.data.schema import DataError, Dataset, safe_relative_path
from iqalab.io import atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)

#: PIL's decompression-bomb guard stays on (this is its default; set explicitly so nothing loosens it).
Image.MAX_IMAGE_PIXELS = 178_956_970


def decode_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to RGB uint8 ``[H, W, 3]`` (resized to ``size x size`` when given).

    Truncated, non-image and decompression-bomb files raise :class:`DataError` naming the file.
    """
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
            return np.asarray(img, dtype=np.uint8).copy()
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: refused, image too large (decompression bomb guard): {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def cache_paths(root: Path, size: int) -> tuple[Path, Path]:
    """Paths of the cache array and its index JSON."""
    return root / "cache" / f"{size}.npy", root / "cache" / f"{size}.json"


def build_cache(ds: Dataset, size: int, workers: int = 2, progress: bool = True) -> Path:
    """Decode every image of ``ds`` once into the ``size`` cache (atomic: written to a temp file, then renamed)."""
    array_path, index_path = cache_paths(ds.root, size)
    paths = [safe_relative_path(ds.root, p, "images.parquet", row) for row, p in enumerate(ds.images["path"])]
    crcs = np.zeros(len(paths), dtype=np.int64)
    with atomic_path(array_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        _fill(out, paths, crcs, size, workers, progress, f"cache {ds.name} @{size}")
        out.flush()
        del out
    write_json(index_path, {
        "size": size, "n": len(paths), "images_sha256": sha256_file(ds.root / "images.parquet"),
        "image_ids": ds.images["image_id"].tolist(), "crc32": crcs.tolist(),
    })
    log.info("cached %d images of %s at %d px", len(paths), ds.name, size)
    return array_path


def _fill(out: np.ndarray, paths: list[Path], crcs: np.ndarray, size: int, workers: int, progress: bool,
          desc: str) -> None:
    """Decode ``paths`` into ``out`` (threads: PIL releases the GIL while decoding) and record each CRC32."""

    def work(i: int) -> None:
        arr = decode_image(paths[i], size)
        out[i] = arr
        crcs[i] = zlib.crc32(arr.tobytes())

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(tqdm(pool.map(work, range(len(paths))), total=len(paths), disable=not progress, desc=desc))


class ImageCache:
    """Read side of the cache: ``cache[i]`` is image ``i`` (images-table order) as uint8 ``[S, S, 3]``."""

    def __init__(self, ds: Dataset, size: int) -> None:
        array_path, index_path = cache_paths(ds.root, size)
        if not array_path.is_file() or not index_path.is_file():
            raise DataError(f"{array_path}: image cache missing; run `iqalab ingest {ds.name}` to build it")
        try:
            index = json.loads(index_path.read_text())
            index_ok = isinstance(index, dict) and {"image_ids", "n", "crc32"} <= set(index)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{index_path}: corrupt cache index ({exc}); rerun ingest") from None
        if not index_ok:
            raise DataError(f"{index_path}: corrupt cache index (keys image_ids, n, crc32 expected); rerun ingest")
        if index["image_ids"] != ds.images["image_id"].tolist():
            raise DataError(f"{index_path}: cache does not match images.parquet (stale cache); rerun ingest")
        try:
            self.array = np.load(array_path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise DataError(f"{array_path}: corrupt cache array ({exc}); rerun ingest") from None
        if self.array.shape != (index["n"], size, size, 3):
            raise DataError(f"{array_path}: shape {self.array.shape} does not match its index; rerun ingest")
        self.path = array_path
        self.size = size
        self._crc = np.asarray(index["crc32"], dtype=np.int64)
        self._checked = np.zeros(len(self._crc), dtype=bool)
        self.row_of = {image_id: row for row, image_id in enumerate(index["image_ids"])}

    def __len__(self) -> int:
        return len(self._crc)

    def __getitem__(self, row: int) -> np.ndarray:
        arr = np.asarray(self.array[row])
        if not self._checked[row]:
            if zlib.crc32(arr.tobytes()) != self._crc[row]:
                raise DataError(f"{self.path}: image row {row} is corrupt (CRC mismatch); rerun ingest")
            self._checked[row] = True
        return arr
