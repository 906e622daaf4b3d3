"""Camera-tuning study (iqalab.analysis.tuning, stage camera_tuning): sweeps, search, ranking, win rates, regret."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from iqalab.analysis.tuning import (
    DEFAULT_STEPS,
    STEP_KIND,
    Lattice,
    RenderCache,
    StudyConfig,
    axis_sweep,
    borda_scores,
    coordinate_descent,
    ordered_search,
    run_study,
    top1,
)
from iqalab.config import ParamsError, parse_params
from iqalab.data.schema import CAM_PARAMS
from iqalab.sim.camera import CameraParams
from iqalab.sim.observers import Panel

from .conftest import toy_params


# --------------------------------------------------------------------------------------------- fakes
@dataclass
class FakeScene:
    """The parts of a Scene the study reads (name, size, boxes); renders come from :func:`fake_render`."""

    name: str
    optimum: dict[str, float] = field(default_factory=dict)
    size: tuple[int, int] = (8, 8)
    person_box: Any = None
    face_box: Any = None
    landmarks: Any = None


def fake_render(scene: FakeScene, params: CameraParams) -> tuple[np.ndarray, dict[str, float]]:
    """A separable toy quality: 5 minus squared distances (in lattice steps) to the scene's optimum."""
    base = CameraParams()
    q = 5.0
    for name, target in scene.optimum.items():
        v, v0 = getattr(params, name), getattr(base, name)
        kind = STEP_KIND[name]
        moved = np.log2(v / v0) if kind == "stops" else np.log(v / v0) if kind == "log" else v - v0
        i = moved / DEFAULT_STEPS[name]
        q -= 0.05 * (i - target) ** 2
    info = {f"param_{n}": float(getattr(params, n)) for n in CAM_PARAMS}
    info["q"] = float(q)
    level = int(np.clip(q * 40, 0, 255))
    return np.full((*scene.size, 3), level, dtype=np.uint8), info


def fake_truth(info: dict[str, float]) -> float:
    return float(info["q"])


def panel_judge(panel: Panel, n: int = 12):  # noqa: ANN201
    def judge(a: dict[str, float], b: dict[str, float], rng: np.random.Generator) -> float:
        return float(panel.judge(np.array(fake_truth(a)), np.array(fake_truth(b)), n, rng))

    return judge


def random_model(seed: int):  # noqa: ANN201
    rng = np.random.default_rng(seed)

    def model(images, infos):  # noqa: ANN001, ANN202
        return rng.random(len(images))

    return model


def truth_model(images, infos):  # noqa: ANN001, ANN201
    return np.array([fake_truth(i) for i in infos])


# --------------------------------------------------------------------------------------------- sweep, lattice
def test_axis_sweep_touches_every_parameter_one_at_a_time():
    base = CameraParams(aperture=2.8, shutter=1 / 60, iso=200, wb=5000, contrast=1.0, saturation=1.0,
                        sharpness=0.6)
    lattice = Lattice(base)
    k = 2
    sweep = axis_sweep(len(lattice.names), k)
    assert len(sweep) == 1 + 2 * k * 7 and len(set(sweep)) == len(sweep)
    settings = [lattice.setting(i) for i in sweep]
    assert settings[0] == base
    changed = {name: [] for name in CAM_PARAMS}
    for index, setting in zip(sweep[1:], settings[1:]):
        diff = [n for n in CAM_PARAMS if not np.isclose(getattr(setting, n), getattr(base, n))]
        assert len(diff) == 1, f"{index} changed {diff}"
        changed[diff[0]].append((index[CAM_PARAMS.index(diff[0])], getattr(setting, diff[0])))
    for name, values in changed.items():
        assert len(values) == 2 * k, name
        steps, vals = zip(*sorted(values))
        assert np.all(np.diff(vals) > 0), f"{name} not monotone in the step index: {vals}"


def test_lattice_step_units_and_limits():
    base = CameraParams(aperture=2.8, shutter=1 / 60, iso=100, wb=5000, contrast=1.0, sharpness=0.6)
    lattice = Lattice(base, {"aperture": 0.5, "wb": 400.0, "contrast": 0.15, "sharpness": 0.5})
    assert lattice.names == ("aperture", "wb", "contrast", "sharpness")
    s = lattice.setting((2, -1, 1, -1))
    assert s.aperture == pytest.approx(2.8 * 2.0)  # two half-stop steps of the builder's convention
    assert s.wb == pytest.approx(4600.0) and s.contrast == pytest.approx(np.exp(0.15))
    assert s.sharpness == pytest.approx(0.1)
    assert lattice.setting((0, 0, 0, -5)).sharpness == 0.0  # clipped at the limit
    assert lattice.setting((10, 0, 0, 0)).aperture == 16.0
    with pytest.raises(ValueError, match="unknown camera parameter"):
        Lattice(base, {"gamma": 1.0})


# --------------------------------------------------------------------------------------------- search, ranking
def test_coordinate_descent_finds_optimum_of_separable_objective():
    target = (2, -3, 0, 1, -1, 3, -2)
    weights = np.array([1.0, 0.5, 2.0, 1.5, 0.7, 1.0, 3.0])
    calls = []

    def objective(x):  # noqa: ANN001, ANN202
        calls.append(x)
        return -float((weights * (np.array(x) - target) ** 2).sum())

    trace = coordinate_descent(objective, 7, radius=4, budget=200)
    assert trace.best == target
    assert len(calls) == len(set(calls)) == trace.n_renders <= 200  # never evaluates a setting twice
    best_so_far = [trace.values[i] for i in trace.incumbent]
    assert np.all(np.diff(best_so_far) >= 0) and best_so_far[-1] == max(trace.values)
    small = coordinate_descent(objective, 7, radius=4, budget=5)
    assert small.n_renders == 5
    # a target outside the radius ends on the boundary
    assert coordinate_descent(objective, 7, radius=1, budget=200).best == tuple(int(np.clip(t, -1, 1))
                                                                                for t in target)


def test_ordered_search_incumbent_is_running_argmax():
    values = {(0,): 1.0, (1,): 3.0, (2,): 2.0, (3,): 5.0}
    trace = ordered_search(lambda x: values[x], [(0,), (1,), (2,), (3,)])
    assert trace.incumbent == [0, 1, 1, 3] and trace.best == (3,)


def test_borda_scores_recover_a_consistent_order():
    s = np.array([0.3, 2.0, -1.0, 1.1])
    prob = 1 / (1 + np.exp(-(s[:, None] - s[None, :])))
    borda = borda_scores(prob)
    assert list(np.argsort(borda)) == list(np.argsort(s))
    assert borda.mean() == pytest.approx(0.5)  # every pair's probability mass is shared out
    assert borda_scores(np.array([[0.5, 1.0], [0.0, 0.5]])).tolist() == [1.0, 0.0]
    assert top1([np.nan, 2.0, 2.0, 1.0]) == 1


# --------------------------------------------------------------------------------------------- the study
def _fake_study(n_scenes: int, models, reference: str, panel: Panel, seed: int = 0, **cfg):  # noqa: ANN001, ANN202
    rng = np.random.default_rng(seed)
    scenes = [FakeScene(f"s{i}", {n: float(rng.integers(-2, 3)) for n in CAM_PARAMS}) for i in range(n_scenes)]
    config = StudyConfig(grid_steps=2, search_budget=15, seed=seed, **cfg)
    return run_study(scenes, [CameraParams()] * n_scenes, models, reference, RenderCache(render=_ignore_rng(
        fake_render)), fake_truth, panel_judge(panel), config, progress=False)


def _ignore_rng(fn):  # noqa: ANN001, ANN202
    return lambda scene, params, rng: fn(scene, params)


def test_ground_truth_model_has_zero_regret_and_never_loses():
    noiseless = Panel(n_raters=12, seed=0, pair_noise=0.0)
    res = _fake_study(12, {"truth": truth_model, "random": random_model(1)}, "truth", noiseless)
    sweep = res.picks[(res.picks["model"] == "truth") & (res.picks["tuner"] == "sweep")]
    assert len(sweep) == 12 and np.allclose(sweep["regret"], 0.0)
    v = res.verdicts[res.verdicts["tuner"] == "sweep"]
    assert set(v["opponent"]) == {"random", "default", "oracle"}
    assert (v["p"] >= 0.5).all(), "the truth's pick wins or ties every comparison"
    assert (v.loc[v["opponent"] == "oracle", "same_pick"]).all()
    wr = res.win_rates.set_index(["tuner", "opponent"])
    assert wr.loc[("sweep", "random"), "win_rate"] > 0.5
    # regret is never negative, and the random model leaves quality behind on average
    assert (res.picks["regret"] >= -1e-12).all()
    reg = res.regret.set_index(["tuner", "model"])
    assert reg.loc[("sweep", "random"), "regret_mean"] > 0
    # the search with the truth as objective reaches the separable optimum within its budget in most scenes
    assert reg.loc[("search", "truth"), "regret_mean"] <= reg.loc[("sweep", "random"), "regret_mean"]


def test_random_model_wins_about_half():
    res = _fake_study(150, {"a": random_model(1), "b": random_model(2)}, "a", Panel(n_raters=12, seed=3),
                      search=False)
    row = res.win_rates.set_index(["tuner", "opponent"]).loc[("sweep", "b")]
    assert row["n_scenarios"] == 150 and row["n_judgments"] == 150 * 12
    assert abs(row["win_rate"] - 0.5) < 0.1
    assert row["scenario_ci_low"] < 0.5 < row["scenario_ci_high"]
    assert row["ci_low"] < row["win_rate"] < row["ci_high"]


def test_regret_curve_falls_and_ends_at_the_pick():
    res = _fake_study(6, {"truth": truth_model}, "truth", Panel(n_raters=12, seed=0))
    curve = res.curve[(res.curve["model"] == "truth") & (res.curve["tuner"] == "search")]
    assert np.all(np.diff(curve["regret_mean"]) <= 1e-12), "the truth's incumbent only improves"
    picks = res.picks[(res.picks["model"] == "truth") & (res.picks["tuner"] == "search")]
    assert curve["regret_mean"].iloc[-1] == pytest.approx(picks["regret_vs_rendered"].mean())
    assert res.curve.groupby(["model", "tuner"])["n_scenes"].min().min() == 6


def test_study_on_the_simulator_and_render_cache(tmp_path):
    from iqalab.sim.builders import scene_pool
    from iqalab.sim.camera import auto_params
    from iqalab.sim.observers import true_quality

    scenes = scene_pool(2, seed=0, image_size=40, kind="livestream")
    bases = [auto_params(s, sharpness=0.6, jpeg_quality=92) for s in scenes]
    cache = RenderCache(tmp_path / "renders", seed=0)

    def truth(info):  # noqa: ANN001, ANN202
        return true_quality(info, "overall", "livestream")

    panel = Panel(n_raters=12, seed=0, pair_noise=0.0)

    def judge(a, b, rng):  # noqa: ANN001, ANN202
        return panel.prefer(a, b, "overall", 12, "livestream", rng)

    def gt(images, infos):  # noqa: ANN001, ANN202
        return np.array([truth(i) for i in infos])

    res = run_study(scenes, bases, {"gt": gt}, "gt", cache, truth, judge,
                    StudyConfig(grid_steps=1, search_budget=8), progress=False)
    assert np.allclose(res.picks.query("model == 'gt' and tuner == 'sweep'")["regret"], 0.0)
    assert (res.verdicts["p"] >= 0.5).all()
    n_files = len(list((tmp_path / "renders").glob("*.npz")))
    assert n_files == cache.n_rendered == cache.n_captures >= 2 * (1 + 2 * 7)
    # a rerun over the warm disk cache renders nothing, but serves the same captures: the count a summary records
    warm = RenderCache(tmp_path / "renders", seed=0)
    rerun = run_study(scenes, bases, {"gt": gt}, "gt", warm, truth, judge,
                      StudyConfig(grid_steps=1, search_budget=8), progress=False)
    assert warm.n_rendered == 0 and warm.n_captures == cache.n_captures
    pd.testing.assert_frame_equal(rerun.picks, res.picks)
    # a fresh cache on the same folder renders nothing and returns identical pixels
    again = RenderCache(tmp_path / "renders", seed=0)
    image, info = again(scenes[0], bases[0])
    first, _ = cache(scenes[0], bases[0])
    assert again.n_rendered == 0 and np.array_equal(image, first) and info["param_iso"] == bases[0].iso
    # another simulator version never reuses those files, but draws the same sensor noise
    newer = RenderCache(tmp_path / "renders", seed=0, version="another-simulator")
    assert np.array_equal(newer(scenes[0], bases[0])[0], first) and newer.n_rendered == 1


# --------------------------------------------------------------------------------------------- stage
class _PairModel:
    """Pair-head model stand-in (the contract of ``IQAModel``'s pair head): embedding = mean brightness,
    pair logit = 20 x (e_a - e_b)."""

    attributes = ["overall"]
    has_pair_head = True
    input_resolution = "cache"

    def predict_with_embedding(self, batch):  # noqa: ANN001, ANN201
        emb = batch["image"].mean(dim=(1, 2, 3))[:, None]
        return {"overall": emb[:, 0]}, emb

    def pair_logits(self, fa, fb):  # noqa: ANN001, ANN201
        return 20 * (fa - fb)

    def predict(self, batch):  # noqa: ANN001, ANN201
        return self.predict_with_embedding(batch)[0]

    # no predict_with_raw: the pairwise path asks for no raw score, so nothing there may call it (on the feature
    # tap it would reach the model past the tap, which would then find no features)


class _FakeScorer:
    """Calls ``self.model.predict`` on prepared batches, in chunks, as :class:`iqalab.inference.Scorer` does when
    no raw score is asked for (``predict_with_raw`` only with ``with_raw``)."""

    attributes = ["overall"]

    def __init__(self) -> None:
        self.model = _PairModel()

    def score(self, images, cam=None, person_boxes=None, face_boxes=None, landmarks=None, batch_size=2,  # noqa: ANN001, ANN201
              with_raw=False):
        import torch

        out = []
        for start in range(0, len(images), batch_size):
            batch = {"image": torch.tensor(np.stack(images[start:start + batch_size]),
                                           dtype=torch.float32).permute(0, 3, 1, 2)}
            scores = self.model.predict_with_raw(batch)[0] if with_raw else self.model.predict(batch)
            out.append(scores["overall"].numpy())
        return {"overall": np.concatenate(out)}


def test_scorer_model_pairwise_ranks_through_the_pair_head():
    from iqalab.analysis.tuning import ScorerModel

    model = ScorerModel(_FakeScorer(), "overall", "fake")
    images = [np.full((4, 4, 3), v, dtype=np.uint8) for v in (10, 200, 90)]
    infos = [{"param_iso": 100.0, "person_box": (0.1, 0.1, 0.5, 0.9), "face_box": None, "landmarks": None}] * 3
    prob = model.pairwise(images, infos)
    assert prob.shape == (3, 3) and prob[1, 0] > 0.99 and prob[0, 1] < 0.01
    assert list(np.argsort(borda_scores(prob))) == [0, 2, 1]
    assert isinstance(model.scorer.model, _PairModel), "the feature tap is removed afterwards"
    with pytest.raises(ValueError, match="not 'face'"):
        ScorerModel(_FakeScorer(), "face", "fake")


def test_settings_errors_name_the_key():
    from iqalab.stages.camera_tuning import settings_from_params

    raw = toy_params()
    raw["camera_tuning"] = {"n_scenario": 3}
    with pytest.raises(ParamsError, match=r"camera_tuning\.n_scenario: unknown key"):
        settings_from_params(parse_params(raw, check_models=False))
    raw["camera_tuning"] = {"dataset": "toy", "steps": {"gamma": 1.0}}
    with pytest.raises(ParamsError, match=r"camera_tuning\.steps"):
        settings_from_params(parse_params(raw, check_models=False))
    raw["camera_tuning"] = {"dataset": "nope"}
    with pytest.raises(ParamsError, match=r"camera_tuning\.dataset: unknown dataset 'nope'"):
        settings_from_params(parse_params(raw, check_models=False))
    raw["camera_tuning"] = {"dataset": "toy"}
    settings = settings_from_params(parse_params(raw, check_models=False))
    assert settings.n_raters == 12 and settings.attribute == "overall"


def test_stage_end_to_end_on_a_trained_toy_model(project, tmp_path_factory):
    from iqalab.__main__ import main
    from iqalab.stages import camera_tuning
    from iqalab.tables import read_table_csv
    from iqalab.verify import compare_results, format_differences

    tiny = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 16}
    raw = toy_params(e={"dataset": "toy", "model": tiny, "train": {"epochs": 1, "max_train_images": 4}})
    raw["camera_tuning"] = {"dataset": "toy", "n_scenarios": 2, "grid_steps": 1, "search_budget": 4,
                            "image_size": 48, "n_figure_scenes": 1, "device": "cpu"}
    params = project.write_params(raw)
    assert main(["-q", "ingest", "toy"]) == 0
    assert main(["-q", "train", "e"]) == 0
    summary = camera_tuning.run(params, project.root, progress=False)
    out = project.root / "results" / "tuning"
    assert summary["reference"] == "e" and summary["models"] == ["e"] and summary["simulated"]
    wr = read_table_csv(out / "win_rates.csv")
    assert set(wr["opponent"]) == {"default setting (auto)", "oracle (ground truth)"}
    assert set(wr["tuner"]) == {"sweep", "search"} and wr["n_judgments"].eq(2 * 12).all()
    assert wr["win_rate"].between(0, 1).all() and (wr["ci_low"] <= wr["win_rate"]).all()
    regret = read_table_csv(out / "regret.csv")
    assert (regret["regret_mean"] >= -1e-9).all()
    curve = pd.read_csv(out / "regret_curve.csv")
    assert {"model", "tuner", "n_renders", "regret_mean"} <= set(curve.columns)
    assert "SIMULATED" in (out / "win_rates.md").read_text()
    figures = project.root / "results" / "figures" / "tuning"
    assert (figures / "picks.jpg").is_file(), "the renders of the picks are photographs: JPEG"
    assert (figures / "regret_curve.png").is_file() and (figures / "regret_curve.pdf").is_file()
    written = json.loads((out / "summary.json").read_text())
    assert written["captures"] == summary["captures"] > 0
    assert written["_provenance"]["renders_this_run"] == summary["captures"], "a cold cache renders every capture"
    assert len(list((project.root / "build" / "tuning").glob("*.npz"))) == summary["captures"]
    # a rerun over the warm render cache (as after `dvc repro`) writes the same results: only provenance differs,
    # which is what `make verify` relies on (a fresh clone renders everything, a committed run may render nothing).
    # The first run's outputs go aside as `dvc repro` removes a stage's outs before rerunning it (build/tuning, the
    # render cache, is a persisted out and stays), so the rerun has to write every file again.
    first = tmp_path_factory.mktemp("first_run")
    shutil.move(out, first / "tuning")
    shutil.move(figures, first / "figures")
    assert camera_tuning.run(params, project.root, progress=False) == summary
    again = json.loads((out / "summary.json").read_text())
    assert again["_provenance"]["renders_this_run"] == 0 < written["_provenance"]["renders_this_run"]
    assert again["captures"] == written["captures"] == summary["captures"], "the captures the study used"
    assert len(list((project.root / "build" / "tuning").glob("*.npz"))) == summary["captures"], "nothing new"
    assert {k: v for k, v in again.items() if k != "_provenance"} == {
        k: v for k, v in written.items() if k != "_provenance"}
    # every output `make verify` compares (win rates, regret, regret curve, picks: CSV and Markdown; summary.json)
    # is reproduced; the figures (not compared) are written again under the same names
    compared = sorted(p.name for p in (first / "tuning").iterdir())
    assert compared == sorted(p.name for p in out.iterdir())
    assert {"summary.json", "win_rates.csv", "win_rates.md", "regret.csv", "regret.md", "regret_curve.csv",
            "picks.csv"} <= set(compared)
    differences = compare_results(first / "tuning", out)
    assert not differences, "the warm-cache rerun changed results:\n" + format_differences(differences)
    assert sorted(p.name for p in (first / "figures").iterdir()) == sorted(p.name for p in figures.iterdir())
    # `captures` is a result that `make verify` compares, `renders_this_run` provenance that it leaves out
    edited = tmp_path_factory.mktemp("edited")
    shutil.copytree(out, edited, dirs_exist_ok=True)
    (edited / "summary.json").write_text(json.dumps({**again, "captures": again["captures"] + 1}))
    assert [(d.file, d.where) for d in compare_results(first / "tuning", edited)] == [("summary.json", "captures")]


def test_stage_without_checkpoints_compares_default_with_oracle(project):
    from iqalab.stages import camera_tuning

    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp", "backbone": "resnet18"}})
    raw["camera_tuning"] = {"dataset": "toy", "n_scenarios": 1, "grid_steps": 1, "search": False,
                            "image_size": 32, "n_figure_scenes": 1}
    summary = camera_tuning.run(project.write_params(raw), project.root, progress=False)
    assert summary["models"] == [] and summary["skipped"] == ["e"] and summary["reference"] == "default"
    assert summary["captures"] == 1 + 2 * 7 and list(summary["win_rate"]) == ["sweep/oracle"]
    assert summary["regret"]["sweep/oracle"] == 0.0
