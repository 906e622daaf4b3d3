"""Stage ``gmad``: gMAD competition between every pair of trained models on an unlabelled image pool.

Ma et al., Group MAD Competition (CVPR 2016) and Group Maximum Differentiation Competition (TPAMI 2020); the
algorithm and the score definitions are in :mod:`iqalab.analysis.gmad`. This module is the I/O around it:

1. **Settings** from the ``gmad`` section of the params (:class:`iqalab.config.GmadSettings`, unknown keys are
   errors naming ``gmad.<key>``).
2. **Competitors**: the experiments listed in ``experiments``, or every experiment on ``dataset``; each needs
   ``results/predictions/<e>.json`` and the checkpoint ``build/models/<e>/<first split>/best.pt``. Experiments
   not trained yet are skipped (and listed in the summary), as are zero-shot experiments whose model could not
   run (``unavailable`` in the summary with their status, and named in the matrices' captions); with fewer than
   two the stage writes a summary that says why and stops.
3. **Pool** (never trained on, :mod:`iqalab.sim.pools`): simulator renders of held-out scenes
   (:func:`iqalab.sim.builders.scene_pool`, a generator stream no builder uses) under the camera settings
   ``fglive_sim`` draws (a per-scene auto-exposure reference plus deviations of 1-3 of the 7 parameters, half
   of them fine steps), cached in ``build/gmad/pool/`` (the camera's JPEG files + ``pool.parquet`` with camera
   parameters, boxes and the render ``info`` as ``sim_*`` columns) and re-rendered only when the pool settings
   change; or a user's ``image_folder`` (no ground truth: verdicts must come from ``votes_csv``). Image files carry
   no camera parameters and no human regions: on such a pool a competitor that reads them is screened with the
   rules of ``iqalab score`` (:func:`screen_inputs`; issue 21, no silent fallback). It competes only when it was
   trained to accept them missing (``missing_camera: unknown``: GCPF's learned "unknown" embedding;
   ``allow_missing_regions``: its whole-image / centre-crop fallback) or the user allows it here
   (``gmad.allow_missing_camera``, ``gmad.allow_missing_regions``, as ``iqalab score``'s flags), and the captions
   say so; otherwise it is refused in one line (``refused`` in the summary, named in the captions).
4. **Scores** of every competitor on the pool (:func:`iqalab.sim.pools.score_pool`: camera parameters, person and
   face boxes and landmarks of the scene are passed on), **pairs** (:func:`iqalab.analysis.gmad.select_pairs`:
   ``levels`` bands of the defender's scores, each ``band_width`` of its range wide), **verdicts** from the
   simulator panel (profile of the dataset's builder) or from ``votes_csv``, the **global ranking**
   (:func:`iqalab.analysis.gmad.global_ranking`: Bradley-Terry strengths with 95 % intervals).
5. **Outputs**: ``results/gmad/pairs.csv`` (ids, levels, band width, defender gap, scores, verdicts, image
   paths), ``ranking``, ``aggressiveness`` and ``resistance`` (``.md`` + ``.csv``), ``summary.json`` (per-model
   means and ranks, the Bradley-Terry ranking, band widths and the levels with no pair, settings, skips),
   ``votes_template.csv`` (a blank sheet for a real subjective test of the same pairs); figures
   ``results/figures/gmad/matrices`` and ``pairs_<x>_vs_<y>`` (matrices PNG + PDF, pair grids JPEG; pair images as thumbnails,
   full-size pair images are the pool files named in ``pairs.csv``). Pool scores: ``build/gmad/scores.parquet``.

Relative ``image_folder`` / ``votes_csv`` paths are taken relative to ``root`` (the project root).
"""

from __future__ import annotations

import logging
from itertools import combinations
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from iqalab import provenance
from iqalab.analysis import gmad
from iqalab.config import GmadSettings, Params
from iqalab.data.regions import REGIONS, needed_regions
from iqalab.data.schema import CAM_COLUMNS
from iqalab.inference import (
    CameraMissing,
    RegionsMissing,
    check_score_camera,
    check_score_regions,
    competing_checkpoints,
)
from iqalab.io import write_json, write_parquet, write_text
from iqalab.plots import label_simulated, save
from iqalab.sim.observers import true_quality
from iqalab.sim.pools import Pool, folder_pool, pool_setup, render_pool, score_pool
from iqalab.status import experiment_unavailable
from iqalab.tables import Table, matrix_table
from iqalab.train.engine import load_checkpoint, model_from_checkpoint

log = logging.getLogger(__name__)

def load_settings(params: Params) -> GmadSettings:
    """The ``gmad`` section of the params (:class:`iqalab.config.GmadSettings`, validated with them: unknown keys,
    the dataset, the experiments and the attribute the panel judges)."""
    return params.gmad


# --------------------------------------------------------------------------------------------- outputs
def _clear(*folders: Path) -> None:
    """Remove this stage's earlier outputs (stale model pairs must not survive a re-run)."""
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and path.suffix in (".csv", ".md", ".json", ".png", ".pdf"):
                    path.unlink()


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def _level_report(pairs: pd.DataFrame, models: list[str], levels: int, band_width: float) -> dict[str, Any]:
    """Per defender: the band width in its score units, the largest defender gap of its pairs and the levels
    that held fewer than two images (no pair)."""
    out: dict[str, Any] = {"band_width": band_width, "levels": levels, "defenders": {}}
    for defender in models:
        mine = pairs[pairs["defender"] == defender]
        out["defenders"][defender] = {
            "level_width": float(mine["level_width"].iloc[0]) if len(mine) else None,
            "max_defender_gap": float(mine["defender_gap"].max()) if len(mine) else None,
            "levels_without_pair": sorted(set(range(levels)) - set(int(v) for v in mine["level"]))}
    return out


def screen_inputs(pool: Pool, checkpoints: dict[str, Path], allow_missing_camera: bool = False,
                  allow_missing_regions: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """Which competitors may score ``pool`` without the camera parameters or human regions it lacks (an
    ``image_folder`` has neither; a simulator pool has both), by the rules of ``iqalab score``
    (:func:`iqalab.inference.check_score_camera`, :func:`~iqalab.inference.check_score_regions`): the model's own
    training options, or the opt-ins ``gmad.allow_missing_camera`` / ``gmad.allow_missing_regions`` (issue 21).

    Returns ``(refused, fallbacks)``: ``{experiment: one-line reason}`` for the models refused, and
    ``{experiment: what ran on a fallback}`` for those trained to accept the inputs missing (``missing_camera:
    unknown``, ``allow_missing_regions``). Checkpoints are opened only when the pool lacks something."""
    cam = pool.columns(CAM_COLUMNS)
    no_camera = len(pool) if cam is None else int((~np.isfinite(cam)).any(axis=1).sum())
    no_regions = [key for key, (_, cols) in REGIONS.items() if pool.columns(cols) is None]
    refused: dict[str, str] = {}
    fallbacks: dict[str, str] = {}
    if not no_camera and not no_regions:
        return refused, fallbacks
    source = "gmad.image_folder" if not pool.simulated else "gmad pool"
    for name, path in checkpoints.items():
        model = model_from_checkpoint(load_checkpoint(path), str(path))
        ran = []
        try:
            if no_camera and check_score_camera(model, model.registry_name, allow_missing_camera,
                                                "set gmad.allow_missing_camera: true"):
                why = ("missing_camera: unknown" if getattr(model, "missing_camera", None) == "unknown"
                       else "gmad.allow_missing_camera")
                ran.append(f"camera parameters unknown on {no_camera} of {len(pool)} images (GCPF's learned "
                           f"'unknown' embedding, {why})")
            lacking = [key for key in needed_regions(model) if key in no_regions]
            if lacking:
                check_score_regions(model, model.registry_name, False, allow_missing_regions,
                                    "set gmad.allow_missing_regions: true to score it with its fallback (gMAD "
                                    "detects no regions)")
                why = ("allow_missing_regions" if getattr(model, "allow_missing_regions", False)
                       else "gmad.allow_missing_regions")
                ran.append(f"{' and '.join(lacking)} by the model's whole-image / centre-crop fallback on every "
                           f"image ({why})")
        except (CameraMissing, RegionsMissing) as exc:  # the rules and words of `iqalab score`, gMAD's opt-ins
            refused[name] = f"{source}: experiment {name!r}: {exc}: not competing"
            continue
        if ran:
            fallbacks[name] = "; ".join(ran)
    return refused, fallbacks


def inputs_note(refused: dict[str, str], fallbacks: dict[str, str], labels: dict[str, str]) -> str:
    """Caption sentences: the competitors that scored the pool with unknown camera parameters or fallback regions,
    and those refused for lacking them (:func:`screen_inputs`); empty when none."""
    parts = []
    if fallbacks:
        parts.append("Scored without inputs the pool lacks: " + "; ".join(
            f"{labels.get(n, n)}: {what}" for n, what in fallbacks.items()))
    if refused:
        parts.append("Refused (the pool lacks inputs they read, no fallback allowed in training or by "
                     "gmad.allow_missing_camera / allow_missing_regions): " + ", ".join(
            labels.get(n, n) for n in refused))
    return ". ".join(parts)


def _stop(report: dict[str, Any], why: str, out_dir: Path, params: Params) -> None:
    """Write the summary of a stage that cannot compete (``why``) and an empty ``pairs.csv``."""
    report["skipped"] = why
    log.warning("gMAD skipped: %s", why)
    _write_csv(out_dir / "pairs.csv", pd.DataFrame(columns=[*gmad.PAIR_COLUMNS, *gmad.VERDICT_COLUMNS]))
    write_json(out_dir / "summary.json", {**report, "_provenance": provenance.collect(params)})


def _ranking_table(ranking: pd.DataFrame, labels: dict[str, str], cfg: GmadSettings, note: str) -> Table:
    """The Bradley-Terry ranking as a table (rows in rank order, strongest first)."""
    data = ranking.rename(columns={"strength": "BT strength", "se": "SE", "ci_low": "CI low",
                                   "ci_high": "CI high", "rank": "Rank", "wins": "Votes won",
                                   "contests": "Votes"})
    data.index = pd.Index([labels.get(m, m) for m in data.index], name="model")
    caption = (f"gMAD global ranking on {cfg.attribute}: Bradley-Terry log-strength (sum zero) from the votes of "
               f"every pair, {gmad.CONFIDENCE:.0%} Wald interval; {cfg.levels} defender levels, each "
               f"{cfg.band_width:g} of the defender's score range wide; prior {cfg.ranking_prior:g} pseudo-wins "
               f"per direction. {note}")
    return Table("ranking", data, caption, digits=3,
                 directions={"BT strength": "max", "SE": None, "CI low": None, "CI high": None, "Rank": None,
                             "Votes won": None, "Votes": None})


def run(params: Params, root: Path, progress: bool = True) -> dict[str, Any]:
    """Run the gMAD stage (see the module docstring). Returns ``pairs``, ``aggressiveness``, ``resistance``,
    ``summary``, ``ranking`` (frames; None when skipped), ``report`` (what ``summary.json`` holds) and
    ``figures``."""
    root = Path(root)
    cfg = load_settings(params)
    seed = params.seed if cfg.seed is None else cfg.seed
    out_dir, fig_dir = root / "results" / "gmad", root / "results" / "figures" / "gmad"
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir.mkdir(parents=True, exist_ok=True)
    _clear(out_dir, fig_dir)
    checkpoints, skipped = competing_checkpoints(params, cfg.dataset, cfg.experiments, root)
    for name, why in skipped.items():
        log.warning("gMAD: experiment %s skipped: %s", name, why)
    labels = {name: params.experiments[name].label or name for name in checkpoints}
    unavailable = {name: status for name in skipped if (status := experiment_unavailable(root, name))}
    report: dict[str, Any] = {"paper": gmad.PAPER, "settings": cfg.model_dump(), "seed": seed,
                              "competitors": list(checkpoints), "skipped_experiments": skipped,
                              "unavailable": unavailable}
    result: dict[str, Any] = {"pairs": None, "aggressiveness": None, "resistance": None, "summary": None,
                              "ranking": None, "report": report, "figures": []}
    if len(checkpoints) < 2:
        _stop(report, f"gMAD needs at least two trained models; found {len(checkpoints)} ({list(checkpoints)}) on "
              f"dataset {cfg.dataset!r}", out_dir, params)
        return result

    kind, profile, size = pool_setup(params.datasets.get(cfg.dataset), cfg.pool_kind, cfg.profile, cfg.image_size)
    if cfg.image_folder is not None:
        folder = Path(cfg.image_folder)
        pool = folder_pool(folder if folder.is_absolute() else root / folder)
    else:
        pool = render_pool(root / "build" / "gmad" / "pool", cfg.pool_scenes, cfg.renders_per_scene, size, kind,
                           seed, progress)
    report["pool"] = {"n_images": len(pool), "simulated": pool.simulated, **pool.spec,
                      **({"profile": profile} if pool.simulated else {})}
    refused, fallbacks = screen_inputs(pool, checkpoints, cfg.allow_missing_camera, cfg.allow_missing_regions)
    for why in refused.values():
        log.warning("gMAD: %s", why)
    checkpoints = {name: ckpt for name, ckpt in checkpoints.items() if name not in refused}
    report.update(competitors=list(checkpoints), refused=refused, fallback_inputs=fallbacks)
    if len(checkpoints) < 2:
        _stop(report, f"gMAD needs at least two models that can score the pool; {len(checkpoints)} left "
              f"({list(checkpoints)}) after refusing {list(refused)}", out_dir, params)
        return result
    scores = score_pool(pool, checkpoints, cfg.attribute, cfg.batch_size, cfg.device, progress,
                        what="gmad.attribute")
    write_parquet(root / "build" / "gmad" / "scores.parquet", pd.DataFrame({"image_id": pool.ids, **scores}))

    pairs = gmad.select_pairs(scores, cfg.levels, pool.ids, seed, cfg.band_width)
    report["levels"] = _level_report(pairs, list(checkpoints), cfg.levels, cfg.band_width)
    pairs.insert(3, "attribute", cfg.attribute)
    paths = pool.table["path"].to_numpy()
    pairs["path_a"] = [_relative(paths[i], root) for i in pairs["idx_a"]]
    pairs["path_b"] = [_relative(paths[i], root) for i in pairs["idx_b"]]
    if cfg.votes_csv is not None:
        votes_path = Path(cfg.votes_csv)
        pairs = gmad.apply_votes(pairs, gmad.import_votes(votes_path if votes_path.is_absolute()
                                                          else root / votes_path))
        report["verdicts"] = f"human votes from {cfg.votes_csv}"
    elif pool.simulated:
        truth = np.array([true_quality(info, cfg.attribute, profile) for info in pool.infos()])
        pairs = gmad.panel_verdicts(pairs, truth, cfg.n_raters, seed)
        report["verdicts"] = f"simulator panel ({cfg.n_raters} judges per pair, profile {profile!r})"
    else:
        for column in gmad.VERDICT_COLUMNS:
            pairs[column] = np.nan
        pairs["outcome"], pairs["source"] = "unknown", "none"
        report["verdicts"] = "none: a user folder has no ground truth; collect votes with votes_template.csv"
    _write_csv(out_dir / "pairs.csv", pairs)
    _write_csv(out_dir / "votes_template.csv", gmad.votes_template(pairs))
    result["pairs"] = pairs

    models = list(checkpoints)
    simulated = pool.simulated and cfg.votes_csv is None
    note = ("SIMULATED: simulator pool judged by the virtual rater panel, not a paper reproduction"
            if simulated else "verdicts: " + report["verdicts"])
    if unavailable:
        note += ". Not competing (model could not run): " + "; ".join(
            f"{params.experiments[n].label or n}: {status}" for n, status in unavailable.items())
    if refused or fallbacks:
        note += ". " + inputs_note(refused, fallbacks,
                                   {n: params.experiments[n].label or n for n in [*refused, *fallbacks]})
    if pairs["p"].notna().any():
        agg = gmad.aggressiveness_matrix(pairs, models)
        res = gmad.resistance_matrix(pairs, models)
        summary = gmad.model_summary(agg, res, pairs)
        matrix_table("aggressiveness", agg, f"gMAD aggressiveness on {cfg.attribute} (row: attacker, column: "
                      f"defender; mean vote share for the attacker over {cfg.levels} levels, each "
                      f"{cfg.band_width:g} of the defender's range wide). {note}").write(
            out_dir, ("md", "csv"))
        matrix_table("resistance", res, f"gMAD resistance on {cfg.attribute} (row: defender, column: "
                      f"attacker; mean of 1 - |2p - 1| over {cfg.levels} levels). {note}").write(
            out_dir, ("md", "csv"))
        report["models"] = {name: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
                            for name, row in summary.to_dict(orient="index").items()}
        ranking = gmad.global_ranking(pairs, models, cfg.ranking_prior)
        _ranking_table(ranking, labels, cfg, note).write(out_dir, ("md", "csv"))
        report["ranking"] = {
            "model": "Bradley-Terry on the votes of every pair (a vote for the attacker's image a is a win of the "
                     "attacker, any other vote a win of the defender); log-strengths summing to zero, Wald "
                     f"{gmad.CONFIDENCE:.0%} intervals", "prior": cfg.ranking_prior,
            "models": {name: {k: float(v) for k, v in row.items()}
                       for name, row in ranking.to_dict(orient="index").items()}}
        result.update(aggressiveness=agg, resistance=res, summary=summary, ranking=ranking)
        fig = gmad.matrices_figure(agg, res, labels, cfg.attribute, ranking)
        label_simulated(fig, simulated)
        result["figures"] += save(fig, fig_dir / "matrices")
        plt.close(fig)
    else:
        report["skipped"] = "no verdicts: matrices not computed"

    position = {image_id: k for k, image_id in enumerate(pool.ids)}

    def thumb(image_id: str) -> np.ndarray:
        return pool.image(position[image_id], cfg.thumb_size)

    for x, y in combinations(models, 2):
        fig = gmad.pair_grid(pairs, x, y, thumb, labels)
        label_simulated(fig, pool.simulated)
        # photographs: JPEG keeps results/ small (a PNG + PDF of each grid would be ~3 MB)
        result["figures"] += save(fig, fig_dir / f"pairs_{x}_vs_{y}", formats=("jpg",))
        plt.close(fig)
    report["n_pairs"] = len(pairs)
    report["outcomes"] = {str(k): int(v) for k, v in pairs["outcome"].value_counts().sort_index().items()}
    write_json(out_dir / "summary.json", {**report, "_provenance": provenance.collect(params)})
    log.info("gMAD: %d models, %d pairs, written to %s", len(models), len(pairs), out_dir)
    return result
