"""Training with the real loader against the model alone, and model FLOP utilisation (issue #30, GPU item).

For each chosen experiment of a profile (default: the paper profile, ``params/paper.yaml``) this runs the engine's
own training (:func:`iqalab.train.engine.train_experiment`: the experiment's datasets ingested from the simulator
at the profile's image and cache sizes but fewer images, its loader, sampler, batch size, ``num_workers``,
precision and memory layout) for ``--epochs`` epochs and times, in the last epoch:

- ``loader``: images/s of the epoch as trained (``_iterate_train`` over the real DataLoader, host-to-device copy
  and on-device normalisation included), and ``steady``: the same without the wait for the epoch's first batch
  (worker start-up, which a paper-scale epoch of hundreds of steps amortises);
- ``model``: images/s of the same number of steps on the epoch's first batch kept on the device (uint8, so the
  on-device normalisation still runs each step): the step rate the model alone allows;
- ``wait``: the share of the epoch spent waiting for the next batch;
- FLOPs of one training step (forward + backward, ``torch.utils.flop_counter``: convolutions, matrix multiplies,
  attention), per image, the model-only TFLOP/s and the model FLOP utilisation (MFU) against ``--peak-tflops``
  (default 989.4: the H200's dense bf16 tensor-core peak from NVIDIA's data sheet; fp32 runs are held to the same
  number, the card's best).

Target (issue #30): ``steady / model >= 0.8`` for every paper-profile model. Run it on a GPU (``gpu_checks.sh``)::

    python benchmarks/bench_train_loader.py [--experiments tuningiqa_r50 hyperiqa_portrait ...] [--workers 8]

and on a CPU as a smoke run (``--tiny``: small images and datasets, two epochs). Pretrained weights are switched
off (speed does not depend on them; hub downloads fail offline); one split per experiment, one model for all
attributes, no learning-rate schedule and no early stopping (speed depends on none of them). DB-CNN's head-only
phase is one epoch (``freeze_epochs: 1``), so its last epoch times the whole network, as its second training.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from iqalab.config import compose_params, parse_params
from iqalab.data.schema import read_dataset
from iqalab.stages import ingest
from iqalab.train import engine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXPERIMENTS = ["tuningiqa_r50", "hyperiqa_portrait", "reqa_ugc", "sfiqa_s_face", "dbcnn_portrait",
                       "fhiqa_portrait", "tuningiqa_mnv3s", "baseline_fglive", "sem_hyperiqa_portrait",
                       "sem_hyperiqa_co_portrait", "sfiqa_xs_face", "sfiqa_xxs_face"]
# fewer images than the profile, the same image and cache sizes (what the loader's cost per image depends on)
BENCH_OPTIONS = {"fglive_sim": {"n_scenes": 20, "images_per_scene": 18},
                 "portrait_sim": {"n_scenes": 8, "images_per_scene": 40, "max_pairs_per_scene": 50},
                 "face_sim": {"n_scenes": 60, "images_per_scene": 6},
                 "ugc_sim": {"n_images": 360, "n_splits": 1}}
TINY_OPTIONS = {"fglive_sim": {"n_scenes": 8, "images_per_scene": 6, "image_size": 128},
                "portrait_sim": {"n_scenes": 6, "images_per_scene": 10, "image_size": 160, "max_pairs_per_scene": 20},
                "face_sim": {"n_scenes": 12, "images_per_scene": 4, "image_size": 128},
                "ugc_sim": {"n_images": 60, "n_splits": 1, "image_size": 160}}
H200_BF16_DENSE_TFLOPS = 989.4


def bench_params(profile: str, experiments: list[str], epochs: int, workers: int | None, tiny: bool,
                 batch: int | None) -> tuple[dict[str, Any], list[str]]:
    """The composed profile cut down for timing: chosen experiments, small datasets, ``epochs`` epochs."""
    raw = compose_params(profile)
    unknown = [e for e in experiments if e not in raw["experiments"]]
    if unknown:
        raise SystemExit(f"{profile}: no experiment(s) {unknown}")
    # every dataset and experiment stays (other sections name them); only the chosen ones are built and trained
    datasets = sorted({raw["experiments"][name]["dataset"] for name in experiments})
    for name, cfg in raw["datasets"].items():
        cfg["options"] = {**cfg.get("options", {}), **BENCH_OPTIONS.get(name, {}),
                          **(TINY_OPTIONS.get(name, {}) if tiny else {})}
        if tiny:
            cfg["cache_size"] = min(cfg.get("cache_size", 160), 96)
    for exp in raw["experiments"].values():
        if exp is None:
            continue
        model = exp["model"]
        for key in list(model):
            if key == "pretrained" or key == "human_pretrained":
                model[key] = False
            elif key.endswith("_weights"):
                model[key] = None
        if model.get("freeze_epochs"):
            model["freeze_epochs"] = 1
        train = exp.setdefault("train", {})
        for key in ("step_epochs", "gamma"):
            train.pop(key, None)
        train.update(epochs=epochs, scheduler="none", separate_attributes=False, patience=0)
        if workers is not None:
            train["num_workers"] = workers
        if batch is not None:
            train["batch_size"] = batch
        if tiny:
            if train.get("crop"):
                train["crop"] = 64
            train["eval_crop"] = 64 if train.get("eval_crop") else None
            for key in ("patch_size", "view_size", "test_crop"):
                if key in model:
                    model[key] = 64
            if "test_crops" in model:
                model["test_crops"] = 2
            if "test_rounds" in model:
                model["test_rounds"] = 1
    return raw, datasets


def _ingest(raw: dict[str, Any], name: str, root: str) -> str:
    params = parse_params(raw, check_models=False, source="bench_train_loader")
    started = time.perf_counter()
    ingest.run(params, name, Path(root), progress=False)
    return f"{name}: ingested in {time.perf_counter() - started:.0f} s"


def _rows(batch: Any) -> int:
    """Images in one batch: the first tensor's length (a pair batch: both sides)."""
    if isinstance(batch, dict):
        if "a" in batch and "b" in batch:
            return _rows(batch["a"]) + _rows(batch["b"])
        for value in batch.values():
            n = _rows(value)
            if n:
                return n
        return 0
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 0
    if isinstance(batch, list) and batch:
        return _rows(batch[0])
    return 0


def _on_device(batch: Any, device: torch.device) -> Any:
    """Every tensor moved as it is (uint8 stays uint8: the engine's ``to_device`` normalises it each step)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _on_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_on_device(v, device) for v in batch]
    return batch


class TimedLoader:
    """The epoch's DataLoader, counting images and the time spent waiting in ``next``."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.wait = self.first_wait = 0.0
        self.images = self.batches = 0
        self.first: Any = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        iterator = iter(self.loader)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            waited = time.perf_counter() - started
            if self.first is None:
                self.first, self.first_wait = batch, waited
            self.wait += waited
            self.images += _rows(batch)
            self.batches += 1
            yield batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timing_patch(records: list[dict[str, Any]]):
    """A stand-in for ``engine._iterate_train`` that runs the original, timed, and in the last epoch the model-only
    steps and the FLOP count."""
    original = engine._iterate_train

    def timed(step_module, model, loader, opt, device, cfg, ctx, progress, desc):
        timed_loader = TimedLoader(loader)
        _sync(device)
        started = time.perf_counter()
        loss = original(step_module, model, timed_loader, opt, device, cfg, ctx, False, desc)
        _sync(device)
        wall = time.perf_counter() - started
        record = {"epoch": ctx.epoch, "images": timed_loader.images, "batches": timed_loader.batches,
                  "wall_s": wall, "wait_s": timed_loader.wait, "first_wait_s": timed_loader.first_wait}
        if ctx.epoch == cfg.epochs - 1 and timed_loader.first is not None:
            kept = _on_device(timed_loader.first, device)
            _sync(device)
            started = time.perf_counter()
            original(step_module, model, [kept] * timed_loader.batches, opt, device, cfg, ctx, False, desc)
            _sync(device)
            record["model_s"] = time.perf_counter() - started
            record["model_images"] = _rows(kept) * timed_loader.batches
            use_amp = engine.autocast_in_effect(cfg, device)
            layout = engine.channels_last_in_effect(cfg, device)
            counter = FlopCounterMode(display=False)
            with counter:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    step_loss = step_module(engine.to_device(kept, device, layout))
                step_loss.backward()
            opt.zero_grad(set_to_none=True)
            record["step_flops"] = counter.get_total_flops()
            record["step_images"] = _rows(kept)
            record["precision"] = engine.training_precision(cfg, device)
            record["batch_size"] = cfg.batch_size
            record["num_workers"] = cfg.num_workers
        records.append(record)
        return loss

    return timed


def summarise(experiment: str, model: str, records: list[dict[str, Any]], peak: float) -> dict[str, Any]:
    last = records[-1]
    loader = last["images"] / last["wall_s"]
    steady = last["images"] / max(last["wall_s"] - last["first_wait_s"], 1e-9)
    only = last["model_images"] / last["model_s"]
    flops_per_image = last["step_flops"] / max(last["step_images"], 1)
    achieved = flops_per_image * only / 1e12
    return {"experiment": experiment, "model": model, "batch_size": last["batch_size"],
            "num_workers": last["num_workers"], "precision": last["precision"], "steps": last["batches"],
            "loader_img_s": round(loader, 1), "steady_img_s": round(steady, 1), "model_img_s": round(only, 1),
            "ratio_steady": round(steady / only, 3), "ratio_epoch": round(loader / only, 3),
            "wait_share": round(last["wait_s"] / last["wall_s"], 3),
            "gflop_per_image": round(flops_per_image / 1e9, 2), "model_tflop_s": round(achieved, 2),
            "mfu": round(achieved / peak, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(ROOT / "params" / "paper.yaml"))
    parser.add_argument("--experiments", nargs="*", default=DEFAULT_EXPERIMENTS)
    parser.add_argument("--epochs", type=int, default=3, help="the last one is timed")
    parser.add_argument("--workers", type=int, default=None, help="num_workers (default: the profile's)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: each experiment's)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: small images and datasets")
    parser.add_argument("--root", default=None, help="folder for build/ (default: a temporary one)")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    parser.add_argument("--out", default=None, help="write the rows as JSON here too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raw, datasets = bench_params(args.params, args.experiments, args.epochs, args.workers, args.tiny, args.batch)
    root = Path(args.root or tempfile.mkdtemp(prefix="bench_train_loader_"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    label = torch.cuda.get_device_name() if device == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"device: {label}; torch {torch.__version__}; params {args.params}; epochs {args.epochs} (last timed); "
          f"root {root}", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(len(datasets), os.cpu_count() or 1)) as pool:
        for line in pool.map(_ingest, [raw] * len(datasets), datasets, [str(root)] * len(datasets)):
            print(line, flush=True)
    print(f"datasets ready in {time.perf_counter() - started:.0f} s", flush=True)
    # one split per experiment: the dataset's first one matching the experiment's patterns
    parsed = parse_params(raw, check_models=False, source="bench_train_loader")
    for name in args.experiments:
        exp = raw["experiments"][name]
        ds = read_dataset(root / "build" / "datasets" / exp["dataset"])
        wanted = list(parsed.experiment(name).splits)
        exp["splits"] = [next(engine._splits(ds, wanted, f"experiments.{name}.splits"))]
    params = parse_params(raw, check_models=False, source="bench_train_loader")
    rows = []
    header = (f"{'experiment':26s} {'model':16s} {'batch':>5s} {'steps':>5s} {'loader':>8s} {'steady':>8s} "
              f"{'model':>8s} {'steady/model':>12s} {'wait':>5s} {'GFLOP/img':>9s} {'TFLOP/s':>8s} {'MFU':>6s}  "
              "precision")
    print(header, flush=True)
    for name in args.experiments:
        records: list[dict[str, Any]] = []
        original = engine._iterate_train
        engine._iterate_train = timing_patch(records)
        try:
            engine.train_experiment(params, name, root, progress=False)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next experiment
            print(f"{name:26s} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", flush=True)
            continue
        finally:
            engine._iterate_train = original
            if device == "cuda":
                torch.cuda.empty_cache()
        if not records or "model_s" not in records[-1]:
            print(f"{name:26s} no timed epoch (a model without training?)", flush=True)
            continue
        row = summarise(name, params.experiment(name).model.name, records, args.peak_tflops)
        rows.append(row)
        verdict = "met" if row["ratio_steady"] >= 0.8 else "NOT met"
        print(f"{name:26s} {row['model']:16s} {row['batch_size']:5d} {row['steps']:5d} {row['loader_img_s']:8.1f} "
              f"{row['steady_img_s']:8.1f} {row['model_img_s']:8.1f} {row['ratio_steady']:9.2f} {verdict:>3s} "
              f"{row['wait_share']:5.2f} {row['gflop_per_image']:9.1f} {row['model_tflop_s']:8.2f} "
              f"{100 * row['mfu']:5.1f}%  {row['precision']}", flush=True)
    print(f"images/s; steady: without the wait for the epoch's first batch; MFU against {args.peak_tflops} TFLOP/s; "
          "target: steady/model >= 0.8", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
