"""TuningIQA: human-aware features, graph-based camera parameter fusion, multi-attribute regression and
fine-grained ranking.

Paper: X. Sheng, Z. Duan, X. Pan, Y. Huang, Z. Yang, P. Chen, L. Li, "TuningIQA: Fine-Grained Blind Image Quality
Assessment for Livestreaming Camera Tuning" (FGLive-10K), sections "Human-aware Feature Extraction" (Eqs. 3-4),
"Graph-based Camera Parameter Fusion" (Eqs. 5-7), "Multi-attribute Regression and Fine-grained Ranking"
(Eqs. 8-9), "Learning Objectives" (Eqs. 10-11) and "Implementation Details". No official code was available;
everything below is written from the text.

Pipeline (one image): backbone map ``F_b`` (timm, last stage, flattened to tokens); human-aesthetics map ``M``
(EfficientNetV2-M in the paper, ``human_backbone`` here) -> HFE -> ``F_h``; ``F_q = CrossAttention(F_h W_Q,
F_b W_K, F_b W_V)``; optional GCPF over 8 nodes -> ``F_GCN``; fused ``F_f``; five sigmoid MLP heads (Eq. 8).
Pairs: ``sigma(MLP_attr([F_a, F_b, F_a - F_b]))`` per attribute (Eq. 9).

Choices where the text is ambiguous (each is a constructor argument where it matters):

- ``M`` is the last feature stage of ``human_backbone`` (``features_only``; 512 channels for EfficientNetV2-M).
  ``hfe_dim`` optionally reduces it with a 1x1 conv to ``C`` channels (``None`` keeps the backbone's width).
- ``R^h``: RoIAlign (``roi_size`` x ``roi_size``, aligned) of ``M`` inside the person box, averaged to a vector,
  reduced to ``C/2`` by a linear layer, broadcast to every location and concatenated: ``M_hat`` has ``3C/2``
  channels.
- Nine partitions "centred on the human": the box's x- and y-extent cut the feature grid into 3 x 3 regions
  (left/centre/right x top/centre/bottom); a cell belongs to the centre column when it overlaps the box. Each
  ``Phi_k`` is a 3x3 conv + GELU kept inside its partition by a mask, so Eq. 3's residual
  ``F_k = Phi_k(M_hat_k) + M_hat_k`` holds exactly. ``partition_window`` says what ``Phi_k`` sees:
  ``"whole"`` (default) runs it on the whole map, so a cell at a partition border sees its neighbours across the
  border; ``"partition"`` runs it on ``M_hat_k`` alone, the partition cut out with zero padding at its borders,
  Eq. 3 read literally (the map is zeroed outside the partition before the conv, which equals cropping: the
  partitions are rectangles). The two differ only in the cells along the eight internal borders. The paper
  says ``Phi_k`` has "C output channels"; the residual needs the 3C/2 channels of ``M_hat``, so ``Phi_k``
  keeps them. ``partition_conv="depthwise"`` uses depthwise 3x3 convs:
  full 3x3 convs on EfficientNetV2-M's 512 (+256) channels would add 9 x 5.3M = 47.8M parameters, which the
  paper's 58.29M total cannot contain (see :func:`parameter_breakdown`), so depthwise is the default (it is also
  several times cheaper on a CPU); ``"full"`` is the literal reading.
- Cross-attention (Eq. 4) has one query token (``F_h`` after GAP) and the ``h x w`` tokens of ``F_b`` as keys and
  values; there is no output projection (Eq. 4 has none). ``embed_dim`` is the width of ``W_Q/W_K/W_V``; the
  paper-size fit below points at 1280. With a single query, ``F_h`` only steers how the backbone tokens are
  pooled; ``query_residual=True`` adds ``F_h W_Q`` to the attention output (the residual of a transformer
  decoder block), an option beyond Eq. 4, off by default. Without HFE (``use_hfe=False``, the Table 4
  baseline) ``F_q`` is a linear projection of the pooled ``F_b`` to ``embed_dim``.
- Person boxes come from ``images.parquet`` (the dataset's own, or detected at ingest by
  :mod:`iqalab.data.regions`). The paper detects them with Faster R-CNN; offline the default is an upper-body box
  derived from the MTCNN face (:func:`iqalab.data.detect.face_to_body`; Faster R-CNN when its weights are on disk,
  ``datasets.<name>.detect.person``); the ``person_detector`` column says which produced each box. A dataset whose
  images were never searched for people is refused at training (:func:`iqalab.data.regions.check_regions`)
  unless ``allow_missing_regions: true``, which keeps the fallback below and is recorded in the predictions JSON.
- Images without a person (NaN ``person_box`` rows, or degenerate boxes): the whole image is the box. The paper
  filtered person-free images out of FGLive-10K and states no fallback; with the whole image as box, ``R^h`` is
  global context and the partition grid degenerates to the centre cell (the other eight masks are empty).
- GCPF nodes: node 0 = ``W_v F_q``; node ``i`` = ``W_p^i p_i + b_i`` (one linear map per parameter, Eq. 5) from
  the standardised value. Unknown parameters (``cam_mask`` 0) take a learned per-parameter "unknown" embedding
  instead, so a missing value is never confused with the mean value 0. The paper runs GCPF only on FineLive-p,
  the images whose seven parameters are all known, and says nothing of missing ones: with GCPF on, a training
  run whose images lack a parameter (NaN ``cam_*``) is refused in one line naming them
  (``missing_camera="refuse"``, :meth:`TuningIQA.select_images`) unless ``missing_camera`` says what to do:
  ``"drop"`` leaves those images out of every role (FineLive-p's reading; ``train.subset: camera_complete``
  selects the same images for every model of a table), ``"unknown"`` keeps them with the learned "unknown"
  embedding (an imputation, recorded in the run's notes). Scoring new images (``iqalab score``) without
  parameters uses the "unknown" embedding.
- Edges (undirected, both directions in ``edge_index``; GATConv adds self loops): visual hub to all seven;
  exposure triangle aperture-shutter-ISO (all three pairs); post-processing contrast-saturation-sharpness with
  all three pairs (the text says they have "mutual dependencies"); colour white balance-saturation.
  14 undirected edges, :data:`GCPF_EDGES`.
- GAT: ``GATConv(g, g, heads=4, concat=True)`` -> ELU -> ``GATConv(4g, g, heads=1)``; ``F_GCN = H2[0]`` (Eq. 7).
  Eq. 8 feeds "``F_q`` or ``F_GCN``" to the heads while the issue asks for fusion: ``F_f = F_q + W_f F_GCN``.
  The graph runs in float32 even under autocast (keeps PyG's scatter-softmax over 8 nodes in full precision).
- Regression heads output a sigmoid, i.e. the normalised [0, 1] MOS of the batch contract.
- Eq. 10's ``v_i`` is the annotation variance on the paper's 1-5 scale: ``v = (std_norm * variance_scale)^2``
  with ``variance_scale = 4`` (the width of a 1-5 range), so the weight means the same on any dataset's range.
  Unknown std -> weight 1. Applied per attribute (see :mod:`iqalab.train.losses`). The error ``|s_hat - s|`` is
  measured on the same 1-5 scale (the [0, 1] error times ``variance_scale``): Eq. 10 takes it on the MOS of
  Eq. 1, and on the [0, 1] scale the paper's ``1 : 2`` weighting against the BCE of Eq. 11 would be ``1 : 8``.
- Training on pair batches: ``lambda_reg * L_reg(a and b) + lambda_rank * L_rank(pair heads, p)``, ``1 : 2`` by
  default; a and b go through the network as one batch. An item is one image pair with the preferences of all
  its annotated attributes (:class:`iqalab.data.loaders.PairItems`), and L_rank sums the BCE over them (Eq. 11 as
  written), so an epoch is one pass over the image pairs ("trained for 5 epochs on all image pairs").

Parameter count: see :func:`parameter_breakdown`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from iqalab.data.schema import CAM_COLUMNS, CAM_PARAMS, DataError, Dataset
from iqalab.models.backbones import create_backbone
from iqalab.models.base import IQAModel, StepContext
from iqalab.models.baseline import mlp_head
from iqalab.models.registry import register
from iqalab.train.losses import confidence_weighted_l1, pairwise_bce

log = logging.getLogger(__name__)

PAPER = ("Sheng, Duan, Pan, Huang, Yang, Chen, Li. TuningIQA: Fine-Grained Blind Image Quality Assessment for "
         "Livestreaming Camera Tuning (FGLive-10K)")

#: GCPF node names in node order: the visual hub, then the camera parameters in CAM_PARAMS order.
GCPF_NODES: tuple[str, ...] = ("visual", *CAM_PARAMS)

#: The paper's undirected edges ("Physical Relationship Modeling"), by node name.
GCPF_EDGES: tuple[tuple[str, str], ...] = (
    # (1) cross-modal: the visual hub connects to every parameter
    *(("visual", p) for p in CAM_PARAMS),
    # (2) exposure triangle
    ("aperture", "shutter"), ("aperture", "iso"), ("shutter", "iso"),
    # (3) post-processing chain (mutual dependencies)
    ("contrast", "saturation"), ("contrast", "sharpness"), ("saturation", "sharpness"),
    # (4) colour correlation
    ("wb", "saturation"),
)

#: What a GCPF run does with images lacking a camera parameter (:meth:`TuningIQA.select_images`).
MISSING_CAMERA = ("refuse", "drop", "unknown")

#: Published totals (Table 2), in parameters.
PAPER_PARAMS = {"mobilenetv3_small_100": 58.29e6, "resnet50": 84.62e6}


def gcpf_edge_index() -> torch.Tensor:
    """``edge_index`` ``[2, 28]`` of one graph: every edge of :data:`GCPF_EDGES` in both directions."""
    idx = {name: k for k, name in enumerate(GCPF_NODES)}
    src, dst = [], []
    for a, b in GCPF_EDGES:
        src += [idx[a], idx[b]]
        dst += [idx[b], idx[a]]
    return torch.tensor([src, dst], dtype=torch.long)


def whole_image_fallback(boxes: torch.Tensor | None, batch: int, height: int, width: int,
                         device: torch.device) -> torch.Tensor:
    """Pixel boxes ``[B, 4]`` clamped to the image; NaN, missing or degenerate rows become the whole image."""
    full = torch.tensor([0.0, 0.0, float(width), float(height)], device=device).expand(batch, 4)
    if boxes is None:
        return full.clone()
    boxes = boxes.to(device=device, dtype=torch.float32)
    lo = torch.zeros(4, device=device)
    hi = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
    clamped = torch.minimum(torch.maximum(torch.nan_to_num(boxes, nan=0.0), lo), hi)
    ok = ~torch.isnan(boxes).any(dim=1) & (clamped[:, 2] > clamped[:, 0]) & (clamped[:, 3] > clamped[:, 1])
    return torch.where(ok[:, None], clamped, full)


def partition_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One-hot masks ``[B, 9, h, w]`` of the nine partitions around each box (feature-grid coordinates).

    Cell ``j`` spans ``[j, j + 1)``; it is in the centre column when it overlaps ``[x0, x1]``, left of it when it
    ends at or before ``x0``, right otherwise (rows likewise). Partition index = ``3 * row + column``.
    """
    def labels(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
        start = torch.arange(n, device=boxes.device, dtype=boxes.dtype)[None]
        left = (start + 1) <= lo[:, None]
        right = start >= hi[:, None]
        return torch.where(left, 0, torch.where(right, 2, 1))

    cols = labels(boxes[:, 0], boxes[:, 2], width)  # [B, w]
    rows = labels(boxes[:, 1], boxes[:, 3], height)  # [B, h]
    label = rows[:, :, None] * 3 + cols[:, None, :]  # [B, h, w]
    return F.one_hot(label, 9).permute(0, 3, 1, 2).to(boxes.dtype)


#: what each partition's transform ``Phi_k`` of Eq. 3 sees (:class:`HumanAwareFeatures`)
PARTITION_WINDOWS: tuple[str, ...] = ("whole", "partition")


class HumanAwareFeatures(nn.Module):
    """HFE (Sec. "Human-aware Feature Extraction", Eq. 3): RoI feature appended to ``M``, nine partition-specific
    residual 3x3 transforms, global average pooling -> ``F_h``."""

    def __init__(self, in_channels: int, hfe_dim: int | None = None, roi_size: int = 3,
                 partition_conv: str = "depthwise", partition_window: str = "whole") -> None:
        super().__init__()
        if partition_conv not in ("full", "depthwise"):
            raise ValueError(f"partition_conv must be 'full' or 'depthwise', got {partition_conv!r}")
        if partition_window not in PARTITION_WINDOWS:
            raise ValueError(f"partition_window must be one of {', '.join(PARTITION_WINDOWS)}, got "
                             f"{partition_window!r}")
        self.partition_window = partition_window
        channels = hfe_dim or in_channels
        self.reduce = nn.Conv2d(in_channels, channels, 1) if hfe_dim else nn.Identity()
        self.roi_size = roi_size
        self.roi_reduce = nn.Linear(channels, channels // 2)
        self.out_channels = channels + channels // 2
        groups = self.out_channels if partition_conv == "depthwise" else 1
        self.partitions = nn.ModuleList(
            nn.Sequential(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1, groups=groups), nn.GELU())
            for _ in range(9)
        )

    def forward(self, feature_map: torch.Tensor, boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """``feature_map`` ``[B, C0, h, w]`` and pixel ``boxes`` ``[B, 4]`` in an image of ``image_hw``
        -> ``F_h`` ``[B, 3C/2]``."""
        from torchvision.ops import roi_align

        m = self.reduce(feature_map)
        b, _, h, w = m.shape
        scale = torch.tensor([w / image_hw[1], h / image_hw[0]] * 2, device=m.device, dtype=torch.float32)
        fboxes = boxes.float() * scale
        rois = torch.cat([torch.arange(b, device=m.device, dtype=torch.float32)[:, None], fboxes], dim=1)
        region = roi_align(m.float(), rois, output_size=self.roi_size, spatial_scale=1.0, sampling_ratio=2,
                           aligned=True).mean(dim=(2, 3)).to(m.dtype)
        r_h = self.roi_reduce(region)
        m_hat = torch.cat([m, r_h[:, :, None, None].expand(-1, -1, h, w)], dim=1)
        masks = partition_masks(fboxes, h, w).to(m_hat.dtype)
        out = m_hat
        for k, phi in enumerate(self.partitions):
            mask = masks[:, k:k + 1]
            # Eq. 3's Phi_k(M_hat_k): on the whole map, or on partition k alone (zero outside = zero padding)
            out = out + mask * phi(m_hat if self.partition_window == "whole" else m_hat * mask)
        return out.mean(dim=(2, 3))


class CrossAttention(nn.Module):
    """Eq. 4: ``softmax(Q K^T / sqrt(d_k)) V`` with one query (``F_h W_Q``) over the backbone tokens."""

    def __init__(self, query_dim: int, key_dim: int, dim: int, heads: int = 1, query_residual: bool = False
                 ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.query_residual = query_residual
        self.w_q = nn.Linear(query_dim, dim)
        self.w_k = nn.Linear(key_dim, dim)
        self.w_v = nn.Linear(key_dim, dim)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``query`` ``[B, Cq]``, ``tokens`` ``[B, N, Ck]`` -> ``[B, dim]``."""
        b, n, _ = tokens.shape
        query = self.w_q(query)
        q = query.view(b, self.heads, 1, -1)
        k = self.w_k(tokens).view(b, n, self.heads, -1).transpose(1, 2)
        v = self.w_v(tokens).view(b, n, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).reshape(b, -1)
        return out + query if self.query_residual else out


class CameraGraphFusion(nn.Module):
    """GCPF (Sec. "Graph-based Camera Parameter Fusion", Eqs. 5-7): 8-node graph, two GATConv layers,
    the visual hub's output ``F_GCN``."""

    def __init__(self, visual_dim: int, node_dim: int = 64, gat_heads: int = 4) -> None:
        super().__init__()
        # torch 2.14 deprecates torch.jit.script, which torch_geometric calls at import: not the user's to act on
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
            from torch_geometric.nn import GATConv

        n = len(CAM_PARAMS)
        self.visual = nn.Linear(visual_dim, node_dim)  # W_v
        self.param_weight = nn.Parameter(torch.randn(n, node_dim) * 0.1)  # W_p, one per parameter
        self.param_bias = nn.Parameter(torch.zeros(n, node_dim))
        self.unknown = nn.Parameter(torch.randn(n, node_dim) * 0.1)  # learned "value unknown" embeddings
        self.gat1 = GATConv(node_dim, node_dim, heads=gat_heads, concat=True)
        self.gat2 = GATConv(node_dim * gat_heads, node_dim, heads=1, concat=False)
        self.register_buffer("edge_index", gcpf_edge_index(), persistent=False)
        self.out_dim = node_dim

    def node_features(self, f_q: torch.Tensor, cam: torch.Tensor, cam_mask: torch.Tensor) -> torch.Tensor:
        """``X = [v_visual, v_1..v_7]`` ``[B, 8, g]`` (Eq. 5; unknown parameters use the learned embedding)."""
        v_visual = self.visual(f_q)
        v_params = cam[..., None] * self.param_weight + self.param_bias
        v_params = torch.where(cam_mask[..., None] > 0.5, v_params, self.unknown.expand_as(v_params))
        return torch.cat([v_visual[:, None], v_params], dim=1)

    def batched_edges(self, batch: int) -> torch.Tensor:
        """Disjoint union of ``batch`` copies of the graph."""
        offsets = torch.arange(batch, device=self.edge_index.device) * len(GCPF_NODES)
        return (self.edge_index[:, None, :] + offsets[None, :, None]).reshape(2, -1)

    def forward(self, f_q: torch.Tensor, cam: torch.Tensor, cam_mask: torch.Tensor) -> torch.Tensor:
        b = f_q.shape[0]
        with torch.autocast(device_type=f_q.device.type, enabled=False):
            x = self.node_features(f_q.float(), cam.float(), cam_mask.float()).reshape(b * len(GCPF_NODES), -1)
            edges = self.batched_edges(b)
            h1 = F.elu(self.gat1(x, edges))  # Eq. 6, 4 heads concatenated
            h2 = self.gat2(h1, edges)  # single head
        return h2.view(b, len(GCPF_NODES), -1)[:, 0]  # Eq. 7: the visual node


@register("tuningiqa")
class TuningIQA(IQAModel):
    """TuningIQA: HFE + optional GCPF, five regression heads (Eq. 8) and per-attribute pair heads (Eq. 9)."""

    inputs = frozenset({"image", "person_box", "cam", "pairs"})
    paper = PAPER
    has_pair_head: ClassVar[bool] = True
    smoke_params: ClassVar[dict[str, Any]] = {
        "backbone": "mobilenetv3_small_050", "human_backbone": "mobilenetv3_small_050", "hfe_dim": 16,
        "embed_dim": 32, "gcpf_dim": 16, "head_hidden": 16,
        "missing_camera": "unknown",  # the toy photos record one camera parameter (ISO) of seven
    }
    smoke_image_size: ClassVar[int] = 64

    def __init__(self, attributes: list[str], backbone: str = "mobilenetv3_small_100",
                 human_backbone: str = "mobilenetv3_small_050", pretrained: bool | str | Path = False,
                 human_pretrained: bool | str | Path | None = None, use_hfe: bool = True, use_gcpf: bool = True,
                 hfe_dim: int | None = 64, partition_conv: str = "depthwise", partition_window: str = "whole",
                 roi_size: int = 3,
                 embed_dim: int = 128, attn_heads: int = 1, query_residual: bool = False, gcpf_dim: int = 64,
                 gat_heads: int = 4, head_hidden: int = 64, dropout: float = 0.0, lambda_reg: float = 1.0,
                 lambda_rank: float = 2.0, variance_scale: float = 4.0, backbone_lr_scale: float = 1.0,
                 allow_missing_regions: bool = False, missing_camera: str = "refuse") -> None:
        super().__init__(attributes)
        if missing_camera not in MISSING_CAMERA:
            raise ValueError(f"missing_camera must be one of {list(MISSING_CAMERA)}, got {missing_camera!r}")
        self.missing_camera = missing_camera
        self.missing_camera_counts: dict[str, int] = {}
        self.use_hfe, self.use_gcpf = use_hfe, use_gcpf
        unused: set[str] = set()
        if not use_hfe:  # the Table 4 baseline never looks at the person box
            unused.add("person_box")
        if not use_gcpf:  # nor, without GCPF, at the camera parameters (the loader then builds no ``cam``)
            unused.add("cam")
        if unused:
            self.inputs = TuningIQA.inputs - unused
        self.allow_missing_regions = allow_missing_regions
        self.lambda_reg, self.lambda_rank = lambda_reg, lambda_rank
        self.variance_scale = variance_scale
        self.backbone_lr_scale = backbone_lr_scale
        self.backbone = create_backbone(backbone, pretrained=pretrained, features_only=True)
        backbone_channels = int(self.backbone.feature_info.channels()[-1])
        if use_hfe:
            self.human_backbone = create_backbone(
                human_backbone, pretrained=pretrained if human_pretrained is None else human_pretrained,
                features_only=True)
            self.hfe = HumanAwareFeatures(int(self.human_backbone.feature_info.channels()[-1]), hfe_dim,
                                          roi_size, partition_conv, partition_window)
            self.attention = CrossAttention(self.hfe.out_channels, backbone_channels, embed_dim, attn_heads,
                                            query_residual)
        else:
            self.pool_projection = nn.Linear(backbone_channels, embed_dim)
        if use_gcpf:
            self.gcpf = CameraGraphFusion(embed_dim, gcpf_dim, gat_heads)
            self.gcpf_fuse = nn.Linear(gcpf_dim, embed_dim)  # W_f: F_f = F_q + W_f F_GCN
        self.heads = nn.ModuleDict({a: mlp_head(embed_dim, head_hidden, dropout) for a in self.attributes})
        self.pair_heads = nn.ModuleDict({a: mlp_head(3 * embed_dim, head_hidden, dropout) for a in self.attributes})

    # -- features -------------------------------------------------------------------------------------------
    def quality_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """``F_q`` ``[B, embed_dim]`` (Eq. 4; pooled projection when HFE is off)."""
        image = batch["image"]
        b, _, height, width = image.shape
        f_b = self.backbone(image)[-1]
        tokens = f_b.flatten(2).transpose(1, 2)  # [B, hw, Cb]
        if not self.use_hfe:
            return self.pool_projection(tokens.mean(dim=1))
        boxes = whole_image_fallback(batch.get("person_box"), b, height, width, image.device)
        f_h = self.hfe(self.human_backbone(image)[-1], boxes, (height, width))
        return self.attention(f_h, tokens)

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        """Fused ``F_f`` ``[B, embed_dim]``: ``F_q``, plus ``W_f F_GCN`` when GCPF is on."""
        f_q = self.quality_features(batch)
        if not self.use_gcpf:
            return f_q
        b = f_q.shape[0]
        cam = batch.get("cam")
        if cam is None:
            cam = f_q.new_zeros(b, len(CAM_PARAMS))
            mask = f_q.new_zeros(b, len(CAM_PARAMS))
        else:
            mask = batch.get("cam_mask", (~torch.isnan(cam)).to(cam.dtype))
            cam = torch.nan_to_num(cam)
        return f_q + self.gcpf_fuse(self.gcpf(f_q, cam, mask)).to(f_q.dtype)

    # -- heads -------------------------------------------------------------------------------------------------
    def scores(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 8 on fused features: ``{attr: [B]}`` in [0, 1]."""
        return {a: torch.sigmoid(head(feats).squeeze(-1)) for a, head in self.heads.items()}

    def pair_logits(self, f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
        """Eq. 9 before the sigmoid: ``[B, A]`` logits that ``a`` is better, attribute order of the model."""
        joint = torch.cat([f_a, f_b, f_a - f_b], dim=1)
        return torch.cat([self.pair_heads[a](joint) for a in self.attributes], dim=1)

    @torch.no_grad()
    def predict_with_embedding(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Eq. 8 scores and the fused ``F_f`` the pair head (Eq. 9) compares, from one backbone pass."""
        feats = self.features(batch)
        return self.scores(feats), feats

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.scores(self.features(batch))

    def forward_pair(self, batch_a: dict[str, Any], batch_b: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Pairwise mode: ``{attr: P(a better than b)}`` ``[B]`` each."""
        f_a, f_b = self._pair_features(batch_a, batch_b)
        probs = torch.sigmoid(self.pair_logits(f_a, f_b))
        return {a: probs[:, k] for k, a in enumerate(self.attributes)}

    def _pair_features(self, batch_a: dict[str, Any], batch_b: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of both sides in one pass (one backbone call; BatchNorm sees both)."""
        n = batch_a["image"].shape[0]
        joint = {}
        for key in ("image", "person_box", "cam", "cam_mask"):
            if key in batch_a and key in batch_b:
                joint[key] = torch.cat([batch_a[key], batch_b[key]], dim=0)
        feats = self.features(joint)
        return feats[:n], feats[n:]

    # -- training ----------------------------------------------------------------------------------------------
    def _regression_loss(self, feats: torch.Tensor, target: torch.Tensor, std_norm: torch.Tensor | None
                         ) -> torch.Tensor:
        pred = self.scores(feats)
        stacked = torch.stack([pred[a] for a in self.attributes], dim=1)
        variance = None if std_norm is None else (std_norm * self.variance_scale) ** 2
        # the error on the paper's 1-5 scale, as the variance (Eq. 10 on the MOS of Eq. 1; module docstring)
        return self.variance_scale * confidence_weighted_l1(stacked, target, variance)

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """Pair batches: ``lambda_reg * L_reg(a, b) + lambda_rank * L_rank`` (Eqs. 10-11); single batches: L_reg.

        ``p`` is ``[B, A]`` (every attribute of the pair, NaN where not annotated;
        :class:`iqalab.data.loaders.PairItems`): Eq. 11 sums the BCE over the attributes of each pair, as L_reg
        (Eq. 10) sums over the attributes of each image, so the 1 : 2 weighting compares like with like. A ``[B]``
        ``p`` with ``attr_idx`` (one attribute per row) is also accepted.
        """
        if "a" not in batch:
            return self._regression_loss(self.features(batch), batch["mos_norm"], batch.get("std_norm"))
        a, b = batch["a"], batch["b"]
        f_a, f_b = self._pair_features(a, b)
        std = None
        if a.get("std_norm") is not None and b.get("std_norm") is not None:
            std = torch.cat([a["std_norm"], b["std_norm"]], dim=0)
        reg = self._regression_loss(torch.cat([f_a, f_b], dim=0),
                                    torch.cat([a["mos_norm"], b["mos_norm"]], dim=0), std)
        logits = self.pair_logits(f_a, f_b)
        target = batch["p"].to(logits.dtype)
        if target.dim() == 1:  # one attribute per pair row (``attr_idx``): that attribute's logit only
            logits = logits.gather(1, batch["attr_idx"].long().view(-1, 1)).squeeze(1)
        rank = pairwise_bce(logits, target)  # Eq. 11: summed over the pair's attributes, mean over pairs
        return self.lambda_reg * reg + self.lambda_rank * rank

    def select_images(self, dataset: Dataset, ids: dict[str, list[str]], where: str) -> dict[str, list[str]]:
        """With GCPF on, images lacking a camera parameter (any NaN ``cam_*``) are refused in one line naming
        them (``missing_camera="refuse"``), left out of every role (``"drop"``) or kept with GCPF's learned
        "unknown" embedding (``"unknown"``); the counts per role go to :meth:`run_notes`. Without GCPF the
        parameters are not read and ``ids`` pass unchanged."""
        self.missing_camera_counts = {}
        if not self.use_gcpf:
            return ids
        known = dataset.images.set_index("image_id")[list(CAM_COLUMNS)].notna().all(axis=1)
        missing = {role: [i for i in role_ids if not known.loc[i]] for role, role_ids in ids.items()}
        n = sum(len(v) for v in missing.values())
        if not n:
            return ids
        if self.missing_camera == "refuse":
            rows = [i for v in missing.values() for i in v]
            shown = ", ".join(rows[:5]) + (f", ... ({n - 5} more)" if n > 5 else "")
            raise DataError(
                f"{where}: TuningIQA's GCPF reads the seven camera parameters but {n} image(s) of dataset "
                f"{dataset.name!r} lack one (NaN cam_*): {shown}; set {where}.train.subset: camera_complete "
                f"(FineLive-p), or {where}.model.missing_camera: drop (leave them out) or unknown (the learned "
                "'unknown' embedding)")
        self.missing_camera_counts = {role: len(v) for role, v in missing.items() if v}
        log.warning("%s: %d image(s) of %s lack a camera parameter (%s); missing_camera=%s: %s", where, n,
                    dataset.name, self.missing_camera_counts, self.missing_camera,
                    "left out" if self.missing_camera == "drop" else "kept with the learned 'unknown' embedding")
        if self.missing_camera == "unknown":
            return ids
        kept = {role: [i for i in role_ids if known.loc[i]] for role, role_ids in ids.items()}
        if not kept.get("train"):
            raise DataError(f"{where}: no training image of {dataset.name!r} has every camera parameter "
                            "(missing_camera: drop)")
        return kept

    def run_notes(self) -> dict[str, Any]:
        """``missing_camera`` and the images per role it applied to, when GCPF met images lacking a camera
        parameter (the tables state it)."""
        if not self.missing_camera_counts:
            return {}
        return {"missing_camera": self.missing_camera, "missing_camera_images": dict(self.missing_camera_counts)}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        backbone = list(self.backbone.parameters())
        if self.use_hfe:
            backbone += list(self.human_backbone.parameters())
        ids = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": backbone, "lr": lr * self.backbone_lr_scale}, {"params": rest, "lr": lr}]


@torch.no_grad()
def pair_head_probabilities(model: IQAModel, embeddings: Mapping[str, torch.Tensor], pairs: pd.DataFrame,
                            batch_size: int = 4096) -> np.ndarray:
    """The pair head's ``P(image_a better than image_b)`` (Eq. 9) for every row of ``pairs``, on its attribute.

    ``embeddings`` maps image ids to the fused features ``F_f`` ``[D]`` that
    :meth:`TuningIQA.predict_with_embedding` returns (any model with ``has_pair_head``). Rows whose image has
    no embedding, or whose attribute the model does not predict, get NaN. The result is what
    :func:`iqalab.analysis.metrics.fg_acc_pairwise` scores (FG-ACC in pairwise mode).
    """
    if not model.has_pair_head:
        raise ValueError(f"model {model.registry_name!r} has no pair head")
    out = np.full(len(pairs), np.nan)
    column = {a: k for k, a in enumerate(model.attributes)}
    attr = pairs["attribute"].map(column)
    usable = (pairs["image_a"].isin(embeddings) & pairs["image_b"].isin(embeddings) & attr.notna()).to_numpy()
    rows = np.flatnonzero(usable)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            emb_a = torch.stack([embeddings[i] for i in pairs["image_a"].iloc[chunk]])
            emb_b = torch.stack([embeddings[i] for i in pairs["image_b"].iloc[chunk]])
            logits = model.pair_logits(emb_a, emb_b).float()
            k = torch.as_tensor(attr.iloc[chunk].to_numpy(dtype=np.int64), device=logits.device)
            out[chunk] = torch.sigmoid(logits.gather(1, k[:, None]).squeeze(1)).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def parameter_breakdown(model: TuningIQA) -> dict[str, int]:
    """Parameters per component (and ``total``) of a :class:`TuningIQA`.

    Paper-size configurations measured with ``pretrained=False``, 5 attributes, human backbone
    ``tf_efficientnetv2_m`` (features-only, last stage 512 channels), ``hfe_dim=None``,
    ``partition_conv="depthwise"``, ``embed_dim=1280``, ``head_hidden=64``, ``use_gcpf=False`` (Table 2 is on the
    full FGLive-10K, which has no camera parameters), against the paper's Table 2 (M = 1e6 parameters):

    ===================  ===============  ==============
    component            MobileNetV3-S    ResNet-50
    ===================  ===============  ==============
    backbone (F_b)       0.927            23.508
    human_backbone (M)   52.200           52.200
    hfe                  0.200            0.200
    cross_attention      2.461            6.230
    heads                0.410            0.410
    pair_heads           1.229            1.229
    total (ours)         57.429           83.778
    paper (Table 2)      58.29            84.62
    difference           -0.86 (-1.5%)    -0.84 (-1.0%)
    (gcpf, g=256)        +1.190           +1.190
    ===================  ===============  ==============

    The paper's two rows differ by 26.33M: the features-only backbones differ by 22.58M, and the remaining 3.75M
    equals ``2 x (2048 - 576) x 1280 = 3.77M``, i.e. ``W_K`` and ``W_V`` projecting the backbone's last-stage
    channels to 1280 - which is how ``embed_dim=1280`` was chosen; our rows differ by the same 26.35M. The rest of
    the gap is the same on both rows (-0.85M), so it sits in backbone-independent parts whose sizes the paper
    does not give: head widths (each +64 hidden units adds 1.64M), the nine partition transforms (depthwise here;
    full 3x3 convs would add 47.8M, impossible within 58.29M), and whether GCPF or the human backbone's
    512->1280 head conv (0.66M) is counted. With GCPF at ``gcpf_dim=256`` ours are 58.62M / 84.97M.
    """
    groups = {
        "backbone": ["backbone"],
        "human_backbone": ["human_backbone"],
        "hfe": ["hfe"],
        "cross_attention": ["attention", "pool_projection"],
        "gcpf": ["gcpf", "gcpf_fuse"],
        "heads": ["heads"],
        "pair_heads": ["pair_heads"],
    }
    out: dict[str, int] = {}
    for component, names in groups.items():
        out[component] = sum(p.numel() for name in names if hasattr(model, name)
                             for p in getattr(model, name).parameters())
    out["total"] = model.num_parameters()
    return out
