"""``iqalab score``: per-attribute scores of a trained checkpoint for a user's own images, as a CSV."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from iqalab.data.cache import decode_image
from iqalab.data.loaders import normalise
from iqalab.io import atomic_path
from iqalab.train.engine import load_checkpoint, model_from_checkpoint, resolve_device, to_device

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def expand_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded (recursively) to their image files, sorted."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    if not files:
        raise FileNotFoundError(f"no images found in {list(map(str, inputs))}")
    return files


def score_images(checkpoint: str | Path, images: Sequence[str | Path], out_csv: str | Path | None = None,
                 batch_size: int = 16, device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Score images with a checkpoint; columns ``path`` and one per attribute in the training MOS units.

    Images are decoded and resized exactly as the training cache was (``cache_size`` square), then centre-cropped
    when the model was evaluated with ``eval_crop``. Models needing boxes or camera parameters receive "unknown"
    values (NaN boxes, masked parameters) and use their documented fallbacks.
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, str(checkpoint))
    cfg = ckpt["config"]
    dev = resolve_device(device)
    model.to(dev)
    lo, hi = cfg["mos_range"]
    size, crop = int(cfg["cache_size"]), cfg.get("eval_crop")
    files = expand_images(images)
    rows = []
    for start in tqdm(range(0, len(files), batch_size), disable=not progress, desc="score"):
        chunk = files[start:start + batch_size]
        arrays = [decode_image(p, size) for p in chunk]
        if crop:
            off = (size - crop) // 2
            arrays = [a[off:off + crop, off:off + crop] for a in arrays]
        n = len(arrays)
        batch = {"image": torch.stack([normalise(a) for a in arrays]),
                 "cam": torch.zeros(n, 7), "cam_mask": torch.zeros(n, 7),
                 "person_box": torch.full((n, 4), float("nan")), "face_box": torch.full((n, 4), float("nan")),
                 "landmarks": torch.full((n, 5, 2), float("nan")), "scene_idx": torch.zeros(n, dtype=torch.long),
                 "image_id": [str(p) for p in chunk]}
        with torch.no_grad():
            pred = model.predict(to_device(batch, dev))
        for i, path in enumerate(chunk):
            rows.append({"path": str(path), **{a: float(pred[a][i]) * (hi - lo) + lo for a in model.attributes}})
    frame = pd.DataFrame(rows)
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.4f")
        log.info("wrote %d scores to %s", len(frame), out_csv)
    return frame

