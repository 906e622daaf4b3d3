"""Natural-scene-statistics (NSS) building blocks shared by NIQE (:mod:`iqalab.models.niqe`) and BRISQUE
(:mod:`iqalab.models.brisque`), as in the released MATLAB code of both papers, and the surface of the
non-trainable classical models.

- Grey conversion: MATLAB ``rgb2gray`` with rounding to integers (``color="gray"``, the original code's input);
  ``color="y"`` uses BT.601 luma as ``rgb2ycbcr`` (basicsr's default, about 5% off the original scores).
- MATLAB ``imresize(im, 0.5)`` (bicubic with antialiasing), reimplemented: the second scale of both methods.
- MSCN coefficients (BRISQUE Eq. 1-3, NIQE Sec. II-A): 7x7 Gaussian window with sigma 7/6 (``fspecial``),
  ``C = 1`` on the 0-255 grey scale; NIQE pads by edge replication (``imfilter(..., 'replicate')``), BRISQUE by
  zeros (``filter2(..., 'same')``).
- GGD / AGGD fits by moment matching against a lookup table over shapes 0.2:0.001:10 (BRISQUE Sec. III,
  Eq. 4-8; the table search of ``estimateggdparam.m`` / ``estimateaggdparam.m``). Where the moment ratio is
  undefined (a flat region: 0/0), MATLAB's ``min`` over an all-NaN difference returns the first index, i.e. the
  shape 0.2; the fits do the same, so a flat or clipped image gets the original code's features rather than NaN.
  A side of the AGGD without samples (no negative products at all) has variance 0 here where MATLAB's
  ``mean([])`` gives NaN and an undefined score; :func:`undefined_sides` counts such images so that tables can
  say how many there were.
- Per-image feature cache (:func:`feature_cache`): while it is active, :meth:`ClassicalModel.image_features` keeps
  each image's features in ``build/features/<name>-<config>/``, keyed by a digest of the image's pixels and of
  the feature settings and code, so an image shared by several splits (or experiments) is analysed once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage
from scipy.special import gamma as gamma_fn
from tqdm.auto import tqdm

from iqalab.data.loaders import denormalise_batch
from iqalab.io import atomic_path
from iqalab.models.base import IQAModel

log = logging.getLogger(__name__)

#: MATLAB ``rgb2gray`` weights (the original NIQE/BRISQUE input)
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
#: MATLAB ``rgb2ycbcr`` luma weights for 0-255 input (offset 16)
RGB2Y = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)

#: shapes searched by the moment-matching fits (``gam = 0.2:0.001:10`` in the original code)
SHAPE_GRID = np.round(np.arange(0.2, 10.0 + 5e-4, 0.001), 3)
#: AGGD ratio E[|x|]^2 / E[x^2] of a GGD with each shape (increasing in the shape)
AGGD_RATIO = gamma_fn(2.0 / SHAPE_GRID) ** 2 / (gamma_fn(1.0 / SHAPE_GRID) * gamma_fn(3.0 / SHAPE_GRID))
#: GGD ratio E[x^2] / E[|x|]^2 (BRISQUE's ``r_gam``; decreasing in the shape)
GGD_RATIO = 1.0 / AGGD_RATIO
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


def to_gray(image: np.ndarray, color: str = "gray") -> np.ndarray:
    """Grey image in [0, 255] (float64) as the original MATLAB code sees it.

    ``image`` is ``H x W`` or ``H x W x 3`` (or batched ``... x H x W x 3``), ``uint8`` (0-255) or float
    (0-1, the scikit-image convention). Colour is converted with ``rgb2gray`` (``color="gray"``) or BT.601 luma
    (``color="y"``) and rounded to integers, as MATLAB does for ``uint8`` images.
    """
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float64)
    elif arr.dtype == bool:
        arr = arr.astype(np.float64) * 255.0
    else:
        arr = np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0)
    if arr.ndim >= 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if color == "gray":
            arr = rgb @ np.asarray(RGB2GRAY)
        elif color == "y":
            arr = 16.0 + rgb @ np.asarray(RGB2Y)
        else:
            raise ValueError(f"color must be 'gray' or 'y', got {color!r}")
        arr = np.round(arr)
    return arr


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB ``imresize`` 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=64)
def _resize_matrix(in_len: int, scale: float) -> np.ndarray:
    """Dense ``out x in`` matrix of MATLAB ``imresize`` bicubic weights along one axis (antialiased when shrinking,
    symmetric boundary)."""
    out_len = int(math.ceil(in_len * scale))
    width = 4.0 / scale if scale < 1 else 4.0
    u = np.arange(1, out_len + 1) / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input positions
    dist = u[:, None] - idx
    weights = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    cols = mirror[np.mod(idx.astype(np.int64) - 1, mirror.size)]
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps), cols.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


def imresize(image: np.ndarray, scale: float = 0.5) -> np.ndarray:
    """MATLAB ``imresize(image, scale)`` (bicubic, antialiasing) of the last two axes of ``image``."""
    img = np.asarray(image, dtype=np.float64)
    *lead, h, w = img.shape
    rows = _resize_matrix(h, float(scale))
    cols = _resize_matrix(w, float(scale))
    # two plain 2-D products (one BLAS call each) instead of a broadcast stack of small ones
    out = img.reshape(-1, w) @ cols.T  # [N*h, w']
    out = np.moveaxis(out.reshape(-1, h, cols.shape[0]), 1, 0).reshape(h, -1)  # [h, N*w']
    out = rows @ out  # [h', N*w']
    return np.moveaxis(out.reshape(rows.shape[0], -1, cols.shape[0]), 0, 1).reshape(*lead, rows.shape[0],
                                                                                       cols.shape[0])


@functools.lru_cache(maxsize=8)
def gaussian_window_1d(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB ``fspecial('gaussian', size, sigma)``."""
    x = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    g /= g.sum()
    g.setflags(write=False)
    return g


def gaussian_window(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    """The 2-D ``size x size`` Gaussian window of the MSCN transform (sums to 1)."""
    g = gaussian_window_1d(size, sigma)
    return np.outer(g, g)


def mscn(image: np.ndarray, size: int = 7, sigma: float = 7.0 / 6.0, c: float = 1.0,
         mode: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients (BRISQUE Eq. 1-3) over the last two axes.

    ``(I - mu) / (s + c)`` with ``mu`` and ``s`` the Gaussian-weighted local mean and deviation. ``mode`` is the
    border handling of the local filter: ``"nearest"`` (NIQE's ``imfilter(..., 'replicate')``) or ``"constant"``
    (zero padding, BRISQUE's ``filter2(..., 'same')``). Returns ``(mscn, local_std)``.
    """
    img = np.asarray(image, dtype=np.float64)
    g = gaussian_window_1d(size, sigma)

    def blur(x: np.ndarray) -> np.ndarray:
        y = ndimage.correlate1d(x, g, axis=-2, mode=mode, cval=0.0)
        return ndimage.correlate1d(y, g, axis=-1, mode=mode, cval=0.0)

    mu = blur(img)
    local_std = np.sqrt(np.abs(blur(img * img) - mu * mu))
    return (img - mu) / (local_std + c), local_std


def _nearest_index(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the entry of the increasing ``table`` closest to each value (``argmin |table - v|``, vectorised
    with a binary search); -1 for non-finite values."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    safe = np.where(finite, v, 0.0)
    hi = np.clip(np.searchsorted(table, safe), 1, table.size - 1)
    lo = hi - 1
    idx = np.where(np.abs(table[hi] - safe) < np.abs(safe - table[lo]), hi, lo)
    return np.where(finite, idx, -1)


def _grid_shape(idx: np.ndarray) -> np.ndarray:
    """Shapes of grid indices; an undefined ratio (index -1) gets MATLAB's ``min``-over-NaN answer, the first
    shape of the grid (0.2)."""
    return SHAPE_GRID[np.clip(idx, 0, None)]


def fit_ggd(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean generalised Gaussian fit by moment matching (BRISQUE Eq. 4-5, ``estimateggdparam.m``).

    Returns ``(shape, sigma)``: the shape on the grid 0.2:0.001:10 whose ratio ``E[x^2] / E[|x|]^2`` is closest
    to the sample's (0.2 for an all-zero sample, as the original), and ``sigma = sqrt(E[x^2])``. ``shape`` is
    scipy's ``gennorm`` ``beta``.
    """
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    second = np.mean(x * x, axis=-1)
    first = np.mean(np.abs(x), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = second / first**2
    # GGD_RATIO decreases with the shape: search the reversed (increasing) table and map back
    idx = _nearest_index(GGD_RATIO[::-1], rho)
    idx = np.where(idx >= 0, GGD_RATIO.size - 1 - idx, -1)
    return _grid_shape(idx), np.sqrt(second)


def _aggd_moments(x: np.ndarray, empty_side: str = "nan") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD shape and left/right standard deviations over the last axis (``estimateaggdparam.m``).

    A side without samples is undefined in the original (``mean([])`` is NaN; the shape search over NaN returns
    the first grid entry, 0.2). ``empty_side="nan"`` keeps that (NIQE: ``nancov`` then leaves the patch out, as
    ``computequality.m``); ``"zero"`` gives that side deviation 0 so that the image still has a score (BRISQUE,
    whose original would return NaN for such an image; see :func:`empty_aggd_side`).
    """
    neg, pos = x < 0, x > 0
    n_neg, n_pos = np.sum(neg, axis=-1), np.sum(pos, axis=-1)
    sq = x * x
    left_std = np.sqrt(np.sum(sq * neg, axis=-1) / np.maximum(n_neg, 1))
    right_std = np.sqrt(np.sum(sq * pos, axis=-1) / np.maximum(n_pos, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_hat = left_std / right_std
        r_hat = np.mean(np.abs(x), axis=-1) ** 2 / np.mean(sq, axis=-1)
        r_norm = r_hat * (gamma_hat**3 + 1.0) * (gamma_hat + 1.0) / (gamma_hat**2 + 1.0) ** 2
    empty = (n_neg == 0) | (n_pos == 0)
    r_norm = np.where(empty, np.nan, r_norm)
    if empty_side == "nan":
        left_std = np.where(n_neg == 0, np.nan, left_std)
        right_std = np.where(n_pos == 0, np.nan, right_std)
    elif empty_side != "zero":
        raise ValueError(f"empty_side must be 'nan' or 'zero', got {empty_side!r}")
    return _grid_shape(_nearest_index(AGGD_RATIO, r_norm)), left_std, right_std


def empty_aggd_side(x: np.ndarray) -> np.ndarray:
    """True where a sample (last axis) has no negative or no positive value: the original code's AGGD fit is
    undefined there (its BRISQUE score would be NaN); iqalab's BRISQUE scores it with a zero deviation on that
    side and counts it."""
    return ~((x < 0).any(axis=-1) & (x > 0).any(axis=-1))


def fit_aggd(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-mode asymmetric generalised Gaussian fit by moment matching (BRISQUE Eq. 6-8).

    Returns ``(shape, beta_left, beta_right)`` with ``beta = std_side * sqrt(Gamma(1/shape) / Gamma(3/shape))``,
    the scales of the density ``shape / ((bl + br) Gamma(1/shape)) exp(-(|x| / b_side)^shape)``.
    """
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    shape, left_std, right_std = _aggd_moments(x)
    const = np.sqrt(gamma_fn(1.0 / shape) / gamma_fn(3.0 / shape))
    return shape, left_std * const, right_std * const


def _aggd_mean(shape: np.ndarray, beta_l: np.ndarray, beta_r: np.ndarray) -> np.ndarray:
    """Mean of the AGGD (BRISQUE Eq. 9): ``(br - bl) Gamma(2/shape) / Gamma(1/shape)``."""
    return (beta_r - beta_l) * gamma_fn(2.0 / shape) / gamma_fn(1.0 / shape)


def read_image(item: np.ndarray | str | Path) -> np.ndarray:
    """An image given as an array, or a file decoded to RGB uint8 ``[H, W, 3]`` by the data package's one decode
    path."""
    if isinstance(item, str | Path):
        from iqalab.data.cache import decode_image

        return decode_image(Path(item))
    return np.asarray(item)


def skimage_photos() -> list[np.ndarray]:
    """scikit-image's sample photographs used by the offline demo models (smoke tests, never reported)."""
    import skimage.data

    return [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]


def batch_to_uint8(image: torch.Tensor) -> np.ndarray:
    """Undo ImageNet normalisation of ``[B, 3, H, W]``: RGB uint8 ``[B, H, W, 3]``, the values :func:`to_gray`
    rounds a float image to (so ``to_gray(batch_to_uint8(x))`` is the grey image of ``x``)."""
    rgb = denormalise_batch(image.detach().cpu()).permute(0, 2, 3, 1).numpy().astype(np.float64)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def batch_to_gray(image: torch.Tensor, color: str = "gray") -> np.ndarray:
    """Undo ImageNet normalisation of ``[B, 3, H, W]`` and return grey images ``[B, H, W]`` in [0, 255]."""
    return to_gray(batch_to_uint8(image), color)


# -- per-image feature cache ----------------------------------------------------------------------------------
#: folder of the feature cache while :func:`feature_cache` is active (``None``: features are always computed)
_FEATURE_FOLDER: ContextVar[Path | None] = ContextVar("iqalab_nss_feature_folder", default=None)


@contextmanager
def feature_cache(folder: str | Path | None) -> Iterator[None]:
    """Within the block, classical models keep the features of each image they analyse under ``folder``
    (``build/features`` in the pipeline; ``None`` turns caching off) and read them back instead of recomputing:
    fitting and predicting every split of an experiment then analyses each image once."""
    token = _FEATURE_FOLDER.set(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _FEATURE_FOLDER.reset(token)


def pixel_key(rgb: np.ndarray) -> str:
    """Content key of a uint8 image: its shape and a 128-bit BLAKE2b digest of its pixels (a CRC32 alone would
    collide with a probability of about 1 % among 10,000 images)."""
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    digest = hashlib.blake2b(arr.data, digest_size=16).hexdigest()
    return f"{digest}-{'x'.join(str(n) for n in arr.shape)}"


@functools.lru_cache(maxsize=16)
def _source_digest(*modules: str) -> str:
    """SHA-256 of the source files of ``modules``: editing the code that computes features invalidates them."""
    h = hashlib.sha256()
    for name in modules:
        h.update(Path(str(sys.modules[name].__file__)).read_bytes())
    return h.hexdigest()


class FeatureStore:
    """Per-image feature arrays of one feature configuration: ``<folder>/<name>-<digest>/<key[:2]>/<key>.npz``.

    ``digest`` hashes ``config`` (the settings that change the features) and the source of the modules that
    compute them; ``key`` is :func:`pixel_key` of the image. Files are written atomically; an unreadable one is
    recomputed. ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, folder: Path, name: str, config: Mapping[str, Any], modules: tuple[str, ...]) -> None:
        text = json.dumps(dict(config), sort_keys=True) + _source_digest(*modules)
        self.folder = Path(folder) / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        self.hits = self.misses = 0

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored for ``key``, or ``None`` (counted as a miss)."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            arrays = None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("%s: unreadable cached features (%s); recomputing", path, exc)
            arrays = None
        if arrays is None:
            self.misses += 1
        else:
            self.hits += 1
        return arrays

    def put(self, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        with atomic_path(self.path(key)) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _iter_batches(batches: Iterable[dict[str, Any]], desc: str) -> Iterator[dict[str, Any]]:
    yield from tqdm(batches, desc=desc, leave=False, disable=not log.isEnabledFor(logging.INFO))


class ClassicalModel(IQAModel):
    """Shared surface of the non-trainable classical models (NIQE, BRISQUE): buffers only, ``fit`` instead of
    gradients, images at full resolution (``input_resolution = "native"``, as the papers' original code), and
    the published score beside the [0, 1] outputs (:meth:`predict_with_raw`)."""

    trainable: ClassVar[bool] = False
    inputs = frozenset({"image"})
    input_resolution: ClassVar[str] = "native"
    raw_lower_is_better: ClassVar[bool] = True

    def __init__(self, attributes: list[str], color: str) -> None:
        super().__init__(attributes)
        if color not in ("gray", "y"):
            raise ValueError(f"color must be 'gray' or 'y', got {color!r}")
        self.color = color
        self.register_buffer("fitted", torch.zeros((), dtype=torch.float64))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted.item() > 0)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(batches) on the training split "
                               "first (the engine does) or build it from a parameter file")

    def training_step(self, batch: dict[str, Any], ctx: Any) -> torch.Tensor:  # pragma: no cover - guard
        raise RuntimeError(f"{type(self).__name__} is not trained by gradient descent: use fit(batches)")

    # -- per-image features, computed once per image while a feature cache is active -------------------------
    #: prefix of the feature cache's folder (``build/features/<feature_name>-<config digest>``)
    feature_name: ClassVar[str] = ""

    def feature_config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """The settings that change the per-image features (part of the feature cache's key)."""
        raise NotImplementedError

    def compute_features(self, gray: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        """Per-image features of grey images ``[B, H, W]`` in [0, 255]: named arrays with leading axis ``B``."""
        raise NotImplementedError

    def image_features(self, image: torch.Tensor) -> dict[str, np.ndarray]:
        """:meth:`compute_features` of ImageNet-normalised images ``[B, 3, H, W]``; while :func:`feature_cache` is
        active, each image's features are read from the cache or computed once and stored there."""
        rgb = batch_to_uint8(image)
        folder = _FEATURE_FOLDER.get()
        if folder is None:
            return self.compute_features(to_gray(rgb, self.color))
        store = self._feature_store(folder)
        keys = [pixel_key(x) for x in rgb]
        found = [store.get(key) for key in keys]
        missing = [i for i, arrays in enumerate(found) if arrays is None]
        if missing:
            fresh = self.compute_features(to_gray(rgb[missing], self.color))
            for j, i in enumerate(missing):
                arrays = {name: np.asarray(value[j]) for name, value in fresh.items()}
                store.put(keys[i], arrays)
                found[i] = arrays
        done = [arrays for arrays in found if arrays is not None]  # every image has its features now
        return {name: np.stack([arrays[name] for arrays in done]) for name in done[0]}

    def _feature_store(self, folder: Path) -> FeatureStore:
        store: FeatureStore | None = getattr(self, "_store", None)
        config = {"features": self.feature_name, **self.feature_config()}
        if store is None or store.folder.parent != folder or getattr(self, "_store_config", None) != config:
            store = FeatureStore(folder, self.feature_name, config, (__name__, type(self).__module__))
            self._store, self._store_config = store, config
        return store

    # -- raw score and outputs from one feature pass --------------------------------------------------------
    def raw_from_image(self, image: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The published score ``[B]`` (lower is better) of ImageNet-normalised images."""
        raise NotImplementedError

    def outputs_from_raw(self, raw: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{attribute: [B]}`` in [0, 1] (higher is better) from the raw scores."""  # pragma: no cover
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.predict_with_raw(batch)[0]

    @property
    def variant(self) -> str:  # pragma: no cover - abstract
        """The row label the papers use for this configuration."""
        raise NotImplementedError

    def run_notes(self) -> dict[str, Any]:
        """The variant label and the raw score's name and sign (tables state them in their captions)."""
        return {"variant": self.variant, "raw_score": self.raw_score_name,
                "raw_lower_is_better": bool(self.raw_score_name) and self.raw_lower_is_better,
                "trained": not self.ready_without_training}

    @torch.no_grad()
    def predict_with_raw(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The [0, 1] outputs and, when the configuration has a published score (``raw_score_name``), that score
        ``[B]`` from the same feature pass (:meth:`raw_from_image` gives ``[B]`` or ``[B, A]``; every attribute
        of a published score holds the same value)."""
        image = batch["image"]
        raw = self.raw_from_image(image)
        published = None if self.raw_score_name is None else (raw if raw.ndim == 1 else raw[:, 0])
        return self.outputs_from_raw(raw, image), published
