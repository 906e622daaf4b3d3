"""Multi-process training with ``torch.distributed`` (DDP), launched by ``torchrun``.

One experiment on N GPUs (or N CPU processes)::

    torchrun --standalone --nproc_per_node=N -m iqalab train <experiment>

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init` reads them and joins the process group
(NCCL on CUDA, gloo on CPU). Without them every function here is the identity of a single process, so the engine
has one code path.

What the engine keeps identical to a single-process run:

- ``train.batch_size`` is the *global* batch. The engine draws the same global batches as one process would (same
  seed, same sampler) and :class:`ShardedBatchSampler` hands rank ``r`` rows ``r, r + N, ...`` of each. DDP averages
  the gradients of the shards, which is the gradient of the global batch's mean loss (up to BatchNorm statistics,
  which stay per rank as in the reference implementations).
- Validation and test predictions are split across ranks and gathered (:func:`gather_rows`), so every rank sees
  the same full predictions, takes the same best-epoch and early-stopping decisions, and rank 0 alone writes
  checkpoints and results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` of ``world_size``, GPU ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs curves and shows progress bars."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


def env_info() -> DistInfo:
    """Rank, world size and local rank from the variables ``torchrun`` sets (single process when absent)."""
    return DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def init(use_cuda: bool = True) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (idempotent); returns this process's :class:`DistInfo`.

    The backend is NCCL when ``use_cuda`` and CUDA is available (each rank takes GPU ``LOCAL_RANK``), else gloo.
    """
    wanted = env_info()
    if not wanted.enabled or not dist.is_available():
        return wanted
    if not dist.is_initialized():
        cuda = use_cuda and torch.cuda.is_available()
        if cuda:
            if wanted.local_rank >= torch.cuda.device_count():
                raise RuntimeError(f"LOCAL_RANK={wanted.local_rank} but only {torch.cuda.device_count()} CUDA "
                                   "devices are visible: lower --nproc_per_node")
            torch.cuda.set_device(wanted.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
        log.info("rank %d/%d joined the %s process group", wanted.rank, wanted.world_size, dist.get_backend())
    return info()


def info() -> DistInfo:
    """This process's :class:`DistInfo` (single process unless :func:`init` joined a group)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return DistInfo()


def shutdown() -> None:
    """Leave the process group (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if info().enabled:
        dist.barrier()


class ShardedBatchSampler(Sampler[list[int]]):
    """Rank ``r``'s share of each global batch: rows ``r, r + N, ...`` (``N`` = world size), or with ``group`` > 1
    whole groups of ``group`` consecutive rows, groups ``r, r + N, ...`` (REQA's 5-image micro-batches, one image
    per quality scale, Sec. III-C: a shard of single rows would mix images of different micro-batches, and the
    coarse loss would compare images that were never drawn together).

    ``batches`` is drawn once, at construction, so that every rank (same seed) holds the same global batches.
    Batches with fewer rows (groups) than ranks are dropped on every rank, and counted in :attr:`dropped`: each
    rank must take the same number of steps, or DDP's gradient all-reduce waits forever.
    """

    def __init__(self, batches: Iterable[Iterable[int]], rank: int, world_size: int, group: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if group < 1:
            raise ValueError(f"group must be at least 1, got {group}")
        self.rank, self.world_size, self.group = rank, world_size, int(group)
        drawn = [list(b) for b in batches]
        self.batches = [b for b in drawn if len(b) // self.group >= world_size]
        self.dropped = len(drawn) - len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        g = self.group
        for batch in self.batches:
            groups = [batch[i:i + g] for i in range(0, len(batch) - len(batch) % g, g)]
            yield [row for part in groups[self.rank::self.world_size] for row in part]

    def __len__(self) -> int:
        return len(self.batches)


def shard_indices(n: int, dist_info: DistInfo) -> np.ndarray:
    """Indices of ``n`` items this rank predicts: ``rank, rank + N, ...``."""
    return np.arange(dist_info.rank, n, dist_info.world_size)


def gather_rows(local: np.ndarray, indices: np.ndarray, n: int, dist_info: DistInfo) -> np.ndarray:
    """Reassemble the full ``[n, ...]`` array from each rank's rows ``local`` at ``indices`` (every rank gets it)."""
    if not dist_info.enabled:
        if len(indices) != n:
            raise ValueError(f"a single process must hold all {n} rows, got {len(indices)}")
        out = np.empty((n, *local.shape[1:]), dtype=local.dtype)
        out[indices] = local
        return out
    parts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * dist_info.world_size
    dist.all_gather_object(parts, (indices, local))
    out = np.empty((n, *local.shape[1:]), dtype=local.dtype)
    seen = np.zeros(n, dtype=bool)
    for part in parts:
        assert part is not None
        idx, rows = part
        out[idx] = rows
        seen[idx] = True
    if not seen.all():
        raise RuntimeError(f"gathered predictions miss {int((~seen).sum())} of {n} rows")
    return out


def mean_over_ranks(value: float, dist_info: DistInfo) -> float:
    """The mean of a per-rank number (e.g. the epoch's training loss) over all ranks; ``value`` itself alone."""
    if not dist_info.enabled:
        return float(value)
    parts: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(parts, float(value))
    return float(np.mean(parts))


def sync_buffers(module: torch.nn.Module, dist_info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so evaluation is the same everywhere."""
    if not dist_info.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def weights_checksum(module: torch.nn.Module) -> str:
    """Sum of all parameters, 8 significant digits: equal on every rank after synchronised DDP steps."""
    with torch.no_grad():
        total = sum(float(p.double().sum()) for p in module.parameters())
    return f"{total:.8e}"
