"""The training engine: one loop for every model, seeded, resumable and device-agnostic.

Per experiment and split: build the model from the registry, train with the model's own ``training_step`` (or
``fit`` for non-trainable models such as NIQE), validate each epoch (mean SRCC over attributes), checkpoint
atomically every epoch (``last.pt``, with optimiser state, removed once training completes) and at the best
validation score (``best.pt``, weights and config only), stop early after ``patience`` epochs without
improvement, then predict the val and test images with the best weights. Random draws are seeded by ``(seed,
epoch)``, so a run killed at any point and resumed from ``last.pt`` ends with the same metrics as an
uninterrupted one (on CPU). On CUDA, and with ``train.cpu_amp`` on a CPU with native bf16, the loop uses bf16
autocast and channels_last (:func:`autocast_in_effect`); ``train.compile`` compiles the model's forward with
``torch.compile``. Launched by ``torchrun``, the same loop trains with DDP (:mod:`iqalab.train.distributed`):
``train.batch_size`` stays the global batch, rank 0 writes every file.

Nothing finished is lost (issue 26): a completed split stores its predictions and a ``done.json`` with the run's
fingerprint, so re-running an unchanged experiment, or one killed in a later split, trains only what is not
finished; a re-run with another configuration trains in ``<exp>/.next/<split>`` and replaces the finished run only
once complete (:func:`swap_in`); a second trainer of the same experiment is refused (:func:`experiment_lock`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Subset
from tqdm.auto import tqdm

from iqalab import provenance
from iqalab.config import OPTIMIZERS, Params, TrainConfig, check_splits
from iqalab.data.cache import ImageCache
from iqalab.data.loaders import (
    CamStats,
    ImageItems,
    NativeImageItems,
    PairItems,
    PatchItems,
    collate,
    mos_pairs,
    normalise_batch,
)
from iqalab.data.regions import check_regions, summarise_regions
from iqalab.data.schema import CAM_COLUMNS, PREDICTION_COLUMNS, Dataset, read_dataset
from iqalab.io import atomic_path, load_error_reason, write_json, write_parquet
from iqalab.models.base import IQAModel, OptimizerPhase, StepContext
from iqalab.models.cards import input_size
from iqalab.models.registry import build_model, get_model_class
from iqalab.repro import seed_everything
from iqalab.train import distributed

log = logging.getLogger(__name__)



class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (wrong model, missing keys, corrupt file)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under ``torchrun`` each rank takes GPU ``LOCAL_RANK``."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", distributed.env_info().local_rank)


def cpu_native_bf16() -> str | None:
    """The units on which this CPU runs bf16 convolutions and matrix products in hardware (oneDNN): ``"AMX"``
    (tiles; Intel Xeon 4th generation and later) or ``"AVX512_BF16"`` (e.g. AMD EPYC Zen 4, Intel Cooper Lake);
    None on other CPUs, which train and score in fp32 (bf16 there is converted in software; not measured here).

    Measured with ``benchmarks/bench_train_step.py`` (``--bf16`` times bf16 on any CPU): on the Xeon with AMX a
    ResNet-18 + MLP step was 1.69x faster in bf16 with channels_last; on an AMD EPYC with AVX512_BF16 and no AMX,
    1.95x (README, where ``train.amp`` is described)."""
    probes = (("AMX", "_is_amx_tile_supported"), ("AVX512_BF16", "_is_avx512_bf16_supported"))
    for label, name in probes:
        probe = getattr(getattr(torch, "cpu", None), name, None)
        try:
            if probe is not None and probe():
                return label
        except RuntimeError:  # pragma: no cover - a torch build without the CPU feature query
            continue
    return None


def autocast_in_effect(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the training steps run under bf16 autocast (and, with ``train.channels_last``, in channels_last):
    ``train.amp`` on CUDA, and on a CPU with native bf16 units when ``train.cpu_amp`` also allows it
    (:func:`cpu_native_bf16`). Predictions are made in fp32 either way (:func:`predict_items`)."""
    if not cfg.amp:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cfg.cpu_amp and cpu_native_bf16() is not None


def channels_last_in_effect(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether ``train.channels_last`` applies: on CUDA always (its convolutions prefer that layout in fp32 too),
    on a CPU only together with bf16 autocast (:func:`autocast_in_effect`; oneDNN's fp32 kernels gain nothing
    from it there, docs/notes/make-repro-time-2026-12.md)."""
    return cfg.channels_last and (device.type == "cuda" or autocast_in_effect(cfg, device))


def training_precision(cfg: TrainConfig, device: torch.device, trainable: bool = True) -> str:
    """What the predictions JSON records of a run's arithmetic (``train_precision``): e.g. ``"bf16 autocast,
    channels_last (CPU with AVX512_BF16); fp32 predictions"`` or ``"fp32"``; ``"fp32 (not trained)"`` for a
    model used as published or fitted without gradient steps."""
    if not trainable:
        return "fp32 (not trained)"
    layout = ", channels_last" if channels_last_in_effect(cfg, device) else ""
    if not autocast_in_effect(cfg, device):
        return f"fp32{layout} (CUDA)" if layout else "fp32"
    where = "CUDA" if device.type == "cuda" else f"CPU with {cpu_native_bf16()}"
    return f"bf16 autocast{layout} ({where}); fp32 predictions"


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a (nested) batch to ``device``; uint8 ``image`` batches, ``patches`` and
    ``face_patches`` (lists of ``[B, n, 3, s, s]``, :class:`PatchItems`) are normalised there."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        out = {k: to_device(v, device, channels_last) for k, v in batch.items()}
        image = out.get("image")
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
            out["image"] = normalise_batch(image)
            if channels_last:
                out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
        for key in ("patches", "face_patches"):
            if isinstance(out.get(key), list):
                out[key] = [normalise_batch(p) if p.dtype == torch.uint8 else p for p in out[key]]
        return out
    if isinstance(batch, list) and batch and isinstance(batch[0], torch.Tensor):
        return [to_device(v, device, channels_last) for v in batch]
    return batch


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object (model + train config + data checksum)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: the code that decides what a run computes, relative to the ``iqalab`` package: part of a run's fingerprint
#: (:func:`source_hash`), so a finished split is reused only by the code that made it (DVC's ``persist: true``
#: on ``build/models/<exp>`` relies on it: docs/reliability.md). With :data:`RUN_CODE_EXEMPT` it is exactly the code
#: deps of the train stage in dvc.yaml, which are the modules a training process imports (``tests/test_layout.py``
#: checks both): the dataset adapters, the simulator and the split makers write the dataset, whose checksum the
#: fingerprint holds itself
RUN_CODE = ("__init__.py", "train", "models", "data/cache.py", "data/detect.py", "data/loaders.py",
            "data/regions.py", "data/samplers.py", "data/schema.py", "config.py", "io.py", "analysis/metrics.py",
            "numerics.py", "repro.py", "stages/train.py", "status.py")
#: the train stage's code deps left out of :data:`RUN_CODE`, each with why it cannot change what a run computes
RUN_CODE_EXEMPT = {
    "memory.py": "allocator settings: where memory comes from, no computed value (iqalab.memory)",
    "notebook.py": "loads the params, whose values the run's fingerprint holds itself",
    "plots.py": "figures, drawn from the run's files after training",
    "provenance.py": "the provenance footers of the written files, not the run's numbers",
}


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 over the files of :data:`RUN_CODE` (paths and bytes, sorted; caches skipped)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for entry in RUN_CODE:
        top = package / entry
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()
                                                    and "__pycache__" not in p.parts and p.suffix != ".pyc")
        for file in files:
            digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class RunSpec:
    """Everything that defines one training run (one experiment on one split)."""

    experiment: str
    dataset: Dataset
    cache: ImageCache
    model_name: str
    model_kwargs: dict[str, Any]
    train: TrainConfig
    split: str
    seed: int
    out_dir: Path
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_kwargs": self.model_kwargs,
                "attributes": self.dataset.attributes, "mos_range": list(self.dataset.mos_range),
                "cache_size": self.cache.size, "train": self.train.model_dump(), "split": self.split,
                "seed": self.seed, "data": self.dataset.meta.get("checksums", {})}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic ``torch.save``: a kill mid-write never leaves a truncated checkpoint.

    A failed write (disk full: torch reports it as a bare ``RuntimeError`` from its stream writer) raises
    :class:`CheckpointError` naming ``path``; the previous checkpoint at ``path`` is kept.
    """
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot write checkpoint, previous one kept (disk full?): {exc}") from exc


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) a run killed inside :func:`save_checkpoint` left behind.

    They are never read (only ``last.pt``/``best.pt`` are), but each is as large as a checkpoint.
    """
    stale = sorted(folder.glob(".*.pt.*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed %s left by an interrupted run", path)
    return stale


#: written last into a run folder, with the predictions beside it: the run is complete (fingerprint, size, notes)
DONE_FILE = "done.json"
#: the split's val/test predictions (dataset units), kept so a finished split is skipped and its rows reused
SPLIT_PREDICTIONS = "predictions.parquet"
#: the pair head's P(a better) on the split's test pairs (TuningIQA Eq. 9, FG-ACC in pairwise mode), beside them
SPLIT_PAIR_PREDICTIONS = "pair_predictions.parquet"
PAIR_PREDICTION_COLUMNS = ["image_a", "image_b", "attribute", "split", "prob_a"]


class TrainingLocked(RuntimeError):
    """Another process is training the same experiment."""


def staging_dir(final: Path) -> Path:
    """Where a re-run of the finished run in ``final`` trains: ``<exp>/.next/<split>`` (swapped in when complete).

    Inside the experiment folder (the stage's DVC output) and one level deeper than the split folders, so
    ``<exp>/*/history.json`` never sees an unfinished run.
    """
    return final.parent / ".next" / final.name


def _retired_dir(final: Path) -> Path:
    return final.parent / ".old" / final.name


def holds_finished_run(folder: Path) -> bool:
    """``folder`` holds a run whose training ended (``best.pt`` and no ``last.pt`` resume point)."""
    return (folder / "best.pt").is_file() and not (folder / "last.pt").exists()


def finished_predictions(folder: Path, fp: str) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The stored predictions and ``done.json`` of a complete run in ``folder`` with fingerprint ``fp``, else None."""
    done, preds = folder / DONE_FILE, folder / SPLIT_PREDICTIONS
    if not (done.is_file() and preds.is_file() and (folder / "best.pt").is_file()):
        return None
    try:
        info = json.loads(done.read_text())
        if info.get("fingerprint") != fp:
            return None
        return pd.read_parquet(preds), info
    except (OSError, ValueError) as exc:  # damaged marker or table: train again rather than trust it
        log.warning("%s: stored run unreadable (%s); training again", folder, exc)
        return None


def finish_swap(final: Path) -> None:
    """Complete or undo a swap a kill interrupted (between :func:`swap_in`'s two renames, or before the cleanup).

    With ``final`` missing, a complete staged run is moved in, else the retired run is put back; a leftover
    retired run is deleted once ``final`` exists, and ``.old``/``.next`` with it when nothing else is in them.
    """
    staged, retired = staging_dir(final), _retired_dir(final)
    if not retired.exists():
        return
    if not final.exists():
        source = staged if (staged / DONE_FILE).is_file() else retired
        os.replace(source, final)
        log.info("%s: completed a swap an interrupted run left (from %s)", final, source)
    if retired.exists():
        shutil.rmtree(retired)
    _remove_empty_parents(staged, retired)


def _remove_empty_parents(*folders: Path) -> None:
    """Remove the parents of ``folders`` (``.next``, ``.old``) that are empty; keep any that holds something."""
    for parent in {folder.parent for folder in folders}:
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when empty


def swap_in(staged: Path, final: Path) -> None:
    """Replace the finished run in ``final`` by the complete run in ``staged`` (two renames; see
    :func:`finish_swap` for a kill between them), then delete the old run."""
    retired = _retired_dir(final)
    retired.parent.mkdir(parents=True, exist_ok=True)
    if retired.exists():
        shutil.rmtree(retired)
    os.replace(final, retired)
    os.replace(staged, final)
    shutil.rmtree(retired)
    _remove_empty_parents(staged, retired)


@contextlib.contextmanager
def experiment_lock(root: Path, experiment: str) -> Iterator[None]:
    """Hold ``build/locks/train-<experiment>.lock`` while training; a second trainer is refused at once.

    An OS lock (``filelock``: ``flock`` on POSIX), so a killed holder never leaves a stale lock. Only the main
    process of a ``torchrun`` group takes it.
    """
    from filelock import FileLock, Timeout

    if distributed.env_info().rank != 0:
        yield
        return
    path = root / "build" / "locks" / f"train-{experiment}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TrainingLocked(f"experiment {experiment!r} is already being trained by another process (lock "
                             f"{path} is held); wait for it to finish or stop it") from None
    try:
        yield
    finally:
        lock.release()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with a clear error for missing or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only checkpoint: {load_error_reason(exc)}"
                              ) from None
    except Exception as exc:  # noqa: BLE001 - many failure types for a damaged file
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only checkpoint ({load_error_reason(exc)})"
                              ) from None


def load_model_state(model: IQAModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, naming the model and the mismatching keys instead of dumping tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{source}: checkpoint does not fit model {model.registry_name!r}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(wrong)} keys with another shape {wrong[:5]}"
        )
    model.load_state_dict(state)


def model_from_checkpoint(ckpt: dict[str, Any], source: str = "checkpoint") -> IQAModel:
    """Rebuild the model a checkpoint was trained as, and load its weights."""
    if "config" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{source}: not an iqalab checkpoint (keys: {sorted(ckpt)[:8]})")
    cfg = ckpt["config"]
    model = build_model(cfg["model_name"], cfg["attributes"], **cfg["model_kwargs"])
    load_model_state(model, ckpt["model"], source)
    model.eval()
    return model


def _loader(dataset: Any, batch_size: int, shuffle: bool, seed: int, workers: int,
            batch_sampler: Any = None) -> DataLoader:
    """The DataLoader of training and prediction. :class:`ImageItems` build each batch at once
    (``__getitems__``: one array per batch, no per-item dicts), which :func:`~iqalab.data.loaders.collate` passes
    through; other datasets' items are collated by torch's ``default_collate``."""
    generator = torch.Generator().manual_seed(seed)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate,
                          pin_memory=torch.cuda.is_available())
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
                      collate_fn=collate, pin_memory=torch.cuda.is_available(),
                      drop_last=shuffle and len(dataset) > batch_size)


def _optimizer(model: IQAModel, cfg: TrainConfig, kind: str | None = None) -> torch.optim.Optimizer:
    """A new optimiser over :meth:`IQAModel.param_groups`: ``kind`` (an :class:`OptimizerPhase`'s) or
    ``train.optimizer``."""
    groups = model.param_groups(cfg.lr)
    kind = kind or cfg.optimizer
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer {kind!r}: one of {', '.join(OPTIMIZERS)}")


def optimizer_phases(model: IQAModel, epochs: int, where: str) -> list[OptimizerPhase]:
    """The model's :meth:`IQAModel.optimizer_phases`, checked: starts strictly increasing inside the run's
    ``epochs``, known optimisers (a wrong phase is the model's bug: one line naming ``where``)."""
    phases = list(model.optimizer_phases())
    starts = [phase.start for phase in phases]
    if starts != sorted(set(starts)) or any(not 0 <= s < epochs for s in starts):
        raise ValueError(f"{where}: optimizer phases start at epochs {starts}; they must increase within "
                         f"0..{epochs - 1}")
    bad = [phase.optimizer for phase in phases if phase.optimizer is not None and phase.optimizer not in OPTIMIZERS]
    if bad:
        raise ValueError(f"{where}: optimizer phase with optimizer {bad[0]!r}: one of {', '.join(OPTIMIZERS)}")
    return phases


def phase_at(phases: list[OptimizerPhase], epoch: int) -> OptimizerPhase | None:
    """The phase ``epoch`` belongs to (the last starting at or before it); None before the first or without any."""
    current = None
    for phase in phases:
        if phase.start <= epoch:
            current = phase
    return current


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=cfg.step_epochs or [10**9], gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def prepared_batches(items: Any, batch_size: int, device: torch.device, channels_last: bool = False,
                     progress: bool = False, desc: str = "predict") -> Iterator[dict[str, Any]]:
    """The one batch contract of fitting and predicting: what a model's ``fit`` receives is exactly what its
    ``forward``/``predict`` receives (items in order, collated, moved to ``device`` and ImageNet-normalised by
    :func:`to_device`). Native-resolution items (:class:`NativeImageItems`) and items of different sizes come one
    image per batch."""
    base = items.dataset if isinstance(items, Subset) else items
    if isinstance(base, NativeImageItems) or not getattr(base, "same_size", True):
        batch_size = 1
    loader = _loader(items, batch_size, shuffle=False, seed=0, workers=0)
    for batch in tqdm(loader, disable=not progress, desc=desc, leave=False):
        yield to_device(batch, device, channels_last)


def image_items(model: IQAModel, ids: list[str], train: bool, resolution: str = "cache", **kw: Any) -> ImageItems:
    """Items of ``ids`` read from the store ``resolution`` selects (``train.resolution``): the square cache, or the
    native store, from which a model with ``patch_loader_options`` (HyperIQA, SEM-HyperIQA, FHIQA) gets its
    patches (face-region patches included) cut by the loader (:class:`PatchItems`: ``test_rounds`` rounds seeded
    by ``eval_seed`` in evaluation) and any other model its ``crop`` at native scale. ``kw``: the
    :class:`ImageItems` arguments (``cache`` = the square :class:`ImageCache`)."""
    if resolution == "native":
        kw["cache"] = kw["cache"].native
        options = getattr(model, "patch_loader_options", None)  # scales, face-region scales, rounds, seed
        if options is not None:
            return PatchItems(ids=ids, train=train, **options(), **kw)
    return ImageItems(ids=ids, train=train, **kw)


def eval_items_for(model: IQAModel, ids: list[str], eval_crop: int | None, resolution: str = "cache",
                   **common: Any) -> ImageItems:
    """Evaluation (and fitting) items in the form ``model`` declares: the square cache or the native store
    (:func:`image_items`), or each whole image at its native resolution (``input_resolution = "native"``: NIQE,
    BRISQUE)."""
    if model.input_resolution == "native":
        return NativeImageItems(ids=ids, **common)
    return image_items(model, ids, False, resolution, eval_crop=eval_crop, **common)


@torch.no_grad()
def predict_items(model: IQAModel, items: ImageItems, batch_size: int, device: torch.device,
                  amp: bool = False, channels_last: bool = False, progress: bool = False,
                  with_raw: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Normalised predictions ``[N, A]`` of ``model`` over ``items`` (in item order); with ``with_raw`` also the
    model's published raw score ``[N]`` (:meth:`IQAModel.predict_with_raw`; ``None`` when it has none).

    The engine predicts in fp32 (``amp=False``) even when it trains with bf16 autocast: bf16 keeps 8 mantissa
    bits, so scores closer than about 0.004 tie, which lowers SRCC and, for a barely trained model, can make the
    predictions constant (seen on an H200).

    Under DDP each rank predicts every ``world_size``-th item and the rows are gathered, so every rank returns
    the full array.
    """
    model.eval()
    dist_info = distributed.info()
    distributed.sync_buffers(model, dist_info)
    indices = distributed.shard_indices(len(items), dist_info)
    subset = items if not dist_info.enabled else Subset(items, indices.tolist())
    out, raws = [], []
    for batch in prepared_batches(subset, batch_size, device, channels_last,
                                  progress=progress and dist_info.is_main):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            pred, raw = model.predict_with_raw(batch)
        out.append(torch.stack([pred[a].float() for a in model.attributes], dim=1).cpu().numpy())
        if raw is not None:
            raws.append(raw.detach().double().cpu().numpy().reshape(-1))
    local = np.concatenate(out) if out else np.zeros((0, len(model.attributes)), dtype=np.float32)
    local_raw = np.concatenate(raws) if raws and len(raws) == len(out) else None
    if dist_info.enabled:
        local = distributed.gather_rows(local, indices, len(items), dist_info)
        if local_raw is not None:
            local_raw = distributed.gather_rows(local_raw[:, None], indices, len(items), dist_info)[:, 0]
    return (local, local_raw) if with_raw else local


def mean_srcc(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean SRCC over attributes with a target (the validation monitor)."""
    from iqalab.analysis.metrics import srcc

    values = []
    for k in range(target.shape[1]):
        ok = ~np.isnan(target[:, k])
        if ok.sum() >= 3:
            value = srcc(pred[ok, k], target[ok, k])
            if not math.isnan(value):
                values.append(value)
    return float(np.mean(values)) if values else float("nan")


def scene_median_srcc(pred: np.ndarray, target: np.ndarray, scenes: np.ndarray) -> float:
    """FHIQA's validation criterion (PIQ23 protocol, Sec. IV): the SRCC inside each validation scene, its median
    over scenes, averaged over attributes (scenes with fewer than 3 rated images are left out)."""
    from iqalab.analysis.metrics import srcc

    per_attribute = []
    for k in range(target.shape[1]):
        values = []
        for scene in np.unique(scenes):
            ok = (scenes == scene) & ~np.isnan(target[:, k])
            if ok.sum() >= 3:
                value = srcc(pred[ok, k], target[ok, k])
                if not math.isnan(value):
                    values.append(value)
        if values:
            per_attribute.append(float(np.median(values)))
    return float(np.mean(per_attribute)) if per_attribute else float("nan")


#: what each ``train.monitor`` keeps, in the words the predictions JSON records (``model_selection``)
MODEL_SELECTION = {
    "val_srcc": "best val SRCC",
    "val_scene_srcc": "best median per-scene val SRCC",
    "val_loss": "lowest val L1",
    "train_loss": "lowest training loss",
    "last": "last epoch",
}


def monitor_score(record: dict[str, float], monitor: str) -> float:
    """The number model selection maximises for ``train.monitor``: a validation SRCC, minus a loss, or the epoch
    itself for ``last`` (every epoch improves: the last weights are kept). NaN counts as the worst score. A split
    without val images never reaches here with a ``val_*`` monitor: :func:`check_monitor` refuses it."""
    if monitor == "last":
        return float(record["epoch"])
    score = record[monitor] if monitor in ("val_srcc", "val_scene_srcc") else -record[monitor]
    return -math.inf if math.isnan(score) else score


def check_monitor(cfg: TrainConfig, n_val: int, experiment: str, split: str, dataset: str) -> None:
    """Refuse, in one line, a ``val_*`` monitor on a split without val images (no silent fallback to the
    training loss): the user chooses ``last`` (the papers' fixed schedules: REQA, TuningIQA), ``train_loss``
    (stated in the table captions), or a dataset with val images (an adapter's ``val_fraction`` /
    ``val_scenes``)."""
    if cfg.monitor.startswith("val_") and n_val == 0:
        raise ValueError(
            f"experiments.{experiment}.train.monitor: {cfg.monitor!r} needs val images, and split {split!r} of "
            f"dataset {dataset!r} has none{' (val_images: train trains on them)' if cfg.val_images == 'train' else ''}"
            "; set train.monitor to 'last' (keep the last epoch) or 'train_loss' (lowest training loss), or give "
            "the dataset val images (adapter option val_fraction / val_scenes)")


def select_ids(ds: Dataset, split: str, cfg: TrainConfig) -> dict[str, list[str]]:
    """Image ids by role (``train``/``val``/``test``) of ``split`` as ``cfg`` selects them.

    ``subset: camera_complete`` keeps, in every role, the images whose seven camera parameters are all known:
    TuningIQA's FineLive-p ("the complete 7-parameter metadata for a subset of images", Sec. "Dataset"), on
    which Table 4's GCPF ablations train and test. ``val_images: train`` adds the val images to the training
    images: TuningIQA trains on all 451 training scenes and states no validation split.
    """
    ids = {role: ds.split_ids(split, role) for role in ("train", "val", "test")}
    if cfg.subset == "camera_complete":
        complete = ds.images.set_index("image_id")[list(CAM_COLUMNS)].notna().all(axis=1)
        before = sum(len(v) for v in ids.values())
        ids = {role: [i for i in role_ids if complete.loc[i]] for role, role_ids in ids.items()}
        log.info("split %s: %d of %d images have every camera parameter (subset camera_complete)", split,
                 sum(len(v) for v in ids.values()), before)
    if cfg.val_images == "train" and ids["val"]:
        ids = {"train": ids["train"] + ids["val"], "val": [], "test": ids["test"]}
    if not ids["train"]:
        raise ValueError(f"split {split!r} of dataset {ds.name!r} has no training images"
                         + (" with every camera parameter (subset camera_complete)"
                            if cfg.subset == "camera_complete" else ""))
    return ids


class TrainingStep(nn.Module):
    """``forward(batch)`` = ``model.training_step(batch, ctx)``: the module DDP wraps, so its gradient hooks see
    every model's own objective (pairs, curricula) rather than a bare ``forward``."""

    def __init__(self, model: IQAModel, ctx: StepContext) -> None:
        super().__init__()
        self.model = model
        self.ctx = ctx

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.training_step(batch, self.ctx)


def wrap_for_training(model: IQAModel, ctx: StepContext, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """The step module the loop calls: ``torch.compile``d forward when ``cfg.compile``; DDP under ``torchrun``.

    Compiling ``model`` in place compiles its ``forward`` (called by every ``training_step`` and by ``predict``),
    leaving losses and curricula eager.
    """
    if cfg.compile:
        mode = None if cfg.compile_mode == "default" else cfg.compile_mode
        model.compile(backend=cfg.compile_backend, mode=mode)
        log.info("torch.compile(backend=%s, mode=%s) on %s", cfg.compile_backend, cfg.compile_mode,
                 model.registry_name)
    step: nn.Module = TrainingStep(model, ctx)
    if distributed.info().enabled:
        ids = [device.index] if device.type == "cuda" else None
        # some models leave parts unused in a step (pair-only heads, curriculum stages)
        step = DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True)
    return step


def _iterate_train(step_module: nn.Module, model: IQAModel, loader: DataLoader, opt: torch.optim.Optimizer,
                   device: torch.device, cfg: TrainConfig, ctx: StepContext, progress: bool, desc: str) -> float:
    model.train()
    use_amp = autocast_in_effect(cfg, device)
    layout = channels_last_in_effect(cfg, device)
    total, count = 0.0, 0
    for batch in tqdm(loader, disable=not progress, desc=desc, leave=False):
        batch = to_device(batch, device, layout)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = step_module(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {ctx.step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        total += float(loss.detach())
        count += 1
        ctx.step += 1
    return total / max(count, 1)


def train_split(spec: RunSpec) -> pd.DataFrame:
    """Train (or resume) one run and return its val/test predictions in dataset units."""
    cfg, ds = spec.train, spec.dataset
    dist_info = distributed.init(use_cuda=cfg.device != "cpu")
    if dist_info.enabled and cfg.batch_size < dist_info.world_size:
        raise ValueError(f"experiments.{spec.experiment}.train.batch_size={cfg.batch_size} is the global batch: it "
                         f"must be at least the number of processes ({dist_info.world_size})")
    main = dist_info.is_main
    progress = spec.progress and main
    device = resolve_device(cfg.device)
    seed_everything(spec.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ids = select_ids(ds, spec.split, cfg)
    # e.g. the training scenes (SEM-HyperIQA, FHIQA: their scene space, recorded in the checkpoint); params win
    derived = get_model_class(spec.model_name).dataset_kwargs(ds, ids["train"])
    spec.model_kwargs = {**spec.model_kwargs, **{k: v for k, v in derived.items() if k not in spec.model_kwargs}}
    model = build_model(spec.model_name, ds.attributes, key_path=f"experiments.{spec.experiment}.model",
                        **spec.model_kwargs)
    ids = model.select_images(ds, ids, f"experiments.{spec.experiment}")  # e.g. TuningIQA's missing_camera
    # a region model refuses images never searched for people/faces (one-line DataError) unless allowed
    spec.extra["regions"] = check_regions(model, ds, ids, f"experiments.{spec.experiment}")
    if cfg.max_train_images and len(ids["train"]) > cfg.max_train_images:
        keep = np.random.default_rng(spec.seed).choice(len(ids["train"]), cfg.max_train_images, replace=False)
        ids["train"] = [ids["train"][i] for i in sorted(keep)]
    table = ds.images.set_index("image_id")
    cam_stats = CamStats.fit(table.loc[ids["train"]].reset_index())
    common = dict(ds=ds, cache=spec.cache, inputs=model.inputs, cam_stats=cam_stats, seed=spec.seed)
    train_items = image_items(model, ids["train"], True, cfg.resolution, crop=cfg.crop, flip=cfg.flip,
                              vflip=cfg.vflip, **common)
    if not train_items.same_size and cfg.batch_size > 1 and model.trainable:
        raise ValueError(f"experiments.{spec.experiment}.train: the native images of {ds.name} differ in size; "
                         "set a crop (or batch_size 1) with resolution 'native'")
    eval_items = {role: eval_items_for(model, ids[role], cfg.eval_crop, cfg.resolution, **common)
                  for role in ("val", "test") if ids[role]}
    monitor_items = eval_items.get("val")
    spec.extra["n_params"] = model.num_parameters()
    trainable = model.trainable and any(p.requires_grad for p in model.parameters())
    if trainable:
        check_monitor(cfg, len(ids["val"]), spec.experiment, spec.split, ds.name)
    # how the kept weights were chosen (null: fitted or used as published, no epochs to choose from)
    spec.extra["model_selection"] = MODEL_SELECTION[cfg.monitor] if trainable else None
    # what the predictions JSON records of this run's inputs (TuningIQA Table 2 "Input Size", FineLive-p sizes)
    spec.extra["input_size"] = input_size(model, train_items if trainable else None,
                                          eval_items.get("test", eval_items.get("val")))
    spec.extra["n_images"] = {role: len(role_ids) for role, role_ids in ids.items()}
    model.to(device)
    if channels_last_in_effect(cfg, device):
        model.to(memory_format=torch.channels_last)
    spec.extra["train_precision"] = training_precision(cfg, device, trainable)
    config = spec.config() | {"cam_stats": {"mean": cam_stats.mean, "std": cam_stats.std}}
    config["eval_crop"] = cfg.eval_crop
    if spec.cache.max_side is not None:  # the native store's cap: scoring prepares files the same way
        config["max_side"] = spec.cache.max_side
    fp = fingerprint(config | {"code": source_hash()})  # the code too: another engine's split is not reused
    final = spec.out_dir
    if main:
        finish_swap(final)
    distributed.barrier()
    stored = finished_predictions(final, fp)
    if stored is not None:  # this exact run is complete: keep it, train nothing
        preds, info = stored
        log.info("%s/%s: finished run with this configuration found in %s; skipped", spec.experiment, spec.split,
                 final)
        spec.extra.update(n_params=info.get("n_params", spec.extra["n_params"]), notes=info.get("notes", {}),
                          train_seconds=info.get("train_seconds", 0.0), skipped=True,
                          train_precision=info.get("train_precision", "unknown (run predates the record)"),
                          model_selection=info.get("model_selection", spec.extra["model_selection"]))
        if (final / SPLIT_PAIR_PREDICTIONS).is_file():
            spec.extra["pair_predictions"] = pd.read_parquet(final / SPLIT_PAIR_PREDICTIONS)
        return preds
    # a finished run stays whole until its replacement is complete: the re-run trains beside it and is swapped in
    ckpt_dir = staging_dir(final) if holds_finished_run(final) else final
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if main:
        remove_stale_temporaries(ckpt_dir)
        if ckpt_dir != final:
            log.info("%s holds a finished run of another configuration: training in %s, swapped in when "
                     "complete", final, ckpt_dir)
    started = time.perf_counter()
    history: list[dict[str, float]] = []

    if not trainable:
        # the same items and batches as prediction (one batch contract: prepared_batches); lazy, so a model used
        # as published (its fit returns at once) decodes nothing
        fit_items = eval_items_for(model, ids["train"], cfg.eval_crop, cfg.resolution, **common)
        model.fit(prepared_batches(fit_items, cfg.batch_size, device, progress=progress, desc="fit"))
        spec.extra["n_params"] = model.num_parameters()  # fitted models size themselves (BRISQUE: its SVs)
        if main:
            save_checkpoint(ckpt_dir / "best.pt", {"model": model.state_dict(), "config": config,
                                                   "fingerprint": fp, "epoch": 0, "best": float("nan"),
                                                   "history": []})
    else:
        train_set: Any = train_items
        if "pairs" in model.inputs:
            pairs = ds.pairs if ds.pairs is not None else mos_pairs(train_items, 0)
            needed = max(0, len(train_items) * 2 - len(pairs))
            if needed:
                scene = table.loc[ids["train"], "scene"].reset_index(drop=True)
                extra = mos_pairs(train_items, needed, spec.seed, by_scene=scene)
                # an empty frame (a dataset without published pairs) is left out of the concat: pandas will let
                # an empty frame's dtypes count in a later version (FutureWarning)
                pairs = pd.concat([pairs, extra], ignore_index=True) if len(pairs) else extra
            if cfg.max_pairs and len(pairs) > cfg.max_pairs:
                pairs = _subsample_pairs(pairs, set(ids["train"]), cfg.max_pairs, spec.seed)
            train_set = PairItems(train_items, pairs)
            log.info("training on %d pairs", len(train_set))
        ctx = StepContext(epoch=0, epochs=cfg.epochs, step=0)
        step_module = wrap_for_training(model, ctx, cfg, device)
        phases = optimizer_phases(model, cfg.epochs, f"experiments.{spec.experiment} (model {spec.model_name})")
        first = phase_at(phases, 0)
        opt = _optimizer(model, cfg, first.optimizer if first else None)
        sched = _scheduler(opt, cfg)
        start_epoch, best, best_epoch, bad_epochs = 0, -math.inf, -1, 0
        last = ckpt_dir / "last.pt"
        if last.exists():
            state = load_checkpoint(last)
            if state.get("fingerprint") == fp:
                load_model_state(model, state["model"], str(last))
                resumed = phase_at(phases, state["epoch"])  # the optimiser of the phase the saved epoch ran in
                if resumed is not first:
                    opt = _optimizer(model, cfg, resumed.optimizer if resumed else None)
                    sched = _scheduler(opt, cfg)
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                start_epoch, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
                bad_epochs, history = state["bad_epochs"], list(state["history"])
                log.info("resuming %s/%s from epoch %d", spec.experiment, spec.split, start_epoch)
            else:
                log.info("%s: configuration changed, training from scratch", last)
        live = _live(ckpt_dir, resume=start_epoch > 0) if main else None
        ctx.epoch = start_epoch
        if cfg.num_workers:  # CRCs checked once here, not again in every epoch's forked workers
            train_items.verify()
        for epoch in range(start_epoch, cfg.epochs):
            if cfg.patience and bad_epochs >= cfg.patience:
                break
            ctx.epoch = epoch
            seed_everything(spec.seed * 1000 + epoch)
            train_set.set_epoch(epoch)
            batch_sampler = None
            if train_set is train_items:  # pair training draws pairs, not images
                batch_sampler = model.make_train_sampler(train_items.mos_norm[:, 0], cfg.batch_size,
                                                         spec.seed * 1000 + epoch)
            if dist_info.enabled:  # the global batches one process would draw, each cut into per-rank shards
                if batch_sampler is None:
                    generator = torch.Generator().manual_seed(spec.seed * 1000 + epoch)
                    batch_sampler = BatchSampler(RandomSampler(train_set, generator=generator), cfg.batch_size,
                                                 drop_last=len(train_set) > cfg.batch_size)
                # a sampler of fixed groups (REQA's micro-batches: group_size) is sharded group by group
                batch_sampler = distributed.ShardedBatchSampler(batch_sampler, dist_info.rank, dist_info.world_size,
                                                                getattr(batch_sampler, "group_size", 1))
                if not batch_sampler.batches:  # no silent fallback: a run of no step would save untrained weights
                    group = batch_sampler.group
                    raise ValueError(
                        f"{spec.experiment}/{spec.split}: every training batch holds fewer "
                        f"{'micro-batches of ' + str(group) if group > 1 else 'rows'} than the "
                        f"{dist_info.world_size} ranks (train.batch_size {cfg.batch_size}): no step would be trained; "
                        f"set train.batch_size to at least {group * dist_info.world_size} or run fewer processes")
                if batch_sampler.dropped and epoch == start_epoch:
                    log.warning("%d batch(es) per epoch hold fewer rows than the %d ranks and are skipped",
                                batch_sampler.dropped, dist_info.world_size)
            loader = _loader(train_set, cfg.batch_size, True, spec.seed * 1000 + epoch, cfg.num_workers,
                             batch_sampler)
            phase = phase_at(phases, epoch)
            if phase is not None and phase.start == epoch and epoch > 0:  # a new optimiser (OptimizerPhase)
                if phase.from_best and best_epoch >= 0:  # as a separate training started from the best weights
                    distributed.barrier()  # rank 0 has written best.pt
                    best_path = ckpt_dir / "best.pt"
                    load_model_state(model, load_checkpoint(best_path)["model"], str(best_path))
                    log.info("%s/%s epoch %d: new %s optimiser from the weights of epoch %d", spec.experiment,
                             spec.split, epoch + 1, phase.optimizer or cfg.optimizer, best_epoch + 1)
                    best, best_epoch, bad_epochs = -math.inf, -1, 0  # the phase selects its own best epoch
                opt = _optimizer(model, cfg, phase.optimizer)
                sched = _scheduler(opt, cfg)
            scheduled = [group["lr"] for group in opt.param_groups]
            scales = model.lr_scales(epoch)  # a protocol's phase (DBCNN's fine-tuning); None: the schedule alone
            if scales is not None:
                if len(scales) != len(scheduled):
                    raise ValueError(f"{spec.model_name}.lr_scales gave {len(scales)} factors for "
                                     f"{len(scheduled)} parameter groups")
                for group, lr, scale in zip(opt.param_groups, scheduled, scales):
                    group["lr"] = lr * float(scale)
            train_loss = _iterate_train(step_module, model, loader, opt, device, cfg, ctx, progress,
                                        f"{spec.experiment}/{spec.split} epoch {epoch + 1}/{cfg.epochs}")
            if scales is not None:  # the scheduler steps from its own rates
                for group, lr in zip(opt.param_groups, scheduled):
                    group["lr"] = lr
            if dist_info.enabled:  # the logged loss is the mean over ranks
                train_loss = distributed.mean_over_ranks(train_loss, dist_info)
            sched.step()
            record = {"epoch": epoch, "train_loss": train_loss}
            if monitor_items is not None:
                val_pred = predict_items(model, monitor_items, cfg.batch_size, device)
                record["val_srcc"] = mean_srcc(val_pred, monitor_items.mos_norm)
                record["val_loss"] = float(np.nanmean(np.abs(val_pred - monitor_items.mos_norm)))
                if cfg.monitor == "val_scene_srcc":
                    record["val_scene_srcc"] = scene_median_srcc(val_pred, monitor_items.mos_norm,
                                                                 monitor_items.scene_idx)
            score = monitor_score(record, cfg.monitor)
            improved = score > best or best_epoch < 0
            if improved:
                best, best_epoch, bad_epochs = score, epoch, 0
            else:
                bad_epochs += 1
            history.append(record)
            for name, value in record.items():
                if name != "epoch" and live is not None:
                    live.log_metric(name, value)
            if live is not None:
                live.next_step()
            log.info("%s/%s epoch %d: %s", spec.experiment, spec.split, epoch + 1,
                     {k: round(v, 4) for k, v in record.items()})
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "epoch": epoch, "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                     "history": history, "fingerprint": fp, "config": config}
            if improved and main:  # best.pt is for inference: weights and config, no optimiser state
                save_checkpoint(ckpt_dir / "best.pt", {k: v for k, v in state.items()
                                                       if k not in ("optimizer", "scheduler")})
            if main:
                save_checkpoint(last, state)
        if live is not None:
            live.end()
        if dist_info.enabled:
            log.info("rank %d weights checksum %s", dist_info.rank, distributed.weights_checksum(model))
        distributed.barrier()  # rank 0 has written best.pt
        if main:
            last.unlink(missing_ok=True)  # training finished: the resume point is no longer needed
        best_state = load_checkpoint(ckpt_dir / "best.pt")
        load_model_state(model, best_state["model"], str(ckpt_dir / "best.pt"))
        history = list(best_state["history"]) if not history else history
    if main:  # NaN (e.g. SRCC of constant predictions) is written as null: JSON has no NaN
        clean = [{k: (v if math.isfinite(v) else None) for k, v in record.items()} for record in history]
        write_json(ckpt_dir / "history.json", {"history": clean, "fingerprint": fp})
    preds = _predictions(model, spec, eval_items, device, progress)
    pair_preds = pair_head_predictions(model, spec, eval_items.get("test"), device)
    spec.extra["notes"] = model.run_notes()  # after prediction: counts of fallbacks include the test images
    spec.extra["train_seconds"] = round(time.perf_counter() - started, 1)
    if main:  # the predictions, then the completion marker, then (for a re-run) the swap
        write_parquet(ckpt_dir / SPLIT_PREDICTIONS, preds)
        if pair_preds is not None:
            write_parquet(ckpt_dir / SPLIT_PAIR_PREDICTIONS, pair_preds)
            spec.extra["pair_predictions"] = pair_preds
        write_json(ckpt_dir / DONE_FILE, {"fingerprint": fp, "n_params": int(spec.extra["n_params"]),
                                          "notes": spec.extra["notes"],
                                          "train_seconds": spec.extra["train_seconds"],
                                          "train_precision": spec.extra["train_precision"],
                                          "model_selection": spec.extra["model_selection"]})
        if ckpt_dir != final:
            swap_in(ckpt_dir, final)
    distributed.barrier()
    return preds


def _subsample_pairs(pairs: pd.DataFrame, train_ids: set[str], limit: int, seed: int) -> pd.DataFrame:
    """The rows of at most ``limit`` image pairs inside the training images, deterministic.

    The unit is the image pair ``(image_a, image_b)``, as :class:`PairItems` yields it: a kept pair keeps every
    attribute row, since TuningIQA Eq. 11 sums the ranking loss over the attributes of each pair (cutting rows
    would drop attributes of a pair at random). Pairs with a fine (annotated) row come first, then a seeded
    random order.
    """
    inside = pairs[pairs["image_a"].isin(train_ids) & pairs["image_b"].isin(train_ids)]
    key = pd.MultiIndex.from_frame(inside[["image_a", "image_b"]])
    codes, uniques = pd.factorize(key)
    fine_rows = inside["fine"].to_numpy(dtype=bool) if "fine" in inside else np.zeros(len(inside), bool)
    fine = np.zeros(len(uniques), dtype=bool)
    np.logical_or.at(fine, codes, fine_rows)
    rank = np.random.default_rng(seed).permutation(len(uniques))
    kept = np.lexsort((rank, ~fine))[:limit]
    return inside[np.isin(codes, kept)].reset_index(drop=True)


def _live(ckpt_dir: Path, resume: bool) -> Any:
    try:
        from dvclive import Live

        return Live(dir=str(ckpt_dir / "live"), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)
    except Exception as exc:  # noqa: BLE001 - logging must never stop training
        log.warning("dvclive unavailable (%s); curves are still in history.json", exc)
        return None


@torch.no_grad()
def pair_head_predictions(model: IQAModel, spec: RunSpec, items: ImageItems | None,
                          device: torch.device) -> pd.DataFrame | None:
    """The pair head's ``P(image_a better)`` (TuningIQA Eq. 9) on the dataset's pairs whose two images are both test
    images of this split, for FG-ACC in pairwise mode (:func:`iqalab.analysis.metrics.fg_acc_pairwise`); columns
    :data:`PAIR_PREDICTION_COLUMNS`. None for a model without a pair head or a dataset without pairs."""
    if items is None or not model.has_pair_head or spec.dataset.pairs is None:
        return None
    from iqalab.models.tuningiqa import pair_head_probabilities

    ids = set(items.ids)
    pairs = spec.dataset.pairs
    pairs = pairs[pairs["image_a"].isin(ids) & pairs["image_b"].isin(ids)].reset_index(drop=True)
    model.eval()
    feats = []
    for batch in prepared_batches(items, spec.train.batch_size, device):
        feats.append(model.predict_with_embedding(batch)[1].float())
    embeddings = dict(zip(items.ids, torch.cat(feats))) if feats else {}
    prob = pair_head_probabilities(model, embeddings, pairs) if len(pairs) else np.zeros(0)
    return pd.DataFrame({"image_a": pairs["image_a"].astype(str), "image_b": pairs["image_b"].astype(str),
                         "attribute": pairs["attribute"].astype(str), "split": spec.split, "prob_a": prob},
                        columns=PAIR_PREDICTION_COLUMNS)


def _predictions(model: IQAModel, spec: RunSpec, eval_items: dict[str, ImageItems],
                 device: torch.device, progress: bool) -> pd.DataFrame:
    lo, hi = spec.dataset.mos_range
    scene_of = spec.dataset.images.set_index("image_id")["scene"].astype(str)
    frames = []
    for role, items in eval_items.items():
        norm, raw = predict_items(model, items, spec.train.batch_size, device, progress=progress, with_raw=True)
        pred = norm * (hi - lo) + lo
        raw = np.full(len(items), np.nan) if raw is None else raw
        for k, attr in enumerate(spec.dataset.attributes):
            frames.append(pd.DataFrame({
                "image_id": items.ids, "attribute": attr, "pred": pred[:, k].astype(float),
                "mos": items.mos[:, k].astype(float), "split": spec.split, "role": role,
                "scene": scene_of.loc[items.ids].to_numpy(), "model": spec.model_name,
                "dataset": spec.dataset.name, "experiment": spec.experiment, "raw": raw.astype(float),
            }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PREDICTION_COLUMNS)


def train_experiment(params: Params, experiment: str, root: Path, progress: bool = True) -> pd.DataFrame:
    """Run every split of ``experiment``; write ``results/predictions/<experiment>.parquet`` atomically.

    The JSON beside it records ``"status": "ok"``. When the model cannot be built on this machine
    (:class:`iqalab.status.ModelUnavailable`: a zero-shot ``pyiqa:<metric>`` without pyiqa or without its local
    weights) the stage still completes: the JSON records the status (``"pyiqa not installed"``, ``"weights
    unavailable: <reason>"``) with no split and no parameter count, the parquet is empty with the usual columns,
    and ``build/models/<experiment>/status.json`` says the same (the folder is the stage's DVC output).
    """
    from iqalab.status import STATUS_OK, ModelUnavailable

    exp = params.experiment(experiment)
    dcfg = params.dataset(exp.dataset)
    ds = read_dataset(root / "build" / "datasets" / exp.dataset)
    cache = ImageCache(ds, dcfg.cache_size)
    separate = params.train_config(experiment).separate_attributes
    frames = []
    pair_frames: list[pd.DataFrame] = []
    train_seconds = 0.0
    n_params: int | None = 0
    notes: dict[str, Any] = {}
    regions: list[dict[str, Any]] = []
    inputs: dict[str, list[str]] = {}  # input size -> the splits that had it (one entry unless sizes differ)
    precisions: dict[str, list[str]] = {}  # training arithmetic -> its splits (training_precision)
    selections: dict[str, list[str]] = {}  # how the kept weights were chosen -> its splits (MODEL_SELECTION)
    n_images: dict[str, dict[str, int]] = {}  # split -> role -> images (after subset / val_images)
    status, detail = STATUS_OK, ""
    try:
        with experiment_lock(root, experiment):
            splits = list(_splits(ds, exp.splits, f"experiments.{experiment}.splits"))
            run_notes: dict[tuple[str, str | None], dict[str, Any]] = {}
            for split, attribute in run_plan(splits, ds.attributes, separate):
                out_dir = root / "build" / "models" / experiment / split
                spec = RunSpec(experiment=experiment, cache=cache, model_name=exp.model.name,
                               dataset=ds if attribute is None else ds.only_attribute(attribute),
                               model_kwargs=params.model_kwargs(experiment), train=params.train_config(experiment),
                               split=split, seed=params.seed, progress=progress,
                               out_dir=out_dir if attribute is None else out_dir / attribute)
                frames.append(train_split(spec))
                if spec.extra.get("pair_predictions") is not None:
                    pair_frames.append(spec.extra["pair_predictions"])
                if attribute is None or attribute == ds.attributes[0]:
                    n_params = spec.extra.get("n_params", n_params)
                elif n_params is not None and spec.extra.get("n_params") is not None:
                    n_params += spec.extra["n_params"]  # one model per attribute: the parameters of all of them
                run_notes[split, attribute] = spec.extra.get("notes", {})
                regions.append(spec.extra.get("regions", {}))
                inputs.setdefault(spec.extra.get("input_size", "-"), []).append(split)
                precisions.setdefault(spec.extra.get("train_precision", "-"), []).append(split)
                if spec.extra.get("model_selection"):
                    selections.setdefault(spec.extra["model_selection"], []).append(split)
                n_images[split] = spec.extra.get("n_images", {})
                train_seconds += spec.extra.get("train_seconds", 0.0)
            for split in splits:
                notes = merge_notes(notes, notes_of_split([n for (s, _), n in run_notes.items() if s == split]))
    except ModelUnavailable as exc:
        status, detail, frames, n_params = exc.status, exc.detail, [], None
        log.warning("experiment %s (model %s): %s%s; the stage completes with an empty predictions file and this "
                    "status", experiment, exp.model.name, exc.status, f" ({exc.detail})" if exc.detail else "")
    if frames:
        preds = pd.concat(frames, ignore_index=True)[PREDICTION_COLUMNS]
    else:
        preds = pd.DataFrame({c: pd.Series(dtype="float64" if c in ("pred", "mos", "raw") else "object")
                              for c in PREDICTION_COLUMNS})
    if not distributed.info().is_main:  # under torchrun every rank holds the gathered predictions; rank 0 writes
        return preds
    out = root / "results" / "predictions"
    meta = {
        "experiment": experiment, "label": exp.label or experiment, "model": exp.model.name,
        "model_kwargs": params.model_kwargs(experiment), "dataset": exp.dataset, "attributes": ds.attributes,
        "mos_range": list(ds.mos_range), "simulated": bool(ds.meta.get("simulated", False)),
        "dataset_source": ds.meta.get("source"), "tables": exp.tables, "protocol": exp.protocol,
        "splits": sorted(preds["split"].unique().tolist()), "n_params": None if n_params is None else int(n_params),
        "train_seconds": round(train_seconds, 1), "profile": params.profile, "status": status,
        "notes": notes,
        # what the model was given (models.cards.input_size; per split only where splits differ), the image
        # subset (train.subset: FineLive-p) and the images per split and role
        "input_size": _per_split(inputs),
        "subset": params.train_config(experiment).subset, "n_images": n_images,
        # one model per attribute (train.separate_attributes), each in build/models/<e>/<split>/<attribute>/;
        # n_params is then the sum over the attributes' models
        "separate_attributes": separate,
        # bf16 autocast or fp32 (training_precision; per split only where splits differ)
        "train_precision": _per_split(precisions),
        # the epoch whose weights were kept (train.monitor; null for models fitted or used as published)
        "model_selection": _per_split(selections),
        # the cap of the native store the images were read from (datasets.<name>.max_side; null: full resolution)
        "max_side": cache.max_side,
        **summarise_regions(regions),  # regions, regions_detector, regions_missing (test images), allow_missing
        # the device training ran on; never raises (without CUDA a model that could not run records cpu)
        "provenance": provenance.collect(params, device="cuda" if params.train_config(experiment).device != "cpu"
                                         and torch.cuda.is_available() else "cpu"),
    }
    if status != STATUS_OK:
        meta["status_detail"] = detail
        write_json(root / "build" / "models" / experiment / "status.json",
                   {"experiment": experiment, "model": exp.model.name, "status": status, "status_detail": detail})
    write_json(out / f"{experiment}.json", meta)
    write_parquet(out / f"{experiment}.parquet", preds)
    # FG-ACC in pairwise mode (TuningIQA Eq. 9): the pair head's probabilities, empty for models without one
    write_parquet(out / f"{experiment}.pairs.parquet",
                  pd.concat(pair_frames, ignore_index=True) if pair_frames
                  else pd.DataFrame({c: pd.Series(dtype="float64" if c == "prob_a" else "object")
                                     for c in PAIR_PREDICTION_COLUMNS}))
    return preds


def run_plan(splits: list[str], attributes: list[str], separate: bool) -> list[tuple[str, str | None]]:
    """The runs of an experiment, ``(split, attribute)``: one per split with ``attribute`` None (one model with a
    head per attribute), or with ``separate`` (``train.separate_attributes``, PIQ23's protocol) one per split and
    attribute, each a model of its own trained, selected (its own best epoch) and stored in
    ``<split>/<attribute>/``."""
    if not separate:
        return [(split, None) for split in splits]
    return [(split, attribute) for split in splits for attribute in attributes]


def notes_of_split(attribute_notes: list[dict[str, Any]]) -> dict[str, Any]:
    """The notes of one split from its runs' (one run, or one per attribute with ``train.separate_attributes``):
    the attributes' models saw the same images, so a count (``n_*``) is the largest of theirs, not their sum
    (e.g. the test images without a face box, counted by the Details and Exposure models alike)."""
    merged: dict[str, Any] = {}
    for notes in attribute_notes:
        for key, value in notes.items():
            if key.startswith("n_") and isinstance(value, int) and not isinstance(value, bool) and key in merged:
                merged[key] = max(int(merged[key] or 0), value)
            else:
                merged[key] = value
    return merged


def merge_notes(before: dict[str, Any], split_notes: dict[str, Any]) -> dict[str, Any]:
    """The notes of an experiment after one more split (:meth:`IQAModel.run_notes`, one model per split): counts
    (``n_*`` integers, e.g. the images scored by a fallback) are summed over the splits, so a caption's count
    covers every split the table averages; any other fact is the latest split's (the same in every split)."""
    merged = {**before, **split_notes}
    for key, value in split_notes.items():
        if key.startswith("n_") and isinstance(value, int) and not isinstance(value, bool):
            merged[key] = value + int(before.get(key) or 0)
    return merged


def _per_split(values: dict[str, list[str]]) -> str | None:
    """One value when every split had it, else ``"<value> (<splits>); ..."``; None when there were no splits."""
    if len(values) == 1:
        return next(iter(values))
    return "; ".join(f"{value} ({', '.join(dict.fromkeys(splits))})" for value, splits in values.items()) or None


def _splits(ds: Dataset, wanted: list[str], path: str) -> Iterator[str]:
    """The splits ``wanted`` names (``prefix*`` expands); one the ingested dataset lacks is an error at ``path``."""
    available = set(ds.splits["split"])
    check_splits(path, wanted, sorted(available), ds.name)
    for name in wanted:
        if name.endswith("*"):
            yield from sorted(s for s in available if s.startswith(name[:-1]))
        else:
            yield name
