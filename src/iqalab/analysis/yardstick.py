"""The learnability yardstick (issue 23): how far each model is from what a dataset allows.

A model's SRCC against MOS means little on its own on simulated data: a small test set, a noisy panel or a
cache that hides the distortions all cap what any model can reach. Two references are computed on the same
test split(s) the models are scored on, and put next to the model rows:

- **Panel ceiling** (:func:`panel_ceiling`): SRCC and PLCC of the MOS against the simulator's ground-truth
  quality (``true_<attribute>`` in ``images.parquet``, written by :mod:`iqalab.sim.builders`). An oracle that
  predicted the ground truth exactly would score this against MOS; only the panel's noise (rater bias, scale,
  vote quantisation, screening) keeps it below 1. Beside it, the split-half reliability of the panel
  (:func:`split_half_reliability`): raters of each image split at random into two halves, the SRCC of the
  half-means over images, stepped up to the full panel with the Spearman-Brown formula
  (``2 r / (1 + r)``; ITU-R BT.500-style reliability), averaged over random halvings. It needs the votes
  (``ratings.parquet``) but no ground truth, so it exists for real datasets with votes too.
- **Pixel-feature probe** (:func:`probe_scores`): a random forest (scikit-learn, fixed seed) on a few dozen
  hand-made pixel features (:data:`PIXEL_FEATURES`, :func:`pixel_features`) plus the 36 BRISQUE NSS features
  (:func:`iqalab.models.brisque.brisque_features`, Mittal et al. 2012 Table I), computed on the pixels the models
  see (the dataset's square cache, :class:`iqalab.data.cache.ImageCache`), trained on the training split and
  scored on the test split, per attribute, with a percentile bootstrap 95 % CI
  (:func:`iqalab.analysis.significance.bootstrap_ci`). It says what a shallow learner extracts from the pixels
  alone; a trained network far below it has not learned what the data holds.

**Per-scene scales** (``by_scene=True``; the evaluate stage sets it for a dataset whose experiments all use the
``per_scene`` protocol, i.e. PIQ23-style data): a MOS that is a per-scene scale (JOD anchored at each scene's
mean, FHIQA seed 001 Sec. III) carries no offset between scenes, so a pooled SRCC mixes the ranking within scenes
with scene offsets that no model can be right about. Every SRCC, PLCC and CI of such a dataset is then *within
scenes* (:func:`within_scenes`): each scene's mean is subtracted from the scores and from the MOS of the test
images before the pooled correlation, for models, probe and panel ceiling alike.

The model side (:func:`model_scores`) is each experiment's SRCC per split and attribute with the same bootstrap
CI; :func:`summarise_dataset` reduces everything to the done-when of issue 23 (the best trained model's SRCC on
the overall attribute over the probe's, target >= 0.8; the CI half-width of each model's test SRCC, target
< 0.1). Features are cached per image (:class:`iqalab.models.nss.FeatureStore`, keyed by pixels and code), so
every split and every rerun reuses them.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from iqalab.analysis import metrics
from iqalab.analysis.evaluation import primary_attribute, published_untrained, scored_values
from iqalab.analysis.significance import bootstrap_ci
from iqalab.tables import Table, dataset_caption

log = logging.getLogger(__name__)

#: prefix of the ground-truth columns the simulator writes into ``images.parquet``
TRUTH_PREFIX = "true_"
#: row labels of the two references (never models: tables mark them as such)
CEILING = "panel ceiling (MOS vs ground truth)"
RELIABILITY = "panel split-half reliability (Spearman-Brown)"
PROBE = "pixel-feature probe (random forest)"
REFERENCES = (CEILING, RELIABILITY, PROBE)
#: the done-when thresholds of issue 23
RATIO_TARGET = 0.8
CI_TARGET = 0.1

#: the hand-made pixel features, in the order :func:`pixel_features` returns them (then 36 BRISQUE features)
PIXEL_FEATURES: tuple[str, ...] = (
    "luma_mean",        # mean BT.601 luma in [0, 1]: exposure
    "luma_std",         # RMS contrast of the luma
    "luma_p05",         # 5th and 95th luma percentiles: tonal range, crushed shadows
    "luma_p95",
    "clip_hi",          # share of pixels with luma >= 250/255 (blown highlights) and <= 5/255 (crushed)
    "clip_lo",
    "log_lap_var",      # log variance of the 3x3 Laplacian (sharpness; also rises with noise)
    "log_grad_mean",    # log mean Sobel gradient magnitude (edge strength)
    "log_lap_var_half",  # the Laplacian variance after a 2x box reduction (sharpness at a coarser scale)
    "hf_ratio",         # energy of luma - blur(sigma 1) over luma - blur(sigma 3): fine vs coarse detail
    "noise_sigma",      # Immerkaer's fast noise estimate (1996) of the luma, 0-255 scale
    "flat_noise",       # median local std of the fine residual in the flattest 10 % of 8x8 blocks
    "colourfulness",    # Hasler & Suesstrunk (2003) colourfulness, 0-255 scale
    "saturation_mean",  # mean HSV saturation
    "cast_rg",          # mean (R - G) and (B - G) over the image, 0-1 scale: colour cast
    "cast_bg",
    "chroma_std",       # spread of the opponent chroma (rg, yb) around its mean
    "blockiness",       # mean |step| across 8-pixel block borders over the mean |step| inside blocks
    "has_face",         # 1 when the images table gives a face box, else 0
    "face_luma_mean",   # luma mean and std, log Laplacian variance and colourfulness inside the face box
    "face_luma_std",    # (-1 when there is no face box)
    "face_log_lap_var",
    "face_colourfulness",
)
FACE_COLUMNS = ("face_x0", "face_y0", "face_x1", "face_y1")
#: random-forest settings of the probe (fixed; small so that the probe costs seconds)
FOREST = {"n_estimators": 64, "min_samples_leaf": 2, "max_features": 0.4}


class YardstickError(ValueError):
    """The yardstick cannot be computed from what the dataset holds (one line saying what is missing)."""


# -------------------------------------------------------------------------------------------- panel ceiling
def ground_truth(images: pd.DataFrame, attributes: Sequence[str], source: str = "images.parquet") -> pd.DataFrame:
    """The simulator's ground truth (index ``image_id``, one column per attribute) from ``true_<attribute>``.

    Raises :class:`YardstickError` (one line) when a column is missing or holds a non-finite value: real
    datasets have no ground truth, and a simulated one without it cannot give a ceiling.
    """
    missing = [a for a in attributes if f"{TRUTH_PREFIX}{a}" not in images.columns]
    if missing:
        raise YardstickError(f"{source}: no ground truth for {missing} (columns {TRUTH_PREFIX}<attribute>); "
                             "the panel ceiling needs simulated data")
    truth = images[[f"{TRUTH_PREFIX}{a}" for a in attributes]].astype(float)
    truth.index = images["image_id"].astype(str).to_numpy()
    truth.columns = list(attributes)
    bad = [a for a in attributes if not np.isfinite(truth[a].to_numpy()).all()]
    if bad:
        raise YardstickError(f"{source}: non-finite ground truth in {[TRUTH_PREFIX + a for a in bad]}")
    return truth


def panel_ceiling(mos: metrics.ArrayLike, truth: metrics.ArrayLike) -> dict[str, float]:
    """SRCC and PLCC of the MOS against the ground truth over the same images (``srcc``, ``plcc``, ``n``):
    what a model that predicts the ground truth exactly would score against MOS."""
    x, y = metrics.paired_arrays(truth, mos)
    return {"srcc": metrics.srcc(x, y), "plcc": metrics.plcc(x, y), "n": float(x.size)}


def split_half_reliability(ratings: pd.DataFrame, image_ids: Sequence[str], attribute: str | None = None,
                           n_repeats: int = 20, seed: int = 0) -> dict[str, float]:
    """Split-half reliability of the panel over ``image_ids``: the raters of each image split at random into two
    halves, the SRCC of the two half-means over images (``r_half``, mean over ``n_repeats`` halvings) and the
    Spearman-Brown step-up to the full panel ``2 r / (1 + r)`` (``spearman_brown``).

    ``ratings`` is the long canonical table (``image_id, rater, attribute, score``, optional ``kept``: screened
    votes are left out). Images with fewer than two votes are skipped; NaN when fewer than three images remain.
    """
    votes = ratings
    if attribute is not None and "attribute" in votes.columns:
        votes = votes[votes["attribute"].astype(str) == attribute]
    if "kept" in votes.columns:
        votes = votes[votes["kept"].astype(bool)]
    votes = votes[votes["image_id"].astype(str).isin(set(map(str, image_ids)))]
    counts = votes.groupby("image_id")["score"].transform("size")
    votes = votes[counts >= 2]
    if votes["image_id"].nunique() < 3:
        return {"r_half": math.nan, "spearman_brown": math.nan, "n": float(votes["image_id"].nunique())}
    rng = np.random.default_rng(seed)
    codes, uniques = pd.factorize(votes["image_id"].astype(str))
    slot = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    matrix = np.full((len(uniques), int(slot.max()) + 1), np.nan)  # images x votes, NaN-padded
    matrix[codes, slot] = votes["score"].to_numpy(float)
    count = np.isfinite(matrix).sum(axis=1)
    first = np.arange(matrix.shape[1])[None, :] < (count // 2)[:, None]
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        for _ in range(n_repeats):
            keys = np.where(np.isfinite(matrix), rng.random(matrix.shape), np.inf)  # shuffle votes, NaN last
            shuffled = np.take_along_axis(matrix, np.argsort(keys, axis=1), axis=1)
            half_a = np.nanmean(np.where(first, shuffled, np.nan), axis=1)
            half_b = np.nanmean(np.where(first, np.nan, shuffled), axis=1)
            values.append(metrics.srcc(half_a, half_b))
    r = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return {"r_half": r, "spearman_brown": 2 * r / (1 + r) if math.isfinite(r) and r > -1 else math.nan,
            "n": float(len(uniques))}


# ------------------------------------------------------------------------------------------ pixel features
def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of a ``[H, W, 3]`` image in [0, 1]."""
    return rgb @ np.array([0.299, 0.587, 0.114])


def _colourfulness(rgb255: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness: ``sigma_rgyb + 0.3 mu_rgyb`` of the opponent channels."""
    r, g, b = rgb255[..., 0], rgb255[..., 1], rgb255[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _log_lap_var(luma: np.ndarray) -> float:
    return float(np.log(ndimage.laplace(luma).var() + 1e-8))


def _immerkaer_sigma(luma255: np.ndarray) -> float:
    """Immerkaer (1996), "Fast noise variance estimation": the mean |response| of the difference of two
    Laplacians, scaled to the noise standard deviation (0-255 scale)."""
    h, w = luma255.shape
    if h < 3 or w < 3:
        return math.nan
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=float)
    response = ndimage.correlate(luma255, kernel, mode="reflect")[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) / (6.0 * (w - 2) * (h - 2)) * np.abs(response).sum())


def _blocks(x: np.ndarray, size: int = 8) -> np.ndarray:
    h, w = (x.shape[0] // size) * size, (x.shape[1] // size) * size
    return x[:h, :w].reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size * size)


def _blockiness(luma: np.ndarray) -> float:
    """Mean |horizontal + vertical step| across 8-pixel borders over the mean step inside blocks (JPEG)."""
    dx, dy = np.abs(np.diff(luma, axis=1)), np.abs(np.diff(luma, axis=0))
    on_x, on_y = (np.arange(dx.shape[1]) % 8) == 7, (np.arange(dy.shape[0]) % 8) == 7
    if not on_x.any() or not on_y.any():
        return math.nan
    border = dx[:, on_x].mean() + dy[on_y, :].mean()
    inside = dx[:, ~on_x].mean() + dy[~on_y, :].mean()
    return float(border / (inside + 1e-8))


def pixel_features(image: np.ndarray, face_box: Sequence[float] | None = None) -> np.ndarray:
    """The hand-made features of :data:`PIXEL_FEATURES` of one uint8 ``[H, W, 3]`` image.

    ``face_box`` is ``(x0, y0, x1, y1)`` normalised to [0, 1] (the images table's ``face_*`` columns, valid in
    any resize of the frame); without one the face features are -1. Every feature is finite for an image of at
    least 16 x 16 pixels.
    """
    rgb = np.asarray(image, dtype=np.float64) / 255.0
    luma = _luma(rgb)
    lap_var = _log_lap_var(luma)
    h2, w2 = (luma.shape[0] // 2) * 2, (luma.shape[1] // 2) * 2
    half = luma[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).mean(axis=(1, 3))
    fine = luma - ndimage.gaussian_filter(luma, 1.0)
    coarse = luma - ndimage.gaussian_filter(luma, 3.0)
    local_std = _blocks(fine).std(axis=1)
    grad = np.hypot(ndimage.sobel(luma, axis=0), ndimage.sobel(luma, axis=1))
    block_grad = _blocks(grad).mean(axis=1)
    flat = local_std[block_grad <= np.quantile(block_grad, 0.1)] if block_grad.size else local_std
    hsv_max, hsv_min = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = np.where(hsv_max > 0, (hsv_max - hsv_min) / np.maximum(hsv_max, 1e-8), 0.0)
    rg, yb = rgb[..., 0] - rgb[..., 1], 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    feats = [
        luma.mean(), luma.std(), *np.percentile(luma, [5, 95]),
        (luma >= 250 / 255).mean(), (luma <= 5 / 255).mean(),
        lap_var, np.log(grad.mean() + 1e-8), _log_lap_var(half),
        (fine**2).sum() / ((coarse**2).sum() + 1e-12),
        _immerkaer_sigma(luma * 255.0), float(np.median(flat)) * 255.0 if flat.size else math.nan,
        _colourfulness(rgb * 255.0), saturation.mean(),
        (rgb[..., 0] - rgb[..., 1]).mean(), (rgb[..., 2] - rgb[..., 1]).mean(),
        float(np.hypot(rg.std(), yb.std())), _blockiness(luma),
    ]
    face = _face_crop(rgb, face_box)
    if face is None:
        feats += [0.0, -1.0, -1.0, -1.0, -1.0]
    else:
        face_luma = _luma(face)
        feats += [1.0, face_luma.mean(), face_luma.std(), _log_lap_var(face_luma), _colourfulness(face * 255.0)]
    out = np.asarray(feats, dtype=np.float64)
    return out


def _face_crop(rgb: np.ndarray, box: Sequence[float] | None) -> np.ndarray | None:
    """The face box's pixels (at least 4 x 4), or None without a usable box."""
    if box is None or not np.isfinite(np.asarray(box, dtype=float)).all():
        return None
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    c0, c1 = int(np.clip(np.floor(x0 * w), 0, w)), int(np.clip(np.ceil(x1 * w), 0, w))
    r0, r1 = int(np.clip(np.floor(y0 * h), 0, h)), int(np.clip(np.ceil(y1 * h), 0, h))
    if c1 - c0 < 4 or r1 - r0 < 4:
        return None
    return rgb[r0:r1, c0:c1]


def feature_names() -> list[str]:
    """Names of every probe feature: :data:`PIXEL_FEATURES`, then ``brisque_00`` .. ``brisque_35``."""
    from iqalab.models.brisque import BRISQUE_FEATURES

    return [*PIXEL_FEATURES, *(f"brisque_{i:02d}" for i in range(BRISQUE_FEATURES))]


def image_features(images: Sequence[np.ndarray], face_boxes: Sequence[Sequence[float] | None]) -> np.ndarray:
    """Every probe feature of uint8 images ``[n, len(feature_names())]``: :func:`pixel_features` of each and the
    36 BRISQUE features of its grey version (:func:`iqalab.models.brisque.brisque_features` on
    :func:`iqalab.models.nss.to_gray`), batched over images of one shape (the square cache: all of them)."""
    from iqalab.models.brisque import BRISQUE_FEATURES, brisque_features
    from iqalab.models.nss import to_gray

    out = np.empty((len(images), len(PIXEL_FEATURES) + BRISQUE_FEATURES))
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (image, box) in enumerate(zip(images, face_boxes, strict=True)):
        out[i, :len(PIXEL_FEATURES)] = pixel_features(image, box)
        by_shape.setdefault(tuple(np.shape(image)), []).append(i)
    for rows in by_shape.values():
        out[rows, len(PIXEL_FEATURES):] = brisque_features(to_gray(np.stack([images[i] for i in rows])))
    return out


def dataset_features(images: pd.DataFrame, pixels: Any, cache_folder: str | Path | None = None) -> pd.DataFrame:
    """Probe features of every image (index ``image_id``, columns :func:`feature_names`).

    ``pixels`` maps an ``image_id`` to its uint8 pixels: an object with ``row_of`` and ``__getitem__`` (the
    :class:`~iqalab.data.cache.ImageCache` / :class:`~iqalab.data.cache.NativeStore` of the dataset) or a
    mapping. With ``cache_folder`` (``build/features`` in the pipeline) each image's features are kept in a
    :class:`iqalab.models.nss.FeatureStore` keyed by its pixels, its face box and this code, so reruns and
    other splits read them back.
    """
    from iqalab.models.nss import FeatureStore, pixel_key

    store = None if cache_folder is None else FeatureStore(
        Path(cache_folder), "yardstick", {"features": feature_names()},
        ("iqalab.analysis.yardstick", "iqalab.models.brisque", "iqalab.models.nss"))
    has_box = all(c in images.columns for c in FACE_COLUMNS)
    ids = images["image_id"].astype(str).tolist()
    boxes = images[list(FACE_COLUMNS)].to_numpy(float).tolist() if has_box else [None] * len(ids)
    out = np.empty((len(ids), len(feature_names())))
    todo: list[int] = []
    todo_images: list[np.ndarray] = []
    keys: list[str] = []
    for i, image_id in enumerate(ids):
        image = pixels[pixels.row_of[image_id]] if hasattr(pixels, "row_of") else pixels[image_id]
        image = np.ascontiguousarray(image, dtype=np.uint8)
        box = boxes[i]
        key = pixel_key(image) + "-" + ("none" if box is None else "_".join(f"{float(v):.6f}" for v in box))
        cached = store.get(key) if store is not None else None
        if cached is not None and cached["features"].shape == (out.shape[1],):
            out[i] = cached["features"]
            continue
        todo.append(i)
        todo_images.append(image)
        keys.append(key)
    if todo:
        computed = image_features(todo_images, [boxes[i] for i in todo])
        out[todo] = computed
        if store is not None:
            for key, feats in zip(keys, computed, strict=True):
                store.put(key, {"features": feats})
    log.info("probe features of %d images: %d computed, %d from the cache", len(ids), len(todo),
             len(ids) - len(todo))
    return pd.DataFrame(out, index=ids, columns=feature_names())


# ----------------------------------------------------------------------------------------------------- probe
def fit_probe(features: np.ndarray, target: np.ndarray, seed: int = 0) -> Any:
    """The probe's random forest (:data:`FOREST`, ``random_state=seed``, one thread) fitted to ``target``."""
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(**FOREST, random_state=seed, n_jobs=1)
    forest.fit(np.nan_to_num(np.asarray(features, float), nan=0.0, posinf=0.0, neginf=0.0),
               np.asarray(target, float))
    return forest


def probe_scores(features: pd.DataFrame, mos: pd.DataFrame, train_ids: Sequence[str], test_ids: Sequence[str],
                 n_boot: int = 200, seed: int = 0, scenes: pd.Series | None = None) -> pd.DataFrame:
    """The probe on one split: a forest per attribute (column of ``mos``, index ``image_id``) fitted on
    ``train_ids``, scored on ``test_ids``. Returns one row per attribute: ``attribute, srcc, plcc, ci_low,
    ci_high, n`` (CI: percentile bootstrap over test images, ``n_boot`` resamples; NaN when 0). With ``scenes``
    (``image_id`` -> scene) the scores are within scenes (:func:`within_scenes`)."""
    train_ids, test_ids = [str(i) for i in train_ids], [str(i) for i in test_ids]
    if len(train_ids) < 4 or len(test_ids) < 3:
        raise YardstickError(f"split too small for the probe ({len(train_ids)} train, {len(test_ids)} test images)")
    x_train, x_test = features.loc[train_ids].to_numpy(), features.loc[test_ids].to_numpy()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        for attr in mos.columns:
            y_train, y_test = mos.loc[train_ids, attr].to_numpy(float), mos.loc[test_ids, attr].to_numpy(float)
            keep = np.isfinite(y_train)
            pred = fit_probe(x_train[keep], y_train[keep], seed).predict(
                np.nan_to_num(x_test, nan=0.0, posinf=0.0, neginf=0.0))
            labels = None if scenes is None else scenes.loc[test_ids].to_numpy()
            rows.append({"attribute": str(attr), **_with_ci(pred, y_test, n_boot, seed, labels)})
    return pd.DataFrame(rows)


def within_scenes(values: metrics.ArrayLike, scenes: Sequence[Any]) -> np.ndarray:
    """``values`` minus the mean of their scene (``scenes``, aligned): the part of a score that a per-scene
    scale (JOD anchored at each scene's mean, PIQ23) defines. NaNs stay NaN and do not enter a scene's mean."""
    v = np.asarray(values, float)
    labels = np.asarray(scenes)
    if v.shape != labels.shape:
        raise YardstickError(f"within_scenes: {v.shape[0]} values but {labels.shape[0]} scene labels")
    series = pd.Series(v)
    return (series - series.groupby(labels).transform("mean")).to_numpy()


def _with_ci(pred: np.ndarray, mos: np.ndarray, n_boot: int, seed: int,
             scenes: Sequence[Any] | None = None) -> dict[str, float]:
    """SRCC, raw PLCC, the bootstrap 95 % CI of the SRCC and ``n``; with ``scenes`` (aligned labels) all of them
    within scenes (:func:`within_scenes` on both sides)."""
    if scenes is not None:  # centred on the images scored on both sides, so each scene's two means share them
        pred, mos = np.asarray(pred, float), np.asarray(mos, float)
        both = np.isfinite(pred) & np.isfinite(mos)
        pred, mos = np.where(both, pred, np.nan), np.where(both, mos, np.nan)
        pred, mos = within_scenes(pred, scenes), within_scenes(mos, scenes)
    x, y = metrics.paired_arrays(pred, mos)
    out = {"srcc": metrics.srcc(x, y), "plcc": metrics.plcc(x, y), "ci_low": math.nan, "ci_high": math.nan,
           "n": float(x.size)}
    if n_boot > 0 and x.size >= 3:
        ci = bootstrap_ci("srcc", x, y, n_boot, seed)
        out.update(ci_low=ci["ci_low"], ci_high=ci["ci_high"])
    return out


# --------------------------------------------------------------------------------------------- per dataset
def reference_scores(images: pd.DataFrame, splits: pd.DataFrame, attributes: Sequence[str], split_names:
                     Sequence[str], features: pd.DataFrame | None, ratings: pd.DataFrame | None = None,
                     simulated: bool = True, n_boot: int = 200, seed: int = 0,
                     source: str = "images.parquet", by_scene: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Panel ceiling (simulated data with ground truth), split-half reliability (when votes exist) and the
    probe (when ``features`` is given) on each split in ``split_names``: a long frame ``split, attribute,
    reference, srcc, plcc, ci_low, ci_high, n`` (``reference`` one of :data:`REFERENCES`) and the notes on what
    is absent and why. ``by_scene``: ceiling and probe within scenes (per-scene scales, :func:`within_scenes`;
    the split-half reliability compares two panels on the same images and stays pooled)."""
    notes: list[str] = []
    ids = images["image_id"].astype(str)
    scenes: pd.Series | None = None
    if by_scene:
        if "scene" not in images.columns:
            raise YardstickError("by_scene needs a 'scene' column in images.parquet")
        scenes = pd.Series(images["scene"].astype(str).to_numpy(), index=ids.to_numpy())
    mos = images[[f"mos_{a}" for a in attributes]].astype(float)
    mos.index, mos.columns = ids.to_numpy(), list(attributes)
    truth = None
    if simulated:
        try:
            truth = ground_truth(images, attributes, source)
        except YardstickError as err:
            notes.append(f"no panel ceiling: {err}")
    else:
        notes.append("no panel ceiling: real data has no ground truth")
    if ratings is None or ratings.empty:
        notes.append("no split-half reliability: the dataset has no individual votes")
    rows: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        for split in split_names:
            part = splits[splits["split"].astype(str) == str(split)]
            test_set = set(part.loc[part["role"] == "test", "image_id"].astype(str))
            train_set = set(part.loc[part["role"] == "train", "image_id"].astype(str))
            test, train = [i for i in ids if i in test_set], [i for i in ids if i in train_set]
            if not test:
                notes.append(f"split {split}: no test images in splits.parquet")
                continue
            for attr in attributes:
                if truth is not None:
                    stats = _with_ci(truth.loc[test, attr].to_numpy(), mos.loc[test, attr].to_numpy(), n_boot, seed,
                                     None if scenes is None else scenes.loc[test].to_numpy())
                    rows.append({"split": split, "attribute": attr, "reference": CEILING, **stats})
                if ratings is not None and not ratings.empty:
                    rel = split_half_reliability(ratings, test, attr, seed=seed)
                    rows.append({"split": split, "attribute": attr, "reference": RELIABILITY,
                                 "srcc": rel["spearman_brown"], "plcc": math.nan, "ci_low": math.nan,
                                 "ci_high": math.nan, "n": rel["n"]})
            if features is not None:
                try:
                    probe = probe_scores(features, mos, train, test, n_boot, seed, scenes)
                except YardstickError as err:
                    notes.append(f"split {split}: no probe ({err})")
                    continue
                rows.extend({"split": split, "reference": PROBE, **rec} for rec in probe.to_dict("records"))
    columns = ["split", "attribute", "reference", "srcc", "plcc", "ci_low", "ci_high", "n"]
    return pd.DataFrame(rows, columns=columns), notes


def model_scores(test: pd.DataFrame, meta: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str],
                 n_boot: int = 200, seed: int = 0, by_scene: bool = False) -> pd.DataFrame:
    """Each experiment's test SRCC per split and attribute with its bootstrap 95 % CI: ``experiment, model,
    trained, split, attribute, srcc, plcc, ci_low, ci_high, n``. ``test`` holds one dataset's within-dataset
    test predictions; a published untrained model (NIQE, BRISQUE, zero-shot) is scored on its raw score as in
    the tables (:func:`iqalab.analysis.evaluation.scored_values`) and marked ``trained=False``. ``by_scene``:
    scores and MOS within scenes (:func:`within_scenes`, the ``scene`` column of ``test``)."""
    if by_scene and "scene" not in test.columns:
        raise YardstickError("by_scene needs a 'scene' column in the predictions")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        for (exp, split, attr), part in test.groupby(["experiment", "split", "attribute"], sort=False):
            info = meta[exp]
            stats = _with_ci(scored_values(part, info), part["mos"].to_numpy(float), n_boot, seed,
                             part["scene"].astype(str).to_numpy() if by_scene else None)
            trained = not published_untrained(info) and (info.get("notes") or {}).get("trained") is not False
            rows.append({"experiment": exp, "model": labels.get(exp, exp), "trained": trained, "split": split,
                         "attribute": attr, **stats})
    columns = ["experiment", "model", "trained", "split", "attribute", "srcc", "plcc", "ci_low", "ci_high", "n"]
    return pd.DataFrame(rows, columns=columns)


def summarise_dataset(models: pd.DataFrame, references: pd.DataFrame, attribute: str,
                      by_scene: bool = False) -> dict[str, Any]:
    """The done-when of issue 23 on one dataset and ``attribute`` (the overall one).

    ``probe_srcc``: the probe's mean SRCC over the splits of the best trained model; ``best_model`` /
    ``best_srcc``: the trained model with the highest mean SRCC; ``ratio = best_srcc / probe_srcc`` and
    ``ratio_met`` (>= :data:`RATIO_TARGET`); ``ci_half_width_max``: the widest half-width ``(high - low) / 2`` of
    any model's test SRCC CI (every split, every model), ``widest_model`` (whose it is) and ``ci_met``
    (< :data:`CI_TARGET`); ``best_ci_half_width``: the best trained model's own half-width (mean over its splits)
    and ``best_ci_met``; ``ceiling_srcc``; ``by_scene``: whether the scores are within scenes (as given: the
    frames were computed with it). Values are NaN / None where an input is absent.
    """
    out: dict[str, Any] = {"attribute": attribute, "by_scene": bool(by_scene), "best_model": None, "best_srcc": math.nan,
                           "probe_srcc": math.nan, "ratio": math.nan, "ratio_met": None,
                           "ci_half_width_max": math.nan, "widest_model": None, "ci_met": None,
                           "best_ci_half_width": math.nan, "best_ci_met": None, "ceiling_srcc": math.nan}
    mine = models[models["attribute"] == attribute]
    refs = references[references["attribute"] == attribute]
    ceiling = refs.loc[refs["reference"] == CEILING, "srcc"]
    if len(ceiling):
        out["ceiling_srcc"] = float(ceiling.mean())
    half = (mine["ci_high"] - mine["ci_low"]) / 2.0
    if np.isfinite(half.to_numpy(float)).any():
        out["ci_half_width_max"] = float(half.max())
        out["widest_model"] = str(mine.loc[half.idxmax(), "model"])
        out["ci_met"] = bool(out["ci_half_width_max"] < CI_TARGET)
    trained = mine[mine["trained"].astype(bool)]
    if trained.empty:
        return out
    means = trained.groupby("model")["srcc"].mean().dropna()
    if means.empty:
        return out
    best = str(means.idxmax())
    out.update(best_model=best, best_srcc=float(means[best]))
    best_half = half[trained.index[trained["model"] == best]].dropna()
    if len(best_half):
        out["best_ci_half_width"] = float(best_half.mean())
        out["best_ci_met"] = bool(out["best_ci_half_width"] < CI_TARGET)
    best_splits = set(trained.loc[trained["model"] == best, "split"])
    probe = refs[(refs["reference"] == PROBE) & refs["split"].isin(best_splits)]["srcc"]
    if len(probe):
        out["probe_srcc"] = float(probe.mean())
        if out["probe_srcc"] > 0:
            out["ratio"] = out["best_srcc"] / out["probe_srcc"]
            out["ratio_met"] = bool(out["ratio"] >= RATIO_TARGET)
    return out


__all__ = ["CEILING", "CI_TARGET", "PIXEL_FEATURES", "PROBE", "RATIO_TARGET", "REFERENCES", "RELIABILITY",
           "YardstickError", "dataset_features", "feature_names", "fit_probe", "ground_truth",
           "image_features", "model_scores", "panel_ceiling", "pixel_features", "probe_scores", "reference_scores",
           "split_half_reliability", "summarise_dataset", "summary_table", "within_scenes", "yardstick_table"]


# --------------------------------------------------------------------------------------------------- table
#: how the SRCCs of a dataset were computed, for captions (key: ``by_scene``)
_SCORED = {False: "",
           True: "MOS are per-scene scales (protocol per_scene), so every SRCC, PLCC and CI here is within scenes: "
                 "each scene's mean is subtracted from the scores and from the MOS of its test images before the "
                 "pooled correlation (a per-scene scale has no offset between scenes). "}


def _verdict(summary: Mapping[str, Any]) -> str:
    """The done-when sentence of :func:`summarise_dataset`."""
    attr = summary["attribute"]
    if summary["best_model"] is None or not math.isfinite(summary["probe_srcc"]):
        ratio = f"ratio to the probe on {attr}: not available (no trained model or no probe)"
    else:
        met = "met" if summary["ratio_met"] else "NOT met"
        ratio = (f"best trained model on {attr}: {summary['best_model']}, SRCC {summary['best_srcc']:.3f} = "
                 f"{summary['ratio']:.2f} x the probe's {summary['probe_srcc']:.3f} (target >= {RATIO_TARGET}: {met})")
    if math.isfinite(summary["ci_half_width_max"]):
        met = "met" if summary["ci_met"] else "NOT met"
        ci = (f"widest 95 % CI of a model's test SRCC on {attr}: +/- {summary['ci_half_width_max']:.3f} "
              f"(target < {CI_TARGET}: {met})")
    else:
        ci = "no bootstrap CIs (evaluate.bootstrap is 0)"
    return f"Issue 23 done-when: {ratio}; {ci}."


def yardstick_table(dataset: str, simulated: bool, models: pd.DataFrame, references: pd.DataFrame,
                    attributes: Sequence[str], notes: Sequence[str] = (), pixels: str = "",
                    summary: Mapping[str, Any] | None = None) -> Table:
    """``yardstick_<dataset>``: the models' test SRCC per attribute (mean +- std over splits) with the reference
    rows (:data:`REFERENCES`, marked "reference, not a model" and never ranked), the CI half-width of the
    primary attribute's SRCC and each model's ratio to the probe on it; the caption gives the done-when
    verdict (``summary``: :func:`summarise_dataset` on the primary attribute, computed here when not given),
    what the references are, and the notes."""
    primary = primary_attribute(list(attributes))
    long = pd.concat([models.assign(kind=np.where(models["trained"].astype(bool), "model", "model (untrained)")),
                      references.rename(columns={"reference": "model"}).assign(kind="reference, not a model")],
                     ignore_index=True)
    long["half"] = (long["ci_high"] - long["ci_low"]) / 2.0
    keys = ["dataset", "row", "model"]
    long = long.assign(dataset=dataset, row=long["kind"])
    order = list(dict.fromkeys(zip(long["dataset"], long["row"], long["model"], strict=True)))
    index = pd.MultiIndex.from_tuples(order, names=keys)
    grouped = long.groupby([*keys, "attribute"], sort=False)
    mean, std = grouped["srcc"].mean(), grouped["srcc"].std(ddof=1)
    data = pd.DataFrame(index=index)
    spread = pd.DataFrame(index=index)
    for attr in attributes:
        column = (str(attr), "SRCC")
        data[column] = [mean.get((*key, attr), math.nan) for key in order]
        spread[column] = [std.get((*key, attr), math.nan) for key in order]
    half = grouped["half"].mean()
    data[(primary, "SRCC 95% CI ±")] = [half.get((*key, primary), math.nan) for key in order]
    if summary is None:
        summary = summarise_dataset(models, references, primary)
    probe = summary["probe_srcc"]
    data[(primary, "ratio to probe")] = [
        mean.get((*key, primary), math.nan) / probe if key[1] != "reference, not a model" and probe > 0
        else math.nan for key in order]
    n_splits = long.groupby(keys, sort=False)["split"].nunique()
    data[("", "n_splits")] = [int(n_splits.get(key, 0)) for key in order]
    data.columns = pd.MultiIndex.from_tuples(data.columns)
    spread.columns = pd.MultiIndex.from_tuples(spread.columns)
    caption = (f"{dataset_caption({dataset: simulated})}. Learnability yardstick: the models' test SRCC against "
               f"MOS next to two references that are not models (never ranked): the panel ceiling (SRCC of the "
               f"MOS against the simulator's ground truth on the same test images: a model predicting the ground "
               f"truth exactly scores this) with the panel's split-half reliability (Spearman-Brown), and a "
               f"pixel-feature probe (random forest on {len(feature_names())} hand-made and BRISQUE features of "
               f"{pixels or 'the images the models see'}, trained on each split's training images). Mean ± std "
               f"over the test splits the models were scored on; CI: percentile bootstrap 95 % over test "
               f"images, half-width averaged over splits. {_SCORED[bool(summary.get('by_scene'))]}"
               f"{_verdict(summary)}")
    if notes:
        caption += " " + "; ".join(dict.fromkeys(notes)) + "."
    references_keys = tuple(key for key in order if key[1] == "reference, not a model")
    table = Table(f"yardstick_{dataset}", data, caption, spread, group_levels=("dataset",),
                  directions={(primary, "SRCC 95% CI ±"): "min"}, reference_rows=references_keys)
    return table


def summary_table(summaries: Mapping[str, Mapping[str, Any]], simulated: Mapping[str, bool]) -> Table:
    """``yardstick_summary``: one row per dataset (``{dataset: summarise_dataset(...)}``) with the done-when of
    issue 23: the best trained model on the overall attribute, its SRCC and the probe's, their ratio (>=
    :data:`RATIO_TARGET`), the best model's own CI half-width and the widest of any model (< :data:`CI_TARGET`),
    each with its verdict. The README shows this file as it is (``scripts/sync_readme_results.py``)."""
    def verdict(flag: bool | None) -> str:
        return "–" if flag is None else "met" if flag else "NOT met"

    rows = {}
    for dataset, s in summaries.items():
        rows[dataset] = {
            "SRCC scored": "within scenes" if s.get("by_scene") else "pooled",
            "best trained model": s["best_model"] or "–",
            "SRCC": s["best_srcc"], "probe SRCC": s["probe_srcc"],
            f"ratio (>= {RATIO_TARGET})": s["ratio"], "ratio verdict": verdict(s["ratio_met"]),
            f"its CI ± (< {CI_TARGET})": s["best_ci_half_width"], "its CI verdict": verdict(s["best_ci_met"]),
            f"widest CI ± of any model (< {CI_TARGET})": s["ci_half_width_max"],
            "widest: whose": s["widest_model"] or "–", "widest verdict": verdict(s["ci_met"])}
    data = pd.DataFrame.from_dict(rows, orient="index")
    data.index.name = "dataset"
    attributes = sorted({str(s["attribute"]) for s in summaries.values()})
    caption = (f"{dataset_caption(dict(simulated))}. Learnability yardstick, summary of the yardstick_<dataset> "
               f"tables (issue 23 done-when) on {', '.join(attributes) or 'no attribute'}: the best trained model "
               f"(highest mean test SRCC over its splits) against the pixel-feature probe on the same splits "
               f"(ratio target >= {RATIO_TARGET}); 95 % bootstrap CI half-widths of the test SRCC, the best "
               f"model's (mean over its splits) and the widest of any model, trained or not, on any split "
               f"(target < {CI_TARGET}). SRCC scored 'within scenes': the dataset's MOS are per-scene scales, and "
               f"each scene's mean is subtracted from scores and MOS before the pooled SRCC (yardstick_<dataset> "
               f"says so too).")
    return Table("yardstick_summary", data, caption, digits=3, bold=False)


#: metric names in paper-table headers, and the yardstick value each one reads
_HEADER_METRICS = {"SRCC": "srcc", "SROCC": "srcc", "PLCC (raw)": "plcc"}
#: the references shown in paper tables (the split-half reliability stays in the yardstick table)
PAPER_REFERENCES = (CEILING, PROBE)


def append_reference_rows(table: Table, references: Mapping[str, tuple[pd.DataFrame, Sequence[str]]],
                          bare: str | None = None) -> bool:
    """Add the panel ceiling and probe rows of each dataset in ``references`` (``{dataset: (reference frame of
    :func:`reference_scores`, attributes)}``, simulated datasets only) to a paper table whose index has
    ``dataset`` and ``model`` levels, under its model rows, as reference rows (never ranked; the ``model``
    cell says "not a model"). Filled cells: SRCC / SROCC and raw PLCC of an attribute, from a ``(attribute,
    metric)`` column or, in a table with a ``metric`` index level, an attribute column; a bare metric column
    only when ``bare`` says what it holds (``"primary"``: the primary attribute, ``"mean"``: the mean over the
    attributes, as the ablation tables average). Every other cell is empty; a row without any filled cell is
    not added. Returns whether rows were added (the caption then says what they are)."""
    names = list(table.data.index.names)
    if "dataset" not in names or "model" not in names or table.data.empty:
        return False
    rows, keys = [], []
    for dataset in dict.fromkeys(table.data.index.get_level_values("dataset")):
        if dataset not in references:
            continue
        frame, attributes = references[dataset]
        primary = primary_attribute(list(attributes))
        means = frame.groupby(["reference", "attribute"])[["srcc", "plcc"]].mean()
        metric_rows = (list(dict.fromkeys(table.data.index.get_level_values("metric")))
                       if "metric" in names else [None])
        has_raw = any("PLCC (raw)" in str(label) for label in [*table.data.columns, *metric_rows])
        for ref in PAPER_REFERENCES:
            if ref not in set(frame["reference"]):
                continue
            for metric in metric_rows:
                key = tuple({"dataset": dataset, "model": f"{ref}: not a model", "metric": metric,
                             "attribute": primary}.get(level, "") for level in names)
                values = []
                for column in table.data.columns:
                    levels = [str(p) for p in column if str(p) != ""] if isinstance(column, tuple) else [str(column)]
                    attr, head = (levels[0], levels[-1]) if len(levels) > 1 else (bare, levels[-1] if levels else "")
                    if metric is not None and head in attributes:
                        attr, head = head, str(metric)
                    stat = _HEADER_METRICS.get(head)
                    if head == "PLCC" and not has_raw:
                        stat = "plcc"  # a table whose only PLCC is raw
                    if stat is None or attr is None:
                        values.append(math.nan)
                    elif attr == "mean":
                        values.append(float(means.loc[ref, stat].mean()))
                    else:
                        attr = primary if attr == "primary" else attr
                        values.append(float(means.loc[(ref, attr), stat]) if (ref, attr) in means.index
                                      else math.nan)
                if np.isfinite(values).any():
                    rows.append(values)
                    keys.append(key)
    if not rows:
        return False
    extra = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(keys, names=names), columns=table.data.columns)
    table.data = pd.concat([table.data, extra])
    if table.std is not None:
        table.std = table.std.reindex(table.data.index)
    table.reference_rows = (*table.reference_rows, *keys)
    table.caption += (" Rows marked 'not a model' are the learnability yardstick (issue 23; never ranked): the "
                      "panel ceiling (SRCC/raw PLCC of the MOS against the simulator's ground truth on the test "
                      "images) and the pixel-feature probe (random forest on hand-made and BRISQUE features); the "
                      "full yardstick is in yardstick_<dataset>.")
    return True
