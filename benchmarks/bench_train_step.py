"""Training-step benchmark: images/s per registered model, on CPU here and on CUDA where a GPU is present, with and
without AMP (bf16), channels_last and ``torch.compile`` (AMP and channels_last on a CPU too where it has native
bf16, AMX or AVX512_BF16, as the engine then trains: :func:`iqalab.train.engine.autocast_in_effect`). Run:

    .venv/bin/python benchmarks/bench_train_step.py [--models backbone_mlp reqa ...] [--size 128] [--batch 16]
    python benchmarks/bench_train_step.py --params params/paper.yaml --size 224 --batch 32 --compile backbone_mlp

Models are built from the settings of the first experiment that uses them in ``--params`` (default: params.yaml,
the default profile; ``params/paper.yaml`` gives the papers' backbones, built without pretrained weights), else
from the model's ``smoke_params``. The step is the engine's own (``TrainingStep``: the model's ``training_step``,
backward, AdamW). Ratios are printed against ``backbone_mlp`` in fp32 measured in the same run, and, on CUDA,
a CPU with native bf16 or with ``--bf16`` (any CPU), each mode against the same model's fp32 step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from iqalab.config import TrainConfig, load_params
from iqalab.models import available, build_model, get_model_class
from iqalab.models.base import StepContext
from iqalab.train.engine import cpu_native_bf16, to_device, wrap_for_training


def _batch(model, n: int, size: int, device: torch.device, channels_last: bool) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_models_registry import make_batch  # the registry tests' synthetic batch

    batch = make_batch(model, n=n, size=size)
    if "pairs" in model.inputs:
        batch = {"a": batch, "b": make_batch(model, n=n, size=size, seed=1),
                 "p": torch.rand(n).round(), "attr_idx": torch.zeros(n, dtype=torch.long)}
    return to_device(batch, device, channels_last)


def measure(name: str, kwargs: dict, size: int, batch: int, steps: int, device: torch.device,
            amp: bool, channels_last: bool, compile_: bool = False, warmup: int = 2) -> float:
    """Images/s of ``steps`` optimiser steps after ``warmup`` ones (compilation and cuDNN autotuning)."""
    torch.manual_seed(0)
    model = build_model(name, ["overall", "noise"], **kwargs).to(device)
    if not getattr(model, "trainable", True):
        return float("nan")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cfg = TrainConfig(compile=compile_)
    ctx = StepContext(epoch=0, epochs=1)
    step = wrap_for_training(model, ctx, cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = _batch(model, batch, size, device, channels_last)
    model.train()
    for k in range(warmup + steps):
        if k == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = step(data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_pair = 2 if "pairs" in model.inputs else 1
    return steps * batch * per_pair / (time.perf_counter() - start)


def _kwargs(params_path: str | None) -> dict[str, dict]:
    params = load_params(params_path, check_models=False)
    configs: dict[str, dict] = {}
    for name, exp in params.experiments.items():
        kwargs = dict(params.model_kwargs(name))
        if kwargs.get("pretrained"):
            kwargs["pretrained"] = False  # speed does not depend on the weights; hub downloads fail offline
        configs.setdefault(exp.model.name, kwargs)
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--params", default=None, help="params file whose experiments give the model sizes")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true",
                        help="also time bf16 autocast (and with channels_last) on a CPU without native bf16 units, "
                             "where the engine does not use it")
    parser.add_argument("--compile", nargs="*", default=[], metavar="MODEL",
                        help="also time these models with torch.compile (CUDA; AMP + channels_last)")
    args = parser.parse_args()
    configs = _kwargs(args.params)
    names = args.models or available()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
    bf16_units = None if cuda else cpu_native_bf16()
    native = bf16_units is not None
    label = torch.cuda.get_device_name() if cuda else \
        f"CPU x{torch.get_num_threads()} threads{f' ({bf16_units})' if native else ''}"
    print(f"device: {label}; torch {torch.__version__}; params {args.params or 'params.yaml'}; "
          f"input {args.size}px; batch {args.batch}; {args.steps} timed steps after {args.warmup} warm-up")
    modes = [(False, False, False)] + ([(True, False, False), (True, True, False)] if cuda or native or args.bf16
                                       else [])
    reference = None
    for name in ["backbone_mlp", *[n for n in names if n != "backbone_mlp"]]:
        kwargs = configs.get(name, dict(getattr(get_model_class(name), "smoke_params", {})))
        if name == "fhiqa" or name.startswith("sem_"):
            kwargs.setdefault("n_scenes", 2)
        wanted = modes + ([(True, cuda, True)] if name in args.compile else [])
        own = None
        for amp, cl, comp in wanted:
            try:
                rate = measure(name, kwargs, args.size, args.batch, args.steps, device, amp, cl, comp,
                               warmup=args.warmup + (2 if comp else 0))
            except Exception as exc:  # noqa: BLE001 - report and go on with the other models
                print(f"{name:18s} amp={amp!s:5s} channels_last={cl!s:5s} compile={comp!s:5s} failed: "
                      f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
                continue
            if name == "backbone_mlp" and not amp:
                reference = rate
            if not amp and not comp:
                own = rate
            ratio = rate / reference if reference else float("nan")
            speedup = f"   x{rate / own:.2f} vs own fp32" if own and (amp or comp) else ""
            print(f"{name:18s} amp={amp!s:5s} channels_last={cl!s:5s} compile={comp!s:5s} {rate:9.1f} images/s"
                  f"   x{ratio:.2f} vs backbone_mlp{speedup}", flush=True)
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
