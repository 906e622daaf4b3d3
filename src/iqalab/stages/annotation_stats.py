"""Stage ``annotation_stats``: what a dataset is made of - numbers in ``results/stats/<ds>.json``, figures in
``results/figures/<ds>/`` (PNG + PDF); for a simulated dataset also its calibration against the papers'
published statistics in ``results/simulator/<ds>.json`` / ``.md`` (:mod:`iqalab.sim.calibration`).

The analyses (MOS, attribute correlations, OLS, rater agreement, BT.500 screening, MOS intervals, fine pairs,
camera parameters) are :func:`iqalab.analysis.annotation.analyse`; an analysis whose inputs are missing is skipped
and ``skipped[<section>]`` in the JSON says why. The JSON is plain (no NaN: undefined numbers are ``null``).
:func:`run` is what the CLI (``iqalab annotation_stats <ds>``) and the notebook call; :func:`write_figures` draws
:func:`iqalab.dataset_figures.annotation_figure_makers` into files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from iqalab import provenance
from iqalab.analysis.annotation import AnnotationAnalysis, analyse, jsonable
from iqalab.config import Params
from iqalab.data.cache import ImageCache
from iqalab.data.schema import DataError, Dataset, read_dataset
from iqalab.dataset_figures import annotation_figure_makers
from iqalab.io import write_json
from iqalab.plots import label_simulated, save
from iqalab.sim.calibration import write_calibration

log = logging.getLogger(__name__)

#: figure name -> the section whose skip reason explains a missing figure
FIGURE_SECTIONS = {
    "mos_distributions": "mos", "attribute_scatter": "correlation", "attribute_correlation": "correlation",
    "ols_coefficients": "ols", "ols_residuals": "ols", "rater_vs_mos": "raters", "bt500_screening": "bt500",
    "mos_confidence": "mos_ci", "pair_refinement": "pairs", "camera_mos": "camera",
    "camera_correlation": "camera", "parameter_sweep": "sweep", "regions": "regions",
}


def _cached_loader(ds: Dataset, cache_size: int | None) -> Callable[[pd.Series], np.ndarray] | None:
    """Read montage images from the ingest cache when it is there (no full-resolution decodes), else None."""
    if cache_size is None:
        return None
    try:
        cache = ImageCache(ds, cache_size)
    except DataError as exc:
        log.info("montage decodes the image files: %s", exc)
        return None
    return lambda row: cache[cache.row_of[row["image_id"]]]


def write_figures(ds: Dataset, result: AnnotationAnalysis, out_dir: Path, root: Path | None = None,
                  cache_size: int | None = None) -> dict[str, list[str]]:
    """Draw and save every figure the analyses allow to ``out_dir`` (PNG + PDF, photographs JPEG); remove stale files
    of earlier runs from ``out_dir``. Returns ``{figure name: [paths]}``, relative to ``root`` when given.
    ``cache_size`` names the ingest cache the image montage reads (else it decodes the files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    simulated = bool(ds.meta.get("simulated", False))
    written: dict[str, list[str]] = {}
    for name, make in annotation_figure_makers(ds, result, _cached_loader(ds, cache_size)).items():
        fig = make()
        if fig is None:
            continue
        label_simulated(fig, simulated)
        paths = save(fig, out_dir / name)
        plt.close(fig)
        written[name] = [str(p.relative_to(root)) if root is not None else str(p) for p in paths]
    keep = {Path(p).name for paths in written.values() for p in paths}
    for stale in sorted(out_dir.glob("*")):
        if stale.suffix in (".png", ".pdf", ".jpg") and stale.name not in keep:
            log.info("removing stale figure %s", stale)
            stale.unlink()
    return written


def run(params: Params, dataset: str, root: Path) -> dict[str, Any]:
    """Analyse ``root/build/datasets/<dataset>``, write ``root/results/stats/<dataset>.json`` and the figures
    in ``root/results/figures/<dataset>/``; return the JSON dict (``figures`` lists what was written)."""
    cfg = params.dataset(dataset)  # an unknown name fails with the list of configured datasets
    root = Path(root)
    ds = read_dataset(root / "build" / "datasets" / dataset)
    result = analyse(ds)
    result.report["figures"] = write_figures(ds, result, root / "results" / "figures" / dataset, root,
                                             cfg.cache_size)
    report = {**jsonable(result.report), "_provenance": provenance.collect(params)}
    write_json(root / "results" / "stats" / f"{dataset}.json", report)
    # the simulator's calibration against the papers' published statistics (a stub for other sources)
    write_calibration(ds, root / "results" / "simulator")
    log.info("annotation statistics of %s: %d figures, skipped %s", dataset, len(report["figures"]),
             sorted(report["skipped"]) or "nothing")
    return report


def show(report: Mapping[str, Any], name: str, root: Path, width: int = 560) -> None:
    """Display figure ``name`` of ``report`` in a notebook, or say why the stage skipped it."""
    from IPython.display import Image, Markdown, display

    paths = report.get("figures", {}).get(name)
    if paths:
        raster = next(p for p in paths if p.endswith((".png", ".jpg")))  # photographic figures are JPEG only
        display(Image(filename=str(Path(root) / raster), width=width))
        return
    section = FIGURE_SECTIONS.get(name, name)
    reason = report.get("skipped", {}).get(section, "not produced for this dataset")
    display(Markdown(f"*No `{name}` figure for this dataset: {reason}.*"))
