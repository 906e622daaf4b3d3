"""TuningIQA (seed 000): shapes, gradients, the GCPF graph, ablation switches, losses (Eqs. 10-11) by hand."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from iqalab.data.schema import CAM_COLUMNS, CAM_PARAMS, DataError
from iqalab.models import build_model
from iqalab.models.base import StepContext
from iqalab.models.tuningiqa import (
    GCPF_NODES,
    HumanAwareFeatures,
    TuningIQA,
    gcpf_edge_index,
    parameter_breakdown,
    partition_masks,
    whole_image_fallback,
)
from iqalab.train.losses import confidence_weighted_l1, pairwise_bce

ATTRS = ["overall", "face", "sharpness", "exposure", "noise"]
SIZE = 96  # 3x3 feature grid at stride 32: every one of the nine partitions is non-empty for a centred box


def make_model(**overrides) -> TuningIQA:
    torch.manual_seed(0)
    return TuningIQA(ATTRS, **(TuningIQA.smoke_params | overrides))


@pytest.fixture(scope="module")
def model() -> TuningIQA:
    """The smoke-size model (HFE + GCPF), built once; tests leave it in eval mode without gradients."""
    return make_model().eval()


def make_batch(n: int, seed: int = 0, size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cam_mask = torch.ones(n, 7)
    cam_mask[::2, 2] = 0.0  # ISO unknown on every other image
    box = torch.tensor([size / 3 + 2, size / 3 + 1, 2 * size / 3 - 2, 2 * size / 3 - 1])
    return {
        "image": torch.randn(n, 3, size, size, generator=g),
        "person_box": box.expand(n, 4).clone(),
        "cam": torch.randn(n, 7, generator=g),
        "cam_mask": cam_mask,
        "mos_norm": torch.rand(n, len(ATTRS), generator=g),
        "std_norm": torch.rand(n, len(ATTRS), generator=g) * 0.2,
    }


def pair_batch(n: int, size: int = 64) -> dict:
    """``n`` pairs, each with preferences on a different subset of the attributes (NaN = not compared)."""
    p = torch.linspace(0, 1, n * len(ATTRS)).reshape(n, len(ATTRS))
    p[0, 1:] = float("nan")  # the first pair is compared on "overall" only
    if n > 1:
        p[1, ::2] = float("nan")
    return {"a": make_batch(n, 1, size), "b": make_batch(n, 2, size), "p": p}


# ----------------------------------------------------------------------------------------------- shapes
def test_single_and_pairwise_shapes(model: TuningIQA) -> None:
    batch = make_batch(2, size=64)
    out = model(batch)
    assert list(out) == ATTRS
    for score in out.values():
        assert score.shape == (2,)
        assert ((score > 0) & (score < 1)).all()
    probs = model.forward_pair(make_batch(3, 1, 64), make_batch(3, 2, 64))
    assert list(probs) == ATTRS and all(p.shape == (3,) and ((p > 0) & (p < 1)).all() for p in probs.values())
    assert model.predict(batch)["face"].shape == (2,)


def test_query_residual_option(model: TuningIQA) -> None:
    assert not model.attention.query_residual  # Eq. 4 as printed is the default
    batch = make_batch(2, size=64)
    with torch.no_grad():
        plain = model.quality_features(batch)
        model.attention.query_residual = True
        try:
            residual = model.quality_features(batch)
        finally:
            model.attention.query_residual = False
        m = model.human_backbone(batch["image"])[-1]
        boxes = whole_image_fallback(batch["person_box"], 2, 64, 64, torch.device("cpu"))
        expected = model.attention.w_q(model.hfe(m, boxes, (64, 64)))
    assert torch.allclose(residual - plain, expected, atol=1e-5)
    assert TuningIQA(ATTRS, **(TuningIQA.smoke_params | {"query_residual": True})).attention.query_residual


def test_build_through_registry_and_unknown_key() -> None:
    model = build_model("tuningiqa", ATTRS, **TuningIQA.smoke_params)
    assert isinstance(model, TuningIQA) and model.paper
    with pytest.raises(ValueError, match="model.use_hef"):
        build_model("tuningiqa", ATTRS, use_hef=True, **TuningIQA.smoke_params)


# ---------------------------------------------------------------------------------------------- gradients
def test_gradients_reach_every_parameter(model: TuningIQA) -> None:
    model.train()
    loss = model.training_step(pair_batch(len(ATTRS), SIZE), StepContext(epoch=0, epochs=1))
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    model.zero_grad(set_to_none=True)
    model.eval()
    assert not missing, f"no gradient for {missing[:8]}"
    components = parameter_breakdown(model)
    for part in ("backbone", "human_backbone", "hfe", "cross_attention", "gcpf", "heads", "pair_heads"):
        assert components[part] > 0, part


def test_gradients_without_modules() -> None:
    model = make_model(use_hfe=False, use_gcpf=False).train()
    model.training_step(pair_batch(len(ATTRS)), StepContext(epoch=0, epochs=1)).backward()
    assert all(p.grad is not None for p in model.parameters())
    # a single (non-pair) batch trains the regression heads only
    model.zero_grad()
    model.training_step(make_batch(2), StepContext(epoch=0, epochs=1)).backward()
    assert all(p.grad is None for p in model.pair_heads.parameters())
    assert all(p.grad is not None for p in model.heads.parameters())


# --------------------------------------------------------------------------------------------------- graph
def test_graph_has_exactly_the_paper_edges() -> None:
    expected = {frozenset(("visual", p)) for p in CAM_PARAMS}  # (1) cross-modal hub
    expected |= {frozenset(e) for e in (("iso", "shutter"), ("iso", "aperture"), ("shutter", "aperture"))}  # (2)
    expected |= {frozenset(e) for e in (("contrast", "saturation"), ("saturation", "sharpness"),
                                        ("contrast", "sharpness"))}  # (3)
    expected |= {frozenset(("wb", "saturation"))}  # (4)
    edges = gcpf_edge_index()
    assert GCPF_NODES == ("visual", *CAM_PARAMS) and len(GCPF_NODES) == 8
    directed = [(GCPF_NODES[s], GCPF_NODES[d]) for s, d in edges.t().tolist()]
    assert len(directed) == len(set(directed)) == 2 * len(expected)
    assert all(s != d for s, d in directed)
    assert all((d, s) in set(directed) for s, d in directed)  # undirected
    assert {frozenset(e) for e in directed} == expected
    model = make_model(use_hfe=False)
    assert torch.equal(model.gcpf.edge_index, edges)
    batched = model.gcpf.batched_edges(3)
    assert batched.shape == (2, 3 * edges.shape[1])
    assert torch.equal(batched[:, -edges.shape[1]:], edges + 16)


def test_gcpf_off_has_no_graph_parameters(model: TuningIQA) -> None:
    on, off = model, make_model(use_gcpf=False)
    assert not any("gcpf" in name or "gat" in name for name, _ in off.named_parameters())
    assert not any(type(m).__name__ == "GATConv" for m in off.modules())
    assert parameter_breakdown(off)["gcpf"] == 0
    assert on.num_parameters() - off.num_parameters() == parameter_breakdown(on)["gcpf"] > 0
    # nine partition transforms: depthwise (default) vs full 3x3 convs on 3C/2 = 16 + 8 channels
    ch = TuningIQA.smoke_params["hfe_dim"] * 3 // 2
    full = make_model(use_gcpf=False, partition_conv="full")
    assert sum(p.numel() for p in full.hfe.partitions.parameters()) == 9 * (ch * ch * 9 + ch)
    assert sum(p.numel() for p in off.hfe.partitions.parameters()) == 9 * (ch * 9 + ch)
    no_hfe = make_model(use_hfe=False)
    assert not hasattr(no_hfe, "human_backbone") and parameter_breakdown(no_hfe)["hfe"] == 0


def test_inputs_name_only_the_batch_keys_the_switches_read(model: TuningIQA) -> None:
    """The loader builds, and ``iqalab score`` asks for, only what the model reads: no ``cam`` without GCPF (the
    Table 4 baseline and "+HFE" rows), no ``person_box`` without HFE."""
    assert model.inputs == TuningIQA.inputs == {"image", "person_box", "cam", "pairs"}
    assert make_model(use_gcpf=False).inputs == {"image", "person_box", "pairs"}
    assert make_model(use_hfe=False).inputs == {"image", "cam", "pairs"}
    assert make_model(use_hfe=False, use_gcpf=False).inputs == {"image", "pairs"}
    assert TuningIQA.inputs == {"image", "person_box", "cam", "pairs"}  # the class default is untouched


def test_unknown_camera_parameter_is_ignored_known_one_is_used(model: TuningIQA) -> None:
    batch = make_batch(2)
    base = model(batch)["overall"]
    unknown = dict(batch, cam=batch["cam"].clone())
    unknown["cam"][0, 2] += 5.0  # ISO of image 0 is masked out
    assert torch.allclose(model(unknown)["overall"], base)
    known = dict(batch, cam=batch["cam"].clone())
    known["cam"][0, 0] += 5.0  # aperture of image 0 is known
    changed = model(known)["overall"]
    assert not torch.isclose(changed[0], base[0]) and torch.isclose(changed[1], base[1])


# -------------------------------------------------------------------------------------------------- HFE
def test_partition_masks_follow_the_box() -> None:
    masks = partition_masks(torch.tensor([[1.5, 2.0, 3.2, 4.0]]), height=5, width=5)
    assert masks.shape == (1, 9, 5, 5)
    assert torch.equal(masks.sum(1), torch.ones(1, 5, 5))
    label = masks.argmax(1)[0]
    cols = label[0] % 3
    rows = label[:, 0] // 3
    assert cols.tolist() == [0, 1, 1, 1, 2]  # cells 1..3 overlap x in [1.5, 3.2]
    assert rows.tolist() == [0, 0, 1, 1, 2]  # cells 2..3 overlap y in [2, 4]; cell 4 starts at 4
    assert label[2, 2].item() == 4  # the centre partition is the box


def _hfe_by_crops(hfe: HumanAwareFeatures, feature_map: torch.Tensor, boxes: torch.Tensor,
                  image_hw: tuple[int, int]) -> torch.Tensor:
    """Eq. 3 read literally, independently of the masks: each ``Phi_k`` runs on the rectangle of partition k cut
    out of ``M_hat`` (its own zero padding at the rectangle's borders), its output is placed back, the residual
    added and the map averaged."""
    from torchvision.ops import roi_align

    m = hfe.reduce(feature_map)
    b, _, h, w = m.shape
    scale = torch.tensor([w / image_hw[1], h / image_hw[0]] * 2)
    fboxes = boxes.float() * scale
    rois = torch.cat([torch.arange(b, dtype=torch.float32)[:, None], fboxes], dim=1)
    region = roi_align(m, rois, output_size=hfe.roi_size, spatial_scale=1.0, sampling_ratio=2,
                       aligned=True).mean(dim=(2, 3))
    m_hat = torch.cat([m, hfe.roi_reduce(region)[:, :, None, None].expand(-1, -1, h, w)], dim=1)
    out = m_hat.clone()
    for i in range(b):
        x0, y0, x1, y1 = fboxes[i].tolist()
        # the grid cells left of / overlapping / right of the box, per axis (partition_masks' rule)
        cols = [[j for j in range(w) if j + 1 <= x0], [j for j in range(w) if j + 1 > x0 and j < x1],
                [j for j in range(w) if j >= x1]]
        rows = [[j for j in range(h) if j + 1 <= y0], [j for j in range(h) if j + 1 > y0 and j < y1],
                [j for j in range(h) if j >= y1]]
        for k, phi in enumerate(hfe.partitions):
            r, c = rows[k // 3], cols[k % 3]
            if not r or not c:
                continue
            crop = m_hat[i:i + 1, :, r[0]:r[-1] + 1, c[0]:c[-1] + 1]
            out[i:i + 1, :, r[0]:r[-1] + 1, c[0]:c[-1] + 1] += phi(crop)
    return out.mean(dim=(2, 3))


@pytest.mark.parametrize("conv", ["depthwise", "full"])
def test_partition_window_partition_is_eq3_on_each_cropped_partition(conv: str) -> None:
    """``partition_window="partition"``: ``Phi_k`` sees partition k alone (zero padding at its borders), as an
    independent crop-convolve-paste computation of Eq. 3 gives; ``"whole"`` (default) differs only through the
    cells along the internal borders, which see their neighbours."""
    torch.manual_seed(0)
    hfe = HumanAwareFeatures(6, hfe_dim=4, partition_conv=conv, partition_window="partition").eval()
    feature_map = torch.randn(2, 6, 7, 9)
    boxes = torch.tensor([[40.0, 30.0, 150.0, 120.0], [10.0, 50.0, 200.0, 190.0]])  # pixels of a 224 x 280 image
    with torch.no_grad():
        got = hfe(feature_map, boxes, (224, 280))
        want = _hfe_by_crops(hfe, feature_map, boxes, (224, 280))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        hfe.partition_window = "whole"
        assert not torch.allclose(hfe(feature_map, boxes, (224, 280)), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="partition_window must be one of whole, partition"):
        HumanAwareFeatures(6, partition_window="crop")
    assert make_model(partition_window="partition").hfe.partition_window == "partition"
    assert make_model().hfe.partition_window == "whole"


def test_missing_person_falls_back_to_whole_image(model: TuningIQA) -> None:
    boxes = torch.tensor([[float("nan")] * 4, [10.0, 10.0, 5.0, 20.0], [-3.0, 2.0, 50.0, 90.0]])
    fixed = whole_image_fallback(boxes, 3, 64, 48, torch.device("cpu"))
    assert fixed[0].tolist() == [0, 0, 48, 64] and fixed[1].tolist() == [0, 0, 48, 64]  # NaN, degenerate
    assert fixed[2].tolist() == [0, 2, 48, 64]  # clamped
    batch = make_batch(2, size=SIZE)
    nan_box = dict(batch, person_box=torch.full((2, 4), float("nan")))
    whole = dict(batch, person_box=torch.tensor([[0.0, 0.0, SIZE, SIZE]]).expand(2, 4))
    with torch.no_grad():
        assert torch.allclose(model(nan_box)["face"], model(whole)["face"])
        m = model.human_backbone(batch["image"])[-1]
        f_box = model.hfe(m, batch["person_box"], (SIZE, SIZE))
        f_whole = model.hfe(m, whole["person_box"], (SIZE, SIZE))
    assert (f_box - f_whole).abs().max() > 1e-3 * f_whole.abs().mean()  # the box changes F_h


def test_bf16_autocast_forward(model: TuningIQA) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(make_batch(2, size=64))
    assert torch.isfinite(out["noise"].float()).all()


# ------------------------------------------------------------------------------------------------- losses
def test_confidence_weighted_l1_by_hand() -> None:
    nan = float("nan")
    pred = torch.tensor([[0.5, 0.2], [0.9, 0.1], [0.3, 0.3]])
    target = torch.tensor([[0.7, 0.2], [0.4, nan], [nan, nan]])
    variance = torch.tensor([[0.5, nan], [0.0, 1.0], [2.0, 2.0]])
    # image 1: exp(-0.5)*|0.5-0.7| + 1*|0.2-0.2|; image 2: exp(0)*|0.9-0.4| (second attribute unrated);
    # image 3 has no target and does not count in |D|
    expected = (math.exp(-0.5) * 0.2 + 0.0 + 0.5) / 2
    assert confidence_weighted_l1(pred, target, variance).item() == pytest.approx(expected, rel=1e-6)
    # one variance per image (Eq. 10 as printed) broadcasts over attributes
    per_image = confidence_weighted_l1(pred[:2], target[:2], torch.tensor([1.0, 0.0]))
    assert per_image.item() == pytest.approx((math.exp(-1.0) * 0.2 + 0.5) / 2, rel=1e-6)
    assert confidence_weighted_l1(pred, target).item() == pytest.approx((0.2 + 0.5) / 2, rel=1e-6)
    pred.requires_grad_(True)
    confidence_weighted_l1(pred, torch.full_like(target, nan)).backward()  # no target at all: zero, with a graph
    assert pred.grad is not None and pred.grad.abs().sum() == 0


def test_pairwise_bce_by_hand() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    target = torch.tensor([1.0, 0.5, 0.0, float("nan")])

    def bce(c: float, z: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(c * math.log(p) + (1 - c) * math.log(1 - p))

    expected = (bce(1.0, 2.0) + bce(0.5, -1.0) + bce(0.0, 0.5)) / 3
    assert pairwise_bce(logits, target).item() == pytest.approx(expected, rel=1e-6)
    probs = torch.sigmoid(logits)
    assert pairwise_bce(probs, target, from_logits=False).item() == pytest.approx(expected, rel=1e-5)
    # [P, A]: attributes are summed per pair (Eq. 11)
    two = pairwise_bce(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.5]]))
    assert two.item() == pytest.approx(bce(1.0, 2.0) + bce(0.5, -1.0), rel=1e-6)


def test_training_step_combines_eq10_and_eq11_one_to_two(model: TuningIQA) -> None:
    assert (model.lambda_reg, model.lambda_rank) == (1.0, 2.0)  # the paper's 1 : 2 default
    assert not model.training  # eval: BatchNorm statistics fixed, no dropout
    batch = pair_batch(3)
    a, b = batch["a"], batch["b"]
    with torch.no_grad():
        loss = model.training_step(batch, StepContext(epoch=0, epochs=1)).item()
        pa, pb, pair = model(a), model(b), model.forward_pair(a, b)
    reg = 0.0
    for side, pred in ((a, pa), (b, pb)):
        for i in range(3):
            for k, attr in enumerate(ATTRS):
                v = (side["std_norm"][i, k].item() * 4.0) ** 2  # variance on a 1-5 scale
                # the error on the 1-5 scale too (Eq. 10 on the MOS of Eq. 1): 4 x the [0, 1] error
                reg += math.exp(-v) * 4.0 * abs(pred[attr][i].item() - side["mos_norm"][i, k].item())
    reg /= 6
    # Eq. 11: for each pair, the BCE summed over the attributes it was compared on; then the mean over pairs
    rank = 0.0
    for i in range(3):
        for k, attr in enumerate(ATTRS):
            c = batch["p"][i, k].item()
            if math.isnan(c):
                continue
            q = pair[attr][i].item()
            rank -= c * math.log(q) + (1 - c) * math.log(1 - q)
    rank /= 3
    assert torch.isnan(batch["p"]).sum() == 7  # 1, 2 and 5 attributes compared: unequal sums per pair
    assert loss == pytest.approx(reg + 2.0 * rank, rel=1e-4)
    # one attribute per row (``attr_idx``) is still accepted and scores only that attribute's logit
    rows = {"a": a, "b": b, "p": torch.tensor([1.0, 0.0, 0.5]), "attr_idx": torch.tensor([0, 3, 1])}
    with torch.no_grad():
        loss_rows = model.training_step(rows, StepContext(epoch=0, epochs=1)).item()
    rank_rows = -sum(c * math.log(pair[ATTRS[k]][i].item()) + (1 - c) * math.log(1 - pair[ATTRS[k]][i].item())
                     for i, (c, k) in enumerate(zip((1.0, 0.0, 0.5), (0, 3, 1)))) / 3
    assert loss_rows == pytest.approx(reg + 2.0 * rank_rows, rel=1e-4)


def test_pair_head_probabilities_and_pairwise_fg_acc(model: TuningIQA) -> None:
    import pandas as pd

    from iqalab.analysis.metrics import fg_acc_pairwise
    from iqalab.models.tuningiqa import pair_head_probabilities

    batch = make_batch(4, 3)
    _, emb = model.predict_with_embedding(batch)
    embeddings = {f"i{k}": emb[k] for k in range(4)}
    pairs = pd.DataFrame({"image_a": ["i0", "i1", "i2", "i0", "i3"], "image_b": ["i1", "i3", "i0", "x", "i2"],
                          "attribute": ["overall", "noise", "face", "overall", "colour"],
                          "p": [1.0, 0.0, 1.0, 1.0, 0.0], "fine": True})
    prob = pair_head_probabilities(model, embeddings, pairs)
    with torch.no_grad():
        direct = torch.sigmoid(model.pair_logits(emb[[0, 1, 2]], emb[[1, 3, 0]]))
    expected = [direct[0, ATTRS.index("overall")], direct[1, ATTRS.index("noise")], direct[2, ATTRS.index("face")]]
    assert prob[:3] == pytest.approx([float(v) for v in expected], abs=1e-6)
    assert np.isnan(prob[3]) and np.isnan(prob[4]), "unknown image, attribute the model does not predict"
    right = (prob[:3] > 0.5) == (pairs["p"].to_numpy()[:3] > 0.5)
    assert fg_acc_pairwise(pairs, prob) == pytest.approx(right.mean())


# ------------------------------------------------------------------------------------------- parameters
def test_parameter_breakdown_covers_the_model_and_paper_size(model: TuningIQA) -> None:
    parts = parameter_breakdown(model)
    assert sum(v for k, v in parts.items() if k != "total") == parts["total"] == model.num_parameters()
    # the paper's MobileNetV3-S configuration (Table 2: 58.29M), built once without pretrained weights
    paper = TuningIQA(ATTRS, backbone="mobilenetv3_small_100", human_backbone="tf_efficientnetv2_m",
                      hfe_dim=None, partition_conv="depthwise", embed_dim=1280, head_hidden=64, use_gcpf=False)
    total = parameter_breakdown(paper)["total"]
    assert abs(total - 58.29e6) / 58.29e6 < 0.03
    # W_K and W_V scale with the backbone width: 2 x 576 x 1280 weights (+ biases) for MobileNetV3-S
    assert paper.attention.w_k.weight.numel() + paper.attention.w_v.weight.numel() == 2 * 576 * 1280


# ------------------------------------------------------------------------------------------ through the engine
def test_trains_on_pairs_through_the_engine(project, toy_dataset) -> None:
    import shutil

    import pandas as pd

    from iqalab.config import parse_params
    from iqalab.train.engine import train_experiment

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    # fine pairs among the test images (and one that crosses into training): the pair head scores the test ones
    test_ids = sorted(toy_dataset.split_ids("scene", "test"))
    other = sorted(set(toy_dataset.images.image_id) - set(test_ids))[0]
    pairs = pd.DataFrame([{"image_a": a, "image_b": b, "attribute": attr, "p": 1.0, "source": "mos", "fine": True}
                          for a, b in [*zip(test_ids[:-1], test_ids[1:]), (test_ids[0], other)]
                          for attr in toy_dataset.attributes[:2]])
    pairs.to_parquet(project.root / "build" / "datasets" / "toy" / "pairs.parquet")
    # the toy photos were never searched for people: the whole-image fallback has to be asked for
    model_cfg = {"name": "tuningiqa", **TuningIQA.smoke_params, "allow_missing_regions": True}
    params = parse_params(toy_params(e={"dataset": "toy", "model": model_cfg, "train": {"epochs": 1}}))
    preds = train_experiment(params, "e", project.root, progress=False)
    lo, hi = toy_dataset.mos_range
    assert set(preds.attribute) == set(toy_dataset.attributes)
    assert preds.pred.between(lo, hi).all() and preds.pred.notna().all()
    assert set(preds[preds.role == "test"].image_id) == set(toy_dataset.split_ids("scene", "test"))
    # FG-ACC in pairwise mode (#27): the engine writes the pair head's P(a better) on the test pairs
    probs = pd.read_parquet(project.root / "results" / "predictions" / "e.pairs.parquet")
    assert len(probs) == 2 * (len(test_ids) - 1) and set(probs.split) == {"scene"}
    assert probs.prob_a.between(0, 1).all() and probs.prob_a.notna().all()
    assert set(probs.image_b) <= set(test_ids), "a pair with a training image is not a test pair"
    # the toy photos record ISO only: the smoke configuration keeps them with GCPF's "unknown" embedding, and the
    # predictions JSON says so (a table caption states it); refused in one line by default
    meta = json.loads((project.root / "results" / "predictions" / "e.json").read_text())
    assert meta["notes"]["missing_camera"] == "unknown"
    assert sum(meta["notes"]["missing_camera_images"].values()) == len(toy_dataset.images)
    assert meta["input_size"] == "48×48 (test: 64×64)" and meta["subset"] == "all"
    refused = parse_params(toy_params(e={"dataset": "toy", "model": {**model_cfg, "missing_camera": "refuse"}}))
    with pytest.raises(DataError, match=r"experiments\.e: TuningIQA's GCPF .* lack one \(NaN cam_\*\): "
                                        r"\w+, \w+, \w+, \w+, \w+, \.\.\. \(\d+ more\)"):
        train_experiment(refused, "e", project.root, progress=False)


def _with_cameras(ds, missing: list[str]):  # noqa: ANN001, ANN202
    """``ds`` with every camera parameter known except ISO of the ``missing`` images."""
    images = ds.images.copy()
    images[list(CAM_COLUMNS)] = 1.0
    images.loc[images.image_id.isin(missing), "cam_iso"] = np.nan
    return dataclasses.replace(ds, images=images)


def test_images_lacking_a_camera_parameter_are_refused_dropped_or_kept(toy_dataset) -> None:
    ids = {role: sorted(toy_dataset.split_ids("scene", role)) for role in ("train", "val", "test")}
    missing = [ids["train"][0], ids["test"][1]]
    ds = _with_cameras(toy_dataset, missing)
    smoke = {k: v for k, v in TuningIQA.smoke_params.items() if k != "missing_camera"}
    refuse = TuningIQA(ATTRS, **smoke)
    assert refuse.missing_camera == "refuse", "refusal is the default"
    with pytest.raises(DataError) as err:
        refuse.select_images(ds, ids, "experiments.x")
    message = str(err.value)
    assert "\n" not in message and all(i in message for i in missing) and "2 image(s)" in message
    assert "missing_camera: drop" in message and "subset: camera_complete" in message
    dropped = TuningIQA(ATTRS, **smoke, missing_camera="drop").select_images(ds, ids, "experiments.x")
    assert {r: set(v) for r, v in dropped.items()} == {r: set(v) - set(missing) for r, v in ids.items()}
    kept = TuningIQA(ATTRS, **smoke, missing_camera="unknown")
    assert kept.select_images(ds, ids, "experiments.x") == ids
    assert kept.run_notes() == {"missing_camera": "unknown", "missing_camera_images": {"train": 1, "test": 1}}
    # complete images, or GCPF off (the parameters are not read): nothing refused, nothing noted
    assert refuse.select_images(_with_cameras(toy_dataset, []), ids, "x") == ids and refuse.run_notes() == {}
    assert TuningIQA(ATTRS, **smoke, use_gcpf=False).select_images(ds, ids, "x") == ids
    with pytest.raises(ValueError, match="missing_camera must be one of"):
        TuningIQA(ATTRS, **smoke, missing_camera="impute")
    with pytest.raises(DataError, match="no training image"):
        TuningIQA(ATTRS, **smoke, missing_camera="drop").select_images(
            _with_cameras(toy_dataset, ids["train"]), ids, "x")


def test_human_branch_loads_a_local_aesthetics_checkpoint(tmp_path) -> None:
    """The paper's human branch is EfficientNetV2-M pre-trained on TAD66K's human subset: a local checkpoint of
    that branch (a classifier with its own score head, here a 1-output head) loads into ``human_backbone`` only;
    the main backbone keeps its own initialisation."""
    import timm

    name = TuningIQA.smoke_params["human_backbone"]
    torch.manual_seed(3)
    aesthetics = timm.create_model(name, pretrained=False, num_classes=1)
    with torch.no_grad():
        aesthetics.conv_stem.weight.normal_(0.0, 5.0)  # unlike any initialisation
    path = tmp_path / "tad66k_human.pth"
    torch.save(aesthetics.state_dict(), path)
    model = TuningIQA(ATTRS, **(TuningIQA.smoke_params | {"human_pretrained": str(path)}))
    assert torch.equal(model.human_backbone.conv_stem.weight, aesthetics.conv_stem.weight)
    assert not torch.equal(model.backbone.conv_stem.weight, aesthetics.conv_stem.weight)
