"""FHIQA: the top-k fusion of Eq. (1) (hand-checked values, brute force), its reduction to one scene's rescaled
score with a one-hot classifier, the choice of k, gradient flow to backbone, hyper network, classifier and
rescaler, and Exposure / Details judged on the face region (Sec. IV-D; tiny models, 64 px images)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from iqalab.models import build_model
from iqalab.models.base import StepContext
from iqalab.models.fhiqa import FHIQA, topk_rescale
from iqalab.models.hyperiqa import HyperIQA, face_windows, sample_region_patches

ATTRS = ["overall", "exposure"]


def tiny(**overrides) -> FHIQA:
    torch.manual_seed(0)
    return FHIQA(ATTRS, **{**FHIQA.smoke_params, **overrides})


def batch(n: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 64, 64, generator=g), "mos_norm": torch.rand(n, 2, generator=g),
            "scene_idx": torch.arange(n) % 3, "face_box": torch.tensor([[16.0, 8.0, 48.0, 44.0]] * n)}


# -- Eq. (1) ----------------------------------------------------------------------------------------------------
def test_topk_rescale_hand_checked_values():
    q = torch.tensor([[0.4]])
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    a = torch.tensor([[2.0], [1.0], [0.5]])
    b = torch.tensor([[0.1], [0.0], [-0.2]])
    # k=1: scene 0 only -> 2 * 0.4 + 0.1
    assert float(topk_rescale(q, probs, a, b, 1)) == pytest.approx(0.9)
    # k=2: (0.5 * 0.9 + 0.3 * 0.4) / 0.8
    assert float(topk_rescale(q, probs, a, b, 2)) == pytest.approx(0.7125)
    # k=3: (0.45 + 0.12 + 0.2 * 0.0) / 1.0
    assert float(topk_rescale(q, probs, a, b, 3)) == pytest.approx(0.57)
    # k beyond the scene count means every scene
    assert float(topk_rescale(q, probs, a, b, 25)) == pytest.approx(0.57)


def test_topk_rescale_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(4, 2, generator=g)
    probs = torch.rand(4, 6, generator=g).softmax(-1)
    a, b = torch.rand(6, 2, generator=g) + 0.5, torch.randn(6, 2, generator=g) * 0.1
    for k in (1, 3, 6):
        got = topk_rescale(q, probs, a, b, k)
        for i, j in itertools.product(range(4), range(2)):
            order = sorted(range(6), key=lambda s: -float(probs[i, s]))[:k]
            num = sum(float(probs[i, s]) * (float(a[s, j]) * float(q[i, j]) + float(b[s, j])) for s in order)
            den = sum(float(probs[i, s]) for s in order)
            assert float(got[i, j]) == pytest.approx(num / den, rel=1e-5)


def test_one_hot_probabilities_give_that_scenes_rescaled_score():
    q = torch.tensor([[0.3, 0.6], [0.8, 0.1]])
    probs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    a = torch.tensor([[1.2, 0.9], [0.5, 2.0], [1.5, 0.7]])
    b = torch.tensor([[-0.1, 0.05], [0.2, 0.0], [0.1, -0.3]])
    got = topk_rescale(q, probs, a, b, k=3)
    expected = torch.tensor([[1.5 * 0.3 + 0.1, 0.7 * 0.6 - 0.3], [1.2 * 0.8 - 0.1, 0.9 * 0.1 + 0.05]])
    torch.testing.assert_close(got, expected)


# -- the model ----------------------------------------------------------------------------------------------------
def _set_one_hot_classifier(model: FHIQA, scene: int) -> None:
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-40.0)
        last.bias[scene] = 40.0


def _set_scene_table(model: FHIQA, a: torch.Tensor, b: torch.Tensor) -> None:
    """With ``rescaler_layers=0`` the rescaler is one Linear(S, 2A): scene s's (a, b) is column s of the weight."""
    lin = model.rescaler[-1]
    with torch.no_grad():
        lin.bias.zero_()
        lin.weight.copy_(torch.cat([a, b], dim=1).T)


def test_k_all_scenes_with_one_hot_classifier_reduces_to_that_scene():
    model = tiny(n_scenes=3, top_k=3, rescaler_layers=0).eval()
    a = torch.tensor([[1.5, 0.8], [0.6, 1.1], [2.0, 0.5]])
    b = torch.tensor([[0.1, -0.2], [0.25, 0.05], [-0.3, 0.4]])
    _set_scene_table(model, a, b)
    scale, offset = model.scene_table()
    torch.testing.assert_close(scale, a)
    torch.testing.assert_close(offset, b)
    _set_one_hot_classifier(model, scene=1)
    d = model.predict_details(batch())
    torch.testing.assert_close(d["scene_probs"][:, 1], torch.ones(2))
    torch.testing.assert_close(d["quality"], a[1] * d["pre_quality"] + b[1])
    # hand check on one number: Q_f = 0.6 * Q_p + 0.25 for the first attribute of the first image
    assert float(d["quality"][0, 0]) == pytest.approx(0.6 * float(d["pre_quality"][0, 0]) + 0.25, abs=1e-6)
    out = model.predict(batch())
    torch.testing.assert_close(out["exposure"], 1.1 * d["pre_quality"][:, 1] + 0.05)


def test_top_k_selects_how_many_scenes_are_fused():
    model = tiny(n_scenes=3, top_k=1, rescaler_layers=0).eval()
    a = torch.tensor([[1.5, 0.8], [0.6, 1.1], [2.0, 0.5]])
    b = torch.tensor([[0.1, -0.2], [0.25, 0.05], [-0.3, 0.4]])
    _set_scene_table(model, a, b)
    with torch.no_grad():
        model.classifier[-1].weight.zero_()
        model.classifier[-1].bias.copy_(torch.tensor([2.0, 1.0, 0.0]))
    pre = torch.tensor([[0.4, 0.7]])
    logits = model.classifier[-1].bias.unsqueeze(0)
    torch.testing.assert_close(model.fuse(pre, logits), a[0] * pre + b[0])  # k=1: the most likely scene
    model.top_k = 3
    p = logits.softmax(-1)[0]
    expected = sum(p[s] * (a[s] * pre + b[s]) for s in range(3)) / p.sum()
    torch.testing.assert_close(model.fuse(pre, logits), expected)


def test_gradients_reach_backbone_hyper_network_classifier_and_rescaler():
    model = tiny(n_scenes=3, top_k=2).train()
    loss = model.training_step(batch(n=3), StepContext(epoch=0, epochs=1))
    loss.backward()
    for name, part in [("backbone", model.backbone), ("lda", model.lda), ("hyper", model.hyper.weight_gens[0]),
                       ("classifier", model.classifier), ("rescaler in", model.rescaler[0]),
                       ("rescaler out", model.rescaler[-1])]:
        grad = sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None)
        assert grad > 0, f"no gradient reaches {name}"


def test_head_init_sets_the_scene_table_at_init():
    """``head_init="identity"`` (default): every scene's (a, b) starts at (1, 0); ``"release"`` (PIQ23's
    SEM-HyperIQA init: Kaiming-normal weights, zero biases in the classifier and rescaler): a random table around 0
    whose root-mean-square is about ``sqrt(2 / S)``, and no (1, 0) start."""
    s = 30
    identity = tiny(n_scenes=s, rescaler_hidden=100)
    with torch.no_grad():
        a, b = identity.scene_table()
    torch.testing.assert_close(a, torch.ones(s, len(ATTRS)), atol=0.02, rtol=0)
    torch.testing.assert_close(b, torch.zeros(s, len(ATTRS)), atol=0.02, rtol=0)
    release = tiny(n_scenes=s, rescaler_hidden=100, head_init="release")
    assert not any(layer.bias.any() for part in (release.classifier, release.rescaler) for layer in part
                   if isinstance(layer, torch.nn.Linear))
    with torch.no_grad():
        a, b = release.scene_table()
    rms = float(torch.cat([a, b]).pow(2).mean().sqrt())
    assert rms == pytest.approx(math.sqrt(2.0 / s), rel=0.5)
    assert float((a - 1.0).abs().mean()) > 0.5  # far from the identity start


def test_registry_builds_fhiqa_and_checks_k():
    model = build_model("fhiqa", ATTRS, **{**FHIQA.smoke_params, "top_k": 25})
    assert isinstance(model, FHIQA) and model.top_k == 25
    assert model.rescaler[-1].out_features == 2 * len(ATTRS)
    assert {"image", "scene_idx"} <= set(model.inputs)
    with pytest.raises(ValueError):
        build_model("fhiqa", ATTRS, **{**FHIQA.smoke_params, "top_k": 0})


# -- the face region of Exposure and Details (Sec. IV-D) ------------------------------------------------------------
def test_face_windows_pad_clip_and_fall_back_to_the_whole_image():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [-5.0, 50.0, 20.5, 90.0], [float("nan")] * 4])
    win = face_windows(boxes, height=80, width=100, margin=0.25)
    assert win[0].tolist() == [5.0, 10.0, 35.0, 70.0]  # 20 x 40 box padded by 5 / 10 px on each side
    assert win[1].tolist() == [0.0, 40.0, 27.0, 80.0]  # clipped to the image, outwards to whole pixels
    assert win[2].tolist() == [0.0, 0.0, 100.0, 80.0]  # no face found: the whole image
    with pytest.raises(ValueError, match="face_box"):
        face_windows(None, 80, 100)


def test_region_patches_are_exact_crops_inside_the_window_or_the_whole_small_face():
    h, w = 40, 50
    image = torch.arange(2 * h * w, dtype=torch.float32).reshape(2, 1, h, w)
    windows = torch.tensor([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 6.0, 6.0]])  # 20 px window; a 6 px face
    patches = sample_region_patches(image, windows, size=12, n=6, generator=torch.Generator().manual_seed(3))
    assert patches.shape == (2, 6, 1, 12, 12)
    for p in patches[0]:  # each patch is the image's own 12 x 12 pixels at a position inside the window
        y, x = divmod(int(p[0, 0, 0]), w)
        assert 5 <= y <= 25 - 12 and 10 <= x <= 30 - 12
        torch.testing.assert_close(p[0], image[0, 0, y:y + 12, x:x + 12])
    face = image[1, 0, :6, :6]
    for p in patches[1]:  # the small face is taken whole and resized: values stay within its pixels
        assert face.min() - 1e-3 <= p.min() and p.max() <= face.max() + 1e-3
        assert float(p[0, 0, 0]) == float(face[0, 0]) and float(p[0, -1, -1]) == float(face[-1, -1])  # corners


def test_exposure_is_judged_on_the_face_and_overall_on_the_whole_image():
    model = tiny(n_scenes=3, top_k=3).eval()
    assert model.regions == {"overall": "image", "exposure": "face"} and "face_box" in model.inputs
    b = batch(n=2)
    b["face_box"] = torch.tensor([[16.0, 8.0, 48.0, 44.0], [0.0, 20.0, 30.0, 64.0]])
    before = model.predict_details(b)
    outside = b["image"].clone()
    win = face_windows(b["face_box"], 64, 64, model.face_margin).long()
    keep = torch.zeros_like(outside, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(win.tolist()):
        keep[i, :, y0:y1, x0:x1] = True
    outside[~keep] = torch.randn(int((~keep).sum()), generator=torch.Generator().manual_seed(9))
    after = model.predict_details({**b, "image": outside})
    # the face patches saw the same pixels: the pre-quality of Exposure is unchanged; Overall's changed
    torch.testing.assert_close(after["pre_quality"][:, 1], before["pre_quality"][:, 1])
    assert not torch.allclose(after["pre_quality"][:, 0], before["pre_quality"][:, 0])


def test_regions_are_validated_and_default_to_the_piq23_rule():
    assert tiny().regions == {"overall": "image", "exposure": "face"}
    plain = FHIQA(["overall", "details"], **{**FHIQA.smoke_params, "regions": None})
    assert plain.regions == {"overall": "image", "details": "image"} and "face_box" not in plain.inputs
    assert FHIQA(["details", "exposure"], **FHIQA.smoke_params).region_kinds == ("face",)
    hyper = HyperIQA(["overall", "details"], **{**HyperIQA.smoke_params, "regions": {"details": "face"}})
    assert "face_box" in hyper.inputs and hyper.regions["details"] == "face"
    for bad in ({"sharpness": "face"}, {"details": "body"}):
        with pytest.raises(ValueError, match="regions"):
            HyperIQA(["overall", "details"], **{**HyperIQA.smoke_params, "regions": bad})
    with pytest.raises(ValueError, match="regions"):
        tiny(regions="tid2013")
    pre_cut = [torch.zeros(1, 2, 3, 32, 32)]  # the loader's patches: no face region to draw from
    with pytest.raises(ValueError, match="resolution"):
        tiny().image_outputs(pre_cut, face_box=torch.tensor([[0.0, 0.0, 8.0, 8.0]]))


def test_fhiqa_refuses_a_dataset_never_searched_for_faces(toy_dataset):
    from iqalab.data.regions import check_regions
    from iqalab.data.schema import DataError

    ids = {"train": toy_dataset.images["image_id"].tolist()[:4], "test": toy_dataset.images["image_id"].tolist()[4:]}
    with pytest.raises(DataError, match="needs face_box regions"):
        check_regions(tiny(), toy_dataset, ids, "experiments.f")
    allowed = check_regions(tiny(allow_missing_regions=True), toy_dataset, ids, "experiments.f")
    assert allowed["allow_missing"] is True and len(allowed["missing_test_ids"]) == len(ids["test"])
    assert check_regions(tiny(regions=None), toy_dataset, ids, "experiments.f") == {}


# -- scene space: the training scenes (seed 001 Sec. II-b, III) ---------------------------------------------------
def test_scene_targets_map_dataset_indices_to_training_scene_classes():
    model = tiny(n_scenes=None, scenes=["b", "d"], dataset_scenes=["a", "b", "c", "d"])
    assert model.n_scenes == 2 and model.classifier[-1].out_features == 2
    assert model.scene_table()[0].shape == (2, 2), "one (a, b) per training scene"
    assert model.scene_classes(torch.tensor([0, 1, 2, 3, -1])).tolist() == [-1, 0, -1, 1, -1]
    # only the images of training scenes are classification targets: an unseen scene adds no cross-entropy
    b = batch(2)
    b["scene_idx"] = torch.tensor([2, 0])  # both unseen ("c", "a")
    b["face_box"] = b["face_box"][:2]
    model.ce_weight = 1.0
    torch.manual_seed(1)  # the same random patches in both passes
    loss_unseen = model.training_step(b, StepContext(epoch=0, epochs=1))
    torch.manual_seed(1)
    out = model.image_outputs(b["image"], face_box=b["face_box"])
    from iqalab.models.hyperiqa import quality_loss
    q_only = quality_loss(model._as_dict(out["quality"]), b["mos_norm"], model.attributes, model.loss,
                          model.huber_delta)
    torch.testing.assert_close(loss_unseen, q_only)
    with pytest.raises(ValueError, match="n_scenes"):
        tiny(scenes=["a", "b"], n_scenes=3)


def test_engine_builds_fhiqa_on_the_training_scenes_and_score_cuts_its_native_evaluation_patches(toy_dataset,
                                                                                                 project):
    """The scene space: the old engine passed n_scenes = every scene of the dataset (test scenes included); the
    checkpoint now records the training scenes. Scoring (train.resolution: native): `iqalab score` scores a file
    on the patches evaluation cut from the same image (seeded by its pixels, not by its place in the test list)."""
    import shutil

    from iqalab.config import parse_params
    from iqalab.data.cache import decode_image
    from iqalab.inference import Scorer
    from iqalab.train.engine import load_checkpoint, model_from_checkpoint, select_ids, train_experiment

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    smoke = {k: v for k, v in FHIQA.smoke_params.items() if k != "n_scenes"} | {"regions": None, "test_rounds": 2}
    params = parse_params(toy_params(f={"dataset": "toy", "model": {"name": "fhiqa", **smoke},
                                        "train": {"epochs": 1, "crop": None, "resolution": "native"}}))
    preds = train_experiment(params, "f", project.root, progress=False)
    best = project.root / "build" / "models" / "f" / "scene" / "best.pt"
    ckpt = load_checkpoint(best)
    model = model_from_checkpoint(ckpt)
    split = select_ids(toy_dataset, "scene", params.train_config("f"))
    table = toy_dataset.images.set_index("image_id")
    train_scenes = sorted(table.loc[split["train"], "scene"].unique())
    test_scenes = set(table.loc[split["test"], "scene"])
    assert test_scenes and not test_scenes & set(train_scenes), "the scene split holds test scenes out"
    assert model.scenes == train_scenes and model.n_scenes == len(train_scenes) < len(toy_dataset.scenes)
    assert ckpt["config"]["model_kwargs"]["scenes"] == train_scenes

    test = preds[(preds.role == "test") & (preds.attribute == toy_dataset.attributes[0])]
    scorer = Scorer(best, device="cpu")
    assert scorer.patches is not None and scorer.patches["scales"] == [(32, 2)]
    paths = table.loc[test.image_id, "path"]
    images = [scorer.decode(toy_dataset.root / p) for p in paths]
    assert images[0].shape == decode_image(toy_dataset.root / paths.iloc[0]).shape, "native pixels, no resize"
    scores = scorer.score(images[::-1], prepared=True)[toy_dataset.attributes[0]][::-1]  # reversed: patches follow the image
    np.testing.assert_allclose(scores, test.pred.to_numpy(), rtol=1e-5, atol=1e-6)


def test_quality_loss_is_weighed_against_the_cross_entropy_in_mos_units():
    """Seed 001 Sec. IV-B: ``1.0 x Huber(quality) + 0.5 x CE(scene)`` on the JOD scale. With ``mos_span`` (the
    engine passes the dataset's MOS range width) the Huber term is the one in MOS units: ``mos_span ** 2`` times
    the normalised-scale term (Huber is homogeneous), so on a 20-JOD range the quality term weighs 400 x what it
    did before (``loss_units="normalised"``), and the CE term is unchanged."""
    from iqalab.models.hyperiqa import quality_loss

    b = batch(n=3)
    ctx = StepContext(epoch=0, epochs=1)
    parts = {}
    for units in ("normalised", "mos"):
        model = tiny(n_scenes=3, top_k=2, mos_span=20.0, loss_units=units).eval()  # eval: no dropout
        with torch.no_grad():
            torch.manual_seed(5)  # the same random patches in both
            total = model.training_step(b, ctx)
            torch.manual_seed(5)
            out = model.image_outputs(b["image"], face_box=b["face_box"])
        q = quality_loss(model._as_dict(out["quality"]), b["mos_norm"], model.attributes, "huber", model.huber_delta)
        parts[units] = (float(total), float(q), float(total) - model.loss_scale * float(q))
    (t_norm, q_norm, ce_norm), (t_mos, q_mos, ce_mos) = parts["normalised"], parts["mos"]
    assert t_norm == pytest.approx(ce_norm + q_norm, rel=1e-5)
    assert q_norm == pytest.approx(q_mos) and q_norm > 0
    assert ce_norm == pytest.approx(ce_mos, rel=1e-5) and ce_norm > 0.1  # 0.5 x CE over 3 scenes
    assert t_mos - ce_mos == pytest.approx(400.0 * q_norm, rel=1e-5)
    assert tiny(mos_span=20.0).loss_scale == 400.0 and tiny(mos_span=20.0, loss="l1").loss_scale == 20.0
    assert tiny().loss_scale == 1.0  # built outside training: no range known
    with pytest.raises(ValueError, match="loss_units"):
        tiny(loss_units="jod")


def test_engine_passes_the_mos_span_of_the_dataset():
    """``dataset_kwargs`` gives the HyperIQA family the width of the dataset's MOS range next to the scenes."""
    from types import SimpleNamespace

    import pandas as pd

    ds = SimpleNamespace(mos_range=(-10.0, 10.0), scenes=["a", "b"],
                         images=pd.DataFrame({"image_id": ["x", "y"], "scene": ["a", "b"]}))
    assert HyperIQA.dataset_kwargs(ds) == {"mos_span": 20.0}
    assert FHIQA.dataset_kwargs(ds, ["x"]) == {"mos_span": 20.0, "scenes": ["a"], "dataset_scenes": ["a", "b"]}
