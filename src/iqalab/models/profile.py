"""Model complexity: parameters, GMACs and latency, the efficiency columns of the comparison tables.

SFIQA-Assessor's Table II (Jiang et al., 2026, Section V-D) reports for every method the number of parameters, the
giga multiply-accumulate operations (GMACs) of one forward pass and the latency (ms per image after a warm-up,
averaged over 100 images, preprocessing included). :func:`profile_model` measures the same three quantities for
any model of the registry (it builds a dummy batch from the model's ``inputs``) or any plain ``nn.Module`` that
takes an image tensor.

Counting rules (state them next to the numbers):

- GMACs: ``torch.utils.flop_counter`` (default) counts matrix multiplies, convolutions (groups respected) and
  scaled-dot-product attention, two FLOPs per multiply-accumulate, so GMACs = FLOPs / 2 / 1e9. ``fvcore``
  (``backend="fvcore"``) traces the model with ``torch.jit`` and counts one per MAC. Neither counts bias adds,
  normalisation, activations, pooling or ``roi_align`` (not multiply-accumulates), as in the paper's tools.
- Latency: batch 1, ``torch.no_grad``, eval mode, ``warmup`` untimed runs then the mean (and median) over
  ``repeats`` timed runs; CUDA is synchronised around each run. The device is named in the result (CPU model and
  thread count, or the GPU name) because a latency means nothing without it.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Any

import torch
from torch import nn

from iqalab.provenance import cpu_label

log = logging.getLogger(__name__)


def device_name(device: torch.device | str) -> str:
    """Human-readable name of ``device``: the GPU name, or the CPU model and its widest vector extension
    (:func:`iqalab.provenance.cpu_label`) with the torch thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_label()} ({torch.get_num_threads()} threads of {os.cpu_count()})"


def dummy_batch(model: nn.Module, image_size: int, batch_size: int = 1,
                device: torch.device | str = "cpu") -> dict[str, Any] | torch.Tensor:
    """A batch of the shape ``model`` reads: a dict over its ``inputs`` (``iqalab.models.base`` contract, with a
    centred face box and plausible landmarks) or, for a module without ``inputs``, an image tensor."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(batch_size, 3, image_size, image_size, generator=gen).to(device)
    inputs = getattr(model, "inputs", None)
    if inputs is None:
        return image
    s = float(image_size)
    batch: dict[str, Any] = {"image": image}
    if "face_box" in inputs:
        batch["face_box"] = torch.tensor([[0.25 * s, 0.2 * s, 0.75 * s, 0.8 * s]], device=device).repeat(batch_size, 1)
    if "person_box" in inputs:
        batch["person_box"] = torch.tensor([[0.0, 0.0, s, s]], device=device).repeat(batch_size, 1)
    if "landmarks" in inputs:
        lm = torch.tensor([[0.38, 0.42], [0.62, 0.42], [0.5, 0.55], [0.41, 0.68], [0.59, 0.68]], device=device) * s
        batch["landmarks"] = lm.expand(batch_size, 5, 2).clone()
    if "cam" in inputs:
        batch["cam"] = torch.zeros(batch_size, 7, device=device)
        batch["cam_mask"] = torch.ones(batch_size, 7, device=device)
    if "scene_idx" in inputs:
        batch["scene_idx"] = torch.zeros(batch_size, dtype=torch.long, device=device)
    return batch


def count_gmacs(model: nn.Module, batch: dict[str, Any] | torch.Tensor, backend: str = "torch",
                breakdown_depth: int = 0) -> tuple[float, dict[str, float]]:
    """GMACs of one forward pass of ``model`` on ``batch`` (total, and per module up to ``breakdown_depth``
    levels below the root for the ``torch`` backend; ``{}`` otherwise)."""
    was_training = model.training
    model.eval()
    try:
        if backend == "torch":
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False, depth=max(breakdown_depth, 1))
            # grad mode stays on: the module tracker fails on views of parameters made under no_grad
            with counter:
                model(batch)
            total = counter.get_total_flops() / 2e9
            parts: dict[str, float] = {}
            if breakdown_depth > 0:
                for name, ops in counter.get_flop_counts().items():
                    if name != "Global" and name.count(".") < breakdown_depth + 1:
                        parts[name] = sum(ops.values()) / 2e9
            return total, parts
        if backend == "fvcore":
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, (batch,))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            with torch.no_grad():
                return analysis.total() / 1e9, {}
        raise ValueError(f"unknown GMACs backend {backend!r}: expected 'torch' or 'fvcore'")
    finally:
        model.train(was_training)


def measure_latency(model: nn.Module, batch: dict[str, Any] | torch.Tensor, device: torch.device | str,
                    warmup: int = 10, repeats: int = 100) -> dict[str, float]:
    """Mean and median milliseconds per forward pass of ``batch`` on ``device`` (eval mode, no grad)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad():
            for _ in range(warmup):
                model(batch)
            sync()
            for _ in range(repeats):
                start = time.perf_counter()
                model(batch)
                sync()
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
    return {"latency_ms": statistics.fmean(times), "latency_ms_median": statistics.median(times)}


def profile_model(model: nn.Module, image_size: int = 224, device: torch.device | str = "cpu",
                  warmup: int = 10, repeats: int = 100, backend: str = "torch",
                  breakdown_depth: int = 0) -> dict[str, Any]:
    """Parameters, GMACs at ``image_size``^2 and latency (ms per image, batch 1) of ``model`` on ``device``.

    Returns a flat dict: ``params`` (count), ``params_m`` (millions), ``gmacs``, ``gmacs_backend``, ``latency_ms``,
    ``latency_ms_median``, ``device`` (``cpu``/``cuda:0``), ``device_name`` (CPU model and threads or GPU name),
    ``image_size``, ``batch_size`` (1), ``warmup``, ``repeats``, ``torch`` (version); with ``breakdown_depth``
    also ``gmacs_by_module`` (module path -> GMACs). ``repeats=0`` skips the latency (``latency_ms`` is None).
    GMACs are counted on the CPU (identical counts on any device); the model is moved back where it was.
    """
    device = torch.device(device)
    first = next(model.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    params = sum(p.numel() for p in model.parameters())
    model.to("cpu")
    gmacs, parts = count_gmacs(model, dummy_batch(model, image_size, 1, "cpu"), backend, breakdown_depth)
    result: dict[str, Any] = {"params": params, "params_m": params / 1e6, "gmacs": gmacs, "gmacs_backend": backend,
                              "latency_ms": None, "latency_ms_median": None, "device": str(device),
                              "device_name": device_name(device), "image_size": image_size, "batch_size": 1,
                              "warmup": warmup, "repeats": repeats, "torch": torch.__version__}
    if breakdown_depth > 0:
        result["gmacs_by_module"] = parts
    if repeats > 0:
        model.to(device)
        result.update(measure_latency(model, dummy_batch(model, image_size, 1, device), device, warmup, repeats))
    model.to(home)
    log.info("%s: %.3f M params, %.3f GMACs at %d^2, %s ms/image on %s", type(model).__name__, params / 1e6, gmacs,
             image_size, "n/a" if result["latency_ms"] is None else f"{result['latency_ms']:.2f}",
             result["device_name"])
    return result
