"""Loaders: crops/flips move boxes with the pixels, draws are seeded by (seed, epoch, index), pairs resolve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from iqalab.data.cache import ImageCache, build_cache
from iqalab.data.loaders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageItems,
    NativeImageItems,
    PairItems,
    PatchItems,
    denormalise_batch,
    mos_pairs,
    normalise_batch,
)

from .conftest import TOY_CACHE


def _items(ds, train=True, inputs=("image",), **kw):
    cache = ImageCache(ds, TOY_CACHE)
    return ImageItems(ds, ds.images["image_id"].tolist(), cache, set(inputs), train, **kw)


def test_eval_item_is_the_cache_and_batches_normalise(toy_dataset):
    items = _items(toy_dataset, train=False)
    item = items[0]
    assert item["image"].dtype == torch.uint8
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), items.cache[0])
    raw = items.cache[0].astype(np.float32) / 255.0
    expected = (raw - IMAGENET_MEAN) / IMAGENET_STD
    batch = normalise_batch(torch.stack([item["image"], items[1]["image"]]))
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, TOY_CACHE, TOY_CACHE)
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    back = denormalise_batch(batch)  # the pixel models' inverse (NIQE, BRISQUE, pyiqa)
    assert back.dtype == torch.float32
    np.testing.assert_allclose(back[0].permute(1, 2, 0).numpy(), raw, atol=1e-5)
    lo, hi = toy_dataset.mos_range
    assert torch.allclose(item["mos_norm"], (item["mos"] - lo) / (hi - lo))


def test_random_crops_are_seeded_by_epoch(toy_dataset):
    items = _items(toy_dataset, crop=40)
    first = items[3]["image"]
    assert first.shape == (3, 40, 40)
    assert torch.equal(first, items[3]["image"]), "same epoch, same crop"
    items.set_epoch(1)
    assert not torch.equal(first, items[3]["image"]), "another epoch, another crop"
    items.set_epoch(0)
    assert torch.equal(first, items[3]["image"])


def test_boxes_follow_crop_and_flip(toy_dataset):
    ds = toy_dataset
    ds_images = ds.images.copy()
    # a marker box around a bright square painted nowhere: check the geometry on the coordinates alone
    ds.images = ds_images.assign(person_x0=0.25, person_y0=0.5, person_x1=0.5, person_y1=0.75)
    try:
        items = _items(ds, train=False, inputs=("image", "person_box"))
        box = items[0]["person_box"].numpy()
        np.testing.assert_allclose(box, [16, 32, 32, 48])
        cropped = _items(ds, train=False, inputs=("person_box",), eval_crop=48)
        np.testing.assert_allclose(cropped[0]["person_box"].numpy(), [8, 24, 24, 40])  # centre crop offset 8
        flipped = _items(ds, train=True, inputs=("person_box",), crop=None, flip=True)
        boxes = {tuple(np.round(flipped[i]["person_box"].numpy(), 3)) for i in range(len(flipped))}
        assert boxes == {(16.0, 32.0, 32.0, 48.0), (32.0, 32.0, 48.0, 48.0)}, "hflip mirrors x and keeps x0<x1"
    finally:
        ds.images = ds_images


def test_missing_boxes_are_nan(toy_dataset):
    item = _items(toy_dataset, inputs=("face_box", "landmarks"))[0]
    assert item["face_box"].shape == (4,) and torch.isnan(item["face_box"]).all()
    assert item["landmarks"].shape == (5, 2) and torch.isnan(item["landmarks"]).all()


def test_only_declared_inputs_are_built(toy_dataset):
    item = _items(toy_dataset, inputs=("cam",))[0]
    assert "image" not in item and item["cam"].shape == (7,) and item["cam_mask"].shape == (7,)
    assert item["cam_mask"][2] == 1 and item["cam_mask"][0] == 0, "toy data know ISO only"


def test_pairs_from_table_and_from_mos(toy_dataset):
    items = _items(toy_dataset, inputs=("image",))
    ids = items.ids
    table = pd.DataFrame({"image_a": [ids[0], ids[1], "unknown", ids[0]], "image_b": [ids[2], ids[3], ids[0], ids[2]],
                          "attribute": ["overall", "noise", "overall", "noise"], "p": [1.0, 0.5, 0.0, 0.0],
                          "source": "refined", "fine": True})
    pairs = PairItems(items, table)
    assert len(pairs) == 2, "one item per image pair; pairs naming images outside the split are dropped"
    first, second = pairs[0], pairs[1]
    assert first["a"]["image_id"] == ids[0] and first["b"]["image_id"] == ids[2]
    # every attribute of the pair in one item (TuningIQA Eq. 11 sums over them); NaN where not compared
    assert items.attributes[0] == "overall" and items.attributes[2] == "noise"
    assert first["p"].shape == (len(items.attributes),)
    assert first["p"][0] == 1.0 and first["p"][2] == 0.0 and torch.isnan(first["p"]).sum() == len(items.attributes) - 2
    assert second["a"]["image_id"] == ids[1] and second["p"][2] == 0.5 and torch.isnan(second["p"][0])
    drawn = mos_pairs(items, 50, seed=1)
    assert len(drawn) == 50
    mos = toy_dataset.images.set_index("image_id")
    for row in drawn.itertuples():
        a, b = mos.loc[row.image_a, f"mos_{row.attribute}"], mos.loc[row.image_b, f"mos_{row.attribute}"]
        assert row.p == (1.0 if a > b else 0.0 if a < b else 0.5)


# -- native-resolution store (issue #30) ------------------------------------------------------------------------
def _konIQ_like(tmp_path):
    """A 1024 x 768 (KonIQ-shaped) and a 768 x 1024 image; a box around a white block in the first."""
    from .test_cache import photo_dataset, textured

    first = textured(768, 1024)
    first[192:384, 512:768] = 255  # the person box (0.5, 0.25, 0.75, 0.5) in normalised coordinates
    ds = photo_dataset(tmp_path / "koniq", [first, textured(1024, 768, seed=1)],
                       boxes={0: (0.5, 0.25, 0.75, 0.5)}, fmt="png")
    build_cache(ds, 64, progress=False)
    return ds, first


def test_koniq_frame_keeps_its_aspect_end_to_end(tmp_path):
    """Done-when of issue #30: ingest store -> loader item, a 1024 x 768 frame stays 1024 x 768."""
    ds, first = _konIQ_like(tmp_path)
    cache = ImageCache(ds, 64)
    whole = NativeImageItems(ds, ["img0", "img1"], cache, {"image", "person_box"})
    item = whole[0]
    assert tuple(item["image"].shape) == (3, 768, 1024) and tuple(whole[1]["image"].shape) == (3, 1024, 768)
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), first)
    np.testing.assert_allclose(item["person_box"].numpy(), [512, 192, 768, 384])
    assert not whole.same_size, "different shapes: batched one image at a time"
    crops = ImageItems(ds, ["img0"], cache.native, {"image"}, train=True, crop=224)
    assert tuple(crops[0]["image"].shape) == (3, 224, 224)
    with pytest.raises(ValueError, match="shortest side in the native store"):
        ImageItems(ds, ["img0"], cache.native, {"image"}, train=True, crop=800)


def test_boxes_stay_valid_after_a_native_crop_and_flip(tmp_path):
    """The box still frames the white block after a native-resolution crop (centre and random) and flips."""
    ds, _ = _konIQ_like(tmp_path)
    store = ImageCache(ds, 64).native
    centre = ImageItems(ds, ["img0"], store, {"image", "person_box"}, train=False, eval_crop=512)
    seen = [centre[0]]
    random_crops = ImageItems(ds, ["img0"], store, {"image", "person_box"}, train=True, crop=600, vflip=True)
    for epoch in range(6):
        random_crops.set_epoch(epoch)
        seen.append(random_crops[0])
    flips = set()
    for item in seen:
        image = item["image"].permute(1, 2, 0).numpy()
        x0, y0, x1, y1 = (int(round(v)) for v in item["person_box"].numpy())
        assert x0 < x1 and y0 < y1
        inside = image[max(y0, 0):y1, max(x0, 0):x1]
        assert inside.size and (inside == 255).all(), "the box lies on the white block"
        grown = image[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2]
        if y0 >= 2 and x0 >= 2 and y1 + 2 <= image.shape[0] and x1 + 2 <= image.shape[1]:
            assert not (grown == 255).all(), "and the block ends at the box"
        flips.add((x0, y0))
    assert len(flips) > 2, "crops and flips moved the box"


def test_patch_items_feed_hyperiqa_through_the_engine(tmp_path):
    """train.resolution 'native': the engine's items cut HyperIQA's patches in the loader; the model takes them."""
    from iqalab.models import build_model
    from iqalab.models.hyperiqa import HyperIQA
    from iqalab.train.engine import image_items, predict_items, to_device

    ds, _ = _konIQ_like(tmp_path)
    model = build_model("hyperiqa", ["overall"], **HyperIQA.smoke_params)
    common = dict(ds=ds, cache=ImageCache(ds, 64), inputs=model.inputs, seed=0)
    train = image_items(model, ["img0", "img1"], True, "native", crop=None, **common)
    assert isinstance(train, PatchItems) and train.scales == [(32, 2)]
    batch = to_device(torch.utils.data.default_collate([train[0], train[1]]), torch.device("cpu"))
    assert [tuple(p.shape) for p in batch["patches"]] == [(2, 2, 3, 32, 32)]
    assert batch["patches"][0].dtype == torch.float32, "normalised on the device like images"
    loss = model.training_step(batch, None)
    assert torch.isfinite(loss)
    evaluation = image_items(model, ["img0", "img1"], False, "native", eval_crop=None, **common)
    assert evaluation[0]["patches"][0].shape[0] == model.test_rounds * model.n_patches
    first = predict_items(model, evaluation, 2, torch.device("cpu"))
    assert first.shape == (2, 1) and np.isfinite(first).all()
    # the same patches whatever the batching (seeded per image): equal up to float summation order
    np.testing.assert_allclose(first, predict_items(model, evaluation, 1, torch.device("cpu")), rtol=1e-5)


# -- batched items (issue #30: one array per batch, the per-item tensors) ------------------------------------------
ALL_INPUTS = ("image", "cam", "scene_idx", "person_box", "face_box", "landmarks")


def _with_coords(ds):
    """``ds.images`` with random boxes (some missing) and landmarks, for the coordinate paths of a batch."""
    from iqalab.data.schema import FACE_BOX, LANDMARKS, PERSON_BOX

    rng = np.random.default_rng(3)
    n = len(ds.images)
    extra = {}
    for cols in (PERSON_BOX, FACE_BOX):
        corners = np.sort(rng.random((n, 2, 2)), axis=1).reshape(n, 4)[:, [0, 2, 1, 3]]
        corners[rng.random(n) < 0.3] = np.nan
        extra.update(dict(zip(cols, corners.T, strict=True)))
    extra.update(dict(zip(LANDMARKS, rng.random((n, len(LANDMARKS))).T, strict=True)))
    return ds.images.assign(**extra)


def _assert_same_batch(batched, per_item):
    assert set(batched) == set(per_item)
    for key, value in per_item.items():
        if isinstance(value, torch.Tensor):
            assert batched[key].dtype == value.dtype and batched[key].shape == value.shape, key
            torch.testing.assert_close(batched[key], value, rtol=0, atol=0, equal_nan=True, msg=key)
        else:
            assert batched[key] == value, key


@pytest.mark.parametrize("setting", ["random_crop_flips", "centre_crop", "eval_whole", "train_whole_flips",
                                     "native_crop_flips", "native_centre", "native_whole"])
def test_batched_items_equal_the_per_item_tensors(toy_dataset, setting):
    """``__getitems__`` (one array per batch) gives exactly what collating ``items[i]`` one by one gives: images,
    targets, ids, side inputs and boxes, for every epoch's crops and flips."""
    from torch.utils.data import default_collate

    from iqalab.data.loaders import collate

    ds = toy_dataset
    saved = ds.images
    ds.images = _with_coords(ds)
    try:
        cache = ImageCache(ds, TOY_CACHE)
        ids = ds.images["image_id"].tolist()
        store = cache.native if setting.startswith("native") else cache
        kw = {"random_crop_flips": dict(train=True, crop=40, vflip=True),
              "centre_crop": dict(train=False, eval_crop=48), "eval_whole": dict(train=False),
              "train_whole_flips": dict(train=True, vflip=True),
              "native_crop_flips": dict(train=True, crop=56, vflip=True),
              "native_centre": dict(train=False, eval_crop=60)}.get(setting)
        items = NativeImageItems(ds, ids, cache, set(ALL_INPUTS), seed=5) if kw is None else \
            ImageItems(ds, ids, store, set(ALL_INPUTS), seed=5, **kw)
        flipped = set()
        for epoch in range(3):
            items.set_epoch(epoch)
            for indices in ([3, 0, 7, 7, 12], list(range(len(ids)))[::-1], [9]):
                batched = items.__getitems__(indices)
                _assert_same_batch(collate(batched), default_collate([items[i] for i in indices]))
                if "image" in batched:
                    flipped.add(tuple(batched["image"][:, 0, 0, 0].tolist()))
        if setting in ("random_crop_flips", "train_whole_flips", "native_crop_flips"):
            assert len(flipped) > 3, "the draws changed the crops/flips between epochs"
    finally:
        ds.images = saved


def test_engine_loader_batches_equal_per_item_batches(toy_dataset):
    """The engine's DataLoader (batched items, shuffled, normalised by to_device) yields the batches a per-item
    DataLoader with torch's default collation yields, in the same order."""
    from torch.utils.data import DataLoader

    from iqalab.train.engine import _loader, to_device

    items = _items(toy_dataset, inputs=("image", "cam"), crop=48, vflip=True)

    class PerItem(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    cpu = torch.device("cpu")
    for epoch in range(2):
        items.set_epoch(epoch)
        ours = [to_device(b, cpu) for b in _loader(items, 6, True, seed=epoch, workers=0)]
        reference = [to_device(b, cpu) for b in DataLoader(PerItem(), batch_size=6, shuffle=True, drop_last=True,
                                                            generator=torch.Generator().manual_seed(epoch))]
        assert len(ours) == len(reference) == len(items) // 6
        for a, b in zip(ours, reference, strict=True):
            assert a["image"].dtype == torch.float32
            _assert_same_batch(a, b)


def test_patch_items_bypass_the_batched_path(toy_dataset):
    """PatchItems cut their own items: ``__getitems__`` returns them one by one, collated by torch as before."""
    from torch.utils.data import DataLoader, default_collate

    from iqalab.data.loaders import ItemBatch, collate

    patches = PatchItems(toy_dataset, toy_dataset.images["image_id"].tolist(), ImageCache(toy_dataset, TOY_CACHE),
                         {"image", "cam"}, train=True, scales=[(16, 3)])
    got = patches.__getitems__([4, 1])
    assert isinstance(got, list) and not isinstance(got, ItemBatch)
    batch = collate(got)
    reference = default_collate([patches[4], patches[1]])
    for a, b in zip(batch["patches"], reference["patches"], strict=True):
        assert a.shape == (2, 3, 3, 16, 16) and torch.equal(a, b)
    assert torch.equal(batch["cam"], reference["cam"])
    # a batched ImageItems batch in a DataLoader without the collate says what to pass
    plain = DataLoader(_items(toy_dataset), batch_size=4)
    with pytest.raises(TypeError, match="collate_fn=iqalab.data.loaders.collate"):
        next(iter(plain))


def test_normalise_batch_does_not_depend_on_the_batching():
    """Image by image on a CPU (cache-sized passes): the values of one whole-tensor pass, exactly."""
    x = torch.randint(0, 256, (5, 2, 3, 9, 7), dtype=torch.uint8)
    scale = torch.from_numpy((1.0 / (IMAGENET_STD.astype(np.float64) * 255.0)).astype(np.float32)).view(3, 1, 1)
    shift = torch.from_numpy((-(IMAGENET_MEAN / IMAGENET_STD).astype(np.float64)).astype(np.float32)).view(3, 1, 1)
    whole = x.float() * scale + shift
    out = normalise_batch(x)
    assert out.dtype == torch.float32 and torch.equal(out, whole)
    assert torch.equal(normalise_batch(x[1:2, 0]), whole[1:2, 0]), "one image alone: the same values"
    assert torch.equal(normalise_batch(x.transpose(-1, -2)), whole.transpose(-1, -2)), "non-contiguous input"
    floats = x.float()
    normalise_batch(floats)
    assert torch.equal(floats, x.float()), "a float input is never modified"


def test_batched_native_frames_keep_their_shape(tmp_path):
    """Rectangular native frames (KonIQ's 1024 x 768): whole-frame flips move boxes by the width, not the height;
    frames of different sizes still come one by one (and refuse to be stacked, as per item)."""
    from torch.utils.data import default_collate

    from iqalab.data.loaders import collate

    ds, _ = _konIQ_like(tmp_path)
    cache = ImageCache(ds, 64)
    inputs = {"image", "person_box", "landmarks"}
    whole = ImageItems(ds, ["img0", "img1"], cache.native, inputs, train=True, vflip=True, seed=2)
    seen = set()
    for epoch in range(4):
        whole.set_epoch(epoch)
        batched = collate(whole.__getitems__([0, 0]))
        assert batched["image"].shape == (2, 3, 768, 1024)
        _assert_same_batch(batched, default_collate([whole[0], whole[0]]))
        seen.add(tuple(batched["person_box"][0].tolist()))
    assert len(seen) > 1, "flips moved the box"
    mixed = whole.__getitems__([0, 1])
    assert isinstance(mixed, list) and [tuple(m["image"].shape) for m in mixed] == [(3, 768, 1024), (3, 1024, 768)]
    with pytest.raises(RuntimeError):
        collate(mixed)


def test_verify_checks_every_row_once_in_this_process(toy_dataset):
    """``verify`` (called by the engine before forking loader workers) leaves every row of the items CRC-checked,
    so that forked workers do not re-read whole images."""
    items = _items(toy_dataset)
    items.cache = ImageCache(toy_dataset, TOY_CACHE)  # a fresh store: nothing checked yet
    assert not items.cache._checked.any()
    items.verify()
    assert items.cache._checked[items.rows].all()
