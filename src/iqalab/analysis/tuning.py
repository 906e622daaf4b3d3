"""Camera tuning with a quality model: parameter sweeps, a search tuner, panel win rates and regret.

TuningIQA (seed 000), Sec. "Application for Camera Tuning": camera parameters are "incrementally adjusted with
minimal step sizes", an image is captured after every adjustment, each metric ranks the captures and its top-1
capture is its chosen setting; a subjective test (12 volunteers, 44 scenarios) compares TuningIQA's top-1 with
LIQE's and MUSIQ's (win rates 76 % and 74 %). TuningIQA ranks "based on pairwise comparisons", the others by
score. This module owns the study's computation; :mod:`iqalab.stages.camera_tuning` does the I/O.

Readings of the paper (its text gives no grid):

- **Sweep** (:func:`axis_sweep`): the seven parameters are adjusted *one at a time* around the default setting
  (:func:`iqalab.sim.camera.auto_params`), ``k`` steps either side, so a sweep holds ``1 + 7 * 2k`` settings
  and touches every parameter. A full factorial grid (``(2k+1)^7`` captures) is not what a camera engineer
  "incrementally adjusting" a live camera does, and could not be rendered anyway.
- **Steps** (:data:`DEFAULT_STEPS`): aperture, shutter and ISO multiply the value by ``2^(i * step)`` (the
  convention of :mod:`iqalab.sim.builders`; light goes with N^2, so the aperture's 0.25 and the shutter's and
  ISO's 0.5 are each half a photographic stop), white balance moves in kelvin, contrast and saturation in log
  units, sharpness in unsharp-mask amount. The defaults sit inside the builder's "fine" deviations.
- **Pairwise ranking** (:func:`borda_scores`): a model that can compare two captures is ranked by its Borda
  count, the mean probability that a capture beats every other one in the sweep (symmetrised,
  ``(P_ij + 1 - P_ji) / 2``); other models by their score. Ties go to the earlier setting (the default first).
- **Win rate** (:func:`win_rates`): the panel sees the reference model's pick beside an opponent's pick in each
  scenario; each of ``n_raters`` judgments is 1 (reference better), 0 or 0.5 ("equivalent": ties count half).
  The win rate pools the judgments of all scenarios; its 95 % interval is the Wilson score interval on that
  count (the binomial model treats judgments as independent, which is optimistic when scenarios differ;
  :func:`win_rates` also gives the share of scenarios won by majority, with its own Wilson interval). When both
  models pick the *same* setting the panel is not asked: every judgment is a tie.
- **Regret**: ground-truth quality of the best setting in the sweep minus that of the pick (the paper's
  question: how much quality did the metric leave behind). For the search tuner and for the regret-vs-renders
  curve the reference is the best ground truth among *every* capture rendered for the scene (sweep and every
  search path), so the curve never goes negative and the sweep and the search are on one scale.

Beyond the paper: :func:`coordinate_descent` searches the lattice of steps instead of sweeping it (the model is
the objective; each parameter in turn is stepped while the model's score improves), and :func:`regret_curve`
shows the regret of the best capture found so far against the number of captures rendered, for the search and
for the sweep taken in a random order (optuna and scikit-optimize are not installed, so no Bayesian optimiser).

A *model* is any callable ``model(images, infos) -> scores``: ``images`` uint8 ``[H, W, 3]`` arrays, ``infos``
the render infos of :func:`iqalab.sim.camera.render` (``param_<name>`` carries the setting) plus ``scene``,
``person_box``, ``face_box`` and ``landmarks`` (normalised, or None) added here. A model may also have a
``pairwise(images, infos) -> P[n, n]`` method (P[i, j] = probability that i is better than j).
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iqalab.analysis.stats import wilson_interval
from iqalab.data.schema import CAM_PARAMS, DEFAULT_TUNING_STEPS
from iqalab.io import atomic_path
from iqalab.sim.camera import CameraParams
from iqalab.sim.pools import simulator_fingerprint  # the key of every cached render (gMAD pool too)
from iqalab.sim.scenes import Scene

log = logging.getLogger(__name__)

#: step of one lattice move per parameter (see the module docstring for the units)
DEFAULT_STEPS: dict[str, float] = DEFAULT_TUNING_STEPS
#: how each parameter moves: multiplicative in stops (``2^x``), additive, or multiplicative in log units
STEP_KIND: dict[str, str] = {"aperture": "stops", "shutter": "stops", "iso": "stops", "wb": "add",
                             "contrast": "log", "saturation": "log", "sharpness": "add"}
#: the range a tuned setting is kept in (inside the simulator's allowed range, as the dataset builder does)
TUNING_LIMITS: dict[str, tuple[float, float]] = {
    "aperture": (1.4, 16.0), "shutter": (1 / 8000, 1 / 4), "iso": (50.0, 25600.0), "wb": (2000.0, 10000.0),
    "contrast": (0.4, 2.8), "saturation": (0.05, 2.9), "sharpness": (0.0, 4.5)}

Index = tuple[int, ...]
Render = Callable[[Scene, CameraParams], tuple[np.ndarray, dict[str, float]]]


class QualityModel(Protocol):
    """``model(images, infos) -> scores`` (higher is better); see the module docstring."""

    def __call__(self, images: Sequence[np.ndarray], infos: Sequence[Mapping[str, Any]]) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------- lattice
@dataclass(frozen=True)
class Lattice:
    """Settings reachable from ``base`` by integer steps of each of the seven parameters (CAM_PARAMS order)."""

    base: CameraParams
    steps: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_STEPS))

    def __post_init__(self) -> None:
        unknown = set(self.steps) - set(CAM_PARAMS)
        if unknown:
            raise ValueError(f"unknown camera parameter(s) in steps: {sorted(unknown)}; known: {list(CAM_PARAMS)}")

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters with a non-zero step (the tuned dimensions), in CAM_PARAMS order."""
        return tuple(n for n in CAM_PARAMS if float(self.steps.get(n, 0.0)) != 0.0)

    def value(self, name: str, i: int) -> float:
        """Parameter ``name`` after ``i`` steps from the base, clipped to :data:`TUNING_LIMITS`."""
        v0, step = float(getattr(self.base, name)), float(self.steps.get(name, 0.0))
        kind = STEP_KIND[name]
        if kind == "stops":
            v = v0 * 2.0 ** (i * step)
        elif kind == "log":
            v = v0 * math.exp(i * step)
        else:
            v = v0 + i * step
        lo, hi = TUNING_LIMITS[name]
        return float(np.clip(v, min(lo, v0), max(hi, v0)))

    def setting(self, index: Index) -> CameraParams:
        """The camera setting at lattice ``index`` (one integer per tuned dimension, :attr:`names` order)."""
        if len(index) != len(self.names):
            raise ValueError(f"index {index} has {len(index)} entries; the lattice has {len(self.names)} dimensions")
        return self.base.replace(**{n: self.value(n, int(i)) for n, i in zip(self.names, index) if i != 0})


def describe_index(names: Sequence[str], index: Index) -> str:
    """``"shutter +2, iso -1"`` (steps from the default per parameter), or ``"default"``."""
    moves = [f"{n} {i:+d}" for n, i in zip(names, index) if i != 0]
    return ", ".join(moves) if moves else "default"


def axis_sweep(n_dims: int, k: int) -> list[Index]:
    """The origin, then for each dimension ``-k..-1, 1..k`` with the others at 0: ``1 + 2k * n_dims`` indices."""
    if k < 1:
        raise ValueError(f"a sweep needs at least one step per side, got k={k}")
    out: list[Index] = [(0,) * n_dims]
    for d in range(n_dims):
        for i in [*range(-k, 0), *range(1, k + 1)]:
            idx = [0] * n_dims
            idx[d] = i
            out.append(tuple(idx))
    return out


# --------------------------------------------------------------------------------------------- renders
def render_key(scene: Scene, params: CameraParams, seed: int, version: str = "") -> str:
    """Stable key of one capture: the scene (name and size), every camera parameter, the noise seed and the
    simulator ``version`` (see :func:`iqalab.sim.pools.simulator_fingerprint`)."""
    payload = json.dumps({"scene": scene.name, "size": list(scene.size), "seed": int(seed), "version": version,
                          "params": {k: round(float(v), 9) for k, v in asdict(params).items()}}, sort_keys=True)
    return f"{scene.name}-{zlib.crc32(payload.encode()):08x}-{len(payload)}"


class RenderCache:
    """Renders each (scene, setting) once; with ``folder`` also on disk (``<key>.npz``) so models share them.

    The sensor noise of a capture is seeded by its key, so a setting looks the same whoever asks first. ``render``
    defaults to :func:`iqalab.sim.camera.render`; ``version`` (default:
    :func:`iqalab.sim.pools.simulator_fingerprint`) enters the key. ``n_captures`` counts the distinct captures
    served, which the study alone decides; ``n_rendered`` counts the real renders among them (misses of the disk
    cache), which depends on what earlier runs left in ``folder``.
    """

    def __init__(self, folder: str | Path | None = None, seed: int = 0, render: Callable[..., Any] | None = None,
                 version: str | None = None) -> None:
        from iqalab.sim.camera import render as sim_render

        self.folder = Path(folder) if folder is not None else None
        self.seed = int(seed)
        self.version = simulator_fingerprint() if version is None else version
        self._render = render or sim_render
        self._memory: dict[str, tuple[np.ndarray, dict[str, float]]] = {}
        self.n_rendered = 0

    def __call__(self, scene: Scene, params: CameraParams) -> tuple[np.ndarray, dict[str, float]]:
        key = render_key(scene, params, self.seed, self.version)
        if key in self._memory:
            return self._memory[key]
        path = self.folder / f"{key}.npz" if self.folder is not None else None
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as data:
                shot = (data["image"], json.loads(str(data["info"])))
        else:
            noise_key = render_key(scene, params, self.seed)  # independent of the simulator's source hash
            rng = np.random.default_rng([self.seed, zlib.crc32(noise_key.encode())])
            image, info = self._render(scene, params, rng)
            shot = (np.asarray(image, dtype=np.uint8), dict(info))
            self.n_rendered += 1
            if path is not None:
                with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                    np.savez_compressed(fh, image=shot[0], info=np.array(json.dumps(shot[1])))
        self._memory[key] = shot
        return shot

    @property
    def n_captures(self) -> int:
        """Distinct (scene, setting) captures served so far, rendered or read from disk."""
        return len(self._memory)


def scene_info(scene: Scene) -> dict[str, Any]:
    """What a model may know about a scene beyond the pixels: its name and normalised boxes/landmarks."""
    lm = None if scene.landmarks is None else np.asarray(scene.landmarks, dtype=float).reshape(5, 2).tolist()
    return {"scene": scene.name, "person_box": scene.person_box, "face_box": scene.face_box, "landmarks": lm}


def cams_from_infos(infos: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """``[N, 7]`` raw camera parameters in CAM_PARAMS order from the ``param_<name>`` entries (NaN if absent)."""
    return np.array([[float(info.get(f"param_{n}", np.nan)) for n in CAM_PARAMS] for info in infos], dtype=float)


# --------------------------------------------------------------------------------------------- ranking
def borda_scores(prob: np.ndarray) -> np.ndarray:
    """Mean symmetrised probability of beating every other item: ``mean_j (P_ij + 1 - P_ji) / 2``, j != i."""
    p = np.asarray(prob, dtype=float)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"a pairwise probability matrix must be square, got shape {p.shape}")
    n = p.shape[0]
    if n == 1:
        return np.full(1, 0.5)
    sym = (p + 1.0 - p.T) / 2.0
    np.fill_diagonal(sym, 0.0)
    return sym.sum(axis=1) / (n - 1)


def top1(scores: Sequence[float] | np.ndarray) -> int:
    """Index of the highest score (NaN never wins; ties go to the first, i.e. the default setting)."""
    s = np.asarray(scores, dtype=float)
    if s.size == 0:
        raise ValueError("no scores to pick from")
    return int(np.argmax(np.where(np.isnan(s), -np.inf, s)))


def rank_scores(model: QualityModel, images: Sequence[np.ndarray], infos: Sequence[Mapping[str, Any]],
                pairwise: bool = True) -> np.ndarray:
    """The scores a model ranks ``images`` by: Borda counts of ``model.pairwise`` when it has one (and
    ``pairwise``), else ``model(images, infos)``."""
    pair_fn = getattr(model, "pairwise", None)
    if pairwise and callable(pair_fn) and len(images) > 1:
        return borda_scores(np.asarray(pair_fn(images, infos), dtype=float))
    scores = np.asarray(model(images, infos), dtype=float).reshape(-1)
    if scores.shape[0] != len(images):
        raise ValueError(f"model returned {scores.shape[0]} scores for {len(images)} images")
    return scores


# --------------------------------------------------------------------------------------------- search
@dataclass
class SearchTrace:
    """What a tuner did: the settings it evaluated (render order), their objective values, and after each
    render the position (in ``evaluated``) of its incumbent, the best setting so far by the objective."""

    evaluated: list[Index] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    incumbent: list[int] = field(default_factory=list)

    @property
    def best(self) -> Index:
        """The tuner's final pick."""
        return self.evaluated[self.incumbent[-1]]

    @property
    def n_renders(self) -> int:
        return len(self.evaluated)


def coordinate_descent(objective: Callable[[Index], float], n_dims: int, radius: int | Sequence[int],
                       budget: int, tol: float = 0.0, max_rounds: int = 10) -> SearchTrace:
    """Coordinate descent on the integer lattice ``|i_d| <= radius_d`` from the origin, maximising ``objective``.

    Each round visits every dimension: step +1 and keep stepping while the objective improves by more than
    ``tol``; if the first +1 step does not improve, do the same towards -1. Rounds repeat until one moves
    nothing, ``max_rounds`` is reached or ``budget`` distinct settings have been evaluated (a setting evaluated
    before is not evaluated again). The objective is the model's score: the camera never sees the truth.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    radii = [int(radius)] * n_dims if isinstance(radius, int) else [int(r) for r in radius]
    trace = SearchTrace()
    seen: dict[Index, int] = {}

    def evaluate(x: Index) -> float | None:
        if x in seen:
            return trace.values[seen[x]]
        if len(trace.evaluated) >= budget:
            return None
        seen[x] = len(trace.evaluated)
        value = float(objective(x))
        trace.evaluated.append(x)
        trace.values.append(value if np.isfinite(value) else -np.inf)
        best = trace.incumbent[-1] if trace.incumbent else 0
        trace.incumbent.append(seen[x] if trace.values[-1] > trace.values[best] + tol or not trace.incumbent
                               else best)
        return trace.values[-1]

    x: Index = (0,) * n_dims
    current = evaluate(x)
    assert current is not None
    for _ in range(max_rounds):
        moved = False
        for d in range(n_dims):
            for direction in (1, -1):
                stepped = False
                while abs(x[d] + direction) <= radii[d]:
                    y = x[:d] + (x[d] + direction,) + x[d + 1:]
                    value = evaluate(y)
                    if value is None or value <= current + tol:
                        break
                    x, current, stepped, moved = y, value, True, True
                if stepped:
                    break
        if not moved or len(trace.evaluated) >= budget:
            break
    # the incumbent is the best evaluated setting; with tol = 0 that is where the descent stopped
    return trace


def ordered_search(objective: Callable[[Index], float], candidates: Sequence[Index]) -> SearchTrace:
    """Evaluate ``candidates`` in the given order (a sweep taken as an anytime tuner), tracking the incumbent."""
    trace = SearchTrace()
    for x in candidates:
        value = float(objective(x))
        trace.evaluated.append(x)
        trace.values.append(value if np.isfinite(value) else -np.inf)
        best = trace.incumbent[-1] if trace.incumbent else 0
        trace.incumbent.append(len(trace.values) - 1 if trace.values[-1] > trace.values[best] else best)
    return trace


# --------------------------------------------------------------------------------------------- statistics
def win_rates(verdicts: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Win rate of the reference against each opponent from per-scenario verdicts.

    ``verdicts`` has ``tuner``, ``reference``, ``opponent``, ``scene``, ``p`` (share of judgments preferring the
    reference, ties counted 1/2), ``n`` (judgments) and ``same_pick``. Returns one row per (tuner, reference,
    opponent) with the pooled win rate and its Wilson interval, and the share of scenarios won by majority
    (a scenario at exactly 1/2 counts half) with its own interval.
    """
    rows = []
    for (tuner, ref, opp), g in verdicts.groupby(["tuner", "reference", "opponent"], sort=False):
        n = float(g["n"].sum())
        wins = float((g["p"] * g["n"]).sum())
        lo, hi = wilson_interval(wins, n, level)
        majority = float((g["p"] > 0.5).sum() + 0.5 * (g["p"] == 0.5).sum())
        s_lo, s_hi = wilson_interval(majority, len(g), level)
        rows.append({"tuner": tuner, "reference": ref, "opponent": opp, "n_scenarios": len(g),
                     "n_judgments": int(n), "wins": wins, "win_rate": wins / n if n else float("nan"),
                     "ci_low": lo, "ci_high": hi, "same_pick": int(g["same_pick"].sum()),
                     "scenario_win_rate": majority / len(g), "scenario_ci_low": s_lo, "scenario_ci_high": s_hi})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- the study
@dataclass
class StudyConfig:
    """Knobs of :func:`run_study` (the stage fills them from the ``camera_tuning`` section of the params)."""

    grid_steps: int = 2
    steps: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_STEPS))
    search_budget: int = 12
    search_radius: int | None = None
    n_raters: int = 12
    pairwise: bool = True
    seed: int = 0
    search: bool = True


@dataclass
class StudyResult:
    """Tables of one study (one row per scene x model x tuner in ``picks``) and the renders of the picks."""

    picks: pd.DataFrame
    verdicts: pd.DataFrame
    curve: pd.DataFrame
    win_rates: pd.DataFrame
    regret: pd.DataFrame
    images: dict[tuple[str, str, str], np.ndarray]
    reference: str


def run_study(scenes: Sequence[Scene], base_settings: Sequence[CameraParams], models: Mapping[str, QualityModel],
              reference: str, render: Render, truth: Callable[[Mapping[str, float]], float],
              judge: Callable[[Mapping[str, float], Mapping[str, float], np.random.Generator], float],
              config: StudyConfig | None = None, baselines: Sequence[str] = ("default", "oracle"),
              progress: bool = True) -> StudyResult:
    """The camera-tuning study (see the module docstring) on ``scenes``, each tuned around its base setting.

    ``models`` maps a name to a :class:`QualityModel`; ``reference`` names the one whose picks meet the panel
    against every other (and against the ``baselines``: ``default``, the untouched base setting, and
    ``oracle``, the ground truth used as a model). ``render(scene, params)`` gives ``(image, info)`` (pass a
    :class:`RenderCache`); ``truth(info)`` is the ground-truth quality; ``judge(info_a, info_b, rng)`` the
    panel's share of judgments preferring a (ties 1/2). Every random draw is seeded from ``config.seed``, the
    scene and the model names, so results do not depend on the order of models.
    """
    cfg = config or StudyConfig()
    if reference not in models and reference not in baselines:
        raise KeyError(f"reference {reference!r} is neither a model ({sorted(models)}) nor a baseline")
    if len(scenes) != len(base_settings):
        raise ValueError("one base setting per scene is needed")
    all_models: dict[str, QualityModel | None] = dict(models)
    if "oracle" in baselines:
        all_models["oracle"] = _truth_model(truth)
    pick_rows, verdict_rows, curve_rows = [], [], []
    images: dict[tuple[str, str, str], np.ndarray] = {}
    for s, (scene, base) in enumerate(tqdm(list(zip(scenes, base_settings)), desc="camera tuning",
                                           disable=not progress)):
        lattice = Lattice(base, cfg.steps)
        n_dims = len(lattice.names)
        extra = scene_info(scene)

        def shot(index: Index, lattice: Lattice = lattice, scene: Scene = scene, extra: dict = extra
                 ) -> tuple[np.ndarray, dict[str, Any]]:
            image, info = render(scene, lattice.setting(index))
            return image, {**info, **extra}

        sweep = axis_sweep(n_dims, cfg.grid_steps)
        sweep_shots = [shot(i) for i in sweep]
        sweep_truth = np.array([truth(info) for _, info in sweep_shots])
        order_rng = np.random.default_rng([cfg.seed, s, 17])
        curve_order = [sweep[0]] + [sweep[j] for j in 1 + order_rng.permutation(len(sweep) - 1)]
        traces: dict[tuple[str, str], SearchTrace] = {}
        sweep_images, sweep_infos = [im for im, _ in sweep_shots], [inf for _, inf in sweep_shots]
        for name, model in all_models.items():
            assert model is not None
            point = np.asarray(model(sweep_images, sweep_infos), dtype=float).reshape(-1)
            pairwise = cfg.pairwise and callable(getattr(model, "pairwise", None))
            ranked = rank_scores(model, sweep_images, sweep_infos) if pairwise else point
            by_index = dict(zip(sweep, point))
            # the sweep as an anytime tuner (random order, default first) ranks by score; its last point is
            # the full sweep's top-1, by pairwise Borda count for models that compare pairs
            trace = ordered_search(lambda x, by_index=by_index: by_index[x], curve_order)
            trace.incumbent[-1] = curve_order.index(sweep[top1(ranked)])
            traces[(name, "sweep")] = trace
            if cfg.search:
                def objective(x: Index, model: QualityModel = model, by_index: dict = by_index) -> float:
                    if x in by_index:  # scored in the sweep already: the capture and its score are the same
                        return float(by_index[x])
                    image, info = shot(x)
                    return float(np.asarray(model([image], [info]), dtype=float).reshape(-1)[0])

                radius = cfg.search_radius if cfg.search_radius is not None else 2 * cfg.grid_steps
                traces[(name, "search")] = coordinate_descent(objective, n_dims, radius, cfg.search_budget)
        if "default" in baselines:
            traces[("default", "sweep")] = ordered_search(lambda x: 0.0, [sweep[0]])
            if cfg.search:
                traces[("default", "search")] = traces[("default", "sweep")]
        # every capture made for this scene: the reference for the curve and the search regret
        rendered = {x for t in traces.values() for x in t.evaluated} | set(sweep)
        truth_of = {x: truth(shot(x)[1]) for x in rendered}
        best_all = max(truth_of.values())
        best_sweep = float(sweep_truth.max())
        for (name, tuner), trace in traces.items():
            pick = trace.best
            image, info = shot(pick)
            images[(scene.name, name, tuner)] = image
            score = trace.values[trace.incumbent[-1]]
            pick_rows.append({"scene": scene.name, "model": name, "tuner": tuner, "index": str(pick),
                              "change": describe_index(lattice.names, pick),
                              **{f"set_{n}": float(getattr(lattice.setting(pick), n)) for n in CAM_PARAMS},
                              "score": float(score), "true_quality": truth_of[pick],
                              "best_in_sweep": best_sweep, "best_rendered": best_all,
                              "regret": (best_sweep if tuner == "sweep" else best_all) - truth_of[pick],
                              "regret_vs_sweep": best_sweep - truth_of[pick],
                              "regret_vs_rendered": best_all - truth_of[pick],
                              "renders": trace.n_renders})
            for n_r, inc in enumerate(trace.incumbent, start=1):
                curve_rows.append({"scene": scene.name, "model": name, "tuner": tuner, "n_renders": n_r,
                                   "regret": best_all - truth_of[trace.evaluated[inc]]})
        for tuner in ("sweep", "search") if cfg.search else ("sweep",):
            ref_pick = traces.get((reference, tuner))
            if ref_pick is None:
                continue
            ref_info = shot(ref_pick.best)[1]
            for (name, t), trace in traces.items():
                if t != tuner or name == reference:
                    continue
                same = trace.best == ref_pick.best
                key = f"{scene.name}/{reference}/{name}/{tuner}"
                rng = np.random.default_rng([cfg.seed, zlib.crc32(key.encode())])
                p = 0.5 if same else float(judge(ref_info, shot(trace.best)[1], rng))
                verdict_rows.append({"tuner": tuner, "reference": reference, "opponent": name,
                                     "scene": scene.name, "p": p, "n": cfg.n_raters, "same_pick": same})
    picks = pd.DataFrame(pick_rows)
    verdicts = pd.DataFrame(verdict_rows, columns=["tuner", "reference", "opponent", "scene", "p", "n",
                                                   "same_pick"])
    curve = regret_curve(pd.DataFrame(curve_rows))
    return StudyResult(picks=picks, verdicts=verdicts, curve=curve, win_rates=win_rates(verdicts),
                       regret=regret_table(picks), images=images, reference=reference)


def _truth_model(truth: Callable[[Mapping[str, float]], float]) -> QualityModel:
    def oracle(images: Sequence[np.ndarray], infos: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.array([truth(info) for info in infos], dtype=float)

    return oracle


def regret_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error over scenes of the incumbent's regret after ``n`` renders, per model and tuner.

    ``rows`` has ``scene``, ``model``, ``tuner``, ``n_renders`` and ``regret``; a tuner that stopped early
    keeps its final pick for every later ``n`` (it has answered).
    """
    cols = ["model", "tuner", "n_renders", "regret_mean", "regret_sem", "n_scenes"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for (model, tuner), g in rows.groupby(["model", "tuner"], sort=False):
        wide = g.pivot_table(index="n_renders", columns="scene", values="regret", aggfunc="first")
        wide = wide.reindex(range(1, int(wide.index.max()) + 1)).ffill()
        values = wide.to_numpy(dtype=float)
        n = np.isfinite(values).sum(axis=1)
        mean = np.nanmean(values, axis=1)
        sd = np.array([np.nanstd(v, ddof=1) if k > 1 else 0.0 for v, k in zip(values, n)])
        out.append(pd.DataFrame({"model": model, "tuner": tuner, "n_renders": wide.index.to_numpy(),
                                 "regret_mean": mean, "regret_sem": sd / np.sqrt(np.maximum(n, 1)), "n_scenes": n}))
    return pd.concat(out, ignore_index=True)[cols]


def regret_table(picks: pd.DataFrame) -> pd.DataFrame:
    """Per model and tuner: mean / sd / median regret, share of scenes where the best setting was picked,
    mean renders and mean ground-truth quality of the pick."""
    rows = []
    for (model, tuner), g in picks.groupby(["model", "tuner"], sort=False):
        r = g["regret"].to_numpy(dtype=float)
        rows.append({"model": model, "tuner": tuner, "n_scenarios": len(g), "renders_mean": g["renders"].mean(),
                     "true_quality_mean": g["true_quality"].mean(), "regret_mean": r.mean(),
                     "regret_sd": r.std(ddof=1) if len(r) > 1 else 0.0, "regret_median": float(np.median(r)),
                     "share_best": float(np.mean(r <= 1e-9)),
                     "regret_vs_sweep_mean": g["regret_vs_sweep"].mean()})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- models
class ScorerModel:
    """A checkpoint (:class:`iqalab.inference.Scorer`) as a :class:`QualityModel`: camera parameters from the render infos, person /
    face boxes and landmarks from the scene; scores in MOS units. With a pair head (``has_pair_head``: TuningIQA's
    ``pair_logits`` on its fused features) it also offers :meth:`pairwise` (the paper's pairwise ranking)."""

    def __init__(self, scorer: Any, attribute: str, label: str) -> None:
        if attribute not in scorer.attributes:
            raise ValueError(f"{label}: the model predicts {scorer.attributes}, not {attribute!r}")
        self.scorer = scorer
        self.attribute = attribute
        self.label = label
        if not scorer.model.has_pair_head:
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
    Scorer prepares (resize, normalisation, standardised camera parameters, boxes) also yield the embeddings the
    pair head compares (:meth:`iqalab.models.base.IQAModel.predict_with_embedding`); returns the same scores as
    the model's ``predict`` (which the Scorer calls when no raw score is asked for, and :meth:`ScorerModel.pairwise`
    asks for none) and answers every other attribute as the model does."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.features: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, batch: dict[str, Any]) -> dict[str, Any]:
        scores, emb = self.model.predict_with_embedding(batch)
        self.features.append(emb)
        return scores


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
