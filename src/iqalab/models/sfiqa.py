"""SFIQA-Assessor S / XS / XXS: three facial views, cross-view low-rank attention, task-token decoder.

Paper: Y. Jiang, W. Sun, Y. Zhou, X. Zhu, Y. Cao, J. Jia, Y. Li, S. Wu, D. Zhu, X. Min, G. Zhai, "Surveillance
Facial Image Quality Assessment: A Multi-dimensional Dataset and Lightweight Model", IEEE (2026), Section IV
(seed ``003``). No official code was available to us; this module follows the text, equation by equation.

What is implemented (paper section / equation)
----------------------------------------------
- IV-A preprocessing: three views of each image - the original (loosely cropped) image ``x_o``, the compact face
  region ``x_f`` and the eyes-and-mouth region ``x_em`` (``x_f`` with only the eyes and mouth kept) - are cut
  *inside the model* from the ``image`` tensor with :func:`torchvision.ops.roi_align` and resized to
  ``view_size`` (224 in the paper).
- IV-B1 multi-scale features, Eq. (2)-(4): one backbone per view (EdgeNeXt-S / XS / XXS, all four stages via
  timm ``features_only``); each stage goes through ``MLP_{D_i -> D_o}`` (D_o = 128), the maps are resized to one
  resolution, concatenated and fused by a 1x1 convolution.
- IV-B2 cross-view fusion, Eq. (5)-(10): GAP per view, low-rank projection ``W_d`` to D_l = 64, self-attention
  over the views (4 heads), high-rank projection ``W_u`` back to D_o and ``F = 1/V sum_j F_j * u_j``.
- IV-C task-aware decoder, Eq. (11)-(12): one learnable token per attribute (noise, sharpness, colorfulness,
  contrast, fidelity, overall on SFIQA-Bench; any attribute list works), task self-attention then cross-attention
  to the flattened ``F`` (dim 128, 8 heads), applied twice.
- IV-D heads and loss, Eq. (13)-(14): one MLP head per task, loss = MSE averaged over the tasks (NaN targets are
  skipped, so datasets with a single MOS such as GFIQA-20K / CGFIQA-40K train the same model).

Readings of an ambiguous text (each is a constructor argument where it matters)
-------------------------------------------------------------------------------
- Face detector and face parser (IV-A): the paper detects a tight face box with
  Ultra-Light-Fast-Generic-Face-Detector-1MB (``x_f``), then "appl[ies] a face parsing algorithm [SegFace] to
  x_f to segment facial components and retain only the eyes and mouth regions, resulting in x_em": ``x_em`` is the
  face view with everything but the eyes and the mouth removed (a mask in the face view's frame, not a zoom).
  Offline we substitute facenet-pytorch MTCNN, run once at ingest (:mod:`iqalab.data.regions`,
  ``datasets.<name>.detect``; the ``face_detector`` column of ``images.parquet`` names the detector of each box;
  the simulator's datasets carry its own boxes, MTCNN's on the source photographs): its face box gives ``x_f`` and
  its five landmarks (left eye, right eye, nose, left and right mouth corner) stand in for the parser.
  ``eyes_mouth_mode="parsing"`` (default, the paper's view) keeps soft ellipses around the two eyes and the
  mouth of the face view (:func:`eyes_mouth_mask`: eye half-axes 0.3 x 0.18 of the eye distance, mouth 0.7 x
  0.35 of the mouth width) and sets the rest to black; where a segmentation would follow the lids and lips, the
  ellipses are a coarser outline. Two earlier readings stay selectable for comparison: ``"box"`` (the landmark
  bounding box plus ``eyes_mouth_margin``, resized to the view: a zoom on the eyes and mouth, nothing removed)
  and ``"mask"`` (that box with the ellipses, the rest at the ImageNet mean). Any detector that fills the
  canonical ``face_*`` / ``lm<k>_*`` columns plugs in unchanged: the model only reads the ``face_box`` /
  ``landmarks`` batch keys.
- Missing detections (NaN rows): the face view falls back to the landmark box (padded by half its size), then to a
  centre square covering ``fallback_face_frac`` of the short side; without landmarks the parsing view places the
  ellipses at :data:`TEMPLATE_LANDMARKS` in the face view (the box modes use the canonical eye-to-mouth band of
  the face box, x 15-85 %, y 25-90 %). Crops are squares (no aspect distortion), shifted to lie inside the image
  and clipped only when larger than it, so they always contain the landmarks.
  These fallbacks apply to images where the detector found no face; a dataset never searched for faces is refused
  at training (:func:`iqalab.data.regions.check_regions`) unless ``allow_missing_regions: true``, which keeps the
  fallbacks and is recorded in the predictions JSON (``regions_missing``).
- ``MLP_{D_i -> D_o}`` (Eq. 3) is read as one linear layer per stage applied per pixel, the 1x1 fusion conv
  (Eq. 4) as conv + BatchNorm + ReLU at the resolution of the first (stride-4) stage, i.e. the all-MLP decoder of
  SegFormer. Both readings are what the paper's own numbers imply: the per-view increment of Table VI
  (12.34 - 6.91 = 5.43 M) equals EdgeNeXt-S features (5.28 M) + one linear per stage + the fusion conv (0.144 M),
  and the per-view GMACs (1.21) equal the backbone (~0.97 at 224^2) + a stride-4 fusion conv (0.21).
  ``fuse_at_stage`` chooses another resolution (coarser = cheaper on a CPU).
- Eq. (10) multiplies by ``u_j`` as it comes out of ``W_u`` (no sigmoid gate): the text has none.
- The decoder "applied twice" is read as two post-norm transformer decoder layers (residual + LayerNorm around
  self-attention, cross-attention and a feed-forward block of width ``ffn_dim`` = 2048, dropout 0.1: PyTorch's
  ``nn.TransformerDecoderLayer`` defaults). The paper does not list the FFN, but without it the model would have
  1.3 M fewer parameters than Table II says; with it, all three variants land within 0.04 M of Table II.
  Cross-attention uses no positional encoding (none is mentioned).
- "Three-layer MLP with 128, 128 and 1 neurons" is read as input 128 -> hidden 128 (ReLU) -> 1 (two linear
  layers); with three linear layers every variant would be 0.07 M above the paper instead of 0.03 M below. The
  output is linear (MSE regression on the [0, 1] normalised MOS), its bias starts at 0.5 (mid-scale).

Complexity (Table II; ours measured with :func:`iqalab.models.profile.profile_model`, ``pretrained=False``,
six attributes, 224 x 224 image and views, ``torch.utils.flop_counter``, GMACs = FLOPs / 2; latency batch 1 on a
shared 2-core AMD EPYC CPU, torch 2.14.1, 2 threads, mean of 20 runs after 5 warm-up runs)
----------------------------------------------------------------------------------------------------------------
======= ============ =========== =========== ========== ================ ===============
variant params paper params ours GMACs paper GMACs ours latency paper    latency ours
======= ============ =========== =========== ========== ================ ===============
S       17.76 M      17.728 M    3.75        3.81       10.59 ms (GPU)   66 ms (CPU)
XS       8.26 M       8.230 M    2.05        2.12        9.34 ms (GPU)   53 ms (CPU)
XXS      5.28 M       5.251 M    1.39        1.47        8.26 ms (GPU)   36 ms (CPU)
======= ============ =========== =========== ========== ================ ===============

Exact parameter counts are in :data:`DOCUMENTED_PARAMS` (asserted by the unit tests). Per view: backbone
features (EdgeNeXt-S 5.281 M / XS 2.143 M / XXS 1.158 M) + per-stage linears + fusion conv; shared: cross-view
block 33 k, two decoder layers 1.319 M, six heads 0.100 M. We lack the same 0.03 M in every variant, so the gap sits
outside the backbones (plausibly a bias or normalisation layer in the heads or decoder that the paper does not
describe). GMACs (S): each view 1.200 = backbone 0.959 + stride-4 fusion 0.206 + per-stage linears; decoder 0.213,
almost all of it the keys/values of the cross-attention over 56 x 56 tokens; ``roi_align`` is not counted. Ours are
1.6 % (S), 3.6 % (XS), 6.1 % (XXS) above the paper; a counter that skips ``nn.MultiheadAttention`` (thop,
ptflops with default hooks) would report 0.21 less (3.60 / 1.91 / 1.26), so the paper's values lie between the two
counting conventions; fvcore, which also counts the bilinear upsampling, gives 3.85 (S) and 1.50 (XXS). Latency is
machine-specific: the paper's were measured on an RTX 3090 including preprocessing; ours come from
``profile_model`` with the device named (the views are cut inside ``forward``, so cropping is included; MTCNN
detection runs once at ingest and is not). The XXS at 112 x 112 views is 0.37 GMACs (the default run's views:
96 px).

Ablation numbers the paper reports but this reading does not reproduce (Table VI, ours in brackets): original view
only 6.91 M / 1.32 GMACs (6.878 M / 1.41), original + face or + eyes-mouth 12.34 M / 2.54 (12.303 M / 2.61); without
task self-attention 17.01 M / 3.74 (17.596 M / 3.81: two 66 k self-attention blocks removed) and without cross-view
fusion 16.64 M / 3.15 (17.695 M / 3.81: the 33 k fusion block removed). The last two deltas are larger than either
module can hold under any reading of Eq. (5)-(11), so the paper's ablated models presumably differed in ways it does
not describe. Table V backbone swaps, all stages of each backbone, fused at the finest: EfficientFormerV2-S1 paper
19.05 M / 2.75 (ours 19.019 M / 2.85); MobileNetV4-Conv-M 23.42 M / 5.67 (23.802 M / 6.65: timm reports five
levels, the first at stride 2, so the fusion runs at 112 x 112; ``fuse_at_stage=1`` gives 3.73); RepViT-M1.0
16.10 M / 3.36 (21.183 M / 4.28: timm's ``repvit_m1_0`` features alone are 6.40 M per view, more than the paper's
whole-model figure allows).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from iqalab.data.loaders import IMAGENET_MEAN, IMAGENET_STD
from iqalab.models.backbones import create_backbone
from iqalab.models.base import IQAModel, StepContext
from iqalab.models.registry import register
from iqalab.train.losses import masked_mse

log = logging.getLogger(__name__)

VIEWS: tuple[str, ...] = ("original", "face", "eyes_mouth")

#: how the eyes-and-mouth view is made (module docstring); ``"parsing"`` is the paper's (Sec. IV-A)
EYES_MOUTH_MODES: tuple[str, ...] = ("parsing", "mask", "box")

#: five landmarks (left eye, right eye, nose, left and right mouth corner) as fractions of the face-view square,
#: for faces without landmarks: MTCNN's points on the simulator's source faces (astronaut, grace_hopper) moved
#: into the square of the 10 %-padded face box
TEMPLATE_LANDMARKS: tuple[tuple[float, float], ...] = ((0.35, 0.375), (0.65, 0.375), (0.5, 0.53), (0.39, 0.68),
                                                       (0.61, 0.68))

#: timm backbone of each SFIQA-Assessor variant (Section V-C)
VARIANT_BACKBONES: dict[str, str] = {"s": "edgenext_small", "xs": "edgenext_x_small", "xxs": "edgenext_xx_small"}

#: Table II (paper): parameters (M) and GMACs at 224 x 224
PAPER_COMPLEXITY: dict[str, tuple[float, float]] = {"s": (17.76, 3.75), "xs": (8.26, 2.05), "xxs": (5.28, 1.39)}

#: Our exact parameter counts (six attributes, default arguments), asserted by the unit tests
DOCUMENTED_PARAMS: dict[str, int] = {"s": 17_728_350, "xs": 8_230_458, "xxs": 5_250_798}

#: Table V backbone swaps (timm names)
TABLE_V_BACKBONES: tuple[str, ...] = ("edgenext_small", "mobilenetv4_conv_medium", "efficientformerv2_s1",
                                      "repvit_m1_0")


# ---------------------------------------------------------------------------------------------------------------
# view geometry (Section IV-A, with MTCNN boxes/landmarks instead of Ultra-Light detector + face parsing)
# ---------------------------------------------------------------------------------------------------------------
def _fit_square(cx: torch.Tensor, cy: torch.Tensor, side: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Square boxes of ``side`` centred at (cx, cy), shifted to lie inside the image (clipped only where the side
    exceeds the image). Returns ``[B, 4]`` x0, y0, x1, y1 in pixel coordinates (pixel k spans [k, k+1])."""
    sx = side.clamp(min=1.0).clamp(max=float(width))
    sy = side.clamp(min=1.0).clamp(max=float(height))
    x0 = (cx - sx / 2).clamp(min=0.0)
    x0 = torch.minimum(x0, width - sx)
    y0 = (cy - sy / 2).clamp(min=0.0)
    y0 = torch.minimum(y0, height - sy)
    return torch.stack([x0, y0, x0 + sx, y0 + sy], dim=-1)


def _row_known(t: torch.Tensor) -> torch.Tensor:
    """Rows of a ``[B, ...]`` tensor without any NaN."""
    return ~torch.isnan(t.reshape(t.shape[0], -1)).any(dim=1)


def landmark_box(landmarks: torch.Tensor) -> torch.Tensor:
    """Axis-aligned bounding box ``[B, 4]`` of ``[B, K, 2]`` landmarks (NaN rows stay NaN)."""
    return torch.cat([landmarks.amin(dim=1), landmarks.amax(dim=1)], dim=-1)


def face_boxes(face_box: torch.Tensor | None, landmarks: torch.Tensor | None, height: int, width: int,
               margin: float = 0.1, fallback_frac: float = 0.8) -> torch.Tensor:
    """Square face-view boxes ``[B, 4]`` inside a ``height x width`` image.

    The detector box is padded by ``margin`` x its longer side on every side; rows without a box use the landmark
    box padded by half its longer side; rows without either use a centre square of ``fallback_frac`` x the short
    side.
    """
    ref = face_box if face_box is not None else landmarks
    if ref is None:
        raise ValueError("face_boxes needs a face_box or landmarks tensor (NaN rows allowed) to know the batch size")
    n, device = ref.shape[0], ref.device
    cx = torch.full((n,), width / 2, device=device)
    cy = torch.full((n,), height / 2, device=device)
    side = torch.full((n,), fallback_frac * min(height, width), device=device)
    if landmarks is not None:
        lm_box = landmark_box(landmarks.float())
        known = _row_known(landmarks)
        lm_side = (lm_box[:, 2:] - lm_box[:, :2]).amax(dim=1) * 2.0
        cx = torch.where(known, (lm_box[:, 0] + lm_box[:, 2]) / 2, cx)
        cy = torch.where(known, (lm_box[:, 1] + lm_box[:, 3]) / 2, cy)
        side = torch.where(known, lm_side, side)
    if face_box is not None:
        fb = face_box.float()
        known = _row_known(fb)
        fb_side = (fb[:, 2:] - fb[:, :2]).amax(dim=1) * (1.0 + 2.0 * margin)
        cx = torch.where(known, (fb[:, 0] + fb[:, 2]) / 2, cx)
        cy = torch.where(known, (fb[:, 1] + fb[:, 3]) / 2, cy)
        side = torch.where(known, fb_side, side)
    return _fit_square(cx, cy, side, height, width)


def eyes_mouth_boxes(landmarks: torch.Tensor | None, face_view_boxes: torch.Tensor, height: int, width: int,
                     margin: float = 0.3) -> torch.Tensor:
    """Square eyes-and-mouth boxes ``[B, 4]``: the bounding box of the five landmarks padded by ``margin`` x its
    longer side on every side; rows without landmarks use the eye-to-mouth band of the face-view box (x 15-85 %,
    y 25-90 %, the canonical layout of a frontal face)."""
    fv = face_view_boxes
    fw, fh = fv[:, 2] - fv[:, 0], fv[:, 3] - fv[:, 1]
    cx = fv[:, 0] + 0.5 * fw
    cy = fv[:, 1] + 0.575 * fh
    side = torch.maximum(0.70 * fw, 0.65 * fh)
    if landmarks is not None:
        lm_box = landmark_box(landmarks.float())
        known = _row_known(landmarks)
        lm_side = (lm_box[:, 2:] - lm_box[:, :2]).amax(dim=1) * (1.0 + 2.0 * margin)
        cx = torch.where(known, (lm_box[:, 0] + lm_box[:, 2]) / 2, cx)
        cy = torch.where(known, (lm_box[:, 1] + lm_box[:, 3]) / 2, cy)
        side = torch.where(known, lm_side, side)
    return _fit_square(cx, cy, side, height, width)


def eyes_mouth_mask(landmarks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Soft mask ``[B, 1, size, size]`` of three ellipses (two eyes, mouth) in the eyes-and-mouth view.

    A stand-in for the face-parsing masks of Fig. 11: eyes are ellipses of half-axes 0.3 x 0.18 of the eye
    distance around each eye landmark, the mouth one of 0.7 x 0.35 of the mouth width (at least 0.5 eye
    distances) around the mouth centre. Rows without landmarks get an all-ones mask (the plain box).
    """
    n = boxes.shape[0]
    known = _row_known(landmarks)
    lm = torch.nan_to_num(landmarks.float())
    scale = (boxes[:, 2:] - boxes[:, :2]) / size  # pixels of the image per view pixel, [B, 2]
    pts = (lm - boxes[:, None, :2]) / scale[:, None, :]  # landmarks in view pixels
    eye_dist = (pts[:, 1] - pts[:, 0]).norm(dim=-1).clamp(min=1.0)
    mouth_c = (pts[:, 3] + pts[:, 4]) / 2
    mouth_w = torch.maximum((pts[:, 4] - pts[:, 3]).norm(dim=-1), 0.5 * eye_dist)
    grid = torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")

    def ellipse(c: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor) -> torch.Tensor:
        d = ((gx - c[:, 0, None, None]) / ax[:, None, None]) ** 2 + ((gy - c[:, 1, None, None]) / ay[:, None, None]) ** 2
        return torch.sigmoid(4.0 * (1.0 - d))  # ~1 inside, ~0 outside, soft edge

    mask = torch.maximum(ellipse(pts[:, 0], 0.3 * eye_dist, 0.18 * eye_dist),
                         ellipse(pts[:, 1], 0.3 * eye_dist, 0.18 * eye_dist))
    mask = torch.maximum(mask, ellipse(mouth_c, 0.7 * mouth_w, 0.35 * mouth_w))
    mask = torch.where(known[:, None, None], mask, torch.ones_like(mask))
    return mask.reshape(n, 1, size, size)


def template_landmarks(boxes: torch.Tensor) -> torch.Tensor:
    """:data:`TEMPLATE_LANDMARKS` placed in face-view boxes ``[B, 4]``: ``[B, 5, 2]`` pixels."""
    rel = torch.tensor(TEMPLATE_LANDMARKS, dtype=boxes.dtype, device=boxes.device)
    return boxes[:, None, :2] + rel[None] * (boxes[:, None, 2:] - boxes[:, None, :2])


def black(image: torch.Tensor) -> torch.Tensor:
    """The ImageNet-normalised value of a black pixel, ``[1, 3, 1, 1]`` (what the parsing view blanks to)."""
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device)
    std = torch.as_tensor(IMAGENET_STD, dtype=image.dtype, device=image.device)
    return (-mean / std).reshape(1, 3, 1, 1)


def cut_views(image: torch.Tensor, face_box: torch.Tensor | None, landmarks: torch.Tensor | None,
              view_size: int, views: tuple[str, ...] = VIEWS, face_margin: float = 0.1, eyes_mouth_margin: float = 0.3,
              eyes_mouth_mode: str = "parsing", fallback_face_frac: float = 0.8
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Cut the views of Section IV-A from ``image`` ``[B, 3, H, W]`` (ImageNet-normalised); returns ``(crops,
    boxes)`` keyed by view name, crops ``[B, 3, view_size, view_size]`` and boxes ``[B, 4]`` (pixel x0, y0, x1,
    y1). ``eyes_mouth_mode="parsing"``: the eyes-and-mouth view is the face view with everything but the eyes and
    the mouth set to black (:func:`eyes_mouth_mask` around the landmarks, :func:`template_landmarks` where there
    are none); ``"mask"`` / ``"box"``: the landmark box, masked or not (module docstring)."""
    if eyes_mouth_mode not in EYES_MOUTH_MODES:
        raise ValueError(f"eyes_mouth_mode {eyes_mouth_mode!r}: expected one of {list(EYES_MOUTH_MODES)}")
    b, _, h, w = image.shape
    boxes: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if "original" in views:
            boxes["original"] = image.new_tensor([0.0, 0.0, float(w), float(h)]).expand(b, 4)
        if "face" in views or "eyes_mouth" in views:
            fb = face_box if face_box is not None else None
            if fb is None and landmarks is None:
                fb = image.new_full((b, 4), float("nan"))
            face = face_boxes(fb, landmarks, h, w, face_margin, fallback_face_frac)
            if "face" in views:
                boxes["face"] = face
            if "eyes_mouth" in views:
                boxes["eyes_mouth"] = face if eyes_mouth_mode == "parsing" else \
                    eyes_mouth_boxes(landmarks, face, h, w, eyes_mouth_margin)
    crops: dict[str, torch.Tensor] = {}
    index = torch.arange(b, device=image.device, dtype=image.dtype)[:, None]
    for view in views:
        if view == "eyes_mouth" and eyes_mouth_mode == "parsing" and "face" in crops:
            crop = crops["face"]  # the same square: cut once
        else:
            rois = torch.cat([index, boxes[view].to(image.dtype)], dim=1)
            # aligned=True: a box [0, W] covers the whole image; sampling_ratio=-1 averages ceil(scale) samples
            # per bin
            crop = roi_align(image, rois, output_size=(view_size, view_size), spatial_scale=1.0, sampling_ratio=-1,
                             aligned=True)
        if view == "eyes_mouth" and eyes_mouth_mode == "parsing":
            box = boxes[view]
            points = template_landmarks(box) if landmarks is None else torch.where(
                _row_known(landmarks)[:, None, None], landmarks.float(), template_landmarks(box))
            mask = eyes_mouth_mask(points, box, view_size).to(crop.dtype)
            crop = crop * mask + black(crop) * (1 - mask)
        elif view == "eyes_mouth" and eyes_mouth_mode == "mask" and landmarks is not None:
            crop = crop * eyes_mouth_mask(landmarks, boxes[view], view_size).to(crop.dtype)
        crops[view] = crop
    return crops, boxes


# ---------------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------------
class MultiScaleEncoder(nn.Module):
    """One view's encoder, Eq. (2)-(4): backbone stages -> per-stage linear to ``dim`` -> resize -> concat -> 1x1
    conv (+BN+ReLU) at the resolution of stage ``fuse_at_stage``."""

    def __init__(self, backbone: str, pretrained: bool | str | Path, dim: int, out_indices: tuple[int, ...] | None,
                 fuse_at_stage: int) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained=pretrained, features_only=True, out_indices=out_indices)
        channels = list(self.backbone.feature_info.channels())
        if not -len(channels) <= fuse_at_stage < len(channels):
            raise ValueError(f"fuse_at_stage={fuse_at_stage} but backbone {backbone!r} has {len(channels)} stages")
        self.fuse_at_stage = fuse_at_stage
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, kernel_size=1) for c in channels)
        self.fuse = nn.Sequential(nn.Conv2d(len(channels) * dim, dim, kernel_size=1, bias=False),
                                  nn.BatchNorm2d(dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        size = feats[self.fuse_at_stage].shape[-2:]
        maps = []
        for feat, proj in zip(feats, self.proj):
            m = proj(feat)
            if m.shape[-2:] != size:
                if m.shape[-2] < size[0]:
                    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                else:
                    m = F.adaptive_avg_pool2d(m, size)
            maps.append(m)
        return self.fuse(torch.cat(maps, dim=1))


class CrossViewLowRankAttention(nn.Module):
    """Cross-view low-rank channel attention, Eq. (5)-(10): GAP -> W_d (LRP) -> self-attention over views ->
    W_u (HRP) -> ``F = mean_j F_j * u_j``."""

    def __init__(self, dim: int = 128, latent: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.down = nn.Linear(dim, latent, bias=False)
        self.attn = nn.MultiheadAttention(latent, heads, batch_first=True)
        self.up = nn.Linear(latent, dim, bias=False)

    def weights(self, feats: torch.Tensor) -> torch.Tensor:
        """Channel weights ``U`` ``[B, V, D_o]`` for view features ``[B, V, D_o, H, W]``."""
        f = self.down(feats.mean(dim=(-2, -1)))
        g, _ = self.attn(f, f, f, need_weights=False)
        return self.up(g)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        u = self.weights(feats)
        return (feats * u[..., None, None]).mean(dim=1)


class TaskDecoderLayer(nn.Module):
    """Task self-attention (Eq. 11, optional) -> cross-attention to the fused features (Eq. 12) -> FFN; post-norm
    residual blocks as in ``nn.TransformerDecoderLayer``."""

    def __init__(self, dim: int = 128, heads: int = 8, ffn_dim: int = 2048, dropout: float = 0.1,
                 self_attn: bool = True) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) if self_attn else None
        self.norm_sa = nn.LayerNorm(dim) if self_attn else None
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ca = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm_ffn = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            t, _ = self.self_attn(tokens, tokens, tokens, need_weights=False)
            tokens = self.norm_sa(tokens + self.drop(t))
        t, _ = self.cross_attn(tokens, memory, memory, need_weights=False)
        tokens = self.norm_ca(tokens + self.drop(t))
        return self.norm_ffn(tokens + self.drop(self.ffn(tokens)))


def regression_head(dim: int = 128, hidden: int = 128) -> nn.Sequential:
    """Eq. (13) head: dim -> hidden (ReLU) -> 1, last bias at mid-scale 0.5."""
    head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
    nn.init.constant_(head[-1].bias, 0.5)
    return head


# ---------------------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------------------
class SFIQAAssessor(IQAModel):
    """SFIQA-Assessor (Section IV): per-view EdgeNeXt encoders, cross-view fusion, task-token decoder, MLP heads.

    Args:
        attributes: quality dimensions, one task token and head each.
        variant: ``"s"``, ``"xs"`` or ``"xxs"`` (EdgeNeXt-S / XS / XXS); ``None`` = the class's default.
        backbone: timm name overriding the variant's backbone (Table V: ``mobilenetv4_conv_medium``,
            ``efficientformerv2_s1``, ``repvit_m1_0``).
        pretrained: ``False``, ``True`` (hub) or a local weights file, loaded into every view's backbone.
        views: subset of ``("original", "face", "eyes_mouth")`` (Table VI ablations).
        use_cross_view: Eq. (5)-(10) fusion; ``False`` = plain mean over views (Table VI "w/o CFF").
        use_task_self_attn: Eq. (11); ``False`` = cross-attention only (Table VI "w/o TSA").
        view_size: side of each view in pixels (224 in the paper).
        dim, latent_dim, view_heads, task_heads, decoder_layers, ffn_dim, dropout, head_hidden: widths of
            Section V-C (D_o = 128, D_l = 64, 4 and 8 heads, two decoder passes) and of our readings.
        out_indices: backbone stages to use (default: all the backbone reports).
        fuse_at_stage: index (into the used stages) whose resolution the per-view fusion works at (0 = stride 4).
        face_margin, eyes_mouth_margin, eyes_mouth_mode, fallback_face_frac: view geometry (see module doc).
        allow_missing_regions: train on a dataset whose images were never searched for faces (centre-square
            fallback; recorded in the predictions JSON) instead of refusing it.
    """

    inputs = frozenset({"image", "face_box", "landmarks"})
    paper = ("Jiang et al., Surveillance Facial Image Quality Assessment: A Multi-dimensional Dataset and "
             "Lightweight Model (SFIQA-Bench, SFIQA-Assessor), IEEE 2026")
    default_variant: ClassVar[str] = "s"
    smoke_params: ClassVar[dict[str, Any]] = {"backbone": "edgenext_xx_small", "view_size": 64, "ffn_dim": 256,
                                              "fuse_at_stage": 1}
    smoke_image_size: ClassVar[int] = 64

    def __init__(self, attributes: list[str], variant: str | None = None, backbone: str | None = None,
                 pretrained: bool | str | Path = False, views: list[str] | tuple[str, ...] = VIEWS,
                 use_cross_view: bool = True, use_task_self_attn: bool = True, view_size: int = 224,
                 dim: int = 128, latent_dim: int = 64, view_heads: int = 4, task_heads: int = 8,
                 decoder_layers: int = 2, ffn_dim: int = 2048, dropout: float = 0.1, head_hidden: int = 128,
                 out_indices: list[int] | tuple[int, ...] | None = None, fuse_at_stage: int = 0,
                 face_margin: float = 0.1, eyes_mouth_margin: float = 0.3, eyes_mouth_mode: str = "parsing",
                 fallback_face_frac: float = 0.8, allow_missing_regions: bool = False) -> None:
        super().__init__(attributes)
        self.allow_missing_regions = allow_missing_regions
        variant = (variant or self.default_variant).lower()
        if variant not in VARIANT_BACKBONES:
            raise ValueError(f"variant {variant!r}: expected one of {sorted(VARIANT_BACKBONES)}")
        views = tuple(views)
        unknown = [v for v in views if v not in VIEWS]
        if not views or unknown or len(set(views)) != len(views):
            raise ValueError(f"views {list(views)}: expected a non-empty subset of {list(VIEWS)}")
        if eyes_mouth_mode not in EYES_MOUTH_MODES:
            raise ValueError(f"eyes_mouth_mode {eyes_mouth_mode!r}: expected one of {list(EYES_MOUTH_MODES)}")
        self.variant = variant
        self.backbone_name = backbone or VARIANT_BACKBONES[variant]
        self.views = tuple(v for v in VIEWS if v in views)  # canonical order
        if self.views == ("original",):  # no face view: regions are not read
            self.inputs = frozenset({"image"})
        self.view_size = int(view_size)
        self.geometry = {"face_margin": face_margin, "eyes_mouth_margin": eyes_mouth_margin,
                         "eyes_mouth_mode": eyes_mouth_mode, "fallback_face_frac": fallback_face_frac}
        idx = tuple(out_indices) if out_indices is not None else None
        self.encoders = nn.ModuleDict({v: MultiScaleEncoder(self.backbone_name, pretrained, dim, idx, fuse_at_stage)
                                       for v in self.views})
        self.cross_view = CrossViewLowRankAttention(dim, latent_dim, view_heads) if use_cross_view else None
        self.task_tokens = nn.Parameter(torch.zeros(1, len(self.attributes), dim))
        nn.init.trunc_normal_(self.task_tokens, std=0.02)
        self.decoder = nn.ModuleList(TaskDecoderLayer(dim, task_heads, ffn_dim, dropout, use_task_self_attn)
                                     for _ in range(decoder_layers))
        self.heads = nn.ModuleList(regression_head(dim, head_hidden) for _ in self.attributes)
        log.debug("SFIQA-Assessor-%s (%s), views %s: %.3f M parameters", variant.upper(), self.backbone_name,
                  self.views, self.num_parameters() / 1e6)

    # -- pieces, exposed for tests and figures -----------------------------------------------------------------
    def cut_views(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The views (``[B, 3, S, S]``) and their boxes (``[B, 4]`` pixels) of Section IV-A for a batch."""
        return cut_views(batch["image"], batch.get("face_box"), batch.get("landmarks"), self.view_size, self.views,
                         **self.geometry)

    def fused_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """Unified facial feature map ``F`` ``[B, D_o, h, w]`` (Eq. 10, or the plain view mean without CFF)."""
        crops, _ = self.cut_views(batch)
        feats = torch.stack([self.encoders[v](crops[v]) for v in self.views], dim=1)  # [B, V, D, h, w]
        if self.cross_view is not None:
            return self.cross_view(feats)
        return feats.mean(dim=1)

    def task_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """Task-aware tokens ``T_hat`` ``[B, A, D_o]`` (Eq. 11-12, applied ``decoder_layers`` times)."""
        fused = self.fused_features(batch)
        memory = fused.flatten(2).transpose(1, 2)  # [B, h*w, D]
        tokens = self.task_tokens.expand(fused.shape[0], -1, -1)
        for layer in self.decoder:
            tokens = layer(tokens, memory)
        return tokens

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        tokens = self.task_features(batch)
        return {a: head(tokens[:, k]).squeeze(-1) for k, (a, head) in enumerate(zip(self.attributes, self.heads))}

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """Eq. (14): MSE averaged over the quality dimensions (normalised MOS)."""
        return masked_mse(self(batch), batch["mos_norm"], self.attributes)


@register("sfiqa_s")
class SFIQAAssessorS(SFIQAAssessor):
    """SFIQA-Assessor-S: EdgeNeXt-S backbones (the paper's default configuration)."""

    default_variant = "s"


@register("sfiqa_xs")
class SFIQAAssessorXS(SFIQAAssessor):
    """SFIQA-Assessor-XS: EdgeNeXt-XS backbones."""

    default_variant = "xs"


@register("sfiqa_xxs")
class SFIQAAssessorXXS(SFIQAAssessor):
    """SFIQA-Assessor-XXS: EdgeNeXt-XXS backbones."""

    default_variant = "xxs"
