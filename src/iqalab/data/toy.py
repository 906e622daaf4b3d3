"""A tiny, fast dataset of real photographs with distortions of known severity (tests, CI notebooks, demos).

Photographs shipped by scikit-image are cropped, then blurred (Gaussian, sigma in px) and noised (Gaussian, std
in 8-bit levels); MOS per attribute are monotone functions of the severities plus a little rater-like noise:
``sharpness`` falls with blur, ``noise`` with noise, ``overall`` with both. It is *not* the simulator
(:mod:`iqalab.sim`): no camera physics, no rater panel - just known answers at a few kilobytes per image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from iqalab.data.schema import Dataset, write_dataset
from iqalab.data.splits import random_split_names, random_splits, scene_split

TOY_ATTRIBUTES = ["overall", "sharpness", "noise"]
_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry", "cat", "hubble_deep_field")


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3]


def distort(img: np.ndarray, blur: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur (sigma px) then additive Gaussian noise (std in 8-bit levels), clipped to uint8."""
    out = img.astype(np.float32)
    if blur > 0:
        out = gaussian_filter(out, sigma=(blur, blur, 0))
    out = out + rng.normal(0.0, noise, size=out.shape) if noise > 0 else out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def toy_quality(blur: float, noise: float) -> dict[str, float]:
    """Ground-truth quality on the 1-5 scale for the toy distortions."""
    sharp = 5.0 - 4.0 * (1.0 - np.exp(-blur / 1.5))
    clean = 5.0 - 4.0 * (1.0 - np.exp(-noise / 12.0))
    return {"sharpness": float(sharp), "noise": float(clean), "overall": float(1.0 + (sharp - 1) * (clean - 1) / 4.0)}


def toy_split_names(n_random_splits: int = 2, **_: Any) -> list[str]:
    """The splits :func:`build_toy` writes: ``scene`` and ``random_XX`` (``iqalab check`` compares
    ``experiments.<e>.splits`` with them)."""
    return ["scene", *random_split_names(n_random_splits)]


def build_toy(root: str | Path, n_scenes: int = 6, per_scene: int = 6, size: int = 96, seed: int = 0,
              n_random_splits: int = 2) -> Dataset:
    """Write a toy dataset of ``n_scenes x per_scene`` images to ``root`` and return it (validated)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_scenes):
        photo = _photo(_PHOTOS[s % len(_PHOTOS)])
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.6, 0.9))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        base = np.asarray(Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BICUBIC))
        for k in range(per_scene):
            blur, noise = float(rng.uniform(0, 3)), float(rng.uniform(0, 30))
            image_id = f"s{s:02d}_{k:02d}"
            path = f"images/{image_id}.png"
            Image.fromarray(distort(base, blur, noise, rng)).save(root / path)
            truth = toy_quality(blur, noise)
            row = {"image_id": image_id, "path": path, "scene": f"scene{s:02d}", "condition": None,
                   "width": size, "height": size, "blur": blur, "noise_std": noise}
            for attr in TOY_ATTRIBUTES:
                row[f"mos_{attr}"] = float(np.clip(truth[attr] + rng.normal(0, 0.1), 1, 5))
                row[f"std_{attr}"] = 0.3
                row[f"n_{attr}"] = 16
            row["cam_iso"] = 100.0 * (1 + noise / 5)
            rows.append(row)
    images = pd.DataFrame(rows)
    splits = pd.concat([scene_split(images, test_fraction=0.34, val_fraction=0.17, seed=seed),
                        random_splits(images, n_splits=n_random_splits, test_fraction=0.25, val_fraction=0.15,
                                      seed=seed)], ignore_index=True)
    ds = Dataset(root=root, meta={"name": root.name, "attributes": TOY_ATTRIBUTES, "mos_range": [1.0, 5.0],
                                  "source": "toy", "licence": "scikit-image data (BSD-compatible)",
                                  "citation": "scikit-image data module", "simulated": True},
                 images=images, splits=splits)
    write_dataset(ds)
    return ds
