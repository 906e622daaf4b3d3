"""Decode-once image stores: each image at its native resolution, and the square cache derived from it.

Two stores live in ``build/datasets/<ds>/cache/``, both built by :func:`build_cache` in one decoding pass, both in
the order of ``images.parquet`` and both CRC-checked (CRC32 per image, checked the first time a process reads it,
so a corrupted store is reported with the file named instead of being trained on):

- ``native.bin`` + ``native.json`` (:class:`NativeStore`): every image aspect-preserved, at its native resolution
  or shrunk so that its longer side is at most the dataset's ``max_side`` (a stated cap), as one flat uint8 file
  memory-mapped by readers; the index holds each image's byte offset and ``(height, width)``. Loaders cut the
  papers' crops and patches from it at the papers' scales (:mod:`iqalab.data.loaders`). Normalised box and
  landmark coordinates stay valid (a uniform scale does not move them).
- ``<size>.npy`` + ``<size>.json`` (:class:`ImageCache`): the same images resized to ``size x size`` (anisotropic:
  the whole frame is kept and normalised boxes stay valid), for the models whose papers resize to a square
  (TuningIQA 256 -> 224, SFIQA's 224 views) and the small CPU profiles.

This module is also the one decode path of the package: :func:`decode_image` (file or bytes to RGB uint8),
:func:`prepare_image` (decoded pixels to the pixels a store holds: the cap, then the square resize; the cache
and scoring call it, so that scoring a file sees the pixels training saw) and :func:`probe_image` (size and
structure check of the adapters). Every image file the package reads is opened here, under one
decompression-bomb guard.
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


def capped_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """``(width, height)`` of an image capped to ``max_side`` on its longer side (:func:`cap_side`): each side
    ``round(side * max_side / longer side)``, at least 1; unchanged when it already fits or ``max_side=None``."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def cap_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink a uint8 ``[H, W, 3]`` image, aspect kept, so that its longer side is ``max_side`` pixels.

    The filter is the cache's (bicubic with :data:`RESIZE_REDUCING_GAP`); the new sides are
    :func:`capped_size`'s. An image that already fits, or ``max_side=None``, is returned as it is (native
    resolution).
    """
    h, w = image.shape[:2]
    new_w, new_h = capped_size(w, h, max_side)
    if (new_w, new_h) == (w, h):
        return image
    resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC,
                                            reducing_gap=RESIZE_REDUCING_GAP)
    return np.asarray(resized, dtype=np.uint8)


def prepare_image(image: np.ndarray, size: int | None = None, max_side: int | None = None) -> np.ndarray:
    """Decoded pixels -> the pixels a store holds: the one preprocessing chain of training and scoring.

    ``max_side`` caps the image as the native store does (:func:`cap_side`); ``size`` then resizes the capped
    image to the square cache (:func:`resize_square`). ``size=None`` gives the native store's pixels. Scoring a
    file with the ``cache_size`` and ``max_side`` a checkpoint was trained with gives exactly the cached pixels.
    """
    capped = cap_side(image, max_side)
    return capped if size is None else resize_square(capped, size)


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


def decode_image(source: str | Path | BinaryIO, size: int | None = None, max_side: int | None = None,
                 draft: int | None = None) -> np.ndarray:
    """Decode an image file (or an open binary stream) to RGB uint8 ``[H, W, 3]``.

    ``size`` resizes it to ``size x size`` with :func:`resize_square` (the cache, scoring). ``max_side`` instead
    shrinks it, aspect kept, so that its longer side is at most that many pixels (region detection): a JPEG is
    decoded at 1/2, 1/4 or 1/8 scale directly (PIL ``draft``), then thumbnailed bilinearly. The pixels are those
    the file holds, as a viewer shows them (:func:`to_rgb`): EXIF orientation applied, 16-bit and 32-bit greyscale
    scaled to 8 bit, CMYK, grey and palette converted, transparency composited over white. Truncated, non-image
    and decompression-bomb files raise :class:`DataError` naming the file. ``draft`` lets a JPEG be decoded at
    1/2, 1/4 or 1/8 scale as long as both sides stay at least ``draft`` pixels (PIL ``draft``; other formats
    ignore it): faster, but not the pixels of a full decode, so the stores never use it (``iqalab score
    --draft`` does, see :mod:`iqalab.stages.score` for its tolerance).
    """
    if size is not None and max_side is not None:
        raise ValueError("decode_image: pass size (square resize) or max_side (aspect kept), not both")
    try:
        with Image.open(source) as img:
            if draft is not None and max_side is None:
                img.draft("RGB", (draft, draft))
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
    """Paths of the square cache array and its index JSON."""
    return root / "cache" / f"{size}.npy", root / "cache" / f"{size}.json"


def native_paths(root: Path) -> tuple[Path, Path]:
    """Paths of the native-resolution store (flat uint8 bytes) and its index JSON."""
    return root / "cache" / "native.bin", root / "cache" / "native.json"


def planar_crc(image: np.ndarray) -> int:
    """CRC32 of a uint8 ``[H, W, 3]`` image as the native store holds it (channel-planar ``[3, H, W]`` bytes): the
    store's per-image checksum, and the image's identity for evaluation patch draws (:class:`NativeStore.crc`,
    :func:`iqalab.data.loaders.patch_rng`), so scoring a file draws the patches evaluation drew."""
    return zlib.crc32(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)).data)


class _NativeWriter:
    """Appends images to the native store's open file, recording each one's offset, shape and CRC32."""

    def __init__(self, fh: BinaryIO, n: int) -> None:
        self.fh = fh
        self.position = 0
        self.offsets, self.shapes = np.zeros(n, dtype=np.int64), np.zeros((n, 2), dtype=np.int64)
        self.crcs = np.zeros(n, dtype=np.int64)

    def append(self, i: int, native: np.ndarray) -> None:
        """Write ``native`` (uint8 ``[H, W, 3]``) channel-planar: ``[3, H, W]`` bytes (see :class:`NativeStore`)."""
        planar = np.ascontiguousarray(native.transpose(2, 0, 1))
        self.offsets[i], self.shapes[i] = self.position, native.shape[:2]
        self.fh.write(planar.data)
        self.position += planar.nbytes
        self.crcs[i] = zlib.crc32(planar.data)  # = planar_crc(native)


def build_cache(ds: Dataset, size: int, workers: int = 2, progress: bool = True,
                max_side: int | None = None) -> Path:
    """Decode every image of ``ds`` once into the native store and the ``size`` square cache.

    Each image is decoded (:func:`decode_image`), capped to ``max_side`` (``None``: native resolution) and
    appended to ``native.bin``; its square version is :func:`prepare_image` of the same pixels. Both files are
    written to temporaries and renamed only when every image decoded (atomic). Returns the square array's path.
    """
    array_path, index_path = cache_paths(ds.root, size)
    bin_path, native_index_path = native_paths(ds.root)
    paths = [safe_relative_path(ds.root, p, "images.parquet", row) for row, p in enumerate(ds.images["path"])]
    n = len(paths)
    crcs = np.zeros(n, dtype=np.int64)
    with atomic_path(array_path) as tmp, atomic_path(bin_path) as tmp_bin, open(tmp_bin, "wb") as fh:
        native = _NativeWriter(fh, n)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        _fill(out, paths, crcs, size, workers, progress, f"cache {ds.name} @{size}", native, max_side)
        out.flush()
        del out
    images_sha = sha256_file(ds.root / "images.parquet")
    image_ids = ds.images["image_id"].tolist()
    write_json(native_index_path, {
        "n": n, "max_side": max_side, "bytes": native.position, "layout": "chw", "images_sha256": images_sha,
        "image_ids": image_ids, "offsets": native.offsets.tolist(), "shapes": native.shapes.tolist(),
        "crc32": native.crcs.tolist(),
    })
    write_json(index_path, {"size": size, "n": n, "max_side": max_side, "images_sha256": images_sha,
                            "image_ids": image_ids, "crc32": crcs.tolist()})
    log.info("stored %d images of %s at native resolution%s (%.1f MB) and at %d px", n, ds.name,
             f" (longer side <= {max_side})" if max_side else "", native.position / 1e6, size)
    return array_path


def _fill(out: np.ndarray, paths: list[Path], crcs: np.ndarray, size: int, workers: int, progress: bool,
          desc: str, native: _NativeWriter, max_side: int | None) -> None:
    """Decode ``paths`` (threads: PIL releases the GIL while decoding), append each image to ``native`` in
    order and put its square version in ``out``, recording each CRC32."""

    def work(i: int) -> tuple[np.ndarray, np.ndarray]:
        pixels = prepare_image(decode_image(paths[i]), max_side=max_side)
        return pixels, resize_square(pixels, size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(work, range(len(paths)))
        for i, (pixels, square) in enumerate(tqdm(results, total=len(paths), disable=not progress, desc=desc)):
            native.append(i, pixels)
            out[i] = square
            crcs[i] = zlib.crc32(square.tobytes())


def _read_index(index_path: Path, keys: set[str], ds: Dataset, what: str) -> dict:
    """The index JSON of a store, checked for ``keys`` and for matching ``images.parquet`` (else a DataError)."""
    try:
        index = json.loads(index_path.read_text())
        index_ok = isinstance(index, dict) and keys <= set(index)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{index_path}: corrupt {what} index ({exc}); rerun ingest") from None
    if not index_ok:
        raise DataError(f"{index_path}: corrupt {what} index (keys {', '.join(sorted(keys))} expected); rerun "
                        "ingest")
    if index["image_ids"] != ds.images["image_id"].tolist():
        raise DataError(f"{index_path}: {what} does not match images.parquet (stale {what}); rerun ingest")
    return index


class _CheckedRows:
    """CRC32 of each row, checked the first time this process reads the row."""

    def __init__(self, path: Path, crc32: list[int]) -> None:
        self.path = path
        self._crc = np.asarray(crc32, dtype=np.int64)
        self._checked = np.zeros(len(self._crc), dtype=bool)

    def __len__(self) -> int:
        return len(self._crc)

    def crc(self, row: int) -> int:
        """The stored CRC32 of image ``row`` (native store: :func:`planar_crc` of its pixels), without reading it."""
        return int(self._crc[row])

    def check(self, row: int, arr: np.ndarray) -> np.ndarray:
        if not self._checked[row]:
            if zlib.crc32(np.ascontiguousarray(arr).data) != self._crc[row]:
                raise DataError(f"{self.path}: image row {row} is corrupt (CRC mismatch); rerun ingest")
            self._checked[row] = True
        return arr


class ImageCache(_CheckedRows):
    """Read side of the square cache: ``cache[i]`` is image ``i`` (images-table order) as uint8 ``[S, S, 3]``.

    ``max_side`` is the cap the images had before the square resize (``None``: native); :attr:`native` opens the
    native store built beside it.
    """

    def __init__(self, ds: Dataset, size: int) -> None:
        array_path, index_path = cache_paths(ds.root, size)
        if not array_path.is_file() or not index_path.is_file():
            raise DataError(f"{array_path}: image cache missing; run `iqalab ingest {ds.name}` to build it")
        index = _read_index(index_path, {"image_ids", "n", "crc32"}, ds, "cache")
        try:
            self.array = np.load(array_path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise DataError(f"{array_path}: corrupt cache array ({exc}); rerun ingest") from None
        if self.array.shape != (index["n"], size, size, 3):
            raise DataError(f"{array_path}: shape {self.array.shape} does not match its index; rerun ingest")
        super().__init__(array_path, index["crc32"])
        self.size = size
        self.max_side: int | None = index.get("max_side")
        self.row_of = {image_id: row for row, image_id in enumerate(index["image_ids"])}
        self._ds = ds
        self._native: NativeStore | None = None

    @property
    def native(self) -> NativeStore:
        """The native-resolution store of the same dataset (opened on first use)."""
        if self._native is None:
            self._native = NativeStore(self._ds)
        return self._native

    def __getitem__(self, row: int) -> np.ndarray:
        return self.check(row, np.asarray(self.array[row]))


class NativeStore(_CheckedRows):
    """Read side of the native store: ``store[i]`` is image ``i`` as uint8 ``[H_i, W_i, 3]``, a read-only view of
    the memory-mapped file (no copy; slicing it reads only the rows of a crop once the CRC was checked).

    Images are stored channel-planar (``[3, H, W]``, index ``layout: chw``): a crop copied into the channel-first
    tensors models take is then three blocks of contiguous rows, not a per-pixel transpose (the loader's copy is
    about 5x faster); ``store[i]`` is the ``[H, W, 3]`` view of the same bytes."""

    def __init__(self, ds: Dataset) -> None:
        bin_path, index_path = native_paths(ds.root)
        if not bin_path.is_file() or not index_path.is_file():
            raise DataError(f"{bin_path}: native image store missing; run `iqalab ingest {ds.name}` to build it")
        index = _read_index(index_path, {"image_ids", "n", "crc32", "offsets", "shapes", "bytes"}, ds,
                            "native store")
        if index.get("layout") != "chw":
            raise DataError(f"{index_path}: native store of an older layout; rerun ingest")
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.shapes = np.asarray(index["shapes"], dtype=np.int64).reshape(-1, 2)
        if not len(self.offsets) == len(self.shapes) == len(index["crc32"]) == index["n"]:
            raise DataError(f"{index_path}: corrupt native store index (lengths differ); rerun ingest")
        if bin_path.stat().st_size != index["bytes"]:
            raise DataError(f"{bin_path}: {bin_path.stat().st_size} bytes, its index says {index['bytes']}; "
                            "rerun ingest")
        self.flat = np.memmap(bin_path, dtype=np.uint8, mode="r") if index["bytes"] else np.zeros(0, np.uint8)
        super().__init__(bin_path, index["crc32"])
        self.max_side: int | None = index.get("max_side")
        self.row_of = {image_id: row for row, image_id in enumerate(index["image_ids"])}

    def shape(self, row: int) -> tuple[int, int]:
        """``(height, width)`` of image ``row`` without reading it."""
        h, w = self.shapes[row]
        return int(h), int(w)

    def planar(self, row: int) -> np.ndarray:
        """Image ``row`` as stored: a read-only uint8 ``[3, H, W]`` view (CRC checked on first read)."""
        h, w = self.shape(row)
        start = int(self.offsets[row])
        return self.check(row, np.asarray(self.flat[start:start + h * w * 3]).reshape(3, h, w))

    def __getitem__(self, row: int) -> np.ndarray:
        return self.planar(row).transpose(1, 2, 0)
