"""Stage ``annotation_stats``: JSON content against known answers, figures written (and labelled), analyses
skipped with a reason when a dataset lacks their inputs, and the figure helpers' selections."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqalab.analysis import annotation
from iqalab.analysis.annotation import sweep_selection
from iqalab.data.schema import Dataset, read_dataset, write_dataset
from iqalab.data.splits import scene_split
from iqalab.stages import annotation_stats as stage

from .conftest import toy_params

PLANTED = "r_random"


def _strict_json(path: Path) -> dict:
    """Parse JSON refusing NaN/Infinity (what ``allow_nan=False`` readers and ``dvc metrics`` expect)."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} contains {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _params(project, name: str):  # noqa: ANN202
    raw = toy_params()
    raw["datasets"] = {name: {"source": "toy", "builder": "toy", "cache_size": 64}}
    return project.write_params(raw)


def synthetic_dataset(root: Path, attributes: tuple[str, ...] = ("overall", "sharpness", "noise"),
                      n_scenes: int = 6, per_scene: int = 8, ratings: bool = True, pairs: bool = True,
                      conditions: bool = True, camera: bool = True, seed: int = 0) -> Dataset:
    """Tiny images with a known structure: ``overall = 0.5 + 0.4 sharpness + 0.5 noise`` (true quality),
    10 noisy raters plus one random rater that the dataset's screening removed (``kept`` false), MOS = mean of
    the kept votes, ISO varying within each scene, and fine pairs between neighbours of a scene."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, truth = [], []
    for s in range(n_scenes):
        for k in range(per_scene):
            image_id = f"s{s}_{k}"
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / f"images/{image_id}.png")
            sharp, noise = rng.uniform(1, 5, 2)
            true = {"sharpness": sharp, "noise": noise, "overall": 0.5 + 0.4 * sharp + 0.5 * noise,
                    "quality": 0.5 + 0.4 * sharp + 0.5 * noise}
            truth.append({a: true[a] for a in attributes})
            rows.append({"image_id": image_id, "path": f"images/{image_id}.png", "scene": f"scene{s}",
                         "condition": ("day" if s % 2 else "night") if conditions else None, "width": 8,
                         "height": 8, "cam_iso": float(100 * 2 ** (k % 4)) if camera else np.nan,
                         "cam_shutter": 0.01 if camera else np.nan})
    images = pd.DataFrame(rows)
    votes = []
    raters = [f"r{i:02d}" for i in range(10)]
    bias = dict(zip(raters, rng.normal(0, 0.3, len(raters))))
    for image_id, true in zip(images["image_id"], truth):
        for attr in attributes:
            for rater in raters:
                score = np.clip(np.rint(true[attr] + bias[rater] + rng.normal(0, 0.5)), 1, 5)
                votes.append((image_id, rater, attr, float(score), True))
            votes.append((image_id, PLANTED, attr, float(rng.integers(1, 6)), False))
    vote_table = pd.DataFrame(votes, columns=["image_id", "rater", "attribute", "score", "kept"])
    kept = vote_table[vote_table["kept"]]
    stats = kept.groupby(["image_id", "attribute"])["score"].agg(["mean", "std", "count"]).unstack()
    for attr in attributes:
        images[f"mos_{attr}"] = images["image_id"].map(stats["mean"][attr])
        images[f"std_{attr}"] = images["image_id"].map(stats["std"][attr])
        images[f"n_{attr}"] = images["image_id"].map(stats["count"][attr])
    pair_rows = []
    for s in range(n_scenes):
        for k in range(per_scene - 1):
            a, b = f"s{s}_{k}", f"s{s}_{k + 1}"
            p = {0: 1.0, 1: 0.0, 2: 0.5}[k % 3]  # preference for a; compared with the MOS order in the test
            pair_rows.append({"image_a": a, "image_b": b, "attribute": attributes[0], "p": p,
                              "source": "refined", "fine": True})
    pair_rows.append({"image_a": "s0_0", "image_b": "s1_0", "attribute": attributes[0], "p": 1.0,
                      "source": "mos", "fine": False})
    ds = Dataset(root=root, meta={"name": root.name, "attributes": list(attributes), "mos_range": [1.0, 5.0],
                                  "source": "test", "simulated": False},
                 images=images, splits=scene_split(images, test_fraction=0.34, val_fraction=0.17, seed=seed),
                 pairs=pd.DataFrame(pair_rows) if pairs else None, ratings=vote_table if ratings else None)
    write_dataset(ds)
    return read_dataset(root)


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset, dict]:
    """The stage run once on the full synthetic dataset (ratings, pairs, conditions, camera)."""
    from iqalab.config import parse_params

    root = tmp_path_factory.mktemp("synthetic_project")
    ds = synthetic_dataset(root / "build" / "datasets" / "synth")
    raw = toy_params()
    raw["datasets"] = {"synth": {"source": "toy", "builder": "toy"}}
    report = stage.run(parse_params(raw, check_models=False), "synth", root)
    return root, ds, report


# ------------------------------------------------------------------------------------------------ toy
def test_toy_stage_writes_strict_json_and_labelled_figures(toy_dataset: Dataset, project,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = _params(project, "toy")
    labels: dict[str, list[str]] = {}
    original_save = stage.save

    def recording_save(fig, stem, *args, **kwargs):  # noqa: ANN001, ANN202
        labels[Path(stem).name] = [t.get_text() for t in fig.texts]
        return original_save(fig, stem, *args, **kwargs)

    monkeypatch.setattr(stage, "save", recording_save)
    report = stage.run(params, "toy", project.root)

    on_disk = _strict_json(project.root / "results" / "stats" / "toy.json")
    assert on_disk == report
    # every figure listed exists as PNG and PDF (the photographic montage as JPEG), and the toy set (simulated:
    # true) is labelled on each
    assert set(report["figures"]) >= {"mos_distributions", "attribute_scatter", "attribute_correlation",
                                      "ols_coefficients", "ols_residuals", "camera_mos", "parameter_sweep"}
    for name, paths in report["figures"].items():
        expected = [".jpg"] if name == "parameter_sweep" else [".pdf", ".png"]
        assert sorted(Path(p).suffix for p in paths) == expected, name
        assert all((project.root / p).stat().st_size > 1000 for p in paths)
        assert any("simulated data" in text for text in labels[name]), name
    # toy has no ratings or pairs: those analyses are skipped with a reason
    for section in ("raters", "bt500", "mos_ci", "pairs"):
        assert section in report["skipped"] and section not in report
    assert "conditions" in report["skipped"]  # toy conditions are all null

    # OLS equals a plain least-squares solve; the PLCC matrix equals pandas'
    images = toy_dataset.images
    design = np.column_stack([np.ones(len(images)), images["mos_sharpness"], images["mos_noise"]])
    coef, *_ = np.linalg.lstsq(design, images["mos_overall"].to_numpy(), rcond=None)
    terms = report["ols"]["raw"]["terms"]
    got = [terms["const"]["coef"], terms["sharpness"]["coef"], terms["noise"]["coef"]]
    np.testing.assert_allclose(got, coef, rtol=1e-8, atol=1e-10)
    for term in ("sharpness", "noise"):
        assert terms[term]["ci_low"] < terms[term]["coef"] < terms[term]["ci_high"]
    expected = images[["mos_overall", "mos_sharpness", "mos_noise"]].corr()
    for a in ("overall", "sharpness", "noise"):
        for b in ("overall", "sharpness", "noise"):
            assert report["correlation"]["plcc"][a][b] == pytest.approx(expected.loc[f"mos_{a}", f"mos_{b}"],
                                                                        abs=1e-12)
    # the toy's ISO rises with noise: its SRCC with the noise attribute (higher = cleaner) is strongly negative
    assert report["camera"]["srcc"]["iso"]["noise"] < -0.8


def test_stale_figures_are_removed_and_other_files_kept(toy_dataset: Dataset, project) -> None:
    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = _params(project, "toy")
    fig_dir = project.root / "results" / "figures" / "toy"
    fig_dir.mkdir(parents=True)
    (fig_dir / "pair_refinement.png").write_bytes(b"old")
    (fig_dir / "notes.txt").write_text("keep me")
    report = stage.run(params, "toy", project.root)
    assert not (fig_dir / "pair_refinement.png").exists()
    assert (fig_dir / "notes.txt").exists()
    assert {p.stem for p in [*fig_dir.glob("*.png"), *fig_dir.glob("*.jpg")]} == set(report["figures"])


def test_unknown_dataset_name_is_refused(project) -> None:
    from iqalab.config import ParamsError

    params = _params(project, "toy")
    with pytest.raises(ParamsError, match="unknown dataset"):
        stage.run(params, "nope", project.root)


# ------------------------------------------------------------------------------------------------ synthetic
def test_rater_sections_on_synthetic_votes(synthetic_report: tuple[Path, Dataset, dict]) -> None:
    root, ds, report = synthetic_report
    assert not {"raters", "bt500", "mos_ci", "pairs", "ols"} & set(report["skipped"])
    assert {"rater_vs_mos", "bt500_screening", "mos_confidence", "pair_refinement"} <= set(report["figures"])

    raters = report["raters"]["attributes"]["overall"]
    assert raters["n_raters"] == 11 and raters["n_raters_kept"] == 10
    tiers = raters["tiers"]
    assert report["raters"]["tiers"] == ["1-1.8", "1.8-2.6", "2.6-3.4", "3.4-4.2", "4.2-5"]
    # TuningIQA Fig. 5's finding holds by construction: agreement over all images beats agreement in any tier
    assert tiers["all"]["mean_plcc"] > 0.7
    within = [v["mean_plcc"] for k, v in tiers.items() if k != "all" and v["mean_plcc"] is not None]
    assert within and max(within) < tiers["all"]["mean_plcc"]

    assert report["bt500"]["dataset_screening_removed"]["overall"] == [PLANTED]
    assert set(report["bt500"]["raters"]) == {*(f"r{i:02d}" for i in range(10)), PLANTED}

    # the MOS is the mean of the kept votes, so the CI table reproduces it exactly; half-widths match scipy's t
    ci = report["mos_ci"]["attributes"]["overall"]
    assert ci["max_abs_diff_vs_table_mos"] == pytest.approx(0.0, abs=1e-12)
    from scipy import stats as sps

    expected = (sps.t.ppf(0.975, 9) * ds.images["std_overall"] / math.sqrt(10)).mean()
    assert ci["mean_half_width"] == pytest.approx(expected, rel=1e-9)

    # OLS on the MOS recovers the generating weights (0.4, 0.5) to within rater noise
    terms = report["ols"]["raw"]["terms"]
    assert terms["sharpness"]["coef"] == pytest.approx(0.4, abs=0.12)
    assert terms["noise"]["coef"] == pytest.approx(0.5, abs=0.12)
    assert report["ols"]["raw"]["r2"] > 0.8
    assert report["ols"]["standardised"]["standardised"] is True and "const" not in report["ols"]["standardised"]["terms"]
    # Eq. 1 as printed (no intercept) beside it, with both R^2: the uncentred one is the larger
    bare = report["ols"]["no_intercept"]
    assert bare["intercept"] is False and report["ols"]["raw"]["intercept"] is True
    assert set(bare["terms"]) == {"sharpness", "noise"} and "const" in report["ols"]["raw"]["terms"]
    assert bare["r2"] <= report["ols"]["raw"]["r2"] + 1e-12 and bare["r2_uncentered"] > bare["r2"]


def test_pair_and_camera_sections_on_synthetic(synthetic_report: tuple[Path, Dataset, dict]) -> None:
    root, ds, report = synthetic_report
    pairs = ds.pairs
    fine = pairs[pairs["fine"]]
    mos = ds.images.set_index("image_id")["mos_overall"]
    sign = np.sign(fine["image_a"].map(mos).to_numpy() - fine["image_b"].map(mos).to_numpy())
    pref = np.sign(fine["p"].to_numpy() - 0.5)
    summary = report["pairs"]["summary"]["overall"]
    assert report["pairs"]["n_pairs"] == len(pairs) and report["pairs"]["n_fine"] == len(fine)
    assert report["pairs"]["by_source"] == {"mos/coarse": 1, "refined/fine": len(fine)}
    assert summary["flipped"] == int(((sign != 0) & (pref == -sign)).sum())
    assert summary["tied"] == int(((sign != 0) & (pref == 0)).sum())
    assert summary["agree"] + summary["flipped"] + summary["tied"] + summary["mos_tied"] == len(fine)

    assert report["dataset"]["conditions"] == {"day": 24, "night": 24}
    assert set(report["mos"]["overall"]["by_condition"]) == {"day", "night"}
    # only cam_iso varies (cam_shutter is constant, the rest absent); each scene holds 4 ISO values
    assert report["dataset"]["camera_parameters"] == ["cam_iso"]
    sweep = report["camera"]["sweeps"]["iso"]
    assert sweep["values"] == [100.0, 200.0, 400.0, 800.0] and sweep["other_changes"] == [0, 0, 0, 0]
    assert "parameter_sweep" in report["figures"]


def test_region_rates_and_montage_when_the_dataset_has_boxes(tmp_path: Path) -> None:
    """Issue #21: a dataset with face/person boxes gets detection rates per condition in the JSON and a region
    montage; the rates count the images whose boxes are known."""
    import numpy as np

    from iqalab.config import parse_params
    from iqalab.data.schema import FACE_BOX, PERSON_BOX, write_dataset

    root = tmp_path / "build" / "datasets" / "boxes"
    ds = synthetic_dataset(root, n_scenes=3, per_scene=4, ratings=False, pairs=False, camera=False)
    images = ds.images.copy()
    n = len(images)
    images[list(FACE_BOX)] = np.tile([0.3, 0.2, 0.6, 0.5], (n, 1))
    images[list(PERSON_BOX)] = np.tile([0.1, 0.1, 0.9, 0.95], (n, 1))
    images.loc[images.index[: n // 4], list(FACE_BOX)] = np.nan
    ds.images = images
    write_dataset(ds)
    raw = toy_params()
    raw["datasets"] = {"boxes": {"source": "toy", "builder": "toy"}}
    report = stage.run(parse_params(raw, check_models=False), "boxes", tmp_path)
    overall = next(r for r in report["regions"]["rates"] if r["group"] == "all")
    assert overall["n"] == n and overall["face"] == pytest.approx(1 - (n // 4) / n) and overall["person"] == 1.0
    assert "regions" in report["figures"] and "regions" not in report["skipped"]


@pytest.mark.parametrize("variant", ["single_attribute", "no_overall"])
def test_sparse_datasets_skip_with_reasons(tmp_path: Path, variant: str) -> None:
    from iqalab.config import parse_params

    attributes = ("quality",) if variant == "single_attribute" else ("sharpness", "noise")
    synthetic_dataset(tmp_path / "build" / "datasets" / "sparse", attributes=attributes, n_scenes=3,
                      per_scene=4, ratings=False, pairs=False, conditions=False, camera=False)
    raw = toy_params()
    raw["datasets"] = {"sparse": {"source": "toy", "builder": "toy"}}
    report = stage.run(parse_params(raw, check_models=False), "sparse", tmp_path)
    assert _strict_json(tmp_path / "results" / "stats" / "sparse.json") == report
    expected_skips = {"ols", "raters", "bt500", "mos_ci", "pairs", "camera", "sweep", "conditions", "regions"}
    if variant == "single_attribute":
        expected_skips.add("correlation")
        assert set(report["figures"]) == {"mos_distributions"}
    else:
        assert "no 'overall'" in report["skipped"]["ols"]
        assert set(report["figures"]) == {"mos_distributions", "attribute_scatter", "attribute_correlation"}
    assert set(report["skipped"]) == expected_skips
    table = annotation.summary(report)
    assert {"images", "scenes"} <= set(table["quantity"])


def test_constant_attribute_gives_null_correlations_and_ols_still_runs(tmp_path: Path) -> None:
    ds = synthetic_dataset(tmp_path / "const", n_scenes=3, per_scene=4, ratings=False, pairs=False)
    ds.images["mos_noise"] = 3.0
    result = annotation.analyse(ds)
    report = annotation.jsonable(result.report)
    json.dumps(report, allow_nan=False)
    assert report["correlation"]["plcc"]["overall"]["noise"] is None
    assert report["correlation"]["plcc"]["overall"]["sharpness"] is not None
    assert report["ols"]["raw"]["predictors"] == ["sharpness"]
    assert "noise" in report["ols"]["dropped_constant"]


# ------------------------------------------------------------------------------------------------ helpers
def test_jsonable_converts_numpy_and_non_finite() -> None:
    out = annotation.jsonable({"a": np.float32(1.5), "b": [np.nan, np.inf, np.int64(3)], 4: (np.bool_(True), None),
                          "c": pd.NA})
    assert out == {"a": 1.5, "b": [None, None, 3], "4": [True, None], "c": None}
    assert type(out["b"][2]) is int


def test_sweep_selection_prefers_most_values_then_fewest_other_changes() -> None:
    cam = ["cam_iso", "cam_wb"]
    rows = []
    # scene a: 3 ISO values, one image also changes WB; scene b: 3 ISO values, WB fixed; scene c: 2 ISO values
    for scene, isos, wbs in (("a", [100, 200, 400], [5000, 5000, 3000]), ("b", [100, 200, 400], [5000] * 3),
                             ("c", [100, 800], [5000, 5000])):
        rows += [{"image_id": f"{scene}{k}", "scene": scene, "cam_iso": float(i), "cam_wb": float(w)}
                 for k, (i, w) in enumerate(zip(isos, wbs))]
    images = pd.DataFrame(rows)
    scene, chosen = sweep_selection(images, "cam_iso", cam)
    assert scene == "b" and chosen["cam_iso"].tolist() == [100.0, 200.0, 400.0]
    # a fourth ISO value in scene a outweighs its extra WB change: most distinct values come first
    images = pd.concat([images, pd.DataFrame([{"image_id": "a3", "scene": "a", "cam_iso": 800.0,
                                               "cam_wb": 5000.0}])], ignore_index=True)
    scene, chosen = sweep_selection(images, "cam_iso", cam, max_images=3)
    assert scene == "a" and len(chosen) == 3 and chosen["cam_iso"].is_monotonic_increasing
    assert sweep_selection(images.assign(cam_iso=100.0), "cam_iso", cam) is None


def test_notebook_is_clean_and_shows_known_figures() -> None:
    import nbformat

    path = Path(__file__).resolve().parents[1] / "notebooks" / "02_annotation_stats.ipynb"
    nb = nbformat.read(path, as_version=4)
    params_cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params_cells) == 1 and "dataset" in params_cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    shown = {line.split('"')[1] for c in code for line in c.source.splitlines() if line.startswith("show(")}
    assert shown == set(stage.FIGURE_SECTIONS)
