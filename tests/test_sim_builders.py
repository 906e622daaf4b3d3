"""Simulator builders: valid canonical datasets, seeded byte-identical tables, clear errors on bad options."""

from __future__ import annotations

import json

import numpy as np
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
    assert ds.images["cam_iso"].notna().all()


def test_split_protocols(built):
    fg = built["fglive_sim"].splits
    assert set(fg["split"]) == {"scene"} and set(fg["role"]) == {"train", "val", "test"}
    assert {f"fold_{k}" for k in range(5)} <= set(built["face_sim"].splits["split"])
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
    ugc = read_dataset(built["ugc_sim"].root)
    ugc.images["mos_overall"] = 90.0  # every image Excellent: not KonIQ-like
    rows = {r["key"]: r for r in calibrate(ugc)["targets"]}
    assert not rows["modal_tier_is_middle"]["within"] and not rows["excellent_tier_share"]["within"]
    ugc.meta["simulated"] = False
    assert calibrate(ugc)["targets"] == []
