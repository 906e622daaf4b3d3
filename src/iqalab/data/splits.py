"""Split protocols of the four papers, as rows of ``splits.parquet`` (``image_id``, ``split``, ``role``).

- ``scene``: scene-level train/test (TuningIQA 451/104 scenes; PIQ23 35/15), optionally with a val share of the
  training scenes; no scene appears under two roles.
- ``random_00`` .. ``random_19``: REQA's 20 random 80/20 image-level splits, seeds recorded in the split name.
- ``fold_0`` .. ``fold_4``: SFIQA's 5-fold cross-validation with 7:1:2 train/val/test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _rows(ids: Sequence[str], split: str, roles: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(ids), "split": split, "role": list(roles)})


def scene_split(images: pd.DataFrame, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0,
                name: str = "scene") -> pd.DataFrame:
    """Scene-level split: whole scenes go to train, val or test (``val_fraction`` of all scenes, may be 0)."""
    scenes = np.array(sorted(images["scene"].astype(str).unique()))
    if len(scenes) < 2:
        raise ValueError(f"a scene-level split needs at least 2 scenes, got {len(scenes)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(scenes))
    n_test = max(1, int(round(test_fraction * len(scenes))))
    n_val = int(round(val_fraction * len(scenes)))
    if n_test + n_val >= len(scenes):
        n_val = max(0, len(scenes) - n_test - 1)
    role_of_scene: dict[str, str] = {}
    for rank, idx in enumerate(order):
        role_of_scene[scenes[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    roles = images["scene"].astype(str).map(role_of_scene)
    return _rows(images["image_id"], name, roles)


def random_splits(images: pd.DataFrame, n_splits: int = 20, test_fraction: float = 0.2,
                  val_fraction: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """REQA protocol: ``n_splits`` image-level random splits (``random_XX``, split XX seeded with seed + XX)."""
    frames = []
    ids = images["image_id"].to_numpy()
    for k in range(n_splits):
        rng = np.random.default_rng(seed + k)
        order = rng.permutation(len(ids))
        n_test = max(1, int(round(test_fraction * len(ids))))
        n_val = int(round(val_fraction * len(ids)))
        roles = np.full(len(ids), "train", dtype=object)
        roles[order[:n_test]] = "test"
        roles[order[n_test:n_test + n_val]] = "val"
        frames.append(_rows(ids, f"random_{k:02d}", roles))
    return pd.concat(frames, ignore_index=True)


def kfold_splits(images: pd.DataFrame, n_folds: int = 5, ratios: tuple[float, float, float] = (7, 1, 2),
                 seed: int = 0, by_scene: bool = False) -> pd.DataFrame:
    """SFIQA protocol: ``n_folds`` rotations of a 7:1:2 train/val/test partition (``fold_k``).

    The data are cut into 10 equal chunks (for 7:1:2); fold k takes chunks k..k+1 (mod 10) as test and the next
    chunk as val, so every image is tested exactly once across the 5 folds. With ``by_scene`` chunks hold whole
    scenes.
    """
    total = sum(ratios)
    n_chunks = int(round(total))
    n_test_chunks = int(round(ratios[2]))
    n_val_chunks = int(round(ratios[1]))
    units = np.array(sorted(images["scene"].astype(str).unique())) if by_scene else images["image_id"].to_numpy()
    rng = np.random.default_rng(seed)
    chunk_of_unit = np.empty(len(units), dtype=int)
    chunk_of_unit[rng.permutation(len(units))] = np.arange(len(units)) % n_chunks
    unit_chunk = dict(zip(units, chunk_of_unit))
    key = images["scene"].astype(str) if by_scene else images["image_id"]
    chunks = key.map(unit_chunk).to_numpy()
    frames = []
    for fold in range(n_folds):
        start = fold * n_test_chunks
        test = {(start + i) % n_chunks for i in range(n_test_chunks)}
        val = {(start + n_test_chunks + i) % n_chunks for i in range(n_val_chunks)}
        roles = np.where(np.isin(chunks, list(test)), "test", np.where(np.isin(chunks, list(val)), "val", "train"))
        frames.append(_rows(images["image_id"], f"fold_{fold}", roles))
    return pd.concat(frames, ignore_index=True)
