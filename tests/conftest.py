"""Shared fixtures: a tiny real-photo dataset (the toy builder), its cache, and a throw-away project folder."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import iqalab  # noqa: F401  # before numpy loads: this process runs the portable numerics its `iqalab` subprocesses run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

TOY_CACHE = 64

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two xdist workers on two cores: one intra-op thread each, or tiny convolutions oversubscribe and crawl
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory: pytest.TempPathFactory):
    """A validated toy dataset (4 scenes x 5 images, 72 px) with a 64 px cache, shared read-only by tests."""
    from iqalab.data.cache import build_cache
    from iqalab.data.schema import read_dataset
    from iqalab.data.toy import build_toy

    root = tmp_path_factory.mktemp("datasets") / "toy"
    build_toy(root, n_scenes=4, per_scene=5, size=72, seed=0)
    ds = read_dataset(root, check_files=True)
    build_cache(ds, TOY_CACHE, progress=False)
    return ds


def git(root: Path, *args: str) -> str:
    """``git <args>`` in repository ``root`` with a fixed test identity and no signing; its stdout, stripped."""
    cmd = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false",
           *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def toy_params(**experiments: dict) -> dict:
    """A params mapping over the toy dataset with the given experiments."""
    return {
        "seed": 0,
        "datasets": {"toy": {"source": "toy", "builder": "toy", "cache_size": TOY_CACHE,
                             "options": {"n_scenes": 4, "per_scene": 5, "size": 72}}},
        "train_defaults": {"epochs": 2, "batch_size": 8, "crop": 48, "lr": 1e-3},
        "experiments": experiments,
    }


@dataclass
class Project:
    """A scratch project folder; ``write_params`` writes its params.yaml and returns the validated Params."""

    root: Path

    def write_params(self, params: dict):  # noqa: ANN201
        from iqalab.config import load_params

        path = self.root / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        return load_params(path)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A scratch project (dvc.yaml marker, cwd, IQALAB_WORKDIR): outputs land inside it, not in the repo."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("IQALAB_WORKDIR", str(tmp_path))
    monkeypatch.delenv("IQALAB_PARAMS", raising=False)
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path)


@pytest.fixture
def one_thread():
    """Tiny convolutions on a shared 2-core machine run many times faster on one thread (no spin-waiting);
    the thread count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def killed_after_epochs(epochs: int) -> Iterator[None]:
    """Training inside the block is interrupted (``KeyboardInterrupt``) right after the resume point ``last.pt`` of
    its ``epochs``-th epoch is written, as a kill there would leave it; the engine's writer is restored after."""
    import iqalab.train.engine as engine

    original = engine.save_checkpoint
    saved = {"n": 0}

    def save_then_kill(path: Path, state: dict) -> None:
        original(path, state)
        if path.name == "last.pt":
            saved["n"] += 1
            if saved["n"] == epochs:
                raise KeyboardInterrupt(f"simulated kill after epoch {epochs}")

    engine.save_checkpoint = save_then_kill
    try:
        yield
    finally:
        engine.save_checkpoint = original
