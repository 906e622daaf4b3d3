"""Disk full while writing: a clear error naming the file, and the previous output intact.

Two simulations. In-process, a writer or ``os.replace`` is patched to fail with ``ENOSPC`` (for JSON, parquet and
checkpoints). In a subprocess, ``RLIMIT_FSIZE`` makes the kernel refuse any write past 1 MB (``EFBIG``, the way a
full disk refuses with ``ENOSPC``; mounting a tmpfs needs root), and ``iqalab train`` must fail with one line while
the checkpoint and predictions of the previous run stay byte-identical.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import iqalab.io
from iqalab.io import sha256_file, write_json, write_parquet
from iqalab.train.engine import CheckpointError, load_checkpoint, save_checkpoint

from . import make_project, run_iqalab


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _leftovers(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tmp"))


def test_rename_fails_with_enospc(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json(target, {"srcc": 0.9})
    before = target.read_bytes()
    monkeypatch.setattr(iqalab.io.os, "replace", _no_space)
    with pytest.raises(OSError) as err:
        write_json(target, {"srcc": 0.1})
    assert err.value.errno == errno.ENOSPC
    assert str(target) in str(err.value) and "previous content is unchanged" in str(err.value)
    assert target.read_bytes() == before
    assert not _leftovers(tmp_path)


def test_parquet_writer_fails_halfway(tmp_path, monkeypatch):
    target = tmp_path / "predictions.parquet"
    old = pd.DataFrame({"image_id": ["a", "b"], "pred": [1.0, 2.0]})
    write_parquet(target, old)

    def half_then_full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1" + b"\x00" * 64)  # some bytes landed before the disk filled up
        _no_space()

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_full)
    with pytest.raises(OSError, match=rf"cannot write {target}"):
        write_parquet(target, pd.DataFrame({"image_id": ["c"], "pred": [3.0]}))
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_parquet(target), old)
    assert not _leftovers(tmp_path)


def test_checkpoint_write_fails_like_torch_on_a_full_disk(tmp_path, monkeypatch):
    """torch reports a failed write as a bare RuntimeError from its stream writer; the engine names the file."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 0})
    real_save = torch.save

    def full_disk_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[:40])
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(CheckpointError, match=rf"{path}: cannot write checkpoint, previous one kept"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 1})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 0 and torch.equal(state["model"]["w"], torch.ones(3))
    assert not list(tmp_path.glob(".*.tmp"))


def _limit_file_size() -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))


def test_training_on_a_full_disk_keeps_previous_outputs(toy_dataset, tmp_path):
    root = tmp_path / "proj"
    params = make_project(root, toy_dataset.root, epochs=1)
    first = run_iqalab(root, params, "train", "e")
    assert first.returncode == 0, first.stderr
    best = root / "build" / "models" / "e" / "scene" / "best.pt"
    preds = root / "results" / "predictions" / "e.parquet"
    assert best.stat().st_size > 1_000_000, "the checkpoint must exceed the file-size limit for this test"
    before = {p: sha256_file(p) for p in (best, preds)}
    raw = yaml.safe_load(params.read_text())
    raw["experiments"]["e"]["train"]["lr"] = 5e-4  # another configuration: the re-run must train (and save) again
    params.write_text(yaml.safe_dump(raw))
    second = run_iqalab(root, params, "train", "e", preexec=_limit_file_size)
    assert second.returncode == 2, second.stderr
    message = second.stderr.strip()
    assert len(message.splitlines()) == 1, "one line, no traceback"
    staged = root / "build" / "models" / "e" / ".next" / "scene" / "best.pt"  # the re-run trains beside the run
    assert f"{staged}: cannot write checkpoint, previous one kept (disk full?)" in message
    assert {p: sha256_file(p) for p in before} == before, "previous checkpoint and predictions intact"
    load_checkpoint(best)
    assert not list(best.parent.glob(".*.tmp")) and not list(staged.parent.glob(".*.tmp")), "no partial temporary"
