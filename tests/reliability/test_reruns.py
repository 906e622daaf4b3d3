"""Re-runs and concurrent runs (issue 26): a finished experiment is never destroyed before its replacement is
complete, a finished split is never trained twice, and a second trainer of the same experiment is refused.

The kills are real (``SIGKILL`` of an ``iqalab train`` subprocess inside its N-th checkpoint write, the script of
:mod:`tests.reliability.test_training_kill`); the runs that must complete run in-process (no interpreter start-up).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from iqalab.config import load_params
from iqalab.io import sha256_file
from iqalab.train.engine import DONE_FILE, SPLIT_PREDICTIONS, load_checkpoint, train_experiment

from . import iqalab_command, make_project, run_iqalab, subprocess_env
from .test_training_kill import _KILL_INSIDE_SAVE


def _project(root: Path, toy_root: Path, splits: list[str], **train) -> Path:
    params = make_project(root, toy_root, **train)
    raw = yaml.safe_load(params.read_text())
    raw["experiments"]["e"]["splits"] = splits
    params.write_text(yaml.safe_dump(raw))
    return params


def _set_train(params: Path, **train) -> None:
    raw = yaml.safe_load(params.read_text())
    raw["experiments"]["e"]["train"].update(train)
    params.write_text(yaml.safe_dump(raw))


def _train_in_process(root: Path, params: Path, monkeypatch) -> pd.DataFrame:
    monkeypatch.setenv("IQALAB_WORKDIR", str(root))
    return train_experiment(load_params(params), "e", root, progress=False)


def _kill_at_save(root: Path, params: Path, n: int) -> None:
    """``iqalab train e`` SIGKILLed inside its ``n``-th ``torch.save`` (half the bytes written)."""
    env = subprocess_env(root) | {"KILL_AT_SAVE": str(n)}
    proc = subprocess.run([sys.executable, "-c", _KILL_INSIDE_SAVE, "--params", str(params), "-q", "train", "e"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _snapshot(root: Path) -> dict[str, str]:
    run = root / "build" / "models" / "e" / "scene"
    files = [run / "best.pt", run / "history.json", run / SPLIT_PREDICTIONS, run / DONE_FILE,
             root / "results" / "predictions" / "e.parquet"]
    return {str(p.relative_to(root)): sha256_file(p) for p in files}


def test_unchanged_rerun_trains_nothing(toy_dataset, tmp_path, monkeypatch, caplog):
    root = tmp_path / "proj"
    params = _project(root, toy_dataset.root, ["scene"], epochs=1)
    first = _train_in_process(root, params, monkeypatch)
    before = _snapshot(root)
    mtime = (root / "build" / "models" / "e" / "scene" / "best.pt").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="iqalab.train.engine"):
        again = _train_in_process(root, params, monkeypatch)
    assert "skipped" in caplog.text
    assert (root / "build" / "models" / "e" / "scene" / "best.pt").stat().st_mtime_ns == mtime, "not rewritten"
    assert _snapshot(root) == before
    pd.testing.assert_frame_equal(again, first)


def test_finished_run_of_other_code_is_retrained(toy_dataset, tmp_path, monkeypatch, caplog):
    """The fingerprint includes the run's code (engine.source_hash), so after a code change a finished split is
    retrained, not reused: what makes dvc.yaml's ``persist: true`` on build/models/<exp> safe."""
    from iqalab.train import engine

    root = tmp_path / "proj"
    params = _project(root, toy_dataset.root, ["scene"], epochs=1)
    _train_in_process(root, params, monkeypatch)
    old_fp = load_checkpoint(root / "build" / "models" / "e" / "scene" / "best.pt")["fingerprint"]
    assert engine.source_hash() == engine.source_hash() and len(engine.source_hash()) == 16
    monkeypatch.setattr(engine, "source_hash", lambda: "edited-code")
    with caplog.at_level(logging.INFO, logger="iqalab.train.engine"):
        _train_in_process(root, params, monkeypatch)
    assert "skipped" not in caplog.text
    assert load_checkpoint(root / "build" / "models" / "e" / "scene" / "best.pt")["fingerprint"] != old_fp


def test_killed_rerun_keeps_the_finished_run_whole(toy_dataset, tmp_path, monkeypatch):
    root = tmp_path / "proj"
    params = _project(root, toy_dataset.root, ["scene"], epochs=1)
    _train_in_process(root, params, monkeypatch)
    before = _snapshot(root)
    old_fp = load_checkpoint(root / "build" / "models" / "e" / "scene" / "best.pt")["fingerprint"]
    _set_train(params, lr=5e-4, epochs=2)  # another configuration: the re-run must train
    _kill_at_save(root, params, 3)  # epoch 0 writes best+last, the 3rd save is epoch 1's best.pt
    assert _snapshot(root) == before, "the finished run's weights, curves and predictions are untouched"
    assert load_checkpoint(root / "build" / "models" / "e" / "scene" / "best.pt")["fingerprint"] == old_fp
    staged = root / "build" / "models" / "e" / ".next" / "scene"
    assert load_checkpoint(staged / "last.pt")["epoch"] == 0, "the re-run's progress is kept for its resume"
    preds = _train_in_process(root, params, monkeypatch)  # resumes the re-run and swaps it in
    run = root / "build" / "models" / "e" / "scene"
    assert load_checkpoint(run / "best.pt")["fingerprint"] != old_fp
    assert not (root / "build" / "models" / "e" / ".next").exists()
    assert not (root / "build" / "models" / "e" / ".old").exists()
    pd.testing.assert_frame_equal(pd.read_parquet(run / SPLIT_PREDICTIONS), preds)
    pd.testing.assert_frame_equal(pd.read_parquet(root / "results" / "predictions" / "e.parquet"), preds)


def test_kill_during_second_split_keeps_the_first(toy_dataset, tmp_path, monkeypatch, caplog):
    root = tmp_path / "proj"
    params = _project(root, toy_dataset.root, ["scene", "random_00"], epochs=1)
    _kill_at_save(root, params, 3)  # split 1 writes best+last; the 3rd save is split 2's first best.pt
    first = root / "build" / "models" / "e" / "scene"
    assert (first / DONE_FILE).is_file() and (first / SPLIT_PREDICTIONS).is_file()
    kept = sha256_file(first / "best.pt"), (first / "best.pt").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="iqalab.train.engine"):
        preds = _train_in_process(root, params, monkeypatch)
    assert (sha256_file(first / "best.pt"), (first / "best.pt").stat().st_mtime_ns) == kept, "split 1 not retrained"
    assert "scene: finished run with this configuration found" in caplog.text
    assert sorted(preds["split"].unique()) == ["random_00", "scene"]
    pd.testing.assert_frame_equal(preds[preds["split"] == "scene"].reset_index(drop=True),
                                  pd.read_parquet(first / SPLIT_PREDICTIONS))


def test_second_concurrent_train_is_refused(toy_dataset, tmp_path):
    from filelock import FileLock

    root = tmp_path / "proj"
    params = _project(root, toy_dataset.root, ["scene"], epochs=200)
    first = subprocess.Popen(iqalab_command(params, "train", "e"), cwd=root, env=subprocess_env(root),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        last = root / "build" / "models" / "e" / "scene" / "last.pt"
        deadline = time.monotonic() + 120
        while not last.exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never started training"
            time.sleep(0.05)
        second = run_iqalab(root, params, "train", "e")
        assert second.returncode == 2
        message = second.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert "experiment 'e' is already being trained by another process" in message
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()
        first.wait(timeout=30)
    # a killed holder leaves no stale lock: the OS released it with the process
    lock = FileLock(root / "build" / "locks" / "train-e.lock")
    lock.acquire(timeout=0)
    lock.release()


class _Killed(BaseException):
    """Stands for a SIGKILL between the two renames of :func:`iqalab.train.engine.swap_in` (nothing after it runs)."""


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_kill_between_the_two_renames_of_a_rerun_is_completed_or_undone(toy_dataset, tmp_path, monkeypatch, caplog):
    """A re-run is swapped in with two renames (``<split>`` -> ``.old/<split>``, ``.next/<split>`` -> ``<split>``).
    A kill between them leaves no ``<split>``; the next start (:func:`engine.finish_swap`) completes the swap when the
    staged run is complete (``done.json``), else undoes it (the retired run is put back), and a retired run left after
    both renames is deleted (``docs/reliability.md``, "Re-run with another configuration killed before it
    completes")."""
    import os
    import shutil

    from iqalab.train import engine

    root = tmp_path / "proj"
    params = _project(root, toy_dataset.root, ["scene"], epochs=1)
    _train_in_process(root, params, monkeypatch)  # the finished run A
    before = _snapshot(root)
    exp = root / "build" / "models" / "e"
    final, staged, retired = exp / "scene", exp / ".next" / "scene", exp / ".old" / "scene"
    run_a = _tree(final)
    fp_a = load_checkpoint(final / "best.pt")["fingerprint"]

    # the re-run B with another configuration trains in .next/scene; the process dies between the two renames
    params_a = params.read_text()
    _set_train(params, lr=5e-4)
    real_swap_in, real_replace = engine.swap_in, os.replace

    def swap_in_killed_between_renames(staged_dir: Path, final_dir: Path) -> None:
        renames: list[tuple[str, str]] = []

        def replace(src, dst):  # noqa: ANN001, ANN202
            renames.append((str(src), str(dst)))
            if len(renames) == 2:
                raise _Killed
            real_replace(src, dst)

        with monkeypatch.context() as m:
            m.setattr(os, "replace", replace)
            real_swap_in(staged_dir, final_dir)

    with monkeypatch.context() as m:
        m.setattr(engine, "swap_in", swap_in_killed_between_renames)
        with pytest.raises(_Killed):
            _train_in_process(root, params, monkeypatch)
    # the state the kill leaves: the old run whole in .old, the complete re-run whole in .next, no split folder
    assert not final.exists()
    assert _tree(retired) == run_a
    assert (staged / DONE_FILE).is_file() and (staged / SPLIT_PREDICTIONS).is_file()
    fp_b = json.loads((staged / DONE_FILE).read_text())["fingerprint"]
    assert fp_b != fp_a
    run_b = _tree(staged)
    killed_state = tmp_path / "killed-state"
    shutil.copytree(exp, killed_state)

    # completed: the next start moves the complete re-run in and reuses it (nothing trained), the old run is deleted
    mtime_b = (staged / "best.pt").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="iqalab.train.engine"):
        preds = _train_in_process(root, params, monkeypatch)
    assert f"{final}: completed a swap an interrupted run left (from {staged})" in caplog.text
    assert "scene: finished run with this configuration found" in caplog.text, "the swapped-in run is not retrained"
    assert _tree(final) == run_b and (final / "best.pt").stat().st_mtime_ns == mtime_b
    assert load_checkpoint(final / "best.pt")["fingerprint"] == fp_b
    assert not retired.exists() and not staged.exists()
    assert not retired.parent.exists() and not staged.parent.exists(), "no empty .old/.next left behind"
    pd.testing.assert_frame_equal(pd.read_parquet(final / SPLIT_PREDICTIONS), preds)
    pd.testing.assert_frame_equal(pd.read_parquet(root / "results" / "predictions" / "e.parquet"), preds)

    # undone: the same kill, but the staged run is not complete (no done.json): the retired run A is put back
    shutil.rmtree(exp)
    shutil.copytree(killed_state, exp)
    (staged / DONE_FILE).unlink()
    params.write_text(params_a)  # configuration A again: its finished run is found whole and skipped
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="iqalab.train.engine"):
        _train_in_process(root, params, monkeypatch)
    assert f"{final}: completed a swap an interrupted run left (from {retired})" in caplog.text
    assert "scene: finished run with this configuration found" in caplog.text
    assert _tree(final) == run_a and not retired.exists()
    assert _snapshot(root) == before, "run A and the experiment's predictions are as before the re-run"
    assert staged.is_dir() and not (staged / DONE_FILE).exists(), "the unfinished re-run is left for a resume"

    # a kill after both renames, before the old run is deleted: the leftover .old/<split> is removed, <split> kept
    shutil.copytree(final, retired)
    engine.finish_swap(final)
    assert not retired.exists() and _tree(final) == run_a
    assert not retired.parent.exists() and staged.is_dir(), ".old removed, .next kept: it holds the re-run"
