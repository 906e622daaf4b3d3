"""Ingest killed midway (SIGKILL in a subprocess): nothing partial is read as complete; the next run rebuilds.

``iqalab ingest toy`` builds into ``build/datasets/.toy.partial`` and swaps it in only when tables and cache are
complete. Each test kills the process at a chosen point (a patched step SIGKILLs its own process, so the point
is exact rather than timing-dependent), then checks what a reader sees and that the next ingest removes the partial
folder and produces the same dataset as an uninterrupted ingest.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iqalab.data.cache import ImageCache
from iqalab.data.schema import DataError, read_dataset
from iqalab.io import sha256_file

from ..conftest import TOY_CACHE
from . import make_project, run_iqalab, subprocess_env

# kill while the cache is half decoded (tables and dataset.json already in the staging folder)
_KILL_IN_CACHE = """
import iqalab.data.cache as cache
real_fill = cache._fill
def dying_fill(out, paths, crcs, size, workers, progress, desc, *stores):
    half = len(paths) // 2
    real_fill(out[:half], paths[:half], crcs, size, 1, False, desc, *stores)
    out.flush()
    os.kill(os.getpid(), signal.SIGKILL)
cache._fill = dying_fill
"""

# kill right after the first table is written (no dataset.json yet)
_KILL_IN_TABLES = """
import iqalab.data.schema as schema
real_write = schema.write_parquet
def dying_write(path, frame):
    real_write(path, frame)
    os.kill(os.getpid(), signal.SIGKILL)
schema.write_parquet = dying_write
"""

_RUN = """
import os, signal, sys
{patch}
from iqalab.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _killed_ingest(root: Path, params: Path, patch: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _RUN.format(patch=patch), "--params", str(params), "-q",
                           "ingest", "toy"], cwd=root, env=subprocess_env(root), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def clean_ingest(toy_dataset) -> dict:
    """dataset.json of an uninterrupted build with the same options (its table checksums identify the content)."""
    return toy_dataset.meta


def test_first_ingest_killed_in_cache_then_rebuilt(tmp_path, clean_ingest):
    root = tmp_path / "proj"
    params = make_project(root)
    final = root / "build" / "datasets" / "toy"
    partial = final.with_name(".toy.partial")
    _killed_ingest(root, params, _KILL_IN_CACHE)
    assert partial.is_dir() and not final.exists(), "only the staging folder exists after the kill"
    with pytest.raises(DataError, match="dataset folder not found"):
        read_dataset(final)
    # the staging folder's tables are complete, but its cache is not: a reader must not take it as complete
    staged = read_dataset(partial)
    with pytest.raises(DataError, match="image cache missing"):
        ImageCache(staged, TOY_CACHE)
    # `iqalab train` refuses at once with one line naming the missing dataset folder and the ingest command
    refused = run_iqalab(root, params, "train", "e")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"iqalab train: error: dataset folder not found: {final} (run the ingest stage first: iqalab ingest toy)"]
    assert not (root / "build" / "models").exists() and not (root / "results").exists(), "nothing trained"
    assert partial.is_dir() and not final.exists(), "the refusal leaves the staging folder to the next ingest"

    done = run_iqalab(root, params, "ingest", "toy", quiet=False)
    assert done.returncode == 0, done.stderr
    assert "removing the partial output of an interrupted ingest" in done.stderr
    assert not partial.exists()
    ds = read_dataset(final, check_files=True)
    cache = ImageCache(ds, TOY_CACHE)
    assert all(cache[i].shape == (TOY_CACHE, TOY_CACHE, 3) for i in range(len(cache)))  # every CRC checks
    assert not list(final.rglob("*.tmp"))
    assert ds.meta["checksums"] == clean_ingest["checksums"], "the rebuild equals an uninterrupted ingest"


def test_reingest_killed_in_tables_keeps_previous_dataset(tmp_path, clean_ingest):
    root = tmp_path / "proj"
    params = make_project(root)
    assert run_iqalab(root, params, "ingest", "toy").returncode == 0
    final = root / "build" / "datasets" / "toy"
    partial = final.with_name(".toy.partial")
    before = _snapshot(final)
    _killed_ingest(root, params, _KILL_IN_TABLES)
    assert _snapshot(final) == before, "the previous dataset is untouched by the killed re-ingest"
    assert partial.is_dir()
    with pytest.raises(DataError, match="incomplete"):  # no dataset.json: the partial folder is refused
        read_dataset(partial)
    done = run_iqalab(root, params, "ingest", "toy")
    assert done.returncode == 0, done.stderr
    assert not partial.exists()
    assert read_dataset(final, check_files=True).meta["checksums"] == clean_ingest["checksums"]
