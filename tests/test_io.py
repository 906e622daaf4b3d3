""":mod:`iqalab.io`'s check of an output path (:func:`~iqalab.io.unwritable_reason`), shared by ``iqalab score
--out`` and ``iqalab export``, which word their own refusals around its phrase."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iqalab.io import unwritable_reason


def test_a_path_that_can_be_created_has_no_reason(tmp_path: Path) -> None:
    assert unwritable_reason(tmp_path / "scores.csv") is None
    assert unwritable_reason(tmp_path / "new" / "deeper" / "scores.csv") is None  # missing folders are created
    (tmp_path / "old.csv").write_text("x")
    assert unwritable_reason(tmp_path / "old.csv") is None  # what is there already is the caller's to judge


def test_the_reason_names_the_nearest_existing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a_file").write_text("x")
    assert unwritable_reason(tmp_path / "a_file" / "s.csv") == f"{tmp_path / 'a_file'} is a file, not a folder"
    assert unwritable_reason(tmp_path / "a_file" / "x" / "s.csv") == \
        f"{tmp_path / 'a_file'} is a file, not a folder"
    real = os.access  # root may write anywhere: ask os.access as an unprivileged user would
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != tmp_path and real(p, mode, **kw))
    assert unwritable_reason(tmp_path / "ro" / "s.csv") == f"folder {tmp_path} is not writable"
    assert not (tmp_path / "ro").exists()
