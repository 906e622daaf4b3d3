"""``train.separate_attributes``: one model per attribute (PIQ23's protocol, FHIQA seed 001 Sec. IV-D), each trained,
selected and stored on its own, the predictions of all of them in the experiment's one predictions file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def test_only_attribute_keeps_one_attribute_and_its_pairs_and_ratings(toy_dataset):
    from dataclasses import replace

    from iqalab.data.schema import DataError

    pairs = pd.DataFrame({"image_a": ["a", "b"], "image_b": ["c", "d"], "attribute": ["overall", "noise"],
                          "p": [0.2, 0.7], "source": ["mos", "mos"], "fine": [False, True]})
    ratings = pd.DataFrame({"image_id": ["a", "a", "b"], "rater": ["r1", "r1", "r2"],
                            "attribute": ["noise", "overall", "noise"], "score": [3.0, 4.0, 2.0]})
    ds = replace(toy_dataset, pairs=pairs, ratings=ratings)
    one = ds.only_attribute("noise")
    assert one.attributes == ["noise"]
    assert one.pairs["p"].tolist() == [0.7] and one.ratings["score"].tolist() == [3.0, 2.0]
    assert ds.attributes == ["overall", "sharpness", "noise"]  # the dataset itself is untouched
    assert one.images is ds.images and one.root == ds.root
    assert toy_dataset.only_attribute("overall").pairs is None  # no pairs stays no pairs
    with pytest.raises(DataError, match="no attribute 'colour'.*overall"):
        ds.only_attribute("colour")


def test_run_plan_and_split_notes():
    from iqalab.train.engine import notes_of_split, run_plan

    assert run_plan(["s0", "s1"], ["a", "b"], False) == [("s0", None), ("s1", None)]
    assert run_plan(["s0", "s1"], ["a", "b"], True) == [("s0", "a"), ("s0", "b"), ("s1", "a"), ("s1", "b")]
    # the attributes' models saw the same test images: a count is the largest of theirs, not the sum
    merged = notes_of_split([{"n_missing": 0, "kind": "x"}, {"n_missing": 3}, {"n_missing": 2, "flag": True}])
    assert merged == {"n_missing": 3, "kind": "x", "flag": True}


def test_engine_trains_one_model_per_attribute(toy_dataset, project, one_thread, monkeypatch):
    """Every attribute gets its own one-head model in <split>/<attribute>/, selected on its own validation SRCC;
    the experiment's predictions are theirs (the predictions of each attribute's checkpoint), its JSON says so
    and counts the parameters of all of them; the consumers that take one checkpoint name the attribute folders."""
    from iqalab.config import parse_params
    from iqalab.inference import experiment_checkpoint
    from iqalab.stages.cross_dataset import training_checkpoint
    from iqalab.stages.profile import profile_experiment
    from iqalab.train.engine import load_checkpoint, model_from_checkpoint

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    model = {"name": "backbone_mlp", "backbone": "resnet18", "pretrained": False, "hidden": 16}
    params = parse_params(toy_params(
        sep={"dataset": "toy", "model": model, "splits": ["random_00"],
             "train": {"epochs": 2, "separate_attributes": True, "val_images": "train", "monitor": "last"}},
        joint={"dataset": "toy", "model": model, "splits": ["random_00"],
               "train": {"epochs": 2, "val_images": "train", "monitor": "last"}}))
    from iqalab.train.engine import train_experiment

    preds = train_experiment(params, "sep", project.root, progress=False)
    joint = train_experiment(params, "joint", project.root, progress=False)
    attrs = toy_dataset.attributes
    folder = project.root / "build" / "models" / "sep" / "random_00"
    assert not (folder / "best.pt").exists()
    n_params = 0
    for attr in attrs:
        ckpt = load_checkpoint(folder / attr / "best.pt")
        one = model_from_checkpoint(ckpt, attr)
        assert one.attributes == [attr]  # one head: a model of its own
        assert ckpt["config"]["attributes"] == [attr]
        n_params += one.num_parameters()
    assert set(preds["attribute"]) == set(attrs)
    assert len(preds) == len(joint)  # every image and attribute, as the joint model's
    # each attribute's rows are its own model's: the models differ (their heads saw different targets)
    sep_test = preds[preds["role"] == "test"].pivot(index="image_id", columns="attribute", values="pred")
    joint_test = joint[joint["role"] == "test"].pivot(index="image_id", columns="attribute", values="pred")
    assert not np.allclose(sep_test[attrs].to_numpy(), joint_test[attrs].to_numpy())
    meta = json.loads((project.root / "results" / "predictions" / "sep.json").read_text())
    assert meta["separate_attributes"] is True and meta["n_params"] == n_params
    assert json.loads((project.root / "results" / "predictions" / "joint.json").read_text())[
        "separate_attributes"] is False
    # one checkpoint per attribute: asked for the experiment's one checkpoint, the consumers say where they are
    ckpt, why = experiment_checkpoint(project.root, "sep")
    assert ckpt is None and "one model per attribute" in why and "random_00/<attribute>/best.pt" in why
    ckpt, why = experiment_checkpoint(project.root, "sep", attribute="noise")
    assert ckpt == folder / "noise" / "best.pt" and why == ""
    assert training_checkpoint(project.root, "sep")[0] is None
    reads: list[Path] = []  # profile reads the experiment's record once (status, attributes, checkpoint)
    read_text = Path.read_text

    def counted(self: Path, *args, **kwargs) -> str:
        if self.name == "sep.json":
            reads.append(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    profile = profile_experiment(params, "sep", project.root, image_size=64, repeats=1)
    monkeypatch.undo()
    assert reads == [project.root / "results" / "predictions" / "sep.json"]
    assert profile["models_per_image"] == 3 and profile["checkpoint"].endswith("random_00/overall/best.pt")
    assert profile["params"] == n_params // 3


def test_caption_names_the_rows_with_one_model_per_attribute():
    from iqalab.paper_tables.common import separate_attribute_notes

    meta = {"a": {"separate_attributes": True}, "b": {"separate_attributes": False}, "c": {}}
    assert separate_attribute_notes(meta, {"a": "FHIQA", "b": "HyperIQA"}) == [
        "one model per attribute (train.separate_attributes; PIQ23's protocol), each with its own selected epoch, "
        "Params (M) counting all of them: FHIQA"]
    assert separate_attribute_notes({"b": {"separate_attributes": False}}, {}) == []


def test_experiment_checkpoint_takes_the_record_its_caller_read(tmp_path):
    """``training_record`` reads ``results/predictions/<e>.json`` (None when missing); ``experiment_checkpoint``
    uses the record it is given instead of reading the file again; ``per_attribute_models`` reads a record."""
    from iqalab.inference import experiment_checkpoint, per_attribute_models, training_record

    record = {"splits": ["random_00"], "attributes": ["overall", "noise"], "separate_attributes": True}
    assert per_attribute_models(record) == ["overall", "noise"]
    assert per_attribute_models({**record, "separate_attributes": False}) == [] == per_attribute_models(None)
    assert training_record(tmp_path, "sep") is None
    ckpt = tmp_path / "build" / "models" / "sep" / "random_00" / "noise" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    assert experiment_checkpoint(tmp_path, "sep", attribute="noise", record=record) == (ckpt, "")
    assert experiment_checkpoint(tmp_path, "sep", attribute="noise")[1].startswith("not trained")
    meta = tmp_path / "results" / "predictions" / "sep.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps(record))
    assert training_record(tmp_path, "sep") == record
    assert experiment_checkpoint(tmp_path, "sep", attribute="noise") == (ckpt, "")
    assert "one of overall, noise" in experiment_checkpoint(tmp_path, "sep", record=record)[1]


def test_one_reader_of_the_training_record(tmp_path):
    """``status.training_record`` is the one reader of ``results/predictions/<e>.json`` (``inference`` uses the
    same function); ``experiment_unavailable`` reads through it and says None for a missing, unreadable or ok
    record, the status for a model that could not run."""
    from iqalab import inference, status

    assert inference.training_record is status.training_record
    assert status.experiment_unavailable(tmp_path, "e") is None
    meta = tmp_path / "results" / "predictions" / "e.json"
    meta.parent.mkdir(parents=True)
    meta.write_text("{not json")
    assert status.experiment_unavailable(tmp_path, "e") is None
    meta.write_text(json.dumps({"splits": ["scene"]}))
    assert status.experiment_unavailable(tmp_path, "e") is None
    meta.write_text(json.dumps({"splits": [], "status": "pyiqa not installed"}))
    assert status.experiment_unavailable(tmp_path, "e") == "pyiqa not installed"
    assert status.training_record(tmp_path, "e")["status"] == "pyiqa not installed"
