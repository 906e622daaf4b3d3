"""DBCNN: W. Zhang, K. Ma, J. Yan, D. Deng, Z. Wang, "Blind Image Quality Assessment Using a Deep Bilinear
Convolutional Neural Network", IEEE Transactions on Circuits and Systems for Video Technology 30(1):36-47, 2020.
Released code: https://github.com/zwx8981/DBCNN-PyTorch (``DBCNN.py``, ``SCNN.py``).

Two streams see the same image (paper Sec. III, Fig. 1):

- **S-CNN** (Sec. III-A, Table I), a small CNN for *synthetic* distortions: nine 3x3 convolution - batch norm -
  ReLU blocks with 48, 48, 64, 64, 64, 64, 128, 128, 128 channels and strides 1, 2, 1, 2, 1, 2, 1, 1, 2 (output
  at 1/16 of the input, 128 channels), exactly the ``features`` block of the released ``SCNN.py``. The paper
  pre-trains it to classify 39 distortion types x levels on PASCAL VOC / Waterloo Exploration images distorted
  synthetically, then keeps only the convolutional part. **That pre-training set is not available here, so the
  S-CNN is trained from scratch with the rest of the model** (``scnn_weights`` loads the authors' released
  ``pretrained_scnn/scnn.pkl`` when you have it). Its classification head (pooling, two 1x1 convolutions of 256
  channels, a 39-way linear layer) is not part of DBCNN and is not built.
- **Authentic-distortion stream** (Sec. III-B): VGG-16 pre-trained on ImageNet, its last convolutional map
  (``conv5_3`` after ReLU, 512 channels at 1/16, i.e. ``backbone="vgg16", backbone_stage=4`` here). Any timm
  backbone works through :func:`iqalab.models.backbones.create_backbone`; the default is ``resnet18``'s last
  stage (512 channels at 1/32) so CPU runs are quick, and ``pretrained`` is passed through as for other models.

**Bilinear pooling** (Sec. III-C): the S-CNN map is resized (bilinear) to the backbone map's spatial size, then
the two maps ``F1 [C1, L]`` and ``F2 [C2, L]`` (``L = H x W`` locations) are pooled into
``B = F1 F2^T / L`` (``C1 x C2``, the outer products averaged over locations), flattened, passed through the
signed square root ``z = sign(B) sqrt(|B|)`` and ``l2``-normalised. A linear layer per attribute maps the
``C1 C2`` features to the score (the paper's single output layer, one per attribute here), followed by a sigmoid
so predictions are on the normalised [0, 1] scale of :mod:`iqalab.models.base`. Loss: mean squared error on the
normalised MOS (the paper's l2 loss; released code ``nn.MSELoss``).

**Training** (Sec. III-D and the released ``DBCNN.py``): first only the linear layer is trained with both
streams frozen (SGD, momentum 0.9, lr 1e-3), then everything is fine-tuned (Adam, lr 1e-5, weight decay 5e-4,
batch 8), each phase a training of its own: phase 2 loads phase 1's best weights, and each keeps its best epoch.
The release's linear layer outputs the MOS itself (MSE on the MOS, no sigmoid). Here: for the first
``freeze_epochs`` epochs the streams' features are computed without gradients (the heads alone learn, at
``lr``), then all parts train at ``lr * stream_lr_scale``, the heads too (:meth:`DBCNN.lr_scales`).
``head_optimizer="sgd"`` and ``restart_from_best=True`` make the two phases the release's two trainings
(:meth:`DBCNN.optimizer_phases`; without them one ``train.optimizer`` continues from the last head-only epoch),
``head="linear"`` gives the release's linear layer in the dataset's MOS units with the MSE on the MOS
(:attr:`DBCNN.loss_scale`; default ``"sigmoid"``: a sigmoid on the normalised scale, MSE there).
With ``freeze_epochs=0`` (default, sensible from scratch) all parts train from the start. ``release_weights``
starts from a whole DBCNN saved by the release (e.g. its LIVE Challenge model, as FHIQA's Table I row was
fine-tuned from; pyiqa's DBCNN weights have the same names): VGG-16 and S-CNN as saved, the release's ``fc`` in
every attribute head (:func:`release_state`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from iqalab.config import OPTIMIZERS, OptimizerName
from iqalab.models.backbones import PretrainedUnavailable, create_backbone
from iqalab.models.base import IQAModel, OptimizerPhase, StepContext
from iqalab.models.registry import register
from iqalab.models.release import ReleaseWeightsError, read_release_state
from iqalab.train.losses import masked_mse

if TYPE_CHECKING:
    from iqalab.data.schema import Dataset

log = logging.getLogger(__name__)

#: S-CNN convolution widths and strides (paper Table I; released ``SCNN.py`` ``features``)
SCNN_CHANNELS: tuple[int, ...] = (48, 48, 64, 64, 64, 64, 128, 128, 128)
SCNN_STRIDES: tuple[int, ...] = (1, 2, 1, 2, 1, 2, 1, 1, 2)


class SCNN(nn.Module):
    """The S-CNN's convolutional part: 3x3 conv - BN - ReLU blocks (paper Table I), output ``[B, C, H/16, W/16]``
    for the default strides. Weights are initialised as in the released code (He-normal, zero bias, BN 1/0)."""

    def __init__(self, channels: Sequence[int] = SCNN_CHANNELS, strides: Sequence[int] = SCNN_STRIDES) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"scnn_channels ({len(channels)}) and scnn_strides ({len(strides)}) must have the same "
                             "non-zero length")
        layers: list[nn.Module] = []
        previous = 3
        for width, stride in zip(channels, strides):
            layers += [nn.Conv2d(previous, int(width), 3, int(stride), 1), nn.BatchNorm2d(int(width)),
                       nn.ReLU(inplace=True)]
            previous = int(width)
        self.features = nn.Sequential(*layers)
        self.out_channels = previous
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features(image)


def bilinear_pool(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """DBCNN bilinear pooling (Sec. III-C): ``[B, C1, H, W]`` x ``[B, C2, H', W']`` -> ``[B, C1 * C2]``.

    ``b`` is resized (bilinear, corners aligned: the release's ``F.upsample_bilinear``) to ``a``'s spatial size;
    the result is ``vec(a b^T / (H W))`` (feature ``c1 * C2 + c2`` pairs channel ``c1`` of ``a`` with channel
    ``c2`` of ``b``) after the square root ``sqrt(z + eps)`` and l2 normalisation, as the release's (its maps
    follow ReLUs, so ``z >= 0``); a negative ``z`` (a backbone whose map is not rectified) gets the signed root
    ``-sqrt(|z| + eps)``. ``eps`` keeps the square root's gradient finite at 0. Computed in at least float32
    (autocast off; float64 inputs stay float64). Until 2026-12-04 the resize did not align corners and a zero
    ``z`` stayed 0 (``sign(z) sqrt(|z| + eps)``), both unlike the release.
    """
    n, c1, h, w = a.shape
    # in float32 even under bf16 autocast: the square root of small products and the norm over C1 * C2 terms
    # lose too much in 8 mantissa bits
    with torch.autocast(device_type=a.device.type, enabled=False):
        dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
        a, b = a.to(dtype), b.to(dtype)
        if b.shape[-2:] != (h, w):
            b = F.interpolate(b, size=(h, w), mode="bilinear", align_corners=True)
        c2 = b.shape[1]
        pooled = torch.bmm(a.reshape(n, c1, h * w), b.reshape(n, c2, h * w).transpose(1, 2)) / (h * w)
        pooled = pooled.reshape(n, c1 * c2)
        pooled = torch.where(pooled < 0, -1.0, 1.0).to(pooled) * torch.sqrt(pooled.abs() + eps)
        return F.normalize(pooled, dim=1)


@register("dbcnn")
class DBCNN(IQAModel):
    """DBCNN (Zhang et al., TCSVT 2020): S-CNN and backbone streams, bilinear pooling, linear heads.

    One linear head per attribute on the bilinear features, sigmoid output in [0, 1]. The S-CNN is trained from
    scratch here (its distortion-classification pre-training set is not available; ``scnn_weights`` loads the
    authors' released S-CNN). ``backbone_stage`` picks the backbone's feature map (-1 = last; VGG-16's conv5_3,
    the paper's, is 4); ``freeze_epochs`` / ``stream_lr_scale`` give the paper's two training phases.
    """

    inputs = frozenset({"image"})
    paper = ("W. Zhang, K. Ma, J. Yan, D. Deng, Z. Wang, 'Blind Image Quality Assessment Using a Deep Bilinear "
             "Convolutional Neural Network', IEEE TCSVT 30(1), 2020")
    smoke_params: ClassVar[dict[str, Any]] = {"backbone": "resnet10t", "scnn_channels": [8, 8, 8, 8, 8, 8, 16, 16, 16]}

    def __init__(self, attributes: list[str], backbone: str = "resnet18", pretrained: bool | str | Path = False,
                 backbone_stage: int = -1, scnn_channels: Sequence[int] = SCNN_CHANNELS,
                 scnn_strides: Sequence[int] = SCNN_STRIDES, scnn_weights: str | Path | None = None,
                 freeze_epochs: int = 0, stream_lr_scale: float = 1.0, head: str = "sigmoid",
                 mos_range: Sequence[float] | None = None, head_optimizer: OptimizerName | None = None,
                 restart_from_best: bool = False, release_weights: str | Path | None = None) -> None:
        super().__init__(attributes)
        if freeze_epochs < 0:
            raise ValueError(f"freeze_epochs must be >= 0, got {freeze_epochs}")
        if head not in ("sigmoid", "linear"):
            raise ValueError(f"head {head!r}: 'sigmoid' (scores on the normalised scale) or 'linear' (the release's "
                             "linear layer in the dataset's MOS units)")
        if head == "linear" and (mos_range is None or len(mos_range) != 2 or not mos_range[1] > mos_range[0]):
            raise ValueError(f"head 'linear' needs mos_range [low, high] (the engine passes the dataset's), got "
                             f"{mos_range}")
        if head_optimizer is not None and head_optimizer not in OPTIMIZERS:
            raise ValueError(f"head_optimizer {head_optimizer!r}: null (train.optimizer) or one of "
                             f"{', '.join(OPTIMIZERS)}")
        if (head_optimizer is not None or restart_from_best) and not freeze_epochs:
            raise ValueError("head_optimizer and restart_from_best describe the head-only phase: set freeze_epochs")
        self.head = head
        self.mos_range = None if mos_range is None else (float(mos_range[0]), float(mos_range[1]))
        self.head_optimizer = head_optimizer
        self.restart_from_best = bool(restart_from_best)
        # a released whole model replaces the ImageNet weights: nothing to fetch for them
        self.backbone = _feature_stage(backbone, pretrained if release_weights is None else False, backbone_stage)
        self.scnn = SCNN(tuple(scnn_channels), tuple(scnn_strides))
        if scnn_weights is not None:
            load_scnn_weights(self.scnn, scnn_weights)
        self.c1 = int(self.backbone.feature_info.channels()[-1])
        self.c2 = self.scnn.out_channels
        self.heads = nn.ModuleDict({a: nn.Linear(self.c1 * self.c2, 1) for a in self.attributes})
        for head in self.heads.values():  # released code: He-normal weights, zero bias
            nn.init.kaiming_normal_(head.weight)
            nn.init.zeros_(head.bias)
        self.freeze_epochs = int(freeze_epochs)
        self.stream_lr_scale = float(stream_lr_scale)
        if release_weights is not None:  # a whole released DBCNN (e.g. the LIVE Challenge model) to fine-tune from
            state = read_release_weights(release_weights)
            try:
                renamed = release_state(state, self.attributes)
            except ValueError as exc:
                raise PretrainedUnavailable(f"model.release_weights: {release_weights}: {exc}") from None
            own = self.state_dict()
            misfit = sorted(set(own) ^ set(renamed)) + sorted(
                k for k in set(own) & set(renamed) if own[k].shape != renamed[k].shape)
            if misfit:
                raise PretrainedUnavailable(
                    f"model.release_weights: {release_weights} does not fit this DBCNN ({len(misfit)} keys, e.g. "
                    f"{misfit[:3]}): the release is backbone vgg16, backbone_stage 4 and the default S-CNN")
            self.load_state_dict(renamed)
            log.info("loaded the released DBCNN from %s (its fc into every attribute head)", release_weights)

    def streams(self) -> list[nn.Module]:
        """The two feature streams (backbone, S-CNN)."""
        return [self.backbone, self.scnn]

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Bilinear features ``[B, C1 * C2]`` (backbone channels x S-CNN channels)."""
        return bilinear_pool(self.backbone(image)[-1], self.scnn(image))

    @classmethod
    def dataset_kwargs(cls, dataset: Dataset, train_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """``mos_range``: the dataset's MOS range, the units of the release's linear head (``head="linear"``)."""
        lo, hi = dataset.mos_range
        return {"mos_range": [float(lo), float(hi)]}

    def scores(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each attribute's score on the normalised scale: the sigmoid of its head (``head="sigmoid"``) or, with
        the release's linear layer (``head="linear"``), its output in MOS units mapped linearly onto it."""
        if self.head == "linear":
            lo, hi = self.mos_range
            return {a: (head(feats).squeeze(-1) - lo) / (hi - lo) for a, head in self.heads.items()}
        return {a: torch.sigmoid(head(feats).squeeze(-1)) for a, head in self.heads.items()}

    @property
    def loss_scale(self) -> float:
        """Factor from the MSE on the normalised scale to the MSE in MOS units: ``(high - low) ** 2`` with the
        linear head (the release's ``nn.MSELoss`` on the MOS: under its SGD head phase the loss's units set the
        step size), 1 with the sigmoid head."""
        if self.head == "linear":
            lo, hi = self.mos_range
            return (hi - lo) ** 2
        return 1.0

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.scores(self.features(batch["image"]))

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """MSE on normalised MOS; during the first ``freeze_epochs`` epochs only the heads learn (Sec. III-D)."""
        if ctx.epoch < self.freeze_epochs:
            with torch.no_grad():
                feats = self.features(batch["image"])
            pred = self.scores(feats)
        else:
            pred = self(batch)
        return masked_mse(pred, batch["mos_norm"], self.attributes) * self.loss_scale

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Streams at ``lr * stream_lr_scale``, heads at ``lr`` (from ``freeze_epochs`` on, :meth:`lr_scales`)."""
        streams = [p for s in self.streams() for p in s.parameters() if p.requires_grad]
        return [{"params": streams, "lr": lr * self.stream_lr_scale},
                {"params": list(self.heads.parameters()), "lr": lr}]

    def lr_scales(self, epoch: int) -> list[float] | None:
        """The released protocol's second phase: after ``freeze_epochs`` head-only epochs (at ``lr``, the release's
        1e-3) everything is fine-tuned at one rate (1e-5), the heads too, so from then on the heads train at
        ``lr * stream_lr_scale`` like the streams. Without a head-only phase (``freeze_epochs=0``) the rates of
        :meth:`param_groups` hold throughout (until 2026-12-04 they did in both cases: the heads kept ``lr`` while
        everything was fine-tuned)."""
        if self.freeze_epochs and epoch >= self.freeze_epochs:
            return [1.0, self.stream_lr_scale]
        return None

    def optimizer_phases(self) -> list[OptimizerPhase]:
        """The released ``DBCNN.py`` runs its two phases as two trainings: the heads alone with SGD (momentum 0.9;
        ``head_optimizer="sgd"``), then a new Adam on everything, loaded from the best head-only weights
        (``restart_from_best``), each phase with its own best epoch. Without either option one optimiser
        (``train.optimizer``) runs through both phases."""
        if not self.freeze_epochs or (self.head_optimizer is None and not self.restart_from_best):
            return []
        return [OptimizerPhase(0, self.head_optimizer),
                OptimizerPhase(self.freeze_epochs, None, from_best=self.restart_from_best)]


def _feature_stage(name: str, pretrained: bool | str | Path, stage: int) -> nn.Module:
    """A timm feature extractor returning ``[map]`` for feature stage ``stage`` (index into ``feature_info``;
    -1 = last). VGG-16's ``conv5_3`` (the paper's) is stage 4."""
    probe = create_backbone(name, pretrained=False, features_only=True)
    n = len(probe.feature_info.channels())
    index = stage if stage >= 0 else n + stage
    if not 0 <= index < n:
        raise ValueError(f"model.backbone_stage: backbone {name!r} has feature stages 0..{n - 1}, got {stage}")
    return create_backbone(name, pretrained=pretrained, features_only=True, out_indices=(index,))


#: the released DBCNN's tensor names (``DBCNN.py``, pyiqa's ``dbcnn_arch.py``) -> the port's with ``backbone
#: "vgg16", backbone_stage 4`` (timm's VGG-16 features keep torchvision's layer indices); ``{head}``: an attribute
RELEASE_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^features1\.(\d+)\.(weight|bias)$", "backbone.features_{0}.{1}"),
    (r"^features2\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$", "scnn.features.{0}.{1}"),
    (r"^fc\.(weight|bias)$", "heads.{head}.{0}"),
)


def release_state(state: Mapping[str, torch.Tensor], heads: Sequence[str]) -> dict[str, torch.Tensor]:
    """A released DBCNN state dict (``torch.save(net.state_dict())`` of ``DBCNN.py``, ``module.`` names from
    ``DataParallel`` dropped; pyiqa's copy has the same names) renamed onto :class:`DBCNN` (:data:`RELEASE_RENAMES`),
    the release's single ``fc`` copied into each of ``heads``. Tensors without a place raise ``ValueError``
    naming them."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        name = key.removeprefix("module.")
        for pattern, target in RELEASE_RENAMES:
            match = re.match(pattern, name)
            if match:
                for head in heads if "{head}" in target else [None]:
                    out[target.format(*match.groups(), head=head)] = value.clone() if head else value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} tensors are not DBCNN's: {unknown[:5]}")
    return out


def read_release_weights(path: str | Path) -> Mapping[str, torch.Tensor]:
    """The state dict in a released DBCNN weights file (:func:`iqalab.models.release.read_release_state`: tensors
    only, unwrapped from pyiqa's ``params`` or ``state_dict``). A missing or unreadable file raises
    :class:`PretrainedUnavailable` naming it."""
    try:
        return read_release_state(path)
    except ReleaseWeightsError as exc:
        raise PretrainedUnavailable(f"model.release_weights: {exc}") from None


def load_scnn_weights(scnn: SCNN, path: str | Path) -> None:
    """Load the S-CNN convolutional weights from a state dict file, e.g. the authors' ``scnn.pkl`` (keys
    ``module.features.*``; the classification head's keys are ignored), read by
    :func:`iqalab.models.release.read_release_state`."""
    try:
        state = read_release_state(path)
    except ReleaseWeightsError as exc:
        raise PretrainedUnavailable(f"model.scnn_weights: {exc}") from None
    found = {k.removeprefix("module.").removeprefix("scnn."): v for k, v in state.items()}
    found = {k: v for k, v in found.items() if k.startswith("features.")}
    wanted = scnn.state_dict()
    missing = sorted(set(wanted) - set(found))
    wrong = sorted(k for k in set(wanted) & set(found) if tuple(found[k].shape) != tuple(wanted[k].shape))
    if missing or wrong:
        raise PretrainedUnavailable(
            f"model.scnn_weights: {path} does not fit this S-CNN ({len(missing)} missing keys, e.g. {missing[:3]}; "
            f"{len(wrong)} of another shape, e.g. {wrong[:3]}); check scnn_channels / scnn_strides")
    scnn.load_state_dict({k: found[k] for k in wanted})
    log.info("loaded S-CNN weights from %s", path)
