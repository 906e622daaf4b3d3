"""Files corrupted on disk after they were written: detected at load, with the file named.

Complements ``tests/test_schema.py`` (a flipped byte in ``splits.parquet``) and ``tests/test_cache.py`` (a flipped
byte in a cached image): here a table is truncated or replaced by another *valid* parquet file, the cache array is
truncated, its index is damaged, and a corrupted cache reaches ``iqalab train`` end to end.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from iqalab.data.cache import ImageCache, cache_paths
from iqalab.data.schema import DataError, read_dataset

from ..conftest import TOY_CACHE
from . import make_project, run_iqalab


@pytest.fixture
def copy(toy_dataset, tmp_path):
    root = tmp_path / "toy"
    shutil.copytree(toy_dataset.root, root)
    return root


def test_truncated_table_named_with_and_without_checksums(copy):
    path = copy / "images.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"images\.parquet: checksum does not match"):
        read_dataset(copy)
    # without checksums the parquet reader still fails, and the message still names the file
    with pytest.raises(DataError, match=r"images\.parquet: cannot be read as parquet"):
        read_dataset(copy, verify_checksums=False)


def test_valid_but_altered_table_detected_by_checksum(copy):
    """A well-formed parquet with one MOS edited passes every validator rule; only the checksum catches it."""
    path = copy / "images.parquet"
    images = pd.read_parquet(path)
    images.loc[3, "mos_overall"] = 4.0 if images.loc[3, "mos_overall"] != 4.0 else 3.0
    images.to_parquet(path, index=False)
    read_dataset(copy, verify_checksums=False)  # the altered table is itself valid
    with pytest.raises(DataError, match=r"images\.parquet: checksum does not match dataset\.json"):
        read_dataset(copy)


def test_truncated_cache_array_named(copy):
    ds = read_dataset(copy)
    array_path, _ = cache_paths(copy, TOY_CACHE)
    array_path.write_bytes(array_path.read_bytes()[: array_path.stat().st_size - 1000])
    with pytest.raises(DataError, match=rf"{array_path.name}: corrupt cache array"):
        ImageCache(ds, TOY_CACHE)


@pytest.mark.parametrize("damage", ["truncated", "not_json", "wrong_type", "missing_key"])
def test_damaged_cache_index_named(copy, damage):
    ds = read_dataset(copy)
    _, index_path = cache_paths(copy, TOY_CACHE)
    text = index_path.read_text()
    index = json.loads(text)
    index_path.write_text({
        "truncated": text[: len(text) // 3],
        "not_json": "\x00\x01 binary",
        "wrong_type": json.dumps([1, 2, 3]),
        "missing_key": json.dumps({k: v for k, v in index.items() if k != "crc32"}),
    }[damage])
    with pytest.raises(DataError, match=rf"{index_path.name}: corrupt cache index"):
        ImageCache(ds, TOY_CACHE)


def test_cache_array_of_another_shape_named(copy):
    ds = read_dataset(copy)
    array_path, _ = cache_paths(copy, TOY_CACHE)
    np.save(array_path, np.zeros((len(ds.images), TOY_CACHE, TOY_CACHE // 2, 3), np.uint8))
    with pytest.raises(DataError, match=rf"{array_path.name}: shape .* does not match its index"):
        ImageCache(ds, TOY_CACHE)


def test_corrupt_cache_stops_training_with_one_line(toy_dataset, tmp_path):
    """End to end: a flipped byte in a cached image fails ``iqalab train`` with the file and row named."""
    root = tmp_path / "proj"
    params = make_project(root, toy_dataset.root, epochs=1)
    array_path, _ = cache_paths(root / "build" / "datasets" / "toy", TOY_CACHE)
    blob = bytearray(array_path.read_bytes())
    row = 0  # every row is read (train, val or test)
    header = len(blob) - len(toy_dataset.images) * TOY_CACHE * TOY_CACHE * 3
    blob[header + row * TOY_CACHE * TOY_CACHE * 3 + 123] ^= 0xFF
    array_path.write_bytes(bytes(blob))
    proc = run_iqalab(root, params, "train", "e")
    assert proc.returncode == 2
    assert f"{array_path}: image row {row} is corrupt" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, "one line, no traceback"
    assert not (root / "results" / "predictions" / "e.parquet").exists(), "no predictions from corrupt data"
