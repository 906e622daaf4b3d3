"""Seeded builders of the built-in datasets: scenes x camera settings -> JPEG files + canonical tables.

``build(name, root, seed, **size_kwargs)`` is what ``01_ingest`` calls (``source: sim``). Each builder renders
its images with :mod:`iqalab.sim.camera`, lets a :class:`~iqalab.sim.observers.Panel` annotate them, and writes
the canonical tables with :func:`iqalab.data.schema.write_dataset`:

* ``fglive_sim``  - TuningIQA / FGLive-10K schema: people composited in livestreaming scenes, a reference
  setting per scene plus deviations of 1-3 of the 7 camera parameters, graded by a preview so that each scene
  spans the scale in distinct quality levels (``deviations: graded``; ``random`` for independent draws); a
  ``metadata_missing`` share of scenes lacks some ISP-side parameters (NaN ``cam_*``; FineLive-p is the rest); overall, face,
  sharpness, exposure, noise on 1-5 from single-stimulus votes (Pearson post-screening); within-scene pairs,
  close ones (|dMOS| <= 0.8) refined by side-by-side votes; scene split (paper: 451/104 scenes).
* ``portrait_sim`` - PIQ23-like: each image a different "device" (its own exposure, white-balance, tone,
  sharpening and noise policy) in scenes of four conditions (outdoor/indoor/lowlight/night); overall, exposure,
  details as JOD from pairwise comparisons scaled per scene (so every scene has its own scale, anchored at its
  mean, with a per-scene gain); MOS range [-10, 10] JOD; scene split (paper: 35/15 scenes).
* ``face_sim``    - SFIQA-Bench schema: loosely cropped faces in three scenarios (indoor, outdoor, vehicle), day
  and night, a face enhancer that hallucinates texture in poor light; noise, sharpness, colorfulness, contrast,
  fidelity, overall on 1-5 (BT.500 screening); 5-fold 7:1:2 cross-validation plus a scene split.
* ``ugc_sim``     - REQA's setting: one MOS on 0-100 (votes 1-5 rescaled, as KonIQ/CLIVE), severities and
  (daylight-heavy) lighting conditions drawn so that the MOS peaks mid-scale as KonIQ-like authentic data do, with
  few Bad and Excellent images (REQA Sec. IV-C);
  ``random_XX`` 80/20 splits.

Images are stored as the camera's JPEG files (``images/<id>.jpg``): the simulated JPEG step *is* the file, never
re-encoded. Beside the canonical columns the images table keeps ``true_<attr>`` (the panel's ground truth, 1-5)
and ``sim_<key>`` (every entry of the render ``info``) for analyses, gMAD and the tuning study.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iqalab.analysis.metrics import quality_tiers
from iqalab.data.schema import CAM_COLUMNS, FACE_BOX, LANDMARKS, PERSON_BOX, Dataset, write_dataset
from iqalab.data.splits import kfold_split_names, kfold_splits, random_split_names, random_splits, scene_split
from iqalab.sim.camera import CameraParams, auto_params, capture
from iqalab.sim.observers import (
    Panel,
    panel_summary,
    ratings_frame,
    screening_summary,
    true_quality,
    truth_matrix,
)
from iqalab.sim.scenes import (
    CONDITIONS,
    LFW_SHARE,
    Scene,
    face_crop_scene,
    high_dynamic_range,
    make_scene,
    resize,
    scene_with,
)

log = logging.getLogger(__name__)

LICENCE = ("images derived from scikit-image data (BSD-3 / public domain / CC0 sources; its lfw_subset: 25 px "
           "crops of Labeled Faces in the Wild, Huang et al. 2007, news photographs distributed for research), "
           "matplotlib's grace_hopper sample (public domain) and scikit-learn's sample images (CC BY 2.0 / public "
           "domain)")
CITATION = "iqalab built-in simulator (physically based camera + virtual rater panel); see README"
PAPER_CITATIONS = {
    "fglive_sim": "TuningIQA: fine-grained BIQA for livestreaming camera tuning (FGLive-10K)",
    "portrait_sim": "Generalized Portrait Quality Assessment (FHIQA on PIQ23)",
    "face_sim": "Surveillance facial IQA: SFIQA-Bench and SFIQA-Assessor",
    "ugc_sim": "REQA: coarse-to-fine assessment to alleviate the range effect",
}
#: paper-sized settings (counts from the papers); the defaults of each builder are the small CPU sizes
PAPER_SIZES: dict[str, dict[str, Any]] = {
    "fglive_sim": {"n_scenes": 555, "images_per_scene": 18, "image_size": 512, "n_raters": 25},
    "portrait_sim": {"n_scenes": 50, "images_per_scene": 102, "image_size": 512, "max_pairs_per_scene": 1500},
    "face_sim": {"n_scenes": 834, "images_per_scene": 6, "image_size": 256, "n_raters": 25},
    "ugc_sim": {"n_images": 10073, "image_size": 512, "n_raters": 20, "n_splits": 20},
}


#: share of high-dynamic-range scenes (bright background behind the subject, lamps in the frame;
#: :func:`iqalab.sim.scenes.high_dynamic_range`) in the livestream, portrait and UGC builders and their held-out
#: pools, unless ``hdr_share`` says otherwise. A quarter: backlit windows and lamps in view are common in all
#: three kinds of content; the calibration (README) was re-measured with it.
DEFAULT_HDR_SHARE = 0.25
#: ugc_sim's severity per image: ``offset + span x Beta(k, k)``, and its lighting conditions with their odds
#: (daylight-heavy, as photo-sharing collections such as KonIQ-10k's are; None: the four equally often). Both fitted
#: to the KonIQ-like tier shares (:mod:`iqalab.sim.calibration`: a peak mid-scale and 1-12 % in each extreme tier):
#: with the issue #23 content (sharper, never-upsampled backgrounds, HDR) the former (0.2, 0.45, 3) with equal
#: conditions gave Bad 12.8 % / Excellent 14.3 %; (0.33, 0.30, 4) with these conditions 10.2 % / 10.9 % at 460
#: images but 12.1-14.9 % Bad on seeds 0-2 at 720; refitted on 2026-12-05 with the ``ugc`` ground truth's exponent
#: (:data:`iqalab.sim.observers.PROFILE_EXPONENT`): Bad 7.4-10.5 %, Excellent 5.5-12.4 % on seeds 0-7 at 860 images
#: (README, docs/notes/simulator-content-2026-12.md)
UGC_SEVERITY = (0.35, 0.26, 4.0)
UGC_CONDITIONS: dict[str, float] | None = {"outdoor": 0.35, "indoor": 0.35, "lowlight": 0.18, "night": 0.12}


# --------------------------------------------------------------------------------------------- helpers
def _stream(seed: int, name: str) -> np.random.Generator:
    """Independent generator per builder and seed (stable across Python runs: no hash())."""
    code = sum((i + 1) * ord(c) for i, c in enumerate(name))
    return np.random.default_rng([int(seed), code])


def _stops(value: float, stops: float) -> float:
    return float(value * 2.0**stops)


def _box_columns(scene: Scene, with_person: bool = True) -> dict[str, float]:
    row: dict[str, float] = {}
    boxes = ((PERSON_BOX, scene.person_box if with_person else None), (FACE_BOX, scene.face_box))
    for cols, box in boxes:
        for col, v in zip(cols, box if box is not None else (np.nan,) * 4):
            row[col] = float(v)
    lm = scene.landmarks if scene.landmarks is not None else np.full((5, 2), np.nan)
    for col, v in zip(LANDMARKS, np.asarray(lm, dtype=float).ravel()):
        row[col] = float(v)
    return row


def _content_columns(scene: Scene) -> dict[str, Any]:
    """What is in the picture (issue #23), for analyses by content: the person's source (a photograph or an
    ``lfw_NNN`` face; empty without a person), skin-tone level (empty: none or as photographed), head roll in
    degrees, and whether the scene is high dynamic range."""
    meta = scene.meta
    return {"sim_person": str(meta.get("person_source") or ""), "sim_skin_tone": str(meta.get("skin_tone") or ""),
            "sim_roll_deg": float(meta.get("roll_deg", 0.0)), "sim_hdr": "hdr" in meta}


def _render_rows(shots: list[tuple[str, Scene, CameraParams]], root: Path, rng: np.random.Generator,
                 desc: str, with_person: bool = True) -> tuple[pd.DataFrame, list[dict[str, float]]]:
    """Render every (scene id, scene, params) shot to ``root/images/<id>.jpg``; one table row per image."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, infos = [], []
    counters: dict[str, int] = {}
    for scene_id, scene, params in tqdm(shots, desc=desc, leave=False, mininterval=2.0):
        k = counters.get(scene_id, 0)
        counters[scene_id] = k + 1
        image_id = f"{scene_id}_{k:03d}"
        shot = capture(scene, params, rng)
        path = f"images/{image_id}.jpg"
        (root / path).write_bytes(shot.jpeg)
        h, w = shot.image.shape[:2]
        row: dict[str, Any] = {"image_id": image_id, "path": path, "scene": scene_id,
                               "condition": scene.condition, "width": w, "height": h}
        row.update(params.cam_columns())
        row.update(_box_columns(scene, with_person))
        row.update(_content_columns(scene))
        rows.append(row)
        infos.append(shot.info)
    return pd.DataFrame(rows), infos


def _attach(images: pd.DataFrame, infos: list[dict[str, float]], truth: np.ndarray,
            attributes: list[str]) -> pd.DataFrame:
    extra = pd.DataFrame(infos).add_prefix("sim_")
    true = pd.DataFrame(truth, columns=[f"true_{a}" for a in attributes])
    return pd.concat([images.reset_index(drop=True), true, extra], axis=1)


def _single_stimulus(images: pd.DataFrame, infos: list[dict[str, float]], attributes: list[str],
                     profile: str, panel: Panel, screening: str, scale: tuple[float, float] = (0.0, 1.0)
                     ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray, dict[str, Any]]:
    """Ground truth, votes, screening, MOS columns (``mos = offset + factor * vote_mean``) and what screening
    removed (for ``dataset.json``). ``bt500`` screening also removes individual outlying votes of the kept raters
    (ITU-R BT.500 as SFIQA-Bench applies it, Sec. III-B-3); ``pearson`` rejects raters only (TuningIQA)."""
    truth = truth_matrix(infos, attributes, profile)
    votes = panel.vote(truth)
    keep = panel.screen(votes, method=screening)
    dropped = panel.outlier_votes(votes, keep) if screening == "bt500" else None
    mos, std, n = panel.mos(votes, keep, dropped)
    offset, factor = scale
    for k, attr in enumerate(attributes):
        images[f"mos_{attr}"] = offset + factor * mos[:, k]
        images[f"std_{attr}"] = factor * std[:, k]
        images[f"n_{attr}"] = n[:, k].astype(np.int64)
    ratings = ratings_frame(votes, keep, images["image_id"].tolist(), attributes, dropped)
    summary = screening_summary(keep, dropped, attributes, screening)
    log.info("screening (%s): raters rejected per attribute %s, %d individual votes removed",
             screening, summary["raters_rejected"], summary["votes_removed"])
    return images, ratings, truth, mos, summary


def _meta(name: str, attributes: list[str], mos_range: tuple[float, float], generator: dict[str, Any],
          description: str) -> dict[str, Any]:
    return {"name": name, "attributes": attributes, "mos_range": [float(mos_range[0]), float(mos_range[1])],
            "source": "simulator", "simulated": True, "licence": LICENCE, "citation": CITATION,
            "schema_of": PAPER_CITATIONS[name], "image_format": "jpeg", "description": description,
            "generator": generator}


def _deviate(ref: CameraParams, rng: np.random.Generator, n_changes: int, fine: bool) -> CameraParams:
    """Change ``n_changes`` of the 7 TuningIQA parameters by a fine or a coarse step."""
    names = ["aperture", "shutter", "iso", "wb", "contrast", "saturation", "sharpness"]
    chosen = rng.choice(len(names), size=n_changes, replace=False)

    def step(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi) * rng.choice([-1.0, 1.0]))

    changes: dict[str, float] = {}
    for idx in chosen:
        name = names[int(idx)]
        if name == "aperture":
            changes[name] = float(np.clip(_stops(ref.aperture, step(0.2, 0.6) if fine else step(0.7, 2.5)),
                                          1.4, 16))
        elif name == "shutter":
            changes[name] = float(np.clip(_stops(ref.shutter, step(0.2, 0.7) if fine else step(0.8, 3.0)),
                                          1 / 4000, 1 / 4))
        elif name == "iso":
            changes[name] = float(np.clip(_stops(ref.iso, step(0.2, 0.7) if fine else step(0.8, 3.0)), 50, 25600))
        elif name == "wb":
            changes[name] = float(np.clip(ref.wb + (step(150, 500) if fine else step(600, 2500)), 2000, 10000))
        elif name == "contrast":
            changes[name] = float(np.exp(np.log(ref.contrast) + (step(0.05, 0.2) if fine else step(0.25, 0.8))))
        elif name == "saturation":
            changes[name] = float(np.clip(ref.saturation * np.exp(step(0.05, 0.25) if fine else step(0.3, 1.0)),
                                          0.05, 2.9))
        else:
            changes[name] = float(np.clip(ref.sharpness + (step(0.2, 0.5) if fine else step(0.8, 3.0)), 0.0, 4.5))
    return ref.replace(**changes)


def _random_deviations(ref: CameraParams, rng: np.random.Generator, n: int,
                       fine_share: float = 0.2) -> list[CameraParams]:
    """``n`` independent deviations from ``ref``: each changes 1-3 of the 7 parameters (3 twice as often), by a
    fine step with probability ``fine_share``, else by a coarse step (coarse steps dominate: the paper's overall
    MOS is near uniform)."""
    return [_deviate(ref, rng, int(rng.choice([1, 2, 3, 3])), fine=bool(rng.random() < fine_share))
            for _ in range(n)]


def _preview(scene: Scene, size: int) -> Scene:
    """``scene`` downscaled to ``size`` px wide: a quick look (optics and noise are defined per unit image area,
    so the ground truth of a preview is close to that of the full render)."""
    h, w = scene.size
    if w <= size:
        return scene
    ph = max(8, int(round(h * size / w)))
    changes: dict[str, Any] = {"background": resize(scene.background, size, ph)}
    if scene.person is not None and scene.alpha is not None:
        changes["person"] = resize(scene.person, size, ph)
        changes["alpha"] = np.clip(resize(scene.alpha, size, ph), 0.0, 1.0)
    return scene_with(scene, **changes)


def _graded_deviations(scene: Scene, ref: CameraParams, rng: np.random.Generator, n: int, level_step: float,
                       pool: int = 6, preview_size: int = 64, profile: str = "livestream") -> list[CameraParams]:
    """The ``n`` deviations of one scene, graded as an engineer's sweep is (TuningIQA "Image Collection": "systematic
    deviations" from the reference setting).

    ``pool`` x ``n`` independent deviations are previewed (a ``preview_size`` px render, scored by the ground
    truth of ``profile``). Quality levels evenly spaced from ``q_ref`` (the reference's quality) down to 1, as
    many as fit ``level_step`` or more apart, are filled in turn, the reference taking the first slot of the top
    level, each slot by the unused candidate closest to it. So every scene spans the scale in distinct grades with
    a few images per grade. Why: FGLive-10K's overall MOS is uniform *and* only 21 % of its within-scene pairs
    lie within 0.8 MOS; independent deviations leave 43-45 % of the pairs that close (two independent uniforms
    on [1, 5] alone give 36 %), while graded levels put most pairs more than 0.8 apart. ``level_step`` is fitted
    (:mod:`iqalab.sim.calibration`), not taken from the paper.
    """
    candidates = _random_deviations(ref, rng, pool * n)
    small = _preview(scene, preview_size)
    quality = np.array([true_quality(capture(small, c, rng).info, "overall", profile) for c in candidates])
    q_ref = true_quality(capture(small, ref, rng).info, "overall", profile)
    n_levels = int(max(q_ref - 1.0, 0.0) / level_step) + 1
    levels = np.linspace(q_ref, 1.0, n_levels) if n_levels > 1 else np.array([q_ref])
    targets = np.resize(levels, n + 1)[1:]
    free = np.ones(len(candidates), dtype=bool)
    chosen = []
    for t in targets:
        k = int(np.argmin(np.where(free, np.abs(quality - t), np.inf)))
        free[k] = False
        chosen.append(candidates[k])
    return [chosen[i] for i in rng.permutation(n)]


#: the parameters a phone's EXIF does not record (ISP-side settings); aperture, shutter and ISO are in every EXIF
ISP_PARAMS = ("wb", "contrast", "saturation", "sharpness")


def _blank_metadata(images: pd.DataFrame, rng: np.random.Generator, share: float) -> dict[str, int]:
    """Blank (NaN) camera parameters of a ``share`` of the scenes, in place, as incomplete metadata is.

    TuningIQA keeps "the complete 7-parameter metadata for a subset of images" (FineLive-p: 5,559 + 1,148 of
    FGLive-10K's 10,185 images, so 34 % lack some). A camera or session either logs its settings or not, so
    whole scenes lose them: in ``round(share x n_scenes)`` scenes each ISP-side parameter (white balance,
    contrast, saturation, sharpness: what EXIF does not carry) is blanked with probability 0.6, at least one of
    them; aperture, shutter and ISO stay. Returns the counts recorded in ``dataset.json``.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"metadata_missing must be a share in [0, 1], got {share!r}")
    scenes = np.array(sorted(images["scene"].unique()))
    blanked = rng.choice(scenes, size=int(round(share * len(scenes))), replace=False) if len(scenes) else []
    for scene in blanked:
        drop = rng.random(len(ISP_PARAMS)) < 0.6
        if not drop.any():
            drop[int(rng.integers(len(ISP_PARAMS)))] = True
        rows = images["scene"] == scene
        for name in np.asarray(ISP_PARAMS)[drop]:
            images.loc[rows, f"cam_{name}"] = np.nan
    complete = images[list(CAM_COLUMNS)].notna().all(axis=1)
    return {"scenes_incomplete": len(blanked), "images_complete": int(complete.sum()),
            "images_incomplete": int((~complete).sum())}


def _scene_split(images: pd.DataFrame, test_fraction: float, val_fraction: float, seed: int) -> pd.DataFrame:
    """Scene split with at least one validation scene whenever a val share is asked for and 3+ scenes exist."""
    n = images["scene"].nunique()
    if val_fraction > 0 and n >= 3:
        val_fraction = max(val_fraction, 1.0 / n)
        test_fraction = max(test_fraction, 1.0 / n)
    return scene_split(images, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)


def _maybe_hdr(scene: Scene, rng: np.random.Generator, share: float) -> Scene:
    """With probability ``share`` (drawn from ``rng``, a stream of its own so that ``share = 0`` leaves every other
    draw as it was) the scene becomes high dynamic range (:func:`iqalab.sim.scenes.high_dynamic_range`)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"hdr_share must be a share in [0, 1], got {share!r}")
    return high_dynamic_range(scene, rng) if share > 0 and rng.random() < share else scene


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if value is None or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------- builders
def fglive_sim(root: Path, seed: int = 0, n_scenes: int = 40, images_per_scene: int = 8, image_size: int = 256,
               n_raters: int = 20, screening: str = "pearson", pair_threshold: float = 0.8, n_judges: int = 5,
               max_pairs_per_scene: int | None = None, test_fraction: float = 104 / 555,
               val_fraction: float = 0.1, deviations: str = "graded", level_step: float = 1.1,
               preview_pool: int = 10, metadata_missing: float = 0.34,
               hdr_share: float = DEFAULT_HDR_SHARE) -> Dataset:
    """FGLive-10K-like livestreaming dataset (see the module docstring); defaults: 320 images, 256 px."""
    _check_positive(n_scenes=n_scenes, images_per_scene=images_per_scene, image_size=image_size, n_raters=n_raters)
    if deviations not in ("graded", "random"):
        raise ValueError(f"fglive_sim: deviations must be 'graded' or 'random', got {deviations!r}")
    if level_step <= 0 or preview_pool < 1:
        raise ValueError("fglive_sim: level_step must be > 0 and preview_pool >= 1")
    rng = _stream(seed, "fglive_sim")
    hdr_rng = _stream(seed, "fglive_sim/hdr")
    attributes = ["overall", "face", "sharpness", "exposure", "noise"]
    conditions = ["indoor", "indoor", "outdoor", "lowlight", "night"]
    shots = []
    for s in range(n_scenes):
        scene_id = f"fg{s:04d}"
        scene = _maybe_hdr(make_scene(rng, image_size, condition=conditions[s % len(conditions)], person="any",
                                      name=scene_id), hdr_rng, hdr_share)
        ref = auto_params(scene, aperture=float(rng.choice([2.0, 2.8, 4.0])), sharpness=0.6, jpeg_quality=92)
        shots.append((scene_id, scene, ref))
        picked = (_graded_deviations(scene, ref, rng, images_per_scene - 1, level_step, pool=preview_pool)
                  if deviations == "graded" else _random_deviations(ref, rng, images_per_scene - 1))
        shots += [(scene_id, scene, params) for params in picked]
    images, infos = _render_rows(shots, root, rng, "fglive_sim")
    metadata = _blank_metadata(images, _stream(seed, "fglive_sim/metadata"), metadata_missing)
    panel = Panel(n_raters=n_raters, seed=seed)
    images, ratings, truth, mos, screened = _single_stimulus(images, infos, attributes, "livestream", panel,
                                                             screening)
    pairs = panel.pairs(images["image_id"], images["scene"], mos, truth, attributes, threshold=pair_threshold,
                        n_judges=n_judges, max_pairs_per_scene=max_pairs_per_scene, rng=rng)
    images = _attach(images, infos, truth, attributes)
    splits = _scene_split(images, test_fraction, val_fraction, seed)
    generator = {"builder": "fglive_sim", "seed": seed, "n_scenes": n_scenes, "images_per_scene": images_per_scene,
                 "image_size": image_size, "screening": screening, "pair_threshold": pair_threshold,
                 "n_judges": n_judges, "max_pairs_per_scene": max_pairs_per_scene, "profile": "livestream",
                 "deviations": deviations, "level_step": level_step, "preview_pool": preview_pool,
                 "metadata_missing": metadata_missing, "metadata": metadata, "hdr_share": hdr_share,
                 "panel": panel_summary(panel), "screening_removed": screened}
    ds = Dataset(root=Path(root), meta=_meta("fglive_sim", attributes, (1.0, 5.0), generator,
                                             "livestreaming scenes x 7 camera parameters, 5 attributes, fine pairs"),
                 images=images, splits=splits, pairs=pairs, ratings=ratings)
    write_dataset(ds)
    return ds


def _device(rng: np.random.Generator) -> dict[str, float]:
    """A smartphone-like capture policy: auto-exposure bias, ISP taste, noise and sharpening habits."""
    return {"ev_bias": float(rng.normal(0, 0.6)), "aperture": float(rng.choice([1.7, 1.8, 2.2, 2.8])),
            "slowest": float(rng.choice([1 / 8, 1 / 15, 1 / 30, 1 / 60])),
            "max_iso": float(rng.choice([1600, 3200, 6400, 12800])),
            "wb_error": float(rng.normal(0, 500)), "contrast": float(np.clip(np.exp(rng.normal(0, 0.25)), 0.35, 2.8)),
            "saturation": float(np.clip(np.exp(rng.normal(0.05, 0.25)), 0.05, 2.9)), "sharpness": float(rng.uniform(0, 2.5)),
            "jpeg_quality": float(rng.uniform(70, 97))}


def portrait_sim(root: Path, seed: int = 0, n_scenes: int = 16, images_per_scene: int = 16, image_size: int = 256,
                 n_raters: int = 20, n_judges: int = 6, max_pairs_per_scene: int | None = None,
                 scene_gain_sd: float = 0.25, jod_limit: float = 10.0, test_fraction: float = 0.3,
                 val_fraction: float = 0.1, hdr_share: float = DEFAULT_HDR_SHARE) -> Dataset:
    """PIQ23-like portrait dataset (see the module docstring); defaults: 256 images, 256 px, JOD in [-10, 10]."""
    _check_positive(n_scenes=n_scenes, images_per_scene=images_per_scene, image_size=image_size,
                    n_raters=n_raters, n_judges=n_judges)
    if images_per_scene < 2:
        raise ValueError("portrait_sim needs at least 2 images per scene (pairwise comparisons)")
    rng = _stream(seed, "portrait_sim")
    hdr_rng = _stream(seed, "portrait_sim/hdr")
    attributes = ["overall", "exposure", "details"]
    conditions = list(CONDITIONS)
    shots = []
    for s in range(n_scenes):
        scene_id = f"pq{s:03d}"
        scene = _maybe_hdr(make_scene(rng, image_size, condition=conditions[s % len(conditions)], person="any",
                                      name=scene_id), hdr_rng, hdr_share)
        for _ in range(images_per_scene):
            dev = _device(rng)
            ref = auto_params(scene, aperture=dev["aperture"], slowest=dev["slowest"], max_iso=dev["max_iso"])
            params = ref.replace(
                shutter=float(np.clip(_stops(ref.shutter, dev["ev_bias"]), 1 / 8000, 1.0)),
                wb=float(np.clip(scene.cct + dev["wb_error"], 1600, 11000)), contrast=dev["contrast"],
                saturation=dev["saturation"], sharpness=dev["sharpness"], jpeg_quality=dev["jpeg_quality"])
            shots.append((scene_id, scene, params))
    images, infos = _render_rows(shots, root, rng, "portrait_sim")
    truth = truth_matrix(infos, attributes, "portrait")
    panel = Panel(n_raters=n_raters, seed=seed, pair_noise=0.3, jnd=0.05)
    scene_of = images["scene"].to_numpy()
    ids = images["image_id"].to_numpy()
    pair_frames = []
    clipped = 0
    for scene_id in sorted(set(scene_of)):
        members = np.flatnonzero(scene_of == scene_id)
        gain = float(np.exp(rng.normal(0, scene_gain_sd)))  # the scene's own quality scale
        for k, attr in enumerate(attributes):
            jod, compared = panel.jod_scale(truth[members, k], n_judges=n_judges, gain=gain,
                                            max_pairs=max_pairs_per_scene, rng=rng)
            clipped += int((np.abs(jod) > jod_limit).sum())
            images.loc[members, f"mos_{attr}"] = np.clip(jod, -jod_limit, jod_limit)
            images.loc[members, f"std_{attr}"] = np.nan
            counts = np.bincount(np.concatenate([compared["a"], compared["b"]]), minlength=len(members))
            images.loc[members, f"n_{attr}"] = counts * n_judges
            d = jod[compared["a"].to_numpy()] - jod[compared["b"].to_numpy()]
            pair_frames.append(pd.DataFrame({
                "image_a": ids[members[compared["a"].to_numpy()]], "image_b": ids[members[compared["b"].to_numpy()]],
                "attribute": attr, "p": np.rint(compared["p"].to_numpy() * 2) / 2, "source": "refined",
                "fine": np.abs(d) <= 1.0, "p_votes": compared["p"].to_numpy(), "n_votes": n_judges, "d_mos": d}))
    if clipped:
        log.warning("portrait_sim: %d JOD scores beyond +-%g clipped", clipped, jod_limit)
    for attr in attributes:
        images[f"n_{attr}"] = images[f"n_{attr}"].astype(np.int64)
    pairs = pd.concat(pair_frames, ignore_index=True)
    images = _attach(images, infos, truth, attributes)
    splits = _scene_split(images, test_fraction, val_fraction, seed)
    generator = {"builder": "portrait_sim", "seed": seed, "n_scenes": n_scenes, "images_per_scene": images_per_scene,
                 "image_size": image_size, "n_judges": n_judges, "max_pairs_per_scene": max_pairs_per_scene,
                 "scene_gain_sd": scene_gain_sd, "jod_limit": jod_limit, "profile": "portrait",
                 "hdr_share": hdr_share,
                 "scale": "JOD (Thurstone Case V, 1 JOD = 75% preference), anchored at each scene's mean",
                 "panel": panel_summary(panel)}
    ds = Dataset(root=Path(root), meta=_meta("portrait_sim", attributes, (-jod_limit, jod_limit), generator,
                                             "portraits by many simulated devices, per-scene JOD scales"),
                 images=images, splits=splits, pairs=pairs, ratings=None)
    write_dataset(ds)
    return ds


def face_sim(root: Path, seed: int = 0, n_scenes: int = 60, images_per_scene: int = 6, image_size: int = 128,
             n_raters: int = 25, screening: str = "bt500", n_folds: int = 5, test_fraction: float = 0.2,
             val_fraction: float = 0.1, lfw_share: float = LFW_SHARE) -> Dataset:
    """SFIQA-Bench-like surveillance face dataset (see the module docstring); defaults: 360 images, 128 px.
    ``lfw_share`` of the scenes show one of the 100 LFW faces, the rest one of the three photographs."""
    _check_positive(n_scenes=n_scenes, images_per_scene=images_per_scene, image_size=image_size, n_raters=n_raters)
    rng = _stream(seed, "face_sim")
    attributes = ["noise", "sharpness", "colorfulness", "contrast", "fidelity", "overall"]
    scenarios = ["indoor", "outdoor", "vehicle"]
    shots = []
    for s in range(n_scenes):
        scene_id = f"sf{s:04d}"
        scenario = scenarios[s % 3]
        night = bool(rng.random() < 0.45)
        scene = face_crop_scene(rng, image_size, scenario=scenario, night=night, name=scene_id,
                                lfw_share=lfw_share)
        for _ in range(images_per_scene):
            # calibrated (sim.calibration): SFIQA-Bench's sharpness is its lowest dimension and colour and
            # contrast its best, so colour/tone errors are milder than the blur and the sharpening moderate
            params = auto_params(scene, aperture=float(rng.choice([1.4, 1.6, 2.0])), slowest=1 / 25,
                                 fastest=1 / 8000, max_iso=25600, sharpness=float(rng.uniform(0.0, 1.5)),
                                 jpeg_quality=float(rng.uniform(40, 95)))
            params = params.replace(
                shutter=float(np.clip(_stops(params.shutter, rng.normal(0, 0.6)), 1 / 8000, 1 / 5)),
                wb=float(np.clip(scene.cct + rng.normal(0, 250), 1600, 11000)),
                contrast=float(np.clip(np.exp(rng.normal(0, 0.2)), 0.35, 2.8)),
                saturation=float(np.clip(np.exp(rng.normal(0, 0.2)), 0.05, 2.9)))
            poor_light = night or params.iso > 1600
            if rng.random() < (0.75 if poor_light else 0.15):
                params = params.replace(enhance=float(rng.uniform(0.2, 1.0)))
            shots.append((scene_id, scene, params))
    images, infos = _render_rows(shots, root, rng, "face_sim", with_person=False)
    # SFIQA-Bench trained its raters until their SRCC with expert scores reached 0.9 (Sec. III-B-2): less noise
    panel = Panel(n_raters=n_raters, seed=seed, noise=0.35)
    images, ratings, truth, _, screened = _single_stimulus(images, infos, attributes, "surveillance", panel,
                                                           screening)
    images = _attach(images, infos, truth, attributes)
    images["sim_night"] = [bool(s.meta.get("night", False)) for _, s, _ in shots]
    # folds of whole scenes: a scene's images share their face and background, and SFIQA-Bench excluded
    # "excessively similar images depicting the same individual" (Sec. III-A), so siblings never straddle a fold
    splits = pd.concat([kfold_splits(images, n_folds=n_folds, seed=seed, by_scene=True),
                        _scene_split(images, test_fraction, val_fraction, seed)],
                       ignore_index=True)
    generator = {"builder": "face_sim", "seed": seed, "n_scenes": n_scenes, "images_per_scene": images_per_scene,
                 "image_size": image_size, "screening": screening, "n_folds": n_folds, "profile": "surveillance",
                 "lfw_share": lfw_share,
                 "panel": panel_summary(panel), "screening_removed": screened}
    ds = Dataset(root=Path(root), meta=_meta("face_sim", attributes, (1.0, 5.0), generator,
                                             "surveillance face crops: 3 scenarios, day/night, hallucinating "
                                             "enhancement"),
                 images=images, splits=splits, pairs=None, ratings=ratings)
    write_dataset(ds)
    return ds


def _ugc_scene(rng: np.random.Generator, hdr_rng: np.random.Generator, image_size: int, name: str,
               hdr_share: float) -> Scene:
    """One user-generated-content scene: a condition drawn from :data:`UGC_CONDITIONS` (daylight-heavy), a person
    on half of them, high dynamic range on ``hdr_share`` (shared by :func:`ugc_sim` and ``scene_pool("ugc")``)."""
    condition = (None if UGC_CONDITIONS is None
                 else str(rng.choice(list(UGC_CONDITIONS), p=list(UGC_CONDITIONS.values()))))
    person = "any" if rng.random() < 0.5 else None
    return _maybe_hdr(make_scene(rng, image_size, condition=condition, person=person, name=name), hdr_rng, hdr_share)


def ugc_sim(root: Path, seed: int = 0, n_images: int = 320, image_size: int = 256, n_raters: int = 20,
            screening: str = "bt500", n_splits: int = 5, test_fraction: float = 0.2,
            hdr_share: float = DEFAULT_HDR_SHARE) -> Dataset:
    """User-generated-content dataset, MOS 0-100 over all five REQA tiers (see the module docstring)."""
    _check_positive(n_images=n_images, image_size=image_size, n_raters=n_raters, n_splits=n_splits)
    rng = _stream(seed, "ugc_sim")
    hdr_rng = _stream(seed, "ugc_sim/hdr")
    attributes = ["overall"]
    shots = []
    for i in range(n_images):
        scene_id = f"ugc{i:05d}"
        scene = _ugc_scene(rng, hdr_rng, image_size, scene_id, hdr_share)
        # calibrated (sim.calibration): KonIQ-like authentic data peak mid-scale with few Bad/Excellent images
        severity = float(UGC_SEVERITY[0] + UGC_SEVERITY[1] * rng.beta(UGC_SEVERITY[2], UGC_SEVERITY[2]))
        ref = auto_params(scene, aperture=float(rng.choice([1.8, 2.2, 2.8])), slowest=1 / 15, max_iso=6400)

        def hit(severity: float = severity) -> bool:
            return bool(rng.random() < 0.25 + 0.75 * severity)

        changes: dict[str, float] = {"jpeg_quality": float(np.clip(97 - 75 * severity * rng.uniform(0.3, 1), 10, 98)),
                                     "sharpness": float(rng.uniform(0.2, 0.9))}
        if hit():
            changes["shutter"] = float(np.clip(_stops(ref.shutter, rng.normal(0, 1.6 * severity + 0.2)),
                                               1 / 4000, 1 / 2))
        if hit():
            changes["iso"] = float(np.clip(_stops(ref.iso, abs(rng.normal(0, 3.0 * severity))), 50, 51200))
            # a phone raises ISO at (about) the same exposure: the shutter shortens with it (a higher ISO at a
            # fixed shutter overexposed by up to 4 EV and made the Bad tier mostly blown-out frames)
            changes["shutter"] = float(np.clip(changes.get("shutter", ref.shutter) * ref.iso / changes["iso"],
                                               1 / 8000, 1 / 2))
        if hit():
            changes["wb"] = float(np.clip(scene.cct + rng.normal(0, 1500 * severity + 100), 1600, 11000))
        if hit():
            changes["contrast"] = float(np.clip(np.exp(rng.normal(0, 0.6 * severity + 0.05)), 0.35, 2.8))
        if hit():
            changes["saturation"] = float(np.clip(np.exp(rng.normal(0, 0.8 * severity + 0.05)), 0.05, 2.9))
        if hit():
            changes["sharpness"] = float(rng.uniform(0, 1 + 3.5 * severity))
        if hit():
            changes["aperture"] = float(np.clip(_stops(ref.aperture, rng.normal(0, 2 * severity)), 1.4, 16))
        shots.append((scene_id, scene, ref.replace(**changes)))
    images, infos = _render_rows(shots, root, rng, "ugc_sim")
    panel = Panel(n_raters=n_raters, seed=seed)
    images, ratings, truth, _, screened = _single_stimulus(images, infos, attributes, "ugc", panel, screening,
                                                           scale=(-25.0, 25.0))
    images = _attach(images, infos, truth, attributes)
    # REQA's tiers (Sec. IV-A-1), counted Bad first
    tiers = pd.Series(quality_tiers(images["mos_overall"])).value_counts(sort=False).to_numpy()
    log.info("ugc_sim MOS per tier (Bad..Excellent): %s", tiers.tolist())
    splits = random_splits(images, n_splits=n_splits, test_fraction=test_fraction, seed=seed)
    generator = {"builder": "ugc_sim", "seed": seed, "n_images": n_images, "image_size": image_size,
                 "screening": screening, "n_splits": n_splits, "profile": "ugc", "hdr_share": hdr_share,
                 "scale": "MOS = 25 (mean vote - 1), 0-100", "tier_counts": tiers.tolist(),
                 "panel": panel_summary(panel), "screening_removed": screened}
    ds = Dataset(root=Path(root), meta=_meta("ugc_sim", attributes, (0.0, 100.0), generator,
                                             "varied content and severities, one MOS on 0-100"),
                 images=images, splits=splits, pairs=None, ratings=ratings)
    write_dataset(ds)
    return ds


BUILDERS: dict[str, Callable[..., Dataset]] = {
    "fglive_sim": fglive_sim, "portrait_sim": portrait_sim, "face_sim": face_sim, "ugc_sim": ugc_sim,
}


def builder_options(name: str) -> dict[str, Any]:
    """The size keyword arguments a builder accepts, with their defaults."""
    if name not in BUILDERS:
        raise KeyError(f"unknown simulator builder {name!r}; available: {sorted(BUILDERS)}")
    sig = inspect.signature(BUILDERS[name])
    return {k: p.default for k, p in sig.parameters.items() if k not in ("root", "seed")}


def split_names(name: str, **options: Any) -> list[str]:
    """The splits builder ``name`` writes with ``options`` (known without building: ``iqalab check`` compares
    ``experiments.<e>.splits`` with them). fglive_sim and portrait_sim: the scene split; face_sim: ``fold_k`` and
    the scene split; ugc_sim: ``random_XX``."""
    opts = {**builder_options(name), **options}
    if name == "face_sim":
        return [*kfold_split_names(int(opts["n_folds"])), "scene"]
    if name == "ugc_sim":
        return random_split_names(int(opts["n_splits"]))
    return ["scene"]


def build(name: str, root: str | Path, seed: int = 0, **size_kwargs: Any) -> Dataset:
    """Build simulator dataset ``name`` into ``root`` (validated and written); unknown kwargs are errors."""
    allowed = builder_options(name)
    unknown = sorted(set(size_kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"simulator builder {name!r} got unknown option(s) {unknown}; "
                        f"allowed: {sorted(allowed)}")
    log.info("building %s (seed %d) into %s with %s", name, seed, root, size_kwargs or "defaults")
    return BUILDERS[name](Path(root), seed=seed, **size_kwargs)


# --------------------------------------------------------------------------------------------- pools, figures
def scene_pool(n_scenes: int, seed: int = 0, image_size: int = 256, kind: str = "livestream",
               hdr_share: float = DEFAULT_HDR_SHARE) -> list[Scene]:
    """Scenes for gMAD and the camera-tuning study, drawn from a stream no builder uses (held out).

    ``kind``: ``livestream`` (people composited, the FGLive conditions), ``portrait`` (people, all four
    conditions), ``face`` (surveillance face crops) or ``ugc`` (half without people); all but ``face`` with a
    ``hdr_share`` of high-dynamic-range scenes, as their builders have.
    """
    rng = _stream(seed, f"scene_pool/{kind}")
    hdr_rng = _stream(seed, f"scene_pool/{kind}/hdr")
    scenes = []
    for s in range(n_scenes):
        name = f"pool_{kind}_{s:04d}"
        if kind == "face":
            scenes.append(face_crop_scene(rng, image_size, scenario=("indoor", "outdoor", "vehicle")[s % 3],
                                          night=bool(rng.random() < 0.45), name=name))
        elif kind in ("livestream", "portrait"):
            conditions = ["indoor", "outdoor", "lowlight", "night"]
            scenes.append(_maybe_hdr(make_scene(rng, image_size, condition=conditions[s % 4], person="any",
                                                name=name), hdr_rng, hdr_share))
        elif kind == "ugc":
            scenes.append(_ugc_scene(rng, hdr_rng, image_size, name, hdr_share))
        else:
            raise ValueError(f"unknown scene pool kind {kind!r}; choose livestream, portrait, face or ugc")
    return scenes


#: parameter sweeps shown in the annotation-statistics figure (multiples/offsets of the reference setting)
SWEEPS: dict[str, tuple[float, ...]] = {
    "aperture": (1.4, 2.8, 5.6, 11.0, 16.0), "shutter": (-2.0, 0.0, 2.0, 4.0, 6.0), "iso": (0.0, 1.5, 3.0, 4.5, 6.0),
    "wb": (-2500.0, -1000.0, 0.0, 1500.0, 4000.0), "contrast": (0.5, 0.75, 1.0, 1.5, 2.2),
    "saturation": (0.1, 0.5, 1.0, 1.6, 2.5), "sharpness": (0.0, 0.6, 1.5, 3.0, 5.0),
}


def parameter_sweep(seed: int = 0, image_size: int = 192, params: tuple[str, ...] | None = None,
                    scene: Scene | None = None) -> dict[str, list[tuple[np.ndarray, dict[str, float], float]]]:
    """Render one scene across each parameter of :data:`SWEEPS` (shutter/ISO in stops at fixed aperture;
    ISO raised at *fixed exposure* by shortening the shutter). Returns ``{param: [(image, info, value)]}``."""
    rng = _stream(seed, "parameter_sweep")
    scene = scene or make_scene(rng, image_size, condition="indoor", person="any", name="sweep")
    ref = auto_params(scene, sharpness=0.6, jpeg_quality=92)
    out: dict[str, list[tuple[np.ndarray, dict[str, float], float]]] = {}
    for name in params or tuple(SWEEPS):
        shots = []
        for v in SWEEPS[name]:
            if name == "shutter":
                p = ref.replace(shutter=float(np.clip(_stops(ref.shutter, v), 1 / 8000, 1.0)))
                value = p.shutter
            elif name == "iso":
                # keep the exposure: the shutter shortens as ISO rises, so ISO stops where 1/8000 s is reached
                iso = float(np.clip(_stops(ref.iso, v), 25, min(51200.0, ref.iso * ref.shutter * 8000)))
                p = ref.replace(iso=iso, shutter=float(np.clip(ref.shutter * ref.iso / iso, 1 / 8000, 1.0)))
                value = iso
            elif name == "wb":
                value = float(np.clip(scene.cct + v, 1600, 11000))
                p = ref.replace(wb=value)
            else:
                value = float(v)
                p = ref.replace(**{name: value})
            shot = capture(scene, p, _stream(seed, f"sweep/{name}/{value}"))
            image, info = shot.image, shot.info
            shots.append((image, info, value))
        out[name] = shots
    return out


def plot_parameter_sweep(seed: int = 0, image_size: int = 160, attribute: str = "overall",
                         profile: str = "livestream") -> Any:
    """A matplotlib figure: one row per camera parameter, example images with value and ground truth."""
    import matplotlib.pyplot as plt

    from iqalab.sim.observers import true_quality

    sweeps = parameter_sweep(seed, image_size)
    n_cols = max(len(v) for v in sweeps.values())
    fig, axes = plt.subplots(len(sweeps), n_cols, figsize=(2.0 * n_cols, 2.15 * len(sweeps)), squeeze=False)
    for r, (name, shots) in enumerate(sweeps.items()):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(shots):
                continue
            image, info, value = shots[c]
            ax.imshow(image)
            label = f"1/{1 / value:.0f} s" if name == "shutter" else f"{value:.4g}"
            ax.set_title(f"{name} {label}\n{attribute} {true_quality(info, attribute, profile):.2f}", fontsize=7)
    fig.tight_layout()
    return fig
