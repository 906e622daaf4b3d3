"""Batch samplers that shape what a training batch contains.

:class:`ScaleMicroBatchSampler` builds the micro-batches of REQA's coarse-grained metric (Li & Huo, "REQA:
Coarse-to-fine Assessment of Image Quality to Alleviate the Range Effect", Sec. III-C.1): every group of five
consecutive images in a batch holds one image from each of five quality scales (bins of MOS), so a model can
compute rank and gradient terms over all pairs inside a micro-batch. It works from any dataset's MOS.

Reading of the paper: "five different quality scales" is not defined further. The default bins are quantiles of
the training MOS (equal counts per scale), which keeps every scale populated on datasets whose MOS is narrow and
peaked (KonIQ-10k, CLIVE, the simulator); ``binning="uniform"`` uses equal-width bins of the normalised [0, 1]
MOS (the ACR tiers Bad .. Excellent for five scales) and falls back to quantiles when a bin is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import numpy as np
from torch.utils.data import Sampler

log = logging.getLogger(__name__)

Binning = Literal["quantile", "uniform"]


def quality_scales(mos_norm: np.ndarray, n_scales: int = 5, binning: Binning = "quantile") -> np.ndarray:
    """Quality scale (0 = lowest MOS .. ``n_scales - 1``) of each image; ``-1`` where MOS is NaN.

    ``quantile``: images sorted by MOS (ties broken by index, so the result is deterministic) and cut into
    ``n_scales`` groups of nearly equal size. ``uniform``: equal-width bins of [0, 1]; if any bin is empty the
    quantile bins are used instead (with a warning).
    """
    mos = np.asarray(mos_norm, dtype=float).reshape(-1)
    scales = np.full(mos.shape[0], -1, dtype=np.int64)
    valid = np.flatnonzero(~np.isnan(mos))
    if valid.size < n_scales:
        raise ValueError(f"need at least {n_scales} images with a MOS to build {n_scales} quality scales, "
                         f"got {valid.size}")
    if binning == "uniform":
        edges = np.linspace(0.0, 1.0, n_scales + 1)[1:-1]
        bins = np.digitize(np.clip(mos[valid], 0.0, 1.0), edges)
        counts = np.bincount(bins, minlength=n_scales)
        if (counts > 0).all():
            scales[valid] = bins
            return scales
        log.warning("uniform MOS bins %s leave a quality scale empty: using quantile bins instead",
                    counts.tolist())
    elif binning != "quantile":
        raise ValueError(f"binning must be 'quantile' or 'uniform', got {binning!r}")
    order = valid[np.argsort(mos[valid], kind="stable")]
    for k, chunk in enumerate(np.array_split(order, n_scales)):
        scales[chunk] = k
    return scales


class ScaleMicroBatchSampler(Sampler[list[int]]):
    """Batch sampler of REQA micro-batches: ``n_scales`` consecutive indices, one from each quality scale.

    One epoch has ``M = floor(n_valid / n_scales)`` micro-batches (about one pass over the images). Each scale's
    images are drawn from a fresh random permutation, cycled when a scale holds fewer than ``M`` images (only
    possible with uneven ``uniform`` bins); with quantile bins every image appears at most once per epoch.
    Inside a micro-batch the indices are ordered by scale, lowest first. Batches hold
    ``max(1, batch_size // n_scales)`` micro-batches, so their size is a multiple of ``n_scales``; a
    ``batch_size`` that is not a multiple is rounded down (up to ``n_scales`` if smaller) with a warning.
    Images without a MOS (NaN) are never sampled. The same ``seed`` gives the same batches.
    """

    def __init__(self, mos_norm: np.ndarray, batch_size: int, seed: int, n_scales: int = 5,
                 binning: Binning = "quantile", drop_last: bool = False) -> None:
        if n_scales < 2:
            raise ValueError(f"n_scales must be at least 2, got {n_scales}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.n_scales = int(n_scales)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.scale_of = quality_scales(mos_norm, self.n_scales, binning)
        self.micro_per_batch = max(1, batch_size // self.n_scales)
        if batch_size % self.n_scales:
            log.warning("batch_size %d is not a multiple of %d quality scales: batches hold %d images",
                        batch_size, self.n_scales, self.micro_per_batch * self.n_scales)
        self.members = [np.flatnonzero(self.scale_of == k) for k in range(self.n_scales)]
        self.n_micro = int((self.scale_of >= 0).sum()) // self.n_scales

    @property
    def group_size(self) -> int:
        """Rows that belong together in every batch (one micro-batch): a data-parallel shard takes whole groups
        (:class:`iqalab.train.distributed.ShardedBatchSampler`)."""
        return self.n_scales

    @property
    def batch_size(self) -> int:
        """Images per full batch (a multiple of ``n_scales``)."""
        return self.micro_per_batch * self.n_scales

    def micro_batches(self) -> np.ndarray:
        """The epoch's micro-batches as an int array ``[M, n_scales]`` (column k = scale k)."""
        rng = np.random.default_rng(self.seed)
        columns = []
        for members in self.members:
            reps = -(-self.n_micro // members.size)  # ceil: cycle small scales
            stream = np.concatenate([rng.permutation(members) for _ in range(reps)])
            columns.append(stream[: self.n_micro])
        return np.stack(columns, axis=1)

    def __iter__(self) -> Iterator[list[int]]:
        micro = self.micro_batches()
        for start in range(0, self.n_micro, self.micro_per_batch):
            chunk = micro[start:start + self.micro_per_batch]
            if self.drop_last and len(chunk) < self.micro_per_batch:
                return
            yield chunk.reshape(-1).tolist()

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_micro // self.micro_per_batch
        return -(-self.n_micro // self.micro_per_batch)
