"""Stage ``05_gmad``: gMAD competition between every pair of trained models on an unlabelled image pool.

Ma et al., Group MAD Competition (CVPR 2016) and Group Maximum Differentiation Competition (TPAMI 2020); the
algorithm and the score definitions are in :mod:`iqalab.analysis.gmad`. This module is the I/O around it:

1. **Settings** from ``params.extra["gmad"]`` (:class:`GmadSettings`, unknown keys are errors naming
   ``extra.gmad.<key>``).
2. **Competitors**: the experiments listed in ``experiments``, or every experiment on ``dataset``; each needs
   ``results/predictions/<e>.json`` and the checkpoint ``build/models/<e>/<first split>/best.pt``. Experiments
   not trained yet are skipped (and listed in the summary), as are zero-shot experiments whose model could not
   run (``unavailable`` in the summary with their status, and named in the matrices' captions); with fewer than
   two the stage writes a summary that says why and stops.
3. **Pool** (never trained on): simulator renders of held-out scenes
   (:func:`iqalab.sim.builders.scene_pool`, a generator stream no builder uses) under the camera settings
   ``fglive_sim`` draws (a per-scene auto-exposure reference plus deviations of 1-3 of the 7 parameters, half
   of them fine steps), cached in ``build/gmad/pool/`` (the camera's JPEG files + ``pool.parquet`` with camera
   parameters, boxes and the render ``info`` as ``sim_*`` columns) and re-rendered only when the pool settings
   change; or a user's ``image_folder`` (no ground truth: verdicts must come from ``votes_csv``).
4. **Scores** of every competitor on the pool (:class:`iqalab.inference.Scorer`: camera parameters, person and
   face boxes and landmarks of the scene are passed on), **pairs** (:func:`iqalab.analysis.gmad.select_pairs`),
   **verdicts** from the simulator panel (profile of the dataset's builder) or from ``votes_csv``.
5. **Outputs**: ``results/gmad/pairs.csv`` (ids, levels, scores, verdicts, image paths), ``aggressiveness`` and
   ``resistance`` (``.md`` + ``.csv``), ``summary.json`` (per-model means and ranks, settings, skips),
   ``votes_template.csv`` (a blank sheet for a real subjective test of the same pairs); figures
   ``results/figures/gmad/matrices`` and ``pairs_<x>_vs_<y>`` (matrices PNG + PDF, pair grids JPEG; pair images as thumbnails,
   full-size pair images are the pool files named in ``pairs.csv``). Pool scores: ``build/gmad/scores.parquet``.

Relative ``image_folder`` / ``votes_csv`` paths are taken relative to ``root`` (the project root).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from iqalab.analysis import gmad
from iqalab.config import Params, ParamsError, validate_section
from iqalab.data.cache import decode_image
from iqalab.data.schema import CAM_COLUMNS, FACE_BOX, LANDMARKS, PERSON_BOX
from iqalab.inference import experiment_checkpoint
from iqalab.io import write_json, write_parquet, write_text
from iqalab.plots import label_simulated, save
from iqalab.sim.observers import ATTRIBUTES, true_quality
from iqalab.status import experiment_unavailable

log = logging.getLogger(__name__)

#: simulator builder -> (scene-pool kind, panel profile); other datasets use the livestream pair
BUILDER_POOLS: dict[str, tuple[str, str]] = {
    "fglive_sim": ("livestream", "livestream"), "portrait_sim": ("portrait", "portrait"),
    "face_sim": ("face", "surveillance"), "ugc_sim": ("ugc", "ugc"),
}
POOL_VERSION = 1  # bump when the rendering recipe changes, so cached pools are re-rendered


class GmadSettings(BaseModel):
    """``params.yaml`` -> ``extra.gmad`` (every key optional)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field("fglive_sim", description="dataset whose trained experiments compete")
    attribute: str = Field("overall", description="attribute the models compete on")
    experiments: list[str] | None = Field(None, description="competitors (default: all on the dataset)")
    pool_scenes: int = Field(24, ge=1, description="held-out simulator scenes in the pool")
    renders_per_scene: int = Field(12, ge=1, description="camera settings rendered per scene")
    image_size: int | None = Field(None, ge=16, le=4096, description="render size (default: the dataset's)")
    pool_kind: Literal["livestream", "portrait", "face", "ugc"] | None = None
    profile: Literal["livestream", "surveillance", "portrait", "ugc"] | None = None
    levels: int = Field(5, ge=1, description="defender quality levels (quantile bins)")
    n_raters: int = Field(20, ge=1, description="panel judges per pair")
    seed: int | None = Field(None, description="pool, tie-break and panel seed (default: params.seed)")
    image_folder: str | None = Field(None, description="a folder of images as the pool instead of the simulator")
    votes_csv: str | None = Field(None, description="human votes on the pairs (gmad.import_votes format)")
    thumb_size: int = Field(96, ge=16, description="side of the pair thumbnails in the grids")
    batch_size: int = Field(16, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


def load_settings(params: Params) -> GmadSettings:
    """Validate ``params.extra["gmad"]``; errors name the key path ``extra.gmad.<key>``."""
    raw = params.extra.get("gmad") or {}
    cfg = validate_section(GmadSettings, raw, "extra.gmad")
    if "dataset" in raw and cfg.dataset not in params.datasets:  # the default may be absent: then no competitors
        raise ParamsError(f"extra.gmad.dataset: unknown dataset {cfg.dataset!r}; defined: {sorted(params.datasets)}")
    for name in cfg.experiments or []:
        if name not in params.experiments:
            raise ParamsError(f"extra.gmad.experiments: unknown experiment {name!r}; "
                              f"defined: {sorted(params.experiments)}")
    if cfg.image_folder is None and cfg.votes_csv is None and cfg.attribute not in ATTRIBUTES:
        raise ParamsError(f"extra.gmad.attribute: the simulator panel cannot judge {cfg.attribute!r}; "
                          f"known: {list(ATTRIBUTES)}")
    return cfg


# --------------------------------------------------------------------------------------------- competitors
def competing_experiments(params: Params, cfg: GmadSettings, root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """``({experiment: checkpoint}, {experiment: why skipped})`` for the experiments that compete."""
    candidates = cfg.experiments if cfg.experiments is not None else [
        name for name, exp in params.experiments.items() if exp.dataset == cfg.dataset]
    chosen: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name in candidates:
        ckpt, why = experiment_checkpoint(root, name)
        if ckpt is None:
            skipped[name] = why
            continue
        chosen[name] = ckpt
    for name, why in skipped.items():
        log.warning("gMAD: experiment %s skipped: %s", name, why)
    return chosen, skipped


# --------------------------------------------------------------------------------------------- pools
@dataclass
class Pool:
    """The unlabelled images the models compete on: ``table`` has ``image_id`` and an absolute ``path`` per
    image, and for simulator pools the camera columns, boxes, landmarks and the render ``info`` (``sim_*``)."""

    table: pd.DataFrame
    folder: Path
    simulated: bool
    spec: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        return self.table["image_id"].astype(str).tolist()

    def image(self, i: int, size: int | None = None) -> np.ndarray:
        return decode_image(self.table["path"].iloc[i], size)

    def columns(self, names: tuple[str, ...]) -> np.ndarray | None:
        """``[N, len(names)]`` floats, or None when the pool does not know them."""
        if not set(names) <= set(self.table.columns):
            return None
        return self.table[list(names)].to_numpy(dtype=np.float64)

    def infos(self) -> list[dict[str, float]]:
        """The render ``info`` of every image (simulator pools)."""
        cols = [c for c in self.table.columns if c.startswith("sim_")]
        return [{c.removeprefix("sim_"): v for c, v in row.items()}
                for row in self.table[cols].to_dict(orient="records")]


def pool_defaults(params: Params, cfg: GmadSettings) -> tuple[str, str, int]:
    """(scene-pool kind, panel profile, image size) for ``cfg.dataset`` unless the settings name them."""
    dcfg = params.datasets.get(cfg.dataset)
    builder = dcfg.builder if dcfg is not None else ""
    kind, profile = BUILDER_POOLS.get(builder, ("livestream", "livestream"))
    size = cfg.image_size
    if size is None and dcfg is not None:
        size = dcfg.options.get("image_size") or dcfg.options.get("size")
        if size is None and dcfg.source == "sim":
            from iqalab.sim.builders import builder_options

            size = builder_options(builder).get("image_size")
        size = size or dcfg.cache_size
    return cfg.pool_kind or kind, cfg.profile or profile, int(size or 256)


def render_pool(folder: Path, n_scenes: int, renders_per_scene: int, image_size: int, kind: str, seed: int,
                progress: bool = True) -> Pool:
    """Render (or reuse from ``folder``) ``n_scenes x renders_per_scene`` simulator images of held-out scenes.

    Camera settings follow ``fglive_sim``: per scene an auto-exposure reference (aperture f/2, 2.8 or 4,
    sharpening 0.6, JPEG 92) and ``renders_per_scene - 1`` deviations of 1-3 of the 7 parameters, fine or
    coarse with equal odds (:func:`iqalab.sim.builders._deviate`). The pool is reused when ``pool.json`` records
    the same settings.
    """
    from iqalab.sim.builders import _box_columns, _deviate, scene_pool
    from iqalab.sim.camera import auto_params, capture

    spec = {"version": POOL_VERSION, "kind": kind, "n_scenes": n_scenes, "renders_per_scene": renders_per_scene,
            "image_size": image_size, "seed": seed}
    meta_path, table_path = folder / "pool.json", folder / "pool.parquet"
    if meta_path.is_file() and table_path.is_file():
        if json.loads(meta_path.read_text()).get("spec") == spec:
            table = pd.read_parquet(table_path)
            table["path"] = [str(folder / p) for p in table["path"]]
            if all(Path(p).is_file() for p in table["path"]):
                log.info("gMAD: reusing the pool in %s (%d images)", folder, len(table))
                return Pool(table=table, folder=folder, simulated=True, spec=spec)
    meta_path.unlink(missing_ok=True)
    images_dir = folder / "images"
    if images_dir.is_dir():
        for old in images_dir.glob("*.jpg"):
            old.unlink()
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), zlib.crc32(f"gmad_pool/{kind}".encode())])
    scenes = scene_pool(n_scenes, seed=seed, image_size=image_size, kind=kind)
    rows = []
    bar = tqdm(total=n_scenes * renders_per_scene, desc="gMAD pool", disable=not progress, mininterval=2.0)
    for scene in scenes:
        ref = auto_params(scene, aperture=float(rng.choice([2.0, 2.8, 4.0])), sharpness=0.6, jpeg_quality=92)
        settings = [ref] + [_deviate(ref, rng, int(rng.choice([1, 1, 2, 3])), fine=bool(rng.random() < 0.5))
                            for _ in range(renders_per_scene - 1)]
        for k, cam in enumerate(settings):
            image_id = f"{scene.name}_{k:03d}"
            shot = capture(scene, cam, rng)
            rel = f"images/{image_id}.jpg"
            write_bytes_atomic(folder / rel, shot.jpeg)
            row: dict[str, Any] = {"image_id": image_id, "path": rel, "scene": scene.name,
                                   "condition": scene.condition}
            row.update(cam.cam_columns())
            row.update(_box_columns(scene, with_person=kind != "face"))
            row.update({f"sim_{key}": float(value) for key, value in shot.info.items()})
            rows.append(row)
            bar.update(1)
    bar.close()
    table = pd.DataFrame(rows)
    write_parquet(table_path, table)
    write_json(meta_path, {"spec": spec, "n_images": len(table)})
    table["path"] = [str(folder / p) for p in table["path"]]
    log.info("gMAD: rendered a pool of %d images (%s, %d px) into %s", len(table), kind, image_size, folder)
    return Pool(table=table, folder=folder, simulated=True, spec=spec)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes atomically (a killed render never leaves half a JPEG)."""
    from iqalab.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def folder_pool(folder: Path) -> Pool:
    """A user's folder of images (recursive) as the pool; ids are the relative paths with ``/`` as ``__``."""
    from iqalab.stages.score import expand_images

    files = expand_images([folder])
    ids = [str(p.relative_to(folder).with_suffix("")).replace("/", "__") for p in files]
    table = pd.DataFrame({"image_id": ids, "path": [str(p) for p in files]})
    return Pool(table=table, folder=folder, simulated=False, spec={"image_folder": str(folder)})


# --------------------------------------------------------------------------------------------- scoring
def score_pool(pool: Pool, checkpoints: Mapping[str, Path], attribute: str, batch_size: int = 16,
               device: str = "auto", progress: bool = True) -> dict[str, np.ndarray]:
    """Every checkpoint's ``attribute`` score on every pool image (MOS units of its own training set)."""
    from iqalab.inference import Scorer

    cam = pool.columns(CAM_COLUMNS)
    person, face = pool.columns(PERSON_BOX), pool.columns(FACE_BOX)
    landmarks = pool.columns(LANDMARKS)
    landmarks = landmarks.reshape(-1, 5, 2) if landmarks is not None else None
    scores: dict[str, np.ndarray] = {}
    for name, ckpt in checkpoints.items():
        scorer = Scorer(ckpt, device)
        if attribute not in scorer.attributes:
            raise ValueError(f"extra.gmad.attribute: experiment {name!r} does not predict {attribute!r} "
                             f"(it predicts {scorer.attributes})")
        values = np.empty(len(pool), dtype=np.float64)
        for start in tqdm(range(0, len(pool), batch_size), desc=f"gMAD score {name}", disable=not progress,
                          mininterval=2.0):
            idx = slice(start, min(len(pool), start + batch_size))
            images = [pool.image(i) for i in range(idx.start, idx.stop)]

            def part(arr: np.ndarray | None, idx: slice = idx) -> np.ndarray | None:
                return None if arr is None else arr[idx]

            values[idx] = scorer.score(images, cam=part(cam), person_boxes=part(person), face_boxes=part(face),
                                       landmarks=part(landmarks), batch_size=batch_size)[attribute]
        scores[name] = values
    return scores


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


def _matrix_table(name: str, matrix: pd.DataFrame, caption: str) -> Any:
    from iqalab.tables import Table

    return Table(name=name, data=matrix, caption=caption, digits=3)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def run(params: Params, root: Path, progress: bool = True) -> dict[str, Any]:
    """Run the gMAD stage (see the module docstring). Returns ``pairs``, ``aggressiveness``, ``resistance``,
    ``summary`` (frames; None when skipped), ``report`` (what ``summary.json`` holds) and ``figures``."""
    root = Path(root)
    cfg = load_settings(params)
    seed = params.seed if cfg.seed is None else cfg.seed
    out_dir, fig_dir = root / "results" / "gmad", root / "results" / "figures" / "gmad"
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir.mkdir(parents=True, exist_ok=True)
    _clear(out_dir, fig_dir)
    checkpoints, skipped = competing_experiments(params, cfg, root)
    labels = {name: params.experiments[name].label or name for name in checkpoints}
    unavailable = {name: status for name in skipped if (status := experiment_unavailable(root, name))}
    report: dict[str, Any] = {"paper": gmad.PAPER, "settings": cfg.model_dump(), "seed": seed,
                              "competitors": list(checkpoints), "skipped_experiments": skipped,
                              "unavailable": unavailable}
    result: dict[str, Any] = {"pairs": None, "aggressiveness": None, "resistance": None, "summary": None,
                              "report": report, "figures": []}
    if len(checkpoints) < 2:
        report["skipped"] = (f"gMAD needs at least two trained models; found {len(checkpoints)} "
                             f"({list(checkpoints)}) on dataset {cfg.dataset!r}")
        log.warning("gMAD skipped: %s", report["skipped"])
        _write_csv(out_dir / "pairs.csv", pd.DataFrame(columns=[*gmad.PAIR_COLUMNS, *gmad.VERDICT_COLUMNS]))
        write_json(out_dir / "summary.json", report)
        return result

    kind, profile, size = pool_defaults(params, cfg)
    if cfg.image_folder is not None:
        folder = Path(cfg.image_folder)
        pool = folder_pool(folder if folder.is_absolute() else root / folder)
    else:
        pool = render_pool(root / "build" / "gmad" / "pool", cfg.pool_scenes, cfg.renders_per_scene, size, kind,
                           seed, progress)
    report["pool"] = {"n_images": len(pool), "simulated": pool.simulated, **pool.spec,
                      **({"profile": profile} if pool.simulated else {})}
    scores = score_pool(pool, checkpoints, cfg.attribute, cfg.batch_size, cfg.device, progress)
    write_parquet(root / "build" / "gmad" / "scores.parquet", pd.DataFrame({"image_id": pool.ids, **scores}))

    pairs = gmad.select_pairs(scores, cfg.levels, pool.ids, seed)
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
    if pairs["p"].notna().any():
        agg = gmad.aggressiveness_matrix(pairs, models)
        res = gmad.resistance_matrix(pairs, models)
        summary = gmad.model_summary(agg, res, pairs)
        _matrix_table("aggressiveness", agg, f"gMAD aggressiveness on {cfg.attribute} (row: attacker, column: "
                      f"defender; mean vote share for the attacker over {cfg.levels} levels). {note}").write(
            out_dir, ("md", "csv"))
        _matrix_table("resistance", res, f"gMAD resistance on {cfg.attribute} (row: defender, column: "
                      f"attacker; mean of 1 - |2p - 1| over {cfg.levels} levels). {note}").write(
            out_dir, ("md", "csv"))
        report["models"] = {name: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
                            for name, row in summary.to_dict(orient="index").items()}
        result.update(aggressiveness=agg, resistance=res, summary=summary)
        fig = gmad.matrices_figure(agg, res, labels, cfg.attribute)
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
    write_json(out_dir / "summary.json", report)
    log.info("gMAD: %d models, %d pairs, written to %s", len(models), len(pairs), out_dir)
    return result
