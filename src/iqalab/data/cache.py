"""Decode-once image cache: every image resized to ``size x size`` and stored as one uint8 memory-mapped array.

``build/datasets/<ds>/cache/<size>.npy`` holds ``[N, size, size, 3]`` in the order of ``images.parquet``; beside it
``<size>.json`` records the shape, the images table's checksum and a CRC32 per image. Loaders memory-map the array,
so no epoch decodes a JPEG again; each image's CRC is checked the first time a process reads it, so a corrupted cache
is reported with the file named instead of being trained on. The resize is anisotropic (the whole frame is kept and
normalised box coordinates stay valid); this is the documented cost of a fixed-shape cache.

This module is also the one decode path of the package: :func:`decode_image` (file or bytes to RGB uint8),
:func:`resize_square` (the cache's resize, used again by :class:`iqalab.inference.Scorer` so that scoring a file
sees the pixels training saw) and :func:`probe_image` (size and structure check of the adapters). Every image
file the package reads is opened here, under one decompression-bomb guard.
"""

from __future__ import annotations

import json
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from iqalab.data.schema import DataError, Dataset, safe_relative_path
from iqalab.io import atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)

#: PIL's decompression-bomb guard stays on (this is its default; set explicitly so nothing loosens it).
Image.MAX_IMAGE_PIXELS = 178_956_970


#: PIL's ``reducing_gap`` of the cache resize: a shrink by 6x or more first reduces by an integer factor (box
#: filter), then resamples bicubically; smaller factors and enlargements are a plain bicubic resample.
RESIZE_REDUCING_GAP = 3.0


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 ``[H, W, 3]`` image to ``size x size`` exactly as the cache does (bicubic, anisotropic).

    An image already ``size x size`` is returned as it is.
    """
    if image.shape[:2] == (size, size):
        return image
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=RESIZE_REDUCING_GAP)
    return np.asarray(resized, dtype=np.uint8)


#: integer greyscale modes Pillow opens 16-bit PNG/TIFF as (``I`` holds them in 32-bit ints): full scale 65535
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def to_rgb(img: Image.Image, source: object = "image") -> np.ndarray:
    """An open image as RGB uint8 ``[H, W, 3]``, as a viewer shows it.

    EXIF orientation is applied (:func:`PIL.ImageOps.exif_transpose`); 16-bit greyscale (``I;16``, and ``I``, the
    mode Pillow gives some 16-bit files) is scaled by 255/65535 and rounded, instead of being clipped to white by
    ``convert``; float greyscale (``F``) must lie in [0, 1] and is scaled by 255; CMYK, grey and palette images are
    converted by Pillow; images with transparency (RGBA, LA, PA, palette or grey with a transparent colour) are
    composited over white. An image without EXIF orientation in RGB or L mode decodes exactly as
    ``img.convert("RGB")`` did before.
    """
    img = ImageOps.exif_transpose(img) or img
    if img.mode in _WIDE_GREY_MODES:
        wide = np.asarray(img).astype(np.float64)
        grey = np.clip(np.rint(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise DataError(f"{source}: floating-point image with values outside [0, 1] "
                            f"(min {np.nanmin(values):.4g}, max {np.nanmax(values):.4g}); save it as 8 or 16 bit")
        grey = np.rint(values * 255.0).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def decode_image(source: str | Path | BinaryIO, size: int | None = None, max_side: int | None = None) -> np.ndarray:
    """Decode an image file (or an open binary stream) to RGB uint8 ``[H, W, 3]``.

    ``size`` resizes it to ``size x size`` with :func:`resize_square` (the cache, scoring). ``max_side`` instead
    shrinks it, aspect kept, so that its longer side is at most that many pixels (region detection): a JPEG is
    decoded at 1/2, 1/4 or 1/8 scale directly (PIL ``draft``), then thumbnailed bilinearly. The pixels are those
    the file holds, as a viewer shows them (:func:`to_rgb`): EXIF orientation applied, 16-bit and 32-bit greyscale
    scaled to 8 bit, CMYK, grey and palette converted, transparency composited over white. Truncated, non-image
    and decompression-bomb files raise :class:`DataError` naming the file.
    """
    if size is not None and max_side is not None:
        raise ValueError("decode_image: pass size (square resize) or max_side (aspect kept), not both")
    try:
        with Image.open(source) as img:
            if max_side is not None and max(img.size) > max_side:
                img.draft("RGB", (max_side, max_side))
                shrunk = Image.fromarray(to_rgb(img, source))
                shrunk.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
                rgb = np.asarray(shrunk, dtype=np.uint8).copy()
            else:
                rgb = to_rgb(img, source)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{source}: refused, image too large (decompression bomb guard): {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{source}: cannot decode image ({exc})") from None
    return rgb if size is None else resize_square(rgb, size)


def probe_image(path: str | Path, verify: bool = True) -> tuple[int, int]:
    """Width and height of an image file from its header; with ``verify``, PIL's structure check as well.

    ``verify`` checks the structure and PNG CRCs but does not decode every JPEG scan: a file truncated inside its
    entropy-coded data passes here and is refused by :func:`decode_image` when the cache is built. PIL's
    exceptions (``UnidentifiedImageError``, ``DecompressionBombError``, ``OSError``, ``SyntaxError``) propagate.
    """
    with Image.open(path) as img:
        size = img.size
        if verify:
            img.verify()
    return int(size[0]), int(size[1])


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
