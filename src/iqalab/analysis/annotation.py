"""Annotation statistics of one dataset: what it is made of, as the papers' dataset analyses describe theirs.

The analyses run on whatever the dataset has (each section of the report, or a reason in ``skipped``):

- ``mos``: per-attribute MOS summary, also per condition (SFIQA Figs. 2-3) - always;
- ``correlation``: PLCC / SRCC matrices of the attributes (TuningIQA Fig. 4) - needs two attributes;
- ``ols``: overall ~ other attributes, raw with an intercept, raw without one (Eq. 1 as printed) and standardised
  (SFIQA Sec. III-C-3), each with centred and uncentred R^2 - needs ``overall`` and another;
- ``raters``: rater-vs-MOS PLCC overall and per MOS tier (TuningIQA Fig. 5) - needs ``ratings.parquet`` whose
  rater ids name people (:func:`rater_identity_problem`; KonIQ-10k's anonymous per-image vote numbers do not);
- ``bt500``: ITU-R BT.500 observer screening - needs the same;
- ``mos_ci``: per-image MOS confidence intervals (BT.500 Sec. 2.2) - needs ``ratings.parquet``;
- ``pairs``: fine pairs and what refinement did to the MOS order (TuningIQA Eq. 2) - needs ``pairs.parquet``;
- ``camera``: MOS against camera parameters, their SRCC with attributes - needs a varying ``cam_*`` column;
- ``sweep``: example images of one scene sorted by a camera parameter - needs a ``cam_*`` varying in a scene.

:func:`analyse` computes (the primitives are :mod:`iqalab.analysis.stats`), :func:`jsonable` makes the report plain
JSON, :func:`summary` gives its headline numbers; the stage :mod:`iqalab.stages.annotation_stats` writes them and
the figures (:func:`iqalab.dataset_figures.annotation_figure_makers`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.analysis.metrics import MetricWarning, srcc
from iqalab.analysis.stats import (
    BT500Report,
    OLSResult,
    attribute_corr_matrix,
    bt500_screening,
    equal_tiers,
    mos_confidence_intervals,
    ols_overall,
    pair_refinement_summary,
    rater_vs_mos,
)
from iqalab.data.schema import CAM_COLUMNS, Dataset

log = logging.getLogger(__name__)

#: The reference numbers the figures are compared with (quoted into the JSON for the reader).
REFERENCES = {
    "ols": "SFIQA-Bench: Overall = 0.0765 N + 0.4134 S + 0.0554 Col + 0.1463 Con + 0.3076 F, R^2 = 0.9778",
    "raters": "TuningIQA Fig. 5: mean rater-vs-MOS PLCC 0.85 over all images, 0.24 within the 4.2-5.0 tier",
}
CONFIDENCE = 0.95


@dataclass
class AnnotationAnalysis:
    """Everything :func:`analyse` found: the JSON ``report`` and the objects the figures are drawn from."""

    report: dict[str, Any]
    main_attribute: str
    plcc: pd.DataFrame | None = None
    srcc: pd.DataFrame | None = None
    ols: OLSResult | None = None
    ols_standardised: OLSResult | None = None
    ols_no_intercept: OLSResult | None = None
    rater_table: pd.DataFrame | None = None
    bt500: BT500Report | None = None
    dataset_removed: list[str] = field(default_factory=list)
    ci: pd.DataFrame | None = None
    pairs: pd.DataFrame | None = None
    camera_columns: list[str] = field(default_factory=list)
    camera_srcc: pd.DataFrame | None = None

    @property
    def skipped(self) -> dict[str, str]:
        return self.report.setdefault("skipped", {})


# ------------------------------------------------------------------------------------------------ helpers
def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types: numpy scalars to Python, non-finite floats and pandas NA to ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _frame_dict(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``{row label: {column: value}}`` keeping each column's type (counts stay integers)."""
    return {str(i): {str(c): v for c, v in row.items()} for i, row in frame.to_dict(orient="index").items()}


def _describe(values: pd.Series) -> dict[str, float | int]:
    v = values.dropna().astype(float)
    if v.empty:
        return {"n": 0}
    return {"n": len(v), "mean": v.mean(), "std": v.std(ddof=1) if len(v) > 1 else math.nan, "min": v.min(),
            "q25": v.quantile(0.25), "median": v.median(), "q75": v.quantile(0.75), "max": v.max()}


def _main_attribute(attributes: list[str]) -> str:
    return "overall" if "overall" in attributes else attributes[0]


def varying_camera_columns(images: pd.DataFrame) -> list[str]:
    """``cam_*`` columns (canonical order) with at least two distinct non-null values."""
    return [c for c in CAM_COLUMNS if c in images.columns and images[c].dropna().nunique() >= 2]


def camera_srcc(images: pd.DataFrame, cam_columns: list[str], attributes: list[str],
                min_size: int = 3) -> pd.DataFrame:
    """SRCC of each camera parameter with each attribute MOS (rows: parameters without ``cam_``), pairwise
    complete; NaN with fewer than ``min_size`` images or a constant column."""
    out = pd.DataFrame(index=pd.Index([c.removeprefix("cam_") for c in cam_columns], name="parameter"),
                       columns=attributes, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        for col in cam_columns:
            for attr in attributes:
                both = images[[col, f"mos_{attr}"]].astype(float).dropna()
                out.loc[col.removeprefix("cam_"), attr] = (srcc(both[col], both[f"mos_{attr}"])
                                                           if len(both) >= min_size else math.nan)
    return out


# ------------------------------------------------------------------------------------------------ sections
def _dataset_section(ds: Dataset) -> dict[str, Any]:
    images = ds.images
    conditions = images["condition"].dropna().astype(str).value_counts().sort_index()
    return {
        "name": ds.name, "simulated": bool(ds.meta.get("simulated", False)), "source": ds.meta.get("source"),
        "n_images": len(images), "n_scenes": int(images["scene"].nunique()), "attributes": ds.attributes,
        "mos_range": list(ds.mos_range), "conditions": conditions.to_dict(),
        "n_condition_missing": int(images["condition"].isna().sum()),
        "tables": {"ratings": ds.ratings is not None and len(ds.ratings) > 0,
                   "pairs": ds.pairs is not None and len(ds.pairs) > 0},
        "camera_parameters": varying_camera_columns(images),
    }


def _mos_section(ds: Dataset, result: AnnotationAnalysis) -> None:
    images = ds.images
    section: dict[str, Any] = {}
    has_conditions = images["condition"].notna().any()
    for attr in ds.attributes:
        col = f"mos_{attr}"
        entry: dict[str, Any] = _describe(images[col])
        if has_conditions:
            labelled = images[images["condition"].notna()]
            entry["by_condition"] = {str(c): _describe(part[col])
                                     for c, part in labelled.groupby(labelled["condition"].astype(str), sort=True)}
        section[attr] = entry
    result.report["mos"] = section
    if not has_conditions:
        result.skipped["conditions"] = "no image has a condition: distributions are not split by condition"


def _correlation_section(ds: Dataset, result: AnnotationAnalysis) -> None:
    if len(ds.attributes) < 2:
        result.skipped["correlation"] = "the dataset has a single attribute: no attribute relations"
        return
    result.plcc = attribute_corr_matrix(ds.images, ds.attributes, "pearson")
    result.srcc = attribute_corr_matrix(ds.images, ds.attributes, "spearman")
    result.report["correlation"] = {"plcc": _frame_dict(result.plcc), "srcc": _frame_dict(result.srcc)}


def _ols_section(ds: Dataset, result: AnnotationAnalysis) -> None:
    if "overall" not in ds.attributes:
        result.skipped["ols"] = "no 'overall' attribute to regress on the others"
        return
    others = [a for a in ds.attributes if a != "overall"]
    if not others:
        result.skipped["ols"] = "only the 'overall' attribute: nothing to regress it on"
        return
    # a constant predictor is collinear with the intercept and cannot be standardised: leave it out, say so
    complete = ds.images[[f"mos_{a}" for a in ("overall", *others)]].dropna()
    constant = [a for a in ("overall", *others) if complete[f"mos_{a}"].nunique() < 2]
    if "overall" in constant:
        result.skipped["ols"] = "the overall MOS is constant over the complete rows"
        return
    predictors = [a for a in others if a not in constant]
    if not predictors:
        result.skipped["ols"] = f"every other attribute is constant ({constant})"
        return
    try:
        result.ols = ols_overall(ds.images, "overall", predictors)
        result.ols_standardised = ols_overall(ds.images, "overall", predictors, standardise=True)
        result.ols_no_intercept = ols_overall(ds.images, "overall", predictors, intercept=False)
    except ValueError as exc:  # too few complete rows
        result.skipped["ols"] = f"OLS not possible: {exc}"
        return
    # "raw" has an intercept; "no_intercept" is Eq. 1 as printed (SFIQA reports coefficients without a constant)
    result.report["ols"] = {"raw": result.ols.as_dict(), "no_intercept": result.ols_no_intercept.as_dict(),
                            "standardised": result.ols_standardised.as_dict(),
                            "dropped_constant": constant, "confidence": CONFIDENCE,
                            "reference": REFERENCES["ols"]}


def _kept_flags(ratings: pd.DataFrame) -> pd.Series | None:
    """Per (attribute, rater): did the dataset's own screening keep the rater (``kept`` column), else None."""
    if "kept" not in ratings.columns:
        return None
    return ratings.groupby(["attribute", "rater"])["kept"].any()


#: ``dataset.json`` key an adapter sets to ``false`` when the ``rater`` column of its ``ratings.parquet`` does not
#: identify people across images (KonIQ-10k publishes vote histograms: its ids number the votes within an image)
RATER_IDENTITIES = "rater_identities"


def rater_identity_problem(ds: Dataset) -> str | None:
    """Why rater-level analyses (rater-vs-MOS, BT.500 observer screening) cannot run on ``ds``'s votes, or None.

    Both treat a ``rater`` id as one person who rated many images. That holds only where the dataset says so:
    ``dataset.json`` may declare ``rater_identities: false`` (the KonIQ-10k adapter does), and a ratings table in
    which no rater id votes on two images of one attribute has no rater to analyse either. Per-image analyses of
    the votes (the MOS confidence intervals) need no identities and still run."""
    if ds.meta.get(RATER_IDENTITIES) is False:
        source = ds.meta.get("ratings_from")
        return ("the dataset's rater ids are not people (dataset.json: rater_identities false"
                + (f"; ratings from {source}" if source else "") + ")")
    ratings = ds.ratings
    if ratings is not None and not ratings.empty:
        images_per_rater = ratings.groupby(["attribute", "rater"])["image_id"].nunique()
        if (images_per_rater <= 1).all():
            return "no rater id votes on more than one image, so no rater can be compared with the MOS"
    return None


def _rater_section(ds: Dataset, result: AnnotationAnalysis) -> None:
    ratings = ds.ratings
    if ratings is None or ratings.empty:
        reason = "no ratings.parquet (per-rater votes) in this dataset"
        for section in ("raters", "bt500", "mos_ci"):
            result.skipped[section] = reason
        return
    problem = rater_identity_problem(ds)
    if problem is not None:
        log.info("%s: rater-vs-MOS and BT.500 observer screening skipped: %s", ds.name, problem)
        result.skipped["raters"] = result.skipped["bt500"] = problem
    else:
        _rater_level_sections(ds, ratings, result)
    _mos_ci_section(ds, ratings, result)


def _rater_level_sections(ds: Dataset, ratings: pd.DataFrame, result: AnnotationAnalysis) -> None:
    """Rater-vs-MOS PLCC per tier (TuningIQA Fig. 5) and BT.500 observer screening: one rater id = one person."""
    kept = _kept_flags(ratings)
    tiers = equal_tiers(*ds.mos_range)
    per_attribute: dict[str, Any] = {}
    for attr in ds.attributes:
        try:
            table = rater_vs_mos(ratings, ds.images, attr, tiers=tiers)
        except ValueError as exc:
            per_attribute[attr] = {"skipped": str(exc)}
            continue
        if kept is not None:
            table["kept"] = [bool(kept.get((attr, r), False)) for r in table["rater"]]
        used = table[table["kept"]] if "kept" in table.columns else table
        per_attribute[attr] = {
            "n_raters": int(table["rater"].nunique()), "n_raters_kept": int(used["rater"].nunique()),
            "tiers": {str(t): {"mean_plcc": g["plcc"].mean(), "median_plcc": g["plcc"].median(),
                               "n_raters": int(g["plcc"].notna().sum()), "mean_images": g["n"].mean()}
                      for t, g in used.groupby("tier", sort=False)},
        }
        if attr == result.main_attribute:
            result.rater_table = table
    if not any("tiers" in v for v in per_attribute.values()):
        result.skipped["raters"] = "no rating matches an image's MOS"
    result.report["raters"] = {
        "figure_attribute": result.main_attribute, "tiers": [f"{lo:g}-{hi:g}" for lo, hi in tiers],
        "raters_used": "kept by the dataset's screening" if kept is not None else "all",
        "attributes": per_attribute, "reference": REFERENCES["raters"],
    }

    # BT.500 screening on every vote, also per attribute; compared with the dataset's own screening if any
    result.bt500 = bt500_screening(ratings)
    bt_section: dict[str, Any] = {"all": result.bt500.as_dict(),
                                  "raters": _frame_dict(result.bt500.raters.set_index("rater")),
                                  "per_attribute": {a: bt500_screening(ratings, attribute=a).as_dict()
                                                    for a in ds.attributes
                                                    if (ratings["attribute"] == a).any()}}
    if kept is not None:
        removed = {a: sorted(str(r) for (att, r), k in kept.items() if att == a and not k) for a in ds.attributes}
        result.dataset_removed = sorted({r for rs in removed.values() for r in rs})
        bt_section["dataset_screening_removed"] = removed
    result.report["bt500"] = bt_section


def _mos_ci_section(ds: Dataset, ratings: pd.DataFrame, result: AnnotationAnalysis) -> None:
    """MOS confidence intervals from the votes that make the MOS (kept ones when the dataset says which)."""
    votes = ratings[ratings["kept"].astype(bool)] if "kept" in ratings.columns else ratings
    ci = mos_confidence_intervals(votes, confidence=CONFIDENCE)
    result.ci = ci
    mos_lookup = ds.images.set_index("image_id")
    ci_section: dict[str, Any] = {}
    for attr, part in ci.groupby("attribute", sort=False):
        table_mos = part["image_id"].map(mos_lookup[f"mos_{attr}"]).astype(float)
        ci_section[str(attr)] = {
            "n_images": len(part), "median_votes": part["n"].median(),
            "mean_half_width": part["delta"].mean(), "median_half_width": part["delta"].median(),
            "max_half_width": part["delta"].max(),
            # 0 when the table's MOS is the plain mean of these votes; adapters may rescale (then it is not 0)
            "max_abs_diff_vs_table_mos": (part["mos"] - table_mos).abs().max(),
        }
    result.report["mos_ci"] = {"confidence": CONFIDENCE, "interval": "Student t, ddof=1",
                               "votes": "kept" if "kept" in ratings.columns else "all", "attributes": ci_section}


def _pair_section(ds: Dataset, result: AnnotationAnalysis) -> None:
    pairs = ds.pairs
    if pairs is None or pairs.empty:
        result.skipped["pairs"] = "no pairs.parquet in this dataset"
        return
    summary = pair_refinement_summary(pairs, ds.images)
    result.pairs = summary
    by_source = pairs.groupby([pairs["source"].astype(str), pairs["fine"].astype(bool)]).size()
    result.report["pairs"] = {
        "n_pairs": len(pairs), "n_fine": int(pairs["fine"].astype(bool).sum()),
        "by_source": {f"{s}/{'fine' if f else 'coarse'}": int(n) for (s, f), n in by_source.items()},
        "p_values": {f"{k:g}": int(v) for k, v in pairs["p"].round(3).value_counts().sort_index().items()}
        if pairs["p"].nunique() <= 5 else "vote fractions",
        "summary": _frame_dict(summary),
    }
    if summary.loc["all", "fine"] == 0:
        result.skipped["pairs"] = "pairs exist but none is marked fine"


def _camera_section(ds: Dataset, result: AnnotationAnalysis) -> None:
    cols = varying_camera_columns(ds.images)
    result.camera_columns = cols
    if not cols:
        result.skipped["camera"] = "no camera parameter (cam_*) with two or more distinct values"
        result.skipped["sweep"] = result.skipped["camera"]
        return
    result.camera_srcc = camera_srcc(ds.images, cols, ds.attributes)
    params_info = {c.removeprefix("cam_"): {**_describe(ds.images[c]), "n_distinct": int(ds.images[c].nunique())}
                   for c in cols}
    sweeps = {}
    for col in cols:
        picked = sweep_selection(ds.images, col, cols)
        if picked is not None:
            sweeps[col.removeprefix("cam_")] = {"scene": picked[0], "values": picked[1][col].tolist(),
                                                 "image_ids": picked[1]["image_id"].tolist(),
                                                 "other_changes": picked[1]["other_changes"].tolist()}
    if not sweeps:
        result.skipped["sweep"] = "no scene has two distinct values of any camera parameter"
    result.report["camera"] = {"parameters": params_info, "srcc": _frame_dict(result.camera_srcc),
                               "sweeps": sweeps}


def sweep_selection(images: pd.DataFrame, cam_column: str, cam_columns: Sequence[str],
                    max_images: int = 8) -> tuple[str, pd.DataFrame] | None:
    """The scene and images that best show ``cam_column`` varying: the scene with the most distinct values.

    Within a scene other parameters may change too (FGLive-style deviations change 1-3 parameters at once), so
    each image gets ``other_changes``: how many of the *other* camera parameters differ from the scene's most
    common setting. Per distinct value the image with the fewest other changes is kept; among scenes with the
    most distinct values the one with the fewest other changes in total wins (then the first scene name).
    The chosen rows are sorted by the parameter, at most ``max_images`` (spread evenly over the values), with
    an ``other_changes`` column. ``None`` when no scene has two distinct values.
    """
    others = [c for c in cam_columns if c != cam_column and c in images.columns]
    known = images.dropna(subset=[cam_column])
    scenes = known["scene"].astype(str)
    distinct = known.groupby(scenes)[cam_column].nunique()
    varying = known[scenes.isin(distinct.index[distinct >= 2])]  # real datasets: mostly one image per scene
    best: tuple[tuple[int, int], str, pd.DataFrame] | None = None
    for scene, part in varying.groupby(varying["scene"].astype(str), sort=True):
        changes = np.zeros(len(part), dtype=int)
        for col in others:
            values = part[col].astype(float).to_numpy()
            known = values[np.isfinite(values)]
            if known.size == 0:
                continue
            uniq, counts = np.unique(known, return_counts=True)
            mode = uniq[np.argmax(counts)]
            changes += ~np.isclose(values, mode, rtol=1e-6, atol=0.0, equal_nan=False) & np.isfinite(values)
        part = part.assign(other_changes=changes)
        picked = part.sort_values(["other_changes", "image_id"]).drop_duplicates(subset=[cam_column])
        key = (len(picked), -int(picked["other_changes"].sum()))
        if best is None or key > best[0]:
            best = (key, str(scene), picked)
    if best is None:
        return None
    rows = best[2].sort_values(cam_column)
    if len(rows) > max_images:
        rows = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, max_images).round().astype(int))]
    return best[1], rows


def _region_section(ds: Dataset, result: AnnotationAnalysis) -> None:
    """Detection rates of the human regions per condition (issue #21: TuningIQA's HFE, SFIQA's views), with the
    detectors that produced them (:mod:`iqalab.data.regions`)."""
    from iqalab.data.regions import detection_rates
    from iqalab.data.schema import FACE_BOX, PERSON_BOX

    images = ds.images
    if not (set(FACE_BOX) <= set(images.columns) or set(PERSON_BOX) <= set(images.columns)):
        result.skipped["regions"] = "no person or face box columns (enable datasets.<name>.detect)"
        return
    rates = detection_rates(images)
    detectors = {kind: sorted(images[f"{kind}_detector"].dropna().astype(str).unique().tolist())
                 for kind in ("face", "person") if f"{kind}_detector" in images.columns}
    result.report["regions"] = {"rates": rates.to_dict(orient="records"), "detectors": detectors}


def analyse(ds: Dataset) -> AnnotationAnalysis:
    """Run every analysis the dataset's tables allow; missing inputs are recorded in ``report['skipped']``."""
    result = AnnotationAnalysis(report={"dataset": _dataset_section(ds), "skipped": {}},
                                main_attribute=_main_attribute(ds.attributes))
    for section in (_mos_section, _correlation_section, _ols_section, _rater_section, _pair_section,
                    _camera_section, _region_section):
        section(ds, result)
    for name, reason in result.skipped.items():
        log.info("%s: %s skipped: %s", ds.name, name, reason)
    return result


def summary(report: Mapping[str, Any]) -> pd.DataFrame:
    """Headline numbers of a report as a two-column table (``quantity``, ``value``) for the notebook."""
    rows: list[tuple[str, Any]] = []
    d = report["dataset"]
    rows += [("images", d["n_images"]), ("scenes", d["n_scenes"]), ("attributes", ", ".join(d["attributes"]))]
    if "ols" in report:
        raw = report["ols"]["raw"]
        rows += [("OLS equation", raw["equation"]), ("OLS R^2 / adj. R^2", f"{raw['r2']:.4f} / {raw['adj_r2']:.4f}")]
        if "no_intercept" in report["ols"]:
            bare = report["ols"]["no_intercept"]
            rows += [("OLS without intercept (Eq. 1 as printed)", bare["equation"]),
                     ("  its R^2 centred / uncentred", f"{bare['r2']:.4f} / {bare['r2_uncentered']:.4f}")]
    raters = report.get("raters", {})
    main = raters.get("attributes", {}).get(raters.get("figure_attribute", ""), {})
    for tier in ("all", (raters.get("tiers") or [None])[-1]):
        value = main.get("tiers", {}).get(tier, {}).get("mean_plcc") if tier else None
        if value is not None:
            rows.append((f"mean rater-vs-MOS PLCC ({raters['figure_attribute']}, tier {tier})", round(value, 3)))
    if "bt500" in report:
        bt = report["bt500"]["all"]
        rows.append(("BT.500 rejected raters", f"{len(bt['rejected'])} of {bt['n_raters']}"))
    if "pairs" in report:
        total = report["pairs"]["summary"]["all"]
        rows.append(("fine pairs", total["fine"]))
        if total["flip_rate"] is not None:
            rows.append(("refinement flipped / tied", f"{total['flip_rate']:.1%} / {total['tie_rate']:.1%}"))
    rows += [(f"skipped: {k}", v) for k, v in report.get("skipped", {}).items()]
    return pd.DataFrame(rows, columns=["quantity", "value"])
