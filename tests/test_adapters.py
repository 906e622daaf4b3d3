"""Real-dataset adapters on tiny fixtures written here in each benchmark's published format.

Each fixture writer mirrors the release: a CSV with KonIQ's columns, CLIVE's three .mat files (cell array of
names), BID's and SPAQ's .xlsx workbooks, PIQ23's backslash-path score CSVs and split tables, GFIQA's CSV,
CGFIQA's per-part label.json, and the generic tables. Images are real 32x24 PNG/JPEG files.
"""

from __future__ import annotations

import errno
import inspect
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from iqalab.data.adapters import ADAPTERS, adapt, resolve
from iqalab.data.adapters.spaq import parse_exposure
from iqalab.data.schema import DataError, read_dataset
from iqalab.data.splits import cross_dataset_splits, mapped_split, piq23_scene_split

FAST = {"workers": 1}


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (32, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(pixels).save(path, format=fmt)


# --------------------------------------------------------------------------------------------- fixture writers
def make_koniq(root: Path, n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        counts = rng.integers(0, 30, 5)
        votes = np.repeat(np.arange(1, 6), counts)
        name = f"{1000 + i}.jpg"
        write_image(root / "1024x768" / name, i)
        rows.append({"image_name": name, **{f"c{k + 1}": int(c) for k, c in enumerate(counts)},
                     "c_total": int(counts.sum()), "MOS": float(votes.mean()), "SD": float(votes.std()),
                     "MOS_zscore": 50.0})
    table = pd.DataFrame(rows)
    table.to_csv(root / "koniq10k_scores_and_distributions.csv", index=False)
    return table


def make_clive(root: Path, n: int = 5) -> tuple[list[str], np.ndarray]:
    names = [f"t{k}.bmp" for k in range(1, 8)] + [f"{10 + i}.bmp" for i in range(n)]
    mos = np.linspace(20, 80, len(names))
    (root / "Data").mkdir(parents=True)
    cell = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cell[i, 0] = name
    scipy.io.savemat(root / "Data/AllImages_release.mat", {"AllImages_release": cell})
    scipy.io.savemat(root / "Data/AllMOS_release.mat", {"AllMOS_release": mos[None, :]})
    scipy.io.savemat(root / "Data/AllStdDev_release.mat", {"AllStdDev_release": np.full((1, len(names)), 9.5)})
    for i, name in enumerate(names):
        folder = root / "Images" / ("trainingImages" if name.startswith("t") else "")
        write_image(folder / name.replace(".bmp", ".bmp"), i)
    return names, mos


def make_bid(root: Path, n: int = 5) -> pd.DataFrame:
    table = pd.DataFrame({"Image Number": np.arange(1, n + 1), "Average Subjective Grade": np.linspace(0.5, 4.5, n)})
    root.mkdir(parents=True, exist_ok=True)
    table.to_excel(root / "DatabaseGrades.xlsx", index=False, sheet_name="Plan1")
    for i in range(1, n + 1):
        write_image(root / "ImageDatabase" / f"DatabaseImage{i:04d}.JPG", i)
    return table


def make_spaq(root: Path, n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = [f"{i:05d}.jpg" for i in range(1, n + 1)]
    scores = pd.DataFrame({"Image name": names, "MOS": np.linspace(10, 90, n),
                           **{c: np.linspace(20, 70, n) for c in
                              ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")}})
    exif = pd.DataFrame({"Image name": names, "Focal length": 4.2, "F-number": [1.8, 2.0, 2.2, 1.7, 2.4][:n],
                         "Exposure time": ["1/50", 0.01, 1000000, "1/8", 0.5][:n],
                         "ISO": [100, 200, 400, 800, 1600][:n], "Brightness": 3.1, "Flash": 0})
    (root / "Annotations").mkdir(parents=True)
    scores.to_excel(root / "Annotations/MOS and Image attribute scores.xlsx", index=False)
    exif.to_excel(root / "Annotations/EXIF_tags.xlsx", index=False, sheet_name="Source EXIF tags")
    for i, name in enumerate(names):
        write_image(root / "TestImage" / name, i)
    return scores, exif


PIQ_SCENES = {"Indoor_Scene_0": "Train", "Indoor_Scene_1": "Test", "Night_Scene_2": "Train",
              "Outdoor_Scene_3": "Test"}


def make_piq23(root: Path, per_scene: int = 3) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(2)
    images = []
    k = 0
    for scene in PIQ_SCENES:
        for _ in range(per_scene):
            name = f"{k}_{scene}.jpg"
            images.append((name, scene, scene.split("_")[0]))
            write_image(root / "Overall" / name, k)
            k += 1
    (root / "Scores").mkdir(parents=True)
    tables = {}
    for attr in ("Overall", "Details", "Exposure"):
        jod = rng.normal(0, 1.5, len(images))
        table = pd.DataFrame({
            "IMAGE PATH": [f"{attr}\\{n}" for n, _, _ in images], "JOD": jod, "JOD STD": 0.5,
            "CI LOW": jod - 1, "CI HIGH": jod + 1, "CI RANGE": 2.0, "QUALITY LEVEL": 1, "CLUSTER": -1.0,
            "TOTAL COMPARISONS": 120.0, "IMAGE": [n for n, _, _ in images],
            "SCENE": [s for _, s, _ in images], "ATTRIBUTE": attr,
            "SCENE IDX": [list(PIQ_SCENES).index(s) for _, s, _ in images],
            "CONDITION": [c for _, _, c in images]})
        table.to_csv(root / f"Scores/Scores_{attr}.csv", index=False)
        tables[attr] = table
    (root / "Test split").mkdir()
    pd.DataFrame({"SCENE": list(PIQ_SCENES), "SPLIT": list(PIQ_SCENES.values()), "NB IMAGES": per_scene}) \
        .to_csv(root / "Test split/Scene Split.csv", index=False)
    pd.DataFrame({"IMAGE": [n for n, _, _ in images],
                  "SPLIT": ["Test" if i % 3 == 0 else "Train" for i in range(len(images))]}) \
        .to_csv(root / "Test split/Device Split.csv", index=False)
    return tables


def make_gfiqa(root: Path, n: int = 6) -> pd.DataFrame:
    table = pd.DataFrame({"img_name": [f"{i:05d}.png" for i in range(n)], "mos": np.linspace(0.1, 0.9, n)})
    root.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "mos_val_rating.csv", index=False)
    for i, name in enumerate(table["img_name"]):
        write_image(root / "image" / name, i)
    return table


def make_cgfiqa(root: Path) -> dict[str, dict]:
    labels = {}
    for p, part in enumerate(("train", "val", "test")):
        names = [f"{i:05d}.png" for i in range(3)]  # the same names in every part
        labels[part] = {"Image": names, "MOS": [0.2 + 0.1 * p + 0.05 * i for i in range(3)]}
        (root / part).mkdir(parents=True)
        (root / part / "label.json").write_text(json.dumps(labels[part]))
        for i, name in enumerate(names):
            write_image(root / part / "img" / name, 10 * p + i)
    return labels


def make_generic(root: Path) -> pd.DataFrame:
    rows = []
    for s in range(4):
        for j in range(3):
            rel = f"frames/scene{s}/img{j}.png"
            write_image(root / rel.replace("/", os.sep), 3 * s + j)
            rows.append({"image": rel.replace("/", "\\"), "image_id": f"s{s}_{j}", "scene": f"s{s}",
                         "condition": "indoor" if s % 2 else "outdoor",
                         "mos_overall": 1 + s + 0.1 * j, "mos_face": 2.0, "std_overall": 0.3,
                         "cam_iso": 100.0 * (j + 1), "cam_shutter": 0.01,
                         "split_scene": "train" if s < 3 else "test"})
    table = pd.DataFrame(rows)
    table.to_csv(root / "images.csv", index=False)
    pd.DataFrame({"image_a": ["s0_0", "s1_0"], "image_b": ["s0_1", "s1_2"], "attribute": ["overall", "face"],
                  "p": [1.0, 0.25]}).to_csv(root / "pairs.csv", index=False)
    pd.DataFrame({"image_id": ["s0_0", "s0_0", "s2_1"], "rater": ["r1", "r2", "r1"],
                  "attribute": "overall", "score": [3, 4, 5]}).to_csv(root / "votes.csv", index=False)
    return table


# --------------------------------------------------------------------------------------------- happy paths
def _no_leftovers(out: Path) -> None:
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_registry_and_aliases() -> None:
    assert set(ADAPTERS) == {"koniq10k", "clive", "bid", "spaq", "piq23", "gfiqa", "cgfiqa", "generic"}
    assert resolve("LIVEC") == "clive" and resolve("gfiqa-20k") == "gfiqa"
    with pytest.raises(DataError, match="unknown dataset adapter"):
        resolve("kadid")


def test_koniq(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out" / "koniq"
    table = make_koniq(raw)
    ds = adapt("koniq10k", raw, out, n_splits=3, **FAST)
    back = read_dataset(out, check_files=True)
    assert back.meta["mos_range"] == [1.0, 5.0] and back.meta["source"] == "real"
    np.testing.assert_allclose(back.images["mos_overall"], table["MOS"])
    np.testing.assert_allclose(back.images["n_overall"], table["c_total"])
    # REQA's tiers read KonIQ's published 0-100 MOS_zscore (issue #27)
    np.testing.assert_allclose(back.images["tier_overall"], table["MOS_zscore"])
    assert back.meta["tier_scale"] == {"overall": "MOS_zscore (0-100)"}
    assert (back.images[["width", "height"]].to_numpy() == [32, 24]).all()
    # the vote histogram survives as one rating per vote
    assert len(back.ratings) == table["c_total"].sum()
    hist = back.ratings.groupby(["image_id", "score"]).size().unstack(fill_value=0).reindex(
        index=table["image_name"], columns=[1.0, 2.0, 3.0, 4.0, 5.0], fill_value=0)
    np.testing.assert_array_equal(hist.to_numpy(), table[["c1", "c2", "c3", "c4", "c5"]].to_numpy())
    # images are hard links of the raw files, referenced relative to the dataset root
    first = back.images.iloc[0]
    assert not Path(first["path"]).is_absolute()
    assert os.stat(out / first["path"]).st_ino == os.stat(raw / "1024x768" / first["image_id"]).st_ino
    assert ds.meta["image_links"] == "hardlink"
    assert {f"random_{k:02d}" for k in range(3)} | {"full_train", "full_test"} == set(back.splits["split"])
    test_share = (back.splits.query("split == 'random_00'")["role"] == "test").mean()
    assert test_share == pytest.approx(0.2, abs=0.1)
    _no_leftovers(out)


def test_koniq_copy_mode_and_official_sets(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    table = make_koniq(raw)
    sets = ["training"] * 4 + ["validation", "test"]
    pd.DataFrame({"image_name": table["image_name"], "set": sets}).to_csv(
        raw / "koniq10k_distributions_sets.csv", index=False)
    ds = adapt("koniq10k", raw, out, n_splits=1, link="copy", ratings=False, **FAST)
    assert ds.meta["image_links"] == "copy" and ds.ratings is None
    path = out / ds.images["path"].iloc[0]
    assert os.stat(path).st_ino != os.stat(raw / "1024x768" / ds.images["image_id"].iloc[0]).st_ino
    official = ds.splits.query("split == 'official'").set_index("image_id")["role"]
    assert official.tolist() == ["train"] * 4 + ["val", "test"]


def test_clive_drops_calibration_images(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    names, mos = make_clive(raw)
    ds = adapt("clive", raw, out, n_splits=2, **FAST)
    assert ds.images["image_id"].tolist() == names[7:]
    np.testing.assert_allclose(ds.images["mos_overall"], mos[7:])
    assert read_dataset(out, check_files=True).meta["dropped_calibration_images"] == 7
    kept = adapt("clive", raw, tmp_path / "out2", drop_calibration=False, n_splits=1, **FAST)
    assert len(kept.images) == len(names)
    assert kept.images["path"].iloc[0] == "images/Images/trainingImages/t1.bmp"


def test_bid_xlsx(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    table = make_bid(raw)
    ds = adapt("bid", raw, out, n_splits=2, **FAST)
    assert ds.images["image_id"].tolist() == [f"DatabaseImage{i:04d}.JPG" for i in range(1, 6)]
    np.testing.assert_allclose(ds.images["mos_overall"], table["Average Subjective Grade"])
    assert ds.images["path"].str.startswith("images/ImageDatabase/").all()
    read_dataset(out, check_files=True)


def test_spaq_exif_to_camera_parameters(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    scores, exif = make_spaq(raw)
    ds = read_dataset(adapt("spaq", raw, out, n_splits=2, **FAST).root, check_files=True)
    assert ds.attributes == ["overall", "brightness", "colorfulness", "contrast", "noisiness", "sharpness"]
    np.testing.assert_allclose(ds.images["mos_overall"], scores["MOS"])
    np.testing.assert_allclose(ds.images["cam_aperture"], exif["F-number"])
    np.testing.assert_allclose(ds.images["cam_iso"], exif["ISO"])
    np.testing.assert_allclose(ds.images["cam_shutter"], [0.02, 0.01, np.nan, 0.125, 0.5])
    for col in ("cam_wb", "cam_contrast", "cam_saturation", "cam_sharpness"):
        assert ds.images[col].isna().all()


def test_spaq_scene_workbook_gives_the_condition(tmp_path: Path) -> None:
    """The optional scene-class workbook: each image's most probable class becomes its ``condition`` and the
    workbook is checksummed with the others (until 2026-12-05 the adapter crashed on it: a local name shadowed
    the folder searched)."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    scores, _ = make_spaq(raw)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.0, 0.1, 0.9]])
    pd.DataFrame({"Image name": scores["Image name"], "Portrait": probs[:, 0], "Landscape": probs[:, 1],
                  "Night": probs[:, 2]}).to_excel(raw / "Annotations/Scene category labels.xlsx", index=False)
    ds = read_dataset(adapt("spaq", raw, out, n_splits=2, **FAST).root, check_files=True)
    assert ds.images["condition"].tolist() == ["Portrait", "Landscape", "Night", "Portrait", "Night"]
    assert "Annotations/Scene category labels.xlsx" in ds.meta["raw_files"]
    assert ds.meta["raw_layout_root"] == "."


def test_parse_exposure() -> None:
    assert parse_exposure("1/250") == pytest.approx(0.004)
    assert parse_exposure("0.5 s") == pytest.approx(0.5)
    assert parse_exposure(1_000_000) != parse_exposure(1_000_000)  # the sentinel becomes NaN
    with pytest.raises(ValueError):
        parse_exposure("fast")


def test_piq23_scores_and_official_splits(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    tables = make_piq23(raw)
    ds = read_dataset(adapt("piq23", raw, out, **FAST).root, check_files=True)
    assert ds.attributes == ["overall", "details", "exposure"]
    by_id = ds.images.set_index("image_id")
    for attr, table in tables.items():
        np.testing.assert_allclose(by_id.loc[table["IMAGE"], f"mos_{attr.lower()}"], table["JOD"])
    # backslash IMAGE PATHs resolve to the Overall folder
    assert ds.images["path"].str.startswith("images/Overall/").all()
    lo, hi = ds.mos_range
    jods = np.concatenate([t["JOD"] for t in tables.values()])
    assert lo == np.floor(jods.min()) and hi == np.ceil(jods.max())
    scene = ds.splits.query("split == 'scene'").assign(scene=lambda f: f["image_id"].map(by_id["scene"]))
    assert scene.groupby("scene")["role"].first().to_dict() == {s: r.lower() for s, r in PIQ_SCENES.items()}
    device = ds.splits.query("split == 'device'")
    assert (device["role"] == "test").sum() == 4
    assert set(ds.images["condition"]) == {"Indoor", "Night", "Outdoor"}


def test_piq23_reading_a_region_file_for_a_missing_frame_is_said(tmp_path: Path, caplog) -> None:
    """An image listed in Scores_Overall.csv whose Overall/ file is not on disk is read from its Details/ file (a
    region of interest, not the full frame): not silently, a warning names it and dataset.json records it; the
    images whose Overall/ file is there keep it."""
    raw = tmp_path / "raw"
    tables = make_piq23(raw)
    name = str(tables["Overall"]["IMAGE"].iloc[0])
    (raw / "Details").mkdir()
    (raw / "Overall" / name).rename(raw / "Details" / name)
    with caplog.at_level("WARNING", logger="iqalab.data.adapters.piq23"):
        ds = adapt("piq23", raw, tmp_path / "out", device_split=False, cross=False, **FAST)
    assert "1 image(s) listed first at a file that is not on disk" in caplog.text and name in caplog.text
    assert ds.meta["path_substituted"] == {f"Overall/{name}": f"Details/{name}"}
    paths = ds.images.set_index("image_id")["path"]
    assert paths[name].startswith("images/Details/")
    assert paths.drop(index=name).str.startswith("images/Overall/").all()
    clean = adapt("piq23", tmp_path / "raw2" if make_piq23(tmp_path / "raw2") else None, tmp_path / "out2",
                  device_split=False, cross=False, **FAST)
    assert "path_substituted" not in clean.meta


def test_piq23_val_scenes(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_piq23(raw)
    ds = adapt("piq23", raw, tmp_path / "out", val_scenes=1, device_split=False, cross=False, **FAST)
    roles = ds.splits.merge(ds.images[["image_id", "scene"]]).groupby("scene")["role"].agg(set)
    assert sorted(r.pop() for r in roles) == ["test", "test", "train", "val"]
    assert set(ds.splits["split"]) == {"scene"}


def test_gfiqa_and_cgfiqa(tmp_path: Path) -> None:
    make_gfiqa(tmp_path / "g")
    ds = adapt("gfiqa", tmp_path / "g", tmp_path / "g_out", n_splits=2, **FAST)
    roles = ds.splits.query("split == 'random_00'")["role"].value_counts()
    assert roles["test"] == 1 and roles.get("val", 0) == 1  # round(0.2*6), round(0.1*6)
    labels = make_cgfiqa(tmp_path / "c")
    cg = read_dataset(adapt("cgfiqa", tmp_path / "c", tmp_path / "c_out", **FAST).root, check_files=True)
    assert len(cg.images) == 9 and cg.images["image_id"].is_unique
    official = cg.splits.query("split == 'official'").set_index("image_id")["role"]
    assert official["val/00001.png"] == "val"
    np.testing.assert_allclose(cg.images.set_index("image_id").loc["test/00002.png", "mos_overall"],
                               labels["test"]["MOS"][2])


def test_generic_tables(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_generic(raw)
    ds = read_dataset(adapt("generic", raw, out, mos_range=[1, 5], protocols=["kfold"], **FAST).root,
                      check_files=True)
    assert ds.attributes == ["overall", "face"] and ds.name == "raw"
    assert set(ds.splits["split"]) == {"scene", "fold_0", "fold_1", "fold_2", "fold_3", "fold_4",
                                       "full_train", "full_test"}
    assert "scene" in ds.meta["scene_level_splits"]
    assert ds.images.set_index("image_id").loc["s1_2", "cam_iso"] == 300.0
    assert ds.images["cam_aperture"].isna().all()
    assert ds.pairs["source"].eq("refined").all() and ds.pairs["fine"].all()
    assert ds.ratings["score"].tolist() == [3.0, 4.0, 5.0]


# --------------------------------------------------------------------------------------------- bad inputs
def test_missing_folder_says_what_and_where(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        adapt("koniq10k", tmp_path / "nowhere", tmp_path / "out")
    assert "koniq10k_scores_and_distributions.csv" in str(err.value)
    assert "database.mmsp-kn.de" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_missing_file(tmp_path: Path) -> None:
    make_clive(tmp_path / "raw")
    (tmp_path / "raw/Data/AllMOS_release.mat").unlink()
    with pytest.raises(DataError, match=r"missing Data/AllMOS_release\.mat.*live\.ece\.utexas\.edu"):
        adapt("clive", tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_renamed_column(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    table = make_koniq(raw)
    table.rename(columns={"MOS": "mos_mean"}).to_csv(raw / "koniq10k_scores_and_distributions.csv", index=False)
    with pytest.raises(DataError, match=r"koniq10k_scores_and_distributions\.csv column 'MOS'.*mos_mean"):
        adapt("koniq10k", raw, tmp_path / "out")


def test_mos_out_of_range(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    table = make_bid(raw)
    table.loc[3, "Average Subjective Grade"] = 7.0
    table.to_excel(raw / "DatabaseGrades.xlsx", index=False)
    with pytest.raises(DataError, match=r"DatabaseGrades\.xlsx row 3 \(line 5\) column 'Average Subjective "
                                        r"Grade': 7 outside the MOS range \[0, 5\]"):
        adapt("bid", raw, tmp_path / "out")


def test_image_listed_but_absent(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_gfiqa(raw)
    (raw / "image" / "00004.png").unlink()
    with pytest.raises(DataError, match=r"mos_val_rating\.csv row 4 \(line 6\): image listed but not found: "
                                        r".*00004\.png"):
        adapt("gfiqa", raw, tmp_path / "out")


def test_duplicate_names(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    scores, _ = make_spaq(raw)
    scores.loc[4, "Image name"] = scores.loc[1, "Image name"]
    scores.to_excel(raw / "Annotations/MOS and Image attribute scores.xlsx", index=False)
    with pytest.raises(DataError, match=r"row 4 \(line 6\) column 'Image name': duplicate name '00002\.jpg' "
                                        r"\(first listed at row 1\)"):
        adapt("spaq", raw, tmp_path / "out")


def test_unreadable_image(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_cgfiqa(raw)
    (raw / "val/img/00001.png").write_bytes(b"\x89PNG this is not an image")
    with pytest.raises(DataError, match=r"val/img/00001\.png: unreadable image .*val/label\.json row 1"):
        adapt("cgfiqa", raw, tmp_path / "out")


def test_decompression_bomb_limit_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "raw"
    make_gfiqa(raw, n=2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32x24 px is then more than twice the limit
    with pytest.raises(DataError, match="DecompressionBombError"):
        adapt("gfiqa", raw, tmp_path / "out")


def test_piq23_bad_split_table(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_piq23(raw)
    pd.DataFrame({"SCENE": ["Indoor_Scene_0"], "SPLIT": ["Train"]}).to_csv(raw / "Test split/Scene Split.csv",
                                                                          index=False)
    with pytest.raises(DataError, match=r"Scene Split\.csv.*'Indoor_Scene_1' has no role"):
        adapt("piq23", raw, tmp_path / "out")


def test_generic_rejects_unknown_pair_image(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_generic(raw)
    pd.DataFrame({"image_a": ["s0_0"], "image_b": ["ghost"], "attribute": ["overall"], "p": [1.0]}).to_csv(
        raw / "pairs.csv", index=False)
    with pytest.raises(DataError, match=r"pairs\.csv row 0 \(line 2\) column 'image_b': unknown image id 'ghost'"):
        adapt("generic", raw, tmp_path / "out", mos_range=[1, 5])
    with pytest.raises(DataError, match="mos_range is required"):
        adapt("generic", raw, tmp_path / "out")


def test_failure_keeps_previous_dataset_and_leaves_nothing_partial(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "build" / "gfiqa"
    table = make_gfiqa(raw)
    adapt("gfiqa", raw, out, n_splits=1, **FAST)
    before = read_dataset(out, check_files=True)
    table.loc[2, "mos"] = 3.0
    table.to_csv(raw / "mos_val_rating.csv", index=False)
    with pytest.raises(DataError, match=r"row 2 \(line 4\) column 'mos'"):
        adapt("gfiqa", raw, out, n_splits=1, **FAST)
    after = read_dataset(out, check_files=True)
    pd.testing.assert_frame_equal(before.images, after.images)
    _no_leftovers(out)


def test_refuses_to_write_into_raw_or_over_foreign_folder(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_gfiqa(raw, n=2)
    with pytest.raises(DataError, match="inside the raw folder"):
        adapt("gfiqa", raw, raw / "build", n_splits=1)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="refusing to replace"):
        adapt("gfiqa", raw, foreign, n_splits=1)
    assert (foreign / "thesis.tex").read_text() == "precious"


# --------------------------------------------------------------------------------------------- split helpers
def test_cross_dataset_and_mapped_splits() -> None:
    images = pd.DataFrame({"image_id": [f"i{k}" for k in range(20)], "scene": [f"s{k // 5}" for k in range(20)]})
    cross = cross_dataset_splits(images, val_fraction=0.1, seed=3)
    train = cross.query("split == 'full_train'")["role"].value_counts()
    assert train["val"] == 2 and train["train"] == 18
    assert (cross.query("split == 'full_test'")["role"] == "test").all()
    scene = piq23_scene_split(images, {"s0": "Train", "s1": "Train", "s2": "Test", "s3": "TEST"}, val_scenes=1)
    per_scene = scene.assign(scene=images["scene"]).groupby("scene")["role"].nunique()
    assert (per_scene == 1).all() and set(scene["role"]) == {"train", "val", "test"}
    role = scene.assign(scene=images["scene"]).groupby("scene")["role"].first()
    assert role["s2"] == role["s3"] == "test", "the validation scene comes from the training scenes"
    assert sorted(role[["s0", "s1"]]) == ["train", "val"]
    with pytest.raises(KeyError, match="'s3'"):
        mapped_split(images, {"s0": "train", "s1": "train", "s2": "test"}, by="scene")


def test_failure_while_writing_removes_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import iqalab.data.adapters.base as base

    raw, out = tmp_path / "raw", tmp_path / "build" / "bid"
    make_bid(raw)
    adapt("bid", raw, out, n_splits=1, **FAST)
    real_write = base.write_dataset

    def write_then_fail(ds, check_files=True):  # noqa: ANN001, ANN202
        real_write(ds, check_files=check_files)
        raise OSError("disk full")

    monkeypatch.setattr(base, "write_dataset", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        adapt("bid", raw, out, n_splits=2, **FAST)
    _no_leftovers(out)
    assert set(read_dataset(out, check_files=True).splits["split"]) == {"random_00", "full_train", "full_test"}


# --------------------------------------------------------------------------------------------- documented claims
DOC = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"


def _doc_section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


def _doc_tables(section: str) -> list[list[list[str]]]:
    """The markdown tables of ``section``, each a list of rows of stripped cells (header first, rule dropped)."""
    tables: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*section.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def _doc_value(text: str) -> object:
    """The literal a doc cell starts with (``20``, ``0.2``, ``true``, `` `hardlink` ``); None for words such as
    "the adapter's name" (a default computed at run time, i.e. ``None`` in the signature)."""
    token = text.strip().split(" ")[0].rstrip(",:")
    if len(token) > 2 and token[0] == token[-1] == "`":
        return token.strip("`")
    if token in ("true", "false"):
        return token == "true"
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return None


def _same_default(doc: object, code: object) -> bool:
    if isinstance(doc, bool) or isinstance(code, bool):
        return type(doc) is type(code) and doc == code
    return doc == code


def test_the_options_table_matches_the_adapter_signatures() -> None:
    """docs/datasets.md "Options" lists, per adapter, exactly the keyword arguments of the registered adapter
    function and their defaults: the options every adapter takes, the split options (``-`` where an adapter has
    none: PIQ23 and CGFIQA) and the dataset-specific ones; and ``iqalab check`` allows exactly those."""
    from iqalab.config import DatasetConfig, dataset_options

    section = _doc_section("Options")
    common_table, split_table = _doc_tables(section)
    assert common_table[0] == ["option", "default", "meaning"]
    common = {}
    for row in common_table[1:]:
        for name in re.findall(r"`(\w+)`", row[0]):
            common[name] = _doc_value(row[1])
    assert {"seed", "cross", "mos_range", "link", "verify", "workers", "dataset_name"} <= set(common)
    assert not {"n_splits", "test_fraction", "val_fraction"} & set(common), "split options are per adapter"

    header = split_table[0]
    assert header[0] == "adapter"
    split_options = [h.strip("`") for h in header[1:]]
    assert split_options == ["n_splits", "test_fraction", "val_fraction"]
    split_of: dict[str, dict[str, object]] = {}
    for row in split_table[1:]:
        for adapter in (a.strip() for a in row[0].split(",")):
            assert adapter not in split_of, f"{adapter} listed twice in the split-options table"
            split_of[adapter] = {opt: cell for opt, cell in zip(split_options, row[1:], strict=True)}
    assert set(split_of) == set(ADAPTERS)

    paragraph = " ".join(section[section.index("Dataset-specific:"):].split("\n\n")[0].split())
    specific: dict[str, dict[str, object]] = {name: {} for name in ADAPTERS}
    for adapter, option, default in re.findall(r"`(\w+)\.(\w+)`(?: \(([^)]*)\))?", paragraph):
        assert adapter in ADAPTERS, f"Dataset-specific names an unknown adapter {adapter!r}"
        specific[adapter][option] = _doc_value(default) if default else ...

    for name, fn in ADAPTERS.items():
        params = {k: p for k, p in inspect.signature(fn).parameters.items() if k not in ("raw_root", "out_root")}
        assert all(p.kind is p.KEYWORD_ONLY for p in params.values()), name
        documented = set(common) | {o for o, cell in split_of[name].items() if cell != "-"} | set(specific[name])
        assert set(params) == documented, (
            f"{name}: in the signature, not the doc: {sorted(set(params) - documented)}; "
            f"in the doc, not the signature: {sorted(documented - set(params))}")
        for option, doc in common.items():
            assert _same_default(doc, params[option].default), (name, option, doc, params[option].default)
        for option, cell in split_of[name].items():
            if cell != "-":
                doc = _doc_value(cell)
                assert doc is not None and _same_default(doc, params[option].default), (name, option, cell)
        for option, doc in specific[name].items():
            if doc is not ...:
                assert _same_default(doc, params[option].default), (name, option, doc, params[option].default)
        # what `iqalab check` accepts under datasets.<ds>.options is the same set
        _, allowed, _ = dataset_options(DatasetConfig(source="adapter", builder=name), f"datasets.{name}")
        assert sorted(allowed) == sorted(documented), name


def test_hardlink_falls_back_to_a_copy_across_file_systems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """``link: hardlink`` copies an image whose hard link fails (EXDEV: another file system) and says so:
    ``image_links`` is ``copy`` when every link failed, ``mixed`` when some did, with a warning naming the raw
    folder; the copies hold the raw bytes and the raw files are left alone."""
    import iqalab.data.adapters.base as base

    raw = tmp_path / "raw"
    rels = ["a/1.png", "a/2.png", "b/3.png"]
    for k, rel in enumerate(rels):
        write_image(raw / rel, k)
    real_link = os.link
    failing: set[str] = set()
    attempts: list[str] = []

    def link(src, dst, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        attempts.append(Path(src).name)
        if Path(src).name in failing:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(base.os, "link", link)
    warning = f"hard links were not possible for some images under {raw}; they were copied"

    def placed(dest: Path) -> dict[str, bool]:
        """rel -> whether the placed file is a hard link of the raw file; bytes must match either way."""
        out = {}
        for rel in rels:
            assert (dest / "images" / rel).read_bytes() == (raw / rel).read_bytes()
            out[rel] = os.path.samefile(dest / "images" / rel, raw / rel)
        return out

    caplog.set_level(logging.WARNING, logger=base.log.name)
    assert base.link_images(raw, rels, tmp_path / "linked") == "hardlink"
    assert placed(tmp_path / "linked") == dict.fromkeys(rels, True)
    assert warning not in caplog.text

    failing.update({"1.png", "2.png", "3.png"})
    assert base.link_images(raw, rels, tmp_path / "copied") == "copy"
    assert placed(tmp_path / "copied") == dict.fromkeys(rels, False)
    assert warning in caplog.text
    caplog.clear()

    failing.clear()
    failing.add("2.png")
    assert base.link_images(raw, rels, tmp_path / "mixed") == "mixed"
    assert placed(tmp_path / "mixed") == {"a/1.png": True, "a/2.png": False, "b/3.png": True}
    assert caplog.text.count(warning) == 1
    assert os.stat(raw / "a/2.png").st_nlink == 2, "only the all-hardlink run linked it; the raw file is untouched"

    # copy mode never tries a link and never warns
    attempts.clear()
    caplog.clear()
    assert base.link_images(raw, rels, tmp_path / "plain", mode="copy") == "copy"
    assert attempts == [] and warning not in caplog.text

    # through an adapter: dataset.json records the mix, the dataset reads back with every file present
    graw = tmp_path / "graw"
    make_gfiqa(graw, n=4)
    failing.clear()
    failing.add("00002.png")
    caplog.clear()
    ds = adapt("gfiqa", graw, tmp_path / "out", n_splits=1, **FAST)
    back = read_dataset(tmp_path / "out", check_files=True)
    assert ds.meta["image_links"] == back.meta["image_links"] == "mixed"
    assert f"hard links were not possible for some images under {graw}" in caplog.text
    for _, row in back.images.iterrows():
        copy = tmp_path / "out" / row["path"]
        source = graw / row["raw_path"] if "raw_path" in row else graw / "image" / row["image_id"]
        assert copy.read_bytes() == source.read_bytes()
        assert os.path.samefile(copy, source) == (row["image_id"] != "00002.png")


def _clive_with(root: Path, entry: int, *, name: str | None = None, mos: float | None = None) -> None:
    """CLIVE fixture with MATLAB entry ``entry`` (1-based) given an empty ``name`` or the MOS ``mos``."""
    names, scores = make_clive(root)
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = n
    if name is not None:
        cell[entry - 1, 0] = name
        scipy.io.savemat(root / "Data/AllImages_release.mat", {"AllImages_release": cell})
    if mos is not None:
        scores = scores.copy()
        scores[entry - 1] = mos
        scipy.io.savemat(root / "Data/AllMOS_release.mat", {"AllMOS_release": scores[None, :]})


def test_clive_errors_name_matlab_entries(tmp_path: Path) -> None:
    """CLIVE's .mat errors name the file and MATLAB's 1-based entry (the calibration images count: entry 10 is
    the 3rd image kept), as docs/datasets.md "Checks and errors" says."""
    _clive_with(tmp_path / "empty", 10, name="")
    with pytest.raises(DataError) as err:
        adapt("clive", tmp_path / "empty", tmp_path / "out", **FAST)
    assert str(err.value) == "Data/AllImages_release.mat entry 10: empty file name"

    _clive_with(tmp_path / "nan", 11, mos=float("nan"))
    with pytest.raises(DataError) as err:
        adapt("clive", tmp_path / "nan", tmp_path / "out", **FAST)
    assert str(err.value) == "Data/AllMOS_release.mat entry 11: MOS missing (NaN)"

    # with the calibration images kept, their entries are checked and numbered the same way
    _clive_with(tmp_path / "calib", 3, name="")
    adapt("clive", tmp_path / "calib", tmp_path / "out", n_splits=1, **FAST)  # entry 3 is dropped: no error
    with pytest.raises(DataError, match=r"^Data/AllImages_release\.mat entry 3: empty file name$"):
        adapt("clive", tmp_path / "calib", tmp_path / "out2", drop_calibration=False, **FAST)

    # out-of-range and duplicate errors carry the same 1-based number
    _clive_with(tmp_path / "range", 9, mos=120.0)
    with pytest.raises(DataError, match=r"^Data/AllMOS_release\.mat entry 9 column 'AllMOS_release': 120 "
                                        r"outside the MOS range \[0, 100\]"):
        adapt("clive", tmp_path / "range", tmp_path / "out3", **FAST)
    _clive_with(tmp_path / "dup", 12, name="10.bmp")
    with pytest.raises(DataError, match=r"^Data/AllImages_release\.mat entry 12 column 'AllImages_release': "
                                        r"duplicate name '10\.bmp' \(first listed at entry 8\)"):
        adapt("clive", tmp_path / "dup", tmp_path / "out4", **FAST)
    assert not (tmp_path / "out3").exists() and not (tmp_path / "out4").exists()


def test_clive_range_and_duplicate_errors_say_entry(tmp_path: Path) -> None:
    _clive_with(tmp_path / "range", 9, mos=120.0)
    with pytest.raises(DataError, match=r"^Data/AllMOS_release\.mat entry 9\b"):
        adapt("clive", tmp_path / "range", tmp_path / "out", **FAST)
    _clive_with(tmp_path / "dup", 12, name="10.bmp")
    with pytest.raises(DataError, match=r"^Data/AllImages_release\.mat entry 12\b.*first listed at entry 8\b"):
        adapt("clive", tmp_path / "dup", tmp_path / "out2", **FAST)
