"""Written files get the user's umask (issue 26): the atomic writer's temporary file mode (0600) must not leak
into results that collaborators, web servers or DVC remotes read."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest
import torch

from iqalab.io import write_bytes, write_json, write_parquet, write_text
from iqalab.train.engine import save_checkpoint


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_bytes(tmp_path / "b.jpg", b"x")
        write_json(tmp_path / "c.json", {"a": 1})
        write_parquet(tmp_path / "d.parquet", pd.DataFrame({"a": [1]}))
        save_checkpoint(tmp_path / "e.pt", {"model": {"w": torch.ones(1)}})
        write_text(tmp_path / "a.txt", "replaced")  # a rewrite, too
    finally:
        os.umask(previous)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in tmp_path.iterdir()}
    assert modes == {name: oct(mode) for name in ("a.txt", "b.jpg", "c.json", "d.parquet", "e.pt")}
