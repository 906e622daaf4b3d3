"""Training-batch benchmark: iqalab's memory-mapped uint8 stores against decoding with PIL every epoch (issue #30).

Two settings, each printed as a ratio against its reference measured in the same run:

- ``native``: KonIQ-shaped 1024 x 768 JPEGs, random 224 crops + horizontal flips cut at native resolution (REQA's
  and KonIQ's protocol). Ours: :class:`iqalab.data.loaders.ImageItems` over the native store. Reference: open the
  JPEG with PIL every epoch, cut the same crop, flip, normalise.
- ``square``: the square cache (files of ``--size`` px resized to ``--cache``, then 224 crops: TuningIQA's
  256 -> 224). Reference: PIL decode + the cache's resize (reducing gap included) + the same crop every epoch.

Both sides yield the same ImageNet-normalised ``[B, 3, 224, 224]`` float batches (checked on the first epoch's
first batch); ours normalises per batch as the engine does. Run with one thread, as on the 2-core CPU:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loading.py [--images 96] [--epochs 3]

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
from iqalab.data.loaders import IMAGENET_MEAN, IMAGENET_STD, ImageItems, normalise_batch
from iqalab.data.schema import read_dataset
from iqalab.data.toy import build_toy


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


def _batches(loader: DataLoader, epochs: int, first: int = 0):
    """Every batch of epochs ``first .. first + epochs - 1`` as the normalised float tensor a model receives."""
    for epoch in range(first, first + epochs):
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            yield normalise_batch(batch["image"]) if isinstance(batch, dict) else batch


def _rate(loader: DataLoader, epochs: int, first: int = 0) -> float:
    """Images per second over ``epochs`` epochs from epoch ``first``."""
    start = time.perf_counter()
    n = sum(len(b) for b in _batches(loader, epochs, first))
    return n / (time.perf_counter() - start)


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


def compare(ds, paths: list[Path], store, square: int | None, crop: int, epochs: int, batch_size: int,
            workers: int) -> tuple[float, float, float, float]:
    """Images/s of (reference, ours) over the first epoch, then over the next ``epochs - 1`` (ours reads each
    image's CRC once per process, in its first epoch), after checking that the first batches are equal."""
    ids = ds.images["image_id"].tolist()
    ours = ImageItems(ds, ids, store, {"image"}, train=True, crop=crop)
    ref = PilEveryEpoch(paths, ImageItems(ds, ids, store, {"image"}, train=True, crop=crop), square)

    def loader(items: Dataset) -> DataLoader:
        return DataLoader(items, batch_size=batch_size, shuffle=True, num_workers=workers,
                          generator=torch.Generator().manual_seed(0))

    first_ref, first_ours = next(_batches(loader(ref), 1)), next(_batches(loader(ours), 1))
    torch.testing.assert_close(first_ours, first_ref, rtol=0, atol=1e-5)  # same crops, same tensors
    ref_loader, our_loader = loader(ref), loader(ours)
    first = _rate(ref_loader, 1), _rate(our_loader, 1)
    return (*first, _rate(ref_loader, epochs - 1, 1), _rate(our_loader, epochs - 1, 1))


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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ds = _dataset(Path(tmp) / "koniq_like", args.images, 768, 1024)
        t0 = time.perf_counter()
        build_cache(ds, args.cache, progress=False)
        build_seconds = time.perf_counter() - t0
        paths = [ds.root / p for p in ds.images["path"]]
        store = ImageCache(ds, args.cache).native
        rows.append(("native 1024x768 JPEG -> 224 crops", *compare(ds, paths, store, None, args.crop, args.epochs,
                                                                  args.batch_size, args.workers)))
        ds = _dataset(Path(tmp) / "square", args.images, args.size, args.size)
        build_cache(ds, args.cache, progress=False)
        paths = [ds.root / p for p in ds.images["path"]]
        rows.append((f"square {args.size} JPEG -> {args.cache} cache -> 224", *compare(
            ds, paths, ImageCache(ds, args.cache), args.cache, args.crop, args.epochs, args.batch_size,
            args.workers)))
    print(f"images={args.images} epochs={args.epochs} batch={args.batch_size} workers={args.workers} "
          f"torch_threads={torch.get_num_threads()} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"one-off ingest of the native store + square cache: {build_seconds:.2f} s "
          f"({args.images / build_seconds:.1f} images/s)")
    for name, ref_first, our_first, ref_rate, our_rate in rows:
        print(f"{name:42s} first epoch: PIL {ref_first:7.1f} images/s | iqalab {our_first:7.1f} images/s | ratio "
              f"{our_first / ref_first:5.1f}x")
        print(f"{'':42s} epochs 2-{args.epochs}:  PIL {ref_rate:7.1f} images/s | iqalab {our_rate:7.1f} images/s | "
              f"ratio {our_rate / ref_rate:5.1f}x")
    print("target (issue #30): native >= 30x")


if __name__ == "__main__":
    main()
