"""Fault-injection and hostile-input suite (issue 17); helpers shared by its test files.

The faults are real where that is cheap (SIGKILL of a ``python -m iqalab`` subprocess, a file-size limit that makes
writes fail like a full disk, a second ``dvc repro`` while the first holds the lock) and simulated by a patched
writer otherwise. ``docs/reliability.md`` lists every fault and input class, the test that covers it and the result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ..conftest import TOY_CACHE, toy_params

#: the tiny model of every training fault test (about 0.3 s per epoch on one CPU thread)
TINY_MODEL = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 16}


def subprocess_env(root: Path) -> dict[str, str]:
    """Environment of an ``iqalab`` subprocess: outputs under ``root``, one thread, offline."""
    env = dict(os.environ)
    env.update(IQALAB_WORKDIR=str(root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               MPLBACKEND="Agg", PYTHONHASHSEED="0")
    env.pop("IQALAB_PARAMS", None)
    return env


def make_project(root: Path, toy_root: Path | None = None, **train: Any) -> Path:
    """A scratch project in ``root``: ``dvc.yaml`` marker, ``params.yaml`` with experiment ``e`` on ``toy``.

    With ``toy_root`` the (already cached) toy dataset is copied to ``build/datasets/toy``.
    Returns the params file.
    """
    import shutil

    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    if toy_root is not None:
        shutil.copytree(toy_root, root / "build" / "datasets" / "toy")
    params = toy_params(e={"dataset": "toy", "model": dict(TINY_MODEL), "train": dict(train)})
    assert params["datasets"]["toy"]["cache_size"] == TOY_CACHE
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def iqalab_command(params: Path, *args: str, quiet: bool = True) -> list[str]:
    """``python -m iqalab --params <params> [-q] <args>`` with this interpreter."""
    return [sys.executable, "-m", "iqalab", "--params", str(params), *(["-q"] if quiet else []), *args]


def run_iqalab(root: Path, params: Path, *args: str, timeout: float = 120, quiet: bool = True,
               preexec: Any = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion in ``root`` and return the completed process (stdout/stderr as text)."""
    return subprocess.run(iqalab_command(params, *args, quiet=quiet), cwd=root, env=subprocess_env(root), capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec, check=False)
