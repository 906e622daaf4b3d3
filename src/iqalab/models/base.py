"""The surface every model shares, so the engine, evaluation and CLI never special-case a model.

A model:

- is built as ``Model(attributes=[...], **params)`` and registered with ``@register("name")``;
- declares the batch keys it needs in ``inputs`` (subset of :data:`BATCH_KEYS`) so the loader builds only those;
- maps a batch to ``{attribute: scores[B]}`` in :meth:`forward`;
- may override :meth:`training_step` (losses, pairs, curricula), :meth:`predict` (test-time patch averaging)
  and :meth:`param_groups` (per-part learning rates).

Batch keys (``iqalab.data.loaders``): ``image`` float[B,3,H,W] ImageNet-normalised; ``cam`` float[B,7]
standardised camera parameters with ``cam_mask`` float[B,7] (1 = known); ``person_box`` / ``face_box``
float[B,4] pixel x0,y0,x1,y1 in the ``image`` tensor's frame (NaN rows when unknown); ``landmarks`` float[B,5,2]
pixels; ``scene_idx`` long[B]; ``mos`` / ``std`` float[B,A] in dataset units (NaN when missing), ``mos_norm``
float[B,A] scaled to [0, 1] by the dataset's MOS range; ``image_id`` list[str]. Pair batches (models whose
``inputs`` contain ``"pairs"``) are ``{"a": batch, "b": batch, "p": float[B], "attr_idx": long[B]}``.

Models predict in the normalised [0, 1] scale; the engine maps predictions back to dataset units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

BATCH_KEYS = frozenset(
    {"image", "cam", "person_box", "face_box", "landmarks", "scene_idx", "pairs", "mos", "std", "image_id"}
)


@dataclass
class StepContext:
    """What a training step may need to know about where it is in training."""

    epoch: int
    epochs: int
    step: int = 0


def masked_l1(pred: dict[str, torch.Tensor], target: torch.Tensor, attributes: list[str],
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error over the attributes that have a target (NaN targets are skipped)."""
    losses = []
    for k, attr in enumerate(attributes):
        t = target[:, k]
        mask = ~torch.isnan(t)
        if mask.any():
            err = (pred[attr][mask] - t[mask]).abs()
            if weight is not None:
                err = err * weight[mask, k]
            losses.append(err.mean())
    if not losses:
        return next(iter(pred.values())).sum() * 0.0
    return torch.stack(losses).mean()


def masked_mse(pred: dict[str, torch.Tensor], target: torch.Tensor, attributes: list[str]) -> torch.Tensor:
    """Mean squared error per attribute (NaN targets skipped), averaged over the attributes that have a target
    (SFIQA-Assessor Eq. 14; DBCNN's l2 loss)."""
    losses = []
    for k, attr in enumerate(attributes):
        t = target[:, k]
        mask = ~torch.isnan(t)
        if mask.any():
            losses.append(((pred[attr][mask] - t[mask]) ** 2).mean())
    if not losses:
        return next(iter(pred.values())).sum() * 0.0
    return torch.stack(losses).mean()


class IQAModel(nn.Module):
    """Base class: multi-attribute quality regressor with a uniform surface."""

    registry_name: ClassVar[str] = ""
    #: batch keys this model reads
    inputs: ClassVar[frozenset[str]] = frozenset({"image"})
    #: paper the model reproduces (shown in model cards)
    paper: ClassVar[str] = ""

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

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups; override for per-part learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def num_parameters(self) -> int:
        """Number of parameters (trainable or not)."""
        return sum(p.numel() for p in self.parameters())
