"""Training-step benchmark: images/s per registered model at the default profile's sizes (CPU here; on CUDA
also with and without AMP and channels_last, where a GPU is present). Run:

    .venv/bin/python benchmarks/bench_train_step.py [--models backbone_mlp reqa ...] [--size 128] [--batch 16]

Models are built from each experiment's settings in params.yaml when one uses them, else from ``smoke_params``.
Ratios are printed against ``backbone_mlp`` measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from iqalab.config import load_params
from iqalab.models import available, build_model
from iqalab.models.base import StepContext
from iqalab.train.engine import to_device


def _batch(model, n: int, size: int, device: torch.device) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_models_registry import make_batch  # the registry tests' synthetic batch

    batch = make_batch(model, n=n, size=size)
    if "pairs" in model.inputs:
        batch = {"a": batch, "b": make_batch(model, n=n, size=size, seed=1),
                 "p": torch.rand(n).round(), "attr_idx": torch.zeros(n, dtype=torch.long)}
    return to_device(batch, device)


def measure(name: str, kwargs: dict, size: int, batch: int, steps: int, device: torch.device,
            amp: bool, channels_last: bool) -> float:
    model = build_model(name, ["overall", "noise"], **kwargs).to(device)
    if not getattr(model, "trainable", True):
        return float("nan")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = _batch(model, batch, size, device)
    ctx = StepContext(epoch=0, epochs=1)
    for step in range(steps + 1):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model.training_step(data, ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_pair = 2 if "pairs" in model.inputs else 1
    return steps * batch * per_pair / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    params = load_params(check_models=False)
    configs = {}
    for name in params.experiments:
        exp = params.experiments[name]
        configs.setdefault(exp.model.name, params.model_kwargs(name))
    names = args.models or available()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    label = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"device: {label}; input {args.size}px; batch {args.batch}")
    modes = [(False, False)] + ([(True, False), (True, True)] if device.type == "cuda" else [])
    reference = None
    for name in ["backbone_mlp", *[n for n in names if n != "backbone_mlp"]]:
        from iqalab.models import get_model_class

        kwargs = configs.get(name, dict(getattr(get_model_class(name), "smoke_params", {})))
        if name == "fhiqa" or name.startswith("sem_"):
            kwargs.setdefault("n_scenes", 2)
        for amp, cl in modes:
            rate = measure(name, kwargs, args.size, args.batch, args.steps, device, amp, cl)
            if name == "backbone_mlp" and not amp:
                reference = rate
            ratio = rate / reference if reference else float("nan")
            print(f"{name:18s} amp={amp!s:5s} channels_last={cl!s:5s} {rate:8.1f} images/s   "
                  f"x{ratio:.2f} vs backbone_mlp")


if __name__ == "__main__":
    main()
