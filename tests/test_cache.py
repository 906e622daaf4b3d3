"""Image cache: decoded once, identical to a fresh decode, corruption and hostile files refused by name."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from iqalab.data.cache import ImageCache, build_cache, cache_paths, decode_image
from iqalab.data.schema import DataError, read_dataset

from .conftest import TOY_CACHE


def test_cache_matches_fresh_decode(toy_dataset):
    cache = ImageCache(toy_dataset, TOY_CACHE)
    assert len(cache) == len(toy_dataset.images)
    for row in (0, len(cache) - 1):
        fresh = decode_image(toy_dataset.root / toy_dataset.images["path"].iloc[row], TOY_CACHE)
        np.testing.assert_array_equal(cache[row], fresh)
    assert isinstance(cache.array, np.memmap)


def test_corrupted_cache_bytes_detected(toy_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(toy_dataset.root, root)
    ds = read_dataset(root)
    array_path, _ = cache_paths(root, TOY_CACHE)
    blob = bytearray(array_path.read_bytes())
    offset = len(blob) - 5 * TOY_CACHE  # inside the last image
    blob[offset] ^= 0xFF
    array_path.write_bytes(bytes(blob))
    cache = ImageCache(ds, TOY_CACHE)
    cache[0]  # intact rows still read
    with pytest.raises(DataError, match=rf"{array_path.name}: image row {len(ds.images) - 1} is corrupt"):
        cache[len(ds.images) - 1]


def test_missing_cache_names_the_fix(toy_dataset, tmp_path):
    with pytest.raises(DataError, match="image cache missing; run `iqalab ingest"):
        ImageCache(toy_dataset, 999)


def test_truncated_and_non_image_files_refused(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:100])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for bad in (truncated, text):
        with pytest.raises(DataError, match=rf"{bad.name}: cannot decode image"):
            decode_image(bad, 32)


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    big = tmp_path / "bomb.png"
    Image.new("L", (600, 600)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 600x600 is then > 2x the limit: PIL raises
    with pytest.raises(DataError, match="bomb.png: refused, image too large"):
        decode_image(big, 32)


def test_cache_build_is_atomic(toy_dataset, tmp_path, monkeypatch):
    root = tmp_path / "ds"
    shutil.copytree(toy_dataset.root, root)
    ds = read_dataset(root)
    array_path, _ = cache_paths(root, TOY_CACHE)
    before = array_path.read_bytes()
    (root / ds.images["path"].iloc[7]).write_text("garbage")
    with pytest.raises(DataError, match="cannot decode"):
        build_cache(ds, TOY_CACHE, progress=False)
    assert array_path.read_bytes() == before, "a failed rebuild leaves the previous cache intact"
    assert not list(array_path.parent.glob("*.tmp")), "no temporary file left behind"
