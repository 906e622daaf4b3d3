"""Classical-feature benchmark: BRISQUE (SVR retrained) on three splits of the same images, with the per-image
feature cache of the train stage (``iqalab.models.nss.feature_cache``, ``build/features``) against the engine
recomputing every image's features in every split (fit and predict), as before issue 30.

Both run the same experiment on the same toy dataset in their own scratch project; predictions must be
identical. Run:

    .venv/bin/python benchmarks/bench_classical.py [--images 48] [--size 384] [--model brisque]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from iqalab.config import parse_params
from iqalab.data.cache import build_cache
from iqalab.data.schema import read_dataset
from iqalab.data.toy import build_toy
from iqalab.stages import train
from iqalab.train.engine import train_experiment

MODELS = {"brisque": {"name": "brisque", "regressor": "train", "max_support_vectors": 512},
          "niqe": {"name": "niqe", "pristine": "train", "patch_size": 64, "top_quantile": 0.5}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=384, help="side of the image files (native resolution)")
    parser.add_argument("--model", default="brisque", choices=sorted(MODELS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    per_scene = 8
    n_scenes = max(2, args.images // per_scene)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ds_root = base / "source" / "toy"
        build_toy(ds_root, n_scenes=n_scenes, per_scene=per_scene, size=args.size, n_random_splits=2)
        build_cache(read_dataset(ds_root), 64, progress=False)
        params = parse_params({
            "seed": 0,
            "datasets": {"toy": {"source": "toy", "builder": "toy", "cache_size": 64, "options": {
                "n_scenes": n_scenes, "per_scene": per_scene, "size": args.size}}},
            "train_defaults": {"epochs": 1, "batch_size": 8, "crop": 48},
            "experiments": {"e": {"dataset": "toy", "model": MODELS[args.model],
                                  "splits": ["scene", "random_00", "random_01"]}}})
        roots = {}
        for name in ("recomputed", "cached"):
            roots[name] = base / name
            shutil.copytree(ds_root, roots[name] / "build" / "datasets" / "toy")
        start = time.perf_counter()
        plain = train_experiment(params, "e", roots["recomputed"], progress=False)  # no feature cache
        t_plain = time.perf_counter() - start
        start = time.perf_counter()
        cached = train.run(params, "e", roots["cached"], progress=False)  # the stage: build/features, cold
        t_cached = time.perf_counter() - start
        n_files = sum(1 for _ in (roots["cached"] / "build" / "features").rglob("*.npz"))
    cols = ["image_id", "attribute", "split", "role"]
    same = np.array_equal(plain.sort_values(cols)["pred"].to_numpy(), cached.sort_values(cols)["pred"].to_numpy())
    n_images = n_scenes * per_scene
    print(f"model={args.model} ({MODELS[args.model]}) images={n_images} at {args.size}px splits=3")
    print(f"reference (features recomputed every split, fit and predict): {t_plain:7.1f} s")
    print(f"feature cache (each image once, {n_files} feature files):      {t_cached:7.1f} s")
    print(f"ratio (reference / cached): {t_plain / t_cached:.2f}x; identical predictions: {same}")


if __name__ == "__main__":
    main()
