"""Canonical tables: the validator refuses each broken input with the file, row and column named; the same
toolkit checks the adapters' raw annotation files (with the line an editor shows for text and spreadsheets)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from iqalab.data.schema import (
    DataError,
    Dataset,
    check_range,
    check_unique,
    numeric,
    read_dataset,
    write_dataset,
)
from iqalab.data.splits import kfold_splits, random_splits, scene_split


def _copy(ds: Dataset, tmp_path) -> Dataset:
    root = tmp_path / "copy"
    shutil.copytree(ds.root, root)
    return read_dataset(root)


def test_round_trip(toy_dataset, tmp_path):
    ds = _copy(toy_dataset, tmp_path)
    assert ds.attributes == ["overall", "sharpness", "noise"]
    assert len(ds.images) == 20
    assert ds.meta["counts"]["images"] == 20
    assert set(ds.meta["checksums"]) == {"images.parquet", "splits.parquet"}


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda im: im.drop(columns=["mos_noise"]), r"images.parquet column 'mos_noise': required column missing"),
        (lambda im: im.assign(mos_overall=np.where(im.index == 3, 6.5, im["mos_overall"])),
         r"images.parquet row 3 column 'mos_overall': 6.5 outside the MOS range \[1, 5\] \(declared in dataset"),
        (lambda im: im.assign(mos_overall=np.where(im.index == 2, np.inf, im["mos_overall"])),
         r"row 2 column 'mos_overall': infinite"),
        (lambda im: im.assign(image_id=np.where(im.index == 4, im["image_id"].iloc[0], im["image_id"])),
         r"images.parquet row 4 column 'image_id': duplicate image id"),
        (lambda im: im.assign(path=np.where(im.index == 1, "../outside.png", im["path"])),
         r"row 1 column 'path': path '../outside.png' escapes the dataset root"),
        (lambda im: im.assign(path=np.where(im.index == 1, "/etc/passwd", im["path"])), r"escapes the dataset root"),
        (lambda im: im.assign(path=np.where(im.index == 5, "images/missing.png", im["path"])),
         r"row 5 column 'path': image file not found"),
        (lambda im: im.assign(scene=np.where(im.index == 0, None, im["scene"])), r"row 0 column 'scene': missing"),
    ],
)
def test_images_table_errors(toy_dataset, tmp_path, mutate, match):
    ds = _copy(toy_dataset, tmp_path)
    ds.images = mutate(ds.images)
    with pytest.raises(DataError, match=match):
        write_dataset(ds)


def test_symlink_escaping_root_refused(toy_dataset, tmp_path):
    ds = _copy(toy_dataset, tmp_path)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    (ds.root / "images" / "link.png").symlink_to(outside)
    ds.images.loc[0, "path"] = "images/link.png"
    with pytest.raises(DataError, match="resolves outside the dataset root"):
        write_dataset(ds)


def test_scene_leak_between_roles_refused(toy_dataset, tmp_path):
    ds = _copy(toy_dataset, tmp_path)
    scene_rows = ds.splits[ds.splits["split"] == "scene"]
    first_train = scene_rows[scene_rows["role"] == "train"].index[0]
    leaked_scene = ds.images.set_index("image_id").loc[ds.splits.loc[first_train, "image_id"], "scene"]
    test_id = ds.splits[(ds.splits["split"] == "scene") & (ds.splits["role"] == "test")]["image_id"].iloc[0]
    ds.images.loc[ds.images["image_id"] == test_id, "scene"] = leaked_scene
    with pytest.raises(DataError, match=rf"scene '{leaked_scene}' appears in more than one role"):
        write_dataset(ds)


def test_corrupt_table_detected_by_checksum(toy_dataset, tmp_path):
    ds = _copy(toy_dataset, tmp_path)
    path = ds.root / "splits.parquet"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"splits.parquet: checksum does not match"):
        read_dataset(ds.root)


def test_partial_folder_without_marker_refused(toy_dataset, tmp_path):
    ds = _copy(toy_dataset, tmp_path)
    (ds.root / "dataset.json").unlink()
    with pytest.raises(DataError, match="incomplete"):
        read_dataset(ds.root)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        read_dataset(tmp_path / "nope")


def _frame(n_scenes=10, per_scene=4):
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(n_scenes * per_scene)],
                         "scene": [f"s{k // per_scene}" for k in range(n_scenes * per_scene)]})


def test_scene_split_is_disjoint_and_sized():
    images = _frame()
    split = scene_split(images, test_fraction=0.2, val_fraction=0.1, seed=3)
    scenes = split.assign(scene=images["scene"]).groupby("scene")["role"].nunique()
    assert (scenes == 1).all()
    roles = split.assign(scene=images["scene"]).drop_duplicates("scene")["role"].value_counts()
    assert roles["test"] == 2 and roles["val"] == 1 and roles["train"] == 7


def test_random_splits_differ_and_keep_ratio():
    images = _frame()
    splits = random_splits(images, n_splits=3, test_fraction=0.25)
    tests = [set(g[g.role == "test"].image_id) for _, g in splits.groupby("split")]
    assert all(len(t) == 10 for t in tests)
    assert tests[0] != tests[1]


def test_kfold_tests_every_image_once():
    images = _frame()
    folds = kfold_splits(images, n_folds=5)
    tested = folds[folds.role == "test"].image_id
    assert sorted(tested) == sorted(images.image_id)
    share = folds[folds.split == "fold_0"].role.value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7) and share["val"] == pytest.approx(0.1)


def test_kfold_by_scene_keeps_each_scene_in_one_role_per_fold():
    """SFIQA's folds over scenes (the generic adapter's ``by_scene=True``): within every fold a scene's images
    share one role, and every image is still tested exactly once."""
    images = _frame(n_scenes=20, per_scene=3)
    folds = kfold_splits(images, n_folds=5, by_scene=True, seed=1)
    merged = folds.assign(scene=folds.image_id.map(images.set_index("image_id").scene))
    assert (merged.groupby(["split", "scene"]).role.nunique() == 1).all()
    assert sorted(merged[merged.role == "test"].image_id) == sorted(images.image_id)
    per_fold = merged[merged.role == "test"].groupby("split").scene.nunique()
    assert per_fold.tolist() == [4] * 5  # 20 scenes in 10 chunks of 2, two test chunks a fold


def test_toolkit_names_file_row_and_the_line_of_text_tables():
    frame = pd.DataFrame({"mos": ["3.5", "x", None], "name": ["a", "b", "a"]})
    with pytest.raises(DataError, match=r"^scores\.csv row 1 \(line 3\) column 'mos': expected a number, got 'x'$"):
        numeric(frame, "scores.csv", "mos")
    with pytest.raises(DataError, match=r"^scores\.parquet row 1 column 'mos': expected a number"):
        numeric(frame, "scores.parquet", "mos")  # no editor line for a parquet file
    kept = frame.iloc[[0, 2]].reset_index(drop=True)
    np.testing.assert_array_equal(numeric(kept, "s.csv", "mos", allow_missing=True), [3.5, np.nan])
    with pytest.raises(DataError, match=r"s\.csv row 1 \(line 3\) column 'mos': missing value"):
        numeric(kept, "s.csv", "mos")
    with pytest.raises(DataError, match=r"images\.parquet row 0 column 'mos': expected numbers, got '3\.5'"):
        numeric(kept, "images.parquet", "mos", allow_missing=True, coerce=False)  # canonical: stored as numbers
    with pytest.raises(DataError, match=r"row 2 \(line 4\) column 'name': duplicate name 'a' \(first listed at row 0\)"):
        check_unique(frame["name"].tolist(), "scores.csv", "name")
    with pytest.raises(DataError, match=r"^data\.mat row 4 column 'm': 7 outside the MOS range \[1, 5\] \(a hint\)$"):
        check_range([1.0, 7.0], "data.mat", "m", (1, 5), rows=[3, 4], hint="a hint")
    check_range([1.0, np.nan, 5.0], "data.mat", "m", (1, 5))  # bounds are inclusive, missing values pass
