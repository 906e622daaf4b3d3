"""Parallel experiments with DVC's queue: ``dvc exp run --queue -S ...`` then ``dvc queue start -j 2``.

A real run, not a mock: a throw-away git + DVC project holds a cut-down iqalab pipeline (the ``ingest`` and
``train`` stages of ``dvc.yaml``, same ``foreach`` templating, same ``params`` keys, the same ``iqalab`` commands) on
the toy dataset. Two experiments that differ in one parameter are queued, two celery workers run them, and
``dvc exp show --json`` must list both with their parameter and the metric their ``train`` stage wrote
(docs/experiments.md documents the workflow and the pitfalls this test steers around).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import toy_params

pytestmark = pytest.mark.slow

TINY = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 16}
HIDDEN = {"narrow": 8, "wide": 32}  # experiment name -> experiments.e.model.hidden
QUEUE_TIMEOUT = 420  # seconds for both experiments; they take ~20 s on an idle 2-core CPU

# The ingest and train stages of the project's dvc.yaml, calling the commands instead of the notebooks
DVC_YAML = """\
stages:
  ingest:
    foreach: ${datasets}
    do:
      cmd: python -m iqalab -q ingest ${key}
      params:
        - seed
        - datasets.${key}
      outs:
        - build/datasets/${key}
  train:
    foreach: ${experiments}
    do:
      cmd: python -m iqalab -q train ${key}
      deps:
        - build/datasets/${item.dataset}
      params:
        - seed
        - train_defaults
        - experiments.${key}
      outs:
        - build/models/${key}
        - results/predictions/${key}.parquet:
            cache: false
      metrics:
        - results/predictions/${key}.json:
            cache: false
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("IQALAB_WORKDIR", "IQALAB_PARAMS"):  # outputs must land in each experiment's own copy
        env.pop(key, None)
    # stages run `python -m iqalab` through the shell: this interpreter first on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", GIT_TERMINAL_PROMPT="0")
    return env


def _run(cmd: list[str], root: Path, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _dvc(root: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    return _run([sys.executable, "-m", "dvc", *args], root, **kwargs)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(["git", *args], root)


def _queue_states(root: Path) -> dict[str, str]:
    """Task name -> Queued / Running / Success / Failed, parsed from ``dvc queue status``."""
    states = {}
    for line in _dvc(root, "queue", "status", timeout=60).stdout.splitlines():
        parts = line.split()  # "<task id>  <name>  <hh:mm> <AM|PM>  <status>"
        if len(parts) >= 3 and parts[1] in HIDDEN:
            states[parts[1]] = parts[-1]
    return states


def _processes_in(root: Path) -> list[int]:
    """Processes whose working directory is inside ``root``: the queue's daemon, workers, executors, stages."""
    pids = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    prefix = str(root.resolve())
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)")
        except OSError:
            continue
        if cwd == prefix or cwd.startswith(prefix + os.sep):
            pids.append(int(entry.name))
    return pids


def _shut_down_queue(root: Path, kill_running: bool) -> None:
    """Stop the workers and wait for them; kill whatever of ours is left (``dvc queue stop --kill`` orphans the
    stage commands it interrupts, so running tasks are killed one by one first)."""
    if kill_running:
        for name, state in _queue_states(root).items():
            if state == "Running":
                _dvc(root, "queue", "kill", name, timeout=60, check=False)
    _dvc(root, "queue", "stop", timeout=60, check=False)
    deadline = time.monotonic() + 30
    while _processes_in(root) and time.monotonic() < deadline:
        time.sleep(0.5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = _processes_in(root)
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if left:
            time.sleep(1)


def _experiments(exp_show: list[dict]) -> dict[str, dict]:
    """Experiment name -> its ``data`` (params, metrics) from ``dvc exp show --json``, whatever the nesting."""
    found: dict[str, dict] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("name") in HIDDEN and isinstance(node.get("data"), dict) and "params" in node["data"]:
                found[node["name"]] = node["data"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(exp_show)
    return found


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    """A git + DVC project with the cut-down pipeline, its dataset ingested and committed as the baseline."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: DVC experiments need a git repository")
    root = tmp_path / "project"
    root.mkdir()
    params = toy_params(e={"dataset": "toy", "model": TINY, "train": {"epochs": 1}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(DVC_YAML)
    _git(root, "init", "-q")
    for key, value in (("user.name", "iqalab test"), ("user.email", "test@iqalab.invalid"),
                       ("commit.gpgsign", "false")):
        _git(root, "config", key, value)
    _dvc(root, "init", "-q")
    # the baseline commit: queued experiments start from HEAD and check the dataset out of the shared cache
    _dvc(root, "repro", "-q", "ingest@toy", timeout=300)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "baseline: toy dataset ingested")
    return root


def test_queue_runs_two_experiments_in_parallel(dvc_project: Path) -> None:
    root = dvc_project
    for name, hidden in HIDDEN.items():
        _dvc(root, "exp", "run", "--queue", "-n", name, "-S", f"experiments.e.model.hidden={hidden}")
    assert _queue_states(root) == dict.fromkeys(HIDDEN, "Queued")

    started = time.monotonic()
    states: dict[str, str] = {}
    max_running, elapsed = 0, float("nan")
    finished = False
    try:
        # the workers are detached and inherit stdout/stderr: a pipe here would block until they exit
        with open(root.parent / "queue-start.log", "w") as log:
            subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=root, env=_env(),
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=120, check=True)
        while time.monotonic() - started < QUEUE_TIMEOUT:
            states = _queue_states(root)
            max_running = max(max_running, sum(s == "Running" for s in states.values()))
            if len(states) == len(HIDDEN) and all(s in ("Success", "Failed") for s in states.values()):
                finished = True
                elapsed = time.monotonic() - started
                break
            time.sleep(1)
    finally:
        stopping = time.monotonic()
        _shut_down_queue(root, kill_running=not finished)
        shutdown = time.monotonic() - stopping
    logs = {name: _dvc(root, "queue", "logs", name, timeout=60, check=False).stdout for name in HIDDEN}
    assert finished, f"queue not done after {QUEUE_TIMEOUT} s: {states}\n{logs}"
    assert states == dict.fromkeys(HIDDEN, "Success"), f"{states}\n{logs}"
    assert not _processes_in(root), "queue workers or stage commands left running"
    print(f"dvc queue start -j 2: {len(HIDDEN)} experiments in {elapsed:.1f} s, max {max_running} running at once, "
          f"workers down {shutdown:.1f} s later")
    for log in logs.values():
        # each worker ran in its own copy, reused the baseline's dataset from the cache and trained
        assert "Stage 'ingest@toy' didn't change, skipping" in log, log
        assert "Running stage 'train@e'" in log, log

    shown = json.loads(_dvc(root, "exp", "show", "--json", timeout=120).stdout)
    exps = _experiments(shown)
    assert set(exps) == set(HIDDEN), f"experiments in dvc exp show: {sorted(exps)}"
    n_params = {}
    for name, hidden in HIDDEN.items():
        params = exps[name]["params"]["params.yaml"]["data"]
        assert params["experiments"]["e"]["model"]["hidden"] == hidden
        assert params["experiments"]["e"]["train"] == {"epochs": 1}
        metrics = exps[name]["metrics"]["results/predictions/e.json"]["data"]
        assert metrics["model_kwargs"]["hidden"] == hidden, "the stage must have read the experiment's params"
        n_params[name] = metrics["n_params"]
    assert n_params["wide"] > n_params["narrow"] > 0, n_params

    # the workspace is untouched by queued runs until an experiment is applied
    assert yaml.safe_load((root / "params.yaml").read_text())["experiments"]["e"]["model"]["hidden"] == 16
    assert not (root / "results").exists()
    _dvc(root, "exp", "apply", "wide")
    applied = json.loads((root / "results" / "predictions" / "e.json").read_text())
    assert applied["n_params"] == n_params["wide"]
    assert (root / "build" / "models" / "e" / "scene" / "best.pt").is_file()
