"""The papers' deep comparison rows trained here: pyiqa's architectures, built offline (``pyiqa_arch:<arch>``).

The comparison tables of the seed papers list general-purpose deep BIQA models retrained on each dataset:
SFIQA-Assessor Table II (Sec. V-B: "all methods except NIQE and SER-FIQ are retrained on the three test
datasets") lists MUSIQ, MANIQA, TReS and TOPIQ beside HyperIQA, LIQE, ...; TuningIQA Table 2 ("all
learning-based models are trained on FGLive-10K") lists MUSIQ; FHIQA Table I lists MUSIQ fine-tuned from its
KonIQ and PaQ-2-PiQ weights. C. Chen, J. Mo, "IQA-PyTorch" (``pyiqa``, an optional dependency) ships these
architectures as plain ``nn.Module`` classes (``pyiqa.archs.musiq_arch.MUSIQ``, ``maniqa_arch.MANIQA``,
``tres_arch.TReS``, ``topiq_arch.CFANet``; REQA Table II's WaDIQaM: ``wadiqam_arch.WaDIQaM``). This module
builds them with **every pretrained weight off** and trains them under the experiment's protocol like any
other model. Every comparison row of the four papers, and
whether and how it runs here, is listed in ``docs/baselines.md``.

Contract (the same as the zero-shot ``pyiqa:<metric>`` models of :mod:`iqalab.models.zeroshot`):

- ``get_model_class("pyiqa_arch:<arch>")`` returns the class of the architecture (not registered one by one,
  so :func:`iqalab.models.available` and the generic model tests list only models that build without pyiqa);
  ``params.yaml`` validation checks the constructor arguments as for any model; the pyiqa class's own
  arguments (``options``) are checked against its signature when the model is built. pyiqa is imported only
  when a model is built.
- Without pyiqa, building raises :class:`~iqalab.status.ModelUnavailable` (``"pyiqa not installed"``); the
  training stage records that status and the tables keep the row with the reason (:mod:`iqalab.status`).
- **Nothing is downloaded.** The architecture is built inside :func:`iqalab.models.zeroshot.no_downloads` and
  :func:`offline_backbones`, which forces ``pretrained=False`` in ``timm.create_model`` (MANIQA hard-codes an
  ImageNet-21k ``vit_base_patch8_224``; TOPIQ's ResNet-50 also gets ``backbone_pretrain=False``) and
  ``weights=None`` in torchvision's model builders (TReS hard-codes ``resnet50(weights='IMAGENET1K_V1')``).
  pyiqa's own ``pretrained`` flag is False, so no IQA checkpoint is loaded either.

**What differs from the papers' setup** (stated in every row's label and in ``docs/baselines.md``):

1. *Initialisation.* The papers start from ImageNet weights (TReS, TOPIQ: ResNet-50; MANIQA: ViT-B/8 on
   ImageNet-21k; MUSIQ: its own ImageNet pre-training; FHIQA's MUSIQ rows even start from KonIQ / PaQ-2-PiQ
   checkpoints). Here every weight is random, so on the small simulated datasets these rows sit far below the
   papers' numbers. Point ``backbone_weights`` at a local state dict to start from ImageNet (or, for MUSIQ,
   from pyiqa's KonIQ / PaQ-2-PiQ checkpoint) offline.
2. *Multi-attribute outputs.* The published heads predict one score. Each architecture's regression head is
   replaced by the same head with one output per attribute (MUSIQ: a linear layer on the CLS token; TReS: a
   linear layer on the concatenated transformer and ResNet features; MANIQA: the dual score/weight branch over
   patches, per attribute; TOPIQ: its MLP on the attention-pooled features), followed by a sigmoid so scores
   lie in [0, 1] like the normalised MOS targets (MANIQA: its score branch's final ReLU becomes the sigmoid).
   With one attribute the heads are the papers' heads up to that sigmoid. The head is fed by a *tap*: the
   arch's head module is swapped for a module that records its input, the arch's own ``forward``
   (pre-processing, crops, multi-crop averaging) runs unchanged, and the recorded features go through the new
   head.
3. *Losses* (on normalised MOS, NaN targets skipped): MUSIQ L2 (MSE; the MUSIQ paper regresses MOS with a
   squared error), MANIQA L2 (MSE, as the official MANIQA code), TOPIQ L1, TReS L1 plus its self-consistency
   term (pyiqa's feature consistency between the image and its horizontal flip, plus an L1 consistency of the
   two predictions). TReS's relative-ranking triplet loss is not implemented. ``loss`` overrides the
   regression loss (``"huber"``: FHIQA's protocol for every model of its Table I).
4. *Sizes.* Every argument of the pyiqa class can be set through ``options`` (e.g. fewer MUSIQ layers, TReS on
   ResNet-18, MANIQA on a smaller ViT through ``vit``) for CPU runs; the defaults are the papers'
   configurations as pyiqa ships them (parameter counts in ``docs/baselines.md``).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from iqalab.data.loaders import denormalise_batch
from iqalab.models.base import IQAModel, StepContext
from iqalab.models.zeroshot import PYIQA_PAPER, _import_pyiqa, no_downloads
from iqalab.status import ModelUnavailable
from iqalab.train.losses import masked_l1, masked_mse

log = logging.getLogger(__name__)

PREFIX = "pyiqa_arch:"
#: arguments of the pyiqa classes this module owns (weights are always off; the head is replaced)
RESERVED_OPTIONS = frozenset({"pretrained", "pretrained_model_path", "num_class", "num_outputs", "train_dataset"})
LOSSES = ("l1", "l2", "huber")


def is_arch_name(name: str) -> bool:
    """Whether ``name`` is a ``pyiqa_arch:<arch>`` model name."""
    return str(name).startswith(PREFIX)


class _Tap(nn.Module):
    """Stands in for an architecture's head: records each input and returns zeros (or ones) of the head's output
    shape, so the architecture's ``forward`` runs unchanged while the features reach the new multi-attribute
    head."""

    def __init__(self, fill: float = 0.0, store: bool = True) -> None:
        super().__init__()
        self.fill = fill
        self.store = store
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.store:
            self.inputs.append(x)
        return torch.full((*x.shape[:-1], 1), self.fill, dtype=x.dtype, device=x.device)


@contextlib.contextmanager
def offline_backbones(timm_rename: dict[str, str] | None = None,
                      timm_kwargs: dict[str, Any] | None = None) -> Iterator[list[str]]:
    """Force random initialisation of the backbones an architecture creates inside its constructor.

    ``timm.create_model`` gets ``pretrained=False`` (and a model name of ``timm_rename`` substituted, with
    ``timm_kwargs`` added: a smaller backbone for CPU runs); every torchvision model builder in
    ``torchvision.models`` gets ``weights=None`` (and the legacy ``pretrained=False``). Yields the list of
    ``"<library>:<model>"`` backbones built. Patches the module attributes the pyiqa archs call at run time
    (``timm.create_model``, ``torchvision.models.<builder>``) and restores them on exit.
    """
    import timm
    import torchvision.models as tvm

    built: list[str] = []
    original_create = timm.create_model

    def create_model(model_name: str, *args: Any, **kwargs: Any) -> nn.Module:
        name = (timm_rename or {}).get(model_name, model_name)
        kwargs = {**kwargs, **(timm_kwargs or {}), "pretrained": False}
        kwargs.pop("pretrained_cfg_overlay", None)
        built.append(f"timm:{name}")
        return original_create(name, *args, **kwargs)

    def offline(builder_name: str, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        def build(*args: Any, **kwargs: Any) -> nn.Module:
            kwargs["weights"] = None
            kwargs.pop("pretrained", None)
            built.append(f"torchvision:{builder_name}")
            return builder(*args, **kwargs)

        return build

    saved: list[tuple[Any, str, Any]] = [(timm, "create_model", original_create)]
    for name in tvm.list_models(module=tvm):
        if callable(getattr(tvm, name, None)):
            saved.append((tvm, name, getattr(tvm, name)))
    try:
        timm.create_model = create_model
        for obj, name, original in saved[1:]:
            setattr(obj, name, offline(name, original))
        yield built
    finally:
        for obj, name, original in saved:
            setattr(obj, name, original)


@dataclass(frozen=True)
class ArchSpec:
    """How one pyiqa architecture becomes a multi-attribute :class:`PyIQAArchModel`."""

    key: str
    module: str  # pyiqa.archs.<module>
    cls: str
    paper: str
    loss: str  # the paper's regression loss on normalised MOS
    #: architecture options of the tiny CPU-test build
    smoke: dict[str, Any] = field(default_factory=dict)
    #: parameter counts the papers' tables state for this method (table -> millions)
    paper_params_m: dict[str, float] = field(default_factory=dict)
    #: options this wrapper sets unless the experiment does (e.g. TOPIQ's no-reference mode)
    defaults: dict[str, Any] = field(default_factory=dict)


ARCHS: dict[str, ArchSpec] = {
    "musiq": ArchSpec(
        "musiq", "musiq_arch", "MUSIQ",
        "J. Ke, Q. Wang, Y. Wang, P. Milanfar, F. Yang, 'MUSIQ: Multi-scale Image Quality Transformer', ICCV 2021",
        loss="l2", smoke={"hidden_size": 32, "mlp_dim": 64, "num_heads": 2, "num_layers": 1,
                          "longer_side_lengths": [64]},
        paper_params_m={"TuningIQA Table 2": 157.23, "SFIQA Table II": 78.59}),
    "maniqa": ArchSpec(
        "maniqa", "maniqa_arch", "MANIQA",
        "S. Yang et al., 'MANIQA: Multi-dimension Attention Network for No-Reference Image Quality Assessment', "
        "CVPR Workshops 2022",
        loss="l2", smoke={"vit": "vit_tiny_patch16_224", "embed_dim": 192, "patch_size": 16, "dim_mlp": 192,
                          "num_tab": 1, "depths": [1, 1], "num_heads": [2, 2], "window_size": 7, "test_sample": 1},
        paper_params_m={"SFIQA Table II": 135.75}),
    "tres": ArchSpec(
        "tres", "tres_arch", "TReS",
        "S. A. Golestaneh, S. Dadsetan, K. M. Kitani, 'No-Reference Image Quality Assessment via Transformers, "
        "Relative Ranking, and Self-Consistency' (TReS), WACV 2022",
        loss="l1", smoke={"network": "resnet18", "nheadt": 2, "num_encoder_layerst": 1, "dim_feedforwardt": 16,
                          "test_sample": 1},
        paper_params_m={"SFIQA Table II": 152.45}),
    "topiq": ArchSpec(
        "topiq", "topiq_arch", "CFANet",
        "C. Chen, J. Mo, J. Hou, H. Wu, L. Liao, W. Sun, Q. Yan, W. Lin, 'TOPIQ: A Top-down Approach from "
        "Semantics to Distortions for Image Quality Assessment', IEEE TIP 2024",
        loss="l1", smoke={"semantic_model_name": "resnet18", "inter_dim": 32, "num_heads": 2},
        paper_params_m={"SFIQA Table II": 45.2},
        defaults={"use_ref": False, "backbone_pretrain": False, "model_name": "cfanet_nr_koniq_res50"}),
    "wadiqam": ArchSpec(
        "wadiqam", "wadiqam_arch", "WaDIQaM",
        "S. Bosse, D. Maniry, K.-R. Mueller, T. Wiegand, W. Samek, 'Deep Neural Networks for No-Reference and "
        "Full-Reference Image Quality Assessment' (WaDIQaM-NR), IEEE TIP 2018",
        loss="l1", smoke={"train_patch_num": 4}, defaults={"metric_type": "NR", "model_name": "wadiqam_nr_koniq"}),
}


def arch_names() -> list[str]:
    """The ``pyiqa_arch:<arch>`` model names."""
    return [f"{PREFIX}{key}" for key in ARCHS]


class PyIQAArchModel(IQAModel):
    """A pyiqa architecture built offline (pretrained weights off) and trained here, one output per attribute.

    See the module docstring for what differs from the paper. Subclasses set ``spec`` (:data:`ARCHS`).

    Args:
        attributes: the dataset's attributes (one output each).
        options: keyword arguments of the pyiqa class (architecture sizes, ``test_sample``, ...); ``pretrained``,
            ``pretrained_model_path``, ``num_class``/``num_outputs`` and ``train_dataset`` are owned here and
            refused. MANIQA also takes ``vit`` (the timm ViT it hard-codes, ``vit_base_patch8_224``).
        loss: ``"l1"``, ``"l2"`` or ``"huber"`` regression loss on normalised MOS (default: the paper's, see the
            module docstring; ``"huber"`` is FHIQA's protocol for every model of its Table I).
        huber_delta: the Huber loss's threshold in normalised MOS units.
        backbone_weights: optional local file holding a ``torch.save``-d state dict, loaded (``strict=False``)
            after the random build into the backbone (MANIQA ``vit``, TReS ``model``, TOPIQ
            ``semantic_model``) or, for MUSIQ, the whole arch: ImageNet (or IQA) initialisation offline.
    """

    spec: ClassVar[ArchSpec]
    inputs: ClassVar[frozenset[str]] = frozenset({"image"})
    #: the arch's head module(s) replaced by taps: attribute -> tap fill value (the first one carries features)
    tapped: ClassVar[dict[str, float]] = {}
    #: the attribute holding the backbone that ``backbone_weights`` initialises ("" = the whole arch)
    backbone_attr: ClassVar[str] = ""

    def __init__(self, attributes: list[str], options: dict[str, Any] | None = None, loss: str | None = None,
                 huber_delta: float = 0.1, backbone_weights: str | Path | None = None) -> None:
        super().__init__(attributes)
        opts = dict(options or {})
        refused = sorted(set(opts) & RESERVED_OPTIONS)
        if refused:
            raise ValueError(f"model.options: {refused} are set by {self.registry_name} (weights are always off, "
                             "the head has one output per attribute)")
        self.loss_name = loss or self.spec.loss
        if self.loss_name not in LOSSES:
            raise ValueError(f"model.loss must be one of {list(LOSSES)}, got {loss!r}")
        if not huber_delta > 0:
            raise ValueError(f"model.huber_delta must be positive, got {huber_delta!r}")
        self.huber_delta = float(huber_delta)
        if backbone_weights is not None and not Path(backbone_weights).expanduser().is_file():
            raise ModelUnavailable.weights(f"backbone weights file {backbone_weights} not found",
                                           f"model.backbone_weights of {self.registry_name} must be a local file")
        self.options = opts
        self.arch, self.backbones_built = self._build_arch(opts)
        if backbone_weights is not None:
            self._load_backbone(Path(backbone_weights).expanduser())
        self._taps: dict[str, _Tap] = {}
        for attr_name, fill in self.tapped.items():
            tap = _Tap(fill=fill, store=not self._taps)
            setattr(self.arch, attr_name, tap)
            self._taps[attr_name] = tap
        self.build_heads()

    # -- building -------------------------------------------------------------------------------------------
    def _build_arch(self, opts: dict[str, Any]) -> tuple[nn.Module, list[str]]:
        """Import pyiqa (``ModelUnavailable`` without it) and build the class with pretrained weights off."""
        _import_pyiqa()
        try:
            module = importlib.import_module(f"pyiqa.archs.{self.spec.module}")
        except ImportError as exc:  # an arch's own packages (TOPIQ imports facexlib)
            raise ModelUnavailable(f"{self.registry_name} not importable: {type(exc).__name__}: {exc}",
                                   "install what pyiqa's arch imports into this environment") from None
        cls = getattr(module, self.spec.cls)
        timm_rename, opts = self.split_options({**self.spec.defaults, **opts})
        allowed = {k for k, p in inspect.signature(cls.__init__).parameters.items()
                   if k != "self" and p.kind is not p.VAR_KEYWORD}
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ValueError(f"model.options: unknown argument(s) {unknown} of pyiqa's {self.spec.cls}; "
                             f"allowed: {sorted(allowed - RESERVED_OPTIONS)}")
        with no_downloads() as attempts, offline_backbones(timm_rename) as built:
            try:
                arch = cls(pretrained=False, **opts)
            except ConnectionError as exc:  # a download the patches did not catch: say so, never fetch
                raise ModelUnavailable.weights(f"{self.spec.cls} tried to download ({exc})") from None
        if attempts:
            raise ModelUnavailable.weights(f"{self.spec.cls} tried to download: {attempts[0]}")
        log.info("%s: pyiqa %s built offline (random init; backbones %s)", self.registry_name, self.spec.cls,
                 built or "none")
        return arch, built

    def split_options(self, opts: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        """``(timm renames, the pyiqa class's kwargs)``; MANIQA overrides it to read ``vit``."""
        return {}, opts

    def _load_backbone(self, path: Path) -> None:
        target = getattr(self.arch, self.backbone_attr) if self.backbone_attr else self.arch
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("params", "state_dict", "model"):  # pyiqa's and common checkpoint wrappers
            if isinstance(state, dict) and set(state) == {key}:
                state = state[key]
        missing, unexpected = target.load_state_dict(state, strict=False)
        log.info("%s: backbone weights %s loaded (%d missing, %d unexpected keys)", self.registry_name, path,
                 len(missing), len(unexpected))

    def build_heads(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- running --------------------------------------------------------------------------------------------
    def arch_input(self, image: torch.Tensor) -> torch.Tensor:
        """The arch's input: RGB in [0, 1] (the loader's ImageNet normalisation undone; each arch normalises
        as its paper does)."""
        return denormalise_batch(image)

    def run_arch(self, image: torch.Tensor) -> tuple[list[torch.Tensor], Any]:
        """Run the arch's own forward; ``(features recorded by the tap, the arch's output)``."""
        tap = next(iter(self._taps.values()))
        tap.inputs = []
        try:
            out = self.arch(self.arch_input(image))
            return list(tap.inputs), out
        finally:
            tap.inputs = []

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.scores(batch["image"])[0]

    def scores(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:  # pragma: no cover
        """``({attr: score[B]}, extras for the loss)``."""
        raise NotImplementedError

    def regression_loss(self, pred: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """The chosen loss per attribute over the targets present (NaN skipped), averaged over attributes."""
        if self.loss_name == "l1":
            return masked_l1(pred, target, self.attributes)
        if self.loss_name == "l2":
            return masked_mse(pred, target, self.attributes)
        losses = [nn.functional.huber_loss(pred[a][m], target[m, k], delta=self.huber_delta)
                  for k, a in enumerate(self.attributes) if (m := ~torch.isnan(target[:, k])).any()]
        return torch.stack(losses).mean() if losses else next(iter(pred.values())).sum() * 0.0

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """The paper's regression loss on normalised MOS (see the module docstring)."""
        pred, _ = self.scores(batch["image"])
        return self.regression_loss(pred, batch["mos_norm"])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def arch_parameters(self) -> int:
        """Parameters of the pyiqa arch without its replaced head (the backbone and body the paper describes)."""
        return sum(p.numel() for p in self.arch.parameters())

    def run_notes(self) -> dict[str, Any]:
        """What a table row must say about this run: random init, the backbones built, the loss."""
        return {"pyiqa_arch": self.spec.cls, "pretrained": False, "backbones": list(self.backbones_built),
                "loss": self.loss_name}


def _sigmoid_heads(attributes: list[str], width: int) -> nn.ModuleDict:
    return nn.ModuleDict({a: nn.Linear(width, 1) for a in attributes})


class MUSIQArch(PyIQAArchModel):
    """MUSIQ (pyiqa's ``MUSIQ``), random init, a linear head per attribute on the CLS token, L2 loss.

    pyiqa's MUSIQ turns images into multi-scale patch sequences inside ``forward`` in eval mode only (training
    inputs are expected pre-processed): here the same pre-processing (``x * 2 - 1``,
    ``get_multiscale_patches`` with the arch's options) is applied in training too, so a training batch and an
    evaluation batch see the same scales (224 and 384 px longer side by default, as the paper's KonIQ model).
    """

    spec = ARCHS["musiq"]
    paper = f"{spec.paper}; architecture from {PYIQA_PAPER}, random init"
    smoke_params: ClassVar[dict[str, Any]] = {"options": spec.smoke}
    tapped: ClassVar[dict[str, float]] = {"head": 0.0}

    def build_heads(self) -> None:
        self.heads = _sigmoid_heads(self.attributes, self.arch.embedding.out_features)

    def arch_input(self, image: torch.Tensor) -> torch.Tensor:
        rgb = denormalise_batch(image)
        if not self.arch.training:
            return rgb  # pyiqa pre-processes in eval mode
        from pyiqa.data.multiscale_trans_util import get_multiscale_patches

        return get_multiscale_patches((rgb - 0.5) * 2, **self.arch.data_preprocess_opts)

    def scores(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        (cls_token, *_), _ = self.run_arch(image)  # [B, hidden] (one crop per image)
        return {a: torch.sigmoid(h(cls_token).squeeze(-1)) for a, h in self.heads.items()}, {}


class MANIQAArch(PyIQAArchModel):
    """MANIQA (pyiqa's ``MANIQA``), random init, the dual score/weight head per attribute, L2 loss.

    pyiqa's MANIQA takes one random 224 px crop in training and ``test_sample`` (default 20) uniform crops at test
    (images under 224 px are upscaled first); its ViT is ``vit_base_patch8_224`` (option ``vit`` substitutes
    another timm ViT with at least 10 blocks, e.g. ``vit_tiny_patch16_224`` with ``embed_dim: 192``,
    ``patch_size: 16``). Per attribute ``a``: ``s_a = sum_p w_pa * q_pa / sum_p w_pa`` over the patches of all
    crops of an image, ``q`` the score branch (FC-ReLU-FC-sigmoid) and ``w`` the weight branch (FC-ReLU-FC-
    sigmoid), as the paper's Eq. for one output with the score branch's final ReLU made a sigmoid.
    """

    spec = ARCHS["maniqa"]
    paper = f"{spec.paper}; architecture from {PYIQA_PAPER}, random init"
    smoke_params: ClassVar[dict[str, Any]] = {"options": spec.smoke}
    smoke_image_size: ClassVar[int] = 64
    tapped: ClassVar[dict[str, float]] = {"fc_score": 0.0, "fc_weight": 1.0}
    backbone_attr: ClassVar[str] = "vit"

    def split_options(self, opts: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        opts = dict(opts)
        vit = opts.pop("vit", None)
        return ({"vit_base_patch8_224": str(vit)} if vit else {}), opts

    def build_heads(self) -> None:
        width = self.arch.conv2.out_channels
        drop = float(self.options.get("drop", 0.1))
        n = len(self.attributes)
        self.fc_score = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(drop), nn.Linear(width, n))
        self.fc_weight = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(drop), nn.Linear(width, n))

    def scores(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        (tokens, *_), _ = self.run_arch(image)  # [B * crops, patches, C], batch-major
        b = image.shape[0]
        tokens = tokens.reshape(b, -1, tokens.shape[-1])
        q = torch.sigmoid(self.fc_score(tokens))  # [B, P, A]
        w = torch.sigmoid(self.fc_weight(tokens))
        score = (w * q).sum(dim=1) / (w.sum(dim=1) + 1e-8)
        return {a: score[:, k] for k, a in enumerate(self.attributes)}, {}


class TReSArch(PyIQAArchModel):
    """TReS (pyiqa's ``TReS``), random init, a linear head per attribute, L1 + self-consistency loss.

    pyiqa's TReS runs the image and its horizontal flip through the ResNet + transformer, one random 224 px crop
    in training and ``test_sample`` (default 50) uniform crops at test. The head is fed by the concatenated
    transformer and ResNet features (the paper's final FC). Loss: L1 on normalised MOS, plus pyiqa's feature
    self-consistency (L1 between the two passes' transformer outputs and last ResNet stage) and an L1 between the
    image's and its flip's predictions (the paper's self-consistency on the score); the relative-ranking loss is
    not implemented.
    """

    spec = ARCHS["tres"]
    paper = f"{spec.paper}; architecture from {PYIQA_PAPER}, random init"
    smoke_params: ClassVar[dict[str, Any]] = {"options": spec.smoke}
    smoke_image_size: ClassVar[int] = 64
    tapped: ClassVar[dict[str, float]] = {"fc": 0.0}
    backbone_attr: ClassVar[str] = "model"

    def build_heads(self) -> None:
        self.heads = _sigmoid_heads(self.attributes, self.arch.fc2.out_features * 2)

    def scores(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        (feats, flipped, *_), out = self.run_arch(image)  # [B * crops, D] for the image and its flip
        b = image.shape[0]

        def head(x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {a: torch.sigmoid(h(x).squeeze(-1)).reshape(b, -1).mean(dim=1) for a, h in self.heads.items()}

        extras = {"flipped": head(flipped),
                  "consistency": out[1] if isinstance(out, tuple | list) else None}
        return head(feats), extras

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        pred, extras = self.scores(batch["image"])
        loss = self.regression_loss(pred, batch["mos_norm"])
        flip = torch.stack([(pred[a] - extras["flipped"][a].detach()).abs().mean() for a in self.attributes])
        loss = loss + flip.mean()
        if extras["consistency"] is not None:
            loss = loss + extras["consistency"]
        return loss


class TOPIQArch(PyIQAArchModel):
    """TOPIQ (pyiqa's ``CFANet`` in no-reference mode), random init, its MLP head per attribute, L1 loss.

    pyiqa's CFANet: a timm ResNet-50 (``semantic_model_name``) gives multi-scale features, gated pooling and
    self-attention per scale, top-down cross-scale attention, attention pooling, then an MLP (LayerNorm, FC, GELU,
    LayerNorm, FC, GELU, FC). That MLP is kept with one output per attribute and a sigmoid. As in pyiqa, the
    backbone's batch-norm affine parameters are frozen (``fix_bn``). The loss is L1 (pyiqa's TOPIQ NR training
    option; the paper's MOS regression).
    """

    spec = ARCHS["topiq"]
    paper = f"{spec.paper}; architecture from {PYIQA_PAPER}, random init"
    smoke_params: ClassVar[dict[str, Any]] = {"options": spec.smoke}
    tapped: ClassVar[dict[str, float]] = {"score_linear": 0.0}
    backbone_attr: ClassVar[str] = "semantic_model"

    def build_heads(self) -> None:
        width = int(self.options.get("inter_dim", 256))
        act = nn.GELU if self.options.get("activation", "gelu") == "gelu" else nn.ReLU
        self.heads = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), act(), nn.LayerNorm(width),
                                   nn.Linear(width, width), act(), nn.Linear(width, len(self.attributes)))

    def scores(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        (feats, *_), _ = self.run_arch(image)  # [B * crops, inter_dim], batch-major
        score = torch.sigmoid(self.heads(feats)).reshape(image.shape[0], -1, len(self.attributes)).mean(dim=1)
        return {a: score[:, k] for k, a in enumerate(self.attributes)}, {}


class WaDIQaMArch(PyIQAArchModel):
    """WaDIQaM-NR (pyiqa's ``WaDIQaM`` in no-reference mode), its patch score/weight heads per attribute, L1.

    A ten-layer VGG-like network on 32 x 32 patches (``train_patch_num`` random patches per image in training,
    all non-overlapping patches at test), trained from scratch as in the paper, so random init is the paper's
    setup here. Per attribute ``a``: ``s_a = sum_p w_pa q_pa / sum_p w_pa`` with the paper's score branch
    (FC-ReLU-dropout-FC, here followed by a sigmoid) and weight branch (FC-ReLU-dropout-FC-ReLU, plus pyiqa's
    epsilon); ``options: {weighted_average: false}`` averages the patch scores instead. Loss: L1 (the paper's
    MAE).
    """

    spec = ARCHS["wadiqam"]
    paper = f"{spec.paper}; architecture from {PYIQA_PAPER}, trained from scratch"
    smoke_params: ClassVar[dict[str, Any]] = {"options": spec.smoke}
    tapped: ClassVar[dict[str, float]] = {"fc_q": 0.0, "fc_w": 1.0}

    def build_heads(self) -> None:
        n = len(self.attributes)
        self.fc_q = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Dropout(), nn.Linear(512, n))
        self.fc_w = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Dropout(), nn.Linear(512, n), nn.ReLU())

    def scores(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        (feats, *_), _ = self.run_arch(image)  # [B, patches, 512]
        q = torch.sigmoid(self.fc_q(feats))
        if self.arch.weighted_average:
            w = self.fc_w(feats) + self.arch.eps
            score = (q * w).sum(dim=1) / w.sum(dim=1)
        else:
            score = q.mean(dim=1)
        return {a: score[:, k] for k, a in enumerate(self.attributes)}, {}


_CLASSES: dict[str, type[PyIQAArchModel]] = {"musiq": MUSIQArch, "maniqa": MANIQAArch, "tres": TReSArch,
                                             "topiq": TOPIQArch, "wadiqam": WaDIQaMArch}
for _key, _cls in _CLASSES.items():
    _cls.registry_name = f"{PREFIX}{_key}"


def arch_model_class(name: str) -> type[PyIQAArchModel]:
    """The class of ``pyiqa_arch:<arch>``; ``KeyError`` listing the known architectures otherwise."""
    key = str(name)[len(PREFIX):] if is_arch_name(name) else ""
    if key not in _CLASSES:
        raise KeyError(f"model {name!r}: trainable pyiqa architectures are {arch_names()}")
    return _CLASSES[key]


__all__ = ["ARCHS", "CARD_HEADING", "PREFIX", "ArchSpec", "MANIQAArch", "MUSIQArch", "PyIQAArchModel", "TOPIQArch",
           "TReSArch", "WaDIQaMArch", "arch_model_class", "arch_names", "card_markdown", "card_overview_row", "is_arch_name",
           "offline_backbones"]


#: heading of the ``docs/models.md`` section on these models (and its anchor)
CARD_HEADING = "pyiqa architectures trained here"
CARD_ANCHOR = "pyiqa-architectures-trained-here"


def card_overview_row() -> str:
    """The ``docs/models.md`` overview-table row of the ``pyiqa_arch:<arch>`` models (not built for the cards:
    pyiqa is optional)."""
    return (f"| [`pyiqa_arch:<arch>`](#{CARD_ANCHOR}) | image | pyiqa's architecture (not built here) | "
            f"not counted | MUSIQ, MANIQA, TReS, TOPIQ, WaDIQaM trained here, pretrained weights off ({PYIQA_PAPER}) |")


def card_markdown() -> list[str]:
    """The ``docs/models.md`` section on the ``pyiqa_arch:<arch>`` models."""
    lines = [f"## {CARD_HEADING}", "",
             f"`{PyIQAArchModel.__name__}`: the deep comparison rows of the papers' tables, trained here on the "
             "experiment's split. pyiqa's architecture is built with **every pretrained weight off** (timm and "
             "torchvision backbones forced to random init, every download blocked) and its regression head is "
             "replaced by the same head with one sigmoid output per attribute. Without pyiqa the experiment "
             "completes with the status `pyiqa not installed`. Which paper row each one is, what differs from "
             "the paper and the parameter counts: [baselines.md](baselines.md).", "",
             "| name | pyiqa class | loss | paper |", "|---|---|---|---|"]
    lines += [f"| `{PREFIX}{s.key}` | `{s.module}.{s.cls}` | {s.loss} | {s.paper} |" for s in ARCHS.values()]
    lines += ["", "| constructor argument | default | meaning |", "|---|---|---|",
              "| `options` | `None` | keyword arguments of the pyiqa class (sizes, `test_sample`, ...; MANIQA "
              "also `vit`); `pretrained`, `pretrained_model_path`, `num_class`/`num_outputs`, `train_dataset` "
              "are refused |",
              "| `loss` | the paper's | `l1`, `l2` or `huber` on normalised MOS (TReS adds its self-consistency) |",
              "| `huber_delta` | `0.1` | threshold of the Huber loss |",
              "| `backbone_weights` | `None` | a local `torch.save`-d state dict loaded into the backbone (MUSIQ: "
              "the whole arch) after the random build |"]
    return lines
