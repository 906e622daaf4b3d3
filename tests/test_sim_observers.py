"""The virtual panel: MOS tracks ground truth, screening catches careless raters, refinement helps close pairs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from iqalab.sim.camera import auto_params, capture
from iqalab.sim.observers import Panel, combine, sub_qualities, true_quality
from iqalab.sim.scenes import make_scene


@pytest.fixture(scope="module")
def truth():
    return np.random.default_rng(0).uniform(1, 5, size=(240, 2))


@pytest.fixture(scope="module")
def info():
    s = make_scene(np.random.default_rng(1), 64, condition="indoor", person="grace_hopper")
    return capture(s, auto_params(s), np.random.default_rng(0)).info


def plcc(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def test_screened_mos_of_16_raters_correlates_with_truth(truth):
    panel = Panel(n_raters=16, seed=0, min_kept=12)
    votes = panel.vote(truth)
    assert votes.dtype == np.int8 and votes.min() >= 1 and votes.max() <= 5 and votes.shape == (16, 240, 2)
    keep = panel.screen(votes, "bt500")
    mos, std, n = panel.mos(votes, keep)
    assert plcc(mos[:, 0], truth[:, 0]) > 0.9 and plcc(mos[:, 1], truth[:, 1]) > 0.9
    assert np.all(n >= 12) and np.all(std >= 0)


def test_mos_falls_in_accuracy_as_raters_get_noisier(truth):
    scores = []
    for noise in (0.3, 1.0, 2.5):
        panel = Panel(n_raters=16, seed=1, noise=noise, careless=0.0)
        mos, _, _ = panel.mos(panel.vote(truth))
        scores.append(plcc(mos[:, 0], truth[:, 0]))
    assert scores[0] > scores[1] > scores[2]


def test_mos_matches_a_direct_computation(truth):
    panel = Panel(n_raters=6, seed=2, min_kept=1)
    votes = panel.vote(truth[:10])
    keep = np.ones((6, 2), dtype=bool)
    keep[2, 0] = False
    mos, std, n = panel.mos(votes, keep)
    sel = np.delete(votes[:, :, 0], 2, axis=0).astype(float)
    assert np.allclose(mos[:, 0], sel.mean(0)) and np.allclose(std[:, 0], sel.std(0, ddof=1))
    assert np.all(n[:, 0] == 5) and np.all(n[:, 1] == 6)


@pytest.mark.parametrize("method", ["bt500", "pearson"])
def test_screening_rejects_careless_raters(truth, method):
    panel = Panel(n_raters=30, seed=3, careless=0.25, careless_factor=6.0, min_kept=5)
    careless = panel.sd > 3 * np.median(panel.sd)
    assert careless.any()
    keep = panel.screen(panel.vote(truth), method)
    assert keep[careless, 0].mean() < 0.5  # most careless raters removed
    assert keep[~careless, 0].mean() > 0.8  # most careful raters kept


def test_screening_keeps_at_least_min_kept():
    panel = Panel(n_raters=18, seed=0, min_kept=16)
    votes = panel.vote(np.random.default_rng(0).uniform(1, 5, (50, 1)))
    assert panel.screen(votes, "pearson", threshold=0.99).sum() >= 16
    with pytest.raises(ValueError, match="screening method"):
        panel.screen(votes, "median")


def test_refined_pairs_agree_with_truth_more_often_than_mos_order():
    rng = np.random.default_rng(4)
    n_scenes, per_scene = 30, 8
    truth = rng.uniform(2, 4.5, size=(n_scenes * per_scene, 1))
    panel = Panel(n_raters=16, seed=4)
    mos, _, _ = panel.mos(panel.vote(truth, rng), None)
    ids = [f"i{k}" for k in range(len(truth))]
    scenes = [f"s{k // per_scene}" for k in range(len(truth))]
    pairs = panel.pairs(ids, scenes, mos, truth, ["overall"], threshold=0.8, n_judges=5, rng=rng)
    fine = pairs[pairs["fine"]]
    assert len(fine) > 100 and set(fine["p"].unique()) <= {0.0, 0.5, 1.0}
    assert (fine["source"] == "refined").all() and (pairs.loc[~pairs["fine"], "source"] == "mos").all()
    index = {i: k for k, i in enumerate(ids)}
    dt = truth[fine["image_a"].map(index), 0] - truth[fine["image_b"].map(index), 0]
    decided = fine["p"] != 0.5
    refined_ok = np.mean(np.sign(fine["p"][decided] - 0.5) == np.sign(dt[decided]))
    mos_ok = np.mean(np.sign(fine["d_mos"]) == np.sign(dt))
    assert refined_ok > mos_ok


def test_prefer_picks_the_better_capture(info):
    s = make_scene(np.random.default_rng(1), 64, condition="indoor", person="grace_hopper")
    ref = auto_params(s)
    noisy = capture(s, ref.replace(iso=ref.iso * 16, shutter=ref.shutter / 16), np.random.default_rng(0)).info
    panel = Panel(n_raters=16, seed=0)
    p = panel.prefer(info, noisy, "noise", n_raters=25, rng=np.random.default_rng(0))
    assert p > 0.8
    assert panel.prefer(noisy, info, "noise", n_raters=25, rng=np.random.default_rng(0)) < 0.2
    assert 0.2 <= panel.prefer(info, info, "overall", n_raters=40, rng=np.random.default_rng(0)) <= 0.8


def test_jod_scaling_recovers_the_order_and_is_anchored():
    truth = np.linspace(1.5, 4.5, 12)
    panel = Panel(n_raters=16, seed=0, pair_noise=0.3)
    jod, compared = panel.jod_scale(truth, n_judges=8, rng=np.random.default_rng(0))
    assert abs(jod.mean()) < 1e-9 and len(compared) == 66
    assert spearmanr(jod, truth).statistic > 0.95
    wide, _ = panel.jod_scale(truth, n_judges=8, gain=2.0, rng=np.random.default_rng(0))
    assert np.ptp(wide) > np.ptp(jod)  # a stricter scene stretches its scale


def test_true_quality_is_bounded_and_monotone_in_its_cause(info):
    for attr in ("overall", "face", "sharpness", "exposure", "noise", "colorfulness", "contrast", "fidelity",
                 "details"):
        assert 1.0 <= true_quality(info, attr) <= 5.0
    worse = dict(info, noise_std=info["noise_std"] + 20, noise_std_face=info["noise_std_face"] + 20)
    assert true_quality(worse, "noise") < true_quality(info, "noise")
    assert true_quality(worse, "overall") < true_quality(info, "overall")
    blurrier = dict(info, blur=info["blur"] + 4, blur_face=info["blur_face"] + 4)
    assert true_quality(blurrier, "sharpness") < true_quality(info, "sharpness")
    with pytest.raises(ValueError, match="unknown attribute"):
        true_quality(info, "beauty")


def test_overall_is_dominated_by_the_worst_attribute():
    subs = dict.fromkeys(("face", "exposure", "sharpness", "noise", "colorfulness"), 0.9)
    one_bad = dict(subs, noise=0.1)
    arithmetic = 0.15 * 0.1 + 0.85 * 0.9
    assert combine(one_bad, "livestream") < arithmetic
    assert combine(subs, "livestream") == pytest.approx(0.9)
    assert set(sub_qualities({**_neutral_info()})) >= {"face", "noise", "fidelity"}


def _neutral_info():
    return {"param_sharpness": 0.5, "jpeg_rmse": 1.0, "noise_std": 2.0, "blur": 0.5, "halo": 1.0,
            "mean_luma": 0.42, "clipped_hi": 0.0, "clipped_lo": 0.0, "param_contrast": 1.0, "cast": 0.0,
            "param_saturation": 1.0, "ir_mix": 0.0, "veil": 0.0, "hallucination": 0.0}


def test_halo_correlates_attributes_that_are_independent_in_the_truth():
    truth = np.random.default_rng(0).uniform(1.5, 4.5, size=(400, 2))
    off = Panel(n_raters=20, seed=0, halo_pull=0.0, halo_sd=0.0)
    on = Panel(n_raters=20, seed=0, halo_pull=0.3, halo_sd=0.4)
    r_off = plcc(*off.mos(off.vote(truth))[0].T)
    r_on = plcc(*on.mos(on.vote(truth))[0].T)
    assert abs(plcc(truth[:, 0], truth[:, 1])) < 0.1 and r_on > r_off + 0.1


def test_range_effect_a_better_set_is_judged_against_itself():
    truth = np.random.default_rng(1).uniform(1.5, 3.5, size=(300, 1))
    panel = Panel(n_raters=20, seed=1, context=0.4, careless=0.0)
    low = panel.mos(panel.vote(truth))[0].mean()
    high = panel.mos(panel.vote(truth + 1.0))[0].mean()
    assert 0.35 < high - low < 0.85  # a set one point better reads only ~(1 - context) points better


def test_vote_spread_is_widest_mid_scale():
    panel = Panel(n_raters=40, seed=2, careless=0.0, spread_mid=0.6, halo_sd=0.0)
    mid = panel.mos(panel.vote(np.full((200, 1), 3.0)))[1].mean()
    top = panel.mos(panel.vote(np.concatenate([np.full((100, 1), 4.2), np.full((100, 1), 1.8)])))[1].mean()
    assert mid > 1.1 * top  # equal within 2 % without the level-dependent spread


def test_vote_outliers_are_removed_from_the_mos_and_counted():
    """BT.500 vote-level removal (SFIQA-Bench Sec. III-B-3): a planted wild vote of a kept rater is flagged, the
    MOS leaves it out, the ratings table marks it, and the summary counts it."""
    from iqalab.sim.observers import ratings_frame, screening_summary

    rng = np.random.default_rng(3)
    truth = rng.uniform(2, 4, size=(60, 2))
    truth[5, 0] = 3.0
    panel = Panel(n_raters=20, seed=0, careless=0.0, noise=0.3)
    votes = panel.vote(truth, rng=rng)
    keep = panel.screen(votes, method="bt500")
    votes[:, 5, 0] = np.tile([2, 3, 3, 4], 5)  # a near-normal spread of votes on image 5 ...
    rater = int(np.flatnonzero(keep[:, 0] & (votes[:, 5, 0] == 3))[0])
    votes[rater, 5, 0] = 5  # ... and one wild vote
    dropped = panel.outlier_votes(votes, keep)
    assert dropped[rater, 5, 0]
    assert not dropped[~keep[:, None, :].repeat(60, axis=1)].any()  # rejected raters' votes: not counted twice
    mos, _, n = panel.mos(votes, keep, dropped)
    used = keep[:, 0] & ~dropped[:, 5, 0]
    assert mos[5, 0] == pytest.approx(votes[used, 5, 0].mean()) and n[5, 0] == used.sum() < keep[:, 0].sum()
    frame = ratings_frame(votes, keep, [f"i{i}" for i in range(60)], ["a", "b"], dropped)
    assert int(frame["outlier"].sum()) == int(dropped.sum())
    assert not frame.loc[frame["outlier"], "kept"].any()
    summary = screening_summary(keep, dropped, ["a", "b"], "bt500")
    assert summary["votes_removed"] == int(dropped.sum()) >= 1
    assert summary["raters_rejected"] == {"a": int((~keep[:, 0]).sum()), "b": int((~keep[:, 1]).sum())}
    assert 0 < summary["votes_removed_share"] < 0.05
