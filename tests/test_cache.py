"""Image cache and the one decode path: decoded once, identical to a fresh decode and to the pixels PIL gave every
reader before the decode paths were merged; corruption and hostile files refused by name."""

from __future__ import annotations

import io
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from iqalab.data.cache import ImageCache, build_cache, cache_paths, decode_image, probe_image, resize_square
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


def _reference_decode(path, size):
    """The decode each reader did on its own before: PIL open, RGB, bicubic resize with reducing_gap 3."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        if size is not None:
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.asarray(rgb)


@pytest.mark.parametrize("fmt, mode", [("PNG", "RGB"), ("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"),
                                       ("JPEG", "RGB"), ("JPEG", "L")])
def test_decode_gives_the_pixels_pil_gave_before(tmp_path, fmt, mode):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    path = tmp_path / f"img.{fmt.lower()}"
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    assert probe_image(path) == (200, 150)
    full = decode_image(path)
    assert full.shape == (150, 200, 3) and full.dtype == np.uint8
    for size in (None, 20, 64, 300):  # a 7.5x shrink (integer reduce first), a 2.3x shrink, an enlargement
        expected = _reference_decode(path, size)
        np.testing.assert_array_equal(decode_image(path, size), expected)
        if size is not None:
            np.testing.assert_array_equal(resize_square(full, size), expected)
    with path.open("rb") as stream:  # a stream (the simulator's in-memory JPEG) decodes like the file
        np.testing.assert_array_equal(decode_image(io.BytesIO(stream.read())), full)


def test_scorer_resizes_files_as_the_cache_did(tmp_path):
    """Scoring a file used a plain bicubic resize; for a shrink of 6x or more it differed from the cache."""
    from iqalab.inference import Scorer

    path = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path)
    scorer = Scorer.__new__(Scorer)  # the resize needs only the size and whether the model reads native pixels
    scorer.size, scorer.model = 32, SimpleNamespace(input_resolution="cache")
    scorer.max_side, scorer.patches = None, None  # a model without native patches
    scored = scorer.resize(decode_image(path))
    np.testing.assert_array_equal(scored, decode_image(path, 32))
    plain = np.asarray(Image.fromarray(decode_image(path)).resize((32, 32), Image.Resampling.BICUBIC))
    assert not np.array_equal(scored, plain), "the old scoring resize gives other pixels at this shrink"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_at_max_side_gives_the_pixels_detection_read_before(tmp_path, fmt):
    """Region detection read files shrunk to a longer side (JPEG drafted at 1/2..1/8 scale, then a thumbnail)."""
    path = tmp_path / f"wide.{fmt.lower()}"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (300, 500, 3), dtype=np.uint8)).save(path, format=fmt)
    with Image.open(path) as img:
        img.draft("RGB", (120, 120))
        img = img.convert("RGB")
        img.thumbnail((120, 120), Image.Resampling.BILINEAR)
        expected = np.asarray(img)
    shrunk = decode_image(path, max_side=120)
    assert shrunk.shape == (72, 120, 3)
    np.testing.assert_array_equal(shrunk, expected)
    np.testing.assert_array_equal(decode_image(path, max_side=500), decode_image(path))  # small enough: as is
    with pytest.raises(ValueError, match="not both"):
        decode_image(path, 32, max_side=120)


# -- native-resolution store (issue #30) ------------------------------------------------------------------------
def photo_dataset(root, images, boxes=None, fmt="png"):
    """A validated dataset of the given uint8 ``[H, W, 3]`` images (ids ``img0..``; one scene each, a
    train/test split), with optional normalised person boxes ``{image index: (x0, y0, x1, y1)}``."""
    import pandas as pd

    from iqalab.data.schema import Dataset, write_dataset

    (root / "images").mkdir(parents=True)
    rows = []
    for k, pixels in enumerate(images):
        path = f"images/img{k}.{fmt}"
        Image.fromarray(pixels).save(root / path, compress_level=1) if fmt == "png" \
            else Image.fromarray(pixels).save(root / path, quality=92)
        box = (boxes or {}).get(k, (np.nan,) * 4)
        rows.append({"image_id": f"img{k}", "path": path, "scene": f"scene{k}", "width": pixels.shape[1],
                     "height": pixels.shape[0], "mos_overall": 1.0 + k, "person_x0": box[0], "person_y0": box[1],
                     "person_x1": box[2], "person_y1": box[3]})
    table = pd.DataFrame(rows)
    splits = pd.DataFrame({"split": "scene", "image_id": table["image_id"],
                           "role": ["train" if k % 2 == 0 else "test" for k in range(len(table))]})
    write_dataset(Dataset(root=root, meta={"name": root.name, "attributes": ["overall"], "mos_range": [1.0, 5.0],
                                           "source": "test", "simulated": True}, images=table, splits=splits))
    return read_dataset(root)


def textured(h, w, seed=0):
    """Gradients of two periods plus a random tile: every crop is distinct, and PNG encodes it quickly."""
    pixels = np.empty((h, w, 3), np.uint8)
    pixels[..., 0] = (np.arange(w) % 256).astype(np.uint8)[None]
    pixels[..., 1] = (np.arange(h) % 251).astype(np.uint8)[:, None]
    tile = np.random.default_rng(seed).integers(0, 256, (61, 67), dtype=np.uint8)
    pixels[..., 2] = np.tile(tile, (h // 61 + 1, w // 67 + 1))[:h, :w]
    return pixels


def test_native_store_holds_every_file_whole(toy_dataset):
    from iqalab.data.cache import NativeStore

    store = NativeStore(toy_dataset)
    assert store is ImageCache(toy_dataset, TOY_CACHE).native or len(store) == len(toy_dataset.images)
    for row in range(len(store)):
        fresh = decode_image(toy_dataset.root / toy_dataset.images["path"].iloc[row])
        np.testing.assert_array_equal(store[row], fresh)
        assert store.shape(row) == fresh.shape[:2]
    square = ImageCache(toy_dataset, TOY_CACHE)
    np.testing.assert_array_equal(square[3], resize_square(store[3], TOY_CACHE)), "square cache derives from it"


def test_native_store_keeps_aspect_and_cap(tmp_path):
    """KonIQ-shaped 1024 x 768 and a portrait 600 x 800: shapes kept; a stated cap shrinks both, aspect kept."""
    from iqalab.data.cache import NativeStore, native_paths, prepare_image

    pictures = [textured(768, 1024), textured(800, 600, seed=1)]
    ds = photo_dataset(tmp_path / "ds", pictures)
    build_cache(ds, 64, progress=False)
    store = NativeStore(ds)
    assert [store.shape(r) for r in range(2)] == [(768, 1024), (800, 600)]
    np.testing.assert_array_equal(store[0], pictures[0])
    np.testing.assert_array_equal(ImageCache(ds, 64)[1], prepare_image(pictures[1], size=64))
    build_cache(ds, 64, progress=False, max_side=512)
    capped = NativeStore(ds)
    assert capped.max_side == 512 and [capped.shape(r) for r in range(2)] == [(384, 512), (512, 384)]
    np.testing.assert_array_equal(capped[0], prepare_image(pictures[0], max_side=512))
    # scoring's chain (decode, cap, square) gives the cached pixels, reducing gap included (a 16x shrink)
    np.testing.assert_array_equal(ImageCache(ds, 64)[0],
                                  prepare_image(decode_image(ds.root / "images/img0.png"), 64, max_side=512))
    assert ImageCache(ds, 64).max_side == 512
    bin_path, _ = native_paths(ds.root)
    blob = bytearray(bin_path.read_bytes())
    blob[-7] ^= 0xFF  # inside the last image
    bin_path.write_bytes(bytes(blob))
    corrupt = NativeStore(ds)
    corrupt[0]
    with pytest.raises(DataError, match=r"native.bin: image row 1 is corrupt"):
        corrupt[1]
    bin_path.write_bytes(bytes(blob[:-3]))
    with pytest.raises(DataError, match="rerun ingest"):
        NativeStore(ds)


def test_1344_patch_is_the_files_own_crop(tmp_path):
    """Done-when of issue #30: a 1344 patch cut from a PIQ23-sized (3000 x 4000) image is the file's crop."""
    from iqalab.data.loaders import PatchItems

    ds = photo_dataset(tmp_path / "piq", [textured(3000, 4000, seed=2)])
    build_cache(ds, 64, progress=False)
    items = PatchItems(ds, ["img0"], ImageCache(ds, 64).native, {"image"}, train=True,
                       scales=[(224, 5), (672, 3), (1344, 1)], seed=3)
    patches = items[0]["patches"]
    assert [tuple(p.shape) for p in patches] == [(5, 3, 224, 224), (3, 3, 672, 672), (1, 3, 1344, 1344)]
    rng = items.rng(0)
    geo = items.geometry(0, rng)
    (_, _), (_, _), (side, corners) = items.patch_offsets(0, rng)
    with Image.open(ds.root / "images/img0.png") as img:
        original = np.asarray(img.convert("RGB"))
    y, x = corners[0]
    expected = original[y:y + side, x:x + side]
    if geo.hflip:
        expected = expected[:, ::-1]
    np.testing.assert_array_equal(patches[2][0].permute(1, 2, 0).numpy(), expected)


def test_build_cache_decodes_each_file_once(project, monkeypatch, one_thread):
    """README ("Where images live"): a dataset's files are "read once, at ingest, and never decoded again by
    training", and "both stores are built in one decoding pass". The ingest stage (the toy set) decodes each file
    exactly once while building the native store and the square cache; training then, from either store
    (``train.resolution`` cache and native, predictions included), decodes nothing and opens no image file."""
    from collections import Counter
    from pathlib import Path

    import iqalab.data.cache as cache_module
    from iqalab.config import parse_params
    from iqalab.data.cache import NativeStore
    from iqalab.stages import ingest
    from iqalab.train.engine import train_experiment

    from .conftest import toy_params

    decoded: list[str] = []  # image files decoded (decode_image), by name: the staging folder is renamed after
    opened: list[str] = []  # image files opened by PIL for any reason (a decode needs one)
    real_decode, real_open = cache_module.decode_image, Image.open

    def counting_decode(source, *args, **kwargs):
        decoded.append(Path(source).name)
        return real_decode(source, *args, **kwargs)

    def counting_open(fp, *args, **kwargs):
        if isinstance(fp, str | Path) and Path(fp).parent.name == "images":
            opened.append(Path(fp).name)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(cache_module, "decode_image", counting_decode)
    monkeypatch.setattr(Image, "open", counting_open)
    model = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 8}
    params = parse_params(toy_params(
        square={"dataset": "toy", "model": model, "train": {"epochs": 1}},
        native={"dataset": "toy", "model": model, "train": {"epochs": 1, "resolution": "native"}}))
    ds = ingest.run(params, "toy", project.root, progress=False)
    files = sorted(Path(p).name for p in ds.images["path"])
    assert len(files) == 20 and len(set(files)) == 20
    assert (ds.root / "cache" / "native.bin").is_file() and (ds.root / "cache" / f"{TOY_CACHE}.npy").is_file()
    assert Counter(decoded) == Counter(files), "each file decoded exactly once for both stores"
    assert set(opened) == set(files), "the spy on PIL sees the files ingest opens (checked, then decoded)"

    decoded.clear()
    opened.clear()
    native_reads = []
    real_planar = NativeStore.planar
    monkeypatch.setattr(NativeStore, "planar", lambda self, row: native_reads.append(row) or real_planar(self, row))
    square = train_experiment(params, "square", project.root, progress=False)
    assert not native_reads, "the square-cache run reads the square cache only"
    native = train_experiment(params, "native", project.root, progress=False)
    assert len(square) and len(native) and native_reads, "both runs trained and predicted from the stores"
    assert decoded == [] and opened == [], "training decoded image files again"
