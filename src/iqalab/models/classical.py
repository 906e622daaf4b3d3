"""Classical natural-scene-statistics baselines: NIQE and BRISQUE.

- NIQE: A. Mittal, R. Soundararajan, A. C. Bovik, "Making a 'Completely Blind' Image Quality Analyzer",
  IEEE Signal Processing Letters 20(3):209-212, 2013. Original code: http://live.ece.utexas.edu/research/quality/
  (``niqe_release.zip``: ``computequality.m``, ``computefeature.m``, ``estimatemodelparam.m``).
- BRISQUE: A. Mittal, A. K. Moorthy, A. C. Bovik, "No-Reference Image Quality Assessment in the Spatial Domain",
  IEEE Transactions on Image Processing 21(12):4695-4708, 2012. Original code: ``brisque_release.zip``
  (``brisque_feature.m``, ``estimateggdparam.m``, ``estimateaggdparam.m``, libsvm model ``allmodel``).

Both are computed as in the released MATLAB code, vectorised with NumPy/SciPy over images and patches:

- MSCN coefficients (BRISQUE Eq. 1-3, NIQE Sec. II-A): 7x7 Gaussian window with sigma 7/6 (``fspecial``),
  ``C = 1`` on the 0-255 grey scale; NIQE pads by edge replication (``imfilter(..., 'replicate')``), BRISQUE by
  zeros (``filter2(..., 'same')``).
- GGD / AGGD fits by moment matching against a lookup table over shapes 0.2:0.001:10 (BRISQUE Sec. III,
  Eq. 4-8; the table search of ``estimateggdparam.m`` / ``estimateaggdparam.m``).
- The second scale is MATLAB's ``imresize(im, 0.5)`` (bicubic with antialiasing), reimplemented here.
- BRISQUE features (Table I): per scale the GGD shape and variance of the MSCN map and, for the products with the
  four neighbours (``circshift`` by [0 1], [1 0], [1 1], [-1 1]), the AGGD shape, mean, left and right variance:
  2 x (2 + 4 x 4) = 36 features of the whole image.
- NIQE features (Sec. II-C): per 96x96 patch (48x48 at the second scale) the AGGD shape and mean scale of the MSCN
  values and the AGGD shape, mean, left and right scales of the four neighbour products (shift [1 -1] for the
  fourth, as in ``computefeature.m``): 36 features per patch. The pristine model keeps the patches whose mean
  local deviation (sharpness) exceeds 0.75 of the image's maximum (Sec. II-B); a test image uses all patches.
  The quality is the distance of Eq. (10) between the two multivariate Gaussians (pseudo-inverse of the mean
  covariance, patches with a NaN feature left out of the covariance as MATLAB's ``nancov``).

Deviations and choices (the papers give no equations for these; the original code decides):

- Grey conversion is MATLAB ``rgb2gray`` with rounding to integers (``color="gray"``, the original code's input);
  ``color="y"`` uses BT.601 luma as ``rgb2ycbcr`` (basicsr's default, about 5% off the original scores).
- ``NIQE`` in the registry maps the distance to a "higher is better" score in [0, 1] with a decreasing logistic
  ``sigmoid(a - b * niqe)`` (``b >= 1e-3``) fitted per attribute on the training split; a monotone map leaves
  SRCC/KRCC unchanged. Without a parameter file, its pristine model is fitted on the best-rated training images
  (top ``top_quantile`` by normalised MOS of the first attribute), which stand in for the original's 125 pristine
  photographs; the official model is used when ``pristine`` names its ``.npz`` (basicsr's
  ``niqe_pris_params.npz``, keys ``mu_pris_param`` / ``cov_pris_param``).
- ``BRISQUE`` trains one epsilon-SVR (RBF) per attribute on the training split with the original's settings
  (libsvm ``-s 3 -c 1024 -g 0.05``, epsilon 0.1, features scaled to [-1, 1] by the training minimum and maximum
  as ``svm-scale``); targets are the normalised MOS times 100 so that epsilon has the meaning it had on LIVE's DMOS
  scale. The fitted SVR is stored as tensors (support vectors, dual coefficients, intercept) in fixed-capacity
  buffers so that it travels in a weights-only checkpoint; prediction evaluates the RBF expansion directly.
- ``pristine="skimage"`` / ``regressor="skimage"`` build a small offline model from scikit-image's sample photos
  (NIQE: their sharp patches; BRISQUE: the photos under graded blur and noise, target 1 - severity). These exist
  for smoke tests and demos, not for reported numbers.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage, optimize
from scipy.special import expit
from scipy.special import gamma as gamma_fn
from tqdm.auto import tqdm

from iqalab.data.loaders import denormalise_batch
from iqalab.io import atomic_path
from iqalab.models.base import IQAModel
from iqalab.models.registry import register

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

NIQE_FEATURES = 36
BRISQUE_FEATURES = 36
NIQE_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
BRISQUE_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


# ---------------------------------------------------------------------------------------------------------------
# Building blocks: grey conversion, MATLAB imresize, MSCN, GGD / AGGD fits
# ---------------------------------------------------------------------------------------------------------------
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
    return np.where(idx >= 0, SHAPE_GRID[np.clip(idx, 0, None)], np.nan)


def fit_ggd(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean generalised Gaussian fit by moment matching (BRISQUE Eq. 4-5, ``estimateggdparam.m``).

    Returns ``(shape, sigma)``: the shape on the grid 0.2:0.001:10 whose ratio ``E[x^2] / E[|x|]^2`` is closest
    to the sample's, and ``sigma = sqrt(E[x^2])``. ``shape`` is scipy's ``gennorm`` ``beta``.
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


def _aggd_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD shape and left/right standard deviations over the last axis (``estimateaggdparam.m``)."""
    neg, pos = x < 0, x > 0
    sq = x * x
    with np.errstate(divide="ignore", invalid="ignore"):
        left_std = np.sqrt(np.sum(sq * neg, axis=-1) / np.sum(neg, axis=-1))
        right_std = np.sqrt(np.sum(sq * pos, axis=-1) / np.sum(pos, axis=-1))
        gamma_hat = left_std / right_std
        r_hat = np.mean(np.abs(x), axis=-1) ** 2 / np.mean(sq, axis=-1)
        r_norm = r_hat * (gamma_hat**3 + 1.0) * (gamma_hat + 1.0) / (gamma_hat**2 + 1.0) ** 2
    return _grid_shape(_nearest_index(AGGD_RATIO, r_norm)), left_std, right_std


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


# ---------------------------------------------------------------------------------------------------------------
# BRISQUE features
# ---------------------------------------------------------------------------------------------------------------
def brisque_features(gray: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features (Table I; ``brisque_feature.m``) of grey images ``[..., H, W]`` in [0, 255].

    Per scale: GGD ``(shape, variance)`` of the MSCN map (zero padding), then for each neighbour product
    (``circshift`` [0 1], [1 0], [1 1], [-1 1], circular) the AGGD ``(shape, mean, left variance, right
    variance)``; the second scale is ``imresize(im, 0.5)``. Returns ``[..., 36]``.
    """
    img = np.asarray(gray, dtype=np.float64)
    lead = img.shape[:-2]
    feats: list[np.ndarray] = []
    for scale in range(2):
        coef, _ = mscn(img, mode="constant")
        flat = coef.reshape(*lead, -1)
        shape, sigma = fit_ggd(flat)
        feats += [shape, sigma**2]
        for shift in BRISQUE_SHIFTS:
            pair = (coef * np.roll(coef, shift, axis=(-2, -1))).reshape(*lead, -1)
            a, left_std, right_std = _aggd_moments(pair)
            const = np.sqrt(gamma_fn(1.0 / a) / gamma_fn(3.0 / a))
            feats += [a, _aggd_mean(a, left_std * const, right_std * const), left_std**2, right_std**2]
        if scale == 0:
            img = imresize(img, 0.5)
    return np.stack(feats, axis=-1)


# ---------------------------------------------------------------------------------------------------------------
# NIQE: patch features, pristine model, distance
# ---------------------------------------------------------------------------------------------------------------
def _blocks(x: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping ``size x size`` blocks of ``[..., H, W]`` (H, W multiples of size): ``[..., N, size, size]``
    in MATLAB ``blkproc`` column-major block order."""
    *lead, h, w = x.shape
    nh, nw = h // size, w // size
    b = x.reshape(*lead, nh, size, nw, size)
    b = np.moveaxis(b, -2, -4)  # [..., nw, nh, size, size]: column-major, as blkproc
    return b.reshape(*lead, nh * nw, size, size)


def _niqe_block_features(blocks: np.ndarray) -> np.ndarray:
    """18 features per block (``computefeature.m``): AGGD (shape, mean scale) of the MSCN values, then per
    neighbour product the AGGD (shape, mean, beta_left, beta_right)."""
    lead = blocks.shape[:-2]
    shape, bl, br = fit_aggd(blocks.reshape(*lead, -1))
    feats = [shape, (bl + br) / 2.0]
    for shift in NIQE_SHIFTS:
        pair = blocks * np.roll(blocks, shift, axis=(-2, -1))
        a, pl, pr = fit_aggd(pair.reshape(*lead, -1))
        feats += [a, _aggd_mean(a, pl, pr), pl, pr]
    return np.stack(feats, axis=-1)


def niqe_patch_features(gray: np.ndarray, patch_size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """NIQE features of every ``patch_size`` patch of grey images ``[..., H, W]`` in [0, 255] (NIQE Sec. II).

    The image is cropped to whole patches (top-left kept, as ``computequality.m``); features are computed at full
    and half resolution (patches of ``patch_size // 2``). Returns ``(features [..., N, 36], sharpness [..., N])``
    where sharpness is the patch mean of the local deviation at full resolution (``computemean`` of ``sigma``).
    """
    if patch_size % 2:
        raise ValueError(f"patch_size must be even, got {patch_size}")
    img = np.asarray(gray, dtype=np.float64)
    h, w = img.shape[-2:]
    nh, nw = h // patch_size, w // patch_size
    if nh == 0 or nw == 0:
        raise ValueError(f"image {h}x{w} is smaller than one {patch_size}x{patch_size} NIQE patch")
    img = img[..., : nh * patch_size, : nw * patch_size]
    feats = []
    sharpness = np.empty(0)
    for scale in (1, 2):
        coef, local_std = mscn(img, mode="nearest")
        size = patch_size // scale
        feats.append(_niqe_block_features(_blocks(coef, size)))
        if scale == 1:
            sharpness = _blocks(local_std, size).mean(axis=(-2, -1))
            img = imresize(img, 0.5)
    return np.concatenate(feats, axis=-1), sharpness


def _mvg(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (NaN-ignoring) and covariance over complete rows of ``[N, D]`` features (MATLAB nanmean/nancov)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as MATLAB's nanmean
        mu = np.nanmean(features, axis=0)
    complete = features[np.isfinite(features).all(axis=1)]
    if complete.shape[0] >= 2:
        cov = np.cov(complete, rowvar=False)
    else:  # a single patch has no spread: treat its covariance as zero
        cov = np.zeros((features.shape[1], features.shape[1]))
    return mu, cov


@dataclass
class NiqeModel:
    """Pristine multivariate Gaussian of NIQE patch features (``mu [36]``, ``cov [36, 36]``)."""

    mu: np.ndarray
    cov: np.ndarray
    patch_size: int = 96

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64).reshape(-1)
        self.cov = np.asarray(self.cov, dtype=np.float64)
        d = self.mu.size
        if self.cov.shape != (d, d):
            raise ValueError(f"NIQE model: cov has shape {self.cov.shape}, expected ({d}, {d})")

    def save(self, path: str | Path) -> None:
        """Write ``mu``, ``cov`` and ``patch_size`` to an ``.npz`` (atomically)."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mu=self.mu, cov=self.cov, patch_size=np.int64(self.patch_size))

    @classmethod
    def load(cls, path: str | Path) -> NiqeModel:
        """Read an ``.npz`` written by :meth:`save` or the official parameters as shipped by basicsr
        (``niqe_pris_params.npz``: ``mu_pris_param [1, 36]``, ``cov_pris_param [36, 36]``; patch size 96)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: NIQE parameter file not found")
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if {"mu", "cov"} <= keys:
                size = int(data["patch_size"]) if "patch_size" in keys else 96
                return cls(data["mu"], data["cov"], size)
            if {"mu_pris_param", "cov_pris_param"} <= keys:
                return cls(data["mu_pris_param"], data["cov_pris_param"], 96)
        raise ValueError(f"{path}: not a NIQE parameter file (keys {sorted(keys)}; expected mu/cov or "
                         "mu_pris_param/cov_pris_param)")


def _read_image(item: np.ndarray | str | Path) -> np.ndarray:
    if isinstance(item, str | Path):
        from PIL import Image

        with Image.open(item) as im:
            return np.asarray(im.convert("RGB"))
    return np.asarray(item)


def fit_niqe(images: Iterable[np.ndarray | str | Path], patch_size: int = 96, sharpness_threshold: float = 0.75,
             color: str = "gray", progress: bool = False) -> NiqeModel:
    """Fit the pristine MVG (NIQE Sec. II-B, ``estimatemodelparam.m``) on pristine images (arrays or files).

    Each image contributes its patches whose sharpness exceeds ``sharpness_threshold`` times the image's largest
    patch sharpness; the model is the mean and covariance of their 36 features.
    """
    selected = []
    for item in tqdm(images, desc="NIQE pristine", disable=not progress, leave=False):
        gray = to_gray(_read_image(item), color)
        if gray.shape[0] < patch_size or gray.shape[1] < patch_size:
            log.warning("skipping a %dx%d image smaller than one NIQE patch", *gray.shape)
            continue
        feats, sharp = niqe_patch_features(gray, patch_size)
        selected.append(feats[sharp > sharpness_threshold * sharp.max()])
    if not selected:
        raise ValueError("fit_niqe: no image large enough for one NIQE patch")
    feats = np.concatenate(selected)
    if feats.shape[0] <= NIQE_FEATURES:
        log.warning("NIQE pristine model from only %d patches (36 features): covariance is rank-deficient",
                    feats.shape[0])
    mu, cov = _mvg(feats)
    return NiqeModel(mu, cov, patch_size)


def niqe_distance(features: np.ndarray, model: NiqeModel) -> float:
    """NIQE Eq. (10): ``sqrt((mu_p - mu_d)^T ((S_p + S_d) / 2)^+ (mu_p - mu_d))`` for patch features ``[N, 36]``."""
    mu, cov = _mvg(np.asarray(features, dtype=np.float64))
    diff = model.mu - mu
    inv = np.linalg.pinv((model.cov + cov) / 2.0)
    return float(np.sqrt(max(diff @ inv @ diff, 0.0)))


def niqe(image: np.ndarray, model: NiqeModel, color: str = "gray") -> float:
    """NIQE score of one image (lower is better), with the model's patch size."""
    feats, _ = niqe_patch_features(to_gray(image, color), model.patch_size)
    return niqe_distance(feats, model)


# ---------------------------------------------------------------------------------------------------------------
# Offline demo models from scikit-image's sample photographs
# ---------------------------------------------------------------------------------------------------------------
def _skimage_photos() -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]


@functools.lru_cache(maxsize=8)
def skimage_niqe_model(patch_size: int = 96, color: str = "gray") -> NiqeModel:
    """A NIQE pristine model fitted on all patches of scikit-image's sample photographs (demo / smoke tests only:
    five photos have too few sharp 96 px patches for the 0.75 selection)."""
    return fit_niqe(_skimage_photos(), patch_size=patch_size, sharpness_threshold=0.0, color=color)


@functools.lru_cache(maxsize=4)
def _skimage_brisque_set(size: int = 128, color: str = "gray") -> tuple[np.ndarray, np.ndarray]:
    """BRISQUE features and target quality of the sample photos under graded blur and noise."""
    from skimage.transform import resize

    rng = np.random.default_rng(0)
    feats, targets = [], []
    for photo in _skimage_photos():
        gray = to_gray(photo, color)
        h, w = gray.shape
        k = size / min(h, w)
        gray = resize(gray, (round(h * k), round(w * k)), anti_aliasing=True, preserve_range=True)
        versions = [(gray, 1.0)]
        versions += [(ndimage.gaussian_filter(gray, s), 1.0 - 0.2 * s) for s in (1.0, 2.0, 3.0)]
        versions += [(gray + rng.normal(0.0, s, gray.shape), 1.0 - 0.6 * s / 30.0) for s in (10.0, 20.0, 30.0)]
        for img, target in versions:
            feats.append(brisque_features(np.clip(np.round(img), 0, 255)))
            targets.append(target)
    return np.stack(feats), np.asarray(targets)


# ---------------------------------------------------------------------------------------------------------------
# Registry wrappers
# ---------------------------------------------------------------------------------------------------------------
def batch_to_gray(image: torch.Tensor, color: str = "gray") -> np.ndarray:
    """Undo ImageNet normalisation of ``[B, 3, H, W]`` and return grey images ``[B, H, W]`` in [0, 255]."""
    rgb = denormalise_batch(image.detach().cpu()).permute(0, 2, 3, 1).numpy().astype(np.float64)
    return to_gray(rgb, color)


def _iter_batches(batches: Iterable[dict[str, Any]], desc: str) -> Iterator[dict[str, Any]]:
    yield from tqdm(batches, desc=desc, leave=False, disable=not log.isEnabledFor(logging.INFO))


class _ClassicalModel(IQAModel):
    """Shared surface of the non-trainable classical models: buffers only, ``fit`` instead of gradients."""

    trainable: ClassVar[bool] = False
    inputs = frozenset({"image"})

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


@register("niqe")
class NIQE(_ClassicalModel):
    """NIQE (Mittal et al., IEEE SPL 2013) as a registry model: "higher is better" scores in [0, 1].

    ``pristine`` chooses the pristine MVG: ``"train"`` (default) fits it in :meth:`fit` on the sharp patches of
    the training images rated in the top ``top_quantile`` by normalised MOS of the first attribute; ``"skimage"``
    fits it at construction on scikit-image's sample photos (demo); a path loads an ``.npz`` (see
    :meth:`NiqeModel.load`, including the official parameters). :meth:`fit` then calibrates, per attribute, the
    decreasing logistic ``sigmoid(a - b * niqe)`` on the training images (``calibrate=False`` keeps the fixed
    ``sigmoid(3 - 0.5 * niqe)``). :meth:`niqe_scores` gives the raw NIQE values.
    """

    paper = ("Mittal, Soundararajan, Bovik. Making a 'Completely Blind' Image Quality Analyzer. "
             "IEEE Signal Processing Letters 20(3), 2013")
    smoke_params: ClassVar[dict[str, Any]] = {"pristine": "skimage", "patch_size": 32}
    smoke_image_size: ClassVar[int] = 64

    def __init__(self, attributes: list[str], pristine: str | Path = "train", patch_size: int = 96,
                 sharpness_threshold: float = 0.75, top_quantile: float = 0.25, color: str = "gray",
                 calibrate: bool = True) -> None:
        super().__init__(attributes, color)
        if patch_size % 2 or patch_size < 8:
            raise ValueError(f"patch_size must be an even number >= 8, got {patch_size}")
        if not 0.0 < top_quantile <= 1.0:
            raise ValueError(f"top_quantile must be in (0, 1], got {top_quantile}")
        self.pristine = str(pristine)
        self.patch_size = int(patch_size)
        self.sharpness_threshold = float(sharpness_threshold)
        self.top_quantile = float(top_quantile)
        self.calibrate = bool(calibrate)
        self.register_buffer("mu", torch.zeros(NIQE_FEATURES, dtype=torch.float64))
        self.register_buffer("cov", torch.eye(NIQE_FEATURES, dtype=torch.float64))
        calib = torch.tensor([[3.0, 0.5]], dtype=torch.float64).repeat(len(self.attributes), 1)
        self.register_buffer("calib", calib)
        if self.pristine == "skimage":
            self.set_pristine(skimage_niqe_model(self.patch_size, self.color))
        elif self.pristine != "train":
            model = NiqeModel.load(self.pristine)
            if model.patch_size != self.patch_size:
                log.warning("%s was fitted with %d px patches; using patch_size %d", self.pristine,
                            model.patch_size, self.patch_size)
            self.set_pristine(model)

    def set_pristine(self, model: NiqeModel) -> None:
        """Use ``model`` as the pristine MVG (marks the model fitted)."""
        self.mu.copy_(torch.from_numpy(model.mu))
        self.cov.copy_(torch.from_numpy(model.cov))
        self.fitted.fill_(1.0)

    def pristine_model(self) -> NiqeModel:
        """The current pristine MVG as a :class:`NiqeModel`."""
        return NiqeModel(self.mu.cpu().numpy().copy(), self.cov.cpu().numpy().copy(), self.patch_size)

    def _features(self, image: torch.Tensor) -> np.ndarray:
        gray = batch_to_gray(image, self.color)
        if min(gray.shape[-2:]) < self.patch_size:
            raise ValueError(f"NIQE needs images of at least {self.patch_size}px (got {tuple(gray.shape[-2:])}); "
                             "lower patch_size or raise eval_crop")
        return niqe_patch_features(gray, self.patch_size)

    def _distances(self, feats: np.ndarray) -> np.ndarray:
        model = self.pristine_model()
        return np.array([niqe_distance(f, model) for f in feats])

    @torch.no_grad()
    def niqe_scores(self, image: torch.Tensor) -> torch.Tensor:
        """Raw NIQE values ``[B]`` (lower is better) of ImageNet-normalised images."""
        self._require_fitted()
        feats, _ = self._features(image)
        return torch.from_numpy(self._distances(feats))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        values = self.niqe_scores(image)
        bad = ~torch.isfinite(values)
        if bad.any():
            log.warning("NIQE undefined for %d flat image(s): scored as the worst", int(bad.sum()))
            values = torch.where(bad, torch.full_like(values, 1e3), values)
        calib = self.calib.to(values.dtype).cpu()
        out = {}
        for k, attr in enumerate(self.attributes):
            score = torch.sigmoid(calib[k, 0] - calib[k, 1] * values)
            out[attr] = score.to(device=image.device, dtype=torch.float32)
        return out

    def fit(self, batches: Iterable[dict[str, Any]]) -> None:
        """Fit the pristine MVG (when ``pristine="train"``) and the per-attribute calibration on training
        batches (``image`` and ``mos_norm [B, A]``)."""
        all_feats, all_sharp, targets = [], [], []
        for batch in _iter_batches(batches, "NIQE features"):
            feats, sharp = self._features(batch["image"])
            all_feats.append(feats)
            all_sharp.append(sharp)
            targets.append(batch["mos_norm"].detach().cpu().double().numpy())
        if not all_feats:
            raise ValueError("NIQE.fit: no training batches")
        feats = np.concatenate(all_feats)
        sharp = np.concatenate(all_sharp)
        mos = np.concatenate(targets)
        if self.pristine == "train":
            quality = mos[:, 0]
            rated = np.isfinite(quality)
            if rated.sum() < 2:
                raise ValueError("NIQE.fit: fewer than 2 rated training images for the pristine model")
            cut = np.quantile(quality[rated], 1.0 - self.top_quantile)
            best = np.flatnonzero(rated & (quality >= cut))
            if best.size < 2:
                best = np.argsort(np.where(rated, -quality, np.inf))[:2]
            keep = sharp[best] > self.sharpness_threshold * sharp[best].max(axis=1, keepdims=True)
            pristine = feats[best][keep]
            log.info("NIQE pristine model from %d patches of the %d best-rated training images", len(pristine),
                     best.size)
            mu, cov = _mvg(pristine)
            self.set_pristine(NiqeModel(mu, cov, self.patch_size))
        if self.calibrate:
            values = self._distances(feats)
            for k in range(len(self.attributes)):
                self.calib[k] = torch.from_numpy(_fit_decreasing_logistic(values, mos[:, k], self.calib[k].numpy()))

    def num_parameters(self) -> int:
        """Numbers in the fitted model: pristine mean (36), covariance (666 distinct) and calibration (2/attr)."""
        return NIQE_FEATURES + NIQE_FEATURES * (NIQE_FEATURES + 1) // 2 + 2 * len(self.attributes)


def _fit_decreasing_logistic(x: np.ndarray, y: np.ndarray, default: np.ndarray) -> np.ndarray:
    """Least-squares ``y ~ sigmoid(a - b x)``, monotone decreasing (``b > 0``); ``default`` when fewer than 3
    finite pairs.

    The fit runs on ``z = (x - median) / spread`` with ``b_z >= 1e-3`` and is mapped back (``b = b_z / spread``,
    ``a = a_z + b * median``), so the bound does not depend on the scale of ``x``: NIQE distances of small
    images reach thousands, where a fixed ``b >= 1e-3`` pinned every prediction to the bottom of the range.
    """
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return np.asarray(default, dtype=np.float64)
    x, y = x[ok], y[ok]
    # robust scale (NIQE has far outliers on near-flat images): interquartile range as a normal sd
    q75, q25 = np.percentile(x, [75.0, 25.0])
    spread = max(float(q75 - q25) / 1.349, float(np.std(x)) if q75 == q25 else 0.0, 1e-6)
    centre = float(np.median(x))
    z = (x - centre) / spread

    def residual(p: np.ndarray) -> np.ndarray:
        return expit(p[0] - p[1] * z) - y  # no overflow warning for far outliers

    fit = optimize.least_squares(residual, np.array([0.0, 1.0]), bounds=([-np.inf, 1e-3], [np.inf, np.inf]))
    b = fit.x[1] / spread
    return np.array([fit.x[0] + b * centre, b])


@register("brisque")
class BRISQUE(_ClassicalModel):
    """BRISQUE (Mittal et al., IEEE TIP 2012) as a registry model: one RBF epsilon-SVR per attribute on the 36
    features, predicting normalised MOS.

    ``regressor`` is ``"train"`` (fit in :meth:`fit` on the training split), ``"skimage"`` (a demo SVR trained at
    construction on scikit-image photos under graded blur/noise) or a path to an ``.npz`` written by
    :meth:`save_regressor`. Up to ``max_support_vectors`` training images are used (a seeded subsample beyond);
    the fitted SVRs live in buffers of that capacity so they travel in a weights-only checkpoint.
    """

    paper = ("Mittal, Moorthy, Bovik. No-Reference Image Quality Assessment in the Spatial Domain. "
             "IEEE Transactions on Image Processing 21(12), 2012")
    smoke_params: ClassVar[dict[str, Any]] = {"regressor": "skimage", "max_support_vectors": 64}
    smoke_image_size: ClassVar[int] = 64

    def __init__(self, attributes: list[str], regressor: str | Path = "train", svr_c: float = 1024.0,
                 svr_gamma: float = 0.05, svr_epsilon: float = 0.1, target_scale: float = 100.0,
                 max_support_vectors: int = 4096, color: str = "gray") -> None:
        super().__init__(attributes, color)
        self.regressor = str(regressor)
        self.svr_c, self.svr_gamma, self.svr_epsilon = float(svr_c), float(svr_gamma), float(svr_epsilon)
        self.target_scale = float(target_scale)
        self.max_support_vectors = int(max_support_vectors)
        n_attr, cap = len(self.attributes), self.max_support_vectors
        self.register_buffer("feat_min", torch.zeros(BRISQUE_FEATURES, dtype=torch.float64))
        self.register_buffer("feat_max", torch.ones(BRISQUE_FEATURES, dtype=torch.float64))
        self.register_buffer("support", torch.zeros(n_attr, cap, BRISQUE_FEATURES, dtype=torch.float64))
        self.register_buffer("dual", torch.zeros(n_attr, cap, dtype=torch.float64))
        self.register_buffer("intercept", torch.zeros(n_attr, dtype=torch.float64))
        self.register_buffer("n_support", torch.zeros(n_attr, dtype=torch.int64))
        self.register_buffer("gamma", torch.tensor(self.svr_gamma, dtype=torch.float64))
        if self.regressor == "skimage":
            feats, target = _skimage_brisque_set(color=self.color)
            self.fit_features(feats, np.repeat(target[:, None], n_attr, axis=1))
        elif self.regressor != "train":
            self.load_regressor(self.regressor)

    # -- feature scaling and the SVR as tensors -------------------------------------------------------------
    def scale_features(self, feats: np.ndarray) -> np.ndarray:
        """``svm-scale`` to [-1, 1] with the training range (constant features map to 0)."""
        lo, hi = self.feat_min.cpu().numpy(), self.feat_max.cpu().numpy()
        span = hi - lo
        safe = np.where(span > 0, span, 1.0)
        return np.where(span > 0, 2.0 * (feats - lo) / safe - 1.0, 0.0)

    def fit_features(self, feats: np.ndarray, mos_norm: np.ndarray) -> None:
        """Fit the scaling and one SVR per attribute on features ``[N, 36]`` and targets ``[N, A]`` (NaN = none)."""
        from sklearn.svm import SVR

        feats = np.asarray(feats, dtype=np.float64)
        mos_norm = np.asarray(mos_norm, dtype=np.float64).reshape(len(feats), -1)
        usable = np.isfinite(feats).all(axis=1)
        if not usable.all():
            log.warning("BRISQUE: %d training image(s) with undefined features left out", int((~usable).sum()))
        feats, mos_norm = feats[usable], mos_norm[usable]
        if len(feats) > self.max_support_vectors:
            log.warning("BRISQUE: %d training images, keeping a seeded subsample of %d (max_support_vectors)",
                        len(feats), self.max_support_vectors)
            keep = np.sort(np.random.default_rng(0).choice(len(feats), self.max_support_vectors, replace=False))
            feats, mos_norm = feats[keep], mos_norm[keep]
        if len(feats) < 2:
            raise ValueError("BRISQUE.fit: fewer than 2 training images with defined features")
        self.feat_min.copy_(torch.from_numpy(feats.min(axis=0)))
        self.feat_max.copy_(torch.from_numpy(feats.max(axis=0)))
        scaled = self.scale_features(feats)
        self.support.zero_()
        self.dual.zero_()
        for k, attr in enumerate(self.attributes):
            ok = np.isfinite(mos_norm[:, k])
            if ok.sum() < 2:
                log.warning("BRISQUE: attribute %s has fewer than 2 rated training images; predicting 0.5", attr)
                self.n_support[k] = 0
                self.intercept[k] = 0.5 * self.target_scale
                continue
            svr = SVR(kernel="rbf", C=self.svr_c, gamma=self.svr_gamma, epsilon=self.svr_epsilon)
            svr.fit(scaled[ok], mos_norm[ok, k] * self.target_scale)
            n = len(svr.support_)
            self.n_support[k] = n
            self.support[k, :n] = torch.from_numpy(np.asarray(svr.support_vectors_, dtype=np.float64))
            self.dual[k, :n] = torch.from_numpy(np.asarray(svr.dual_coef_, dtype=np.float64).ravel())
            self.intercept[k] = float(svr.intercept_[0])
        self.gamma.fill_(self.svr_gamma)
        self.fitted.fill_(1.0)

    def predict_features(self, feats: np.ndarray) -> np.ndarray:
        """Normalised MOS ``[N, A]`` for BRISQUE features ``[N, 36]`` (RBF expansion of each attribute's SVR)."""
        self._require_fitted()
        x = torch.from_numpy(self.scale_features(np.asarray(feats, dtype=np.float64)))
        out = np.empty((x.shape[0], len(self.attributes)))
        for k in range(len(self.attributes)):
            n = int(self.n_support[k])
            sv = self.support[k, :n].cpu()
            kernel = torch.exp(-self.gamma.cpu() * torch.cdist(x, sv).square())
            out[:, k] = ((kernel @ self.dual[k, :n].cpu() + self.intercept[k].cpu()) / self.target_scale).numpy()
        return out

    # -- the registry surface -----------------------------------------------------------------------------
    def features(self, image: torch.Tensor) -> np.ndarray:
        """BRISQUE features ``[B, 36]`` of ImageNet-normalised images."""
        return brisque_features(batch_to_gray(image, self.color))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        feats = self.features(image)
        bad = ~np.isfinite(feats).all(axis=1)
        if bad.any():
            log.warning("BRISQUE undefined for %d flat image(s): scored as the worst", int(bad.sum()))
            feats = np.where(np.isfinite(feats), feats, self.feat_min.cpu().numpy())
        pred = self.predict_features(feats)
        pred[bad] = 0.0
        scores = torch.from_numpy(pred).to(device=image.device, dtype=torch.float32)
        return {attr: scores[:, k] for k, attr in enumerate(self.attributes)}

    def fit(self, batches: Iterable[dict[str, Any]]) -> None:
        """Train the SVRs on training batches (``image``, ``mos_norm [B, A]``)."""
        feats, targets = [], []
        for batch in _iter_batches(batches, "BRISQUE features"):
            feats.append(self.features(batch["image"]))
            targets.append(batch["mos_norm"].detach().cpu().double().numpy())
        if not feats:
            raise ValueError("BRISQUE.fit: no training batches")
        self.fit_features(np.concatenate(feats), np.concatenate(targets))

    def save_regressor(self, path: str | Path) -> None:
        """Write the fitted scaling and SVRs to an ``.npz`` (atomically)."""
        self._require_fitted()
        arrays = {name: buf.cpu().numpy() for name, buf in self.named_buffers()}
        arrays["attributes"] = np.asarray(self.attributes, dtype=str)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    def load_regressor(self, path: str | Path) -> None:
        """Load SVRs written by :meth:`save_regressor` (attributes must match; support vectors must fit the
        capacity)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: BRISQUE regressor file not found")
        with np.load(path, allow_pickle=False) as data:
            attrs = [str(a) for a in data["attributes"]]
            if attrs != self.attributes:
                raise ValueError(f"{path}: regressor for attributes {attrs}, model has {self.attributes}")
            n_max = int(data["n_support"].max()) if data["n_support"].size else 0
            if n_max > self.max_support_vectors:
                raise ValueError(f"{path}: {n_max} support vectors exceed max_support_vectors="
                                 f"{self.max_support_vectors}")
            for name in ("feat_min", "feat_max", "intercept", "n_support", "gamma", "fitted"):
                getattr(self, name).copy_(torch.from_numpy(data[name]))
            self.support.zero_()
            self.dual.zero_()
            self.support[:, :n_max] = torch.from_numpy(data["support"][:, :n_max])
            self.dual[:, :n_max] = torch.from_numpy(data["dual"][:, :n_max])

    def num_parameters(self) -> int:
        """Numbers in the fitted model: per attribute support vectors (36 each) + dual coefficients + intercept,
        plus the 72 scaling bounds."""
        n_sv = int(self.n_support.sum())
        return n_sv * (BRISQUE_FEATURES + 1) + len(self.attributes) + 2 * BRISQUE_FEATURES


__all__: Sequence[str] = [
    "BRISQUE", "NIQE", "NiqeModel", "batch_to_gray", "brisque_features", "fit_aggd", "fit_ggd", "fit_niqe",
    "gaussian_window", "imresize", "mscn", "niqe", "niqe_distance", "niqe_patch_features", "skimage_niqe_model",
    "to_gray",
]
