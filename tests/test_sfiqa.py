"""SFIQA-Assessor: view geometry, parameter counts against the documented values, decoder and ablations."""

from __future__ import annotations

import math

import pytest
import torch

from iqalab.models.base import StepContext
from iqalab.models.registry import build_model, get_model_class
from iqalab.models.sfiqa import (
    DOCUMENTED_PARAMS,
    PAPER_COMPLEXITY,
    CrossViewLowRankAttention,
    SFIQAAssessor,
    cut_views,
    eyes_mouth_boxes,
    eyes_mouth_mask,
    face_boxes,
    template_landmarks,
)

ATTRS = ["noise", "sharpness", "colorfulness", "contrast", "fidelity", "overall"]
SMOKE = dict(SFIQAAssessor.smoke_params)


def random_faces(n: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random face boxes inside the image (some touching the border) with five landmarks inside each box."""
    g = torch.Generator().manual_seed(seed)
    side = torch.rand(n, generator=g) * 0.7 * min(height, width) + 8
    x0 = torch.rand(n, generator=g) * (width - side)
    y0 = torch.rand(n, generator=g) * (height - side)
    x0[0], y0[0] = 0.0, 0.0  # a face in the top-left corner
    x0[1], y0[1] = width - side[1], height - side[1]  # and one in the bottom-right corner
    box = torch.stack([x0, y0, x0 + side, y0 + side], dim=1)
    rel = torch.tensor([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.8], [0.65, 0.8]])
    jitter = (torch.rand(n, 5, 2, generator=g) - 0.5) * 0.15
    lm = box[:, None, :2] + (rel + jitter).clamp(0, 1) * side[:, None, None]
    return box, lm


def contains(boxes: torch.Tensor, points: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    """Whether each box ``[B, 4]`` contains all of its row's points ``[B, K, 2]``."""
    return ((points[..., 0] >= boxes[:, None, 0] - tol) & (points[..., 0] <= boxes[:, None, 2] + tol)
            & (points[..., 1] >= boxes[:, None, 1] - tol) & (points[..., 1] <= boxes[:, None, 3] + tol)).all(dim=1)


def inside_image(boxes: torch.Tensor, height: int, width: int, tol: float = 1e-4) -> torch.Tensor:
    return ((boxes[:, 0] >= -tol) & (boxes[:, 1] >= -tol) & (boxes[:, 2] <= width + tol)
            & (boxes[:, 3] <= height + tol) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))


@pytest.fixture(scope="module")
def smoke_model() -> SFIQAAssessor:
    torch.manual_seed(0)
    return build_model("sfiqa_xxs", ATTRS, **SMOKE)


def smoke_batch(n: int = 2, height: int = 64, width: int = 64) -> dict:
    box, lm = random_faces(n, height, width, seed=3)
    return {"image": torch.randn(n, 3, height, width), "face_box": box, "landmarks": lm,
            "mos_norm": torch.rand(n, len(ATTRS))}


# -- view geometry ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("height", "width"), [(96, 96), (80, 120), (150, 70)])
def test_view_boxes_inside_image_and_contain_landmarks(height: int, width: int) -> None:
    box, lm = random_faces(64, height, width)
    face = face_boxes(box, lm, height, width, margin=0.1)
    em = eyes_mouth_boxes(lm, face, height, width, margin=0.3)
    for boxes in (face, em):
        assert inside_image(boxes, height, width).all()
        assert contains(boxes, lm).all()
    # the face view holds the detector box wherever the padded square fits in the image
    corners = torch.stack([box[:, :2], box[:, 2:]], dim=1)
    assert contains(face, corners).all()
    # the eyes-and-mouth view is the tighter one, and square unless clipped by the image
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    assert (area(em) <= area(face) + 1e-3).all()
    unclipped = (em[:, 2] - em[:, 0] < min(height, width) - 1e-3)
    assert torch.allclose((em[:, 2] - em[:, 0])[unclipped], (em[:, 3] - em[:, 1])[unclipped])


def test_missing_detections_fall_back() -> None:
    h, w = 80, 120
    box, lm = random_faces(3, h, w)
    box[1] = float("nan")  # no box: derive from the landmarks
    box[2] = float("nan")
    lm[2] = float("nan")  # nothing: centre square
    face = face_boxes(box, lm, h, w, fallback_frac=0.8)
    em = eyes_mouth_boxes(lm, face, h, w)
    assert torch.isfinite(face).all() and torch.isfinite(em).all()
    assert inside_image(face, h, w).all() and inside_image(em, h, w).all()
    assert contains(face[1:2], lm[1:2]).all() and contains(em[:2], lm[:2]).all()
    assert torch.allclose(face[2], torch.tensor([w / 2 - 32, h / 2 - 32, w / 2 + 32, h / 2 + 32]))
    assert contains(face[2:], em[2:].reshape(1, 2, 2)).all()  # canonical band lies inside the face view


def test_crops_sample_the_boxes() -> None:
    """A coordinate image (channel 0 = x, channel 1 = y of the pixel centre) shows what each crop covers."""
    h, w, s = 90, 120, 30
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    box, lm = random_faces(8, h, w, seed=1)
    image = torch.stack([xs, ys, torch.zeros_like(xs)])[None].repeat(len(box), 1, 1, 1)
    crops, boxes = cut_views(image, box, lm, view_size=s, eyes_mouth_mode="box")
    assert set(crops) == {"original", "face", "eyes_mouth"}
    for view, crop in crops.items():
        assert crop.shape == (len(box), 3, s, s)
        b = boxes[view]
        # away from the image border (where bilinear sampling clamps), the first and last bin centres of the
        # crop sit half a bin inside the box
        interior = (b[:, 0] >= 1) & (b[:, 1] >= 1) & (b[:, 2] <= w - 1) & (b[:, 3] <= h - 1)
        if view != "original":
            assert interior.sum() >= 2, view
        c, b = crop[interior], b[interior]
        step_x, step_y = (b[:, 2] - b[:, 0]) / s, (b[:, 3] - b[:, 1]) / s
        assert torch.allclose(c[:, 0, :, 0].mean(1), b[:, 0] + step_x / 2, atol=0.02)
        assert torch.allclose(c[:, 0, :, -1].mean(1), b[:, 2] - step_x / 2, atol=0.02)
        assert torch.allclose(c[:, 1, 0, :].mean(1), b[:, 1] + step_y / 2, atol=0.02)
        assert torch.allclose(c[:, 1, -1, :].mean(1), b[:, 3] - step_y / 2, atol=0.02)
    whole = crops["original"]  # the original view spans the image: pixel-centre values from ~0.5 to ~w - 0.5
    assert torch.allclose(boxes["original"][0], torch.tensor([0.0, 0.0, w, h]))
    assert whole[:, 0].min() < w / s and whole[:, 0].max() > w - w / s


def test_mask_keeps_eyes_and_mouth_only() -> None:
    h = w = 96
    box, lm = random_faces(4, h, w, seed=2)
    face = face_boxes(box, lm, h, w)
    em = eyes_mouth_boxes(lm, face, h, w)
    s = 48
    mask = eyes_mouth_mask(lm, em, s)
    assert mask.shape == (4, 1, s, s)
    scale = (em[:, 2:] - em[:, :2]) / s
    pts = ((lm - em[:, None, :2]) / scale[:, None]).long().clamp(0, s - 1)
    for k in range(4):
        for j in (0, 1):  # eye centres are kept
            assert mask[k, 0, pts[k, j, 1], pts[k, j, 0]] > 0.9
        assert mask[k, 0, 0, 0] < 0.1 and mask[k, 0, -1, -1] < 0.1  # corners are blanked
    no_lm = torch.full_like(lm, float("nan"))
    assert torch.equal(eyes_mouth_mask(no_lm, em, s), torch.ones(4, 1, s, s))


def test_parsing_view_is_the_face_view_with_only_eyes_and_mouth_kept() -> None:
    """Sec. IV-A: x_em = the parsed face region x_f with everything but the eyes and the mouth removed (black)."""
    h = w = 96
    s = 48
    box, lm = random_faces(4, h, w, seed=5)
    lm[3] = float("nan")  # no landmarks: the template layout in the face view
    image = torch.randn(4, 3, h, w, generator=torch.Generator().manual_seed(0))
    crops, boxes = cut_views(image, box, lm, view_size=s)
    torch.testing.assert_close(boxes["eyes_mouth"], boxes["face"])
    face, em = crops["face"], crops["eyes_mouth"]
    dark = (-torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225])).reshape(3, 1)
    fv = boxes["face"]
    points = torch.where(torch.isnan(lm), template_landmarks(fv), lm)
    points = torch.cat([points[:, :2], (points[:, 3:4] + points[:, 4:5]) / 2], dim=1)  # eyes, mouth centre
    pix = ((points - fv[:, None, :2]) / ((fv[:, 2:] - fv[:, :2]) / s)[:, None]).long().clamp(0, s - 1)
    for k in range(4):
        for j in range(3):  # the eyes and the mouth: the face view's pixels (soft mask > 0.95 there)
            y, x = int(pix[k, j, 1]), int(pix[k, j, 0])
            contrast = (face[k, :, y, x] - dark[:, 0]).abs()
            assert ((em[k, :, y, x] - face[k, :, y, x]).abs() <= 0.05 * contrast + 1e-4).all(), (k, j)
        for y, x in ((0, 0), (0, s - 1), (s - 1, 0), (s - 1, s - 1)):  # the rest is black
            torch.testing.assert_close(em[k, :, y, x].reshape(3, 1), dark, atol=1e-3, rtol=0.0)
    kept = (em - dark.reshape(1, 3, 1, 1)).abs().sum(1) > 1e-3
    assert (kept.float().mean(dim=(1, 2)) < 0.5).all()  # most of the face is removed
    with pytest.raises(ValueError, match="eyes_mouth_mode"):
        cut_views(image, box, lm, view_size=s, eyes_mouth_mode="segface")
    only_em, _ = cut_views(image, box, lm, view_size=s, views=("eyes_mouth",))  # without the face view too
    torch.testing.assert_close(only_em["eyes_mouth"], em)


# -- parameter counts (Table II) -------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["s", "xs", "xxs"])
def test_parameter_count_matches_documented_value(variant: str) -> None:
    model = build_model(f"sfiqa_{variant}", ATTRS)
    n = model.num_parameters()
    assert n == DOCUMENTED_PARAMS[variant]
    # published value, Table II: tolerance 0.04 M (our reading lacks the same ~0.03 M in every variant: a part
    # outside the backbones that the paper does not describe, see the module docstring)
    assert n / 1e6 == pytest.approx(PAPER_COMPLEXITY[variant][0], abs=0.04)


def test_variants_are_registered_with_their_backbones() -> None:
    assert get_model_class("sfiqa_s").default_variant == "s"
    model = build_model("sfiqa_xs", ["overall"], view_size=64, ffn_dim=64)
    assert model.backbone_name == "edgenext_x_small"
    assert build_model("sfiqa_s", ["overall"], variant="xxs", ffn_dim=64).backbone_name == "edgenext_xx_small"
    with pytest.raises(ValueError, match="views"):
        build_model("sfiqa_xxs", ["overall"], views=["original", "nose"])
    with pytest.raises(ValueError, match="variant"):
        build_model("sfiqa_xxs", ["overall"], variant="m")


# -- forward, decoder, loss ------------------------------------------------------------------------------------
def test_decoder_outputs_one_score_per_task(smoke_model: SFIQAAssessor) -> None:
    smoke_model.eval()
    batch = smoke_batch()
    with torch.no_grad():
        tokens = smoke_model.task_features(batch)
        out = smoke_model(batch)
    assert tokens.shape == (2, len(ATTRS), 128)
    assert list(out) == ATTRS
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in out.values())
    # one head per token: each score depends only on its own token
    heads = torch.stack([head(tokens[:, k]).squeeze(-1) for k, head in enumerate(smoke_model.heads)], dim=1)
    assert torch.allclose(heads, torch.stack([out[a] for a in ATTRS], dim=1))
    # tokens are distinct (learnable, not tied): different tasks give different scores
    assert not torch.allclose(out["noise"], out["overall"])


def test_any_attribute_list_gets_its_tokens() -> None:
    model = build_model("sfiqa_xxs", ["overall", "fidelity"], **SMOKE)
    assert model.task_tokens.shape == (1, 2, 128) and len(model.heads) == 2
    model.eval()
    with torch.no_grad():
        assert set(model(smoke_batch())) == {"overall", "fidelity"}


def test_training_step_is_task_averaged_mse_and_reaches_every_part(smoke_model: SFIQAAssessor) -> None:
    smoke_model.train()
    torch.manual_seed(1)
    batch = smoke_batch()
    batch["mos_norm"][0, 2] = float("nan")  # a missing target is skipped, not propagated
    smoke_model.zero_grad()
    loss = smoke_model.training_step(batch, StepContext(epoch=0, epochs=1))
    assert torch.isfinite(loss)
    loss.backward()
    for name in ("encoders.original.backbone", "encoders.face.proj", "encoders.eyes_mouth.fuse", "cross_view.down",
                 "cross_view.up", "task_tokens", "decoder.1.cross_attn", "decoder.0.self_attn", "heads.5"):
        grads = [p.grad for n, p in smoke_model.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    smoke_model.eval()
    with torch.no_grad():
        pred = smoke_model(batch)
        loss_eval = smoke_model.training_step(batch, StepContext(epoch=0, epochs=1))
    per_task = []
    for k, a in enumerate(ATTRS):
        t = batch["mos_norm"][:, k]
        m = ~torch.isnan(t)
        per_task.append(((pred[a][m] - t[m]) ** 2).mean())
    assert loss_eval == pytest.approx(torch.stack(per_task).mean().item(), rel=1e-5)


def test_cross_view_fusion_is_mean_of_channel_weighted_views() -> None:
    torch.manual_seed(0)
    fusion = CrossViewLowRankAttention(dim=16, latent=8, heads=4).eval()
    feats = torch.randn(2, 3, 16, 5, 5)
    with torch.no_grad():
        u = fusion.weights(feats)
        fused = fusion(feats)
    assert u.shape == (2, 3, 16)
    expected = sum(feats[:, j] * u[:, j, :, None, None] for j in range(3)) / 3
    assert torch.allclose(fused, expected, atol=1e-6)
    # u depends on all views (attention over the view sequence): changing one view changes another's weights
    feats2 = feats.clone()
    feats2[:, 2] += 1.0
    with torch.no_grad():
        assert not torch.allclose(fusion.weights(feats2)[:, 0], u[:, 0])


# -- ablations (Table VI) ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("views", [["original"], ["original", "face"], ["face", "eyes_mouth"], ["eyes_mouth"]])
def test_model_with_views_removed_runs(views: list[str], smoke_model: SFIQAAssessor) -> None:
    model = build_model("sfiqa_xxs", ATTRS, views=views, **SMOKE).eval()
    assert list(model.encoders) == [v for v in ("original", "face", "eyes_mouth") if v in views]
    per_view = sum(p.numel() for p in smoke_model.encoders["original"].parameters())
    assert smoke_model.num_parameters() - model.num_parameters() == (3 - len(views)) * per_view
    with torch.no_grad():
        out = model(smoke_batch())
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in out.values())


def test_fusion_and_task_self_attention_ablations(smoke_model: SFIQAAssessor) -> None:
    no_cff = build_model("sfiqa_xxs", ATTRS, use_cross_view=False, **SMOKE).eval()
    no_tsa = build_model("sfiqa_xxs", ATTRS, use_task_self_attn=False, **SMOKE).eval()
    assert no_cff.cross_view is None
    assert smoke_model.num_parameters() - no_cff.num_parameters() == \
        sum(p.numel() for p in smoke_model.cross_view.parameters())
    d = 128  # two decoder layers lose one MHA (4 d^2 + 4 d) and one LayerNorm (2 d) each
    assert smoke_model.num_parameters() - no_tsa.num_parameters() == 2 * (4 * d * d + 4 * d + 2 * d)
    batch = smoke_batch()
    with torch.no_grad():
        for model in (no_cff, no_tsa):
            assert all(math.isfinite(v.sum().item()) for v in model(batch).values())


def test_predictions_do_not_depend_on_batch_neighbours(smoke_model: SFIQAAssessor) -> None:
    smoke_model.eval()
    batch = smoke_batch(n=3)
    with torch.no_grad():
        full = smoke_model(batch)
        single = smoke_model({k: v[1:2] for k, v in batch.items()})
    assert torch.allclose(full["overall"][1:2], single["overall"], atol=1e-5)


def test_table6_marks_each_rows_views_and_modules() -> None:
    """Table VI's check marks come from each experiment's model arguments (unset = the full model)."""
    from types import SimpleNamespace

    from iqalab.paper_tables.sfiqa import module_marks

    meta = {"full": {"model_kwargs": {"pretrained": True}}, "oem": {"model_kwargs": {"views": ["original", "eyes_mouth"]}},
            "o": {"model_kwargs": {"views": ["original"]}}, "no_tsa": {"model_kwargs": {"use_task_self_attn": False}},
            "no_cff": {"model_kwargs": {"use_cross_view": False}}}
    marks = module_marks(SimpleNamespace(meta=meta), list(meta))
    assert list(marks) == ["Original View", "Face View", "Eyes-Mouth View", "CFF", "TSA"]
    rows = {e: "".join(marks[c][k] for c in marks) for k, e in enumerate(meta)}
    # the paper's Table VI rows: full model, original + eyes-mouth, original only, w/o TSA, w/o CFF
    assert rows == {"full": "✓✓✓✓✓", "oem": "✓✗✓✓✓", "o": "✓✗✗✓✓", "no_tsa": "✓✓✓✓✗", "no_cff": "✓✓✓✗✓"}


def test_mask_mode_view_is_the_landmark_box_with_the_rest_at_the_imagenet_mean() -> None:
    """``eyes_mouth_mode="mask"`` (docs/deviations.md, an earlier reading): the eyes-and-mouth view is the landmark
    box of ``"box"`` with the :func:`eyes_mouth_mask` ellipses kept and the rest at 0 (the ImageNet mean), not the
    face view of ``"parsing"``; a face without landmarks keeps the plain box."""
    torch.manual_seed(0)
    model = build_model("sfiqa_xxs", ["overall"], eyes_mouth_mode="mask", **SMOKE).eval()
    boxed = build_model("sfiqa_xxs", ["overall"], eyes_mouth_mode="box", **SMOKE).eval()
    boxed.load_state_dict(model.state_dict())
    batch = smoke_batch(n=3)
    batch["landmarks"][2] = float("nan")
    s = SMOKE["view_size"]
    with torch.no_grad():
        crops, boxes = model.cut_views(batch)
        box_crops, box_boxes = boxed.cut_views(batch)
        out, box_out = model(batch)["overall"], boxed(batch)["overall"]
    assert crops["eyes_mouth"].shape == (3, 3, s, s) and out.shape == (3,) and torch.isfinite(out).all()
    h, w = batch["image"].shape[-2:]
    em = eyes_mouth_boxes(batch["landmarks"], face_boxes(batch["face_box"], batch["landmarks"], h, w), h, w)
    torch.testing.assert_close(boxes["eyes_mouth"], em)
    torch.testing.assert_close(box_boxes["eyes_mouth"], em)
    assert not torch.allclose(boxes["eyes_mouth"], boxes["face"])  # a zoom on the landmarks, not the face view
    mask = eyes_mouth_mask(batch["landmarks"], em, s)
    torch.testing.assert_close(crops["eyes_mouth"], box_crops["eyes_mouth"] * mask)
    for view in ("original", "face"):
        torch.testing.assert_close(crops[view], box_crops[view])
    # outside the ellipses the view is 0 (not the black of "parsing") whatever the image holds there
    for y, x in ((0, 0), (0, s - 1), (s - 1, 0), (s - 1, s - 1)):
        assert crops["eyes_mouth"][:2, :, y, x].abs().max() < 0.05 * box_crops["eyes_mouth"][:2, :, y, x].abs().max()
    torch.testing.assert_close(crops["eyes_mouth"][2], box_crops["eyes_mouth"][2])  # no landmarks: the plain box
    assert not torch.allclose(out[:2], box_out[:2])  # same weights, different eyes-and-mouth input
    torch.testing.assert_close(out[2], box_out[2])
