"""Human boxes for human-aware models: person box, face box and five landmarks per image, normalised to [0, 1].

TuningIQA (Sheng et al., Sec. "Human-aware Feature Extraction") detects human subjects with Faster R-CNN (Ren et
al. 2016) and feeds the boxes to RoIAlign. Three sources, chosen by ``method`` in :func:`detect_boxes`:

- ``"fasterrcnn"``: torchvision Faster R-CNN (COCO, label 1 = person), only when its weights are on disk
  (``weights=`` a file, or the torch hub cache); nothing is downloaded. Faces and landmarks come from MTCNN when
  facenet-pytorch is importable.
- ``"mtcnn"``: facenet-pytorch MTCNN (weights ship in its wheel, works offline): face box + landmarks, and the
  person box from the face by :func:`face_to_body`.
- ``"dataset"``: boxes the dataset already has (the simulator knows them), passed as ``table``; a missing person
  box is derived from the face box by the same rule.
- ``"auto"``: Faster R-CNN when its weights are present, else MTCNN.

One box per image: the highest-scoring person and the largest confident face (the streamer is usually the
closest and largest face). Images without a detection get NaN rows; models decide their fallback.
The result has the columns of :data:`iqalab.data.schema.PERSON_BOX`, ``FACE_BOX`` and ``LANDMARKS`` in input
order, ready to join onto ``images.parquet`` at ingest (boxes are computed once and cached there).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iqalab.data.schema import FACE_BOX, LANDMARKS, PERSON_BOX

log = logging.getLogger(__name__)

METHODS = ("auto", "fasterrcnn", "mtcnn", "dataset")
COLUMNS = (*PERSON_BOX, *FACE_BOX, *LANDMARKS)
COCO_PERSON = 1
FASTERRCNN_ARCHS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                    "fasterrcnn_mobilenet_v3_large_320_fpn")


class DetectorUnavailable(RuntimeError):
    """The requested detector cannot run here (no weights on disk, package missing)."""


# ------------------------------------------------------------------------------------------ face-to-body rule
def face_to_body(face: np.ndarray, width: float, height: float, widen: float = 3.0, above: float = 0.5,
                 below: float = 7.0) -> np.ndarray:
    """Person box ``[x0, y0, x1, y1]`` (pixels) from a face box, clipped to the image.

    Proportions of an upright person: shoulders span about three face widths; the head top is about half a face
    height above the detected face box; the body reaches about seven face heights below the chin (a standing
    adult is 7.5-8 heads tall). Livestream frames usually cut the body at the frame edge, which the clipping
    handles. Rows of NaN stay NaN.
    """
    face = np.asarray(face, dtype=float).reshape(-1, 4)
    fw, fh = face[:, 2] - face[:, 0], face[:, 3] - face[:, 1]
    cx = (face[:, 0] + face[:, 2]) / 2
    body = np.stack([cx - widen * fw / 2, face[:, 1] - above * fh, cx + widen * fw / 2, face[:, 3] + below * fh],
                    axis=1)
    body[:, [0, 2]] = body[:, [0, 2]].clip(0, width)
    body[:, [1, 3]] = body[:, [1, 3]].clip(0, height)
    return body


# ------------------------------------------------------------------------------------------------ loading
def _as_rgb(image: str | Path | np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` from a path or an array (grey and RGBA are converted)."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = (arr * 255).clip(0, 255).astype(np.uint8) if arr.max() <= 1.0 else arr.clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _empty_row() -> dict[str, float]:
    return dict.fromkeys(COLUMNS, float("nan"))


def _put_box(row: dict[str, float], names: Sequence[str], box: np.ndarray, width: int, height: int) -> None:
    scale = np.array([width, height, width, height], dtype=float)
    for name, value in zip(names, (np.asarray(box, dtype=float) / scale).clip(0, 1), strict=True):
        row[name] = float(value)


# ------------------------------------------------------------------------------------------------- MTCNN
@lru_cache(maxsize=1)
def _mtcnn() -> Any:
    try:
        from facenet_pytorch import MTCNN
    except Exception as exc:  # ImportError, or its own import failing on a newer torch
        raise DetectorUnavailable(
            f"facenet-pytorch is not usable ({exc}); install it with `pip install --no-deps facenet-pytorch`"
        ) from exc
    return MTCNN(keep_all=True, device="cpu")


def mtcnn_faces(image: np.ndarray, threshold: float = 0.9) -> tuple[np.ndarray, np.ndarray] | None:
    """Largest face with probability >= ``threshold``: (box ``[4]``, landmarks ``[5, 2]``) in pixels, or None."""
    boxes, probs, points = _mtcnn().detect(image, landmarks=True)
    if boxes is None:
        return None
    # numpy 2: facenet-pytorch returns object arrays
    boxes = np.asarray(np.asarray(boxes).tolist(), dtype=float).reshape(-1, 4)
    probs = np.asarray([np.nan if p is None else p for p in np.asarray(probs).tolist()], dtype=float)
    points = np.asarray(np.asarray(points).tolist(), dtype=float).reshape(-1, 5, 2)
    keep = np.flatnonzero(probs >= threshold)
    if not len(keep):
        return None
    area = (boxes[keep, 2] - boxes[keep, 0]) * (boxes[keep, 3] - boxes[keep, 1])
    best = keep[int(np.argmax(area))]
    return boxes[best], points[best]


# ------------------------------------------------------------------------------------------- Faster R-CNN
def local_fasterrcnn_weights(arch: str = "fasterrcnn_resnet50_fpn",
                             weights: str | Path | None = None) -> Path | None:
    """The weights file to use: ``weights`` if given (must exist), else torchvision's file in the torch hub
    cache when present, else None. Never downloads."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise DetectorUnavailable(f"Faster R-CNN weights file not found: {path}")
        return path
    import torch
    import torchvision.models.detection as det

    enum = {
        "fasterrcnn_resnet50_fpn": det.FasterRCNN_ResNet50_FPN_Weights,
        "fasterrcnn_resnet50_fpn_v2": det.FasterRCNN_ResNet50_FPN_V2_Weights,
        "fasterrcnn_mobilenet_v3_large_fpn": det.FasterRCNN_MobileNet_V3_Large_FPN_Weights,
        "fasterrcnn_mobilenet_v3_large_320_fpn": det.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
    }[arch]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.DEFAULT.url).name
    return cached if cached.is_file() else None


@lru_cache(maxsize=2)
def _fasterrcnn(arch: str, weights: str) -> Any:
    import torch
    import torchvision.models.detection as det

    if arch not in FASTERRCNN_ARCHS:
        raise ValueError(f"unknown Faster R-CNN architecture {arch!r}; choose from {FASTERRCNN_ARCHS}")
    model = getattr(det, arch)(weights=None, weights_backbone=None, num_classes=91)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def fasterrcnn_person(image: np.ndarray, arch: str, weights: Path, threshold: float = 0.5) -> np.ndarray | None:
    """Highest-scoring COCO person box (pixels) with score >= ``threshold``, or None."""
    import torch

    model = _fasterrcnn(arch, str(weights))
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
    with torch.no_grad():
        out = model([x])[0]
    keep = (out["labels"] == COCO_PERSON) & (out["scores"] >= threshold)
    if not keep.any():
        return None
    scores = out["scores"][keep]
    return out["boxes"][keep][int(scores.argmax())].numpy().astype(float)


# ---------------------------------------------------------------------------------------------- dataset
def boxes_from_table(table: pd.DataFrame) -> pd.DataFrame:
    """Canonical box columns from a table that has some of them (normalised); a missing person box is derived
    from the face box with :func:`face_to_body` (in pixels when ``width``/``height`` columns exist)."""
    out = pd.DataFrame({c: pd.to_numeric(table[c], errors="coerce") if c in table.columns else np.nan
                        for c in COLUMNS}, index=table.index).astype(float)
    width = table["width"].to_numpy(dtype=float) if "width" in table.columns else np.ones(len(table))
    height = table["height"].to_numpy(dtype=float) if "height" in table.columns else np.ones(len(table))
    person = out[list(PERSON_BOX)].to_numpy(copy=True)
    face = out[list(FACE_BOX)].to_numpy()
    need = np.isnan(person).any(axis=1) & ~np.isnan(face).any(axis=1)
    for i in np.flatnonzero(need):
        scale = np.array([width[i], height[i], width[i], height[i]])
        person[i] = face_to_body(face[i] * scale, width[i], height[i])[0] / scale
    out[list(PERSON_BOX)] = person
    return out.clip(0.0, 1.0).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- front door
def detect_boxes(images: Sequence[str | Path | np.ndarray], method: str = "auto", *,
                 table: pd.DataFrame | None = None, weights: str | Path | None = None,
                 arch: str = "fasterrcnn_resnet50_fpn", person_threshold: float = 0.5,
                 face_threshold: float = 0.9, progress: bool = True) -> pd.DataFrame:
    """Person/face boxes and landmarks (normalised 0-1) for each image, one row per input, in input order.

    Args:
        images: paths or uint8 RGB arrays. Ignored (may be empty) for ``method="dataset"``.
        method: ``"auto"``, ``"fasterrcnn"``, ``"mtcnn"`` or ``"dataset"`` (module docstring).
        table: the dataset's boxes for ``method="dataset"`` (canonical column names, normalised).
        weights: local Faster R-CNN weights file (else the torch hub cache is looked up).
        arch: torchvision Faster R-CNN builder name the weights belong to.
        person_threshold / face_threshold: minimal detector confidence.

    Raises:
        DetectorUnavailable: the method cannot run here (the message says what to install or where to put
            weights).
    """
    if method not in METHODS:
        raise ValueError(f"unknown detection method {method!r}; choose from {METHODS}")
    if method == "dataset":
        if table is None:
            raise ValueError("method='dataset' needs the dataset's boxes as `table`")
        return boxes_from_table(table)
    frcnn_weights = None
    if method in ("auto", "fasterrcnn"):
        frcnn_weights = local_fasterrcnn_weights(arch, weights)
        if frcnn_weights is None and method == "fasterrcnn":
            raise DetectorUnavailable(
                f"no local weights for {arch}: download them elsewhere and pass `weights=` (or place the file in "
                f"the torch hub cache); or use method='mtcnn'"
            )
        if frcnn_weights is None:
            log.info("no Faster R-CNN weights on disk: using MTCNN faces with the face-to-body rule")
    use_mtcnn = True
    if frcnn_weights is not None:
        try:
            _mtcnn()
        except DetectorUnavailable as exc:
            log.warning("faces and landmarks unavailable: %s", exc)
            use_mtcnn = False
    else:
        _mtcnn()  # raise now, not per image
    rows = []
    for image in tqdm(images, disable=not progress, desc=f"detect ({method})", leave=False):
        rgb = _as_rgb(image)
        height, width = rgb.shape[:2]
        row = _empty_row()
        face = mtcnn_faces(rgb, face_threshold) if use_mtcnn else None
        if face is not None:
            _put_box(row, FACE_BOX, face[0], width, height)
            scale = np.array([width, height], dtype=float)
            for k, (x, y) in enumerate((face[1] / scale).clip(0, 1)):
                row[f"lm{k}_x"], row[f"lm{k}_y"] = float(x), float(y)
        person = (fasterrcnn_person(rgb, arch, frcnn_weights, person_threshold)
                  if frcnn_weights is not None else None)
        if person is None and face is not None:
            person = face_to_body(face[0], width, height)[0]
        if person is not None:
            _put_box(row, PERSON_BOX, person, width, height)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS), dtype=float)
