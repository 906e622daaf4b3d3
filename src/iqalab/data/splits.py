"""Split protocols of the four papers, as rows of ``splits.parquet`` (``image_id``, ``split``, ``role``).

- ``scene``: scene-level train/test (TuningIQA 451/104 scenes; PIQ23 35/15), optionally with a val share of the
  training scenes; no scene appears under two roles.
- ``random_00`` .. ``random_19``: REQA's 20 random 80/20 image-level splits, seeds recorded in the split name.
- ``fold_0`` .. ``fold_4``: SFIQA's 5-fold cross-validation with 7:1:2 train/val/test.
- ``official`` / ``scene`` / ``device``: splits given by a publisher (:func:`mapped_split`,
  :func:`piq23_scene_split`: PIQ23's 35/15 scenes and its device split; CGFIQA-40K's folders).
- ``full_train`` / ``full_test``: the cross-dataset protocol (:func:`cross_dataset_splits`).
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


def random_split_names(n_splits: int) -> list[str]:
    """Names of :func:`random_splits`' splits: ``random_00`` .. (what ``experiments.<e>.splits`` may ask for)."""
    return [f"random_{k:02d}" for k in range(n_splits)]


def kfold_split_names(n_folds: int) -> list[str]:
    """Names of :func:`kfold_splits`' splits: ``fold_0`` .. ``fold_<n_folds - 1>``."""
    return [f"fold_{k}" for k in range(n_folds)]


def random_splits(images: pd.DataFrame, n_splits: int = 20, test_fraction: float = 0.2,
                  val_fraction: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """REQA protocol: ``n_splits`` image-level random splits (``random_XX``, split XX seeded with seed + XX)."""
    frames = []
    ids = images["image_id"].to_numpy()
    for k, name in enumerate(random_split_names(n_splits)):
        rng = np.random.default_rng(seed + k)
        order = rng.permutation(len(ids))
        n_test = max(1, int(round(test_fraction * len(ids))))
        n_val = int(round(val_fraction * len(ids)))
        roles = np.full(len(ids), "train", dtype=object)
        roles[order[:n_test]] = "test"
        roles[order[n_test:n_test + n_val]] = "val"
        frames.append(_rows(ids, name, roles))
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
    for fold, name in enumerate(kfold_split_names(n_folds)):
        start = fold * n_test_chunks
        test = {(start + i) % n_chunks for i in range(n_test_chunks)}
        val = {(start + n_test_chunks + i) % n_chunks for i in range(n_val_chunks)}
        roles = np.where(np.isin(chunks, list(test)), "test", np.where(np.isin(chunks, list(val)), "val", "train"))
        frames.append(_rows(images["image_id"], name, roles))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------- given splits
_ROLE_ALIASES = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "tst": "test",
}


def normalise_role(value: object) -> str:
    """Map a published split label (``Train``, ``validation``, ``TEST`` ...) onto ``train``/``val``/``test``."""
    role = _ROLE_ALIASES.get(str(value).strip().lower())
    if role is None:
        raise ValueError(f"split label {value!r} is not one of train/val/test (or {sorted(_ROLE_ALIASES)})")
    return role


def mapped_split(images: pd.DataFrame, role_of: dict[str, str], by: str = "image_id",
                 name: str = "official") -> pd.DataFrame:
    """A split given by the publisher: ``role_of`` maps each image id (``by="image_id"``) or scene
    (``by="scene"``) to a role; every image must be covered (a ``KeyError`` names the first that is not)."""
    keys = images[by].astype(str)
    missing = ~keys.isin(set(role_of))
    if missing.any():
        first = keys[missing].iloc[0]
        raise KeyError(f"split {name!r}: {by} {first!r} has no role in the published split table")
    roles = [normalise_role(role_of[k]) for k in keys]
    return _rows(images["image_id"], name, roles)


def piq23_scene_split(images: pd.DataFrame, scene_roles: dict[str, str], val_scenes: int = 0, seed: int = 0,
                      name: str = "scene") -> pd.DataFrame:
    """PIQ23 official scene split (FHIQA Sec. IV-A: 35 train / 15 test scenes of 50, ~30% of the images).

    ``scene_roles`` comes from ``Test split/Scene Split.csv`` (SCENE -> Train/Test). The release has no
    validation scenes; ``val_scenes`` > 0 moves that many training scenes (seeded) to ``val``.
    """
    roles = {str(s): normalise_role(r) for s, r in scene_roles.items()}
    train_scenes = sorted(s for s, r in roles.items() if r == "train" and s in set(images["scene"].astype(str)))
    if val_scenes > 0:
        if val_scenes >= len(train_scenes):
            raise ValueError(f"val_scenes={val_scenes} leaves no training scene (have {len(train_scenes)})")
        rng = np.random.default_rng(seed)
        for idx in rng.permutation(len(train_scenes))[:val_scenes]:
            roles[train_scenes[idx]] = "val"
    return mapped_split(images, roles, by="scene", name=name)


def cross_dataset_splits(images: pd.DataFrame, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Cross-dataset protocol (REQA Table IV, SFIQA Table IV): train on all of A, test on all of B.

    Two splits per dataset: ``full_train`` (every image trains, a seeded ``val_fraction`` validates) and
    ``full_test`` (every image is tested). An experiment trains on A's ``full_train``; evaluation on B reads
    B's ``full_test``.
    """
    ids = images["image_id"].to_numpy()
    roles = np.full(len(ids), "train", dtype=object)
    n_val = int(round(val_fraction * len(ids)))
    if n_val:
        roles[np.random.default_rng(seed).permutation(len(ids))[:n_val]] = "val"
    return pd.concat([_rows(ids, "full_train", roles), _rows(ids, "full_test", ["test"] * len(ids))],
                     ignore_index=True)
