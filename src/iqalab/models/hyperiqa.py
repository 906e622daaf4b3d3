"""HyperIQA, SEM-HyperIQA and SEM-HyperIQA-CO: a hyper network that writes the weights of a small quality
regressor for every patch, optionally with a scene classifier and a per-scene score rescaler.

Papers:

- S. Su, Q. Yan, Y. Zhu, C. Zhang, X. Ge, J. Sun, Y. Zhang, "Blindly Assess Image Quality in the Wild Guided by
  a Self-Adaptive Hyper Network", CVPR 2020 (HyperIQA; original code github.com/SSL92/hyperIQA).
- N. Chahine, S. Calarasanu, D. Garcia-Civiero, T. Cayla, S. Ferradans, J. Ponce, "An Image Quality Assessment
  Dataset for Portraits", CVPR 2023 (PIQ23, SEM-HyperIQA; code github.com/DXOMARK-Research/PIQ2023).
- N. Chahine, S. Ferradans, J. Vazquez-Corral, J. Ponce, "Generalized Portrait Quality Assessment" (seed ``001``),
  Sections II-a (SEM-HyperIQA), IV-B (training strategy, multi-scale patch protocol), Table I. FHIQA, the
  paper's own model, lives in :mod:`iqalab.models.fhiqa` and reuses everything here.

What is implemented
-------------------
- HyperIQA (Su et al. Sec. 3): a ResNet-50 (timm ``resnet50``; any timm CNN with four stages, e.g. ``resnet18``
  on a CPU) gives four stage maps. The *local distortion aware* (LDA) module turns each of stages 1-3 into a
  16-d vector (1x1 conv to 16/32/64 channels, 7x7 average pooling = an 8x8/4x4/2x2 grid at 224 px, linear to 16)
  and stage 4 into a 176-d vector (global pooling, linear); the 224-d concatenation is the target network's input.
  The hyper network reduces stage 4 with three 1x1 conv + ReLU layers (2048 -> 1024 -> 512 -> 112) to the
  112 x 7 x 7 hyper feature ``H``; 3x3 convs on ``H`` generate the weights of the target FC layers
  (224-112-56-28-14) and linear layers on pooled ``H`` generate their biases and the last layer (14 -> 1). The
  target network is FC + sigmoid four times, then a linear FC: its weights differ for every patch.
- Patches: ``n_patches`` random ``patch_size`` squares per image in training, and ``test_rounds`` seeded rounds
  of them averaged by :meth:`HyperIQA.predict` (the image score is the mean patch score, seed 001 Sec. II-a).
  ``scales`` lists several ``(side, n)`` instead (seed 001 Sec. IV-B names 224 x 5, 672 x 3 and 1344 x 1: the
  paper trains "one of the three" per configuration and reports the best, so the paper profile sets one; a list
  of several is averaged over all their patches). From the square cache the model samples them, with
  ``reference_side`` scaling sides by the *patch rate* ``min(1, short side / reference_side)``
  (:func:`patch_protocol`); with ``train.resolution: native`` the loader cuts them from the native store at the
  file's own pixels (:meth:`HyperIQA.patch_loader_options`, :class:`iqalab.data.loaders.PatchItems`), face-region
  patches included. A patch is never resized: a 672 or 1344 px patch goes through the backbone at its size, and
  the adaptive pools below give the same target-network input size (PIQ23's code instead widens the network by
  ``patch_size // 224``: ``patch_rate``, below).
- SEM-HyperIQA (PIQ23; seed 001 Sec. II-a): the per-patch semantic features (``H`` average-pooled) of the
  ``n_patches`` crops (of every scale) are concatenated and classified into the training scenes by an MLP (3 layers, 500 hidden,
  as the official code); a rescaler MLP (3 hidden layers of 100) maps the softmax scene vector to (a, b) and the
  image score is ``a * mean_i(q_i) + b`` (= the mean of the rescaled patch scores ``a q_i + b``).
- SEM-HyperIQA-CO: the multitask model without the rescaler ("classification only", see below).
- Patch regions (seed 001 Sec. IV-D): ``regions`` maps attributes to ``"image"`` (default) or ``"face"``; a face
  attribute's patches are drawn inside the padded face box (``face_box`` batch key, pixels of the image batch;
  :func:`face_windows`, :func:`sample_region_patches`), its score is the mean over those patches. FHIQA judges
  PIQ23's Details and Exposure so (:mod:`iqalab.models.fhiqa`); the other models do when ``regions`` says so.
- Losses (seed 001 Sec. IV-B): HyperIQA L1 (original, each patch labelled with its image's score) or Huber;
  scene models ``Huber(score) + 0.5 * CE(scene)``. ``param_groups`` gives the backbone and the LDA module
  ``backbone_lr_scale`` times the learning rate (original: its ResNet module, LDA layers included, at 2e-5, the
  hyper network 10x).

Readings and deviations (each a constructor argument where it matters)
----------------------------------------------------------------------
- Any patch size: the original needs 224 px patches (fixed 7x7 pools and FC widths). By default we keep the 224
  architecture and pool *adaptively* (8/4/2/1 grids for the LDA module, 7x7 for ``H``): at 224 px this is exactly
  the original computation, and one network (one parameter count) serves every scale of the protocol and the
  small CPU patches. PIQ23's release instead widens the network by ``r = patch_size // 224``
  (``sem_hyperiqa_arch.py``: ``HyperNet(16, 112r, 224r, 112r, 56r, 28r, 14r, 7r, r)``), and seed 001 Table I's
  HyperIQA-family rows are that network at 1344 x 1 (r = 6; the PIQ23 README's scene-split rows, digit for
  digit): ``patch_rate=r`` builds it: ``H`` of 112r channels at 7r x 7r (the 1344 px patch's stage-4 map, not
  pooled), target network 224r-112r-56r-28r-14r, the LDA's 7x7 pools as 8r/4r/2r grids and stage 4 kept as an
  r x r grid (not pooled globally), LDA output 16 per stage as the release. The hyper network's reduction halves
  the stage-4 channels twice before ``hyper_in`` (2048 -> 1024 -> 512 -> 112r), as both releases.
- Parameter count: with ``resnet50`` and one attribute the model has :data:`DOCUMENTED_PARAMS` ``["hyperiqa"]``
  parameters = 27.38 M, the figure TuningIQA's table gives (timm's ResNet-50 without classifier 23.51 M + LDA
  0.48 M + hyper network 3.39 M), the same layer sizes as the original code; asserted by the unit tests.
- Several attributes: the backbone, LDA and hyper network (target layers 1-4) are shared; each attribute has its
  own generator for the last target layer (14 -> 1 weights and bias), i.e. one target-net head per attribute. With
  one attribute this is exactly the original. PIQ23 trains one model per attribute: ``train.separate_attributes``
  (the paper profile's Table I rows) trains one model of one attribute each; the default run trains one network
  for the three (one best epoch for all; docs/deviations.md, "One model per attribute").
- Output scale: models predict MOS scaled to [0, 1]; the target network's last layer is linear as in the original,
  plus a constant 0.5 so an untrained model starts mid-scale (the original learns this offset in its bias).
- Huber loss: PyTorch's default ``delta = 1`` is meant for JOD units (PIQ23 MAE ~ 1); on the [0, 1] scale we use
  ``huber_delta = 0.1`` (a kwarg).
- Scene features: the official code pools ``H`` (112 x 7 x 7) to 112 x 1 x n_scenes per patch (an adaptive pool
  whose width is the number of classes); ``scene_pool_width=None`` reproduces that, an integer fixes the width
  (1 = global average, 112 values per patch) to keep the classifier small on a CPU.
- "SEM-HyperIQA-CO" is not defined in seed 001; the official PIQ23 code has three configurations - classifier +
  rescaler fed by the predicted scene vector (SEM-HyperIQA), classifier without rescaler, and rescaler fed by the
  *ground-truth* scene one-hot (reported as SEM-HyperIQA-SO, on the device split only, where test scenes are
  known). We read CO as "classification only": multitask training (Huber + 0.5 CE) with the unscaled score.
- Initialisation of the scene classifier and rescaler (``head_init``). ``"identity"`` (default): the rescaler's
  last layer starts as the identity rescaling (weights ~ 1e-3, bias a = 1, b = 0) so the quality head learns from
  the first step; the classifier and the rescaler's other layers keep PyTorch's default init. ``"release"``: as
  PIQ23's release (``src/models/archs/sem_hyperiqa_util.py``: ``SceneClassNet`` and ``RescaleNet`` each end with
  ``self.apply(weights_init_xavier)``, which draws Kaiming-normal weights, fan-in, and sets zero biases, on every
  linear layer of both; :func:`release_head_init`). The rescaler is then a ReLU network without biases: 0 for a
  zero scene vector, ``f(c p) = c f(p)`` for ``c > 0``, so on the near-uniform scene vector of an untrained
  classifier (entries ~ 1/S) a and b start near 0, with a root-mean-square of about ``sqrt(2) / S``.
- The scene space is the training scenes (seed 001 Sec. II-b: the scene vector gives "coordinates in the
  vectorial space of scenes defined in the training set"; Sec. III: test scenes are unseen). ``scenes`` names the
  classifier's classes (the engine passes the training split's scenes, :meth:`SemHyperIQA.dataset_kwargs`, and
  the checkpoint records them); ``dataset_scenes`` is the list the batch key ``scene_idx`` indexes (the dataset's
  sorted scene list), mapped to class indices for the cross-entropy. An image of a scene outside ``scenes``
  (-1 after the mapping, like negative indices) is ignored by the cross-entropy. Without ``scenes``, ``n_scenes``
  classes are indexed by ``scene_idx`` directly.
- Evaluation patches are random like the original's 25 test patches, but drawn from a generator seeded with
  ``eval_seed`` so predictions are deterministic.
"""

from __future__ import annotations

import logging
import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from iqalab.data.regions import face_window_array, region_squares
from iqalab.models.backbones import create_backbone
from iqalab.models.base import IQAModel, StepContext
from iqalab.models.registry import register
from iqalab.train.losses import masked_huber, masked_l1

if TYPE_CHECKING:
    from iqalab.data.schema import Dataset

log = logging.getLogger(__name__)

#: Patch protocol of seed 001 Sec. IV-B: (patch side in full-resolution pixels, patches per image).
PIQ23_SCALES: tuple[tuple[int, int], ...] = ((224, 5), (672, 3), (1344, 1))

#: Parameter counts measured with ``pretrained=False``, one attribute (asserted by ``tests/test_hyperiqa.py``).
DOCUMENTED_PARAMS: dict[str, int] = {"hyperiqa": 27_375_369}
#: TuningIQA's table gives HyperIQA 27.38 M parameters.
PAPER_PARAMS_M: float = 27.38


# -- patch protocol ---------------------------------------------------------------------------------------------
def patch_rate(height: int, width: int, reference_side: int | None) -> float:
    """Scale from full-resolution patch sizes to this image: ``min(1, short side / reference_side)`` (1 if unset)."""
    if reference_side is None:
        return 1.0
    return min(1.0, min(height, width) / float(reference_side))


def patch_protocol(height: int, width: int, scales: Sequence[Sequence[int]] = PIQ23_SCALES,
                   reference_side: int | None = 1344, min_patch: int = 16) -> list[tuple[int, int]]:
    """The multi-scale patch protocol (seed 001 Sec. IV-B) for an image of ``height x width`` pixels.

    Each ``(size, n)`` in ``scales`` becomes ``(round(size * rate), n)`` with ``rate`` from :func:`patch_rate`,
    clipped to ``[min_patch, short side]``: a 448 px cache with the PIQ23 scales and ``reference_side=1344``
    gives 75 x 5, 224 x 3 and 448 x 1 (each patch covers the same share of the scene as at 1344 px).
    """
    if not scales:
        raise ValueError("patch_protocol needs at least one (size, n) scale")
    rate = patch_rate(height, width, reference_side)
    short = min(height, width)
    out = []
    for size, n in scales:
        if size <= 0 or n <= 0:
            raise ValueError(f"invalid patch scale ({size}, {n}): size and count must be positive")
        side = max(min_patch, int(round(size * rate)))
        out.append((min(side, short), int(n)))
    return out


def random_patch_offsets(batch: int, n: int, height: int, width: int, size: int,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Top-left corners ``long[batch, n, 2]`` (y, x) of ``n`` uniformly random ``size`` squares per image."""
    ys = torch.randint(0, height - size + 1, (batch, n), generator=generator)
    xs = torch.randint(0, width - size + 1, (batch, n), generator=generator)
    return torch.stack([ys, xs], dim=-1)


def crop_patches(image: torch.Tensor, size: int, offsets: torch.Tensor) -> torch.Tensor:
    """Cut ``size`` squares at ``offsets`` (long[B, n, 2], y/x) from ``image`` [B, C, H, W] -> [B, n, C, s, s]."""
    b, n = offsets.shape[:2]
    rows = []
    for i in range(b):
        rows.append(torch.stack([image[i, :, y:y + size, x:x + size] for y, x in offsets[i].tolist()]))
    return torch.stack(rows).reshape(b, n, image.shape[1], size, size)


def sample_patches(image: torch.Tensor, size: int, n: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random ``size`` patches per image (size clipped to the short side): [B, n, C, s, s]."""
    _, _, h, w = image.shape
    size = min(size, h, w)
    offsets = random_patch_offsets(image.shape[0], n, h, w, size, generator)
    return crop_patches(image, size, offsets)


# -- patch regions (seed 001 Sec. IV-D: Exposure and Details are judged on the face) -----------------------------
#: regions an attribute's patches can be drawn from: the whole image, or the (padded) face box
PATCH_REGIONS: tuple[str, ...] = ("image", "face")
#: PIQ23's rule (seed 001 Sec. IV-D): "for the Overall attribute, we utilize the entire image, in contrast to other
#: attributes where the evaluation is confined solely to the face region"
PIQ23_REGIONS: dict[str, str] = {"details": "face", "exposure": "face"}


def face_windows(face_box: torch.Tensor | None, height: int, width: int, margin: float = 0.1) -> torch.Tensor:
    """Integer pixel windows ``[B, 4]`` (x0, y0, x1, y1) of the face region: the face box (pixels of this image)
    padded by ``margin`` x its width / height on each side, clipped to the image
    (:func:`iqalab.data.regions.face_window_array`, the loader's rule too). Rows without a box (NaN: the
    detector found no face; the refusal of :func:`iqalab.data.regions.check_regions` guards datasets never
    searched) get the whole image."""
    if face_box is None:
        raise ValueError("face regions need the face_box batch key (face boxes in pixels)")
    return torch.from_numpy(face_window_array(face_box.detach().float().cpu().numpy(), height, width, margin))


def sample_region_patches(image: torch.Tensor, windows: torch.Tensor, size: int, n: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random square patches per image inside its window, as ``[B, n, C, s, s]`` with ``s`` = ``size``
    clipped to the image's short side.

    Each patch is a square of side ``min(s, window width, window height)`` at an integer position drawn uniformly
    inside the window (:func:`iqalab.data.regions.region_squares`): a window at least ``s`` wide gives the image's
    own pixels (an exact crop, like :func:`sample_patches`); a smaller face is taken whole (its short side) and
    resized to ``s`` by :func:`torchvision.ops.roi_align` (bilinear, corners aligned: no pixel from outside the
    square), so every patch of the batch has one size.
    """
    from torchvision.ops import roi_align

    b, _, h, w = image.shape
    out = min(int(size), h, w)
    u = torch.rand((b, n, 2), generator=generator, dtype=torch.float64)
    x0, y0, side = (torch.from_numpy(v) for v in region_squares(windows.cpu().numpy(), out, u.numpy()))
    # samples at the first to the last pixel centre of the square (corners aligned, nothing from outside it):
    # with aligned=True roi_align samples at box_x0 - 0.5 + (k + 0.5) * box_w / out, k < out
    s = side[:, None].expand(b, n)
    box = (s - 1) * out / max(out - 1, 1) if out > 1 else s
    shift = 0.5 - 0.5 * box / out
    index = torch.arange(b, dtype=torch.float64)[:, None].expand(b, n)
    rois = torch.stack([index, x0 + shift, y0 + shift, x0 + shift + box, y0 + shift + box], dim=-1)
    rois = rois.reshape(-1, 5).to(image.device, image.dtype)
    # a square of exactly ``out`` pixels samples each pixel centre once: an exact crop
    patches = roi_align(image, rois, output_size=(out, out), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return patches.reshape(b, n, image.shape[1], out, out)


# -- losses -----------------------------------------------------------------------------------------------------
def quality_loss(pred: dict[str, torch.Tensor], target: torch.Tensor, attributes: list[str], kind: str,
                 delta: float) -> torch.Tensor:
    """``kind`` = ``"l1"`` (original HyperIQA) or ``"huber"`` (seed 001 Sec. IV-B), NaN targets masked."""
    if kind == "l1":
        return masked_l1(pred, target, attributes)
    if kind == "huber":
        return masked_huber(pred, target, attributes, delta)
    raise ValueError(f"unknown loss {kind!r}; expected 'l1' or 'huber'")


# -- building blocks --------------------------------------------------------------------------------------------
class LocalDistortionAware(nn.Module):
    """LDA module (Su et al. Sec. 3.2): stage maps -> the target network's input vector.

    Stages 1-3: 1x1 conv (no bias) to ``lda_channels[i]``, adaptive average pool to ``grids[i]`` (8/4/2 = the
    original's 7x7 pooling at 224 px), linear to ``lda_out``. Stage 4: average pool to ``last_grid`` (1: the
    global pool of the original at 224 px; PIQ23's widened network keeps its 7x7 pooling's ``patch_rate`` x
    ``patch_rate`` grid), linear to ``target_in - 3 * lda_out``. Pooled maps are flattened channel-major.
    """

    def __init__(self, in_channels: Sequence[int], target_in: int = 224, lda_out: int = 16,
                 lda_channels: Sequence[int] = (16, 32, 64), grids: Sequence[int] = (8, 4, 2),
                 last_grid: int = 1) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"LDA needs four stage widths, got {list(in_channels)}")
        if target_in <= 3 * lda_out:
            raise ValueError(f"target_in ({target_in}) must exceed 3 * lda_out ({3 * lda_out})")
        self.convs = nn.ModuleList(nn.Conv2d(c, m, 1, bias=False) for c, m in zip(in_channels[:3], lda_channels))
        self.pools = nn.ModuleList(nn.AdaptiveAvgPool2d(g) for g in grids)
        self.fcs = nn.ModuleList(nn.Linear(m * g * g, lda_out) for m, g in zip(lda_channels, grids))
        self.last_grid = int(last_grid)
        self.fc_last = nn.Linear(in_channels[3] * self.last_grid ** 2, target_in - 3 * lda_out)
        for module in [*self.convs, *self.fcs, self.fc_last]:
            nn.init.kaiming_normal_(module.weight)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        parts = [fc(pool(conv(f)).flatten(1)) for f, conv, pool, fc in zip(feats[:3], self.convs, self.pools,
                                                                           self.fcs)]
        last = feats[3].mean(dim=(2, 3)) if self.last_grid == 1 else \
            F.adaptive_avg_pool2d(feats[3], self.last_grid).flatten(1)
        parts.append(self.fc_last(last))
        return torch.cat(parts, dim=1)


class HyperNetwork(nn.Module):
    """Hyper network (Su et al. Sec. 3.3): stage-4 map -> hyper feature ``H`` -> target-network weights.

    Weight generators are 3x3 convs on ``H`` whose output, flattened channel-major, is read as the ``out x in``
    weight matrix (``ceil(out * in / fs^2)`` channels; exactly ``out * in / 49`` in the original sizes); biases and
    the last layer come from linear layers on globally pooled ``H``. The last layer has one generator per
    attribute (``n_outputs``).
    """

    def __init__(self, in_channels: int, hyper_in: int = 112, target_in: int = 224,
                 target_sizes: Sequence[int] = (112, 56, 28, 14), feature_size: int = 7, n_outputs: int = 1) -> None:
        super().__init__()
        self.hyper_in = hyper_in
        self.feature_size = feature_size
        self.sizes = [target_in, *target_sizes]
        # the releases' 2048 -> 1024 -> 512 -> hyper_in (HyperIQA's and PIQ23's ``conv1``): halve twice
        mid1, mid2 = in_channels // 2, in_channels // 4
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(mid1, mid2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(mid2, hyper_in, 1), nn.ReLU(inplace=True),
        )
        self.pool_h = nn.AdaptiveAvgPool2d(feature_size)
        area = feature_size * feature_size
        self.weight_gens = nn.ModuleList(
            nn.Conv2d(hyper_in, math.ceil(o * i / area), 3, padding=1) for i, o in zip(self.sizes[:-1], self.sizes[1:])
        )
        self.bias_gens = nn.ModuleList(nn.Linear(hyper_in, o) for o in self.sizes[1:])
        self.last_weight_gens = nn.ModuleList(nn.Linear(hyper_in, self.sizes[-1]) for _ in range(n_outputs))
        self.last_bias_gens = nn.ModuleList(nn.Linear(hyper_in, 1) for _ in range(n_outputs))
        for module in [*self.weight_gens, *self.bias_gens, *self.last_weight_gens, *self.last_bias_gens]:
            nn.init.kaiming_normal_(module.weight)

    def hyper_feature(self, stage4: torch.Tensor) -> torch.Tensor:
        """``H`` [N, hyper_in, fs, fs] (adaptive pooling makes it size-independent; identity at 224 px)."""
        return self.pool_h(self.reduce(stage4))

    def forward(self, hyper: torch.Tensor) -> dict[str, Any]:
        """Generated target-network parameters: ``weights`` (list of [N, out, in]), ``biases`` (list of [N, out]),
        ``last_weights`` [N, A, fc4] and ``last_biases`` [N, A]."""
        n = hyper.shape[0]
        pooled = hyper.mean(dim=(2, 3))
        weights, biases = [], []
        for gen, bgen, i, o in zip(self.weight_gens, self.bias_gens, self.sizes[:-1], self.sizes[1:]):
            weights.append(gen(hyper).flatten(1)[:, : o * i].reshape(n, o, i))
            biases.append(bgen(pooled))
        last_w = torch.stack([g(pooled) for g in self.last_weight_gens], dim=1)
        last_b = torch.cat([g(pooled) for g in self.last_bias_gens], dim=1)
        return {"weights": weights, "biases": biases, "last_weights": last_w, "last_biases": last_b}


def target_network(x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Apply the generated target network to ``x`` [N, target_in]: FC + sigmoid per hidden layer, then one linear
    output per attribute -> [N, A] (Su et al. Sec. 3.4)."""
    h = x
    for w, b in zip(params["weights"], params["biases"]):
        h = torch.sigmoid(torch.baddbmm(b.unsqueeze(-1), w, h.unsqueeze(-1)).squeeze(-1))
    return torch.baddbmm(params["last_biases"].unsqueeze(-1), params["last_weights"], h.unsqueeze(-1)).squeeze(-1)


#: initialisations of the scene classifier and rescaler (:class:`SemHyperIQA` ``head_init``)
HeadInit = Literal["identity", "release"]
HEAD_INITS: tuple[str, ...] = typing.get_args(HeadInit)


def release_head_init(module: nn.Module) -> None:
    """PIQ23's initialisation of its scene classifier and rescaler on ``module`` (release
    ``src/models/archs/sem_hyperiqa_util.py``, ``weights_init_xavier`` as ``SceneClassNet`` and ``RescaleNet``
    apply it): every ``nn.Linear`` gets Kaiming-normal weights (``nn.init.kaiming_normal_``'s defaults, as the
    release calls it: fan-in, gain sqrt(2), std ``sqrt(2 / fan_in)``) and zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)


def mlp(in_features: int, hidden: int, out_features: int, hidden_layers: int) -> nn.Sequential:
    """``hidden_layers`` Linear + ReLU blocks of width ``hidden``, then a linear output (0 = a single Linear)."""
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


# -- models -----------------------------------------------------------------------------------------------------
@register("hyperiqa")
class HyperIQA(IQAModel):
    """HyperIQA (Su et al., CVPR 2020): content-adaptive target network generated per patch by a hyper network."""

    inputs = frozenset({"image"})
    paper = ("S. Su, Q. Yan, Y. Zhu, C. Zhang, X. Ge, J. Sun, Y. Zhang, 'Blindly Assess Image Quality in the Wild "
             "Guided by a Self-Adaptive Hyper Network', CVPR 2020")
    smoke_params: ClassVar[dict[str, Any]] = {
        "backbone": "resnet10t", "patch_size": 32, "n_patches": 2, "test_rounds": 1, "hyper_in": 16,
        "target_in": 32, "lda_out": 4, "target_sizes": [16, 8, 8, 4], "feature_size": 2,
    }
    smoke_image_size: ClassVar[int] = 64
    #: per-patch loss (each patch labelled with its image's score, as the original) vs image-level loss
    patch_level_loss: ClassVar[bool] = True

    def __init__(self, attributes: list[str], backbone: str = "resnet50", pretrained: bool | str | Path = False,
                 patch_size: int = 224, n_patches: int = 5, test_rounds: int = 5, reference_side: int | None = None,
                 hyper_in: int = 112, target_in: int = 224, lda_out: int = 16,
                 target_sizes: Sequence[int] = (112, 56, 28, 14), feature_size: int = 7,
                 loss: str = "l1", huber_delta: float = 0.1, backbone_lr_scale: float = 0.1,
                 eval_seed: int = 0, regions: dict[str, str] | str | None = None, face_margin: float = 0.1,
                 allow_missing_regions: bool = False, scales: Sequence[Sequence[int]] | None = None,
                 mos_span: float | None = None, loss_units: str = "mos", patch_rate: int | None = None) -> None:
        super().__init__(attributes)
        self.regions = self._check_regions(regions)
        self.face_margin = float(face_margin)
        self.allow_missing_regions = allow_missing_regions
        if "face" in self.regions.values():  # the loaders then provide face boxes (pixels of the image batch)
            self.inputs = self.inputs | {"face_box"}
        if loss not in ("l1", "huber"):
            raise ValueError(f"loss must be 'l1' or 'huber', got {loss!r}")
        if n_patches < 1 or test_rounds < 1:
            raise ValueError("n_patches and test_rounds must be >= 1")
        # the patch protocol: (side in full-resolution pixels, patches) per scale; one scale by default
        self.scales = [(int(patch_size), int(n_patches))] if scales is None else [(int(a), int(b)) for a, b in scales]
        if not self.scales or any(side < 1 or n < 1 for side, n in self.scales):
            raise ValueError(f"scales must be positive (side, n) pairs, got {scales}")
        self.patch_size = self.scales[0][0]
        self.n_patches = sum(n for _, n in self.scales)  # per round, every scale: the scene classifier's input
        self.test_rounds = int(test_rounds)
        self.reference_side = reference_side
        self.loss = loss
        self.huber_delta = float(huber_delta)
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.eval_seed = int(eval_seed)
        if loss_units not in ("mos", "normalised"):
            raise ValueError(f"loss_units must be 'mos' or 'normalised', got {loss_units!r}")
        if mos_span is not None and not float(mos_span) > 0:
            raise ValueError(f"mos_span must be positive, got {mos_span}")
        self.mos_span = None if mos_span is None else float(mos_span)
        self.loss_units = loss_units
        self.patch_rate = None if patch_rate is None else int(patch_rate)
        grids, last_grid = (8, 4, 2), 1
        if self.patch_rate is not None:  # PIQ23's widened network (seed 001 Table I's 1344 px rows)
            if self.patch_rate < 1:
                raise ValueError(f"patch_rate must be a positive integer, got {patch_rate}")
            r = self.patch_rate
            hyper_in, target_in, feature_size = 112 * r, 224 * r, 7 * r
            target_sizes = (112 * r, 56 * r, 28 * r, 14 * r)
            grids, last_grid = (8 * r, 4 * r, 2 * r), r
        self.backbone = create_backbone(backbone, pretrained=pretrained, features_only=True)
        channels = list(self.backbone.feature_info.channels())[-4:]
        self.lda = LocalDistortionAware(channels, target_in=target_in, lda_out=lda_out, grids=grids,
                                        last_grid=last_grid)
        self.hyper = HyperNetwork(channels[-1], hyper_in=hyper_in, target_in=target_in,
                                  target_sizes=target_sizes, feature_size=feature_size,
                                  n_outputs=len(self.attributes))

    @classmethod
    def dataset_kwargs(cls, dataset: Dataset, train_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """``mos_span``: the width of the dataset's MOS range, so the quality loss is computed in MOS units
        (:attr:`loss_scale`)."""
        lo, hi = dataset.mos_range
        return {"mos_span": float(hi) - float(lo)}

    @property
    def loss_scale(self) -> float:
        """Factor that turns the quality loss on the normalised [0, 1] scale into the loss in MOS units
        (``loss_units="mos"``, the originals' units: HyperIQA's released code regresses the MOS itself, PIQ23's
        SEM-HyperIQA and FHIQA the JOD scores). L1 is homogeneous of degree 1, so the factor is ``mos_span``;
        Huber with ``delta`` on the normalised scale is ``mos_span ** 2`` times Huber with ``delta * mos_span`` in
        MOS units. It matters where the quality loss is weighed against another term: seed 001 Sec. IV-B's
        ``1.0 x Huber + 0.5 x CE`` of the scene models, whose quality term is about ``mos_span ** 2`` (400 on a
        20-JOD range) times smaller on the normalised scale, leaving the cross-entropy to drive the shared
        backbone (``loss_units="normalised"``, iqalab before 2026-12-04). 1 without ``mos_span`` (a model built
        outside training) or with ``loss_units="normalised"``."""
        if self.loss_units == "normalised" or self.mos_span is None:
            return 1.0
        return self.mos_span if self.loss == "l1" else self.mos_span ** 2

    def _check_regions(self, regions: dict[str, str] | str | None) -> dict[str, str]:
        """Every attribute's patch region (``"image"`` unless ``regions`` names it; :data:`PATCH_REGIONS`);
        ``"piq23"`` is PIQ23's rule (:data:`PIQ23_REGIONS`, seed 001 Sec. IV-D) for the attributes present."""
        if regions == "piq23":
            regions = {a: r for a, r in PIQ23_REGIONS.items() if a in self.attributes}
        elif isinstance(regions, str):
            raise ValueError(f"regions {regions!r}: 'piq23', a mapping attribute -> 'image' / 'face', or null")
        regions = dict(regions or {})
        unknown = sorted(set(regions) - set(self.attributes))
        bad = sorted({r for r in regions.values() if r not in PATCH_REGIONS})
        if unknown or bad:
            raise ValueError(f"regions {regions}: keys must be attributes {self.attributes} and values one of "
                             f"{list(PATCH_REGIONS)}")
        return {a: regions.get(a, "image") for a in self.attributes}

    @property
    def region_kinds(self) -> tuple[str, ...]:
        """The regions patches are drawn from, in :data:`PATCH_REGIONS` order."""
        return tuple(r for r in PATCH_REGIONS if r in self.regions.values())

    # -- patch level ------------------------------------------------------------------------------------------
    def patch_scales(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(side, n)`` per scale in this image's pixels (:func:`patch_protocol`: each side scaled by the patch
        rate, clipped to the image)."""
        return patch_protocol(height, width, self.scales, self.reference_side)

    def patch_side(self, height: int, width: int) -> int:
        """The first scale's patch side in this image's pixels (:meth:`patch_scales`)."""
        return self.patch_scales(height, width)[0][0]

    def patch_plan(self) -> list[tuple[int, int]]:
        """``(side, n)`` per scale in stored pixels, for a loader that cuts the patches itself
        (:class:`iqalab.data.loaders.PatchItems` over the native store, ``train.resolution: native``)."""
        return list(self.scales)

    def patch_loader_options(self) -> dict[str, Any]:
        """What :class:`iqalab.data.loaders.PatchItems` needs to cut this model's patches from the native store
        (``train.resolution: native``): the scales, the face-region scales (the same, when an attribute is
        judged on the face; seed 001 Sec. IV-D) and margin, and the evaluation rounds and seed."""
        face = "face" in self.regions.values()
        return {"scales": self.patch_plan(), "face_scales": self.patch_plan() if face else None,
                "face_margin": self.face_margin, "rounds": self.test_rounds, "eval_seed": self.eval_seed}

    def patch_sets(self, source: torch.Tensor | Sequence[torch.Tensor],
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The patch entry: one round's patches as a list of ``[B, n_k, 3, s_k, s_k]``, one per scale.

        A ``[B, 3, H, W]`` image batch (the square cache) is sampled here: ``n`` random squares of each scale's
        side (:meth:`patch_scales`). Pre-cut patches (a ``[B, n, 3, s, s]`` tensor, or a list of them, one per
        scale: the ``patches`` key of :class:`iqalab.data.loaders.PatchItems`; the ``"image"`` entry of a mapping
        that also holds face patches) pass through as they are.
        """
        if isinstance(source, dict):
            source = source["image"]
        if isinstance(source, torch.Tensor) and source.dim() == 4:
            return [sample_patches(source, side, n, generator)
                    for side, n in self.patch_scales(source.shape[-2], source.shape[-1])]
        return [source] if isinstance(source, torch.Tensor) else list(source)

    def patch_outputs_multi(self, sets: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`patch_outputs` of every scale, concatenated along the patch axis (``q`` [B, sum n_k, A])."""
        outs = [self.patch_outputs(p) for p in sets]
        return {key: torch.cat([o[key] for o in outs], dim=1) for key in ("q", "hyper")}

    def face_patch_sets(self, source: torch.Tensor | Sequence[torch.Tensor], face_box: torch.Tensor | None,
                        generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One round's face-region patches (seed 001 Sec. IV-D): ``n`` squares of each scale's side drawn inside
        the face box padded by ``face_margin`` (:func:`sample_region_patches`; the whole image where no face was
        found). Pre-cut (``train.resolution: native``): the ``"face"`` entry the loader cut by the same rule
        (:class:`iqalab.data.loaders.PatchItems` with ``face_scales``)."""
        if isinstance(source, dict) and source.get("face") is not None:
            face = source["face"]
            return [face] if isinstance(face, torch.Tensor) else list(face)
        if not (isinstance(source, torch.Tensor) and source.dim() == 4):
            raise ValueError("face-region patches: pre-cut patches (train.resolution: native) without face_patches; "
                             "build the loader with the model's patch_loader_options()")
        h, w = source.shape[-2:]
        windows = face_windows(face_box, h, w, self.face_margin)
        return [sample_region_patches(source, windows, side, n, generator) for side, n in self.patch_scales(h, w)]

    def region_patch_outputs(self, source: torch.Tensor | Sequence[torch.Tensor], face_box: torch.Tensor | None = None,
                             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Patch scores ``q`` [B, n, A], each attribute's column from the patches of its region (``regions``),
        and ``hyper`` of the whole-image patches (of the face patches when no attribute reads the whole image):
        the scene classifier's input. Without face regions this is :meth:`patch_outputs_multi` of
        :meth:`patch_sets`."""
        if self.region_kinds == ("image",):
            return self.patch_outputs_multi(self.patch_sets(source, generator))
        outs = {region: self.patch_outputs_multi(self.patch_sets(source, generator) if region == "image"
                                                 else self.face_patch_sets(source, face_box, generator))
                for region in self.region_kinds}
        q = torch.stack([outs[self.regions[a]]["q"][..., k] for k, a in enumerate(self.attributes)], dim=-1)
        return {"q": q, "hyper": outs[self.region_kinds[0]]["hyper"]}

    @staticmethod
    def pixels_of(batch: dict[str, Any]) -> Any:
        """The batch's pixels: pre-cut ``patches`` when the loader cut them (with its ``face_patches``: a mapping
        ``{"image": patches, "face": face patches}``), else the ``image`` batch."""
        if "patches" not in batch:
            return batch["image"]
        if batch.get("face_patches") is not None:
            return {"image": batch["patches"], "face": batch["face_patches"]}
        return batch["patches"]

    @classmethod
    def round_of(cls, source: Any, rounds: int, r: int) -> Any:
        """Round ``r`` of ``rounds``: an image batch as it is (sampled per round), pre-cut patches sliced (the
        loader cut ``rounds * n`` per scale)."""
        if isinstance(source, dict):
            return {key: cls.round_of(value, rounds, r) for key, value in source.items()}
        if isinstance(source, torch.Tensor) and source.dim() == 4:
            return source
        sets = [source] if isinstance(source, torch.Tensor) else list(source)
        return [p[:, r * (p.shape[1] // rounds):(r + 1) * (p.shape[1] // rounds)] for p in sets]

    def encode(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches [N, 3, s, s] -> (target input vector [N, target_in], hyper feature ``H`` [N, 112, 7, 7])."""
        feats = self.backbone(patches)[-4:]
        return self.lda(feats), self.hyper.hyper_feature(feats[-1])

    def generated_params(self, patches: torch.Tensor) -> dict[str, Any]:
        """The target network's parameters the hyper network writes for each patch (for inspection and tests)."""
        _, hyper = self.encode(patches)
        return self.hyper(hyper)

    def patch_outputs(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """Patches [B, n, 3, s, s] -> ``q`` [B, n, A] patch scores and ``hyper`` [B, n, 112, fs, fs]."""
        b, n = patches.shape[:2]
        vec, hyper = self.encode(patches.flatten(0, 1))
        q = target_network(vec, self.hyper(hyper)) + 0.5
        return {"q": q.reshape(b, n, -1), "hyper": hyper.reshape(b, n, *hyper.shape[1:])}

    # -- image level ------------------------------------------------------------------------------------------
    def image_outputs(self, image: torch.Tensor | Sequence[torch.Tensor],
                      generator: torch.Generator | None = None,
                      face_box: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One round of ``n_patches`` random patches (or the pre-cut ones, :meth:`patch_sets`): ``q_patches``
        [B, n, A] and the image score ``quality`` [B, A] (mean over patches)."""
        out = self.region_patch_outputs(image, face_box, generator)
        return {"q_patches": out["q"], "quality": out["q"].mean(dim=1)}

    def _as_dict(self, quality: torch.Tensor) -> dict[str, torch.Tensor]:
        return {attr: quality[:, k] for k, attr in enumerate(self.attributes)}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One round of random patches (training); image score = mean over the patches."""
        out = self.image_outputs(self.pixels_of(batch), face_box=batch.get("face_box"))
        return self._as_dict(out["quality"])

    @torch.no_grad()
    def predict_details(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Every image-level output averaged over ``test_rounds`` seeded rounds of ``n_patches`` patches."""
        source = self.pixels_of(batch)
        generator = torch.Generator().manual_seed(self.eval_seed)
        totals: dict[str, torch.Tensor] = {}
        for r in range(self.test_rounds):
            out = self.image_outputs(self.round_of(source, self.test_rounds, r), generator, batch.get("face_box"))
            for key, value in out.items():
                if key != "q_patches":
                    totals[key] = totals.get(key, 0) + value
        return {k: v / self.test_rounds for k, v in totals.items()}

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Mean score over ``test_rounds * n_patches`` seeded random patches (original: 25 test patches)."""
        return self._as_dict(self.predict_details(batch)["quality"])

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """L1 (original) or Huber on the patch scores, each patch labelled with its image's MOS, in MOS units
        (:attr:`loss_scale`)."""
        out = self.image_outputs(self.pixels_of(batch), face_box=batch.get("face_box"))
        target = batch["mos_norm"]
        if self.patch_level_loss:
            q = out["q_patches"]
            pred = self._as_dict(q.flatten(0, 1))
            target = target.repeat_interleave(q.shape[1], dim=0)
        else:
            pred = self._as_dict(out["quality"])
        return self.loss_scale * quality_loss(pred, target, self.attributes, self.loss, self.huber_delta)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Backbone and LDA module at ``lr * backbone_lr_scale``; hyper network (and the heads of subclasses) at
        ``lr``. As the original (``HyerIQASolver.py``): its LDA layers belong to the ResNet module ``res``, which
        trains at ``lr``, the rest at ``lr * lr_ratio`` (until 2026-12-04 the LDA module trained at ``lr`` here)."""
        backbone = [*self.backbone.parameters(), *self.lda.parameters()]
        ids = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if id(p) not in ids and p.requires_grad]
        return [{"params": [p for p in backbone if p.requires_grad], "lr": lr * self.backbone_lr_scale},
                {"params": rest, "lr": lr}]


@register("sem_hyperiqa")
class SemHyperIQA(HyperIQA):
    """SEM-HyperIQA (PIQ23, CVPR 2023; seed 001 Sec. II-a): HyperIQA + scene classifier on the concatenated
    semantic features of the patches + rescaler MLP (scene vector -> a, b per attribute)."""

    inputs = frozenset({"image", "scene_idx"})
    paper = ("N. Chahine, S. Calarasanu, D. Garcia-Civiero, T. Cayla, S. Ferradans, J. Ponce, 'An Image Quality "
             "Assessment Dataset for Portraits', CVPR 2023 (SEM-HyperIQA); as compared in N. Chahine et al., "
             "'Generalized Portrait Quality Assessment' (seed 001)")
    smoke_params: ClassVar[dict[str, Any]] = {
        **HyperIQA.smoke_params, "n_scenes": 3, "scene_pool_width": 1, "classifier_hidden": 16,
        "rescaler_hidden": 8,
    }
    patch_level_loss = False
    #: whether the image score goes through the rescaler (False: SEM-HyperIQA-CO)
    rescale: ClassVar[bool] = True

    def __init__(self, attributes: list[str], n_scenes: int | None = None, backbone: str = "resnet50",
                 pretrained: bool | str | Path = False, patch_size: int = 224, n_patches: int = 5,
                 test_rounds: int = 5, reference_side: int | None = None, hyper_in: int = 112,
                 target_in: int = 224, lda_out: int = 16, target_sizes: Sequence[int] = (112, 56, 28, 14),
                 feature_size: int = 7, loss: str = "huber", huber_delta: float = 0.1,
                 backbone_lr_scale: float = 0.1, eval_seed: int = 0, scene_pool_width: int | None = None,
                 classifier_layers: int = 3, classifier_hidden: int = 500, rescaler_layers: int = 3,
                 rescaler_hidden: int = 100, ce_weight: float = 0.5, regions: dict[str, str] | str | None = None,
                 face_margin: float = 0.1, allow_missing_regions: bool = False,
                 scenes: Sequence[str] | None = None, dataset_scenes: Sequence[str] | None = None,
                 scales: Sequence[Sequence[int]] | None = None, mos_span: float | None = None,
                 loss_units: str = "mos", patch_rate: int | None = None, head_init: HeadInit = "identity") -> None:
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {', '.join(HEAD_INITS)}, got {head_init!r}")
        super().__init__(attributes, backbone=backbone, pretrained=pretrained, patch_size=patch_size,
                         n_patches=n_patches, test_rounds=test_rounds, reference_side=reference_side,
                         hyper_in=hyper_in, target_in=target_in, lda_out=lda_out, target_sizes=target_sizes,
                         feature_size=feature_size, loss=loss, huber_delta=huber_delta,
                         backbone_lr_scale=backbone_lr_scale, eval_seed=eval_seed, regions=regions,
                         face_margin=face_margin, allow_missing_regions=allow_missing_regions, scales=scales,
                         mos_span=mos_span, loss_units=loss_units, patch_rate=patch_rate)
        self.scenes = None if scenes is None else [str(s) for s in scenes]
        if self.scenes is not None:
            if len(set(self.scenes)) != len(self.scenes):
                raise ValueError(f"scenes must be distinct, got {self.scenes}")
            if n_scenes is not None and int(n_scenes) != len(self.scenes):
                raise ValueError(f"n_scenes={n_scenes} but {len(self.scenes)} scenes are named: set one of them")
            n_scenes = len(self.scenes)
        n_scenes = 2 if n_scenes is None else int(n_scenes)
        if n_scenes < 1:
            raise ValueError("n_scenes must be >= 1")
        self.n_scenes = n_scenes
        self.dataset_scenes = None if dataset_scenes is None else [str(s) for s in dataset_scenes]
        # scene_idx (an index into dataset_scenes) -> class index, -1 for a scene outside the classes
        target = None
        if self.dataset_scenes is not None:
            if self.scenes is None:
                raise ValueError("dataset_scenes maps scene_idx to the classes named by scenes: give scenes too")
            column = {s: k for k, s in enumerate(self.scenes)}
            target = torch.tensor([column.get(s, -1) for s in self.dataset_scenes], dtype=torch.long)
        self.register_buffer("scene_targets", target, persistent=False)
        self.ce_weight = float(ce_weight)
        self.scene_pool_width = int(scene_pool_width or self.n_scenes)
        self.scene_pool = nn.AdaptiveAvgPool2d((1, self.scene_pool_width))
        sem_features = self.n_patches * self.hyper.hyper_in * self.scene_pool_width
        self.head_init = head_init
        # official SceneClassNet: numLayers=3 linear layers (two hidden of 500)
        self.classifier = mlp(sem_features, classifier_hidden, self.n_scenes, max(0, classifier_layers - 1))
        if head_init == "release":
            release_head_init(self.classifier)
        if self.rescale:
            self.rescaler = mlp(self.n_scenes, rescaler_hidden, 2 * len(self.attributes), rescaler_layers)
            if head_init == "release":
                release_head_init(self.rescaler)
            else:
                self._init_identity_rescale()

    @classmethod
    def dataset_kwargs(cls, dataset: Dataset, train_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """The scene space (seed 001 Sec. II-b, III): ``scenes``, the sorted scenes of the training images
        ``train_ids`` (every scene of ``dataset`` without them), and ``dataset_scenes``, the list ``scene_idx``
        indexes (the dataset's sorted scenes)."""
        table = dataset.images
        if train_ids is not None:
            table = table.set_index("image_id").loc[list(train_ids)]
        return {**super().dataset_kwargs(dataset, train_ids), "scenes": sorted(table["scene"].astype(str).unique()),
                "dataset_scenes": list(dataset.scenes)}

    def scene_classes(self, scene_idx: torch.Tensor) -> torch.Tensor:
        """Batch ``scene_idx`` (indices into ``dataset_scenes``) -> class indices of the classifier, -1 for an
        image of a scene outside :attr:`scenes` (and for negative indices)."""
        scene = scene_idx.long()
        if self.scene_targets is None:
            return scene
        table = self.scene_targets.to(scene.device)
        return torch.where(scene >= 0, table[scene.clamp(min=0)], torch.full_like(scene, -1))

    def _init_identity_rescale(self) -> None:
        """``head_init="identity"``: the rescaler's last layer gives a = 1, b = 0 up to weights of std 1e-3."""
        last = self.rescaler[-1]
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            a_count = len(self.attributes)
            last.bias.copy_(torch.cat([torch.ones(a_count), torch.zeros(a_count)]))

    def scene_logits(self, hyper: torch.Tensor) -> torch.Tensor:
        """``H`` of the patches [B, n, C, fs, fs] -> scene logits [B, n_scenes] (features concatenated)."""
        b, n = hyper.shape[:2]
        pooled = self.scene_pool(hyper.flatten(0, 1)).reshape(b, n * hyper.shape[2] * self.scene_pool_width)
        return self.classifier(pooled)

    def rescale_params(self, scene_vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rescaler: scene vector [..., n_scenes] -> (a, b), each [..., A]."""
        out = self.rescaler(scene_vector)
        a_count = len(self.attributes)
        return out[..., :a_count], out[..., a_count:]

    def fuse(self, pre_quality: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """SEM-HyperIQA: ``a(P) * Q_p + b(P)`` with ``P`` the softmax scene vector (seed 001 Sec. II-a)."""
        if not self.rescale:
            return pre_quality
        a, b = self.rescale_params(logits.softmax(dim=-1))
        return a * pre_quality + b

    def image_outputs(self, image: torch.Tensor | Sequence[torch.Tensor],
                      generator: torch.Generator | None = None,
                      face_box: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One round: ``q_patches`` [B, n, A], ``pre_quality`` [B, A] (mean patch score), ``scene_probs``
        [B, S] and the final ``quality`` [B, A]; ``logits`` for the loss."""
        out = self.region_patch_outputs(image, face_box, generator)
        pre = out["q"].mean(dim=1)
        logits = self.scene_logits(out["hyper"])
        return {"q_patches": out["q"], "pre_quality": pre, "logits": logits, "scene_probs": logits.softmax(-1),
                "quality": self.fuse(pre, logits)}

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """``Huber(quality) + ce_weight * CE(scene)`` (seed 001 Sec. IV-B: weights 1.0 and 0.5)."""
        out = self.image_outputs(self.pixels_of(batch), face_box=batch.get("face_box"))
        q_loss = self.loss_scale * quality_loss(self._as_dict(out["quality"]), batch["mos_norm"], self.attributes,
                                                self.loss, self.huber_delta)
        raw = batch["scene_idx"].to(out["logits"].device).long()
        bound = self.n_scenes if self.scene_targets is None else len(self.scene_targets)
        if int(raw.max()) >= bound:
            raise ValueError(f"scene_idx {int(raw.max())} >= {bound}: the model's scenes ({self.n_scenes} classes) "
                             f"do not cover the dataset's scene list (set scenes/dataset_scenes or n_scenes)")
        scene = self.scene_classes(raw)
        if (scene >= 0).any():
            ce = F.cross_entropy(out["logits"], scene, ignore_index=-1)
        else:
            ce = out["logits"].sum() * 0.0
        return q_loss + self.ce_weight * ce


@register("sem_hyperiqa_co")
class SemHyperIQACO(SemHyperIQA):
    """SEM-HyperIQA-CO (seed 001 Table I), read as *classification only*: the multitask model (scene classifier
    trained with 0.5 CE) whose quality score is not rescaled."""

    rescale = False
    paper = SemHyperIQA.paper + "; -CO variant of Table I read as classification only"
