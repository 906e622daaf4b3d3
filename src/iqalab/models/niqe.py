"""NIQE: A. Mittal, R. Soundararajan, A. C. Bovik, "Making a 'Completely Blind' Image Quality Analyzer",
IEEE Signal Processing Letters 20(3):209-212, 2013. Original code: http://live.ece.utexas.edu/research/quality/
(``niqe_release.zip``: ``computequality.m``, ``computefeature.m``, ``estimatemodelparam.m``).

Computed as the released MATLAB code, vectorised with NumPy over images and patches (building blocks in
:mod:`iqalab.models.nss`):

- Features (Sec. II-C): per 96x96 patch (48x48 at the second scale) the AGGD shape and mean scale of the MSCN
  values and the AGGD shape, mean, left and right scales of the four neighbour products (shift [1 -1] for the
  fourth, as in ``computefeature.m``): 36 features per patch. The pristine model keeps the patches whose mean
  local deviation (sharpness) exceeds 0.75 of the image's maximum (Sec. II-B); a test image uses all patches.
- Quality is the distance of Eq. (10) between the two multivariate Gaussians (pseudo-inverse of the mean
  covariance; patches with a NaN feature left out of the covariance as MATLAB's ``nancov``).

Images the original cannot score. A feature of a patch is undefined (NaN) where ``estimateaggdparam.m`` meets an
empty side (a flat patch: no negative or positive MSCN product). ``computequality.m`` takes ``nanmean`` and
``nancov`` over the image's patches; when no patch has all 36 features defined (a flat image, for one),
``nancov`` is NaN (no complete row) and the original has no score (``pinv`` of NaN fails). Here such an image is
handled in one of two ways, each counted (recorded with the predictions, :meth:`NIQE.run_notes`, so that tables can
say how many): when every feature is defined in some patch, its patch covariance is taken as zero (as ``nancov`` of
a single complete patch) and the raw NIQE is finite (:attr:`NIQE.n_fallback`); when a feature is undefined in
every patch, the raw NIQE stays NaN, as in the original (:attr:`NIQE.n_undefined`): metrics on the raw score leave
the image out, and the [0, 1] outputs are the worst, 0. An image smaller than one patch has no patch at all and is refused (:class:`ImageTooSmallError`).

The registry model ``niqe`` is the published NIQE by default: the pristine model of the LIVE release
(``models/data/niqe_live_pristine.npz``, 36-d mean and 36x36 covariance of 125 pristine photographs; see that
folder's README for provenance), grey input as ``rgb2gray``, 96 px patches, each image at full resolution and
no training. Its raw score (lower is better) is the published NIQE; :meth:`NIQE.predict_with_raw` returns it
beside the [0, 1] outputs (a fixed decreasing map ``sigmoid(3 - 0.5 * niqe)``), and the tables correlate the
raw score (sign stated in their captions). ``pristine="train"`` is the labelled variant "NIQE, pristine model
refitted": the pristine MVG is fitted on the best-rated training images (top ``top_quantile`` by normalised MOS
of the first attribute) and, with ``calibrate=True`` (its default), a decreasing logistic per attribute maps
the distance to normalised MOS.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import optimize
from scipy.special import expit
from tqdm.auto import tqdm

from iqalab.io import atomic_path
from iqalab.models.nss import (
    ClassicalModel,
    _aggd_mean,
    _iter_batches,
    fit_aggd,
    imresize,
    mscn,
    read_image,
    skimage_photos,
    to_gray,
)
from iqalab.models.registry import register

log = logging.getLogger(__name__)

NIQE_FEATURES = 36
NIQE_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
#: the pristine model of the original NIQE release (LIVE, 96 px patches)
OFFICIAL_PRISTINE = Path(__file__).with_name("data") / "niqe_live_pristine.npz"
#: the patch size of the official pristine model (``blocksizerow = blocksizecol = 96`` in the NIQE release)
OFFICIAL_PATCH_SIZE = 96


class ImageTooSmallError(ValueError):
    """An image smaller than one NIQE patch. ``computequality.m`` (Mittal et al., IEEE SPL 2013) scores the whole
    ``patch_size`` blocks of the image and has no score without one; the message (one line) says what can be done
    where: a checkpoint or export keeps its ``patch_size``, a params-driven run or ``iqalab score --model niqe``
    can lower it (below the official 96 px, not the published NIQE)."""

    def __init__(self, width: int, height: int, patch_size: int, published_patch: int | None = None) -> None:
        self.width, self.height, self.patch_size = int(width), int(height), int(patch_size)
        caveat = ("" if published_patch is None else
                  f", which is then no longer the published NIQE (its LIVE pristine model was fitted on "
                  f"{published_patch} px patches)")
        super().__init__(
            f"NIQE needs images of at least {patch_size}px on each side (one {patch_size}x{patch_size} patch) and "
            f"this one is {width}x{height} px (width x height): a checkpoint or export (iqalab score --checkpoint) "
            f"keeps the patch_size it was built with, so only a larger image can be scored; otherwise lower "
            f"patch_size (params.yaml: "
            f"experiments.<name>.model.patch_size; iqalab score --model niqe: --option patch_size=N){caveat}")


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
        raise ValueError(f"image {w}x{h} px (width x height) is smaller than one {patch_size}x{patch_size} NIQE "
                         "patch")
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


def undefined_in_original(features: np.ndarray) -> bool:
    """True when no patch (row of ``[N, 36]`` features) has every feature defined: MATLAB's ``nancov`` then has no
    complete row and returns NaN, so ``computequality.m`` (Mittal et al., IEEE SPL 2013) has no score for the
    image (a flat image, for one). :func:`niqe_distance` still gives one through :func:`_mvg`'s zero covariance
    when every feature is defined in some patch, and NaN otherwise; :class:`NIQE` counts both."""
    feats = np.asarray(features, dtype=np.float64)
    return not bool(np.isfinite(feats).all(axis=-1).any())


def _mvg(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (NaN-ignoring) and covariance over complete rows of ``[N, D]`` features (MATLAB nanmean/nancov).

    With one complete row the covariance is zero, as ``nancov``; with none, where ``nancov`` is NaN, it is also
    taken as zero (iqalab's fallback: :func:`undefined_in_original`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as MATLAB's nanmean
        mu = np.nanmean(features, axis=0)
    complete = features[np.isfinite(features).all(axis=1)]
    if complete.shape[0] >= 2:
        cov = np.cov(complete, rowvar=False)
    else:  # one complete patch has no spread (nancov: zero); none (nancov: NaN) is taken as zero too (fallback)
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


def fit_niqe(images: Iterable[np.ndarray | str | Path], patch_size: int = 96, sharpness_threshold: float = 0.75,
             color: str = "gray", progress: bool = False) -> NiqeModel:
    """Fit the pristine MVG (NIQE Sec. II-B, ``estimatemodelparam.m``) on pristine images (arrays or files).

    Each image contributes its patches whose sharpness exceeds ``sharpness_threshold`` times the image's largest
    patch sharpness; the model is the mean and covariance of their 36 features.
    """
    selected = []
    for item in tqdm(images, desc="NIQE pristine", disable=not progress, leave=False):
        gray = to_gray(read_image(item), color)
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
    """NIQE Eq. (10): ``sqrt((mu_p - mu_d)^T ((S_p + S_d) / 2)^+ (mu_p - mu_d))`` for patch features ``[N, 36]``.

    NaN when a feature is undefined in every patch (``nanmean`` is NaN); finite, with the image's covariance
    taken as zero, when no patch is complete but every feature is defined somewhere (the original has no score
    for either: :func:`undefined_in_original`)."""
    mu, cov = _mvg(np.asarray(features, dtype=np.float64))
    diff = model.mu - mu
    inv = np.linalg.pinv((model.cov + cov) / 2.0)
    return float(np.sqrt(max(diff @ inv @ diff, 0.0)))


def niqe(image: np.ndarray, model: NiqeModel, color: str = "gray") -> float:
    """NIQE score of one image (lower is better), with the model's patch size."""
    feats, _ = niqe_patch_features(to_gray(image, color), model.patch_size)
    return niqe_distance(feats, model)




@functools.lru_cache(maxsize=8)
def skimage_niqe_model(patch_size: int = 96, color: str = "gray") -> NiqeModel:
    """A NIQE pristine model fitted on all patches of scikit-image's sample photographs (demo / smoke tests only:
    five photos have too few sharp 96 px patches for the 0.75 selection)."""
    return fit_niqe(skimage_photos(), patch_size=patch_size, sharpness_threshold=0.0, color=color)



@register("niqe")
class NIQE(ClassicalModel):
    """NIQE (Mittal et al., IEEE SPL 2013) as a registry model.

    ``pristine`` chooses the pristine MVG: ``"official"`` (default) the LIVE release's model, shipped with
    iqalab; ``"train"`` fits it in :meth:`fit` on the sharp patches of the training images rated in the top
    ``top_quantile`` by normalised MOS of the first attribute (the labelled variant "NIQE, pristine model
    refitted"); ``"skimage"`` fits it at construction on scikit-image's sample photos (demo); a path loads an
    ``.npz`` (see :meth:`NiqeModel.load`). ``calibrate`` (default: only with ``pristine="train"``) fits, per
    attribute, the decreasing logistic ``sigmoid(a - b * niqe)`` on the training images in :meth:`fit`; without
    it the outputs are the fixed ``sigmoid(3 - 0.5 * niqe)``. The published score is the raw distance
    (:meth:`niqe_scores`, :meth:`predict_with_raw`; lower is better).
    """

    paper = ("Mittal, Soundararajan, Bovik. Making a 'Completely Blind' Image Quality Analyzer. "
             "IEEE Signal Processing Letters 20(3), 2013")
    raw_score_name: ClassVar[str | None] = "NIQE"
    smoke_params: ClassVar[dict[str, Any]] = {"pristine": "skimage", "patch_size": 32}
    smoke_image_size: ClassVar[int] = 64

    def __init__(self, attributes: list[str], pristine: str | Path = "official", patch_size: int = 96,
                 sharpness_threshold: float = 0.75, top_quantile: float = 0.25, color: str = "gray",
                 calibrate: bool | None = None) -> None:
        super().__init__(attributes, color)
        if patch_size % 2 or patch_size < 8:
            raise ValueError(f"patch_size must be an even number >= 8, got {patch_size}")
        if not 0.0 < top_quantile <= 1.0:
            raise ValueError(f"top_quantile must be in (0, 1], got {top_quantile}")
        self.pristine = str(pristine)
        self.patch_size = int(patch_size)
        self.sharpness_threshold = float(sharpness_threshold)
        self.top_quantile = float(top_quantile)
        self.calibrate = self.pristine == "train" if calibrate is None else bool(calibrate)
        #: images given a finite raw NIQE by the zero-covariance fallback (module docstring), since construction
        self.n_fallback = 0
        #: images whose raw NIQE is NaN (a feature undefined in every patch; outputs 0), since construction
        self.n_undefined = 0
        self.register_buffer("mu", torch.zeros(NIQE_FEATURES, dtype=torch.float64))
        self.register_buffer("cov", torch.eye(NIQE_FEATURES, dtype=torch.float64))
        calib = torch.tensor([[3.0, 0.5]], dtype=torch.float64).repeat(len(self.attributes), 1)
        self.register_buffer("calib", calib)
        if self.pristine == "skimage":
            self.set_pristine(skimage_niqe_model(self.patch_size, self.color))
        elif self.pristine != "train":
            path = OFFICIAL_PRISTINE if self.pristine == "official" else Path(self.pristine)
            model = NiqeModel.load(path)
            if model.patch_size != self.patch_size:
                log.warning("%s was fitted with %d px patches; using patch_size %d", path, model.patch_size,
                            self.patch_size)
            self.set_pristine(model)

    @property
    def ready_without_training(self) -> bool:
        return self.pristine != "train" and not self.calibrate

    @property
    def variant(self) -> str:
        """How the tables label this configuration (the papers' "NIQE" is the official, untrained one)."""
        if self.pristine == "official":
            return "NIQE" if not self.calibrate else "NIQE (logistic fitted on training MOS)"
        if self.pristine == "train":
            return "NIQE, pristine model refitted"
        return f"NIQE (pristine model: {Path(self.pristine).name})"

    def run_notes(self) -> dict[str, Any]:
        """As :meth:`ClassicalModel.run_notes`, plus two counts over fitting and prediction (the engine records
        the notes after predicting, so the test images are in them), as BRISQUE's ``n_fallback``:

        - ``n_fallback``: images given a finite raw NIQE although the original (Mittal et al. 2013,
          ``computequality.m``) has no score for them, no patch having all 36 features defined while every
          feature is defined in some patch: the image's patch covariance taken as zero (module docstring);
        - ``n_undefined``: images whose raw NIQE is NaN (a feature undefined in every patch, e.g. a flat image),
          as the original's: left out of metrics on the raw score and of the calibration fit in :meth:`fit`,
          their [0, 1] outputs the worst (0).
        """
        return super().run_notes() | {"n_fallback": self.n_fallback, "n_undefined": self.n_undefined}

    def set_pristine(self, model: NiqeModel) -> None:
        """Use ``model`` as the pristine MVG (marks the model fitted)."""
        self.mu.copy_(torch.from_numpy(model.mu))
        self.cov.copy_(torch.from_numpy(model.cov))
        self.fitted.fill_(1.0)

    def pristine_model(self) -> NiqeModel:
        """The current pristine MVG as a :class:`NiqeModel`."""
        return NiqeModel(self.mu.cpu().numpy().copy(), self.cov.cpu().numpy().copy(), self.patch_size)

    feature_name: ClassVar[str] = "niqe"

    def feature_config(self) -> dict[str, Any]:
        """Grey conversion and patch size: the settings that change the patch features."""
        return {"color": self.color, "patch_size": self.patch_size}

    def compute_features(self, gray: np.ndarray) -> dict[str, np.ndarray]:
        """Patch features ``[B, N, 36]`` and patch sharpness ``[B, N]`` (:func:`niqe_patch_features`)."""
        feats, sharp = niqe_patch_features(gray, self.patch_size)
        return {"features": feats, "sharpness": sharp}

    def _features(self, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        height, width = (int(n) for n in image.shape[-2:])
        if min(height, width) < self.patch_size:
            published = OFFICIAL_PATCH_SIZE if self.pristine == "official" else None
            raise ImageTooSmallError(width, height, self.patch_size, published)
        out = self.image_features(image)  # once per image while a feature cache is active (nss.feature_cache)
        return out["features"], out["sharpness"]

    def _distances(self, feats: Iterable[np.ndarray]) -> np.ndarray:
        """NIQE Eq. (10) per image; counts the images the original cannot score (:func:`undefined_in_original`):
        a finite distance from the zero-covariance fallback in :attr:`n_fallback`, a NaN one in
        :attr:`n_undefined`."""
        model = self.pristine_model()
        values, fallback = [], 0
        for f in feats:
            values.append(niqe_distance(f, model))
            fallback += bool(np.isfinite(values[-1]) and undefined_in_original(f))
        out = np.array(values, dtype=np.float64)
        undefined = int((~np.isfinite(out)).sum())
        if fallback:
            log.info("NIQE: %d image(s) without a patch whose features are all defined (undefined in the original): "
                     "scored with a zero patch covariance", fallback)
        if undefined:
            log.info("NIQE: %d image(s) with a feature undefined in every patch (e.g. flat): raw NIQE left NaN",
                     undefined)
        self.n_fallback += fallback
        self.n_undefined += undefined
        return out

    @torch.no_grad()
    def niqe_scores(self, image: torch.Tensor) -> torch.Tensor:
        """Raw NIQE values ``[B]`` (lower is better) of ImageNet-normalised images."""
        return self.raw_from_image(image)

    def raw_from_image(self, image: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        feats, _ = self._features(image)
        return torch.from_numpy(self._distances(feats))

    def outputs_from_raw(self, raw: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        bad = ~torch.isfinite(raw)
        if bad.any():  # the original has no score (undefined_in_original; counted in n_undefined): the worst output
            log.warning("NIQE undefined for %d image(s) (a feature undefined in every patch, e.g. a flat image): "
                        "raw NIQE left NaN, outputs scored as the worst (0)", int(bad.sum()))
        calib = self.calib.to(raw.dtype).cpu()
        return {attr: torch.where(bad, torch.zeros_like(raw), torch.sigmoid(calib[k, 0] - calib[k, 1] * raw))
                .to(device=image.device, dtype=torch.float32) for k, attr in enumerate(self.attributes)}

    def fit(self, batches: Iterable[dict[str, Any]]) -> None:
        """Fit the pristine MVG (when ``pristine="train"``) and the per-attribute calibration (when
        ``calibrate``) on training batches (``image`` and ``mos_norm [B, A]``, prepared exactly as for
        :meth:`forward`). The official model without calibration needs no training and reads nothing."""
        if self.pristine != "train" and not self.calibrate:
            return
        all_feats, all_sharp, targets = [], [], []
        for batch in _iter_batches(batches, "NIQE features"):
            feats, sharp = self._features(batch["image"])
            all_feats.append(feats)
            all_sharp.append(sharp)
            targets.append(batch["mos_norm"].detach().cpu().double().numpy())
        if not all_feats:
            raise ValueError("NIQE.fit: no training batches")
        # images of different sizes have different patch counts: keep per-image feature arrays
        feats = [f for chunk in all_feats for f in chunk]
        sharp = [s for chunk in all_sharp for s in chunk]
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
            pristine = np.concatenate([feats[i][sharp[i] > self.sharpness_threshold * sharp[i].max()]
                                       for i in best])
            log.info("NIQE pristine model from %d patches of the %d best-rated training images", len(pristine),
                     best.size)
            mu, cov = _mvg(pristine)
            self.set_pristine(NiqeModel(mu, cov, self.patch_size))
        if self.calibrate:  # images with a NaN NIQE (n_undefined) are left out of the logistic fit
            values = self._distances(feats)
            for k in range(len(self.attributes)):
                self.calib[k] = torch.from_numpy(_fit_decreasing_logistic(values, mos[:, k], self.calib[k].numpy()))

    def num_parameters(self) -> int:
        """Numbers in the model: pristine mean (36), covariance (666 distinct) and calibration (2/attr)."""
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

