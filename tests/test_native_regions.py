"""Native-resolution patches of the HyperIQA family (issue #30, seed 001 Sec. IV-B/IV-D): face-region patches cut
by the loader from the native store are crops of the original file inside the padded face box; several scales
run through the model; the engine and scoring use the same patches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from iqalab.data.cache import ImageCache, build_cache
from iqalab.data.loaders import PatchItems
from iqalab.data.schema import Dataset, read_dataset, write_dataset
from iqalab.models.fhiqa import FHIQA

from .test_cache import textured

#: normalised face box of img0 (a 600 x 800 frame: x 300-500, y 150-300 px) and img1 (a tiny 12 x 12 px face)
FACES = {0: (0.375, 0.25, 0.625, 0.5), 1: (0.5, 0.5, 0.5 + 12 / 700, 0.5 + 12 / 500)}


def portrait_dataset(root, sizes=((600, 800), (500, 700))):
    """Two PNG portraits with face boxes, attributes overall and exposure, one scene each."""
    (root / "images").mkdir(parents=True)
    rows, pixels = [], []
    for k, (h, w) in enumerate(sizes):
        image = textured(h, w, seed=k)
        pixels.append(image)
        Image.fromarray(image).save(root / f"images/img{k}.png", compress_level=1)
        box = FACES.get(k, (np.nan,) * 4)
        rows.append({"image_id": f"img{k}", "path": f"images/img{k}.png", "scene": f"scene{k}", "width": w,
                     "height": h, "mos_overall": 1.0 + k, "mos_exposure": 2.0 + k, "face_x0": box[0],
                     "face_y0": box[1], "face_x1": box[2], "face_y1": box[3]})
    table = pd.DataFrame(rows)
    splits = pd.DataFrame({"split": "scene", "image_id": table["image_id"], "role": ["train", "test"]})
    write_dataset(Dataset(root=root, meta={"name": root.name, "attributes": ["overall", "exposure"],
                                           "mos_range": [1.0, 5.0], "source": "test", "simulated": True},
                          images=table, splits=splits))
    ds = read_dataset(root)
    build_cache(ds, 64, progress=False)
    return ds, pixels


def corners_of(items: PatchItems, i: int) -> list[tuple[int, int, np.ndarray]]:
    """The face squares item ``i`` cut in evaluation (its generator replayed: image patches first, then faces)."""
    rng = items.item_rng(i)
    items.patch_offsets(i, rng)
    return items.face_offsets(i, rng)


def test_face_region_patch_is_the_crop_of_the_original_file_inside_the_padded_box(tmp_path):
    ds, pixels = portrait_dataset(tmp_path / "portraits")
    store = ImageCache(ds, 64).native
    items = PatchItems(ds, ["img0", "img1"], store, {"image", "face_box"}, train=False, scales=[(64, 2)],
                       face_scales=[(64, 3), (150, 1)], face_margin=0.1, rounds=2, eval_seed=5)
    item = items[0]
    assert [tuple(p.shape) for p in item["face_patches"]] == [(6, 3, 64, 64), (2, 3, 150, 150)]
    # the box in native pixels: x 300-500, y 150-300; padded by 10 %: x 280-520, y 135-315
    assert items.face_window(0).tolist() == [280.0, 135.0, 520.0, 315.0]
    original = np.asarray(Image.open(ds.root / "images/img0.png").convert("RGB"))
    for patches, (side, square, corners) in zip(item["face_patches"], corners_of(items, 0)):
        assert square == side, "a face larger than the patch: exact crops"
        for patch, (y, x) in zip(patches, corners.tolist()):
            assert 280 <= x and x + side <= 520 and 135 <= y and y + side <= 315, "inside the padded face box"
            np.testing.assert_array_equal(patch.permute(1, 2, 0).numpy(), original[y:y + side, x:x + side])
    # the image patches are still the whole frame's (not confined to the face)
    assert [tuple(p.shape) for p in item["patches"]] == [(4, 3, 64, 64)]
    # a 12 px face (padded outwards to whole pixels: 16 px) smaller than the patch: whole, resized to the patch
    small = items[1]["face_patches"][0]
    (side, square, corners), _ = corners_of(items, 1)
    assert (side, square) == (64, 16)
    y, x = corners[0].tolist()
    face = torch.from_numpy(np.ascontiguousarray(pixels[1][y:y + 16, x:x + 16].transpose(2, 0, 1)))[None].float()
    resized = torch.nn.functional.interpolate(face, size=(64, 64), mode="bilinear", align_corners=True)
    assert torch.equal(small[0], resized[0].round().to(torch.uint8))
    assert torch.equal(small[0, :, 0, 0], face[0, :, 0, 0].to(torch.uint8)), "corners are pixel centres"


def test_region_patches_match_the_models_rule_from_the_cache(tmp_path):
    """One rule: the model's face windows on a box equal the loader's on the same box and frame."""
    from iqalab.models.hyperiqa import face_windows

    ds, _ = portrait_dataset(tmp_path / "portraits")
    items = PatchItems(ds, ["img0"], ImageCache(ds, 64).native, {"image"}, train=True, scales=[(32, 1)],
                       face_scales=[(32, 1)], face_margin=0.25)
    box = torch.tensor([FACES[0]]) * torch.tensor([800.0, 600.0, 800.0, 600.0])
    assert face_windows(box, 600, 800, 0.25)[0].tolist() == items.face_window(0).tolist()


def test_fhiqa_trains_and_predicts_on_native_face_patches_through_the_engine(tmp_path):
    """regions: piq23 with train.resolution: native: the engine's loader cuts face patches, the model reads them
    (Exposure on the face: changing only the face patches changes only its score)."""
    from iqalab.train.engine import image_items, to_device

    ds, _ = portrait_dataset(tmp_path / "portraits")
    torch.manual_seed(0)
    model = FHIQA(["overall", "exposure"], **{**FHIQA.smoke_params, "n_scenes": 2})
    common = dict(ds=ds, cache=ImageCache(ds, 64), inputs=model.inputs, seed=0)
    train = image_items(model, ["img0", "img1"], True, "native", crop=None, **common)
    assert isinstance(train, PatchItems) and train.face_scales == [(32, 2)]
    batch = to_device(torch.utils.data.default_collate([train[0], train[1]]), torch.device("cpu"))
    assert batch["face_patches"][0].shape == (2, 2, 3, 32, 32) and batch["face_patches"][0].dtype == torch.float32
    batch["scene_idx"] = torch.tensor([0, 1])
    from iqalab.models.base import StepContext

    assert torch.isfinite(model.training_step(batch, StepContext(epoch=0, epochs=1)))
    model.eval()
    evaluation = image_items(model, ["img0", "img1"], False, "native", eval_crop=None, **common)
    batch = to_device(torch.utils.data.default_collate([evaluation[0], evaluation[1]]), torch.device("cpu"))
    before = model.predict_details(batch)["pre_quality"]
    batch["face_patches"] = [p.flip(-1) * 0.5 for p in batch["face_patches"]]
    after = model.predict_details(batch)["pre_quality"]
    torch.testing.assert_close(after[:, 0], before[:, 0])  # overall: whole-image patches only
    assert not torch.allclose(after[:, 1], before[:, 1])
    without = dict(batch)
    del without["face_patches"]
    with pytest.raises(ValueError, match="face_patches"):
        model.predict(without)


def test_several_scales_run_through_the_model_and_average_every_patch(tmp_path):
    """scales [(side, n), ...]: the loader cuts each scale at native resolution, the model scores every patch at
    its own size (no resize) and the image score is the mean over all of them (seed 001 Sec. II-a)."""
    from iqalab.models.hyperiqa import HyperIQA
    from iqalab.train.engine import image_items, to_device

    ds, _ = portrait_dataset(tmp_path / "portraits")
    torch.manual_seed(0)
    model = HyperIQA(["overall"], **{**HyperIQA.smoke_params, "scales": [[32, 3], [96, 1]], "test_rounds": 2})
    assert model.n_patches == 4 and model.patch_plan() == [(32, 3), (96, 1)]
    model.eval()
    items = image_items(model, ["img0"], False, "native", eval_crop=None, ds=ds, cache=ImageCache(ds, 64),
                        inputs=model.inputs, seed=0)
    batch = to_device(torch.utils.data.default_collate([items[0]]), torch.device("cpu"))
    assert [tuple(p.shape) for p in batch["patches"]] == [(1, 6, 3, 32, 32), (1, 2, 3, 96, 96)]
    q = torch.cat([model.patch_outputs(p)["q"] for p in batch["patches"]], dim=1)  # [1, 8, 1]
    rounds = [torch.cat([q[:, :3], q[:, 6:7]], dim=1).mean(1), torch.cat([q[:, 3:6], q[:, 7:8]], dim=1).mean(1)]
    torch.testing.assert_close(model.predict(batch)["overall"], (rounds[0] + rounds[1])[:, 0] / 2)
    # from the square cache the model samples both scales itself, sides scaled by the patch rate
    cached = HyperIQA(["overall"], **{**HyperIQA.smoke_params, "scales": [[32, 3], [96, 1]],
                                      "reference_side": 128})
    sets = cached.patch_sets(torch.zeros(1, 3, 64, 64))
    assert [tuple(p.shape) for p in sets] == [(1, 3, 3, 16, 16), (1, 1, 3, 48, 48)]

