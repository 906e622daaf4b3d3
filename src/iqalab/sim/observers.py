"""A virtual rater panel: ground-truth perceived quality from known degradations, and raters who vote on it.

Ground truth (:func:`true_quality`): each attribute is a quality in [1, 5] computed from the ``info`` of
:func:`iqalab.sim.camera.render`. Sub-qualities in [0, 1] fall smoothly with their physical cause:

* noise      - visible luma noise after the ISP and its noise reduction (8-bit levels; face/person region and
               globally), JPEG error, and the texture a face enhancer invents (it is seen as noise);
* sharpness  - effective blur *of the subject* (reference px; background bokeh is not unsharpness), reduced by
               the acutance gain of sharpening, which saturates, while halos (measured overshoot) grow with
               it: moderate sharpening of a soft image helps, strong sharpening hurts;
* exposure   - mean encoded luma against a content-dependent target (the frame: a mid-grey 0.42; the face: its
               own brightness in the scene's neutral render), highlight/shadow clipping, tone-curve
               appropriateness (TuningIQA: "brightness and contrast appropriateness");
* face       - noise, blur, exposure and colour measured in the face box (TuningIQA's face quality; skin tone
               counts);
* colorfulness - white-balance cast of a grey, colourfulness of the render against the scene's neutral render
               (Hasler-Suesstrunk M; saturation judged from the image, so grey content is not penalised),
               infrared mixing (SFIQA-Bench: colour accuracy);
* contrast   - tone curve, veiling glare, clipping, darkness, flat infrared light, a grainy noise floor
               (SFIQA-Bench);
* fidelity   - hallucinated texture of a face enhancer, and faces blurred beyond recognition (SFIQA-Bench);
* details    - blur and noise of the subject (PIQ23 "details");
* overall    - a power mean with a negative exponent (the worst attribute dominates) whose weights depend on
               the ``profile``: ``livestream`` weights face quality most and counts colour (TuningIQA),
               ``surveillance`` is a weighted mean (exponent 1) of the five SFIQA dimensions, fidelity first,
               then sharpness and noise (the paper's order of correlations with overall); these weights were
               fitted by hand until :mod:`iqalab.sim.calibration` put the measured statistics in tolerance,
               and are not the paper's OLS coefficients: SFIQA-Bench's regression of overall on the dimensions
               is *measured* on the simulated MOS, never copied; ``portrait`` and ``ugc`` are general-purpose.

Raters (:class:`Panel`): rater i perceives ``3 + scale_i (q' - 3) + bias_i + h_ij + noise_i s(q) e`` and votes
the nearest integer in 1..5 (ACR); a share of raters are careless (large noise, random bias). Three context
effects of human panels (issue #23) shape ``q'``: a *halo*, every attribute pulled towards the image's overall
impression (the mean of its attributes, weight ``halo_pull``) plus an impression ``h_ij`` a rater forms of an
image and carries across its attributes (sd ``halo_sd``); a *range/context* effect, votes judged relative to the
set shown (``q' = q - context (mean_set(q) - 3)``, what REQA calls the range effect); and a vote spread that
depends on the quality level, widest mid-scale and narrower at the ends (``s(q) = 1 + spread_mid (1 - ((q - 3)
/ 2)^2)``). Votes are screened (ITU-R
BT.500 Annex 2 kurtosis test, or Pearson correlation against the others' MOS as TuningIQA does), then
averaged to MOS/std/n. Close pairs (|dMOS| <= 0.8) are refined by side-by-side judgments in {0, 0.5, 1}
(TuningIQA Eq. 2). Pairwise judgments are less noisy than absolute votes (the premise of TuningIQA's
refinement and of PIQ23's pairwise design). PIQ23-like per-scene scales come from Thurstone Case V scaling of
pairwise votes in JOD units (1 JOD = 75 % preference), anchored at each scene's mean.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import log_ndtr, ndtr

from iqalab.analysis.metrics import pearson_rows
from iqalab.analysis.stats import bt500_outlier_counts, bt500_outlier_mask, bt500_rejected

log = logging.getLogger(__name__)

ATTRIBUTES = ("overall", "face", "sharpness", "exposure", "noise", "colorfulness", "contrast", "fidelity",
              "details")
PROFILES: dict[str, dict[str, float]] = {
    "livestream": {"face": 0.3, "exposure": 0.2, "sharpness": 0.15, "noise": 0.15, "colorfulness": 0.2},
    "surveillance": {"fidelity": 0.3, "sharpness": 0.25, "noise": 0.2, "contrast": 0.15, "colorfulness": 0.1},
    "portrait": {"details": 0.35, "exposure": 0.35, "colorfulness": 0.15, "noise": 0.15},
    "ugc": {"sharpness": 0.3, "exposure": 0.3, "noise": 0.25, "colorfulness": 0.15},
}
#: the power mean's exponent per profile (:func:`combine`). ``ugc``: -0.5, fitted to the KonIQ-like tier shares
#: (:mod:`iqalab.sim.calibration`, 1-12 % in each extreme tier): at -1.5 the worst attribute, mostly an over-exposed
#: frame, put 12.1-14.9 % of ugc_sim's 720 images in Bad on seeds 0-2; at -0.5, with ugc_sim's severity refitted
#: with it (:data:`iqalab.sim.builders.UGC_SEVERITY`), Bad 7.4-10.5 % and Excellent 5.5-12.4 % on seeds 0-7 at 860
#: images (``scripts/ugc_tier_shares.py --exponent``; README, calibration of ugc_sim)
PROFILE_EXPONENT = {"livestream": -1.5, "surveillance": 1.0, "portrait": -1.0, "ugc": -0.5}
JOD_SIGMA = 1.0 / 0.6744897501960817  # Thurstone Case V: 1 JOD difference = 75 % preference


# --------------------------------------------------------------------------------------------- ground truth
def _falloff(x: float, x50: float, power: float) -> float:
    """1 at x = 0, 0.5 at ``x50``, towards 0 beyond (a log-logistic tolerance curve)."""
    x = max(float(x), 0.0)
    return 1.0 / (1.0 + (x / x50) ** power)


def _pick(info: Mapping[str, float], local: str, global_: str, w_local: float = 0.6) -> float:
    """Weighted combination of a regional and a global measurement (global alone when the region is unknown)."""
    g = float(info[global_])
    v = info.get(local, float("nan"))
    if v is None or not np.isfinite(v):
        return g
    return float(w_local * float(v) + (1 - w_local) * g)


def _noise_q(sigma: float, jpeg_rmse: float, invented: float = 0.0) -> float:
    return _falloff(float(np.sqrt(sigma**2 + (0.5 * jpeg_rmse) ** 2 + (0.5 * invented) ** 2)), 6.0, 1.6)


def _blur_q(blur: float, sharpness: float, halo: float) -> float:
    """Sharpness from the subject's blur: unsharp masking raises acutance with a saturating gain, and halos
    (overshoot in 8-bit levels, measured on the render) cost more the stronger they are."""
    gain = 1.0 + 0.6 * (1.0 - np.exp(-float(sharpness) / 1.2))
    return _falloff(blur / gain, 2.5, 2.0) * float(np.exp(-((max(halo - 3.0, 0.0) / 10.0) ** 1.5)))


def _exposure_q(mean_luma: float, clipped_hi: float, clipped_lo: float, contrast: float,
                width: float = 0.25, target: float = 0.42) -> float:
    lum = np.exp(-(((mean_luma - target) / width) ** 2))
    clip = np.exp(-3.0 * clipped_hi - 2.0 * clipped_lo)
    tone = np.exp(-((np.log(contrast) / 0.8) ** 2))
    return float(lum * clip * np.sqrt(tone))


def _face_target(info: Mapping[str, float]) -> float:
    """Exposure target of the face: its brightness in the scene's neutral render (clipped to a sane range)."""
    v = info.get("mean_luma_face_neutral", float("nan"))
    return float(np.clip(v, 0.3, 0.7)) if v is not None and np.isfinite(v) else 0.42


def _subject_blur(info: Mapping[str, float]) -> float:
    """Blur of what the viewer looks at: the face, else the person, else the frame (bokeh is not counted)."""
    for key in ("blur_face", "blur_person", "blur"):
        v = info.get(key, float("nan"))
        if v is not None and np.isfinite(v):
            return float(v)
    return float(info["blur"])


def _colour_q(info: Mapping[str, float]) -> float:
    """Colour quality: cast of a grey, render-vs-neutral colourfulness (slight boosts are liked), IR mixing."""
    chroma = float(info.get("chroma_log_ratio", np.log(max(float(info["param_saturation"]), 0.05))))
    # a greyscale render still shows the scene: the colourfulness term bottoms out at 0.3
    return float(np.exp(-((float(info["cast"]) / 0.5) ** 2))
                 * (0.3 + 0.7 * np.exp(-(((chroma - 0.15) / 0.5) ** 2)))
                 * (1.0 - 0.4 * float(info["ir_mix"])))


def sub_qualities(info: Mapping[str, float]) -> dict[str, float]:
    """Every attribute's quality in [0, 1] (1 = best) except ``overall``."""
    sharpen = float(info["param_sharpness"])
    jpeg = float(info["jpeg_rmse"])
    invented = float(info.get("hallucination", 0.0))
    noise = _noise_q(_pick(info, "noise_std_face", "noise_std", 0.5), jpeg, invented)
    halo = float(info.get("halo_subject", info["halo"]))
    sharp = _blur_q(_subject_blur(info), sharpen, halo)
    face_luma = info.get("mean_luma_face", float("nan"))
    if face_luma is not None and np.isfinite(face_luma):
        exposure = (_exposure_q(float(face_luma), float(info["clipped_hi"]), float(info["clipped_lo"]),
                                float(info["param_contrast"]), target=_face_target(info)) ** 0.5
                    * _exposure_q(float(info["mean_luma"]), float(info["clipped_hi"]), float(info["clipped_lo"]),
                                  float(info["param_contrast"])) ** 0.5)
    else:
        exposure = _exposure_q(float(info["mean_luma"]), float(info["clipped_hi"]), float(info["clipped_lo"]),
                               float(info["param_contrast"]))
    mean_luma = _pick(info, "mean_luma_face", "mean_luma", 0.5)
    face_clip = _pick(info, "clipped_face", "clipped_hi", 1.0)
    colour = _colour_q(info)
    face = (_noise_q(_pick(info, "noise_std_face", "noise_std", 1.0), jpeg, invented) ** 0.25
            * _blur_q(_pick(info, "blur_face", "blur", 1.0), sharpen, halo) ** 0.35
            * _exposure_q(_pick(info, "mean_luma_face", "mean_luma", 1.0), face_clip, 0.0,
                          float(info["param_contrast"]), target=_face_target(info)) ** 0.25
            * colour ** 0.15)
    contrast = float(np.exp(-((np.log(float(info["param_contrast"])) / 0.7) ** 2))
                     * np.exp(-((float(info["veil"]) / 0.35) ** 1.5))
                     * np.exp(-2.5 * float(info["clipped_hi"]) - 2.0 * float(info["clipped_lo"]))
                     * np.exp(-(((mean_luma - 0.42) / 0.3) ** 2))
                     # flat frontal infrared light and a grainy noise floor both read as low contrast
                     * (1.0 - 0.45 * float(info["ir_mix"]))
                     * _falloff(float(info["noise_std"]), 12.0, 2.0) ** 0.5)
    fidelity = float(np.exp(-((float(info["hallucination"]) / 8.0) ** 1.5))
                     * _falloff(_pick(info, "blur_face", "blur", 1.0), 6.0, 2.0) ** 0.3)
    details = sharp * noise**0.7
    return {"face": face, "sharpness": sharp, "exposure": exposure, "noise": noise, "colorfulness": colour,
            "contrast": contrast, "fidelity": fidelity, "details": details}


def combine(subs: Mapping[str, float], profile: str = "livestream") -> float:
    """Overall quality in [0, 1]: weighted power mean (negative exponent: the worst attribute dominates; 1: a
    weighted arithmetic mean)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    weights = PROFILES[profile]
    r = PROFILE_EXPONENT[profile]
    total = sum(weights.values())
    acc = sum(w / total * max(subs[k], 1e-3) ** r for k, w in weights.items())
    return float(acc ** (1.0 / r))


def true_quality(info: Mapping[str, float], attribute: str, profile: str = "livestream") -> float:
    """Ground-truth perceived quality of ``attribute`` on the 1-5 scale (see the module docstring)."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; known: {ATTRIBUTES}")
    subs = sub_qualities(info)
    q = combine(subs, profile) if attribute == "overall" else subs[attribute]
    return float(1.0 + 4.0 * np.clip(q, 0.0, 1.0))


def truth_matrix(infos: Sequence[Mapping[str, float]], attributes: Sequence[str],
                 profile: str = "livestream") -> np.ndarray:
    """``[n_images, n_attributes]`` ground truth on the 1-5 scale."""
    return np.array([[true_quality(info, a, profile) for a in attributes] for info in infos], dtype=np.float64)


# --------------------------------------------------------------------------------------------- panel
@dataclass
class Panel:
    """A panel of ``n_raters`` virtual raters with per-rater bias, scale and noise (drawn from ``seed``).

    ``noise`` is the median single-vote noise (1-5 scale) and ``noise_spread`` its log-sd across raters;
    ``careless`` the share of raters with ``careless_factor`` times more noise and a doubled bias sd.
    ``pair_noise`` is the sd of a rater's perceived difference in a side-by-side comparison (smaller than
    ``noise``); differences under ``jnd`` are judged "equivalent".
    """

    n_raters: int = 20
    seed: int = 0
    bias_sd: float = 0.25
    scale_sd: float = 0.15
    noise: float = 0.45
    noise_spread: float = 0.25
    careless: float = 0.1
    careless_factor: float = 4.0
    pair_noise: float = 0.12
    jnd: float = 0.08
    min_kept: int = 16
    halo_pull: float = 0.15
    halo_sd: float = 0.2
    context: float = 0.3
    spread_mid: float = 0.3
    bias: np.ndarray = field(init=False, repr=False)
    scale: np.ndarray = field(init=False, repr=False)
    sd: np.ndarray = field(init=False, repr=False)
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_raters < 1:
            raise ValueError("a panel needs at least one rater")
        rng = np.random.default_rng([self.seed, 7919])
        careless = rng.random(self.n_raters) < self.careless
        self.bias = rng.normal(0, self.bias_sd, self.n_raters) * np.where(careless, 2.0, 1.0)
        self.scale = np.exp(rng.normal(0, self.scale_sd, self.n_raters))
        self.sd = self.noise * np.exp(rng.normal(0, self.noise_spread, self.n_raters)) * np.where(
            careless, self.careless_factor, 1.0)
        self.rng = np.random.default_rng([self.seed, 104729])

    # -- single stimulus (ACR) -------------------------------------------------------------------------
    def vote(self, truth: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Integer 1-5 votes ``[n_raters, *truth.shape]`` for ground truth ``truth`` (1-5 scale)."""
        rng = rng or self.rng
        truth = np.asarray(truth, dtype=np.float64)
        shape = (self.n_raters,) + (1,) * truth.ndim
        seen = truth
        if truth.ndim == 2 and truth.shape[1] > 1:  # halo: pulled towards the image's overall impression
            seen = (1 - self.halo_pull) * truth + self.halo_pull * truth.mean(axis=1, keepdims=True)
        if truth.ndim >= 1 and truth.shape[0] > 1:  # range/context: judged relative to the set shown
            seen = seen - self.context * (truth.mean(axis=0, keepdims=True) - 3.0)
        spread = 1.0 + self.spread_mid * (1.0 - np.clip((truth - 3.0) / 2.0, -1.0, 1.0) ** 2)
        noise = self.sd.reshape(shape) * spread * rng.standard_normal((self.n_raters, *truth.shape))
        if truth.ndim == 2 and self.halo_sd > 0:  # one impression per rater and image, shared by its attributes
            noise = noise + self.halo_sd * rng.standard_normal((self.n_raters, truth.shape[0], 1))
        perceived = 3.0 + self.scale.reshape(shape) * (seen - 3.0) + self.bias.reshape(shape) + noise
        return np.clip(np.rint(perceived), 1, 5).astype(np.int8)

    def screen(self, votes: np.ndarray, method: str = "pearson", threshold: float = 0.7) -> np.ndarray:
        """Raters kept per attribute, ``bool[n_raters, n_attributes]`` for votes ``[n_raters, n_images, n_attr]``.

        ``bt500``: ITU-R BT.500 Annex 2 screening per attribute (:func:`iqalab.analysis.stats.bt500_outlier_counts`:
        per image 2 sd, or sqrt(20) sd when the kurtosis is outside [2, 4]; reject a rater whose share of
        outlying votes exceeds 5 % and whose outliers are not one-sided, |P - Q| / (P + Q) < 0.3). ``pearson``: reject a rater whose PLCC with the MOS of the others is below
        ``threshold`` (TuningIQA's post-screening). ``none``: keep all. At least ``min_kept`` raters (the best
        correlated) are kept per attribute.
        """
        votes = np.asarray(votes, dtype=np.float64)
        n_r, n_i, n_a = votes.shape
        total = votes.sum(axis=0, keepdims=True)
        loo = (total - votes) / max(n_r - 1, 1)  # mean of the others
        # a rater whose votes (or the others' MOS) never vary correlates 0 with them
        plcc = (np.nan_to_num(pearson_rows(np.moveaxis(votes, 2, 1), np.moveaxis(loo, 2, 1)), nan=0.0) if n_r > 1
                else np.ones((n_r, n_a)))
        if method == "none":
            keep = np.ones((n_r, n_a), dtype=bool)
        elif method == "pearson":
            keep = plcc >= threshold
        elif method == "bt500":  # one implementation: iqalab.analysis.stats, per attribute
            keep = np.ones((n_r, n_a), dtype=bool)
            for a in range(n_a):
                keep[:, a] = ~bt500_rejected(*bt500_outlier_counts(votes[:, :, a]))
        else:
            raise ValueError(f"unknown screening method {method!r}; choose bt500, pearson or none")
        need = min(self.min_kept, n_r)
        for a in range(n_a):
            if keep[:, a].sum() < need:
                best = np.argsort(-plcc[:, a], kind="stable")[:need]
                log.warning("screening kept %d raters for attribute %d; keeping the %d best correlated instead",
                            int(keep[:, a].sum()), a, need)
                keep[:, a] = False
                keep[best, a] = True
        return keep

    @staticmethod
    def outlier_votes(votes: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """Individual votes outside their image's ITU-R BT.500 outlier band, ``bool[n_raters, n_images,
        n_attr]`` (:func:`iqalab.analysis.stats.bt500_outlier_mask`, band from the kept raters' votes).

        SFIQA-Bench (Sec. III-B-3): "individual ratings that deviate significantly from the mean were
        identified as outliers and removed" (894 ratings, 0.125 %), after the rater-level rule.
        """
        votes = np.asarray(votes, dtype=np.float64)
        out = np.zeros(votes.shape, dtype=bool)
        for a in range(votes.shape[2]):
            scores = votes[:, :, a].copy()
            if keep is not None:
                scores[~keep[:, a]] = np.nan
            above, below = bt500_outlier_mask(scores)
            out[:, :, a] = above | below
        return out

    @staticmethod
    def mos(votes: np.ndarray, keep: np.ndarray | None = None, dropped: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MOS, std and count per image and attribute from ``votes[n_raters, n_images, n_attr]``, over the kept
        raters (``keep[n_raters, n_attr]``) less the individually ``dropped`` votes (same shape as ``votes``)."""
        votes = np.asarray(votes, dtype=np.float64)
        mask = np.ones(votes.shape, dtype=bool) if keep is None else np.broadcast_to(
            keep[:, None, :], votes.shape)
        if dropped is not None:
            mask = mask & ~dropped
        n = mask.sum(axis=0)
        mos = np.where(mask, votes, 0).sum(axis=0) / np.maximum(n, 1)
        var = np.where(mask, (votes - mos) ** 2, 0).sum(axis=0) / np.maximum(n - 1, 1)
        return mos, np.sqrt(var), n

    # -- side by side --------------------------------------------------------------------------------------
    def judge(self, truth_a: np.ndarray, truth_b: np.ndarray, n_judges: int,
              rng: np.random.Generator | None = None, gain: np.ndarray | float = 1.0) -> np.ndarray:
        """Mean of ``n_judges`` side-by-side judgments in {0, 0.5, 1} (1 = a better) for each pair.

        Judges are drawn from the panel (their scale and relative noise carry over); ``gain`` multiplies the
        perceived difference (a per-scene scale, see :meth:`jod_scale`).
        """
        rng = rng or self.rng
        truth_a = np.asarray(truth_a, dtype=np.float64)
        diff = (truth_a - np.asarray(truth_b, dtype=np.float64)) * gain
        who = rng.integers(0, self.n_raters, size=(n_judges, *diff.shape))
        rel_noise = self.sd[who] / np.median(self.sd)
        perceived = self.scale[who] * diff + self.pair_noise * rel_noise * np.sqrt(2) * rng.standard_normal(
            who.shape)
        psi = np.where(perceived > self.jnd, 1.0, np.where(perceived < -self.jnd, 0.0, 0.5))
        return psi.mean(axis=0)

    def prefer(self, info_a: Mapping[str, float], info_b: Mapping[str, float], attribute: str = "overall",
               n_raters: int | None = None, profile: str = "livestream",
               rng: np.random.Generator | None = None) -> float:
        """Panel verdict: fraction of votes (ties count 1/2) preferring the image described by ``info_a``."""
        n = int(n_raters or self.n_raters)
        qa = true_quality(info_a, attribute, profile)
        qb = true_quality(info_b, attribute, profile)
        return float(self.judge(np.array(qa), np.array(qb), n, rng))

    # -- pairs -------------------------------------------------------------------------------------------
    def pairs(self, image_ids: Sequence[str], scenes: Sequence[str], mos: np.ndarray, truth: np.ndarray,
              attributes: Sequence[str], threshold: float = 0.8, n_judges: int = 5,
              max_pairs_per_scene: int | None = None, rng: np.random.Generator | None = None) -> pd.DataFrame:
        """Within-scene pairs per attribute (TuningIQA Eq. 2): MOS order for |dMOS| > ``threshold``
        (``source='mos'``), and for close pairs the mean of ``n_judges`` judgments in {0, 0.5, 1}
        (``source='refined'``, ``fine=True``). The refined ``p`` is that mean rounded to {0, 0.5, 1} (the
        majority verdict, ties at 0.5); the unrounded mean is kept in ``p_votes``. ``mos``/``truth`` are
        ``[n_images, n_attributes]`` on the 1-5 scale.
        """
        rng = rng or self.rng
        ids = np.asarray(image_ids)
        groups = pd.Series(np.arange(len(ids))).groupby(np.asarray(scenes, dtype=str), sort=True)
        ia, ib = [], []
        for _, idx in groups:
            members = idx.to_numpy()
            a, b = np.triu_indices(len(members), k=1)
            if max_pairs_per_scene is not None and len(a) > max_pairs_per_scene:
                pick = np.sort(rng.choice(len(a), size=max_pairs_per_scene, replace=False))
                a, b = a[pick], b[pick]
            ia.append(members[a])
            ib.append(members[b])
        if not ia:
            return _empty_pairs()
        ia_all, ib_all = np.concatenate(ia), np.concatenate(ib)
        frames = []
        for k, attr in enumerate(attributes):
            d = mos[ia_all, k] - mos[ib_all, k]
            close = np.abs(d) <= threshold
            p_mos = np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))
            votes = np.full(len(d), np.nan)
            if close.any():
                votes[close] = self.judge(truth[ia_all[close], k], truth[ib_all[close], k], n_judges, rng)
            p = np.where(close, np.rint(np.nan_to_num(votes) * 2) / 2, p_mos)
            frames.append(pd.DataFrame({
                "image_a": ids[ia_all], "image_b": ids[ib_all], "attribute": attr, "p": p,
                "source": np.where(close, "refined", "mos"), "fine": close, "p_votes": votes,
                "n_votes": np.where(close, n_judges, 0), "d_mos": d}))
        return pd.concat(frames, ignore_index=True)

    # -- pairwise scaling (PIQ23-like) ------------------------------------------------------------------
    def jod_scale(self, truth: np.ndarray, n_judges: int = 6, gain: float = 1.0, max_pairs: int | None = None,
                  prior: float = 0.05, rng: np.random.Generator | None = None
                  ) -> tuple[np.ndarray, pd.DataFrame]:
        """Pairwise-compare the images of one scene and scale them (Thurstone Case V, JOD, scene mean 0).

        ``truth`` is ``[n_images]`` (1-5 scale). Returns the JOD scores and the compared pairs (local indices
        ``a``, ``b`` and the vote fraction ``p``). A weak Gaussian prior (``prior`` x sum of squares) keeps
        unanimous pairs finite, as pairwise-comparison toolboxes do.
        """
        rng = rng or self.rng
        n = len(truth)
        a, b = np.triu_indices(n, k=1)
        if max_pairs is not None and len(a) > max_pairs:
            pick = np.sort(rng.choice(len(a), size=max_pairs, replace=False))
            a, b = a[pick], b[pick]
        p = self.judge(truth[a], truth[b], n_judges, rng, gain=gain)
        wins, losses = p * n_judges, (1 - p) * n_judges

        def nll(s: np.ndarray) -> tuple[float, np.ndarray]:
            z = (s[a] - s[b]) / JOD_SIGMA
            value = -(wins * log_ndtr(z) + losses * log_ndtr(-z)).sum() + prior * (s**2).sum()
            pdf = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
            dz = -(wins * pdf / np.maximum(ndtr(z), 1e-300) - losses * pdf / np.maximum(ndtr(-z), 1e-300))
            grad = np.zeros(n)
            np.add.at(grad, a, dz / JOD_SIGMA)
            np.add.at(grad, b, -dz / JOD_SIGMA)
            return float(value), grad + 2 * prior * s

        result = minimize(nll, np.zeros(n), jac=True, method="L-BFGS-B")
        scores = result.x - result.x.mean()
        return scores, pd.DataFrame({"a": a, "b": b, "p": p})


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({"image_a": pd.Series(dtype=str), "image_b": pd.Series(dtype=str),
                         "attribute": pd.Series(dtype=str), "p": pd.Series(dtype=float),
                         "source": pd.Series(dtype=str), "fine": pd.Series(dtype=bool)})


def ratings_frame(votes: np.ndarray, keep: np.ndarray, image_ids: Sequence[str],
                  attributes: Sequence[str], dropped: np.ndarray | None = None) -> pd.DataFrame:
    """Long ``ratings.parquet`` rows (every vote): ``kept`` when the vote enters the MOS (its rater passed
    screening and the vote itself is not a removed outlier), ``outlier`` for a vote removed on its own."""
    n_r, n_i, n_a = votes.shape
    rater, image, attr = np.meshgrid(np.arange(n_r), np.arange(n_i), np.arange(n_a), indexing="ij")
    outlier = np.zeros(votes.size, dtype=bool) if dropped is None else np.asarray(dropped, dtype=bool).ravel()
    return pd.DataFrame({
        "image_id": np.asarray(image_ids)[image.ravel()],
        "rater": np.char.add("r", np.char.zfill(rater.ravel().astype(str), 3)),
        "attribute": np.asarray(attributes)[attr.ravel()],
        "score": votes.ravel().astype(np.int64),
        "kept": keep[rater.ravel(), attr.ravel()] & ~outlier,
        "outlier": outlier,
    })


def screening_summary(keep: np.ndarray, dropped: np.ndarray | None, attributes: Sequence[str],
                      method: str) -> dict[str, Any]:
    """What screening removed, for ``dataset.json``: raters rejected per attribute, individual votes removed
    and the share of all votes that do not enter the MOS."""
    n_r, n_a = keep.shape
    n_votes = int(n_r * (dropped.shape[1] if dropped is not None else 0) * n_a)
    removed_votes = int(dropped.sum()) if dropped is not None else 0
    return {"method": method, "vote_outliers_removed": dropped is not None,
            "raters_rejected": {a: int((~keep[:, k]).sum()) for k, a in enumerate(attributes)},
            "votes_removed": removed_votes,
            "votes_removed_share": removed_votes / n_votes if n_votes else 0.0}


def panel_summary(panel: Panel) -> dict[str, Any]:
    """The panel's generator parameters (for ``dataset.json``)."""
    return {k: getattr(panel, k) for k in ("n_raters", "seed", "bias_sd", "scale_sd", "noise", "noise_spread",
                                           "careless", "careless_factor", "pair_noise", "jnd", "min_kept",
                                           "halo_pull", "halo_sd", "context", "spread_mid")}
