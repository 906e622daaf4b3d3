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


def _trained(root: Path) -> Path:
    """A checkpoint and predictions record laid out as training writes them (random weights, real BN stats)."""
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
    ckpt = root / "build" / "models" / "exp" / "r0" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": config, "epoch": 3})
    out = root / "results" / "predictions"
    out.mkdir(parents=True)
    (out / "exp.json").write_text(json.dumps({"experiment": "exp", "label": "Test model", "dataset": "toy",
                                              "splits": ["r0"], "n_params": 123, "status": "ok"}))
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 20)
    pd.DataFrame({"image_id": [f"i{k}" for k in range(20)], "attribute": "overall", "pred": mos + rng.normal(0, .3, 20),
                  "mos": mos, "split": "r0", "role": "test"}).to_parquet(out / "exp.parquet")
    return ckpt


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
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="not an iqalab export"):
        load_export(tmp_path / "half")
