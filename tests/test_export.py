"""``iqalab export``: the exported folder scores images exactly as the checkpoint it came from, in a fresh process
outside the repository, without ``build/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from iqalab.export import ExportError, export_experiment, load_export
from iqalab.inference import Scorer
from iqalab.models import build_model
from iqalab.train.engine import save_checkpoint

KWARGS = {"backbone": "mobilenetv3_small_050", "pretrained": False}


def _trained(root: Path, splits: tuple[str, ...] = ("r0",)) -> Path:
    """A checkpoint per split and the predictions record laid out as training writes them (random weights,
    real BN stats); returns the first split's checkpoint."""
    torch.manual_seed(0)
    model = build_model("backbone_mlp", ["overall", "sharpness"], **KWARGS)
    for m in model.modules():  # non-trivial running statistics: a lost buffer would change the scores
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, torch.nn.Linear):  # a spread of scores, not a constant
            m.weight.data.mul_(20)
    config = {"model_name": "backbone_mlp", "model_kwargs": KWARGS, "attributes": ["overall", "sharpness"],
              "mos_range": [1.0, 5.0], "cache_size": 72, "eval_crop": 64, "train": {"lr": 1e-3}, "split": "r0",
              "seed": 0, "data": {"images.csv": "ab" * 32},
              "cam_stats": {"mean": [2.0, 0.01, 100.0, 5000.0, 0.0, 0.0, 0.0], "std": [1.0] * 7}}
    for split in splits:
        ckpt = root / "build" / "models" / "exp" / split / "best.pt"
        ckpt.parent.mkdir(parents=True)
        save_checkpoint(ckpt, {"model": model.state_dict(), "config": {**config, "split": split}, "epoch": 3})
    out = root / "results" / "predictions"
    out.mkdir(parents=True)
    (out / "exp.json").write_text(json.dumps({"experiment": "exp", "label": "Test model", "dataset": "toy",
                                              "splits": list(splits), "n_params": 123, "status": "ok"}))
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 20)
    pd.DataFrame({"image_id": [f"i{k}" for k in range(20)], "attribute": "overall", "pred": mos + rng.normal(0, .3, 20),
                  "mos": mos, "split": "r0", "role": "test"}).to_parquet(out / "exp.parquet")
    return root / "build" / "models" / "exp" / splits[0] / "best.pt"


def test_export_scores_like_its_checkpoint_in_a_fresh_process(tmp_path: Path) -> None:
    from iqalab.stages.score import score_images

    root = tmp_path / "project"
    ckpt = _trained(root)
    folder = export_experiment(root, "exp", tmp_path / "published" / "exp")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "metrics.json",
                                                        "model.safetensors", "preprocessor_config.json"]
    assert json.loads((folder / "preprocessor_config.json").read_text())["eval_crop"] == 64
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["training"]["n_params"] == 123 and metrics["test"][0]["n"] == 20
    assert metrics["test"][0]["srcc"] > 0.8
    assert "| r0 | overall | 20 |" in (folder / "README.md").read_text()
    assert not list(tmp_path.glob("published/.*"))  # no partial folder left

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for k, size in enumerate([(90, 120), (64, 64), (150, 100)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / f"im{k}.png")
    expected = score_images(ckpt, [images], tmp_path / "expected.csv", 4, "cpu", False)
    # in this process: the folder rebuilds the same model bit for bit
    pixels = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(images.iterdir())]
    direct, exported = Scorer(ckpt, "cpu").score(pixels), Scorer(folder, "cpu").score(pixels)
    assert all(np.array_equal(direct[a], exported[a]) for a in ("overall", "sharpness"))

    elsewhere = tmp_path / "elsewhere"  # no dvc.yaml, no build/ above it: only the folder is read
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IQALAB_")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([sys.executable, "-m", "iqalab", "-q", "score", "--checkpoint", str(folder),
                           "--device", "cpu", "--out", "scores.csv", str(images)],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = pd.read_csv(elsewhere / "scores.csv")
    assert got[["overall", "sharpness"]].equals(pd.read_csv(tmp_path / "expected.csv")[["overall", "sharpness"]])
    assert got["overall"].std() > 0.05  # the images score differently: the comparison is not of constants
    assert len(got) == len(expected) == 3


def test_export_refusals(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not trained"):
        export_experiment(tmp_path, "missing")
    with pytest.raises(ExportError, match=r"unknown experiment 'missing' \(known: a, b\)"):
        export_experiment(tmp_path, "missing", known=["a", "b"])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="not an iqalab export"):
        load_export(tmp_path / "half")


def test_export_replaces_only_an_earlier_export(tmp_path: Path) -> None:
    """``--out`` is replaced only when it holds an earlier export (its ``config.json`` of this format and
    nothing export did not write) or nothing; a file, a folder of other files, or an export beside other files
    is refused in one line naming the path, and nothing is touched (no hidden ``.old`` copy either)."""
    root = tmp_path / "project"
    _trained(root)
    folder = export_experiment(root, "exp", tmp_path / "out" / "exp")
    (folder / "README.md").write_text("stale card")
    assert export_experiment(root, "exp", folder) == folder  # an earlier export: replaced whole
    assert (folder / "README.md").read_text() != "stale card"
    empty = tmp_path / "out" / "empty"
    empty.mkdir()
    assert (export_experiment(root, "exp", empty) / "model.safetensors").is_file()

    mine = tmp_path / "out" / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    a_file = tmp_path / "out" / "notes.txt"
    a_file.write_text("keep me")
    with_git = tmp_path / "out" / "hub_clone"
    with_git.mkdir()
    for name in os.listdir(folder):
        (with_git / name).write_bytes((folder / name).read_bytes())
    (with_git / ".git").mkdir()
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    for target, reason in ((mine, "not an iqalab export"), (a_file, "not a folder"), (with_git, r"\.git")):
        with pytest.raises(ExportError, match=rf"{target}.*{reason}"):
            export_experiment(root, "exp", target)
    assert (mine / "thesis.tex").read_text() == "years of work" and a_file.read_text() == "keep me"
    assert (with_git / ".git").is_dir()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before  # no .old or .partial left


@pytest.mark.parametrize("where", ["parent_is_file", "unwritable"])
def test_export_refuses_an_out_it_cannot_create_before_reading_the_checkpoint(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``out`` below a file, or in a folder that is not writable, is refused in one line naming it and the
    nearest existing folder, before the checkpoint is read; nothing is created."""
    import iqalab.train.engine as engine

    root = tmp_path / "project"
    _trained(root)
    (tmp_path / "a_file").write_text("x")
    out = {"parent_is_file": tmp_path / "a_file" / "exp", "unwritable": tmp_path / "ro" / "sub" / "exp"}[where]
    if where == "unwritable":  # root may write anywhere: ask os.access as an unprivileged user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != tmp_path and real(p, mode, **kw))

    def never(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the checkpoint was read before out was checked")

    monkeypatch.setattr(engine, "load_checkpoint", never)  # export imports it when it runs
    reason = {"parent_is_file": f"{tmp_path / 'a_file'} is a file, not a folder",
              "unwritable": f"folder {tmp_path} is not writable"}[where]
    with pytest.raises(ExportError) as info:
        export_experiment(root, "exp", out)
    assert str(info.value) == f"cannot export exp to {out}: {reason}"
    assert not (tmp_path / "ro").exists() and (tmp_path / "a_file").read_text() == "x"


def test_export_split_and_unknown_experiment_from_the_command_line(project, capsys) -> None:
    """``--split`` chooses the trained split (default: ``full_train`` when trained, else the first), and the
    command says which one it used; an unknown experiment is named with the known ones; an untrained split is
    refused with the trained ones; the weights get the mode of the other files (umask, not 0600)."""
    from iqalab.__main__ import main

    from .conftest import toy_params

    project.write_params(toy_params(known_one={"dataset": "toy", "model": {"name": "backbone_mlp"}}))
    _trained(project.root, ("r0", "full_train", "r1"))
    old = os.umask(0o022)
    try:
        assert main(["-q", "export", "exp", "--out", str(project.root / "default")]) == 0
        assert "split full_train" in capsys.readouterr().out
        assert main(["-q", "export", "exp", "--split", "r1", "--out", str(project.root / "r1")]) == 0
    finally:
        os.umask(old)
    assert "split r1" in capsys.readouterr().out
    metrics = json.loads((project.root / "r1" / "metrics.json").read_text())
    assert metrics["checkpoint"] == "build/models/exp/r1/best.pt"
    modes = {p.name: p.stat().st_mode & 0o777 for p in (project.root / "r1").iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert main(["-q", "export", "exp", "--split", "r9", "--out", str(project.root / "r9")]) == 2
    err = capsys.readouterr().err
    assert "split 'r9'" in err and "r0, full_train, r1" in err and err.count("\n") == 1
    assert main(["-q", "export", "nosuch", "--out", str(project.root / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'nosuch' (known: known_one, exp)" in err and err.count("\n") == 1
    assert main(["-q", "export", "known_one", "--out", str(project.root / "x")]) == 2
    assert "not trained" in capsys.readouterr().err
    assert not (project.root / "r9").exists() and not (project.root / "x").exists()


def test_export_defaults_to_the_first_split_without_full_train(project, capsys) -> None:
    """README: ``--split`` defaults to ``full_train`` when trained, *else the first split*, and the command says
    which. Two trained splits and no ``full_train``: the first of the training record's splits (the engine writes
    them sorted, ``results/predictions/<experiment>.json``) is exported, not the other, and the line names it."""
    from iqalab.__main__ import main

    from .conftest import toy_params

    project.write_params(toy_params())
    _trained(project.root, ("r0", "r1"))
    assert json.loads((project.root / "results" / "predictions" / "exp.json").read_text())["splits"] == ["r0", "r1"]
    assert main(["-q", "export", "exp", "--out", str(project.root / "default")]) == 0
    said = capsys.readouterr().out
    assert said.strip() == f"exported exp (split r0) to {project.root / 'default'}", said
    metrics = json.loads((project.root / "default" / "metrics.json").read_text())
    assert metrics["split"] == "r0" and metrics["checkpoint"] == "build/models/exp/r0/best.pt"
    assert json.loads((project.root / "default" / "config.json").read_text())["split"] == "r0"


@pytest.mark.parametrize("name, train, resize", [
    ("backbone_mlp", {}, "square, bicubic"),  # capped, then resized to the square cache and centre-cropped
    ("niqe", {}, None),  # the published model at the file's own resolution
    ("hyperiqa", {"resolution": "native"}, None),  # patches cut from the native pixels
])
def test_the_preprocessor_config_says_what_the_scorer_does(tmp_path: Path, name: str, train: dict,
                                                          resize: str | None) -> None:
    """``preprocessor_config.json`` records the store's ``max_side`` cap and, per kind of model, the resize, crop,
    normalisation and patches that :class:`Scorer` applies to the same checkpoint (it said "square, bicubic" and
    left out ``max_side`` for every model before)."""
    from iqalab.export import _preprocessing
    from iqalab.models import get_model_class

    kwargs = dict(get_model_class(name).smoke_params)
    model = build_model(name, ["overall"], **kwargs)
    config = {"model_name": name, "model_kwargs": kwargs, "attributes": ["overall"], "mos_range": [1.0, 5.0],
              "cache_size": 64, "eval_crop": 48, "max_side": 300, "train": train}
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": config})
    scorer = Scorer(ckpt, "cpu")
    prep, sentence = _preprocessing(config, model)
    assert prep["max_side"] == scorer.max_side == 300 and "capped to 300 px" in sentence
    assert prep["resize"] == resize and (resize is None) == scorer.full_resolution
    assert prep["eval_crop"] == (None if scorer.full_resolution else 48)
    assert prep.get("patches") == json.loads(json.dumps(scorer.patches)) and ("patches" in prep) == (name == "hyperiqa")
    assert (prep["normalize"] is None) == scorer.native
    json.dumps(prep)  # written as JSON
