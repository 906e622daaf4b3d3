"""Simulator builders: valid canonical datasets, seeded byte-identical tables, clear errors on bad options."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from iqalab.data.schema import FACE_BOX, LANDMARKS, read_dataset
from iqalab.sim.builders import BUILDERS, PAPER_SIZES, build, builder_options, scene_pool

TINY = {
    "fglive_sim": {"n_scenes": 4, "images_per_scene": 4, "image_size": 48, "n_raters": 16},
    "portrait_sim": {"n_scenes": 4, "images_per_scene": 5, "image_size": 48, "n_raters": 16},
    "face_sim": {"n_scenes": 10, "images_per_scene": 2, "image_size": 40, "n_raters": 16},
    "ugc_sim": {"n_images": 20, "image_size": 48, "n_raters": 16, "n_splits": 3},
}
ATTRIBUTES = {
    "fglive_sim": ["overall", "face", "sharpness", "exposure", "noise"],
    "portrait_sim": ["overall", "exposure", "details"],
    "face_sim": ["noise", "sharpness", "colorfulness", "contrast", "fidelity", "overall"],
    "ugc_sim": ["overall"],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    return {name: build(name, root / name, seed=0, **TINY[name]) for name in BUILDERS}


@pytest.mark.parametrize("name", sorted(TINY))
def test_builder_writes_a_valid_canonical_dataset(built, name):
    ds = read_dataset(built[name].root, check_files=True)
    assert ds.attributes == ATTRIBUTES[name]
    assert ds.meta["simulated"] is True and ds.meta["source"] == "simulator"
    assert ds.meta["generator"]["builder"] == name
    lo, hi = ds.mos_range
    for attr in ds.attributes:
        values = ds.images[f"mos_{attr}"]
        assert values.between(lo, hi).all() and values.std() > 0
    for col in (*FACE_BOX, *LANDMARKS):
        values = ds.images[col].dropna()
        assert values.between(0, 1).all()
    assert ds.images["path"].str.endswith(".jpg").all()
    assert ds.images["cam_iso"].notna().all()  # EXIF always carries the exposure triplet


def test_split_protocols(built):
    fg = built["fglive_sim"].splits
    assert set(fg["split"]) == {"scene"} and set(fg["role"]) == {"train", "val", "test"}
    assert {f"fold_{k}" for k in range(5)} <= set(built["face_sim"].splits["split"])
    face = built["face_sim"]
    folds = face.splits[face.splits["split"].str.startswith("fold_")].merge(face.images[["image_id", "scene"]])
    # whole scenes per role (a scene's images share face and background): no sibling straddles train and test
    assert folds.groupby(["split", "scene"])["role"].nunique().max() == 1
    tested = folds[folds["role"] == "test"]
    assert tested["image_id"].is_unique and set(tested["image_id"]) == set(face.images["image_id"])
    assert {"random_00", "random_01", "random_02"} == set(built["ugc_sim"].splits["split"])
    assert "scene" in set(built["portrait_sim"].splits["split"])


def test_fglive_votes_and_fine_pairs(built):
    ds = built["fglive_sim"]
    assert len(ds.ratings) == 16 * len(ds.images) * 5  # every vote is kept
    assert ds.ratings["score"].between(1, 5).all()
    assert (ds.images["n_overall"] <= 16).all() and (ds.images["n_overall"] >= 14).all()
    fine = ds.pairs[ds.pairs["fine"]]
    assert len(fine) > 0 and set(fine["p"].unique()) <= {0.0, 0.5, 1.0}
    assert (fine["source"] == "refined").all() and (fine["d_mos"].abs() <= 0.8).all()
    scene_of = ds.images.set_index("image_id")["scene"]
    assert (ds.pairs["image_a"].map(scene_of) == ds.pairs["image_b"].map(scene_of)).all()
    assert ds.images["face_x0"].notna().all()  # every livestream image has a known face


def test_portrait_scores_are_anchored_per_scene(built):
    ds = built["portrait_sim"]
    means = ds.images.groupby("scene")["mos_overall"].mean()
    assert np.allclose(means, 0.0, atol=1e-6)
    assert set(ds.images["condition"]) <= {"outdoor", "indoor", "lowlight", "night"}


def test_face_sim_scenarios(built):
    assert set(built["face_sim"].images["condition"]) == {"indoor", "outdoor", "vehicle"}


def test_same_seed_gives_identical_tables_and_new_seed_differs(built, tmp_path):
    again = build("fglive_sim", tmp_path / "again", seed=0, **TINY["fglive_sim"])
    other = build("fglive_sim", tmp_path / "other", seed=1, **TINY["fglive_sim"])
    first = json.loads((built["fglive_sim"].root / "dataset.json").read_text())["checksums"]
    same = json.loads((again.root / "dataset.json").read_text())["checksums"]
    diff = json.loads((other.root / "dataset.json").read_text())["checksums"]
    assert first == same
    assert all(first[k] != diff[k] for k in ("images.parquet", "ratings.parquet", "pairs.parquet"))
    read_dataset(other.root, check_files=True)
    for path in sorted((again.root / "images").iterdir())[:3]:
        assert path.read_bytes() == (built["fglive_sim"].root / "images" / path.name).read_bytes()


def test_unknown_options_and_builders_are_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="unknown option.*n_scene"):
        build("fglive_sim", tmp_path / "x", n_scene=3)
    with pytest.raises(KeyError, match="unknown simulator builder"):
        build("koniq_sim", tmp_path / "y")
    for name, sizes in PAPER_SIZES.items():
        assert set(sizes) <= set(builder_options(name))


def test_scene_pool_is_seeded_and_has_people():
    pool = scene_pool(3, seed=0, image_size=40)
    again = scene_pool(3, seed=0, image_size=40)
    assert len(pool) == 3 and all(s.face_box is not None for s in pool)
    assert np.array_equal(pool[0].background, again[0].background)
    assert [s.condition for s in scene_pool(3, seed=0, image_size=32, kind="face")] == ["indoor", "outdoor",
                                                                                       "vehicle"]


def test_parameter_sweep_figure_and_iso_sweep_at_fixed_exposure():
    import matplotlib

    matplotlib.use("Agg")
    from iqalab.sim.builders import SWEEPS, parameter_sweep, plot_parameter_sweep

    sweeps = parameter_sweep(seed=0, image_size=40, params=("iso",))
    noise = [info["noise_std"] for _, info, _ in sweeps["iso"]]
    evs = {round(info["exposure_ev"], 6) for _, info, _ in sweeps["iso"]}
    assert noise == sorted(noise) and len(evs) == 1
    fig = plot_parameter_sweep(seed=0, image_size=32)
    assert len(fig.axes) == len(SWEEPS) * 5


def test_calibration_report_lists_every_target_and_flags_a_miss(built, tmp_path):
    from iqalab.sim.calibration import calibrate, write_calibration

    for name, ds in built.items():
        result = write_calibration(read_dataset(ds.root), tmp_path)
        assert result["simulated"] and result["builder"] == name and result["n"] >= 2
        saved = json.loads((tmp_path / f"{name}.json").read_text())
        assert saved["within"] == sum(r["within"] for r in saved["targets"])
        assert (tmp_path / f"{name}.md").read_text().count("\n| ") == result["n"] + 1
        for row in result["targets"]:
            lo, hi = row["tolerance"]
            assert row["within"] == (row["simulated"] is not None and lo <= row["simulated"] <= hi)
        images = read_dataset(ds.root).images
        summary = result["content"]
        unit = "scene" if "scene" in images.columns else "image_id"
        assert summary["n"] == images[unit].nunique() and summary["hdr"] <= summary["n"]
        persons = images.loc[images["sim_person"] != "", "sim_person"]
        assert summary["identities"] == persons.nunique() and summary["with_person"] <= summary["n"]
        assert f"{summary['identities']} identities" in (tmp_path / f"{name}.md").read_text()
    face = calibrate(read_dataset(built["face_sim"].root))["content"]
    assert face["lfw_identities"] >= 1 and face["with_lfw_face"] >= face["lfw_identities"]
    ugc = read_dataset(built["ugc_sim"].root)
    ugc.images["mos_overall"] = 90.0  # every image Excellent: not KonIQ-like
    rows = {r["key"]: r for r in calibrate(ugc)["targets"]}
    assert not rows["modal_tier_is_middle"]["within"] and not rows["excellent_tier_share"]["within"]
    ugc.meta["simulated"] = False
    assert calibrate(ugc)["targets"] == []


def _close_pair_share(quality: np.ndarray, threshold: float = 0.8) -> float:
    a, b = np.triu_indices(len(quality), k=1)
    return float(np.mean(np.abs(quality[a] - quality[b]) <= threshold))


def test_graded_deviations_spread_a_scene_over_distinct_levels():
    """TuningIQA: 21 % of within-scene pairs lie within 0.8 MOS; graded deviations leave fewer close pairs (in
    the ground truth of the full renders) than independent ones on the same scenes, and keep the reference."""
    from iqalab.sim.builders import _graded_deviations, _random_deviations, _stream
    from iqalab.sim.camera import auto_params, capture
    from iqalab.sim.observers import true_quality
    from iqalab.sim.scenes import make_scene

    shares = {"graded": [], "random": []}
    for s in range(2):
        rng = _stream(s, "test_graded")
        scene = make_scene(rng, 64, condition="indoor", person="any", name=f"g{s}")
        ref = auto_params(scene, sharpness=0.6, jpeg_quality=92)
        for design in shares:
            picked = (_graded_deviations(scene, ref, rng, 7, level_step=1.2, pool=4, preview_size=32)
                      if design == "graded" else _random_deviations(ref, rng, 7))
            assert len(picked) == 7
            q = np.array([true_quality(capture(scene, p, rng).info, "overall") for p in [ref, *picked]])
            shares[design].append(_close_pair_share(q))
    assert np.mean(shares["graded"]) < np.mean(shares["random"]) - 0.05
    assert np.mean(shares["graded"]) < 0.3


def test_fglive_rejects_an_unknown_deviation_design(tmp_path):
    with pytest.raises(ValueError, match="deviations"):
        build("fglive_sim", tmp_path / "x", deviations="sweep", **TINY["fglive_sim"])


def test_fglive_metadata_missing_blanks_whole_scenes(tmp_path):
    """FineLive-p (TuningIQA): only part of FGLive-10K keeps all 7 parameters; blanking is per scene, ISP-side."""
    from iqalab.data.schema import CAM_COLUMNS

    opts = {**TINY["fglive_sim"], "n_scenes": 6, "images_per_scene": 2}
    ds = build("fglive_sim", tmp_path / "m", seed=0, metadata_missing=0.5, **opts)
    complete = ds.images[list(CAM_COLUMNS)].notna().all(axis=1)
    per_scene = complete.groupby(ds.images["scene"]).agg(["all", "any"])
    assert (per_scene["all"] == per_scene["any"]).all()  # a scene logs its settings or not
    assert (~per_scene["all"]).sum() == 3
    assert ds.images[["cam_aperture", "cam_shutter", "cam_iso"]].notna().all().all()
    assert ds.meta["generator"]["metadata"]["images_incomplete"] == int((~complete).sum()) == 6
    none = build("fglive_sim", tmp_path / "n", seed=0, metadata_missing=0.0, **opts)
    assert none.images[list(CAM_COLUMNS)].notna().all().all()
    with pytest.raises(ValueError, match="metadata_missing"):
        build("fglive_sim", tmp_path / "x", seed=0, metadata_missing=1.5, **opts)


def test_screening_removals_are_recorded_in_dataset_json(built):
    """Where votes become MOS, what screening removed is in dataset.json and matches the ratings table."""
    for name in ("fglive_sim", "face_sim", "ugc_sim"):
        ds = built[name]
        removed = json.loads((ds.root / "dataset.json").read_text())["generator"]["screening_removed"]
        ratings = ds.ratings
        assert removed["votes_removed"] == int(ratings["outlier"].sum())
        rejected = (~ratings.groupby(["attribute", "rater"])["kept"].any()).groupby(level=0).sum()
        assert removed["raters_rejected"] == {a: int(rejected.get(a, 0)) for a in ds.attributes}
        n = ds.images[[f"n_{a}" for a in ds.attributes]].to_numpy().sum()
        assert n == int(ratings["kept"].sum())
    assert json.loads((built["face_sim"].root / "dataset.json").read_text())["generator"][
        "screening_removed"]["vote_outliers_removed"] is True


def test_hdr_share_is_a_checked_option_that_changes_only_what_it_should(tmp_path):
    opts = {**TINY["ugc_sim"], "n_images": 4}
    plain = build("ugc_sim", tmp_path / "p", seed=0, hdr_share=0.0, **opts)
    hdr = build("ugc_sim", tmp_path / "h", seed=0, hdr_share=1.0, **opts)
    assert hdr.meta["generator"]["hdr_share"] == 1.0
    assert hdr.images["sim_hdr"].astype(bool).all() and not plain.images["sim_hdr"].astype(bool).any()
    # the scenes change (brighter backgrounds, lamps: other renders); the mean clipped share over 4 images is no
    # test of that, since an over-exposed draw of either build outweighs it
    assert (hdr.images["sim_mean_luma"] != plain.images["sim_mean_luma"]).all()
    assert plain.images["cam_aperture"].tolist() == hdr.images["cam_aperture"].tolist()  # own stream
    with pytest.raises(ValueError, match="hdr_share"):
        build("ugc_sim", tmp_path / "x", seed=0, hdr_share=2.0, **opts)


def test_default_builds_vary_people_skin_tones_and_light(built):
    """Issue #23 content in the default builders: HDR scenes on by default, skin tones drawn over the levels,
    face_sim mixing the LFW identities with the photographs, and every image saying what it shows."""
    from iqalab.sim.builders import DEFAULT_HDR_SHARE
    from iqalab.sim.scenes import LFW_IDENTITIES, LFW_SHARE, PERSONS, SKIN_TONES

    for name in ("fglive_sim", "portrait_sim", "ugc_sim"):
        assert builder_options(name)["hdr_share"] == DEFAULT_HDR_SHARE > 0
        assert built[name].meta["generator"]["hdr_share"] == DEFAULT_HDR_SHARE
    images = built["fglive_sim"].images
    assert set(images["sim_skin_tone"]) <= set(SKIN_TONES) and images["sim_skin_tone"].nunique() >= 2
    assert set(images["sim_person"]) <= set(PERSONS) and images["sim_roll_deg"].abs().max() <= 12.0
    assert images["sim_roll_deg"].nunique() == images["scene"].nunique()  # one roll per scene
    faces = built["face_sim"].images.groupby("scene")["sim_person"].first()
    assert faces.isin(LFW_IDENTITIES).any() and faces.isin(list(PERSONS)).any()
    assert built["face_sim"].meta["generator"]["lfw_share"] == LFW_SHARE
    ugc = built["ugc_sim"].images
    assert (ugc["sim_person"] == "").any() and (ugc["sim_person"] != "").any()
    with pytest.raises(ValueError, match="lfw_share"):
        build("face_sim", built["face_sim"].root.parent / "bad", seed=0, lfw_share=1.5, **TINY["face_sim"])


#: columns measured on the rendered image (exposure of the pixels, noise, clipping, contrast, colour, halo, JPEG
#: error): an HDR scene's brighter background and lamps change them by design
_RENDER_MEASURED = ("sim_noise_std", "sim_mean_luma", "sim_clipped", "sim_sensor_clipped", "sim_contrast_rms",
                    "sim_colourfulness", "sim_halo", "sim_jpeg_rmse", "sim_chroma_log_ratio")
#: what a scene draws before any shot: who and what it shows, its light (the same whatever the HDR draw)
_SCENE_DRAWS = ("scene", "sim_person", "sim_skin_tone", "sim_roll_deg", "sim_has_person", "sim_has_face",
                "sim_scene_cct")


@pytest.mark.parametrize(("name", "extra"), [("ugc_sim", {}), ("portrait_sim", {}), ("fglive_sim", {}),
                                             ("fglive_sim", {"deviations": "random"})])
def test_hdr_share_zero_changes_no_other_draw(tmp_path, name, extra):
    """README: ``hdr_share: 0`` "turns it off without changing any other draw". Between hdr_share 0 and 0.25 (same
    seed): every scene, cam_* and sim_* column of the non-HDR scenes is identical, and so is every drawn column
    of the HDR scenes (all but sim_hdr and the render measurements). fglive_sim's default graded sweep is the
    exception for HDR scenes: it previews each scene's random deviations and keeps those filling its quality
    levels, so an HDR scene keeps other camera settings (the draws are the same: with ``deviations: random``
    every camera column of the HDR scenes is equal too)."""
    opts = {**TINY[name], **extra}
    off = build(name, tmp_path / "off", seed=0, hdr_share=0.0, **opts).images
    on = build(name, tmp_path / "on", seed=0, hdr_share=0.25, **opts).images
    hdr = on["sim_hdr"].astype(bool).to_numpy()
    assert not off["sim_hdr"].any() and 0 < hdr.sum() < len(hdr), "both kinds of scene, or the test proves nothing"
    assert off["image_id"].tolist() == on["image_id"].tolist()
    compared = [c for c in off.columns if (c == "scene" or c.startswith(("cam_", "sim_"))) and c != "sim_hdr"]
    assert len([c for c in compared if c.startswith("cam_")]) == 7 and len(compared) > 40
    same = off[compared].iloc[~hdr].reset_index(drop=True)
    pd.testing.assert_frame_equal(same, on[compared].iloc[~hdr].reset_index(drop=True))
    drawn = [c for c in compared if not c.startswith(_RENDER_MEASURED)]
    if name == "fglive_sim" and opts.get("deviations", "graded") == "graded":
        drawn = [c for c in drawn if c in _SCENE_DRAWS]
    pd.testing.assert_frame_equal(off[drawn].iloc[hdr].reset_index(drop=True),
                                  on[drawn].iloc[hdr].reset_index(drop=True))
    # the HDR scenes did change: every one of their renders measures differently
    measured = [c for c in compared if c.startswith(_RENDER_MEASURED)]
    assert (off[measured].iloc[hdr].to_numpy() != on[measured].iloc[hdr].to_numpy()).any(axis=1).all()
