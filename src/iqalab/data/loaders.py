"""Torch datasets over the image stores: the batch contract of :mod:`iqalab.models.base`.

Items carry ``image`` as uint8 ``[3, H, W]`` (or ``patches``, :class:`PatchItems`); the engine turns a batch
into the ImageNet-normalised float tensor models receive with :func:`normalise_batch` after moving it to the
device. Images come from the square cache or from the native-resolution store (:mod:`iqalab.data.cache`): from
the latter, crops and patches are cut at the papers' scales, the file's own pixels.

Crops and flips act on the stored uint8 arrays (memory-mapped views; only the window is copied); random draws
are a function of ``(seed, epoch, index)`` (one generator per epoch, row ``index``; patches: one per item), so a
batch is the same whatever the number of workers or a resume point. Only the keys a model declares in ``inputs`` are built (the mandatory targets ``mos``/``mos_norm``/``std``/``std_norm``/
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
from torch.utils.data import default_collate

from iqalab.data.cache import ImageCache, NativeStore
from iqalab.data.regions import face_window_array, region_squares
from iqalab.data.schema import CAM_COLUMNS, FACE_BOX, LANDMARKS, PERSON_BOX, Dataset

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_chw_uint8(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` (any strides, read-only memmaps included) -> contiguous uint8 ``[3, H, W]`` (one copy,
    straight from the store's window into channel-first order)."""
    return torch.from_numpy(np.array(np.asarray(arr).transpose(2, 0, 1), dtype=np.uint8, order="C"))


def normalise_batch(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> ImageNet-normalised ``dtype`` tensor, on the images' device.

    Items stay uint8 until the whole batch is on its device: one vectorised conversion per batch instead of one
    per image, and a quarter of the bytes through the host-to-device copy. Computed as ``x * (1 / (255 std)) -
    mean / std`` in place on the converted copy (two passes; 10x faster on a CPU than ``(x - m) / s`` with
    broadcasting, equal to it within 3e-7). Any leading shape ``[..., 3, H, W]`` (patch sets included). The
    result does not depend on how images are batched: every element is ``float(x) * scale + shift`` in ``dtype``.
    """
    scale = (1.0 / (torch.as_tensor(IMAGENET_STD, device=images.device, dtype=torch.float64) * 255.0)).to(dtype)
    shift = (-torch.as_tensor(IMAGENET_MEAN / IMAGENET_STD, device=images.device, dtype=torch.float64)).to(dtype)
    scale, shift = scale.view(3, 1, 1), shift.view(3, 1, 1)
    if images.device.type != "cpu" or images.dim() < 4 or not images.is_contiguous():
        out = images.to(dtype)  # a new tensor from uint8 (``copy=True`` takes a 4x slower path)
        if out.data_ptr() == images.data_ptr():  # already ``dtype``: never modify the caller's tensor
            out = out.clone()
        return out.mul_(scale).add_(shift)
    # on a CPU, image by image: the three passes stay in the core's cache instead of streaming the whole batch
    # through memory three times (1.6x less CPU time for 32 x 224 crops); the same operations, the same values
    out = torch.empty(images.shape, dtype=dtype)
    for src, dst in zip(images.view(-1, *images.shape[-3:]), out.view(-1, *images.shape[-3:]), strict=True):
        dst.copy_(src).mul_(scale).add_(shift)
    return out


def denormalise_batch(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``[B, 3, H, W]`` -> float32 RGB in [0, 1] (unclipped), on the images' device: the
    inverse of :func:`normalise_batch` for models that work on pixels (NIQE, BRISQUE, pyiqa metrics)."""
    mean = torch.as_tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return images.float() * std + mean


def normalise(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> ImageNet-normalised float ``[3, H, W]`` (single images, e.g. scoring)."""
    return normalise_batch(to_chw_uint8(arr)[None])[0]


class ItemBatch(dict):
    """A batch :meth:`ImageItems.__getitems__` collated itself: :func:`collate` passes it through."""

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, int):  # torch's default_collate indexes the first item of its list
            raise TypeError("this batch was collated by ImageItems.__getitems__: give the DataLoader "
                            "collate_fn=iqalab.data.loaders.collate")
        raise KeyError(key)


def collate(batch: ItemBatch | list[Any]) -> Any:
    """The ``collate_fn`` of DataLoaders over items: a batch :meth:`ImageItems.__getitems__` built is passed
    through (as a plain dict); a list of items (:class:`PatchItems`, :class:`PairItems`) goes to torch's
    ``default_collate``."""
    return dict(batch) if isinstance(batch, ItemBatch) else default_collate(batch)


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


@dataclass(frozen=True)
class Geometry:
    """Where an item's pixels come from in its source image: the ``ch x cw`` window at ``(y0, x0)``, then flips."""

    y0: int
    x0: int
    ch: int
    cw: int
    hflip: bool = False
    vflip: bool = False


class ImageItems(TorchDataset):
    """One item per image id: the stored image (cropped/flipped in training) and its targets.

    ``cache`` is either store of :mod:`iqalab.data.cache`: the square :class:`ImageCache` (every image ``S x S``)
    or the :class:`NativeStore` (each image at its own aspect-preserved size, so ``crop`` cuts the paper's crop
    at native scale, e.g. KonIQ's 1024 x 768 frames). The geometry is the same for both: a random ``crop``
    square (training) or the centre ``eval_crop`` square, then flips; box and landmark coordinates, stored
    normalised to the frame, are turned into pixels of the item's window.
    """

    def __init__(self, ds: Dataset, ids: Sequence[str], cache: ImageCache | NativeStore, inputs: Iterable[str],
                 train: bool, crop: int | None = None, flip: bool = True, vflip: bool = False,
                 eval_crop: int | None = None, cam_stats: CamStats | None = None, seed: int = 0) -> None:
        self.ids = list(ids)
        self.inputs = set(inputs)
        self.cache = cache
        self.train = train
        self.crop = crop if train else eval_crop
        self.rows = np.array([cache.row_of[i] for i in self.ids], dtype=np.int64)
        if self.crop is not None and len(self.rows):
            short = int(min(self.frame(k)[0] for k in range(len(self.rows))) if isinstance(cache, NativeStore)
                        else cache.size)
            if self.crop > short:
                raise ValueError(f"crop {self.crop} is larger than the stored image size {short}"
                                 f"{' (shortest side in the native store)' if isinstance(cache, NativeStore) else ''}")
        self.flip, self.vflip = flip and train, vflip and train
        self.seed = seed
        self.epoch = 0
        self._draws: tuple[int, np.ndarray] | None = None
        self.attributes = ds.attributes
        lo, hi = ds.mos_range
        table = ds.images.set_index("image_id").loc[self.ids]
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

    def verify(self) -> None:
        """Check the CRC of each stored image of these items now, in this process (a store checks a row the first
        time a process reads it): DataLoader worker processes forked afterwards inherit the checked rows instead
        of re-reading every whole image in each epoch's new workers."""
        for row in np.unique(self.rows).tolist():
            self.cache[row]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def same_size(self) -> bool:
        """Whether every item's image has one shape, so items batch together (else one per batch)."""
        if not isinstance(self.cache, NativeStore) or self.crop is not None:
            return True
        return len(np.unique(self.cache.shapes[self.rows], axis=0)) <= 1

    def frame(self, i: int) -> tuple[int, int]:
        """``(height, width)`` of item ``i``'s stored image, without reading it."""
        if isinstance(self.cache, NativeStore):
            return self.cache.shape(int(self.rows[i]))
        return self.cache.size, self.cache.size

    def rng(self, i: int) -> np.random.Generator:
        """The generator of item ``i``'s random draws in this epoch (seeded by ``(seed, epoch, i)``)."""
        return np.random.default_rng([self.seed, self.epoch, i])

    def epoch_draws(self) -> np.ndarray:
        """This epoch's uniform draws ``[N, 4]`` (crop x, crop y, hflip, vflip), one generator per epoch seeded by
        ``(seed, epoch)``: row ``i`` depends on the index only (the generator fills rows in order), and one call
        replaces a generator per item (seeding one costs more than cutting a crop)."""
        if self._draws is None or self._draws[0] != self.epoch:
            self._draws = (self.epoch, np.random.default_rng([self.seed, self.epoch]).random((len(self.rows), 4)))
        return self._draws[1]

    def geometry(self, i: int, rng: np.random.Generator | None = None) -> Geometry:
        """Item ``i``'s window and flips: a random ``crop`` square in training (from :meth:`epoch_draws`, or from
        ``rng`` when given), the centre ``eval_crop`` square in evaluation, the whole frame without a crop."""
        h, w = self.frame(i)
        crop = self.crop
        u = self.epoch_draws()[i] if self.train and rng is None else None
        y0 = x0 = 0
        ch, cw = h, w
        if crop is not None and (crop < h or crop < w):
            ch = cw = crop
            if not self.train:
                x0, y0 = (w - crop) // 2, (h - crop) // 2
            elif u is not None:
                x0, y0 = int(u[0] * (w - crop + 1)), int(u[1] * (h - crop + 1))
            else:
                x0, y0 = (int(v) for v in rng.integers(0, np.array([w - crop + 1, h - crop + 1])))
        draw = (lambda k: u[k]) if u is not None else (lambda k: rng.random())
        hflip = bool(self.train and self.flip and draw(2) < 0.5)
        vflip = bool(self.train and self.vflip and draw(3) < 0.5)
        return Geometry(y0, x0, ch, cw, hflip, vflip)

    def pixels(self, i: int, geo: Geometry) -> np.ndarray:
        """Item ``i``'s uint8 ``[h, w, 3]`` window, flipped (a view of the store)."""
        arr = self.cache[int(self.rows[i])][geo.y0:geo.y0 + geo.ch, geo.x0:geo.x0 + geo.cw]
        if geo.hflip:
            arr = arr[:, ::-1]
        if geo.vflip:
            arr = arr[::-1]
        return arr

    def image(self, i: int, geo: Geometry) -> torch.Tensor:
        """Item ``i``'s uint8 ``[3, h, w]`` tensor: :meth:`pixels` as one copy of the window (contiguous rows from
        the channel-planar native store), flipped afterwards by torch (a reversed-stride copy is 4x slower)."""
        image = to_chw_uint8(self.cache[int(self.rows[i])][geo.y0:geo.y0 + geo.ch, geo.x0:geo.x0 + geo.cw])
        if geo.hflip:
            image = image.flip(-1)
        if geo.vflip:
            image = image.flip(-2)
        return image

    def targets(self, i: int) -> dict[str, Any]:
        """Every key of item ``i`` but the image: targets and the declared side inputs."""
        item: dict[str, Any] = {
            "image_id": self.ids[i],
            "mos": torch.from_numpy(self.mos[i]), "mos_norm": torch.from_numpy(self.mos_norm[i]),
            "std": torch.from_numpy(self.std[i]), "std_norm": torch.from_numpy(self.std_norm[i]),
        }
        if "cam" in self.inputs:
            item["cam"] = torch.from_numpy(self.cam[i])
            item["cam_mask"] = torch.from_numpy(self.cam_mask[i])
        if "scene_idx" in self.inputs:
            item["scene_idx"] = torch.tensor(self.scene_idx[i])
        return item

    def add_coords(self, item: dict[str, Any], i: int, geo: Geometry) -> None:
        """Boxes and landmarks of item ``i`` in the pixels of its window (normalised coordinates x frame size,
        less the window's corner, mirrored by the flips; boxes keep ``x0 <= x1``)."""
        h, w = self.frame(i)
        for key in ("person_box", "face_box", "landmarks"):
            if key in self.inputs:
                pts = self.boxes[key][i].reshape(-1, 2) * np.array([w, h], dtype=np.float32) \
                    - np.array([geo.x0, geo.y0], dtype=np.float32)
                if geo.hflip:
                    pts[:, 0] = geo.cw - pts[:, 0]
                if geo.vflip:
                    pts[:, 1] = geo.ch - pts[:, 1]
                if key != "landmarks":  # keep x0 <= x1 after a flip
                    pts = np.stack([pts.min(axis=0), pts.max(axis=0)])
                item[key] = torch.from_numpy(pts.reshape(self.boxes[key][i].shape).astype(np.float32))

    def __getitem__(self, i: int) -> dict[str, Any]:
        geo = self.geometry(i)
        item = self.targets(i)
        if "image" in self.inputs:
            item["image"] = self.image(i, geo)  # normalised per batch, on the device
        self.add_coords(item, i, geo)
        return item

    def __getitems__(self, indices: Sequence[int]) -> ItemBatch | list[dict[str, Any]]:
        """The batch of ``indices``, already collated (torch's DataLoader calls this instead of ``__getitem__``
        per index, then its ``collate_fn``: use :func:`collate`). Exactly the tensors :func:`collate` makes of
        ``[self[i] for i in indices]``, built once per batch (:meth:`batch`). A subclass that cuts its own items
        (:class:`PatchItems`), or images of different sizes, get the per-item list."""
        if type(self).__getitem__ is not ImageItems.__getitem__:
            return [self[int(i)] for i in indices]
        return self.batch(indices)

    def geometries(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`geometry` of items ``idx`` as arrays (``y0``, ``x0``, ``ch``, ``cw``, ``hflip``, ``vflip``; ``h``,
        ``w``: the frames), from the same draws with the same integer arithmetic."""
        if isinstance(self.cache, NativeStore):
            h, w = (self.cache.shapes[self.rows[idx]].T if len(idx) else np.zeros((2, 0), dtype=np.int64))
        else:
            h = w = np.full(len(idx), self.cache.size, dtype=np.int64)
        geo = {"h": h, "w": w, "y0": np.zeros_like(h), "x0": np.zeros_like(w), "ch": h.copy(), "cw": w.copy()}
        u = self.epoch_draws()[idx] if self.train else np.ones((len(idx), 4))
        crop = self.crop
        if crop is not None:
            cut = (crop < h) | (crop < w)
            geo["ch"][cut] = geo["cw"][cut] = crop
            if self.train:  # int(u * n) of a non-negative float truncates as the float -> int64 cast does
                geo["x0"] = np.where(cut, (u[:, 0] * (w - crop + 1)).astype(np.int64), 0)
                geo["y0"] = np.where(cut, (u[:, 1] * (h - crop + 1)).astype(np.int64), 0)
            else:
                geo["x0"], geo["y0"] = np.where(cut, (w - crop) // 2, 0), np.where(cut, (h - crop) // 2, 0)
        geo["hflip"] = (u[:, 2] < 0.5) & (self.train and self.flip)
        geo["vflip"] = (u[:, 3] < 0.5) & (self.train and self.vflip)
        return geo

    def batch(self, indices: Sequence[int]) -> ItemBatch | list[dict[str, Any]]:
        """Items ``indices`` as one collated batch: every crop cut from the store straight into one uint8
        ``[B, 3, h, w]`` array (a row-wise copy each; CRC checked on a row's first read, as per item), flipped
        by one torch call per flip direction, targets and side inputs gathered with one index per array."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        geo = self.geometries(idx)
        if "image" in self.inputs and len(idx) and ((geo["ch"] != geo["ch"][0]).any() or
                                                    (geo["cw"] != geo["cw"][0]).any()):
            return [self[int(i)] for i in idx]  # different sizes: collate refuses them as it always did
        out = ItemBatch(image_id=[self.ids[i] for i in idx])
        for key in ("mos", "mos_norm", "std", "std_norm"):
            out[key] = torch.from_numpy(getattr(self, key)[idx])
        if "cam" in self.inputs:
            out["cam"], out["cam_mask"] = torch.from_numpy(self.cam[idx]), torch.from_numpy(self.cam_mask[idx])
        if "scene_idx" in self.inputs:
            out["scene_idx"] = torch.from_numpy(self.scene_idx[idx])
        if "image" in self.inputs:
            out["image"] = self._cut(idx, geo)
        self._batch_coords(out, idx, geo)
        return out

    def _cut(self, idx: np.ndarray, geo: dict[str, np.ndarray]) -> torch.Tensor:
        """uint8 ``[B, 3, h, w]`` windows of items ``idx``, flipped: :meth:`image` for a whole batch."""
        ch, cw = (int(geo["ch"][0]), int(geo["cw"][0])) if len(idx) else (0, 0)
        pixels = np.empty((len(idx), 3, ch, cw), dtype=np.uint8)
        rows, y0s, x0s = self.rows[idx].tolist(), geo["y0"].tolist(), geo["x0"].tolist()
        for k, (row, y0, x0, vflip) in enumerate(zip(rows, y0s, x0s, geo["vflip"].tolist(), strict=True)):
            # channel-first view of the stored window (contiguous rows from the native store's planes); a
            # vertical flip only reverses the order of the rows copied
            window = self.cache[row][y0:y0 + ch, x0:x0 + cw].transpose(2, 0, 1)
            pixels[k] = window[:, ::-1] if vflip else window
        images = torch.from_numpy(pixels)
        for k in np.flatnonzero(geo["hflip"]).tolist():  # torch's flip: 8x faster than a reversed-stride copy
            images[k] = images[k].flip(-1)
        return images

    def _batch_coords(self, out: dict[str, Any], idx: np.ndarray, geo: dict[str, np.ndarray]) -> None:
        """:meth:`add_coords` for a batch, the same float32 operations on ``[B, K, 2]`` arrays."""
        keys = [key for key in ("person_box", "face_box", "landmarks") if key in self.inputs]
        if not keys:
            return
        size = np.stack([geo["w"], geo["h"]], axis=1).astype(np.float32)[:, None]
        corner = np.stack([geo["x0"], geo["y0"]], axis=1).astype(np.float32)[:, None]
        for key in keys:
            coords = self.boxes[key][idx]
            pts = coords.reshape(len(idx), -1, 2) * size - corner
            pts[..., 0] = np.where(geo["hflip"][:, None], geo["cw"].astype(np.float32)[:, None] - pts[..., 0],
                                   pts[..., 0])
            pts[..., 1] = np.where(geo["vflip"][:, None], geo["ch"].astype(np.float32)[:, None] - pts[..., 1],
                                   pts[..., 1])
            if key != "landmarks":  # keep x0 <= x1 after a flip
                pts = np.stack([pts.min(axis=1), pts.max(axis=1)], axis=1)
            out[key] = torch.from_numpy(np.ascontiguousarray(pts.reshape(coords.shape), dtype=np.float32))

class PatchItems(ImageItems):
    """Items whose image comes as square patches cut from the stored image at the paper's scales.

    ``scales`` lists ``(side, n)`` in stored pixels: HyperIQA's 25 random 224 px patches, or FHIQA's multi-scale
    protocol (seed 001 Sec. IV-B: 224 x 5, 672 x 3 and 1344 x 1 at full resolution), each side clipped to the
    image's short side. From the native store the patches are the file's own pixels (no resize). An item holds
    ``patches``: a list with one uint8 tensor ``[rounds * n, 3, side, side]`` per scale (collated to
    ``[B, rounds * n, 3, side, side]``); the whole frame is the item's window, so boxes are in native pixels.
    Training draws from ``(seed, epoch, index)`` and flips the image (each patch mirrored, as a flipped image cut
    at the mirrored offset); evaluation cuts ``rounds`` rounds from ``(eval_seed, index)``, the same every call.

    ``face_scales`` (seed 001 Sec. IV-D: Exposure and Details judged on the face) adds ``face_patches``, the same
    structure cut inside the face box padded by ``face_margin`` (:func:`iqalab.data.regions.face_window_array`,
    the model's rule; the whole image where no face was found): the box, stored normalised, is scaled to this
    image's pixels, and each square lies inside the window (:func:`iqalab.data.regions.region_squares`). A face
    smaller than the patch is taken whole and resized to the patch side (bilinear, corners aligned, rounded to
    uint8), as the model does from the square cache.
    """

    def __init__(self, ds: Dataset, ids: Sequence[str], cache: ImageCache | NativeStore, inputs: Iterable[str],
                 train: bool, scales: Sequence[Sequence[int]], rounds: int = 1, eval_seed: int = 0,
                 flip: bool = True, vflip: bool = False, cam_stats: CamStats | None = None, seed: int = 0,
                 face_scales: Sequence[Sequence[int]] | None = None, face_margin: float = 0.1,
                 **_: Any) -> None:
        super().__init__(ds, ids, cache, inputs, train, crop=None, flip=flip, vflip=vflip, cam_stats=cam_stats,
                         seed=seed)
        if not scales or any(int(side) < 1 or int(n) < 1 for side, n in scales):
            raise ValueError(f"patch scales must be positive (side, n) pairs, got {list(scales)}")
        self.scales = [(int(side), int(n)) for side, n in scales]
        self.face_scales = None if face_scales is None else [(int(side), int(n)) for side, n in face_scales]
        self.face_margin = float(face_margin)
        self.rounds = 1 if train else int(rounds)
        self.eval_seed = int(eval_seed)

    @property
    def same_size(self) -> bool:
        """Whether every item's patches have the same sides (a side is clipped to an image's short side)."""
        if not len(self.rows):
            return True
        short = self.cache.shapes[self.rows].min(axis=1) if isinstance(self.cache, NativeStore) \
            else np.array([self.cache.size])
        return all(len(np.unique(np.minimum(side, short))) == 1 for side, _ in [*self.scales,
                                                                                 *(self.face_scales or [])])

    def patch_offsets(self, i: int, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
        """``(side, offsets)`` per scale: ``rounds * n`` top-left corners ``(y, x)`` of uniformly random squares."""
        return patch_corners(self.frame(i), self.scales, self.rounds, rng)

    def face_window(self, i: int) -> np.ndarray:
        """Item ``i``'s face-region window ``[4]`` (x0, y0, x1, y1) in its stored image's pixels."""
        return face_window_of(self.frame(i), self.boxes["face_box"][i], self.face_margin)

    def face_offsets(self, i: int, rng: np.random.Generator) -> list[tuple[int, int, np.ndarray]]:
        """``(side, square side, corners)`` per face scale (:func:`face_corners`)."""
        return face_corners(self.frame(i), self.boxes["face_box"][i], self.face_scales or [], self.face_margin,
                            self.rounds, rng)

    def item_rng(self, i: int) -> np.random.Generator:
        """Item ``i``'s patch draws: ``(seed, epoch, index)`` in training; in evaluation :func:`patch_rng` of
        ``eval_seed`` and the stored image's CRC32, a function of its pixels only (the same patches wherever the
        image sits in a list, and the ones ``iqalab score`` cuts from the file)."""
        if self.train:
            return self.rng(i)
        return patch_rng(self.eval_seed, self.cache.crc(int(self.rows[i])))

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = self.item_rng(i)
        geo = self.geometry(i, rng)  # the whole frame, flips drawn first
        item = self.targets(i)
        if "image" in self.inputs:
            item.update(cut_patch_sets(self.cache[int(self.rows[i])], self.scales, rng, self.rounds,
                                       self.boxes["face_box"][i], self.face_scales, self.face_margin,
                                       geo.hflip, geo.vflip))
        self.add_coords(item, i, geo)
        return item


def patch_rng(eval_seed: int, crc: int) -> np.random.Generator:
    """The generator of an image's evaluation patches: seeded by ``(eval_seed, CRC32 of its stored pixels)``
    (:meth:`iqalab.data.cache.NativeStore.crc`, :func:`iqalab.data.cache.planar_crc`)."""
    return np.random.default_rng([int(eval_seed), int(crc)])


def patch_corners(frame: tuple[int, int], scales: Sequence[tuple[int, int]], rounds: int,
                  rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """``(side, corners)`` per scale of an ``(H, W)`` image: ``side`` clipped to the short side, ``rounds * n``
    top-left corners ``(y, x)`` of uniformly random squares."""
    h, w = frame
    out = []
    for side, n in scales:
        side = min(side, h, w)
        out.append((side, rng.integers(0, np.array([h - side + 1, w - side + 1]), size=(rounds * n, 2))))
    return out


def face_window_of(frame: tuple[int, int], face_box: np.ndarray, margin: float) -> np.ndarray:
    """The face-region window ``[4]`` (x0, y0, x1, y1) in pixels of an ``(H, W)`` image from its normalised face
    box (NaN: the whole image), padded by ``margin`` (:func:`iqalab.data.regions.face_window_array`)."""
    h, w = frame
    box = np.asarray(face_box, dtype=np.float32) * np.array([w, h, w, h], dtype=np.float32)
    return face_window_array(box[None], h, w, margin)[0]


def face_corners(frame: tuple[int, int], face_box: np.ndarray, face_scales: Sequence[tuple[int, int]],
                 margin: float, rounds: int, rng: np.random.Generator) -> list[tuple[int, int, np.ndarray]]:
    """``(side, square side, corners)`` per face scale: ``rounds * n`` corners ``(y, x)`` of squares inside the
    face window (:func:`iqalab.data.regions.region_squares`), of side ``min(side, window)`` (resized to ``side``
    when smaller)."""
    h, w = frame
    window = face_window_of(frame, face_box, margin)[None]
    out = []
    for side, n in face_scales:
        side = min(side, h, w)
        x0, y0, s = region_squares(window, side, rng.random((1, rounds * n, 2)))
        out.append((side, int(s[0]), np.stack([y0[0], x0[0]], axis=1).astype(np.int64)))
    return out


def cut_squares(image: np.ndarray, corners: np.ndarray, square: int, side: int, hflip: bool = False,
                vflip: bool = False) -> torch.Tensor:
    """uint8 ``[n, 3, side, side]``: the ``square`` px windows at ``corners`` (y, x) of ``image`` [H, W, 3]
    (one copy each, channel first), mirrored by the flips, resized to ``side`` when ``square < side``."""
    cut = np.empty((len(corners), 3, square, square), dtype=np.uint8)
    for j, (y, x) in enumerate(corners.tolist()):
        window = image[y:y + square, x:x + square]
        if hflip:
            window = window[:, ::-1]
        if vflip:
            window = window[::-1]
        cut[j] = window.transpose(2, 0, 1)
    patches = torch.from_numpy(cut)
    if square < side:  # a face smaller than the patch: whole, resized (pixel centres to pixel centres)
        patches = torch.nn.functional.interpolate(patches.float(), size=(side, side), mode="bilinear",
                                                  align_corners=True).round_().clamp_(0, 255).to(torch.uint8)
    return patches


def cut_patch_sets(image: np.ndarray, scales: Sequence[tuple[int, int]], rng: np.random.Generator,
                   rounds: int = 1, face_box: np.ndarray | None = None,
                   face_scales: Sequence[tuple[int, int]] | None = None, face_margin: float = 0.1,
                   hflip: bool = False, vflip: bool = False) -> dict[str, list[torch.Tensor]]:
    """One image's patches as :class:`PatchItems` cuts them: ``patches`` (one uint8 ``[rounds * n, 3, s, s]`` per
    scale, uniformly placed) and, with ``face_scales``, ``face_patches`` inside the padded face box (``face_box``
    normalised, NaN = whole image). Draws come from ``rng`` in that order, so the same generator gives the same
    patches in a loader and in ``iqalab score``."""
    frame = image.shape[:2]
    out = {"patches": [cut_squares(image, corners, side, side, hflip, vflip)
                       for side, corners in patch_corners(frame, scales, rounds, rng)]}
    if face_scales:
        box = np.full(4, np.nan, dtype=np.float32) if face_box is None else face_box
        out["face_patches"] = [cut_squares(image, corners, square, side, hflip, vflip)
                               for side, square, corners in face_corners(frame, box, face_scales, face_margin,
                                                                         rounds, rng)]
    return out


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
    """:class:`ImageItems` over the native store: each whole image at its stored (native) resolution, no resize,
    crop or flip. For models with ``input_resolution = "native"`` (NIQE and BRISQUE, which the papers run on
    full-resolution images); batch them one image at a time, since sizes differ. Boxes and landmarks are in the
    native pixel frame. ``cache`` may be the square :class:`ImageCache`: its :attr:`ImageCache.native` is read."""

    def __init__(self, ds: Dataset, ids: Sequence[str], cache: ImageCache | NativeStore, inputs: Iterable[str],
                 cam_stats: CamStats | None = None, seed: int = 0, **_: Any) -> None:
        store = cache.native if isinstance(cache, ImageCache) else cache
        super().__init__(ds, ids, store, inputs, train=False, cam_stats=cam_stats, seed=seed)
