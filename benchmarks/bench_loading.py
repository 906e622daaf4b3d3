"""Training-batch benchmark: iqalab's memory-mapped uint8 stores against decoding with PIL every epoch (issue #30).

Two settings, three loaders each, every rate printed with its ratio to the reference measured in the same run:

- ``native``: KonIQ-shaped 1024 x 768 JPEGs, random 224 crops + horizontal flips cut at native resolution (REQA's
  and KonIQ's protocol), read from the native store.
- ``square``: the square cache (files of ``--size`` px resized to ``--cache``, then 224 crops: TuningIQA's
  256 -> 224). The reference adds the cache's resize (reducing gap included) to every decode.

Loaders: ``PIL`` (reference: open the file every epoch, cut the same crop, flip, torchvision-style normalise per
image), ``per-item`` (the previous path: ``ImageItems.__getitem__`` per image, torch's ``default_collate``, the
whole batch normalised in one pass) and ``batched`` (the engine's: ``ImageItems.__getitems__`` cuts the batch
into one array, :func:`iqalab.data.loaders.collate`, :func:`~iqalab.data.loaders.normalise_batch` image by
image). All yield the same ImageNet-normalised ``[B, 3, 224, 224]`` float batches: the per-item and batched ones
exactly equal over the whole first epoch, the reference within 1e-5 on its first batch. Rates are images/s
of wall-clock time and, with ``--workers 0``, of this process's CPU time (steadier on a loaded machine); after
the first epoch the loaders take turns epoch by epoch, so that a change of load weighs on all of them. Run with
one thread, as on the 2-core CPU:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loading.py [--images 96] [--epochs 4] [--workers 0]

The process is set up as a training process (:func:`iqalab.memory.keep_freed_memory`): on glibc's defaults, or
with ``IQALAB_KEEP_FREED_MEMORY=1`` keeping freed batch buffers instead of mapping them afresh (opt-in; the line
above the rates says which).

Target (issue #30): native >= 30x.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from iqalab.data.cache import ImageCache, build_cache, resize_square
from iqalab.data.loaders import IMAGENET_MEAN, IMAGENET_STD, ImageItems, collate, normalise_batch
from iqalab.data.schema import read_dataset
from iqalab.data.toy import build_toy
from iqalab.memory import keep_freed_memory


class PilEveryEpoch(Dataset):
    """Reference loader: PIL decode (+ resize to ``square``) every access, then ``items``' own crop and flip."""

    def __init__(self, paths: list[Path], items: ImageItems, square: int | None) -> None:
        self.paths, self.items, self.square = paths, items, square
        self.mean = torch.from_numpy(IMAGENET_MEAN)[:, None, None]
        self.std = torch.from_numpy(IMAGENET_STD)[:, None, None]

    def set_epoch(self, epoch: int) -> None:
        self.items.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        geo = self.items.geometry(i)  # the same draws as ours: same crops, same flips
        with Image.open(self.paths[int(self.items.rows[i])]) as img:
            img = img.convert("RGB")
            if self.square is not None:
                img = Image.fromarray(resize_square(np.asarray(img), self.square))
        img = img.crop((geo.x0, geo.y0, geo.x0 + geo.cw, geo.y0 + geo.ch))
        if geo.hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        # torchvision's ToTensor + Normalize (in place), as the papers' loaders
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous().float()
        return x.div_(255.0).sub_(self.mean).div_(self.std)


class PerItem(Dataset):
    """The previous path: ``items[i]`` one by one (no ``__getitems__``), collated by torch's ``default_collate``."""

    def __init__(self, items: ImageItems) -> None:
        self.items = items

    def set_epoch(self, epoch: int) -> None:
        self.items.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def normalise_whole(images: torch.Tensor) -> torch.Tensor:
    """The previous normalisation: the whole batch converted, scaled and shifted in three passes (the values of
    :func:`normalise_batch`, which works image by image)."""
    scale = (1.0 / (torch.as_tensor(IMAGENET_STD, dtype=torch.float64) * 255.0)).float().view(3, 1, 1)
    shift = (-torch.as_tensor(IMAGENET_MEAN / IMAGENET_STD, dtype=torch.float64)).float().view(3, 1, 1)
    return images.to(torch.float32).mul_(scale).add_(shift)


def _batches(loader: DataLoader, epochs: int, first: int = 0):
    """Every batch of epochs ``first .. first + epochs - 1`` as the normalised float tensor a model receives."""
    normalise = normalise_whole if isinstance(loader.dataset, PerItem) else normalise_batch
    for epoch in range(first, first + epochs):
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            yield normalise(batch["image"]) if isinstance(batch, dict) else batch


def _time(loader: DataLoader, epoch: int) -> np.ndarray:
    """``[images, wall seconds, CPU seconds of this process]`` of one epoch."""
    start, cpu = time.perf_counter(), time.process_time()
    n = sum(len(b) for b in _batches(loader, 1, epoch))
    return np.array([n, time.perf_counter() - start, time.process_time() - cpu])


def _dataset(root: Path, n: int, height: int, width: int, quality: int = 90):
    """A toy dataset whose files are ``height x width`` JPEGs (real photographs, distorted)."""
    build_toy(root, n_scenes=max(1, n // 8), per_scene=8, size=max(height, width), n_random_splits=1)
    ds = read_dataset(root)
    for p in ds.images["path"]:
        with Image.open(root / p) as img:
            img.convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(root / p, format="JPEG",
                                                                                     quality=quality)
    ds.images = ds.images.assign(width=width, height=height)
    return ds


LOADERS = ("PIL", "per-item", "batched")


def compare(ds, paths: list[Path], store_of, square: int | None, crop: int, epochs: int, batch_size: int,
            workers: int) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """``(first epoch, epochs 2..)`` rates ``(wall, cpu)`` of each loader of :data:`LOADERS`, after checking
    that their batches are the same. ``store_of()`` opens the store anew, so each loader pays its own CRC reads
    (once per image and process, in its first epoch)."""
    ids = ds.images["image_id"].tolist()

    def items() -> ImageItems:
        return ImageItems(ds, ids, store_of(), {"image"}, train=True, crop=crop)

    datasets = {"PIL": PilEveryEpoch(paths, items(), square), "per-item": PerItem(items()), "batched": items()}

    def loader(name: str) -> DataLoader:
        return DataLoader(datasets[name], batch_size=batch_size, shuffle=True, num_workers=workers,
                          collate_fn=collate if name == "batched" else None,
                          generator=torch.Generator().manual_seed(0))

    check = {"PIL": [next(_batches(loader("PIL"), 1))]}
    check |= {name: list(_batches(loader(name), 1)) for name in LOADERS[1:]}
    torch.testing.assert_close(check["batched"][0], check["PIL"][0], rtol=0, atol=1e-5)  # same crops and flips
    assert all(torch.equal(a, b) for a, b in zip(check["batched"], check["per-item"], strict=True)), \
        "batched and per-item loaders differ"
    datasets = {"PIL": PilEveryEpoch(paths, items(), square), "per-item": PerItem(items()), "batched": items()}
    first = {name: _time(loader(name), 0) for name in LOADERS}
    steady = {name: np.zeros(3) for name in LOADERS}
    for epoch in range(1, epochs):  # interleaved: a change of the machine's load weighs on every loader alike
        for name in LOADERS:
            steady[name] += _time(loader(name), epoch)
    return {name: tuple((t[0] / t[1], t[0] / max(t[2], 1e-9)) for t in (first[name], steady[name]))
            for name in LOADERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=512, help="side of the stored files (square setting)")
    parser.add_argument("--cache", type=int, default=256, help="square cache side (square setting)")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=4, help="at least 2: the first, then the steady state")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    if args.images < 16:
        parser.error(f"--images {args.images}: at least 16 (the datasets are split by scene, 8 images a scene)")
    if args.epochs < 2:
        parser.error(f"--epochs {args.epochs}: at least 2 (the first epoch, then the steady state)")
    kept = keep_freed_memory()  # as the iqalab command and the notebooks set up a training process (opt-in)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ds = _dataset(Path(tmp) / "koniq_like", args.images, 768, 1024)
        t0 = time.perf_counter()
        build_cache(ds, args.cache, progress=False)
        build_seconds = time.perf_counter() - t0
        paths = [ds.root / p for p in ds.images["path"]]
        rows.append((f"native 1024x768 JPEG -> {args.crop} crops", compare(
            ds, paths, lambda: ImageCache(ds, args.cache).native, None, args.crop, args.epochs, args.batch_size,
            args.workers)))
        square = _dataset(Path(tmp) / "square", args.images, args.size, args.size)
        build_cache(square, args.cache, progress=False)
        paths = [square.root / p for p in square.images["path"]]
        rows.append((f"square {args.size} JPEG -> {args.cache} cache -> {args.crop} crops", compare(
            square, paths, lambda: ImageCache(square, args.cache), args.cache, args.crop, args.epochs,
            args.batch_size, args.workers)))
    print(f"images={args.images} epochs={args.epochs} batch={args.batch_size} workers={args.workers} "
          f"torch_threads={torch.get_num_threads()} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; freed memory kept (iqalab.memory): "
          f"{kept}")
    print(f"one-off ingest of the native store + square cache: {build_seconds:.2f} s "
          f"({args.images / build_seconds:.1f} images/s)")
    cpu = args.workers == 0  # the CPU time of worker processes is not this process's
    for name, rates in rows:
        print(name)
        for phase, label in ((0, "first epoch"), (1, f"epochs 2-{args.epochs}")):
            ref_wall, ref_cpu = rates["PIL"][phase]
            for loader in LOADERS:
                wall, cpu_rate = rates[loader][phase]
                text = f"  {label:11s} {loader:8s} {wall:7.1f} images/s ({wall / ref_wall:5.1f}x)"
                if cpu:
                    text += f" | per CPU second {cpu_rate:7.1f} ({cpu_rate / ref_cpu:5.1f}x)"
                print(text)
    print("target (issue #30): native >= 30x (batched against PIL)")


if __name__ == "__main__":
    main()
