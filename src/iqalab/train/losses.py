"""Loss functions shared by the models (one implementation each, tested by hand-computed values).

- :func:`masked_loss` - the one loop over attributes with missing targets: per attribute a loss on the images
  rated for it (NaN targets skipped), then the mean over the attributes that have a target. :func:`masked_l1`
  (the default objective), :func:`masked_mse` (SFIQA-Assessor Eq. 14, DBCNN's l2), :func:`masked_huber` (FHIQA
  Sec. IV-B) and REQA's tolerance terms (Eq. 13) are this loop with another per-attribute loss.
- :func:`confidence_weighted_l1` - TuningIQA Eq. 10 (Sheng et al., "TuningIQA: Fine-Grained Blind Image Quality
  Assessment for Livestreaming Camera Tuning", Sec. "Learning Objectives"): L1 on every attribute, each image
  weighted by ``exp(-v_i)`` with ``v_i`` its annotation variance.
- :func:`pairwise_bce` - TuningIQA Eq. 11: binary cross-entropy between the refined preference ``c_pq`` (Eq. 2;
  0, 0.5, 1 or a vote fraction) and the predicted probability that ``I_p`` is better.

Eq. 10 reduces differently (attributes summed per image, then the mean over images), so it is its own function.

Reading of the garbled equations: Eq. 11 prints a minus sign in front of ``sum BCE(c, c_hat)``; BCE is already
non-negative, so the minus belongs to the expanded log-likelihood form and the loss here is the usual mean BCE.
Eq. 10 puts one ``v_i`` per image outside the attribute sum; datasets here carry one annotation std per image and
attribute, so the weight is applied per attribute (``exp(-v_i^attr)``), which equals Eq. 10 whenever the
variances of an image agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

#: ``(predictions, targets) -> scalar`` loss of one attribute over the images rated for it
AttributeLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def masked_loss(pred: Mapping[str, torch.Tensor] | torch.Tensor, target: torch.Tensor, loss: AttributeLoss,
                attributes: Sequence[str] | None = None) -> torch.Tensor:
    """Mean over the attributes that have a target of ``loss`` on the images rated for that attribute.

    Args:
        pred: ``{attribute: [B]}`` (``attributes`` gives the column order of ``target``) or ``[B, A]``.
        target: ``[B, A]``; NaN entries (attribute not rated for that image) are left out.
        loss: one attribute's loss on its rated images, e.g. ``lambda p, t: (p - t).abs().mean()``.

    Returns:
        Scalar; 0 with a graph to ``pred`` when no attribute has a target.
    """
    if isinstance(pred, Mapping):
        if attributes is None:
            raise ValueError("masked_loss: a mapping of predictions needs the attributes (target column order)")
        columns = [pred[attr] for attr in attributes]
    else:
        columns = [pred[:, k] for k in range(target.shape[1])]
    losses = []
    for k, column in enumerate(columns):
        t = target[:, k]
        mask = ~torch.isnan(t)
        if mask.any():
            losses.append(loss(column[mask], t[mask]))
    if not losses:
        return sum(c.sum() for c in columns) * 0.0
    return torch.stack(losses).mean()


def masked_l1(pred: Mapping[str, torch.Tensor], target: torch.Tensor, attributes: Sequence[str]) -> torch.Tensor:
    """Mean absolute error over the attributes that have a target (:func:`masked_loss`)."""
    return masked_loss(pred, target, lambda p, t: (p - t).abs().mean(), attributes)


def masked_mse(pred: Mapping[str, torch.Tensor], target: torch.Tensor, attributes: Sequence[str]) -> torch.Tensor:
    """Mean squared error over the attributes that have a target (SFIQA-Assessor Eq. 14; DBCNN's l2 loss)."""
    return masked_loss(pred, target, lambda p, t: ((p - t) ** 2).mean(), attributes)


def masked_huber(pred: Mapping[str, torch.Tensor], target: torch.Tensor, attributes: Sequence[str],
                 delta: float) -> torch.Tensor:
    """Huber loss (``delta``) over the attributes that have a target (FHIQA, seed 001 Sec. IV-B)."""
    return masked_loss(pred, target, lambda p, t: F.huber_loss(p, t, delta=delta), attributes)


def confidence_weighted_l1(pred: torch.Tensor, target: torch.Tensor,
                           variance: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 10: ``1/|D| * sum_i sum_attr exp(-v_i^attr) * |s_hat_i^attr - s_i^attr|``.

    Args:
        pred: predicted scores ``[B, A]`` (or ``[B]``).
        target: target scores, same shape; NaN entries (attribute not rated) are left out of the sum.
        variance: annotation variance, shape of ``target`` or ``[B]`` (one per image, Eq. 10 as printed);
            NaN (unknown) gives weight 1, as does ``None``.

    Returns:
        Scalar: the attribute-summed, confidence-weighted absolute error averaged over the images that have at
        least one target (0, with a graph to ``pred``, when none has).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.dim() == 1:
        pred, target = pred[:, None], target[:, None]
        variance = None if variance is None else variance.reshape(-1, 1)
    present = ~torch.isnan(target)
    if variance is None:
        weight = torch.ones_like(target)
    else:
        variance = variance.to(target.dtype)
        if variance.dim() == 1:
            variance = variance[:, None].expand_as(target)
        weight = torch.exp(-torch.nan_to_num(variance, nan=0.0).clamp_min(0.0))
    err = (pred.float() - torch.nan_to_num(target.float())).abs() * weight.float()
    err = torch.where(present, err, torch.zeros_like(err))
    rated = present.any(dim=1)
    if not rated.any():
        return pred.sum() * 0.0
    return err.sum(dim=1)[rated].mean()


def pairwise_bce(pred: torch.Tensor, target: torch.Tensor, from_logits: bool = True) -> torch.Tensor:
    """Eq. 11: mean over pairs of the attribute-summed ``BCE(c_pq^attr, c_hat_pq^attr)``.

    Args:
        pred: logits (``from_logits=True``, numerically safe and autocast-safe) or probabilities that ``a`` is
            better, ``[P]`` (one attribute per pair) or ``[P, A]``.
        target: refined preferences in [0, 1] of the same shape; NaN entries are skipped.

    Returns:
        Scalar loss (0, with a graph to ``pred``, when no target is present).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.dim() == 1:
        pred, target = pred[:, None], target[:, None]
    present = ~torch.isnan(target)
    clean = torch.nan_to_num(target.float()).clamp(0.0, 1.0)
    if from_logits:
        bce = F.binary_cross_entropy_with_logits(pred.float(), clean, reduction="none")
    else:
        prob = pred.float().clamp(1e-7, 1 - 1e-7)
        bce = -(clean * torch.log(prob) + (1 - clean) * torch.log1p(-prob))
    bce = torch.where(present, bce, torch.zeros_like(bce))
    rated = present.any(dim=1)
    if not rated.any():
        return pred.sum() * 0.0
    return bce.sum(dim=1)[rated].mean()
