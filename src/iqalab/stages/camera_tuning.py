"""Stage ``camera_tuning``: trained quality models tune a simulated camera; a virtual panel says who won.

TuningIQA (seed 000), Sec. "Application for Camera Tuning" (12 volunteers, 44 scenarios, top-1 win rates 76 %
vs LIQE and 74 % vs MUSIQ). The computation and the figures are :mod:`iqalab.analysis.tuning`, the scene pool's
setup :mod:`iqalab.sim.pools`; this module reads the settings, loads the checkpoints, renders held-out simulator
scenes and writes:

- ``results/tuning/win_rates.{csv,md}``: the reference model's top-1 against every other model, the untouched
  default setting and the ground-truth oracle, per tuner (``sweep`` = the paper's study, ``search`` =
  coordinate descent), pooled win rate with a Wilson 95 % interval (ties count half);
- ``results/tuning/regret.{csv,md}`` (ground-truth quality left behind), ``results/tuning/regret_curve.csv``
  (regret against the number of renders), ``results/tuning/picks.csv`` (every pick) and
  ``results/tuning/summary.json`` (flat numbers for ``dvc metrics``);
- ``results/figures/tuning/picks.jpg`` (photographs; a few scenes: each model's pick with its score, ground truth and
  the panel's verdict) and ``results/figures/tuning/regret_curve.{png,pdf}``;
- ``build/tuning/<scene>-<key>.npz``: every render, shared by the models (a DVC out, rebuilt with the stage).

Settings: the ``camera_tuning`` section of the params (:class:`iqalab.config.CameraTuningSettings`; unknown keys
are errors naming ``camera_tuning.<key>``). The study always runs on simulated scenes, so every output says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iqalab import provenance
from iqalab.analysis.tuning import (
    RenderCache,
    ScorerModel,
    StudyConfig,
    StudyResult,
    run_study,
    write_figures,
)
from iqalab.config import CameraTuningSettings, Params, ParamsError
from iqalab.inference import competing_checkpoints
from iqalab.io import write_json, write_text
from iqalab.sim.pools import pool_setup
from iqalab.status import experiment_unavailable
from iqalab.tables import SIMULATED_NOTE, Table

log = logging.getLogger(__name__)

BASELINES = ("default", "oracle")


def settings_from_params(params: Params) -> CameraTuningSettings:
    """The ``camera_tuning`` section of the params (:class:`iqalab.config.CameraTuningSettings`, validated with
    them); its dataset must exist here also when the section is left at its defaults."""
    params.require_dataset("camera_tuning.dataset", params.camera_tuning.dataset)
    return params.camera_tuning


# --------------------------------------------------------------------------------------------- models
def choose_reference(params: Params, settings: CameraTuningSettings, available: Sequence[str]) -> str:
    """The explicit reference, else the first available ``tuningiqa`` experiment, else the first available."""
    if settings.reference is not None:
        if settings.reference not in available:
            raise ParamsError(f"camera_tuning.reference: experiment {settings.reference!r} has no "
                              f"checkpoint under build/models/ (train it first); available: {list(available)}")
        return settings.reference
    for name in available:
        if params.experiment(name).model.name == "tuningiqa":
            return name
    return available[0] if available else "default"


def load_models(params: Params, settings: CameraTuningSettings, root: Path) -> tuple[dict[str, ScorerModel],
                                                                                   list[str]]:
    """Scorers of the competing experiments that have a checkpoint; also the names skipped (no checkpoint)."""
    from iqalab.inference import Scorer

    checkpoints, skipped = competing_checkpoints(params, settings.dataset, settings.experiments, root)
    for name, why in skipped.items():
        log.warning("camera tuning: experiment %s skipped: %s", name, why)
    models = {name: ScorerModel(Scorer(path, settings.device), settings.attribute, name)
              for name, path in checkpoints.items()}
    return models, list(skipped)


# --------------------------------------------------------------------------------------------- stage
def run(params: Params, root: Path, progress: bool = True) -> dict[str, Any]:
    """Run the camera-tuning study and write its tables and figures (see the module docstring); returns the
    summary also written to ``results/tuning/summary.json``."""
    from iqalab.sim.builders import scene_pool
    from iqalab.sim.camera import auto_params
    from iqalab.sim.observers import Panel, true_quality

    root = Path(root)
    settings = settings_from_params(params)
    seed = params.seed if settings.seed is None else settings.seed
    kind, profile, size = pool_setup(params.dataset(settings.dataset), settings.scene_kind, settings.profile,
                                     settings.image_size)
    models, skipped = load_models(params, settings, root)
    reference = choose_reference(params, settings, list(models))
    if not models:
        log.warning("camera tuning: no trained model on %s; only the default setting meets the oracle",
                    settings.dataset)
    scenes = scene_pool(settings.n_scenarios, seed, size, kind)
    bases = [auto_params(scene, sharpness=0.6, jpeg_quality=92) for scene in scenes]
    cache = RenderCache(root / "build" / "tuning", seed=seed)
    panel = Panel(n_raters=settings.n_raters, seed=seed)
    attribute = settings.attribute

    def truth(info: Mapping[str, float]) -> float:
        return true_quality(info, attribute, profile)

    def judge(info_a: Mapping[str, float], info_b: Mapping[str, float], rng: np.random.Generator) -> float:
        return panel.prefer(info_a, info_b, attribute, settings.n_raters, profile, rng)

    config = StudyConfig(grid_steps=settings.grid_steps, steps=settings.steps, search_budget=settings.search_budget,
                         search_radius=settings.search_radius, n_raters=settings.n_raters,
                         pairwise=settings.pairwise, seed=seed, search=settings.search)
    result = run_study(scenes, bases, models, reference, cache, truth, judge, config, BASELINES, progress)
    labels = {name: params.experiment(name).label or name for name in models}
    labels.update({"default": "default setting (auto)", "oracle": "oracle (ground truth)"})
    unavailable = {name: status for name in skipped if (status := experiment_unavailable(root, name))}
    caption = (f"Camera tuning on {settings.n_scenarios} held-out scenes of the {kind} scene pool "
               f"({SIMULATED_NOTE}); attribute {attribute}, profile {profile}, {settings.n_raters} judgments per "
               f"comparison; checkpoints trained on {settings.dataset}")
    if unavailable:
        caption += "; not competing (model could not run): " + "; ".join(
            f"{params.experiment(n).label or n}: {status}" for n, status in unavailable.items())
    out = root / "results" / "tuning"
    write_tables(result, labels, caption, out)
    figures = write_figures(result, scenes, labels, root / "results" / "figures" / "tuning",
                            settings.n_figure_scenes)
    summary = {
        "dataset": settings.dataset, "attribute": attribute, "profile": profile, "scene_kind": kind,
        "image_size": size, "n_scenarios": settings.n_scenarios, "n_raters": settings.n_raters,
        "reference": reference, "models": list(models), "skipped": skipped, "unavailable": unavailable,
        "simulated": True,
        "captures": cache.n_captures, "figures": [str(p.relative_to(root)) for p in figures],
        "win_rate": {f"{r.tuner}/{r.opponent}": _finite(r.win_rate) for r in result.win_rates.itertuples()},
        "regret": {f"{r.tuner}/{r.model}": _finite(r.regret_mean) for r in result.regret.itertuples()},
    }
    # the renders this run made depend on the disk cache an earlier run left: how the output was produced,
    # not a result (make verify compares results, not provenance)
    record = {**provenance.collect(params), "renders_this_run": cache.n_rendered}
    write_json(out / "summary.json", {**summary, "_provenance": record})
    log.info("camera tuning: reference %s against %s; %d captures, %d rendered in this run", reference,
             [m for m in [*models, *BASELINES] if m != reference], cache.n_captures, cache.n_rendered)
    return summary


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def write_tables(result: StudyResult, labels: Mapping[str, str], caption: str, out: Path) -> None:
    """``win_rates``, ``regret`` (md + csv), ``regret_curve.csv`` and ``picks.csv`` under ``out``."""
    wr = result.win_rates.copy()
    if not wr.empty:
        wr["reference"] = wr["reference"].map(lambda n: labels.get(n, n))
        wr["opponent"] = wr["opponent"].map(lambda n: labels.get(n, n))
    wr_table = Table("win_rates", wr.set_index(["tuner", "reference", "opponent"]) if not wr.empty else wr,
                     caption + ". Win rate of the reference's top-1 against each opponent's, judgments pooled "
                     "over scenarios, ties count 1/2, Wilson 95 % interval; same_pick = scenarios where both "
                     "chose the same setting (all ties).", bold=False)
    wr_table.write(out, formats=("md", "csv"))
    rg = result.regret.copy()
    rg["model"] = rg["model"].map(lambda n: labels.get(n, n))
    directions = {c: ("min" if c.startswith("regret") else None) for c in rg.columns}
    directions.update({"true_quality_mean": "max", "share_best": "max"})
    Table("regret", rg.set_index(["tuner", "model"]), caption + ". Regret = ground-truth quality (1-5) of the "
          "best setting minus that of the pick; sweep: best in the sweep; search: best of every capture rendered "
          "for the scene.", group_levels=("tuner",), directions=directions).write(out, formats=("md", "csv"))
    curve = result.curve.copy()
    curve.insert(1, "label", curve["model"].map(lambda n: labels.get(n, n)))
    write_text(out / "regret_curve.csv", curve.to_csv(index=False, float_format="%.6g"))
    write_text(out / "picks.csv", result.picks.to_csv(index=False, float_format="%.6g"))
