"""Human regions for human-aware models: person box, face box and five landmarks per image, normalised to [0, 1].

The detectors, one image at a time (:func:`detect_one`); :mod:`iqalab.data.regions` runs them over a dataset at
ingest, caches the results and records which detector produced each box. The papers' detectors and ours:

- Person (TuningIQA, Sec. "Human-aware Feature Extraction": Faster R-CNN, Ren et al. 2016):
  ``"fasterrcnn"`` is torchvision's COCO Faster R-CNN (label 1 = person), used only when its weights are on disk
  (a file, or the torch hub cache); nothing is downloaded. ``"face_rule"`` (the offline default) derives an
  upper-body box from the face (:func:`face_to_body`); ``"hog"`` is OpenCV's built-in HOG people detector (Dalal
  and Triggs 2005), when ``cv2`` is importable. On the real photos shipped with scikit-image and matplotlib the
  face rule beats HOG by a wide margin (``benchmarks/bench_detect.py``; HOG finds whole standing pedestrians and
  misses head-and-shoulders framing), so ``face_rule`` is the default.
- Face and landmarks (SFIQA-Assessor Sec. IV-A: Ultra-Light-Fast-Generic-Face-Detector-1MB + a face parser):
  facenet-pytorch's MTCNN (Zhang et al. 2016; weights ship inside its wheel, works offline) gives the face box and
  five landmarks (left eye, right eye, nose, left and right mouth corner); the eyes-and-mouth view is built from
  the landmarks in :mod:`iqalab.models.sfiqa`.

One box per image: the highest-scoring person and the largest confident face (the streamer or the surveillance
subject is usually the closest and largest face). Images without a detection get NaN rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iqalab.data.cache import decode_image
from iqalab.data.schema import FACE_BOX, LANDMARKS, PERSON_BOX

log = logging.getLogger(__name__)

METHODS = ("auto", "fasterrcnn", "mtcnn", "dataset")
PERSON_METHODS = ("face_rule", "hog", "fasterrcnn")
COLUMNS = (*PERSON_BOX, *FACE_BOX, *LANDMARKS)
SCORES = ("person_score", "face_score")
COCO_PERSON = 1
FASTERRCNN_ARCHS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                    "fasterrcnn_mobilenet_v3_large_320_fpn")
#: version of :func:`face_to_body` (bump when its proportions change: cached detections are then recomputed)
FACE_RULE_VERSION = "1"


class DetectorUnavailable(RuntimeError):
    """The requested detector cannot run here (no weights on disk, package missing)."""


def package_version(name: str) -> str:
    """Installed version of a distribution, ``"missing"`` when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def detector_versions(person: str = "face_rule", arch: str = "fasterrcnn_resnet50_fpn",
                      retry_threshold: float | None = None) -> dict[str, str]:
    """Names and versions of the face and person detectors ``detect_one(person=..., retry_threshold=...)`` uses."""
    version = f"facenet-pytorch {package_version('facenet-pytorch')}"
    if retry_threshold is not None:
        version += f"; retries at p >= {retry_threshold:g}: relaxed stages, {' / '.join(RETRIES)} copies"
    face = {"face_detector": "mtcnn", "face_detector_version": version}
    if person == "face_rule":
        name, version = "face_rule", f"face_to_body v{FACE_RULE_VERSION} on mtcnn faces"
    elif person == "hog":
        import cv2

        name, version = "opencv_hog", f"opencv {cv2.__version__} HOGDescriptor default people detector"
    elif person == "fasterrcnn":
        name, version = arch, f"torchvision {package_version('torchvision')} COCO"
    else:
        raise ValueError(f"unknown person detector {person!r}; choose from {PERSON_METHODS}")
    return {**face, "person_detector": name, "person_detector_version": version}


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
def as_rgb(image: str | Path | np.ndarray, max_side: int | None = None) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` from a path or an array (grey and RGBA are converted).

    ``max_side`` shrinks the image so its longer side is at most that many pixels (JPEG files are decoded at
    reduced size directly); detections are normalised, so the scale does not change the stored boxes.
    """
    from PIL import Image

    if isinstance(image, (str, Path)):
        return decode_image(image, max_side=max_side)  # the data package's one decode path
    arr = np.asarray(image)
    if max_side is not None and max(arr.shape[:2]) > max_side:
        im = Image.fromarray(as_rgb(arr))
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        return np.asarray(im)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = (arr * 255).clip(0, 255).astype(np.uint8) if arr.max() <= 1.0 else arr.clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _empty_row() -> dict[str, float]:
    return dict.fromkeys((*COLUMNS, *SCORES), float("nan"))


def _put_box(row: dict[str, float], names: Sequence[str], box: np.ndarray, width: int, height: int) -> None:
    scale = np.array([width, height, width, height], dtype=float)
    for name, value in zip(names, (np.asarray(box, dtype=float) / scale).clip(0, 1), strict=True):
        row[name] = float(value)


# ------------------------------------------------------------------------------------------------- MTCNN
#: MTCNN's own P-/R-/O-net candidate thresholds (facenet-pytorch's defaults) and the relaxed ones of the retries
MTCNN_STAGES = (0.6, 0.7, 0.7)
RETRY_STAGES = (0.5, 0.6, 0.6)
#: contrast-enhanced copies a face is searched in when the plain image shows none (:func:`find_face`); CLAHE
#: (:func:`enhanced`) was measured and left out: one more simulator face in 120, a false face in skimage's coffee
RETRIES: tuple[str, ...] = ("equalize",)


@lru_cache(maxsize=4)
def _mtcnn(min_face_size: int = 20, stages: tuple[float, float, float] = MTCNN_STAGES) -> Any:
    try:
        from facenet_pytorch import MTCNN
    except Exception as exc:  # ImportError, or its own import failing on a newer torch
        raise DetectorUnavailable(
            f"facenet-pytorch is not usable ({exc}); install it with `pip install --no-deps facenet-pytorch`"
        ) from exc
    return MTCNN(keep_all=True, device="cpu", min_face_size=min_face_size, thresholds=list(stages))


def enhanced(image: np.ndarray, how: str) -> np.ndarray:
    """A contrast-enhanced copy of a uint8 RGB image: ``"equalize"`` (PIL's global histogram equalisation per
    channel) or ``"clahe"`` (scikit-image's contrast-limited adaptive equalisation, clip limit 0.02)."""
    if how == "equalize":
        from PIL import Image, ImageOps

        return np.asarray(ImageOps.equalize(Image.fromarray(image)))
    if how == "clahe":
        from skimage.exposure import equalize_adapthist

        return (equalize_adapthist(image, clip_limit=0.02) * 255).round().astype(np.uint8)
    raise ValueError(f"unknown enhancement {how!r}; choose from {RETRIES}")


def find_face(image: np.ndarray, threshold: float = 0.9, min_face_size: int = 20, retry_threshold: float | None = 0.9
              ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """:func:`mtcnn_faces` on the image; when it finds no face and ``retry_threshold`` is set, again with MTCNN's
    relaxed candidate stages (:data:`RETRY_STAGES`) and probability >= ``retry_threshold`` on the image, then on
    its :func:`enhanced` copies (:data:`RETRIES`). Washed-out, veiled or dark faces (surveillance frames, the
    simulator's glare and night scenes) are found in the equalised copy; the boxes and landmarks are those of
    the copy, which has the image's geometry. Images where the plain pass finds a face are unchanged.

    Measured (``benchmarks/bench_detect.py --sim 30``: face_sim at 128 px, 60 faces): IoU >= 0.5 on 85.0 % of the
    faces without retries, 90.0 % with retries at p >= 0.9 (the default); on the simulator before its #23
    calibration (120 faces) 75.8 % and 79.2 %, and 82.5 % at p >= 0.8, which also finds a false face in skimage's
    coffee at 160 px. No retry finds a face on 14 photos without people from
    scikit-image / scikit-learn at 128-512 px, except in the equalised copy of skimage's immunohistochemistry slide
    (p 0.94-0.98)."""
    found = mtcnn_faces(image, threshold, min_face_size)
    if found is not None or retry_threshold is None:
        return found
    for how in ("none", *RETRIES):
        found = mtcnn_faces(image if how == "none" else enhanced(image, how), retry_threshold, min_face_size,
                            RETRY_STAGES)
        if found is not None:
            return found
    return None


def mtcnn_faces(image: np.ndarray, threshold: float = 0.9, min_face_size: int = 20,
                stages: tuple[float, float, float] = MTCNN_STAGES) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Largest face with probability >= ``threshold``: (box ``[4]``, landmarks ``[5, 2]`` in pixels, probability),
    or None. ``stages``: MTCNN's P-/R-/O-net candidate thresholds."""
    import torch

    with torch.no_grad():
        boxes, probs, points = _mtcnn(min_face_size, tuple(stages)).detect(image, landmarks=True)
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
    return boxes[best], points[best], float(probs[best])


# --------------------------------------------------------------------------------------------------- HOG
@lru_cache(maxsize=1)
def _hog() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise DetectorUnavailable("OpenCV is not installed: `pip install opencv-python-headless` for the HOG "
                                  "people detector, or use person: face_rule") from exc
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


def hog_person(image: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, float] | None:
    """Highest-scoring OpenCV HOG pedestrian box (pixels) with SVM score >= ``threshold``, or None.

    The 64 x 128 window needs people at least ~128 px tall; the image is searched at scales 1.05^k."""
    rects, weights = _hog().detectMultiScale(np.ascontiguousarray(image[..., ::-1]), winStride=(8, 8),
                                             padding=(8, 8), scale=1.05)
    if len(rects) == 0:
        return None
    weights = np.asarray(weights, dtype=float).ravel()
    best = int(np.argmax(weights))
    if weights[best] < threshold:
        return None
    x, y, w, h = (float(v) for v in rects[best])
    return np.array([x, y, x + w, y + h]), float(weights[best])


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


def require_fasterrcnn_weights(arch: str, weights: str | Path | None) -> Path:
    """:func:`local_fasterrcnn_weights`, raising :class:`DetectorUnavailable` (with what to do) when none."""
    path = local_fasterrcnn_weights(arch, weights)
    if path is None:
        raise DetectorUnavailable(
            f"no local weights for {arch} (hub downloads are not attempted): download them elsewhere and set "
            f"`weights` to the file (or place it in the torch hub cache); or use the person detector face_rule"
        )
    return path


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


def fasterrcnn_person(image: np.ndarray, arch: str, weights: Path, threshold: float = 0.5
                      ) -> tuple[np.ndarray, float] | None:
    """Highest-scoring COCO person box (pixels) with score >= ``threshold`` and its score, or None."""
    import torch

    model = _fasterrcnn(arch, str(weights))
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)
    with torch.no_grad():
        out = model([x])[0]
    keep = (out["labels"] == COCO_PERSON) & (out["scores"] >= threshold)
    if not keep.any():
        return None
    scores = out["scores"][keep]
    best = int(scores.argmax())
    return out["boxes"][keep][best].numpy().astype(float), float(scores[best])


# ---------------------------------------------------------------------------------------------- one image
def detect_one(image: str | Path | np.ndarray, *, person: str = "face_rule", face: bool = True,
               face_threshold: float = 0.9, person_threshold: float = 0.5, min_face_size: int = 20,
               arch: str = "fasterrcnn_resnet50_fpn", weights: Path | None = None,
               max_side: int | None = None, retry_threshold: float | None = 0.9) -> dict[str, float]:
    """Boxes, landmarks (normalised 0-1) and detector confidences of one image.

    Args:
        image: a path or a uint8 RGB array.
        person: ``"face_rule"``, ``"hog"`` or ``"fasterrcnn"`` (module docstring).
        face: run MTCNN (``False`` leaves face and landmarks NaN; ``face_rule`` then finds no person).
        face_threshold / person_threshold: minimal detector confidence (MTCNN probability; HOG SVM margin or
            Faster R-CNN score).
        min_face_size: MTCNN's smallest face side in pixels (of the possibly shrunk image).
        arch / weights: Faster R-CNN builder name and its local weights file (``person="fasterrcnn"``).
        max_side: shrink files to this longer side before detecting.
        retry_threshold: face probability of the retries of :func:`find_face` when the plain pass finds no face
            (relaxed MTCNN stages, contrast-equalised copies); None = no retries.

    Returns:
        ``{column: value}`` over :data:`COLUMNS` and :data:`SCORES` (``person_score`` of the face rule is the face
        probability it was derived from); NaN where nothing was found.
    """
    if person not in PERSON_METHODS:
        raise ValueError(f"unknown person detector {person!r}; choose from {PERSON_METHODS}")
    rgb = as_rgb(image, max_side)
    height, width = rgb.shape[:2]
    row = _empty_row()
    found = find_face(rgb, face_threshold, min_face_size, retry_threshold) if face else None
    if found is not None:
        _put_box(row, FACE_BOX, found[0], width, height)
        scale = np.array([width, height], dtype=float)
        for k, (x, y) in enumerate((found[1] / scale).clip(0, 1)):
            row[f"lm{k}_x"], row[f"lm{k}_y"] = float(x), float(y)
        row["face_score"] = found[2]
    body: tuple[np.ndarray, float] | None = None
    if person == "fasterrcnn":
        assert weights is not None, "person='fasterrcnn' needs the weights file (require_fasterrcnn_weights)"
        body = fasterrcnn_person(rgb, arch, weights, person_threshold)
    elif person == "hog":
        body = hog_person(rgb, person_threshold)
    elif found is not None:
        body = face_to_body(found[0], width, height)[0], found[2]
    if body is not None:
        _put_box(row, PERSON_BOX, body[0], width, height)
        row["person_score"] = body[1]
    return row


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
        method: ``"fasterrcnn"`` (person from Faster R-CNN with local weights, faces from MTCNN when
            facenet-pytorch is usable), ``"mtcnn"`` (faces, person by the face rule), ``"auto"`` (Faster R-CNN
            when its weights are on disk, else MTCNN) or ``"dataset"`` (the boxes in ``table``).
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
    if method == "fasterrcnn":
        frcnn_weights = require_fasterrcnn_weights(arch, weights)
    elif method == "auto":
        frcnn_weights = local_fasterrcnn_weights(arch, weights)
        if frcnn_weights is None:
            log.info("no Faster R-CNN weights on disk: using MTCNN faces with the face-to-body rule")
    use_face = True
    if frcnn_weights is not None:
        try:
            _mtcnn()
        except DetectorUnavailable as exc:
            log.warning("faces and landmarks unavailable: %s", exc)
            use_face = False
    else:
        _mtcnn()  # raise now, not per image
    person = "fasterrcnn" if frcnn_weights is not None else "face_rule"
    rows = [detect_one(image, person=person, face=use_face, face_threshold=face_threshold,
                       person_threshold=person_threshold, arch=arch, weights=frcnn_weights)
            for image in tqdm(images, disable=not progress, desc=f"detect ({method})", leave=False)]
    return pd.DataFrame(rows, columns=list(COLUMNS), dtype=float)
