"""REQA: B. Li and F. Huo, "REQA: Coarse-to-fine Assessment of Image Quality to Alleviate the Range Effect",
preprint (2022; seed paper 002). Original code: https://github.com/huofushuo/REQA (not consulted; built from the paper).

Architecture (Sec. III-A/B, Fig. 3): a ResNet-50 gives multi-scale features fm1..fm3 (conv2_x, conv3_x, conv4_x)
and fm4 (conv5_x). Each fm_d feeds a ConvLSTM feedback block (Eqs. 1-2) iterated over time steps t = 1..T; its
hidden state is pooled and mapped to v_{d,t} in R^32. A transformer encoder over conv5 tokens with a learnable
quality token (Eqs. 3-7) gives v_m. MLP-III maps v_m (+) v_{1,t} (+) v_{2,t} (+) v_{3,t} to the prediction F_t
(Eq. 8); the prediction used at test time is F_T.

Losses (Sec. III-C): the coarse loss (Eqs. 9-12, rank + gradient over all pairs of a micro-batch of 5 images from
5 quality scales) supervises F_1; the fine loss (Eq. 13, multilevel tolerance max(0, |s - F_t| - l_t)) supervises
F_2..F_T; curriculum weights over four training stages (Eq. 14, Sec. IV-A.3) combine them. Losses are computed on
the paper's 0-100 scale (``score_scale * mos_norm``) and divided by ``score_scale`` so that their size matches
the other models' [0, 1]-scale losses.

Choices where the paper is silent or the text is garbled (each is a constructor argument):

- Feedback blocks (Fig. 4 is not in the text): each fm_d passes a conv block "according to d" - a 1x1 conv to
  ``lstm_channels`` then stride-2 3x3 convs until it reaches ``lstm_stride`` (16: two for fm1, one for fm2, none
  for fm3) - before the ConvLSTM, whose gates use 3x3 convs. The input contribution W_x * fm_d is computed once,
  as fm_d does not change over time. h_0 = c_0 = 0. The block output fo_{d,t} of Eq. 1 is the hidden state
  fh_{d,t} (Eq. 2 reuses the name fo for the output gate); it is average-pooled and mapped by a linear layer +
  GELU to v_{d,t} (32-d). The blocks' weights are shared over time, so T does not change the parameter count.
- Transformer encoder: P = ``patch_size`` (1: every conv5 position is a token), D = 224 (paper), ``heads``
  heads and ``depth`` pre-norm encoder layers (D_h, the depth and the MLP width are not given: 4 heads, 1 layer,
  MLP ratio 4). MLP-I is read as the encoder layer's feed-forward block and MLP-II as a linear layer + GELU
  mapping the quality token to v_m (32-d, like v_{d,t}). The position embedding is learnt on a ``pos_grid`` x
  ``pos_grid`` grid (7 = 224 / 32) and interpolated bilinearly for other input sizes.
- MLP-III: Linear(4 * 32, ``hidden``) - GELU - Linear(``hidden``, A) and a sigmoid (predictions in [0, 1]).
- Rank term (Eq. 9): max(0, -(s_i - s_j)(F_i - F_j) / (|s_i - s_j| + sigma)) * (|s_i - s_j| + 1), sigma =
  1e-4. The conversion prints the factor as "(||s_i - s_i||_1 + 1)"; we read s_i - s_j. Eq. 10 (the "reduced"
  form, |s_i - s_j| |F_i - F_j|) drops the +1; Eq. 9 is taken as the definition (``rank_offset`` = 1).
- Coarse loss: sum over the 10 pairs of a micro-batch (Eq. 12), mean over micro-batches and attributes.
- Scale of the coarse loss (``coarse_scale``): the tolerances l = 5, 2.5, 0 put the fine loss on 0-100; the paper
  does not say on which scale s enters Eqs. 9-11. The rank and gradient terms are linear in the scale but Eq. 9's
  factor ``|s_i - s_j| + 1`` is not: on 0-100 a wrongly ordered pair costs ``(|s_i - s_j| + 1) |F_i - F_j|``
  while the gradient term pays back 1 per unit of spread, so drawing the two predictions together lowers the
  loss unless more than ``1 - 1 / (|s_i - s_j| + 1)`` of such pairs are ordered right (96 % at a distance of 25).
  A model that does not yet order 96 % of its pairs is pushed to a constant: the default run's REQA (ResNet-18
  from scratch) predicted ugc_sim's test images between 51.4 and 53.4 (MOS SD 24; SRCC 0.63).
  That contradicts the gradient term's stated purpose (keep the predicted distances consistent with the MOS
  distances), so s and F are read on [0, 1] in Eqs. 9-11 (``coarse_scale`` = 1: the factor is 1-2) and the term
  is expressed in ``score_scale`` units (x 100, linear parts unchanged) to keep the paper's weighting against
  the fine terms. ``coarse_scale=100`` is the 0-100 reading (iqalab before 2026-12-04).
- Curriculum (Sec. IV-A.3): four equal stages of training (epochs 0-9, 10-19, 20-29, 30-39 of 40). The printed
  weights do not all sum to 1 as Eq. 14 requires (stage 1: 0.25, 0.5, 0.25/3, 0.25/3; stage 4: 0.25, 0.25, 0.25,
  0.5); stages 2 and 3 list no w_1, read as 0. Each stage's printed weights are used as given and normalised to
  sum 1 (:data:`PAPER_STAGE_WEIGHTS`; ``normalise_stage_weights=False`` uses them as printed). For T != 4 the
  fine weights of each stage are resampled linearly onto T - 1 steps, keeping the stage's coarse weight and total
  fine weight (:func:`curriculum_weights`).
- Tolerances (Eq. 13): l = 5, 2.5, 0 on the 0-100 scale for T = 4; for other T they are spaced evenly from 5 down
  to 0 over the T - 1 fine steps (T = 3: 5, 0; T = 5: 5, 3.33, 1.67, 0) unless ``tolerances`` is given.
- Ablations (Tables V-VI): ``use_feedback=False`` removes the feedback blocks (MLP-III sees v_m only, so every
  time step gives the same prediction and all loss terms act on it); ``use_transformer=False`` replaces the
  encoder by global average pooling of conv5 (the plain ResNet-50 path) + MLP-II; ``use_coarse_loss=False`` and
  ``use_fine_loss=False`` replace the respective loss by L1, as the paper does (L1 = tolerance loss with l = 0).
- Test-time input (Sec. IV-A.3 says only that training images are randomly cropped to 224 x 224 "like [7], [32],
  [34], [35]"): the model scores the crops it trains on, never a size it has not seen. :meth:`REQA.predict` takes
  ``test_crops`` crops of side ``test_crop`` (default 224, the paper's D) from the evaluation image and averages
  their F_T: one crop is the centre crop; several are seeded random crops, the test protocol of HyperIQA [34],
  which REQA compares against (25 crops there). An image no larger than ``test_crop`` is scored whole;
  ``test_crop=None`` scores every image whole (iqalab before issue #27).
- Micro-batches: ``training_step`` assumes the batch comes from :meth:`REQA.make_train_sampler`
  (:class:`~iqalab.data.samplers.ScaleMicroBatchSampler`): groups of 5 consecutive images, one per quality scale.
  If the batch size is not a multiple of 5 (another sampler, or the last batch of a loader) the coarse term falls
  back to L1 on F_1; micro-batches containing a missing MOS are skipped for that attribute.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Sampler

from iqalab.data.samplers import ScaleMicroBatchSampler
from iqalab.models.backbones import create_backbone
from iqalab.models.base import IQAModel, StepContext
from iqalab.models.registry import register
from iqalab.train.losses import masked_loss

log = logging.getLogger(__name__)

MICRO_BATCH = 5
#: Sec. IV-A.3 weights (w_1 coarse, w_2..w_4 fine) per training stage, as printed, before normalisation to sum 1
PAPER_STAGE_WEIGHTS: tuple[tuple[float, ...], ...] = (
    (0.25, 0.5, 0.25 / 3, 0.25 / 3),
    (0.0, 0.5, 0.25, 0.25),
    (0.0, 0.25, 0.5, 0.25),
    (0.25, 0.25, 0.25, 0.5),
)
#: Sec. III-C.2 thresholds l_2, l_3, l_4 on the 0-100 scale
PAPER_TOLERANCES: tuple[float, ...] = (5.0, 2.5, 0.0)


# -- losses (pure functions; scores on any common scale) ---------------------------------------------------------
def _pair_index(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.triu_indices(n, n, offset=1, device=device))  # type: ignore[return-value]


def rank_loss(s: torch.Tensor, f: torch.Tensor, sigma: float = 1e-4, offset: float = 1.0) -> torch.Tensor:
    """Eq. 9 for every pair i < j of the last dimension: ``[..., n] -> [..., n(n-1)/2]``.

    ``max(0, -(s_i - s_j)(f_i - f_j) / (|s_i - s_j| + sigma)) * (|s_i - s_j| + offset)``: zero when the
    predicted order agrees with the MOS order, about ``|f_i - f_j| (|s_i - s_j| + offset)`` otherwise.
    """
    i, j = _pair_index(s.shape[-1], s.device)
    ds, df = s[..., i] - s[..., j], f[..., i] - f[..., j]
    return torch.relu(-ds * df / (ds.abs() + sigma)) * (ds.abs() + offset)


def gradient_loss(s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Eq. 11 for every pair i < j: ``| |s_i - s_j| - |f_i - f_j| |`` (``[..., n] -> [..., n(n-1)/2]``)."""
    i, j = _pair_index(s.shape[-1], s.device)
    return ((s[..., i] - s[..., j]).abs() - (f[..., i] - f[..., j]).abs()).abs()


def coarse_loss(s: torch.Tensor, f: torch.Tensor, sigma: float = 1e-4, offset: float = 1.0) -> torch.Tensor:
    """Eq. 12: rank + gradient terms summed over the pairs of each micro-batch ``[M, 5]``, mean over the M."""
    per_micro = (rank_loss(s, f, sigma, offset) + gradient_loss(s, f)).sum(dim=-1)
    return per_micro.mean()


def tolerance_loss(s: torch.Tensor, f: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Eq. 13: mean of ``max(0, |s - f| - l)``: zero inside the band ``|s - f| <= l``, linear outside."""
    return torch.relu((s - f).abs() - tolerance).mean()


def fine_tolerances(steps: int, levels: Sequence[float] | None = None, start: float = 5.0) -> list[float]:
    """Thresholds l_2..l_T (0-100 scale): the paper's (5, 2.5, 0) for T = 4, else evenly spaced ``start`` -> 0."""
    n = steps - 1
    if levels is not None:
        if len(levels) != n:
            raise ValueError(f"tolerances needs {n} values (l_2..l_T for T={steps}), got {len(levels)}")
        return [float(v) for v in levels]
    if n <= 0:
        return []
    if n == len(PAPER_TOLERANCES):
        return list(PAPER_TOLERANCES)
    if n == 1:
        return [0.0]
    return [float(v) for v in np.linspace(start, 0.0, n)]


def curriculum_stage(epoch: int, epochs: int, n_stages: int = 4) -> int:
    """Stage 0..n_stages-1 of ``epoch``: training is cut into equal stages (10 epochs each of the paper's 40)."""
    return min(n_stages - 1, max(0, epoch) * n_stages // max(1, epochs))


def curriculum_weights(epoch: int, epochs: int, steps: int,
                       table: Sequence[Sequence[float]] = PAPER_STAGE_WEIGHTS, normalise: bool = True) -> list[float]:
    """Loss weights ``[w_1 (coarse), w_2..w_T (fine)]`` at ``epoch`` (Eq. 14), summing to 1.

    ``table`` rows are stages, each ``[w_1, fine weights...]`` for its own number of fine steps; its fine weights
    are resampled linearly onto ``steps - 1`` positions when that number differs, with the stage's total fine
    weight kept, then the row is normalised to sum 1 (``normalise=False``: the row as printed, e.g. stage 1's
    0.25, 0.5, 0.25/3, 0.25/3, which sum to 0.917).
    """
    row = np.asarray(table[curriculum_stage(epoch, epochs, len(table))], dtype=float)
    coarse, fine = row[0], row[1:]
    n = steps - 1
    if n <= 0:
        return [1.0]
    if n != fine.size:
        src = np.linspace(0.0, 1.0, fine.size) if fine.size > 1 else np.zeros(1)
        resampled = np.interp(np.linspace(0.0, 1.0, n), src, fine) if fine.size > 1 else np.full(n, fine[0])
        if resampled.sum() > 0:
            resampled *= fine.sum() / resampled.sum()
        fine = resampled
    weights = np.concatenate([[coarse], fine])
    total = weights.sum()
    if total <= 0:
        raise ValueError(f"curriculum stage weights sum to {total}; at least one must be positive")
    return (weights / total).tolist() if normalise else weights.tolist()


# -- building blocks -------------------------------------------------------------------------------------------
def conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv - BatchNorm - ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class FeedbackBlock(nn.Module):
    """Feedback block d (Eqs. 1-2): a scale-specific conv block, then a ConvLSTM cell whose input is the same
    feature map fm_d at every time step and whose hidden state carries the feedback between steps."""

    def __init__(self, in_channels: int, channels: int, downsample: int, out_dim: int = 32,
                 kernel: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_act(in_channels, channels, 1)]
        layers += [conv_bn_act(channels, channels, 3, stride=2) for _ in range(downsample)]
        self.reduce = nn.Sequential(*layers)
        self.channels = channels
        # W_{d,x*} (with the gates' biases) and W_{d,h*}; gate order: input, forget, output, candidate
        self.input_gates = nn.Conv2d(channels, 4 * channels, kernel, padding=kernel // 2)
        self.hidden_gates = nn.Conv2d(channels, 4 * channels, kernel, padding=kernel // 2, bias=False)
        with torch.no_grad():  # forget-gate bias 1: remember by default early in training
            self.input_gates.bias.zero_()
            self.input_gates.bias[channels:2 * channels].fill_(1.0)
        self.embed = nn.Sequential(nn.Linear(channels, out_dim), nn.GELU())

    def prepare(self, fm: torch.Tensor) -> torch.Tensor:
        """W_x * fm_d, computed once per image as fm_d is constant over time."""
        return self.input_gates(self.reduce(fm))

    def step(self, x_gates: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One time step: ``(v_{d,t} [B, out_dim], (h_t, c_t))`` from ``W_x fm_d`` and ``(h_{t-1}, c_{t-1})``."""
        if state is None:
            zeros = x_gates.new_zeros(x_gates.shape[0], self.channels, *x_gates.shape[2:])
            state = (zeros, zeros)
        h, c = state
        gates = x_gates + self.hidden_gates(h)
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return self.embed(h.mean(dim=(2, 3))), (h, c)


class QualityTransformer(nn.Module):
    """Transformer encoder over conv5 tokens with a learnable quality token (Eqs. 3-7); returns v_m."""

    def __init__(self, in_channels: int, dim: int = 224, heads: int = 4, depth: int = 1, mlp_ratio: float = 4.0,
                 patch_size: int = 1, pos_grid: int = 7, out_dim: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)  # W_pe on flattened P x P
        self.quality_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, pos_grid, pos_grid))
        nn.init.trunc_normal_(self.quality_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(dim, out_dim), nn.GELU())  # MLP-II

    def forward(self, fm4: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(fm4)
        pos = self.pos_embed
        if pos.shape[-2:] != tokens.shape[-2:]:
            pos = F.interpolate(pos, size=tokens.shape[-2:], mode="bilinear", align_corners=False)
        tokens = (tokens + pos).flatten(2).transpose(1, 2)
        token = self.quality_token.expand(tokens.shape[0], -1, -1)
        x = self.encoder(torch.cat([token, tokens], dim=1))
        return self.head(self.norm(x[:, 0]))


class PooledContext(nn.Module):
    """Ablation "w/o TE": global average pooling of conv5 + MLP-II (the plain ResNet-50 path)."""

    def __init__(self, in_channels: int, out_dim: int = 32) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(in_channels, out_dim), nn.GELU())

    def forward(self, fm4: torch.Tensor) -> torch.Tensor:
        return self.head(fm4.mean(dim=(2, 3)))


# -- the model ---------------------------------------------------------------------------------------------------
@register("reqa")
class REQA(IQAModel):
    """Multi-scale ResNet + ConvLSTM feedback network + transformer quality token, trained coarse-to-fine.

    ``forward`` returns F_T; :meth:`forward_steps` returns every F_t. See the module docstring for the paper's
    equations and the readings chosen where it is ambiguous.
    """

    inputs = frozenset({"image"})
    paper = ("B. Li and F. Huo, REQA: Coarse-to-fine Assessment of Image Quality to Alleviate the Range Effect, "
             "preprint, 2022 (code: github.com/huofushuo/REQA)")
    smoke_params: ClassVar[dict[str, Any]] = {
        "backbone": "resnet18", "steps": 3, "lstm_channels": 8, "embed_dim": 8, "token_dim": 32, "heads": 2,
        "hidden": 16, "pos_grid": 2,
    }
    smoke_image_size: ClassVar[int] = 64

    def __init__(self, attributes: list[str], backbone: str = "resnet50", pretrained: bool | str | Path = False,
                 steps: int = 4, lstm_channels: int = 64, lstm_stride: int = 16, embed_dim: int = 32,
                 token_dim: int = 224, heads: int = 4, depth: int = 1, mlp_ratio: float = 4.0, patch_size: int = 1,
                 pos_grid: int = 7, hidden: int = 128, dropout: float = 0.0, use_feedback: bool = True,
                 use_transformer: bool = True, use_coarse_loss: bool = True, use_fine_loss: bool = True,
                 tolerances: list[float] | None = None, stage_weights: list[list[float]] | None = None,
                 score_scale: float = 100.0, rank_sigma: float = 1e-4, rank_offset: float = 1.0,
                 coarse_scale: float = 1.0, backbone_lr_ratio: float = 0.1, test_crop: int | None = 224,
                 test_crops: int = 25, eval_seed: int = 0, normalise_stage_weights: bool = True) -> None:
        super().__init__(attributes)
        if steps < 1:
            raise ValueError(f"steps (T) must be at least 1, got {steps}")
        if test_crops < 1 or (test_crop is not None and test_crop < 1):
            raise ValueError(f"test_crops and test_crop must be >= 1, got {test_crops} and {test_crop}")
        self.test_crop = None if test_crop is None else int(test_crop)
        self.test_crops, self.eval_seed = int(test_crops), int(eval_seed)
        self.steps = int(steps)
        self.use_feedback, self.use_transformer = bool(use_feedback), bool(use_transformer)
        self.use_coarse_loss, self.use_fine_loss = bool(use_coarse_loss), bool(use_fine_loss)
        self.tolerances = fine_tolerances(self.steps, tolerances)
        self.stage_weights = [list(map(float, row)) for row in (stage_weights or PAPER_STAGE_WEIGHTS)]
        self.normalise_stage_weights = bool(normalise_stage_weights)
        self.score_scale, self.rank_sigma, self.rank_offset = float(score_scale), rank_sigma, rank_offset
        self.coarse_scale = float(coarse_scale)
        if not self.coarse_scale > 0:
            raise ValueError(f"coarse_scale must be positive, got {coarse_scale}")
        self.backbone_lr_ratio = float(backbone_lr_ratio)

        self.backbone = create_backbone(backbone, pretrained=pretrained, features_only=True)
        info = self.backbone.feature_info
        channels, reductions = info.channels()[-4:], info.reduction()[-4:]
        if len(channels) < 4:
            raise ValueError(f"backbone {backbone!r} exposes {len(channels)} feature levels; REQA needs 4")
        self.blocks = nn.ModuleList()
        if self.use_feedback:
            for cin, red in zip(channels[:3], reductions[:3]):
                if lstm_stride % red or lstm_stride < red:
                    raise ValueError(f"lstm_stride {lstm_stride} must be a multiple of every feature stride "
                                     f"({reductions[:3]})")
                down = int(round(math.log2(lstm_stride // red)))
                self.blocks.append(FeedbackBlock(cin, lstm_channels, down, embed_dim))
        if self.use_transformer:
            self.context: nn.Module = QualityTransformer(channels[3], token_dim, heads, depth, mlp_ratio,
                                                         patch_size, pos_grid, embed_dim, dropout)
        else:
            self.context = PooledContext(channels[3], embed_dim)
        width = embed_dim * (1 + len(self.blocks))
        self.regressor = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                       nn.Linear(hidden, len(self.attributes)))  # MLP-III

    # -- forward ---------------------------------------------------------------------------------------------
    def forward_steps(self, image: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Predictions F_1..F_T in [0, 1], shape ``[T, B, A]`` (``steps`` overrides T, e.g. for inspection)."""
        steps = self.steps if steps is None else int(steps)
        features = self.backbone(image)[-4:]
        v_m = self.context(features[3])
        if not self.blocks:  # w/o FN: one prediction, repeated over the time steps
            out = torch.sigmoid(self.regressor(v_m))
            return out.unsqueeze(0).expand(steps, -1, -1)
        x_gates = [block.prepare(fm) for block, fm in zip(self.blocks, features[:3])]
        states: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.blocks)
        outputs = []
        for _ in range(steps):
            vs = [v_m]
            for d, block in enumerate(self.blocks):
                v, states[d] = block.step(x_gates[d], states[d])
                vs.append(v)
            outputs.append(torch.sigmoid(self.regressor(torch.cat(vs, dim=1))))
        return torch.stack(outputs)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        final = self.forward_steps(batch["image"])[-1]
        return {a: final[:, k] for k, a in enumerate(self.attributes)}

    def test_windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``(y, x, h, w)`` of the crops :meth:`predict` scores on a ``height`` x ``width`` image: the centre crop
        for ``test_crops == 1``, else ``test_crops`` seeded random crops (the same for every image and call); the
        whole image when it is no larger than ``test_crop`` or ``test_crop`` is None."""
        side = self.test_crop
        if side is None or (height <= side and width <= side):
            return [(0, 0, height, width)]
        h, w = min(side, height), min(side, width)
        if self.test_crops == 1:
            return [((height - h) // 2, (width - w) // 2, h, w)]
        generator = torch.Generator().manual_seed(self.eval_seed)
        ys = torch.randint(0, height - h + 1, (self.test_crops,), generator=generator).tolist()
        xs = torch.randint(0, width - w + 1, (self.test_crops,), generator=generator).tolist()
        return [(y, x, h, w) for y, x in zip(ys, xs)]

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """F_T averaged over the test crops (:meth:`test_windows`): the input size REQA trains on."""
        image = batch["image"]
        windows = self.test_windows(image.shape[-2], image.shape[-1])
        total = sum(self.forward_steps(image[..., y:y + h, x:x + w])[-1] for y, x, h, w in windows)
        final = total / len(windows)
        return {a: final[:, k] for k, a in enumerate(self.attributes)}

    # -- training --------------------------------------------------------------------------------------------
    @staticmethod
    def make_train_sampler(mos_norm: np.ndarray, batch_size: int, seed: int) -> Sampler[list[int]]:
        """Micro-batches of 5 consecutive images, one per quality scale (Sec. III-C.1)."""
        return ScaleMicroBatchSampler(mos_norm, batch_size, seed, n_scales=MICRO_BATCH)

    def loss_weights(self, ctx: StepContext) -> list[float]:
        """Curriculum weights [w_1, ..., w_T] for the current epoch (Eq. 14, Sec. IV-A.3)."""
        return curriculum_weights(ctx.epoch, ctx.epochs, self.steps, self.stage_weights,
                                  self.normalise_stage_weights)

    def loss_terms(self, steps: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        """Unweighted loss of each time step, on the ``score_scale`` (0-100) scale.

        ``steps`` [T, B, A] predictions and ``target`` [B, A] MOS, both in [0, 1]. Term 1 is the coarse loss on
        F_1, read on the ``coarse_scale`` and multiplied by ``score_scale / coarse_scale`` (L1 without it or when
        the batch is not made of 5-image micro-batches); term t >= 2 is the tolerance loss on F_t with l_t (L1
        without the fine loss).
        """
        scale, coarse = self.score_scale, self.coarse_scale
        steps, target = steps.float(), target.float()  # bf16 autocast is too coarse for 0-100 scale margins
        zero = steps.sum() * 0.0
        terms: list[torch.Tensor] = []
        n = target.shape[0]
        coarse_ok = self.use_coarse_loss and n % MICRO_BATCH == 0
        for t in range(steps.shape[0]):
            if t == 0 and coarse_ok:  # micro-batches with a target for all 5 images, per attribute
                per_attr = []
                for k in range(target.shape[1]):
                    s_mb = (target[:, k] * coarse).reshape(-1, MICRO_BATCH)
                    f_mb = (steps[t, :, k] * coarse).reshape(-1, MICRO_BATCH)
                    keep = ~torch.isnan(s_mb).any(dim=1)
                    if keep.any():  # read on the coarse scale, expressed in score_scale units (x scale / coarse)
                        per_attr.append(coarse_loss(s_mb[keep], f_mb[keep], self.rank_sigma, self.rank_offset)
                                        * (scale / coarse))
                terms.append(torch.stack(per_attr).mean() if per_attr else zero)
                continue
            tol = 0.0 if t == 0 or not self.use_fine_loss else self.tolerances[t - 1]
            terms.append(masked_loss(steps[t] * scale, target * scale,
                                     lambda f, s, tol=tol: tolerance_loss(s, f, tol)))
        return terms

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """Curriculum-weighted coarse + fine losses (Eq. 14), divided by ``score_scale``.

        Assumes the batch was built by :meth:`make_train_sampler` (groups of 5 consecutive images from 5 quality
        scales); other batches train with L1 in place of the coarse term.
        """
        image, target = batch["image"], batch["mos_norm"]
        if target.dim() == 1:
            target = target.unsqueeze(1)
        if self.use_coarse_loss and target.shape[0] % MICRO_BATCH:
            log.debug("batch of %d images is not made of %d-image micro-batches: L1 replaces the coarse loss",
                      target.shape[0], MICRO_BATCH)
        terms = self.loss_terms(self.forward_steps(image), target)
        weights = self.loss_weights(ctx)
        total = sum(w * term for w, term in zip(weights, terms))
        return total / self.score_scale

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Backbone at ``lr * backbone_lr_ratio`` (paper: 2e-5 vs 2e-4 for the other modules)."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        ids = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": backbone, "lr": lr * self.backbone_lr_ratio}, {"params": rest, "lr": lr}]
