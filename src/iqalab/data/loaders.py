"""Torch datasets over the image cache: the batch contract of :mod:`iqalab.models.base`.

Items carry ``image`` as uint8 ``[3, H, W]``; the engine turns a batch into the ImageNet-normalised float
tensor models receive with :func:`normalise_batch` after moving it to the device.

Crops and flips act on the cached uint8 arrays; random draws come from a generator seeded by
``(seed, epoch, index)``, so a batch is the same whatever the number of workers or a resume point. Only the keys a
model declares in ``inputs`` are built (the mandatory targets ``mos``/``mos_norm``/``std``/``std_norm``/
``image_id`` always are).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset as TorchDataset

from iqalab.data.cache import ImageCache, decode_image
from iqalab.data.schema import CAM_COLUMNS, FACE_BOX, LANDMARKS, PERSON_BOX, Dataset

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_chw_uint8(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` (any strides, read-only memmaps included) -> contiguous uint8 ``[3, H, W]``."""
    return torch.from_numpy(np.array(arr, dtype=np.uint8, order="C")).permute(2, 0, 1).contiguous()


def normalise_batch(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> ImageNet-normalised ``dtype`` tensor, on the images' device.

    Items stay uint8 until the whole batch is on its device: one vectorised conversion per batch instead of one
    per image, and a quarter of the bytes through the host-to-device copy.
    """
    mean = torch.as_tensor(IMAGENET_MEAN, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255.0
    std = torch.as_tensor(IMAGENET_STD, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255.0
    return (images.to(dtype) - mean) / std


def denormalise_batch(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``[B, 3, H, W]`` -> float32 RGB in [0, 1] (unclipped), on the images' device: the
    inverse of :func:`normalise_batch` for models that work on pixels (NIQE, BRISQUE, pyiqa metrics)."""
    mean = torch.as_tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return images.float() * std + mean


def normalise(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> ImageNet-normalised float ``[3, H, W]`` (single images, e.g. scoring)."""
    return normalise_batch(to_chw_uint8(arr)[None])[0]


@dataclass
class CamStats:
    """Per-parameter mean and std of the training rows, for standardising ``cam_*`` (NaN-aware)."""

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, images: pd.DataFrame) -> CamStats:
        values = images[list(CAM_COLUMNS)].to_numpy(dtype=float)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (unknown parameters) are expected
            mean = np.nan_to_num(np.nanmean(values, axis=0)) if len(values) else np.zeros(len(CAM_COLUMNS))
            std = np.nan_to_num(np.nanstd(values, axis=0), nan=1.0) if len(values) else np.ones(len(CAM_COLUMNS))
        std[std < 1e-8] = 1.0
        return cls(mean=mean.tolist(), std=std.tolist())

    def transform(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardised values (0 where unknown) and the mask of known values."""
        mask = ~np.isnan(values)
        z = (np.nan_to_num(values) - np.asarray(self.mean)) / np.asarray(self.std)
        return np.where(mask, z, 0.0).astype(np.float32), mask.astype(np.float32)


class ImageItems(TorchDataset):
    """One item per image id: the cached image (cropped/flipped in training) and its targets."""

    def __init__(self, ds: Dataset, ids: Sequence[str], cache: ImageCache, inputs: Iterable[str], train: bool,
                 crop: int | None = None, flip: bool = True, vflip: bool = False, eval_crop: int | None = None,
                 cam_stats: CamStats | None = None, seed: int = 0) -> None:
        self.ids = list(ids)
        self.inputs = set(inputs)
        self.cache = cache
        self.train = train
        self.crop = crop if train else eval_crop
        if self.crop is not None and self.crop > cache.size:
            raise ValueError(f"crop {self.crop} is larger than the cached image size {cache.size}")
        self.flip, self.vflip = flip and train, vflip and train
        self.seed = seed
        self.epoch = 0
        self.attributes = ds.attributes
        lo, hi = ds.mos_range
        table = ds.images.set_index("image_id").loc[self.ids]
        self.rows = np.array([cache.row_of[i] for i in self.ids], dtype=np.int64)
        self.mos = table[[f"mos_{a}" for a in self.attributes]].to_numpy(dtype=np.float32)
        std_cols = [f"std_{a}" for a in self.attributes]
        self.std = table[std_cols].to_numpy(dtype=np.float32) if set(std_cols) <= set(table.columns) \
            else np.full_like(self.mos, np.nan)
        self.mos_norm = (self.mos - lo) / (hi - lo)
        self.std_norm = self.std / (hi - lo)
        stats = cam_stats or CamStats.fit(table)
        self.cam, self.cam_mask = stats.transform(table[list(CAM_COLUMNS)].to_numpy(dtype=float))
        self.boxes = {name: _coords(table, cols) for name, cols in
                      (("person_box", PERSON_BOX), ("face_box", FACE_BOX), ("landmarks", LANDMARKS))}
        scene_index = {s: k for k, s in enumerate(ds.scenes)}
        self.scene_idx = table["scene"].astype(str).map(scene_index).to_numpy(dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops/flips for a new epoch (deterministically)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        arr = self.cache[int(self.rows[i])]
        size = arr.shape[0]
        x0 = y0 = 0
        out_size = size
        hflip = vflip = False
        if self.crop is not None and self.crop < size:
            out_size = self.crop
            if self.train:
                rng = np.random.default_rng([self.seed, self.epoch, i])
                x0, y0 = (int(v) for v in rng.integers(0, size - self.crop + 1, size=2))
                hflip = bool(self.flip and rng.random() < 0.5)
                vflip = bool(self.vflip and rng.random() < 0.5)
            else:
                x0 = y0 = (size - self.crop) // 2
            arr = arr[y0:y0 + self.crop, x0:x0 + self.crop]
        elif self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            hflip = bool(self.flip and rng.random() < 0.5)
            vflip = bool(self.vflip and rng.random() < 0.5)
        if hflip:
            arr = arr[:, ::-1]
        if vflip:
            arr = arr[::-1]
        item: dict[str, Any] = {
            "image_id": self.ids[i],
            "mos": torch.from_numpy(self.mos[i]), "mos_norm": torch.from_numpy(self.mos_norm[i]),
            "std": torch.from_numpy(self.std[i]), "std_norm": torch.from_numpy(self.std_norm[i]),
        }
        if "image" in self.inputs:
            item["image"] = to_chw_uint8(arr)  # normalised per batch, on the device (normalise_batch)
        if "cam" in self.inputs:
            item["cam"] = torch.from_numpy(self.cam[i])
            item["cam_mask"] = torch.from_numpy(self.cam_mask[i])
        if "scene_idx" in self.inputs:
            item["scene_idx"] = torch.tensor(self.scene_idx[i])
        for key in ("person_box", "face_box", "landmarks"):
            if key in self.inputs:
                pts = self.boxes[key][i].reshape(-1, 2) * size - np.array([x0, y0], dtype=np.float32)
                if hflip:
                    pts[:, 0] = out_size - pts[:, 0]
                if vflip:
                    pts[:, 1] = out_size - pts[:, 1]
                if key != "landmarks":  # keep x0 <= x1 after a flip
                    pts = np.stack([pts.min(axis=0), pts.max(axis=0)])
                item[key] = torch.from_numpy(pts.reshape(self.boxes[key][i].shape).astype(np.float32))
        return item


def _coords(table: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """Normalised box ``[N, 4]`` or landmark ``[N, K, 2]`` coordinates (NaN when the columns are absent)."""
    if set(cols) <= set(table.columns):
        values = table[list(cols)].to_numpy(dtype=np.float32)
    else:
        values = np.full((len(table), len(cols)), np.nan, dtype=np.float32)
    return values if len(cols) == 4 else values.reshape(len(table), len(cols) // 2, 2)


class PairItems(TorchDataset):
    """Image pairs among ``items``, each with its preferences ``p`` (a better than b) on every attribute.

    ``pairs.parquet`` has one row per pair and attribute; the rows of one ordered pair ``(image_a, image_b)``
    become one item whose ``p`` is ``float[A]`` in ``items.attributes`` order, NaN where that attribute has no
    preference (duplicate rows are averaged). One item per image pair is what TuningIQA Eq. 11 sums over:
    ``1/|P| sum_pairs sum_attr BCE`` (issue #27; one row per attribute would weight the ranking term 1/5).
    """

    def __init__(self, items: ImageItems, pairs: pd.DataFrame) -> None:
        self.items = items
        position = {image_id: k for k, image_id in enumerate(items.ids)}
        keep = pairs["image_a"].isin(position) & pairs["image_b"].isin(position) \
            & pairs["attribute"].isin(items.attributes)
        wide = pairs[keep].pivot_table(index=["image_a", "image_b"], columns="attribute", values="p",
                                       aggfunc="mean", sort=False)
        wide = wide.reindex(columns=list(items.attributes))
        self.a = wide.index.get_level_values("image_a").map(position).to_numpy(dtype=np.int64)
        self.b = wide.index.get_level_values("image_b").map(position).to_numpy(dtype=np.int64)
        self.p = wide.to_numpy(dtype=np.float32).reshape(len(wide), len(items.attributes))

    def set_epoch(self, epoch: int) -> None:
        self.items.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.p)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"a": self.items[int(self.a[i])], "b": self.items[int(self.b[i])], "p": torch.from_numpy(self.p[i])}


def mos_pairs(items: ImageItems, max_pairs: int, seed: int = 0, by_scene: pd.Series | None = None) -> pd.DataFrame:
    """Coarse pairs from MOS order (p in {0, 0.5, 1}) among ``items``, for models trained on pairs when the
    dataset ships no (or few) annotated pairs. Pairs are drawn within a scene when ``by_scene`` maps ids to scenes."""
    rng = np.random.default_rng(seed)
    n = len(items)
    rows = []
    if n < 2:
        return pd.DataFrame(columns=["image_a", "image_b", "attribute", "p", "source", "fine"])
    for _ in range(max_pairs):
        i, j = rng.choice(n, size=2, replace=False)
        if by_scene is not None:
            same = np.flatnonzero(by_scene.to_numpy() == by_scene.iloc[i])
            same = same[same != i]
            if len(same):
                j = int(rng.choice(same))
        k = int(rng.integers(len(items.attributes)))
        ma, mb = items.mos[i, k], items.mos[j, k]
        if np.isnan(ma) or np.isnan(mb):
            continue
        p = 1.0 if ma > mb else 0.0 if ma < mb else 0.5
        rows.append((items.ids[i], items.ids[j], items.attributes[k], p, "mos", False))
    return pd.DataFrame(rows, columns=["image_a", "image_b", "attribute", "p", "source", "fine"])


class NativeImageItems(ImageItems):
    """:class:`ImageItems` whose images are the ingested files at their stored (native) resolution, decoded by
    the data package's one decode path: no resize, crop or flip. For models with ``input_resolution = "native"``
    (NIQE and BRISQUE, which the papers run on full-resolution images); batch them one image at a time, since
    sizes differ. Boxes and landmarks are in the native pixel frame."""

    def __init__(self, ds: Dataset, ids: Sequence[str], cache: ImageCache, inputs: Iterable[str],
                 cam_stats: CamStats | None = None, seed: int = 0, **_: Any) -> None:
        super().__init__(ds, ids, cache, inputs, train=False, cam_stats=cam_stats, seed=seed)
        table = ds.images.set_index("image_id").loc[self.ids]
        self.files = [ds.image_path(str(p)) for p in table["path"]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = super().__getitem__(i)
        arr = decode_image(self.files[i])
        if "image" in self.inputs:
            item["image"] = to_chw_uint8(arr)
        h, w = arr.shape[:2]
        for key in ("person_box", "face_box", "landmarks"):
            if key in self.inputs:
                pts = self.boxes[key][i].reshape(-1, 2) * np.array([w, h], dtype=np.float32)
                item[key] = torch.from_numpy(pts.reshape(self.boxes[key][i].shape).astype(np.float32))
        return item
