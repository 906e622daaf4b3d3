"""Hostile or broken input not covered by the unit suites: refused with a message that names the culprit.

Pickle payloads in checkpoints and weights files (``weights_only=True``), malformed ``dataset.json``, params with
empty lists where a list is required, duplicated ids and scene leaks in the splits table, and NaN where a value is
required. Tampered tables are written with *matching* checksums, so the refusal comes from the validator itself
and not only from the checksum.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from iqalab.config import ParamsError, parse_params
from iqalab.data.schema import DataError, read_dataset, write_dataset
from iqalab.io import sha256_file
from iqalab.models.backbones import PretrainedUnavailable, create_backbone
from iqalab.train.engine import CheckpointError, load_checkpoint

from ..conftest import toy_params
from . import TINY_MODEL, make_project, run_iqalab


class _Payload:
    """Unpickling this object calls ``os.mkdir(marker)``: harmless, but proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return os.mkdir, (str(self.marker),)


def _pickle_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(2)}, "config": {"model_name": "backbone_mlp"}, "hook": _Payload(marker)},
               path)


def test_pickle_payload_is_live_but_refused_by_weights_only(tmp_path):
    evil, marker = tmp_path / "best.pt", tmp_path / "pwned"
    _pickle_checkpoint(evil, marker)
    torch.load(evil, weights_only=False)  # control: a plain unpickle executes the payload
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(CheckpointError, match=r"best\.pt: cannot be loaded as a weights-only checkpoint: it "
                                              r"holds pickled Python objects, refused \(.*mkdir"):
        load_checkpoint(evil)
    assert not marker.exists(), "the payload never ran"


def test_pickle_payload_refused_by_the_score_command(tmp_path):
    evil, marker = tmp_path / "best.pt", tmp_path / "pwned"
    _pickle_checkpoint(evil, marker)
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    params = make_project(tmp_path / "proj")
    proc = run_iqalab(tmp_path / "proj", params, "score", "--checkpoint", str(evil), "--out",
                      str(tmp_path / "scores.csv"), str(image))
    assert proc.returncode == 2
    assert f"{evil}: cannot be loaded as a weights-only checkpoint: it holds pickled Python objects" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "scores.csv").exists()


def test_pickle_payload_refused_as_pretrained_weights(tmp_path):
    evil, marker = tmp_path / "resnet18.pth", tmp_path / "pwned"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": _Payload(marker)}, evil)
    with pytest.raises(PretrainedUnavailable, match=r"resnet18\.pth: cannot be read as a weights file"):
        create_backbone("resnet18", pretrained=str(evil))
    assert not marker.exists()


@pytest.fixture(scope="module")
def pretrained_payload_run(toy_dataset, tmp_path_factory):
    """``iqalab train e`` in a subprocess with ``model.pretrained:`` naming a weights file that carries a pickle
    payload; run once for the tests below. Returns the completed process, the file and the payload's marker."""
    tmp = tmp_path_factory.mktemp("pretrained_payload")
    evil, marker = tmp / f"{TINY_MODEL['backbone']}.pth", tmp / "pwned"
    torch.save({"state_dict": {"conv_stem.weight": torch.zeros(1)}, "hook": _Payload(marker)}, evil)
    params = make_project(tmp / "proj", toy_dataset.root, epochs=1)
    raw = yaml.safe_load(params.read_text())
    raw["experiments"]["e"]["model"]["pretrained"] = str(evil)
    params.write_text(yaml.safe_dump(raw))
    return run_iqalab(tmp / "proj", params, "train", "e"), evil, marker


def test_pickle_payload_as_pretrained_stops_training(pretrained_payload_run):
    proc, evil, marker = pretrained_payload_run
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"iqalab train: error: {evil}: cannot be read as a weights file"), proc.stderr
    assert "GLOBAL posix.mkdir" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists(), "the payload never ran"
    assert not list((evil.parent / "proj").glob("build/models/e/**/*.pt")), "no checkpoint written"


def test_pickle_payload_as_pretrained_is_one_line(pretrained_payload_run):
    """docs/reliability.md: refused in one line, like the checkpoint and ``score`` cases."""
    proc, _, _ = pretrained_payload_run
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_pickle_payload_as_pretrained_gives_the_documented_reason(pretrained_payload_run):
    """docs/reliability.md: ``... it holds pickled Python objects, refused (... GLOBAL posix.mkdir ...)``, the
    wording of load_checkpoint and ``score``, on the error line itself."""
    proc, evil, _ = pretrained_payload_run
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"iqalab train: error: {evil}: "), proc.stderr
    assert re.search(r"it holds pickled Python objects, refused \(.*GLOBAL posix\.mkdir.*\)", first), proc.stderr


# ----------------------------------------------------------------------------------------------- dataset.json
@pytest.fixture
def copy(toy_dataset, tmp_path) -> Path:
    root = tmp_path / "toy"
    shutil.copytree(toy_dataset.root, root)
    return root


def _edit_meta(root: Path, edit) -> None:  # noqa: ANN001
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(edit(meta) if callable(edit) else edit)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ('{"name": "toy", "attributes": ["overall"', r"dataset\.json: not valid JSON"),
        ("", r"dataset\.json: not valid JSON"),
        ("[1, 2, 3]", r"dataset\.json: expected a JSON object, got list"),
        (lambda m: json.dumps({**m, "mos_range": "1-5"}), r"column 'mos_range': expected \[low, high\] numbers"),
        (lambda m: json.dumps({**m, "mos_range": [1, 3, 5]}), r"column 'mos_range': expected \[low, high\]"),
        (lambda m: json.dumps({**m, "mos_range": [5, 1]}), r"column 'mos_range': invalid range"),
        (lambda m: json.dumps({**m, "mos_range": [math.nan, 5]}), r"column 'mos_range': invalid range"),
        (lambda m: json.dumps({**m, "mos_range": [True, 5]}), r"column 'mos_range': expected \[low, high\]"),
        (lambda m: json.dumps({**m, "attributes": "overall"}), r"column 'attributes': expected a list of names"),
        (lambda m: json.dumps({**m, "attributes": [1, 2]}), r"column 'attributes': expected a list of names"),
        (lambda m: json.dumps({**m, "attributes": []}), r"column 'attributes': empty attribute list"),
        (lambda m: json.dumps({**m, "attributes": ["overall", "overall"]}), r"duplicate attribute"),
        (lambda m: json.dumps({**m, "checksums": "deadbeef"}), r"column 'checksums': expected a JSON object"),
        (lambda m: json.dumps({k: v for k, v in m.items() if k != "source"}), r"column 'source': required key"),
    ],
    ids=["truncated", "empty", "list", "range_str", "range_3", "range_reversed", "range_nan", "range_bool",
         "attrs_str", "attrs_int", "attrs_empty", "attrs_dup", "checksums_str", "no_source"],
)
def test_malformed_dataset_json_refused(copy, edit, match):
    _edit_meta(copy, edit)
    with pytest.raises(DataError, match=match):
        read_dataset(copy)


def test_malformed_dataset_json_stops_training_with_one_line(toy_dataset, tmp_path):
    root = tmp_path / "proj"
    params = make_project(root, toy_dataset.root, epochs=1)
    _edit_meta(root / "build" / "datasets" / "toy", lambda m: json.dumps({**m, "mos_range": "1 to 5"}))
    proc = run_iqalab(root, params, "train", "e")
    assert proc.returncode == 2
    assert "dataset.json column 'mos_range'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------- params
def _params(**train) -> dict:
    return toy_params(e={"dataset": "toy", "model": dict(TINY_MODEL), "train": train})


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["experiments"]["e"]["train"].update(scheduler="step", step_epochs=[]),
         "experiments.e.train.step_epochs"),
        (lambda p: p["experiments"]["e"]["train"].update(scheduler="step"), "experiments.e.train.step_epochs"),
        (lambda p: p["train_defaults"].update(scheduler="step", step_epochs=[]), "train_defaults.step_epochs"),
        (lambda p: p["experiments"]["e"].update(splits=None), "experiments.e.splits"),
        (lambda p: p["experiments"]["e"].update(splits="scene"), "experiments.e.splits"),
        (lambda p: p["train_defaults"].update(step_epochs=[math.inf]), "train_defaults.step_epochs[0]: NaN/inf"),
    ],
    ids=["step_empty", "step_missing", "defaults_step_empty", "splits_null", "splits_str", "step_inf"],
)
def test_params_with_empty_or_wrong_lists_name_the_key(mutate, expected):
    raw = _params()
    parse_params(raw)
    mutate(raw)
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_step_scheduler_with_epochs_is_accepted():
    params = parse_params(_params(scheduler="step", step_epochs=[1], gamma=0.5))
    assert params.train_config("e").step_epochs == [1]


# ----------------------------------------------------------------------------------------------- tables
def _tamper(root: Path, table: str, frame: pd.DataFrame) -> None:
    """Replace a table *and* update dataset.json's checksum, as a careful forger (or a buggy tool) would."""
    path = root / f"{table}.parquet"
    frame.to_parquet(path, index=False)
    meta = json.loads((root / "dataset.json").read_text())
    meta.setdefault("checksums", {})[f"{table}.parquet"] = sha256_file(path)
    (root / "dataset.json").write_text(json.dumps(meta))


def test_image_listed_twice_in_a_split_refused(copy):
    splits = pd.read_parquet(copy / "splits.parquet")
    row = splits.index[(splits["split"] == "random_00")][3]
    dup = splits.loc[[row]].assign(role="test" if splits.loc[row, "role"] != "test" else "train")
    _tamper(copy, "splits", pd.concat([splits, dup], ignore_index=True))
    with pytest.raises(DataError, match=rf"splits\.parquet row {len(splits)} column 'image_id': image listed twice "
                                        r"in split 'random_00'"):
        read_dataset(copy)


def test_unknown_image_in_splits_refused(copy):
    splits = pd.read_parquet(copy / "splits.parquet")
    splits.loc[5, "image_id"] = "not_an_image"
    _tamper(copy, "splits", splits)
    with pytest.raises(DataError, match=r"splits\.parquet row 5 column 'image_id': unknown image id 'not_an_image'"):
        read_dataset(copy)


def test_splits_table_leaking_a_scene_refused(copy):
    """One image of a test scene is moved to the training role of the scene split (images table unchanged)."""
    splits = pd.read_parquet(copy / "splits.parquet")
    scene_rows = splits.index[(splits["split"] == "scene") & (splits["role"] == "test")]
    splits.loc[scene_rows[0], "role"] = "train"
    _tamper(copy, "splits", splits)
    with pytest.raises(DataError, match=r"splits\.parquet row \d+ column 'role': scene '\w+' appears in more than "
                                        r"one role of the scene-level split 'scene'"):
        read_dataset(copy)


def test_declared_scene_level_split_is_checked_whatever_its_name(copy):
    """A split not named ``scene*`` but declared scene-level in dataset.json (e.g. an official split) is checked."""
    splits = pd.read_parquet(copy / "splits.parquet")
    official = splits[splits["split"] == "scene"].assign(split="official")
    images = pd.read_parquet(copy / "images.parquet").set_index("image_id")
    test_scene = images.loc[official[official["role"] == "test"]["image_id"].iloc[0], "scene"]
    first_of_scene = official.index[official["image_id"].map(images["scene"]) == test_scene][0]
    official.loc[first_of_scene, "role"] = "train"
    _tamper(copy, "splits", pd.concat([splits, official], ignore_index=True))
    read_dataset(copy)  # not declared scene-level: an image-level split may mix scenes
    _edit_meta(copy, lambda m: json.dumps({**m, "scene_level_splits": ["scene", "official"]}))
    with pytest.raises(DataError, match=r"scene-level split 'official'"):
        read_dataset(copy)


@pytest.mark.parametrize(
    ("table", "column", "match"),
    [
        ("images", "mos_sharpness", r"images\.parquet column 'mos_sharpness': attribute has no score at all"),
        ("images", "width", r"images\.parquet row 2 column 'width': missing value"),
        ("splits", "role", r"splits\.parquet row 2 column 'role': missing value"),
    ],
)
def test_nan_where_a_value_is_required_refused(copy, table, column, match):
    frame = pd.read_parquet(copy / f"{table}.parquet")
    if column.startswith("mos_"):
        frame[column] = np.nan  # an attribute column with no score at all
    else:
        frame[column] = frame[column].astype(object if column == "role" else float)
        frame.loc[2, column] = None if column == "role" else np.nan
    _tamper(copy, table, frame)
    with pytest.raises(DataError, match=match):
        read_dataset(copy)


def test_nan_vote_and_nan_preference_refused_on_write(toy_dataset, tmp_path):
    ds = read_dataset(shutil.copytree(toy_dataset.root, tmp_path / "toy"))
    ids = ds.images["image_id"].tolist()
    ds.ratings = pd.DataFrame({"image_id": ids[:3], "rater": ["r1", "r1", "r1"], "attribute": "overall",
                               "score": [3.0, np.nan, 4.0]})
    with pytest.raises(DataError, match=r"ratings\.parquet row 1 column 'score': missing value"):
        write_dataset(ds)
    ds.ratings = None
    ds.pairs = pd.DataFrame({"image_a": ids[:2], "image_b": ids[2:4], "attribute": "overall", "p": [1.0, np.nan],
                             "source": "mos", "fine": False})
    with pytest.raises(DataError, match=r"pairs\.parquet row 1 column 'p': missing value"):
        write_dataset(ds)
    assert (ds.root / "dataset.json").is_file(), "a refused write leaves the previous dataset readable"
    read_dataset(ds.root)
