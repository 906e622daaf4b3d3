"""Command line: one-line errors naming the culprit; ingest, train and score end to end on the toy data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from iqalab.__main__ import main

from .conftest import toy_params

TINY = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 16}


def test_params_typo_is_one_line_naming_the_key(project, capsys):
    raw = toy_params()
    raw["train_defaults"]["bach_size"] = 4
    project.root.joinpath("params.yaml").write_text(__import__("yaml").safe_dump(raw))
    assert main(["check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train_defaults.bach_size: unknown key" in err


def test_missing_dataset_directory(project, capsys):
    raw = toy_params()
    raw["datasets"]["real"] = {"source": "adapter", "builder": "koniq10k", "raw": "data/raw/koniq10k"}
    project.write_params(raw)
    assert main(["-q", "ingest", "real"]) == 2
    err = capsys.readouterr().err
    assert "data/raw/koniq10k: folder not found" in err and err.strip().count("\n") == 0
    assert "koniq10k_scores_and_distributions.csv" in err  # the files expected there


def test_ingest_train_score_end_to_end(project, capsys, tmp_path):
    project.write_params(toy_params(e={"dataset": "toy", "model": TINY, "train": {"epochs": 1}}))
    assert main(["-q", "ingest", "toy"]) == 0
    built = project.root / "build" / "datasets" / "toy"
    assert (built / "dataset.json").is_file() and (built / "cache" / "64.npy").is_file()
    assert not list(project.root.glob("build/datasets/.*partial")), "no staging folder left"
    assert main(["-q", "train", "e"]) == 0
    ckpt = project.root / "build" / "models" / "e" / "scene" / "best.pt"
    out = tmp_path / "scores.csv"
    images = built / "images"
    assert main(["-q", "score", "--checkpoint", str(ckpt), "--out", str(out), str(images)]) == 0
    scores = pd.read_csv(out)
    assert len(scores) == 20 and list(scores.columns) == ["path", "overall", "sharpness", "noise"]
    assert scores[["overall", "sharpness", "noise"]].apply(lambda c: c.between(1, 5)).all().all()
    from iqalab.stages.score import score_images

    # threads decode ahead of the model: any worker count and batch size gives the same scores in file order
    serial = score_images(ckpt, [images], batch_size=3, device="cpu", progress=False, workers=1)
    threaded = score_images(ckpt, [images], batch_size=7, device="cpu", progress=False, workers=3)
    pd.testing.assert_frame_equal(serial, threaded)
    assert serial["path"].tolist() == scores["path"].tolist()
    np.testing.assert_allclose(serial["overall"], scores["overall"], atol=1e-4)
    assert main(["-q", "profile"]) == 0
    profile = json.loads((project.root / "results" / "profile" / "e.json").read_text())
    from iqalab.train.engine import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(ckpt))
    assert profile["params"] == model.num_parameters()
    assert profile["gmacs"] > 0 and profile["latency_ms"] > 0 and profile["device"] == "cpu"


def test_score_rejects_corrupt_image(project, capsys, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    project.write_params(toy_params(e={"dataset": "toy", "model": TINY, "train": {"epochs": 1}}))
    assert main(["-q", "ingest", "toy"]) == 0
    assert main(["-q", "train", "e"]) == 0
    ckpt = project.root / "build" / "models" / "e" / "scene" / "best.pt"
    assert main(["-q", "score", "--checkpoint", str(ckpt), "--out", str(tmp_path / "s.csv"), str(bad)]) == 2
    assert "broken.jpg: cannot decode image" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["models"]])
def test_models_lists_registry(command, capsys):
    assert main(command) == 0
    assert "backbone_mlp" in capsys.readouterr().out
