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
def test_defender_levels_are_narrow_bands_not_quantile_bins():
    scores = np.random.default_rng(1).normal(size=1000)
    centres, width = gmad.level_bands(scores, 4, band_width=0.05)
    span = scores.max() - scores.min()
    np.testing.assert_allclose(centres, scores.min() + span * np.array([1, 3, 5, 7]) / 8)
    assert width == pytest.approx(0.05 * span)
    levels = gmad.defender_levels(scores, 4, band_width=0.05)
    for k in range(4):  # every image of level k lies within half a width of its centre
        assert np.all(np.abs(scores[levels == k] - centres[k]) <= width / 2 + 1e-12)
    outside = levels == -1
    assert np.all(np.min(np.abs(scores[outside, None] - centres[None, :]), axis=1) > width / 2)
    counts = np.bincount(levels[levels >= 0], minlength=4)
    assert counts[1] > 3 * counts[0], "the bands hold the defender fixed: the tail bands are sparse, not equal-count"
    # non-finite scores have no level; overlapping bands are refused
    assert gmad.defender_levels(np.array([1.0, 2.0, np.nan]), 1, band_width=1.0)[2] == -1
    with pytest.raises(ValueError, match="overlap"):
        gmad.level_bands(scores, 5, band_width=0.3)


def test_pair_defender_gap_is_below_the_band_width():
    """Issue #27: the defender is held fixed; with quantile bins the tail levels spanned most of the range."""
    truth, scores = _synthetic(n=400)
    scores = {**scores, "skewed": np.exp(2 * truth) + np.random.default_rng(5).normal(0, 1e-3, truth.size)}
    pairs = gmad.select_pairs(scores, levels=5, seed=3, band_width=0.04)
    assert len(pairs) > 0
    span = {name: np.ptp(v) for name, v in scores.items()}
    for row in pairs.itertuples():
        assert row.level_width == pytest.approx(0.04 * span[row.defender])
        assert row.defender_gap == pytest.approx(abs(row.defender_a - row.defender_b))
        assert row.defender_gap <= row.level_width + 1e-12
        assert row.level_lo <= min(row.defender_a, row.defender_b)
        assert max(row.defender_a, row.defender_b) <= row.level_hi


def test_pairs_lie_within_one_defender_level_and_are_the_attackers_extremes():
    truth, scores = _synthetic()
    pairs = gmad.select_pairs(scores, levels=5, seed=3, band_width=0.1)
    assert len(pairs) == 2 * 5 and pairs["pair_id"].is_unique
    for row in pairs.itertuples():
        level_of = gmad.defender_levels(scores[row.defender], 5, band_width=0.1)
        assert level_of[row.idx_a] == level_of[row.idx_b] == row.level
        assert row.idx_a != row.idx_b
        members = np.flatnonzero(level_of == row.level)
        attacker = scores[row.attacker]
        assert attacker[row.idx_a] == attacker[members].max()
        assert attacker[row.idx_b] == attacker[members].min()
        assert row.level_lo <= row.defender_a <= row.level_hi and row.level_lo <= row.defender_b <= row.level_hi
    # both roles are played by every model
    assert set(zip(pairs["attacker"], pairs["defender"])) == {("truth", "noise"), ("noise", "truth")}


def test_levels_invariant_to_affine_rescaling_of_the_defender():
    _, scores = _synthetic()
    rescaled = {"truth": scores["truth"] * 3 + 1, "noise": scores["noise"] * 0.5 - 2}
    a, b = gmad.select_pairs(scores, 4, seed=0), gmad.select_pairs(rescaled, 4, seed=0)
    pd.testing.assert_series_equal(a["image_a"], b["image_a"])
    pd.testing.assert_series_equal(a["image_b"], b["image_b"])


def test_attacker_ties_are_broken_by_the_seed():
    rng = np.random.default_rng(0)
    scores = {"d": rng.normal(size=60), "flat": np.zeros(60)}  # the attacker rates everything equal
    picks = {tuple(gmad.select_pairs(scores, 1, seed=s, band_width=1.0).query("attacker == 'flat'")[["idx_a", "idx_b"]].iloc[0])
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


def test_resistance_rises_with_narrower_bands_for_the_true_defender():
    truth, scores = _synthetic(n=600)
    res = {band: gmad.resistance_matrix(gmad.panel_verdicts(gmad.select_pairs(scores, 2, seed=0, band_width=band),
                                                            truth, 20, 0)).loc["truth", "noise"]
           for band in (0.5, 0.01)}
    assert res[0.01] > res[0.5] + 0.3, "narrower levels hold images of nearly equal true quality"


# --------------------------------------------------------------------------------------------- global ranking
def test_bradley_terry_two_models_hand_computed():
    strength, se = gmad.bradley_terry([[0.0, 30.0], [10.0, 0.0]], prior=0.0)
    np.testing.assert_allclose(strength, [np.log(3) / 2, -np.log(3) / 2], atol=1e-6)
    np.testing.assert_allclose(se, np.sqrt((1 / 30 + 1 / 10) / 4), rtol=1e-6)
    # the prior adds pseudo-wins both ways: 30.5 vs 10.5
    shrunk, _ = gmad.bradley_terry([[0.0, 30.0], [10.0, 0.0]], prior=0.5)
    assert shrunk[0] - shrunk[1] == pytest.approx(np.log(30.5 / 10.5), abs=1e-6)
    undefeated, _ = gmad.bradley_terry([[0.0, 5.0], [0.0, 0.0]])
    assert np.isfinite(undefeated).all() and undefeated[0] > undefeated[1]


def test_bradley_terry_recovers_strengths_and_intervals_shrink_with_votes():
    true = np.array([1.0, 0.2, -0.4, -0.8])
    q = 1 / (1 + np.exp(-(true[:, None] - true[None, :])))
    wins = 200 * q
    np.fill_diagonal(wins, 0)
    strength, se = gmad.bradley_terry(wins, prior=0.0)
    np.testing.assert_allclose(strength, true - true.mean(), atol=1e-5)
    _, se4 = gmad.bradley_terry(4 * wins, prior=0.0)
    np.testing.assert_allclose(se4, se / 2, rtol=1e-4)


def test_global_ranking_puts_the_truth_first_with_intervals():
    truth, scores = _synthetic()
    scores = {**scores, "half": scores["truth"] + np.random.default_rng(2).normal(0, 20, truth.size)}
    pairs = gmad.panel_verdicts(gmad.select_pairs(scores, levels=5, seed=0, band_width=0.1), truth, 20, seed=0)
    ranking = gmad.global_ranking(pairs)
    assert list(ranking.columns) == gmad.RANKING_COLUMNS
    assert ranking.index[0] == "truth" and ranking.loc["truth", "rank"] == 1
    assert ranking.loc["truth", "ci_low"] > ranking.loc["noise", "ci_high"]
    assert (ranking["ci_low"] < ranking["strength"]).all() and (ranking["strength"] < ranking["ci_high"]).all()
    assert ranking["strength"].sum() == pytest.approx(0.0, abs=1e-9)
    counts = gmad.comparison_counts(pairs)
    assert ranking["contests"].sum() == pytest.approx(2 * (pairs["n_votes"]).sum())
    assert counts.loc["truth", "noise"] + counts.loc["noise", "truth"] == pytest.approx(
        pairs.loc[pairs[["attacker", "defender"]].isin(["truth", "noise"]).all(axis=1), "n_votes"].sum())
    assert gmad.global_ranking(pairs.assign(p=np.nan)).empty
    fig = gmad.matrices_figure(gmad.aggressiveness_matrix(pairs), gmad.resistance_matrix(pairs), ranking=ranking)
    panel = fig.axes[2]
    assert panel.get_title() == "global ranking (overall)"
    assert [t.get_text() for t in panel.get_yticklabels()][-1] == "truth", "strongest at the top"
    assert len(gmad.matrices_figure(gmad.aggressiveness_matrix(pairs), gmad.resistance_matrix(pairs)).axes) == 3


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
    with pytest.raises(ParamsError, match=r"gmad\.band_width: .*overlap"):
        load_settings(_params(levels=5, band_width=0.25))
    with pytest.raises(ParamsError, match=r"gmad\.dataset: unknown dataset"):
        load_settings(_params(dataset="nope"))
    with pytest.raises(ParamsError, match=r"gmad\.experiments: unknown experiment"):
        load_settings(_params(dataset="toy", experiments=["ghost"]))


TINY = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 8}
STAGE = {"dataset": "toy", "pool_scenes": 3, "renders_per_scene": 4, "image_size": 64, "levels": 3, "band_width": 0.3,
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
    scores = pd.read_parquet(project.root / "build" / "gmad" / "scores.parquet")
    expected_pairs = sum(int((np.bincount(lv[lv >= 0], minlength=3) >= 2).sum())
                         for lv in (gmad.defender_levels(scores[m], 3, 0.3) for m in ("small", "other")))
    assert 0 < len(pairs) == expected_pairs and set(pairs["source"]) == {"panel"}
    assert (pairs["defender_gap"] <= pairs["level_width"] + 1e-9).all()
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
    assert set(report["models"]) == {"small", "other"} and report["n_pairs"] == len(pairs)
    assert set(report["ranking"]["models"]) == {"small", "other"}
    ranking = pd.read_csv(out / "ranking.csv", comment="#")
    assert set(ranking["model"]) == {"small", "other"} and sorted(ranking["Rank"]) in ([1, 2], [1, 1])
    assert result["ranking"]["strength"].sum() == pytest.approx(0.0, abs=1e-9)
    levels = report["levels"]["defenders"]["small"]
    assert levels["max_defender_gap"] <= levels["level_width"] + 1e-9
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


# ------------------------------------------------------------------ image_folder pool: no silent fallback (issue 21)
GCPF = {"name": "tuningiqa", "backbone": "mobilenetv3_small_050", "human_backbone": "mobilenetv3_small_050",
        "hfe_dim": 16, "embed_dim": 32, "gcpf_dim": 16, "head_hidden": 16, "use_hfe": False, "use_gcpf": True}
HFE = {**GCPF, "use_hfe": True, "use_gcpf": False}


def test_folder_pool_refuses_models_that_need_camera_or_regions_and_captions_the_fallbacks(project, toy_dataset,
                                                                                            one_thread, tmp_path):
    """Image files carry no camera parameters or regions: GCPF under ``missing_camera: refuse`` and HFE without
    ``allow_missing_regions`` are refused in one line each (``iqalab score``'s rules); the models trained to
    accept them missing compete, and the captions say they ran on unknown parameters / fallback regions."""
    import shutil

    from iqalab.stages import gmad as stage

    folder = tmp_path / "folder"
    shutil.copytree(toy_dataset.root / "images", folder)
    models = {"small": TINY, "gcpf_refuse": {**GCPF, "missing_camera": "refuse"},
              "hfe_refuse": HFE, "gcpf_unknown": {**GCPF, "missing_camera": "unknown"},
              "hfe_allowed": {**HFE, "allow_missing_regions": True}}
    for seed, (name, kwargs) in enumerate(models.items()):
        _checkpoint(project.root, name, kwargs, seed, toy_dataset)
    raw = toy_params(**{name: {"dataset": "toy", "model": kwargs} for name, kwargs in models.items()})
    raw["gmad"] = {**STAGE, "image_folder": str(folder)}
    stage.run(project.write_params(raw), project.root, progress=False)
    out = project.root / "results" / "gmad"
    report = json.loads((out / "summary.json").read_text())
    assert sorted(report["competitors"]) == ["gcpf_unknown", "hfe_allowed", "small"]
    assert set(report["refused"]) == {"gcpf_refuse", "hfe_refuse"}
    for name, why in report["refused"].items():
        assert "\n" not in why and why.startswith(f"gmad.image_folder: experiment {name!r}")
    assert "missing_camera: refuse" in report["refused"]["gcpf_refuse"]
    assert "person_box" in report["refused"]["hfe_refuse"] and "allow_missing_regions" in report["refused"]["hfe_refuse"]
    n = len(list(folder.iterdir()))
    assert f"camera parameters unknown on {n} of {n} images" in report["fallback_inputs"]["gcpf_unknown"]
    assert "person_box by the model's whole-image" in report["fallback_inputs"]["hfe_allowed"]
    assert set(report["fallback_inputs"]) == {"gcpf_unknown", "hfe_allowed"}
    scores = pd.read_parquet(project.root / "build" / "gmad" / "scores.parquet")
    assert set(scores.columns) == {"image_id", "small", "gcpf_unknown", "hfe_allowed"}

    sheet = pd.read_csv(out / "votes_template.csv")
    sheet["votes_a"], sheet["votes_b"], sheet["votes_equal"] = 6, 4, 0
    sheet.to_csv(tmp_path / "votes.csv", index=False)
    raw["gmad"] = {**raw["gmad"], "votes_csv": str(tmp_path / "votes.csv")}
    stage.run(project.write_params(raw), project.root, progress=False)
    for table in ("ranking.md", "aggressiveness.md", "resistance.md"):
        caption = (out / table).read_text()
        assert "Scored without inputs the pool lacks: gcpf_unknown: camera parameters unknown" in caption, table
        assert "hfe_allowed: person_box by the model's whole-image / centre-crop fallback" in caption, table
        assert "Refused (the pool lacks inputs they read, no fallback allowed in training or by " \
               "gmad.allow_missing_camera / allow_missing_regions): gcpf_refuse, hfe_refuse" in caption, table

    # the user's opt-ins let the refused models compete on their fallbacks, and the captions name the opt-in
    raw["gmad"] = {**raw["gmad"], "allow_missing_camera": True, "allow_missing_regions": True}
    stage.run(project.write_params(raw), project.root, progress=False)
    report = json.loads((out / "summary.json").read_text())
    assert report["refused"] == {} and len(report["competitors"]) == 5
    assert "(GCPF's learned 'unknown' embedding, gmad.allow_missing_camera)" in report["fallback_inputs"]["gcpf_refuse"]
    assert "(GCPF's learned 'unknown' embedding, missing_camera: unknown)" in report["fallback_inputs"]["gcpf_unknown"]
    assert "fallback on every image (gmad.allow_missing_regions)" in report["fallback_inputs"]["hfe_refuse"]
    assert "fallback on every image (allow_missing_regions)" in report["fallback_inputs"]["hfe_allowed"]
    assert "gcpf_refuse: camera parameters unknown" in (out / "ranking.md").read_text()


def test_screen_inputs_leaves_a_simulator_pool_alone(tmp_path):
    """A simulator pool carries every camera parameter and box column (NaN box = nobody there): nothing is refused
    and no checkpoint is even opened."""
    from iqalab.data.schema import CAM_COLUMNS, FACE_BOX, LANDMARKS, PERSON_BOX
    from iqalab.sim.pools import Pool
    from iqalab.stages.gmad import screen_inputs

    table = pd.DataFrame({"image_id": ["a", "b"], "path": ["a.jpg", "b.jpg"],
                          **{c: [1.0, 2.0] for c in CAM_COLUMNS},
                          **{c: [0.1, np.nan] for c in (*PERSON_BOX, *FACE_BOX, *LANDMARKS)}})
    pool = Pool(table=table, folder=tmp_path, simulated=True)
    assert screen_inputs(pool, {"gcpf": tmp_path / "does_not_exist.pt"}) == ({}, {})


def test_stage_ranking_uses_the_configured_prior(trained, monkeypatch):
    """docs/deviations.md: ``gmad.ranking_prior: 0`` gives the plain Bradley-Terry MLE in the stage's ranking: the
    prior reaches :func:`gmad.bradley_terry`, ``summary.json`` records it, and with two models the log-strengths
    differ by log(a / b) of their votes won (0.5 pseudo-wins each way would give log((a + 0.5) / (b + 0.5)))."""
    from iqalab.stages import gmad as stage

    project, raw = trained
    priors: list[float] = []
    fit = gmad.bradley_terry

    def spy(wins, prior=0.5, *args, **kwargs):
        priors.append(prior)
        return fit(wins, prior, *args, **kwargs)

    monkeypatch.setattr(gmad, "bradley_terry", spy)
    result = stage.run(project.write_params({**raw, "gmad": {**STAGE, "ranking_prior": 0}}), project.root,
                       progress=False)
    assert priors == [0]
    report = json.loads((project.root / "results" / "gmad" / "summary.json").read_text())
    assert report["ranking"]["prior"] == 0
    ranking = result["ranking"]
    a, b = ranking.loc["small", "wins"], ranking.loc["other", "wins"]
    assert a > 0 and b > 0 and abs(np.log(a / b) - np.log((a + 0.5) / (b + 0.5))) > 1e-3
    assert ranking.loc["small", "strength"] - ranking.loc["other", "strength"] == pytest.approx(np.log(a / b),
                                                                                             rel=1e-5, abs=1e-6)
