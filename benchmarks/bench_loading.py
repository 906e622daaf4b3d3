"""Data-loading benchmark: iqalab's memory-mapped uint8 cache against decode-and-resize with PIL every epoch.

The reference reads each image file with PIL, converts to RGB, resizes and crops it on every access, as the
official HyperIQA loader does. Both produce the same normalised ``[3, crop, crop]`` tensors. Run:

    .venv/bin/python benchmarks/bench_loading.py [--images 200] [--size 512] [--cache 256] [--epochs 3]

It prints images/s of each and the ratio (target: >= 3x on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from iqalab.data.cache import ImageCache, build_cache
from iqalab.data.loaders import IMAGENET_MEAN, IMAGENET_STD, ImageItems, normalise_batch
from iqalab.data.schema import read_dataset
from iqalab.data.toy import build_toy


class PilEveryEpoch(Dataset):
    """Reference loader: decode + resize + random crop + flip with PIL at every access."""

    def __init__(self, paths: list[Path], size: int, crop: int) -> None:
        self.paths, self.size, self.crop = paths, size, crop
        self.mean = torch.from_numpy(IMAGENET_MEAN)[:, None, None]
        self.std = torch.from_numpy(IMAGENET_STD)[:, None, None]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng(i)
        with Image.open(self.paths[i]) as img:
            img = img.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        x0, y0 = rng.integers(0, self.size - self.crop + 1, size=2)
        img = img.crop((x0, y0, x0 + self.crop, y0 + self.crop))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        return (x - self.mean) / self.std


def _rate(loader: DataLoader, epochs: int, n: int) -> float:
    """Images/s until every batch is a normalised float tensor (ours: normalised per batch, as the engine does)."""
    start = time.perf_counter()
    for epoch in range(epochs):
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        for batch in loader:
            if isinstance(batch, dict):
                normalise_batch(batch["image"])
    return n * epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="side of the stored image files")
    parser.add_argument("--cache", type=int, default=256, help="cache side (the loaders' working resolution)")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        per_scene = 10
        build_toy(root, n_scenes=max(1, args.images // per_scene), per_scene=per_scene, size=args.size,
                  n_random_splits=1)
        ds = read_dataset(root)
        for p in ds.images["path"]:  # store as JPEG like real datasets
            img = Image.open(root / p)
            img.save((root / p).with_suffix(".jpg"), quality=90)
        paths = [(root / p).with_suffix(".jpg") for p in ds.images["path"]]
        t0 = time.perf_counter()
        build_cache(ds, args.cache, progress=False)
        cache_seconds = time.perf_counter() - t0
        ids = ds.images["image_id"].tolist()
        ours = ImageItems(ds, ids, ImageCache(ds, args.cache), {"image"}, train=True, crop=args.crop)
        ref = PilEveryEpoch(paths, args.cache, args.crop)
        kw = dict(batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                  generator=torch.Generator().manual_seed(0))
        ref_rate = _rate(DataLoader(ref, **kw), args.epochs, len(ids))
        our_rate = _rate(DataLoader(ours, **kw), args.epochs, len(ids))
    print(f"images={len(ids)} stored={args.size}px cache={args.cache}px crop={args.crop} epochs={args.epochs} "
          f"workers={args.workers} torch_threads={torch.get_num_threads()}")
    print(f"reference PIL decode+resize every epoch: {ref_rate:8.1f} images/s")
    print(f"iqalab memmap cache:                      {our_rate:8.1f} images/s")
    print(f"one-off cache build: {cache_seconds:.2f} s ({len(ids) / cache_seconds:.1f} images/s)")
    print(f"ratio (ours / reference): {our_rate / ref_rate:.2f}x   (target >= 3x)")


if __name__ == "__main__":
    main()
