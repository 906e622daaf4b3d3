"""The surface every model shares, so the engine, evaluation and CLI never special-case a model.

A model:

- is built as ``Model(attributes=[...], **params)`` and registered with ``@register("name")``;
- declares the batch keys it needs in ``inputs`` (subset of :data:`BATCH_KEYS`) so the loader builds only those;
- maps a batch to ``{attribute: scores[B]}`` in :meth:`forward`;
- may override the optional hooks listed in :data:`HOOKS` (each declared here with its default and docstring;
  the engine, evaluation and stages call them directly, never by ``getattr`` or signature inspection):
  :meth:`training_step` (losses, pairs, curricula), :meth:`predict` (test-time patch averaging),
  :meth:`param_groups` (per-part learning rates), :attr:`trainable` / :meth:`fit` (models fitted without
  gradients), :meth:`make_train_sampler` (batches of a special composition), :meth:`dataset_kwargs`
  (constructor arguments taken from the training data), :attr:`has_pair_head` / :meth:`predict_with_embedding`
  / :meth:`pair_logits` (a pairwise preference head), the published raw score (:meth:`predict_with_raw`), and the
  tiny test configuration (:attr:`smoke_params`, :attr:`smoke_image_size`).

Batch keys (``iqalab.data.loaders``): ``image`` float[B,3,H,W] ImageNet-normalised; ``cam`` float[B,7]
standardised camera parameters with ``cam_mask`` float[B,7] (1 = known); ``person_box`` / ``face_box``
float[B,4] pixel x0,y0,x1,y1 in the ``image`` tensor's frame (NaN rows when unknown); ``landmarks`` float[B,5,2]
pixels; ``scene_idx`` long[B]; ``mos`` / ``std`` float[B,A] in dataset units (NaN when missing), ``mos_norm``
float[B,A] scaled to [0, 1] by the dataset's MOS range; ``image_id`` list[str]. Pair batches (models whose
``inputs`` contain ``"pairs"``) are ``{"a": batch, "b": batch, "p": float[B,A]}``: one row per image pair, the
preference that a is better on each attribute, NaN where that attribute was not compared.

Models predict in the normalised [0, 1] scale; the engine maps predictions back to dataset units.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from iqalab.train.losses import masked_l1

if TYPE_CHECKING:
    from iqalab.config import OptimizerName
    from iqalab.data.schema import Dataset

BATCH_KEYS = frozenset(
    {"image", "cam", "person_box", "face_box", "landmarks", "scene_idx", "pairs", "mos", "std", "image_id"}
)


@dataclass
class StepContext:
    """What a training step may need to know about where it is in training."""

    epoch: int
    epochs: int
    step: int = 0


@dataclass(frozen=True)
class OptimizerPhase:
    """A phase of a released protocol that starts a new optimiser (:meth:`IQAModel.optimizer_phases`), as when a
    release runs its phases as separate trainings (DBCNN's ``DBCNN.py``: SGD on the heads, then a new Adam on
    everything from the best head-only weights).

    ``start``: the phase's first epoch. ``optimizer``: one of :data:`iqalab.config.OPTIMIZERS` (``"sgd"`` with
    momentum 0.9); ``None`` is ``train.optimizer``. Each phase gets a new optimiser and a new ``train.scheduler`` at the rates
    of :meth:`IQAModel.param_groups` (and :meth:`IQAModel.lr_scales`). ``from_best``: the phase starts from the
    weights of the best epoch so far (``best.pt``) and selects its own best epoch, as a separate training would;
    otherwise it continues from the last epoch's weights and the selection runs on across the phases."""

    start: int
    optimizer: OptimizerName | None = None
    from_best: bool = False


#: The optional hooks of the model contract: every one is declared on :class:`IQAModel` with a default, listed in
#: README "Adding a model", and checked for every registered model by ``tests/test_models_registry.py``.
HOOKS: tuple[str, ...] = (
    "training_step", "predict", "param_groups", "trainable", "fit", "make_train_sampler", "dataset_kwargs",
    "has_pair_head", "predict_with_embedding", "pair_logits", "raw_score_name", "raw_lower_is_better",
    "input_resolution", "predict_with_raw", "ready_without_training", "run_notes", "allow_missing_regions",
    "smoke_params", "smoke_image_size", "select_images", "lr_scales", "optimizer_phases",
)


class IQAModel(nn.Module):
    """Base class: multi-attribute quality regressor with a uniform surface."""

    registry_name: ClassVar[str] = ""
    #: batch keys this model reads
    inputs: ClassVar[frozenset[str]] = frozenset({"image"})
    #: paper the model reproduces (shown in model cards)
    paper: ClassVar[str] = ""
    #: trained by gradient descent (the engine's epoch loop); ``False``: the engine calls :meth:`fit` once on the
    #: training images and saves the result (NIQE, BRISQUE, zero-shot metrics)
    trainable: ClassVar[bool] = True
    #: the model has a pairwise preference head: :meth:`predict_with_embedding` and :meth:`pair_logits` work
    #: (TuningIQA Eq. 9; the camera-tuning study then ranks its sweeps pairwise)
    has_pair_head: ClassVar[bool] = False
    #: constructor kwargs of the tiny configuration the registry-wide tests and model cards build
    smoke_params: ClassVar[dict[str, Any]] = {}
    #: image side of the registry-wide tests' synthetic batches
    smoke_image_size: ClassVar[int] = 64
    #: train on images never searched for the regions (person / face boxes) the model reads, with its fallbacks,
    #: instead of being refused (:func:`iqalab.data.regions.check_regions`); models reading regions make it a
    #: constructor argument
    allow_missing_regions: bool = False

    def __init__(self, attributes: list[str]) -> None:
        super().__init__()
        if not attributes:
            raise ValueError("a model needs at least one attribute")
        self.attributes = list(attributes)

    # -- the uniform surface ------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """Default objective: L1 on normalised MOS over the attributes present."""
        return masked_l1(self(batch), batch["mos_norm"], self.attributes)

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Scores used for evaluation and ``iqalab score`` (override for multi-patch averaging)."""
        return self(batch)

    # -- published raw scores (classical and zero-shot metrics) ---------------------------------------------
    #: name of the published score :meth:`predict_with_raw` returns beside the [0, 1] outputs (``None``: none)
    raw_score_name: ClassVar[str | None] = None
    #: whether a lower raw score means better quality (NIQE, BRISQUE): tables state the sign convention
    raw_lower_is_better: ClassVar[bool] = False
    #: ``"cache"``: the square training cache; ``"native"``: each image at its stored resolution, one per batch
    #: (NIQE and BRISQUE run at full resolution as published)
    input_resolution: ClassVar[str] = "cache"

    @torch.no_grad()
    def predict_with_raw(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """:meth:`predict` and, for models with a published score (``raw_score_name``), that score ``[B]`` in its
        own units (e.g. NIQE's distance), computed in the same pass. The default has no raw score."""
        return self.predict(batch), None

    @property
    def ready_without_training(self) -> bool:
        """True when the model scores images as published without reading a training split (official NIQE and
        BRISQUE, zero-shot metrics): ``iqalab score --model <name>`` accepts exactly these."""
        return False

    def run_notes(self) -> dict[str, Any]:
        """Facts about a finished run that its table rows must state, recorded in the predictions JSON (e.g. a
        classical model's variant label, the raw score's name and sign, images scored by a fallback). Default:
        none."""
        return {}

    # -- models fitted without gradients, special batches, data-dependent construction ---------------------------
    def fit(self, batches: Iterable[dict[str, Any]]) -> None:
        """Learn from the training images without gradients, once (models with ``trainable = False``).

        ``batches`` are exactly what :meth:`predict` receives (the engine's one batch contract,
        ``engine.prepared_batches``), training split only. Default: nothing to learn (zero-shot metrics).
        """

    def make_train_sampler(self, mos_norm: np.ndarray, batch_size: int, seed: int) -> Sampler[list[int]] | None:
        """A batch sampler over the training images (indices into ``mos_norm`` ``[N]``, the first attribute's
        normalised MOS) for one epoch seeded by ``seed``, or ``None`` for the engine's shuffled batches (default).
        REQA composes each batch of micro-batches spanning the five quality scales."""
        return None

    @classmethod
    def dataset_kwargs(cls, dataset: Dataset, train_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """Constructor keyword arguments read from the training dataset and its training images ``train_ids``
        (``None``: every image); a value set in ``params.yaml`` wins. Default: none (SEM-HyperIQA and FHIQA:
        ``scenes``, the scenes of the training images)."""
        return {}

    def select_images(self, dataset: Dataset, ids: dict[str, list[str]], where: str) -> dict[str, list[str]]:
        """The image ids by role (``train``/``val``/``test``) this run uses, from the split's ``ids``: a model
        that cannot use some images refuses them here (one-line :class:`iqalab.data.schema.DataError` naming
        them, ``where`` = the experiment's params key path) or, where one of its options says so, drops them.
        Called by the engine before any item is built. Default: ``ids`` unchanged (TuningIQA: images without
        every camera parameter, ``missing_camera``)."""
        return ids

    # -- pairwise preference head ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_with_embedding(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """:meth:`predict` and the per-image embedding ``[B, D]`` its pair head compares, in one pass (models with
        ``has_pair_head``)."""
        raise NotImplementedError(f"model {self.registry_name!r} has no pair head (has_pair_head is False)")

    def pair_logits(self, emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
        """Logits ``[P, A]`` that image ``a`` is better than image ``b`` (attribute order of the model), from two
        rows of embeddings ``[P, D]`` of :meth:`predict_with_embedding` (models with ``has_pair_head``)."""
        raise NotImplementedError(f"model {self.registry_name!r} has no pair head (has_pair_head is False)")

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups; override for per-part learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def lr_scales(self, epoch: int) -> list[float] | None:
        """Factors on the scheduled learning rate of each :meth:`param_groups` group during ``epoch`` (a training
        protocol whose phases give parts different rates, e.g. DBCNN's fine-tuning phase); ``None`` (default):
        the schedule alone. The engine applies them for the epoch and restores the scheduled rates before the
        scheduler steps, so the schedule itself is unchanged."""
        return None

    def optimizer_phases(self) -> list[OptimizerPhase]:
        """Phases that each start a new optimiser (:class:`OptimizerPhase`: its first epoch, its optimiser, whether
        it starts from the best weights so far), in epoch order; ``[]`` (default): one optimiser for the whole
        run. A phase starting at epoch 0 sets the first optimiser (DBCNN's SGD head phase)."""
        return []

    def num_parameters(self) -> int:
        """Number of parameters (trainable or not)."""
        return sum(p.numel() for p in self.parameters())
