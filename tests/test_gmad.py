"""gMAD (Ma et al. 2016/2020): pair selection, panel verdicts, vote import, scores, and the gmad stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from iqalab.analysis import gmad
from iqalab.config import ParamsError, parse_params

from .conftest import toy_params


def _synthetic(n: int = 400, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A pool whose ground truth is known: one model is the truth (a monotone map of it), one is noise."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(1.0, 5.0, n)
    return truth, {"truth": np.exp(truth) + rng.normal(0, 1e-3, n), "noise": rng.normal(size=n)}


# --------------------------------------------------------------------------------------------- selection
def test_defender_levels_are_quantile_bins():
    scores = np.random.default_rng(1).normal(size=1000)
    levels = gmad.defender_levels(scores, 4)
    assert set(levels) == {0, 1, 2, 3}
    np.testing.assert_array_equal(np.bincount(levels), [250, 250, 250, 250])
    edges = np.quantile(scores, [0.25, 0.5, 0.75])
    for k in range(4):  # every image of level k lies between the k-th and (k+1)-th quantile
        inside = scores[levels == k]
        assert k == 0 or inside.min() >= edges[k - 1]
        assert k == 3 or inside.max() < edges[k]
    # equal scores share a level; non-finite scores have none
    tied = gmad.defender_levels(np.array([1.0, 1.0, 1.0, 2.0, np.nan]), 2)
    assert len(set(tied[:3])) == 1 and tied[4] == -1


def test_pairs_lie_within_one_defender_level_and_are_the_attackers_extremes():
    truth, scores = _synthetic()
    pairs = gmad.select_pairs(scores, levels=5, seed=3)
    assert len(pairs) == 2 * 5 and pairs["pair_id"].is_unique
    for row in pairs.itertuples():
        level_of = gmad.defender_levels(scores[row.defender], 5)
        assert level_of[row.idx_a] == level_of[row.idx_b] == row.level
        assert row.idx_a != row.idx_b
        members = np.flatnonzero(level_of == row.level)
        attacker = scores[row.attacker]
        assert attacker[row.idx_a] == attacker[members].max()
        assert attacker[row.idx_b] == attacker[members].min()
        assert row.level_lo <= row.defender_a <= row.level_hi and row.level_lo <= row.defender_b <= row.level_hi
    # both roles are played by every model
    assert set(zip(pairs["attacker"], pairs["defender"])) == {("truth", "noise"), ("noise", "truth")}


def test_levels_invariant_to_monotone_rescaling_of_the_defender():
    _, scores = _synthetic()
    rescaled = {"truth": np.log(scores["truth"]) * 3 + 1, "noise": scores["noise"]}
    a, b = gmad.select_pairs(scores, 4, seed=0), gmad.select_pairs(rescaled, 4, seed=0)
    pd.testing.assert_series_equal(a["image_a"], b["image_a"])
    pd.testing.assert_series_equal(a["image_b"], b["image_b"])


def test_attacker_ties_are_broken_by_the_seed():
    rng = np.random.default_rng(0)
    scores = {"d": rng.normal(size=60), "flat": np.zeros(60)}  # the attacker rates everything equal
    picks = {tuple(gmad.select_pairs(scores, 1, seed=s).query("attacker == 'flat'")[["idx_a", "idx_b"]].iloc[0])
             for s in range(6)}
    assert len(picks) > 1
    assert all(a != b for a, b in picks)


def test_select_pairs_rejects_bad_input():
    with pytest.raises(ValueError, match="two models"):
        gmad.select_pairs({"only": np.arange(5.0)})
    with pytest.raises(ValueError, match="same pool"):
        gmad.select_pairs({"a": np.arange(5.0), "b": np.arange(4.0)})


# --------------------------------------------------------------------------------------------- verdicts/scores
def test_true_model_wins_in_both_roles():
    truth, scores = _synthetic()
    pairs = gmad.panel_verdicts(gmad.select_pairs(scores, levels=5, seed=0), truth, n_raters=20, seed=0)
    agg, res = gmad.aggressiveness_matrix(pairs), gmad.resistance_matrix(pairs)
    assert agg.loc["truth", "noise"] > 0.9, "the truth exposes the noise model's level pairs"
    assert agg.loc["truth", "noise"] > agg.loc["noise", "truth"] + 0.3
    assert res.loc["truth", "noise"] > res.loc["noise", "truth"] + 0.2
    assert res.loc["noise", "truth"] < 0.1, "the noise model cannot hold its levels against the truth"
    assert np.isnan(agg.loc["truth", "truth"]) and np.isnan(res.loc["noise", "noise"])
    summary = gmad.model_summary(agg, res, pairs)
    assert summary.loc["truth", "rank_aggressiveness"] == 1 and summary.loc["truth", "rank_resistance"] == 1
    assert summary.loc["truth", "attacks_won"] > summary.loc["noise", "attacks_won"]


def test_resistance_rises_with_more_levels_for_the_true_defender():
    truth, scores = _synthetic(n=600)
    res = {levels: gmad.resistance_matrix(gmad.panel_verdicts(gmad.select_pairs(scores, levels, seed=0),
                                                              truth, 20, 0)).loc["truth", "noise"]
           for levels in (2, 30)}
    assert res[30] > res[2] + 0.3, "narrower levels hold images of nearly equal true quality"


def test_gmad_is_deterministic_given_the_seed():
    truth, scores = _synthetic()
    first = gmad.panel_verdicts(gmad.select_pairs(scores, 5, seed=7), truth, 15, seed=7)
    again = gmad.panel_verdicts(gmad.select_pairs(scores, 5, seed=7), truth, 15, seed=7)
    pd.testing.assert_frame_equal(first, again)
    other = gmad.panel_verdicts(gmad.select_pairs(scores, 5, seed=7), truth, 15, seed=8)
    assert not np.allclose(first["p"], other["p"]), "the panel's votes follow the seed"


def test_outcome_reads_the_interval():
    assert list(gmad.outcome([0.6, 0.1, 0.3, np.nan], [0.9, 0.4, 0.7, np.nan])) == [
        "attacker_right", "attacker_wrong", "equal", "unknown"]


# --------------------------------------------------------------------------------------------- vote import
def test_vote_csv_round_trip(tmp_path):
    truth, scores = _synthetic(n=100)
    pairs = gmad.select_pairs(scores, 3, seed=0)
    sheet = gmad.votes_template(pairs)
    assert list(sheet.columns[:3]) == ["pair_id", "image_a", "image_b"]
    rng = np.random.default_rng(0)
    sheet["votes_a"] = rng.integers(0, 10, len(sheet))
    sheet["votes_b"] = rng.integers(1, 10, len(sheet))
    sheet["votes_equal"] = rng.integers(0, 3, len(sheet))
    path = tmp_path / "votes.csv"
    path.write_text("# lab session 1\n" + sheet.to_csv(index=False))
    votes = gmad.import_votes(path)
    n = sheet["votes_a"] + sheet["votes_b"] + sheet["votes_equal"]
    np.testing.assert_allclose(votes["p"], (sheet["votes_a"] + 0.5 * sheet["votes_equal"]) / n)
    np.testing.assert_allclose(votes["n_votes"], n)
    judged = gmad.apply_votes(pairs, votes)
    assert (judged["source"] == "csv").all() and list(judged["pair_id"]) == list(pairs["pair_id"])
    # the fraction format gives the same p; without n there is no interval
    frac = tmp_path / "fraction.csv"
    pd.DataFrame({"pair_id": votes["pair_id"], "fraction": votes["p"]}).to_csv(frac, index=False)
    again = gmad.import_votes(frac)
    np.testing.assert_allclose(again["p"], votes["p"])
    assert again["ci_low"].isna().all() and (again["outcome"] == "unknown").all()
    # partial votes: the rest stays unjudged
    partial = gmad.apply_votes(pairs, votes.iloc[:2])
    assert partial["p"].notna().sum() == 2 and (partial["outcome"].iloc[2:] == "unknown").all()


@pytest.mark.parametrize("content, message", [
    ("pair_id,votes_a,votes_b\nx,-1,3\n", "row 2, column 'votes_a'"),
    ("pair_id,fraction\nx,1.5\n", "column 'fraction'"),
    ("pair_id,votes_a,votes_b\nx,0,0\n", "no votes"),
    ("pair_id,score\nx,1\n", "needs columns"),
    ("pair_id,fraction\nx,0.5\nx,0.2\n", "appears twice"),
    ("id,fraction\nx,0.5\n", "pair_id"),
])
def test_vote_csv_errors_name_row_and_column(tmp_path, content, message):
    path = tmp_path / "votes.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        gmad.import_votes(path)


def test_votes_for_unknown_pairs_are_rejected(tmp_path):
    _, scores = _synthetic(n=50)
    pairs = gmad.select_pairs(scores, 2)
    path = tmp_path / "votes.csv"
    path.write_text("pair_id,fraction,n\nsomebody__else__L0,0.5,10\n")
    with pytest.raises(ValueError, match="not in this gMAD run"):
        gmad.apply_votes(pairs, gmad.import_votes(path))


# --------------------------------------------------------------------------------------------- settings + stage
def _params(**gmad_settings):
    raw = toy_params()
    raw["gmad"] = gmad_settings
    return parse_params(raw, check_models=False)


def test_settings_validation_names_the_key_path():
    from iqalab.stages.gmad import load_settings

    assert load_settings(_params()).levels == 5, "the default dataset may be absent (nothing competes)"
    with pytest.raises(ParamsError, match=r"gmad\.levelz: unknown key"):
        load_settings(_params(levelz=3))
    with pytest.raises(ParamsError, match=r"gmad\.levels"):
        load_settings(_params(levels=0))
    with pytest.raises(ParamsError, match=r"gmad\.dataset: unknown dataset"):
        load_settings(_params(dataset="nope"))
    with pytest.raises(ParamsError, match=r"gmad\.experiments: unknown experiment"):
        load_settings(_params(dataset="toy", experiments=["ghost"]))


TINY = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 8}
STAGE = {"dataset": "toy", "pool_scenes": 3, "renders_per_scene": 4, "image_size": 64, "levels": 3,
         "n_raters": 10, "thumb_size": 32, "batch_size": 16, "device": "cpu"}


def _checkpoint(root, name, kwargs, seed, ds):
    """A checkpoint as the engine writes it (untrained weights drawn from ``seed``) and its prediction JSON:
    building it directly keeps the stage test fast; training is tested in test_engine.py."""
    import torch

    from iqalab.models.registry import build_model
    from iqalab.train.engine import save_checkpoint

    torch.manual_seed(seed)
    model = build_model(kwargs["name"], ds.attributes, **{k: v for k, v in kwargs.items() if k != "name"})
    config = {"model_name": kwargs["name"], "model_kwargs": {k: v for k, v in kwargs.items() if k != "name"},
              "attributes": ds.attributes, "mos_range": list(ds.mos_range), "cache_size": 64, "eval_crop": None,
              "cam_stats": None, "split": "scene", "seed": seed}
    save_checkpoint(root / "build" / "models" / name / "scene" / "best.pt",
                    {"model": model.state_dict(), "config": config})
    meta = root / "results" / "predictions" / f"{name}.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"experiment": name, "splits": ["scene"], "dataset": "toy"}))


@pytest.fixture
def one_thread():
    """Tiny convolutions on a shared 2-core machine run many times faster on one thread (no spin-waiting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def trained(project, toy_dataset, one_thread):
    """Two tiny models with checkpoints where the stage looks for them, and a third one never trained."""
    models = {"small": TINY, "other": {**TINY, "hidden": 4}}
    for seed, (name, kwargs) in enumerate(models.items()):
        _checkpoint(project.root, name, kwargs, seed, toy_dataset)
    raw = toy_params(**{name: {"dataset": "toy", "model": kwargs} for name, kwargs in models.items()},
                     untrained={"dataset": "toy", "model": TINY})
    raw["gmad"] = STAGE
    return project, raw


def test_stage_writes_pairs_matrices_and_figures(trained, tmp_path):
    from iqalab.stages import gmad as stage

    project, raw = trained
    params = project.write_params(raw)
    result = stage.run(params, project.root, progress=False)
    out = project.root / "results" / "gmad"
    pairs = pd.read_csv(out / "pairs.csv")
    assert len(pairs) == 2 * 3 and set(pairs["source"]) == {"panel"}
    assert pairs["p"].between(0, 1).all() and (pairs["ci_low"] <= pairs["p"]).all()
    assert (pairs["attacker_a"] >= pairs["attacker_b"]).all()
    assert all((project.root / p).is_file() for p in pairs["path_a"])
    pool = pd.read_parquet(project.root / "build" / "gmad" / "pool" / "pool.parquet")
    assert len(pool) == 3 * 4 and pool["scene"].str.startswith("pool_").all()
    agg = result["aggressiveness"]
    assert agg.shape == (2, 2) and np.isnan(np.diag(agg.to_numpy())).all()
    expected = pairs.groupby(["attacker", "defender"])["p"].mean()
    assert agg.loc["small", "other"] == pytest.approx(expected.loc[("small", "other")])
    for name in ("aggressiveness.md", "aggressiveness.csv", "resistance.md", "resistance.csv",
                 "votes_template.csv", "summary.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "summary.json").read_text())
    assert set(report["models"]) == {"small", "other"} and report["n_pairs"] == 6
    figs = project.root / "results" / "figures" / "gmad"
    grids = {p.name for p in figs.glob("pairs_*")}
    assert (figs / "matrices.png").is_file() and grids in ({"pairs_small_vs_other.jpg"}, {"pairs_other_vs_small.jpg"})
    assert "untrained" in report["skipped_experiments"]

    # deterministic: a second run reuses the cached pool and writes the same pairs
    mtime = (project.root / "build" / "gmad" / "pool" / "pool.parquet").stat().st_mtime_ns
    stage.run(params, project.root, progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "pairs.csv"), pairs)
    assert (project.root / "build" / "gmad" / "pool" / "pool.parquet").stat().st_mtime_ns == mtime

    # human votes replace the panel: everyone prefers image b
    sheet = pd.read_csv(out / "votes_template.csv")
    sheet["votes_a"], sheet["votes_b"], sheet["votes_equal"] = 0, 12, 0
    sheet.to_csv(tmp_path / "votes.csv", index=False)
    voted = stage.run(project.write_params({**raw, "gmad": {**STAGE, "votes_csv": str(tmp_path / "votes.csv")}}),
                      project.root, progress=False)
    assert (voted["pairs"]["source"] == "csv").all()
    np.testing.assert_allclose(voted["aggressiveness"].to_numpy()[~np.eye(2, dtype=bool)], 0.0)
    np.testing.assert_allclose(voted["resistance"].to_numpy()[~np.eye(2, dtype=bool)], 0.0)


def test_stage_with_one_model_explains_the_skip(project):
    from iqalab.stages import gmad as stage

    params = _params(dataset="toy")
    result = stage.run(params, project.root, progress=False)
    report = json.loads((project.root / "results" / "gmad" / "summary.json").read_text())
    assert "at least two trained models" in report["skipped"] and result["pairs"] is None
    assert not (project.root / "build" / "gmad").exists(), "nothing is rendered when nothing can compete"
