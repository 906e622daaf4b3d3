"""Native-resolution patch sampling benchmark: patches cut from the memory-mapped native store against decoding
the full-resolution file with PIL every epoch (issue #30).

Images are PIQ23-sized JPEGs (``--height x --width``, default 3000 x 4000). Two protocols, each cut by
:class:`iqalab.data.loaders.PatchItems` (the loader of ``train.resolution: native``):

- FHIQA (seed 001 Sec. IV-B): 224 x 5, 672 x 3 and 1344 x 1 patches at full resolution;
- HyperIQA (Su et al. 2020): 25 random 224 patches (its test protocol; 5 per image in training rounds).

The reference opens the JPEG with PIL at every access and cuts the same patches (same offsets, same flips) with
numpy. Both sides yield the same uint8 patch batches (checked on the first batch), which the engine normalises on
the device (:func:`iqalab.data.loaders.normalise_batch`); ``--normalise`` adds that step on both sides. Run:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_patches.py [--images 8] [--epochs 3]

Target (issue #30): >= 10x for each protocol.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from iqalab.data.cache import ImageCache, build_cache
from iqalab.data.loaders import PatchItems, normalise_batch
from iqalab.data.schema import Dataset as IqaDataset
from iqalab.data.schema import read_dataset, write_dataset

PROTOCOLS = {"FHIQA 224x5 + 672x3 + 1344x1": [(224, 5), (672, 3), (1344, 1)], "HyperIQA 224x25": [(224, 25)]}


class PilEveryEpoch(Dataset):
    """Reference: decode the whole file with PIL at every access, cut ``items``' own patches with numpy."""

    def __init__(self, paths: list[Path], items: PatchItems) -> None:
        self.paths, self.items = paths, items

    def set_epoch(self, epoch: int) -> None:
        self.items.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, list[torch.Tensor]]:
        rng = self.items.rng(i)
        geo = self.items.geometry(i, rng)
        with Image.open(self.paths[int(self.items.rows[i])]) as img:
            image = np.asarray(img.convert("RGB"))
        patches = []
        for side, corners in self.items.patch_offsets(i, rng):
            cut = np.stack([image[y:y + side, x:x + side] for y, x in corners.tolist()])
            if geo.hflip:
                cut = cut[:, :, ::-1]
            patches.append(torch.from_numpy(np.ascontiguousarray(cut)).permute(0, 3, 1, 2).contiguous())
        return {"patches": patches}


def _dataset(root: Path, n: int, height: int, width: int) -> IqaDataset:
    """``n`` PIQ23-sized JPEGs (smooth scene + sensor-like noise), one scene each."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 64, width // 64, 3), dtype=np.uint8)
    rows = []
    for k in range(n):
        scene = Image.fromarray(np.roll(small, k, axis=1)).resize((width, height), Image.Resampling.BICUBIC)
        pixels = np.asarray(scene).astype(np.int16) + rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
        path = f"images/img{k:03d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / path, quality=90)
        rows.append({"image_id": f"img{k:03d}", "path": path, "scene": f"s{k}", "width": width, "height": height,
                     "mos_overall": 3.0})
    table = pd.DataFrame(rows)
    splits = pd.DataFrame({"split": "scene", "image_id": table["image_id"], "role": "train"})
    write_dataset(IqaDataset(root=root, meta={"name": "piq_like", "attributes": ["overall"], "mos_range": [1, 5],
                                              "source": "benchmark", "simulated": True}, images=table, splits=splits))
    return read_dataset(root)


def _rate(loader: DataLoader, epochs: int, normalise: bool) -> float:
    """Images per second over ``epochs`` epochs (patch batches, normalised when asked)."""
    n = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            if normalise:
                [normalise_batch(p) for p in batch["patches"]]
            n += len(batch["patches"][0])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--normalise", action="store_true", help="normalise the patches on both sides (CPU)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ds = _dataset(Path(tmp) / "piq_like", args.images, args.height, args.width)
        t0 = time.perf_counter()
        build_cache(ds, 64, progress=False)
        build_seconds = time.perf_counter() - t0
        store = ImageCache(ds, 64).native
        paths = [ds.root / p for p in ds.images["path"]]
        ids = ds.images["image_id"].tolist()
        for name, scales in PROTOCOLS.items():
            ours = PatchItems(ds, ids, store, {"image"}, train=True, scales=scales)
            ref = PilEveryEpoch(paths, PatchItems(ds, ids, store, {"image"}, train=True, scales=scales))
            for a, b in zip(ref[0]["patches"], default_collate([ours[0]])["patches"]):
                assert torch.equal(a, b[0]), "the reference cuts the same patches"
            kw = dict(batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
            ref_rate = _rate(DataLoader(ref, **kw), args.epochs, args.normalise)
            our_rate = _rate(DataLoader(ours, **kw), args.epochs, args.normalise)
            rows.append((name, ref_rate, our_rate))
    print(f"images={args.images} of {args.width}x{args.height} JPEG, epochs={args.epochs} batch={args.batch_size} "
          f"normalise={args.normalise} torch_threads={torch.get_num_threads()} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} load average {os.getloadavg()[0]:.1f}")
    print(f"one-off ingest into the native store: {build_seconds:.2f} s ({args.images / build_seconds:.2f} images/s)")
    for name, ref_rate, our_rate in rows:
        print(f"{name:30s} PIL every epoch {ref_rate:7.2f} images/s | native store {our_rate:7.2f} images/s | "
              f"ratio {our_rate / ref_rate:6.1f}x")
    print("target (issue #30): >= 10x")


if __name__ == "__main__":
    main()
