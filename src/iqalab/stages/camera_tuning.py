"""Stage ``07_camera_tuning``: trained quality models tune a simulated camera; a virtual panel says who won.

TuningIQA (seed 000), Sec. "Application for Camera Tuning" (12 volunteers, 44 scenarios, top-1 win rates 76 %
vs LIQE and 74 % vs MUSIQ). The computation is :mod:`iqalab.analysis.tuning`; this module reads the settings, loads the
checkpoints, renders held-out simulator scenes and writes:

- ``results/tuning/win_rates.{csv,md}``: the reference model's top-1 against every other model, the untouched
  default setting and the ground-truth oracle, per tuner (``sweep`` = the paper's study, ``search`` =
  coordinate descent), pooled win rate with a Wilson 95 % interval (ties count half);
- ``results/tuning/regret.{csv,md}`` (ground-truth quality left behind), ``results/tuning/regret_curve.csv``
  (regret against the number of renders), ``results/tuning/picks.csv`` (every pick) and
  ``results/tuning/summary.json`` (flat numbers for ``dvc metrics``);
- ``results/figures/tuning/picks.{png,pdf}`` (a few scenes: each model's pick with its score, ground truth and
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
import pandas as pd

from iqalab.analysis.tuning import (
    RenderCache,
    StudyConfig,
    StudyResult,
    cams_from_infos,
    run_study,
)
from iqalab.config import CameraTuningSettings, Params, ParamsError
from iqalab.inference import experiment_checkpoint
from iqalab.io import write_json, write_text
from iqalab.status import experiment_unavailable
from iqalab.tables import SIMULATED_NOTE, Table

log = logging.getLogger(__name__)

#: simulator builder -> (held-out scene pool kind, ground-truth profile)
BUILDER_POOL: dict[str, tuple[str, str]] = {"fglive_sim": ("livestream", "livestream"),
                                            "portrait_sim": ("portrait", "portrait"),
                                            "face_sim": ("face", "surveillance"), "ugc_sim": ("ugc", "ugc")}
BASELINES = ("default", "oracle")


def settings_from_params(params: Params) -> CameraTuningSettings:
    """The ``camera_tuning`` section of the params (:class:`iqalab.config.CameraTuningSettings`, validated with
    them); its dataset must exist here also when the section is left at its defaults."""
    params.require_dataset("camera_tuning.dataset", params.camera_tuning.dataset)
    return params.camera_tuning


# --------------------------------------------------------------------------------------------- models
class ScorerModel:
    """A checkpoint as a :class:`iqalab.analysis.tuning.QualityModel`: camera parameters from the render infos, person /
    face boxes and landmarks from the scene; scores in MOS units. With a pair head (TuningIQA's ``pair_logits``
    on fused ``features``) it also offers :meth:`pairwise` (the paper's pairwise ranking)."""

    def __init__(self, scorer: Any, attribute: str, label: str) -> None:
        if attribute not in scorer.attributes:
            raise ValueError(f"{label}: the model predicts {scorer.attributes}, not {attribute!r}")
        self.scorer = scorer
        self.attribute = attribute
        self.label = label
        model = scorer.model
        if not (callable(getattr(model, "pair_logits", None)) and callable(getattr(model, "features", None))
                and callable(getattr(model, "scores", None))):
            self.pairwise = None  # type: ignore[assignment]

    def _inputs(self, infos: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        def rows(key: str, shape: tuple[int, ...]) -> np.ndarray:
            return np.array([np.full(shape, np.nan) if info.get(key) is None
                             else np.asarray(info[key], dtype=float).reshape(shape) for info in infos])

        return {"cam": cams_from_infos(infos), "person_boxes": rows("person_box", (4,)),
                "face_boxes": rows("face_box", (4,)), "landmarks": rows("landmarks", (5, 2))}

    def __call__(self, images: Sequence[np.ndarray], infos: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.scorer.score(list(images), **self._inputs(infos))[self.attribute]

    def pairwise(self, images: Sequence[np.ndarray], infos: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``P[i, j]``: the pair head's probability that image i is better than image j (diagonal 0.5)."""
        import torch

        tap = _FeatureTap(self.scorer.model)
        original = self.scorer.model
        self.scorer.model = tap
        try:
            self.scorer.score(list(images), **self._inputs(infos))
        finally:
            self.scorer.model = original
        feats = torch.cat(tap.features, dim=0)
        n = feats.shape[0]
        k = list(original.attributes).index(self.attribute)
        ia, ib = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        with torch.no_grad():
            logits = original.pair_logits(feats[ia.reshape(-1)], feats[ib.reshape(-1)])[:, k]
        prob = torch.sigmoid(logits.float()).reshape(n, n).cpu().numpy().astype(float)
        np.fill_diagonal(prob, 0.5)
        return prob


class _FeatureTap:
    """Stands in for a pair-head model inside :meth:`iqalab.inference.Scorer.score` so that the batches the
    Scorer prepares (resize, normalisation, standardised camera parameters, boxes) also yield the fused
    features the pair head needs; returns the same scores as the model's ``predict``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.attributes = model.attributes
        self.features: list[Any] = []

    def predict(self, batch: dict[str, Any]) -> dict[str, Any]:
        feats = self.model.features(batch)
        self.features.append(feats)
        return self.model.scores(feats)


def competing_experiments(params: Params, settings: CameraTuningSettings) -> list[str]:
    """The experiments that compete: ``settings.experiments`` or every experiment on ``settings.dataset``."""
    if settings.experiments is not None:
        return list(settings.experiments)
    return [name for name, exp in params.experiments.items() if exp.dataset == settings.dataset]


def checkpoint_path(root: Path, experiment: str) -> Path | None:
    """The experiment's checkpoint (:func:`iqalab.inference.experiment_checkpoint`); when its predictions JSON is
    missing or lists no split, the first ``build/models/<experiment>/*/best.pt`` found. None for an experiment
    whose model could not run (zero-shot weights unavailable: its status, :mod:`iqalab.status`)."""
    path, why = experiment_checkpoint(root, experiment)
    if path is None and not why.startswith("checkpoint") and experiment_unavailable(root, experiment) is None:
        found = sorted((root / "build" / "models" / experiment).glob("*/best.pt"))
        return found[0] if found else None
    return path


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

    models: dict[str, ScorerModel] = {}
    skipped = []
    for name in competing_experiments(params, settings):
        path = checkpoint_path(root, name)
        if path is None:
            status = experiment_unavailable(root, name)
            log.warning("camera tuning: experiment %s %s; skipped", name,
                        f"did not run ({status})" if status else "has no checkpoint")
            skipped.append(name)
            continue
        models[name] = ScorerModel(Scorer(path, settings.device), settings.attribute, name)
    return models, skipped


# --------------------------------------------------------------------------------------------- stage
def scene_setup(params: Params, settings: CameraTuningSettings) -> tuple[str, str, int]:
    """Scene pool kind, ground-truth profile and render size for the study."""
    from iqalab.sim.builders import BUILDERS, builder_options

    dcfg = params.dataset(settings.dataset)
    kind, profile = BUILDER_POOL.get(dcfg.builder, ("livestream", "livestream"))
    size = settings.image_size or dcfg.options.get("image_size")
    if size is None:
        size = builder_options(dcfg.builder).get("image_size", 256) if dcfg.builder in BUILDERS else 256
    return settings.scene_kind or kind, settings.profile or profile, int(size)


def run(params: Params, root: Path, progress: bool = True) -> dict[str, Any]:
    """Run the camera-tuning study and write its tables and figures (see the module docstring); returns the
    summary also written to ``results/tuning/summary.json``."""
    from iqalab.sim.builders import scene_pool
    from iqalab.sim.camera import auto_params
    from iqalab.sim.observers import Panel, true_quality

    root = Path(root)
    settings = settings_from_params(params)
    seed = params.seed if settings.seed is None else settings.seed
    kind, profile, size = scene_setup(params, settings)
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
        "renders": cache.n_rendered, "figures": [str(p.relative_to(root)) for p in figures],
        "win_rate": {f"{r.tuner}/{r.opponent}": _finite(r.win_rate) for r in result.win_rates.itertuples()},
        "regret": {f"{r.tuner}/{r.model}": _finite(r.regret_mean) for r in result.regret.itertuples()},
    }
    write_json(out / "summary.json", summary)
    log.info("camera tuning: reference %s against %s; %d renders", reference,
             [m for m in [*models, *BASELINES] if m != reference], cache.n_rendered)
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


# --------------------------------------------------------------------------------------------- figures
def picks_figure(result: StudyResult, scenes: Sequence[Any], labels: Mapping[str, str], n_scenes: int = 3,
                 tuner: str = "sweep") -> Any:
    """Rows = scenes, columns = models: each model's top-1 capture with its score, ground truth and the panel's
    verdict against the reference (share of judgments preferring the reference; ties count half)."""
    import matplotlib.pyplot as plt

    from iqalab.plots import PAGE_WIDTH_IN, label_simulated

    picks = result.picks[result.picks["tuner"] == tuner]
    names = list(dict.fromkeys(picks["model"]))
    names = [result.reference] + [n for n in names if n != result.reference] if result.reference in names else names
    shown = [s.name for s in scenes][:n_scenes]
    cols = max(len(names), 1)
    width = min(PAGE_WIDTH_IN * 1.6, 1.5 * cols)
    fig, axes = plt.subplots(max(len(shown), 1), cols, figsize=(width, 2.0 * max(len(shown), 1) + 0.4),
                             squeeze=False)
    verdicts = result.verdicts[result.verdicts["tuner"] == tuner].set_index(["scene", "opponent"])
    for r, scene in enumerate(shown):
        for c, name in enumerate(names):
            ax = axes[r][c]
            ax.axis("off")
            row = picks[(picks["scene"] == scene) & (picks["model"] == name)]
            image = result.images.get((scene, name, tuner))
            if row.empty or image is None:
                continue
            row = row.iloc[0]
            ax.imshow(image)
            if name == result.reference:
                verdict = "reference"
            elif (scene, name) in verdicts.index:
                v = verdicts.loc[(scene, name)]
                verdict = "same pick (tie)" if bool(v["same_pick"]) else f"panel prefers ref {float(v['p']):.0%}"
            else:
                verdict = ""
            score = "untouched" if name == "default" else f"score {row['score']:.2f}"
            title = (f"{labels.get(name, name)[:24]}\n{row['change'][:28]}\n{score} · true {row['true_quality']:.2f}"
                     f"\n{verdict}")
            ax.set_title(title, fontsize=5.5)
            if c == 0:
                ax.text(-0.04, 0.5, scene, transform=ax.transAxes, rotation=90, ha="right", va="center",
                        fontsize=5.5)
    fig.suptitle(f"Top-1 setting per model ({tuner}); reference: {labels.get(result.reference, result.reference)}",
                 fontsize=8)
    fig.tight_layout()
    label_simulated(fig, True)
    return fig


def regret_curve_figure(curve: pd.DataFrame, labels: Mapping[str, str]) -> Any:
    """Mean regret (± s.e. over scenes) of the best capture so far against the number of captures rendered."""
    import matplotlib.pyplot as plt

    from iqalab.plots import COLUMN_WIDTH_IN, label_simulated

    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN * 1.6, 2.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, model in enumerate(dict.fromkeys(curve["model"])):
        for tuner, style in (("sweep", "--"), ("search", "-")):
            g = curve[(curve["model"] == model) & (curve["tuner"] == tuner)]
            if g.empty or model == "default":
                continue
            colour = colours[k % len(colours)]
            ax.plot(g["n_renders"], g["regret_mean"], style, color=colour, lw=1.2,
                    label=f"{labels.get(model, model)} ({'coordinate descent' if tuner == 'search' else tuner})")
            ax.fill_between(g["n_renders"], g["regret_mean"] - g["regret_sem"], g["regret_mean"] + g["regret_sem"],
                            color=colour, alpha=0.12, lw=0)
    default = curve[(curve["model"] == "default")]
    if not default.empty:
        ax.axhline(float(default["regret_mean"].iloc[0]), color="0.5", lw=0.8, ls=":", label="default setting")
    ax.set(xlabel="captures rendered", ylabel="regret (ground truth, 1-5)")
    ax.legend(fontsize=5.5, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    label_simulated(fig, True)
    return fig


def write_figures(result: StudyResult, scenes: Sequence[Any], labels: Mapping[str, str], folder: Path,
                  n_scenes: int) -> list[Path]:
    """The picks figure and the regret curve, as PNG and PDF."""
    import matplotlib.pyplot as plt

    from iqalab.plots import save

    written: list[Path] = []
    if n_scenes > 0:
        fig = picks_figure(result, scenes, labels, n_scenes)
        written += save(fig, folder / "picks")
        plt.close(fig)
    if not result.curve.empty:
        fig = regret_curve_figure(result.curve, labels)
        written += save(fig, folder / "regret_curve")
        plt.close(fig)
    return written
