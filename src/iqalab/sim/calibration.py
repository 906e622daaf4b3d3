"""Calibration of the simulator against the papers' published statistics (issue #23).

For every statistic the four papers print about their data, :func:`calibrate` measures the same statistic on a
simulated dataset and says whether it lies within a stated tolerance of the paper's value. The targets are the
papers' own words and numbers (``/work/shared/seeds``), never inputs of the ground truth: the simulator's
weights may be *fitted* so that these land in tolerance, but no paper coefficient is copied into it (SFIQA's OLS,
in particular, is measured here on the simulated MOS).

Targets (``builder``: statistic, paper value, tolerance):

* ``fglive_sim`` (TuningIQA, Sec. "Annotation Analysis", Fig. 4, Fig. 5): the overall MOS distribution is
  "uniform" (Kolmogorov-Smirnov distance to a uniform over the observed range, paper ~0, tolerance 0.15; its
  median at the middle of the range, tolerance 0.4); 21 % of the pairs refined (19,234 of 91,946; +-8 points);
  post-screened raters' PLCC with the MOS 0.85 overall (+-0.07) and 0.24 in the 4.2-5.0 tier (+-0.15); overall
  and face correlate "extremely high" (PLCC >= 0.85); sharpness, exposure and noise "low" (mean |PLCC| <= 0.4).
* ``face_sim`` (SFIQA, Sec. III-C): OLS of overall on the five dimensions R^2 = 0.9778 (>= 0.95); mean MOS per
  dimension between 2.96 (sharpness, the lowest) and 3.32 (colorfulness, the highest), tolerance 0.3 each way;
  sharpness has the lowest mean; most MOS within 2.5-4.0 (>= 60 %); overall correlates most with fidelity
  (then sharpness, noise); day above night in every dimension; indoor above outdoor in fidelity, sharpness and
  contrast.
* ``ugc_sim`` (REQA, Sec. IV on KonIQ-10k/CLIVE/SPAQ tiers): authentic data are "narrow and peak", with "a few
  samples" in Excellent and Bad: the modal tier is Poor, Fair or Good, and each extreme tier holds 1-12 %.
* ``portrait_sim`` (FHIQA on PIQ23): every scene has its own quality scale: the spread of the per-scene overall
  JOD ranges (coefficient of variation >= 0.15) and per-scene means at the anchor (|mean| <= 0.05 JOD).

:func:`write_calibration` writes ``results/simulator/<dataset>.json`` and ``.md`` (the ``annotation_stats``
stage calls it for simulated datasets). What each statistic means and how it is computed is in its ``how``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from iqalab import provenance
from iqalab.analysis.stats import equal_tiers, ols_overall, rater_vs_mos
from iqalab.data.schema import Dataset
from iqalab.io import write_json, write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One published statistic: ``paper`` value (a number, or None for a bound stated in words), the accepted
    interval ``[lo, hi]`` of the simulated value, where it is printed and how it is measured here."""

    key: str
    paper: float | None
    lo: float
    hi: float
    source: str
    how: str

    def check(self, value: float) -> bool:
        return bool(np.isfinite(value) and self.lo <= value <= self.hi)


def _ks_uniform(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return 1.0
    return float(sps.kstest((x - lo) / (hi - lo), "uniform").statistic)


def _rater_plcc(ds: Dataset, attribute: str, tier: str | None) -> float:
    if ds.ratings is None or ds.ratings.empty:
        return math.nan
    ratings = ds.ratings[ds.ratings["kept"]] if "kept" in ds.ratings.columns else ds.ratings
    table = rater_vs_mos(ratings, ds.images, attribute, tiers=equal_tiers(*ds.mos_range))
    rows = table[table["tier"] == (tier or "all")]
    return float(rows["plcc"].mean()) if rows["plcc"].notna().any() else math.nan


def _plcc(images: pd.DataFrame, a: str, b: str) -> float:
    return float(images[f"mos_{a}"].corr(images[f"mos_{b}"]))


def _fglive(ds: Dataset) -> list[tuple[Target, float]]:
    im = ds.images
    mos = im["mos_overall"].to_numpy(float)
    lo, hi = ds.mos_range
    out = [
        (Target("overall_ks_to_uniform", 0.0, 0.0, 0.15, "TuningIQA Sec. Annotation Distribution, Fig. 4",
                "KS distance of the overall MOS (scaled to its observed range) to a uniform"), _ks_uniform(mos)),
        (Target("overall_median", (lo + hi) / 2, (lo + hi) / 2 - 0.4, (lo + hi) / 2 + 0.4,
                "TuningIQA Fig. 4 (uniform overall)", "median overall MOS"), float(np.median(mos))),
    ]
    if ds.pairs is not None and not ds.pairs.empty:
        pairs = ds.pairs[ds.pairs["attribute"] == "overall"]
        share = float((pairs["source"] == "refined").mean()) if len(pairs) else math.nan
        out.append((Target("refined_pair_share", 0.21, 0.13, 0.29, "TuningIQA Sec. Pairwise Comparison",
                           "share of overall pairs with |dMOS| <= 0.8 refined side by side"), share))
    out += [
        (Target("rater_mos_plcc", 0.85, 0.78, 0.92, "TuningIQA Fig. 5, Individual Annotation Consistency",
                "mean PLCC of each kept rater's overall votes with the MOS"), _rater_plcc(ds, "overall", None)),
        (Target("rater_mos_plcc_top_tier", 0.24, 0.09, 0.39, "TuningIQA Fig. 5 (4.2-5.0 tier)",
                "the same within the top fifth of the MOS range"),
         _rater_plcc(ds, "overall", f"{equal_tiers(lo, hi)[-1][0]:g}-{hi:g}")),
        (Target("plcc_overall_face", None, 0.85, 1.0, "TuningIQA Fig. 4 ('extremely high')",
                "PLCC of overall and face MOS"), _plcc(im, "overall", "face")),
        (Target("mean_abs_plcc_sharpness_exposure_noise", None, 0.0, 0.4, "TuningIQA Fig. 4 ('low')",
                "mean |PLCC| over the three pairs of sharpness, exposure, noise"),
         float(np.mean([abs(_plcc(im, a, b)) for a, b in (("sharpness", "exposure"), ("sharpness", "noise"),
                                                          ("exposure", "noise"))]))),
    ]
    return out


SFIQA_DIMS = ("noise", "sharpness", "colorfulness", "contrast", "fidelity")


def _face(ds: Dataset) -> list[tuple[Target, float]]:
    im = ds.images
    out: list[tuple[Target, float]] = []
    ols = ols_overall(im, "overall", list(SFIQA_DIMS))
    out.append((Target("ols_r2", 0.9778, 0.95, 1.0, "SFIQA Sec. III-C-2, Eq. 1",
                       "centred R^2 of OLS (with intercept) of overall on the five dimensions"), float(ols.r2)))
    means = {a: float(im[f"mos_{a}"].mean()) for a in (*SFIQA_DIMS, "overall")}
    for a in (*SFIQA_DIMS, "overall"):
        out.append((Target(f"mean_{a}", None, 2.96 - 0.3, 3.32 + 0.3, "SFIQA Sec. III-C-1 (means 2.96-3.32)",
                           f"mean {a} MOS"), means[a]))
    out.append((Target("lowest_mean_is_sharpness", 1.0, 1.0, 1.0, "SFIQA Sec. III-C-1",
                       "1 when sharpness has the lowest mean MOS of the five dimensions"),
                float(min(SFIQA_DIMS, key=means.__getitem__) == "sharpness")))
    share = float(im["mos_overall"].between(2.5, 4.0).mean())
    out.append((Target("overall_share_2p5_to_4", None, 0.6, 1.0, "SFIQA Sec. III-C-1 ('most ratings')",
                       "share of overall MOS within 2.5-4.0"), share))
    corr = {a: _plcc(im, "overall", a) for a in SFIQA_DIMS}
    out.append((Target("overall_corr_highest_with_fidelity", 1.0, 1.0, 1.0, "SFIQA Sec. III-C-2, Fig. 8",
                       "1 when fidelity is the dimension most correlated with overall"),
                float(max(corr, key=corr.__getitem__) == "fidelity")))
    if "sim_night" in im.columns:
        night = im["sim_night"].astype(bool)
        day_above = np.mean([im.loc[~night, f"mos_{a}"].mean() > im.loc[night, f"mos_{a}"].mean()
                             for a in (*SFIQA_DIMS, "overall")])
        out.append((Target("day_above_night_share", 1.0, 1.0, 1.0, "SFIQA Sec. III-C-3, Fig. 9",
                           "share of the six dimensions whose daytime mean MOS exceeds the night's"),
                    float(day_above)))
    cond = im["condition"].astype(str)
    if {"indoor", "outdoor"} <= set(cond):
        indoor_above = np.mean([im.loc[cond == "indoor", f"mos_{a}"].mean()
                                > im.loc[cond == "outdoor", f"mos_{a}"].mean()
                                for a in ("fidelity", "sharpness", "contrast")])
        out.append((Target("indoor_above_outdoor_share", 1.0, 1.0, 1.0, "SFIQA Sec. III-C-3, Fig. 9",
                           "share of fidelity, sharpness, contrast whose indoor mean MOS exceeds outdoor's"),
                    float(indoor_above)))
    return out


def _ugc(ds: Dataset) -> list[tuple[Target, float]]:
    counts = np.histogram(ds.images["mos_overall"], bins=[0, 20, 40, 60, 80, 100.0001])[0]
    share = counts / max(int(counts.sum()), 1)
    return [
        (Target("modal_tier_is_middle", 1.0, 1.0, 1.0, "REQA Sec. I and IV ('narrow and peak')",
                "1 when the most populated tier is Poor, Fair or Good"), float(int(np.argmax(counts)) in (1, 2, 3))),
        (Target("bad_tier_share", None, 0.01, 0.12, "REQA Sec. IV-C ('a few samples' in Bad)",
                "share of images with MOS < 20"), float(share[0])),
        (Target("excellent_tier_share", None, 0.01, 0.12, "REQA Sec. IV-C ('a few samples' in Excellent)",
                "share of images with MOS >= 80"), float(share[4])),
    ]


def _portrait(ds: Dataset) -> list[tuple[Target, float]]:
    g = ds.images.groupby("scene")["mos_overall"]
    ranges = (g.max() - g.min()).to_numpy(float)
    return [
        (Target("scene_scale_cv", None, 0.15, 10.0, "FHIQA Sec. 1 (scene-specific quality scales of PIQ23)",
                "coefficient of variation of the per-scene overall JOD range"),
         float(ranges.std() / max(ranges.mean(), 1e-9))),
        (Target("scene_mean_abs_max", 0.0, 0.0, 0.05, "PIQ23 scaling (anchored per scene)",
                "largest |mean overall JOD| of a scene"), float(g.mean().abs().max())),
    ]


CALIBRATIONS: dict[str, Callable[[Dataset], list[tuple[Target, float]]]] = {
    "fglive_sim": _fglive, "face_sim": _face, "ugc_sim": _ugc, "portrait_sim": _portrait,
}


def builder_of(ds: Dataset) -> str | None:
    """The simulator builder that made ``ds`` (None for other sources)."""
    generator = ds.meta.get("generator") or {}
    name = generator.get("builder") if ds.meta.get("simulated") else None
    return str(name) if name in CALIBRATIONS else None


def content(images: pd.DataFrame) -> dict[str, Any]:
    """What the simulated pictures show (issue #23), from the ``sim_*`` content columns of the images table, per
    scene (the content of a scene is the same in all its shots; per image where there is no ``scene`` column):
    how many show a person, distinct identities (photographs and ``lfw_NNN`` faces), skin-tone levels, identity x
    tone pairs, HDR scenes and the range of head roll. Empty for a table without the columns."""
    columns = ("sim_person", "sim_skin_tone", "sim_roll_deg", "sim_hdr")
    if not set(columns) <= set(images.columns):
        return {}
    unit = "scene" if "scene" in images.columns else "image_id"
    per = images.groupby(unit, sort=True)[list(columns)].first()
    person = per["sim_person"].fillna("").astype(str)
    tone = per["sim_skin_tone"].fillna("").astype(str)
    shown = person != ""
    lfw = person.str.startswith("lfw_")
    roll = per.loc[shown, "sim_roll_deg"].astype(float)
    return {"unit": f"{unit}s" if unit == "scene" else "images", "n": int(len(per)),
            "with_person": int(shown.sum()), "identities": int(person[shown].nunique()),
            "lfw_identities": int(person[lfw].nunique()), "with_lfw_face": int(lfw.sum()),
            "skin_tones": int(tone[shown & (tone != "")].nunique()),
            "identity_tone_pairs": int(len(set(zip(person[shown], tone[shown], strict=True)))),
            "hdr": int(per["sim_hdr"].astype(bool).sum()),
            "roll_deg": [float(roll.min()), float(roll.max())] if len(roll) else None}


def content_line(summary: dict[str, Any]) -> str:
    """:func:`content` as one sentence (empty for an empty summary)."""
    if not summary:
        return ""
    roll = summary["roll_deg"]
    rolls = "" if roll is None else f", head roll {roll[0]:.1f} to {roll[1]:.1f} degrees"
    lfw = (f"; {summary['lfw_identities']} of them LFW faces, shown in {summary['with_lfw_face']} {summary['unit']}"
           if summary["lfw_identities"] else "")
    return (f"Content: {summary['n']} {summary['unit']}, {summary['with_person']} with a person or face "
            f"({summary['identities']} identities{lfw}), {summary['skin_tones']} skin-tone levels, "
            f"{summary['identity_tone_pairs']} identity x tone pairs, {summary['hdr']} high dynamic range{rolls}.")


def calibrate(ds: Dataset) -> dict[str, Any]:
    """Every published target of ``ds``'s builder: paper value, simulated value (None where undefined, e.g. a
    tier without images), tolerance, within or not."""
    builder = builder_of(ds)
    if builder is None:
        return {"dataset": ds.name, "simulated": False, "targets": [], "within": 0, "n": 0}
    rows = []
    for target, value in CALIBRATIONS[builder](ds):
        value = float(value)
        rows.append({"key": target.key, "paper": target.paper, "simulated": value if np.isfinite(value) else None,
                     "tolerance": [target.lo, target.hi], "within": target.check(value), "source": target.source,
                     "how": target.how})
    within = sum(r["within"] for r in rows)
    return {"dataset": ds.name, "builder": builder, "simulated": True, "n_images": len(ds.images),
            "targets": rows, "within": within, "n": len(rows), "share_within": within / max(len(rows), 1),
            "content": content(ds.images)}


def markdown(result: dict[str, Any]) -> str:
    """The calibration as a Markdown table."""
    if not result.get("simulated"):
        return f"# Simulator calibration: {result['dataset']}\n\nNot a simulated dataset: nothing to calibrate.\n"
    lines = [f"# Simulator calibration: {result['dataset']} ({result['builder']}, {result['n_images']} images)",
             "", f"{result['within']} of {result['n']} published statistics within tolerance.", "",
             *([line, ""] if (line := content_line(result.get("content") or {})) else []),
             "| statistic | paper | simulated | accepted | within | source |", "|---|---|---|---|---|---|"]
    for r in result["targets"]:
        paper = "-" if r["paper"] is None else f"{r['paper']:.4g}"
        value = "n/a" if r["simulated"] is None else f"{r['simulated']:.4g}"
        lo, hi = r["tolerance"]
        lines.append(f"| {r['key']} | {paper} | {value} | [{lo:.4g}, {hi:.4g}] | "
                     f"{'yes' if r['within'] else 'NO'} | {r['source']} |")
    return "\n".join(lines) + "\n"


def write_calibration(ds: Dataset, out_dir: Path) -> dict[str, Any]:
    """Write ``out_dir/<dataset>.json`` and ``.md`` (atomic), each with the run's provenance (issue 28: the JSON's
    ``_provenance``, the Markdown's footer line), and return the calibration dict."""
    result = calibrate(ds)
    out_dir = Path(out_dir)
    write_json(out_dir / f"{ds.name}.json", {**result, "_provenance": provenance.current()})
    write_text(out_dir / f"{ds.name}.md", f"{markdown(result)}\n<sub>{provenance.footer()}</sub>\n")
    if result["simulated"]:
        log.info("simulator calibration of %s: %d of %d targets within tolerance", ds.name, result["within"],
                 result["n"])
    return result
