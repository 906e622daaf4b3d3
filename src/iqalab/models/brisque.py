"""BRISQUE: A. Mittal, A. K. Moorthy, A. C. Bovik, "No-Reference Image Quality Assessment in the Spatial Domain",
IEEE Transactions on Image Processing 21(12):4695-4708, 2012. Original code: ``brisque_release.zip``
(``brisque_feature.m``, ``estimateggdparam.m``, ``estimateaggdparam.m``, ``brisquescore.m``; libsvm model
``allmodel`` with the scaling table ``allrange``).

Features (Table I; building blocks in :mod:`iqalab.models.nss`): per scale the GGD shape and variance of the
MSCN map (zero padding) and, for the products with the four neighbours (``circshift`` by [0 1], [1 0], [1 1],
[-1 1]), the AGGD shape, mean, left and right variance: 2 x (2 + 4 x 4) = 36 features of the whole grey
(``rgb2gray``) image at full resolution.

The registry model ``brisque`` has both published uses:

- ``regressor="live"`` (default; TuningIQA's untrained row): the original LIVE-trained epsilon-SVR (RBF,
  gamma 0.05, 774 support vectors) with its ``allrange`` scaling, shipped as ``models/data/brisque_live_svr.npz``
  (provenance in that folder's README). The raw score is the published BRISQUE (about 0-100, lower is better);
  the [0, 1] outputs are the fixed decreasing map ``sigmoid((50 - brisque) / 20)``.
- ``regressor="train"`` (REQA/SFIQA protocol; labelled "BRISQUE, SVR retrained"): one epsilon-SVR per attribute
  on the training split with the original settings (libsvm ``-s 3 -c 1024 -g 0.05``, epsilon 0.1, features scaled
  to [-1, 1] by the training minimum and maximum as ``svm-scale``); targets are the normalised MOS times 100 so
  that epsilon has the meaning it had on LIVE's DMOS scale. The fitted SVR is stored as tensors (support vectors,
  dual coefficients, intercept) in fixed-capacity buffers so that it travels in a weights-only checkpoint;
  prediction evaluates the RBF expansion directly. Its raw score is the SVR output on that scale (higher is
  better) and is not a published BRISQUE value.

No image is dropped by default: a flat image, whose original features would be undefined (an empty side of an
AGGD), is scored with a zero deviation on that side (:func:`iqalab.models.nss.empty_aggd_side`) and counted
(:attr:`BRISQUE.n_fallback`, recorded with the predictions so that tables can say how many).
``undefined="nan"`` switches back to the original code: such an image's features and score are NaN (counted in
:attr:`BRISQUE.n_undefined`), and a retrained SVR leaves it out of its training set.
``regressor="skimage"`` builds a small offline demo SVR from scikit-image photos under graded blur and noise
(smoke tests only).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage
from scipy.special import gamma as gamma_fn

from iqalab.io import atomic_path
from iqalab.models.nss import (
    ClassicalModel,
    _aggd_mean,
    _aggd_moments,
    _iter_batches,
    empty_aggd_side,
    fit_ggd,
    imresize,
    mscn,
    skimage_photos,
    to_gray,
)
from iqalab.models.registry import register

log = logging.getLogger(__name__)

BRISQUE_FEATURES = 36
BRISQUE_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
#: the LIVE-trained SVR of the original BRISQUE release, with its ``allrange`` scaling
OFFICIAL_SVR = Path(__file__).with_name("data") / "brisque_live_svr.npz"


def brisque_features(gray: np.ndarray, fallback: np.ndarray | None = None, undefined: str = "zero") -> np.ndarray:
    """The 36 BRISQUE features (Table I; ``brisque_feature.m``) of grey images ``[..., H, W]`` in [0, 255].

    Per scale: GGD ``(shape, variance)`` of the MSCN map (zero padding), then for each neighbour product
    (``circshift`` [0 1], [1 0], [1 1], [-1 1], circular) the AGGD ``(shape, mean, left variance, right
    variance)``; the second scale is ``imresize(im, 0.5)``. Returns ``[..., 36]``. Where the original is
    undefined (an AGGD side without samples), ``undefined="zero"`` (default) gives the side variance 0, so the
    features are always finite; ``undefined="nan"`` keeps MATLAB's NaN (``mean([])``) for that side's variance and
    the AGGD mean. ``fallback`` (a bool array of shape ``[...]``), when given, is set True for those images.
    """
    img = np.asarray(gray, dtype=np.float64)
    lead = img.shape[:-2]
    feats: list[np.ndarray] = []
    any_empty = np.zeros(lead, dtype=bool)
    for scale in range(2):
        coef, _ = mscn(img, mode="constant")
        flat = coef.reshape(*lead, -1)
        shape, sigma = fit_ggd(flat)
        feats += [shape, sigma**2]
        for shift in BRISQUE_SHIFTS:
            pair = (coef * np.roll(coef, shift, axis=(-2, -1))).reshape(*lead, -1)
            a, left_std, right_std = _aggd_moments(pair, empty_side=undefined)
            any_empty |= empty_aggd_side(pair)
            const = np.sqrt(gamma_fn(1.0 / a) / gamma_fn(3.0 / a))
            feats += [a, _aggd_mean(a, left_std * const, right_std * const), left_std**2, right_std**2]
        if scale == 0:
            img = imresize(img, 0.5)
    if fallback is not None:
        fallback[...] = any_empty
    return np.stack(feats, axis=-1)


@functools.lru_cache(maxsize=4)
def _skimage_brisque_set(size: int = 128, color: str = "gray") -> tuple[np.ndarray, np.ndarray]:
    """BRISQUE features and target quality of the sample photos under graded blur and noise."""
    from skimage.transform import resize

    rng = np.random.default_rng(0)
    feats, targets = [], []
    for photo in skimage_photos():
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


def _six_significant(x: np.ndarray) -> np.ndarray:
    """Round to 6 significant digits, as C's ``printf("%g")`` writes a number (libsvm's ``svm-scale``)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log10(np.abs(np.where(x == 0, 1.0, x))))
    factor = 10.0 ** (5 - exponent)
    return np.round(x * factor) / factor


@register("brisque")
class BRISQUE(ClassicalModel):
    """BRISQUE (Mittal et al., IEEE TIP 2012) as a registry model: an RBF epsilon-SVR on the 36 features.

    ``regressor`` is ``"live"`` (default: the original LIVE-trained SVR, no training; every attribute gets the
    same published score), ``"train"`` (one SVR per attribute fitted in :meth:`fit` on the training split,
    predicting normalised MOS), ``"skimage"`` (a demo SVR trained at construction on scikit-image photos under
    graded blur/noise) or a path to an ``.npz`` written by :meth:`save_regressor`. Up to ``max_support_vectors``
    training images are used (a seeded subsample beyond); the fitted SVRs live in buffers of that capacity so
    they travel in a weights-only checkpoint. ``undefined`` is what an image with an undefined original feature
    (a flat region) gets: ``"zero"`` (default) a zero-variance AGGD side and a score, counted in ``n_fallback``;
    ``"nan"`` the original code's NaN features and score, counted in ``n_undefined`` (module docstring).
    """

    paper = ("Mittal, Moorthy, Bovik. No-Reference Image Quality Assessment in the Spatial Domain. "
             "IEEE Transactions on Image Processing 21(12), 2012")
    smoke_params: ClassVar[dict[str, Any]] = {"regressor": "skimage", "max_support_vectors": 64}
    smoke_image_size: ClassVar[int] = 64

    def __init__(self, attributes: list[str], regressor: str | Path = "live", svr_c: float = 1024.0,
                 svr_gamma: float = 0.05, svr_epsilon: float = 0.1, target_scale: float = 100.0,
                 max_support_vectors: int = 4096, color: str = "gray", undefined: str = "zero") -> None:
        super().__init__(attributes, color)
        if undefined not in ("zero", "nan"):
            raise ValueError(f"undefined must be 'zero' (iqalab's fallback) or 'nan' (the original), got {undefined!r}")
        self.undefined = undefined
        self.regressor = str(regressor)
        self.svr_c, self.svr_gamma, self.svr_epsilon = float(svr_c), float(svr_gamma), float(svr_epsilon)
        self.target_scale = float(target_scale)
        self.max_support_vectors = int(max_support_vectors)
        self.n_fallback = 0
        self.n_undefined = 0
        n_attr = len(self.attributes)
        if self.regressor == "live":
            with np.load(OFFICIAL_SVR, allow_pickle=False) as data:
                live = {k: data[k] for k in data.files}
            self.max_support_vectors = max(self.max_support_vectors, len(live["dual"]))
        cap = self.max_support_vectors
        self.register_buffer("feat_min", torch.zeros(BRISQUE_FEATURES, dtype=torch.float64))
        self.register_buffer("feat_max", torch.ones(BRISQUE_FEATURES, dtype=torch.float64))
        self.register_buffer("support", torch.zeros(n_attr, cap, BRISQUE_FEATURES, dtype=torch.float64))
        self.register_buffer("dual", torch.zeros(n_attr, cap, dtype=torch.float64))
        self.register_buffer("intercept", torch.zeros(n_attr, dtype=torch.float64))
        self.register_buffer("n_support", torch.zeros(n_attr, dtype=torch.int64))
        self.register_buffer("gamma", torch.tensor(self.svr_gamma, dtype=torch.float64))
        if self.regressor == "live":
            self._set_live(live)
        elif self.regressor == "skimage":
            feats, target = _skimage_brisque_set(color=self.color)
            self.fit_features(feats, np.repeat(target[:, None], n_attr, axis=1))
        elif self.regressor != "train":
            self.load_regressor(self.regressor)

    def _set_live(self, live: dict[str, np.ndarray]) -> None:
        """Copy the LIVE-trained SVR (``allmodel``: support vectors, coefficients, ``rho``, ``gamma``) and its
        ``allrange`` scaling into the buffers, the same SVR for every attribute; libsvm predicts
        ``sum_i coef_i K(x, sv_i) - rho``."""
        if not np.allclose(live["target_range"], [-1.0, 1.0]):
            raise ValueError(f"{OFFICIAL_SVR}: allrange target range {live['target_range']} is not [-1, 1]")
        n = len(live["dual"])
        self.feat_min.copy_(torch.from_numpy(live["feat_min"]))
        self.feat_max.copy_(torch.from_numpy(live["feat_max"]))
        for k in range(len(self.attributes)):
            self.support[k, :n] = torch.from_numpy(live["support"])
            self.dual[k, :n] = torch.from_numpy(live["dual"])
            self.intercept[k] = -float(live["rho"])
            self.n_support[k] = n
        self.gamma.fill_(float(live["gamma"]))
        self.fitted.fill_(1.0)

    @property
    def raw_score_name(self) -> str | None:  # type: ignore[override]
        """``"BRISQUE"`` for the original LIVE-trained SVR; a retrained SVR has no published score."""
        return "BRISQUE" if self.regressor == "live" else None

    @property
    def ready_without_training(self) -> bool:
        return self.regressor != "train"

    def run_notes(self) -> dict[str, Any]:
        """As :meth:`ClassicalModel.run_notes`, plus the number of images scored with the flat-region fallback
        (``undefined="nan"``: the number left with a NaN score instead)."""
        notes = super().run_notes() | {"n_fallback": self.n_fallback}
        return notes | {"undefined": "nan", "n_undefined": self.n_undefined} if self.undefined == "nan" else notes

    @property
    def variant(self) -> str:
        """How the tables label this configuration (the papers' untrained "BRISQUE" is the LIVE model)."""
        if self.regressor == "live":
            return "BRISQUE"
        if self.regressor == "train":
            return "BRISQUE, SVR retrained"
        return f"BRISQUE (regressor: {Path(self.regressor).name})"

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

        if self.regressor == "live":
            raise ValueError("BRISQUE(regressor='live') is the published LIVE model; fit a retrained SVR with "
                             "regressor='train'")
        feats = np.asarray(feats, dtype=np.float64)
        mos_norm = np.asarray(mos_norm, dtype=np.float64).reshape(len(feats), -1)
        bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
        if bad.size and self.undefined == "nan":  # the original's undefined features: no training row
            log.warning("BRISQUE: %d training image(s) with undefined features (undefined='nan') left out", bad.size)
            keep_rows = np.isfinite(feats).all(axis=1)
            feats, mos_norm = feats[keep_rows], mos_norm[keep_rows]
        elif bad.size:  # brisque_features is always finite with undefined="zero"; features from elsewhere must be
            raise ValueError(f"BRISQUE.fit_features: rows {bad[:10].tolist()} have non-finite features")
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
        """The [0, 1] outputs ``[N, A]`` for BRISQUE features ``[N, 36]``."""
        raw = torch.from_numpy(self.svr_outputs(feats))
        out = self.outputs_from_raw(raw, raw)
        return np.stack([out[a].double().numpy() for a in self.attributes], axis=1)

    # -- the registry surface -----------------------------------------------------------------------------
    feature_name: ClassVar[str] = "brisque"

    def feature_config(self) -> dict[str, Any]:
        """Grey conversion and the handling of undefined features: the settings that change the features."""
        return {"color": self.color, "undefined": self.undefined}

    def compute_features(self, gray: np.ndarray) -> dict[str, np.ndarray]:
        """BRISQUE features ``[B, 36]`` and whether each image's original features are undefined ``[B]``."""
        fallback = np.zeros(gray.shape[:-2], dtype=bool)
        return {"features": brisque_features(gray, fallback, self.undefined), "undefined": fallback}

    def features(self, image: torch.Tensor) -> np.ndarray:
        """BRISQUE features ``[B, 36]`` of ImageNet-normalised images (once per image while a feature cache is
        active, :func:`iqalab.models.nss.feature_cache`); images with undefined original features are counted."""
        out = self.image_features(image)
        n = int(out["undefined"].sum())
        if n and self.undefined == "zero":
            log.info("BRISQUE: %d flat image(s) scored with a zero-variance AGGD side", n)
            self.n_fallback += n
        elif n:
            log.info("BRISQUE: %d flat image(s) with undefined features: NaN score (undefined='nan')", n)
            self.n_undefined += n
        return out["features"]

    def svr_outputs(self, feats: np.ndarray) -> np.ndarray:
        """SVR outputs ``[N, A]`` on its own scale (the LIVE model: the published BRISQUE score; a retrained SVR:
        normalised MOS times ``target_scale``).

        With the LIVE model the features pass through the original's text files as ``brisquescore.m`` does:
        written with ``%f`` (6 decimals), scaled by ``svm-scale`` and written with ``%g`` (6 significant digits);
        on the calibration image without flat regions this moves the score from 0.4 % to 0.00 % of the original.
        """
        self._require_fitted()
        feats = np.asarray(feats, dtype=np.float64)
        if self.regressor == "live":
            scaled = _six_significant(self.scale_features(np.round(feats, 6)))
        else:
            scaled = self.scale_features(feats)
        x = torch.from_numpy(scaled)
        out = np.empty((x.shape[0], len(self.attributes)))
        for k in range(len(self.attributes)):
            n = int(self.n_support[k])
            sv = self.support[k, :n].cpu()
            kernel = torch.exp(-self.gamma.cpu() * torch.cdist(x, sv).square())
            out[:, k] = (kernel @ self.dual[k, :n].cpu() + self.intercept[k].cpu()).numpy()
        return out

    def raw_from_image(self, image: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.svr_outputs(self.features(image)))

    def outputs_from_raw(self, raw: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.regressor == "live":  # published score, lower is better: a fixed decreasing map into [0, 1]
            scores = torch.sigmoid((50.0 - raw) / 20.0)
        else:
            scores = raw / self.target_scale
        scores = scores.to(device=image.device, dtype=torch.float32)
        return {attr: scores[:, k] for k, attr in enumerate(self.attributes)}

    def fit(self, batches: Iterable[dict[str, Any]]) -> None:
        """Train the SVRs on training batches (``image``, ``mos_norm [B, A]``, prepared exactly as for
        :meth:`forward`) when ``regressor="train"``; the other regressors need no training and read nothing."""
        if self.regressor != "train":
            return
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
        """Numbers in the fitted model: per distinct SVR its support vectors (36 each), dual coefficients and
        intercept, plus the 72 scaling bounds. Attributes sharing one SVR (the LIVE model serves every attribute)
        count it once: the LIVE model is 774 x 37 + 1 + 72 = 28,711 numbers whatever the attributes."""
        distinct: list[int] = []
        for k in range(len(self.attributes)):
            if not any(self._same_svr(k, j) for j in distinct):
                distinct.append(k)
        n_sv = sum(int(self.n_support[k]) for k in distinct)
        return n_sv * (BRISQUE_FEATURES + 1) + len(distinct) + 2 * BRISQUE_FEATURES

    def _same_svr(self, k: int, j: int) -> bool:
        """Attributes ``k`` and ``j`` have the same SVR (support vectors, coefficients, intercept)."""
        n = int(self.n_support[k])
        return n == int(self.n_support[j]) and bool(self.intercept[k] == self.intercept[j]) \
            and torch.equal(self.dual[k, :n], self.dual[j, :n]) and torch.equal(self.support[k, :n], self.support[j, :n])

