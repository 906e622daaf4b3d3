"""Region detection at ingest: throughput on this CPU, and which offline person detector to use.

Three measurements (issue #21):

1. throughput of the ingest detector (MTCNN faces + landmarks, person box from the face) in images/s, on the real
   photos shipped with scikit-image / matplotlib / scikit-learn shrunk to ``--side`` pixels, single process;
2. person boxes on those photos against the hand-drawn boxes of ``tests/test_detect.py`` (``PHOTO_REGIONS``):
   the face-to-body rule versus OpenCV's HOG people detector (when ``cv2`` is importable), IoU per photo and false
   detections on the photos without people;
3. face recall on the simulator's known boxes (IoU >= 0.5), per builder, for face_sim per person source and
   scenario, without and with MTCNN's retries (:func:`iqalab.data.detect.find_face`).

Run (HOG needs OpenCV, e.g. ``pip install --target /tmp/cv opencv-python-headless==4.12.0.88`` and
``PYTHONPATH=/tmp/cv``; OpenCV 5 dropped ``HOGDescriptor`` from the main module)::

    .venv/bin/python benchmarks/bench_detect.py [--images 24] [--side 512] [--sim 20]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the hand-drawn boxes live in the tests

from iqalab.data import detect  # noqa: E402
from iqalab.data.schema import FACE_BOX, PERSON_BOX  # noqa: E402
from tests.test_detect import PHOTO_REGIONS, iou, package_photo  # noqa: E402

log = logging.getLogger("bench_detect")


def throughput(n_images: int, side: int) -> float:
    """Images/s of :func:`iqalab.data.detect.detect_one` (MTCNN + face rule) on package photos at ``side`` px."""
    photos = [detect.as_rgb(package_photo(name), side) for name in PHOTO_REGIONS]
    detect.detect_one(photos[0])  # load the networks outside the timing
    started = time.perf_counter()
    for k in range(n_images):
        detect.detect_one(photos[k % len(photos)])
    return n_images / (time.perf_counter() - started)


def person_detectors() -> list[dict[str, object]]:
    """Per photo: IoU of each person detector's box with the hand-drawn box (None = nobody there)."""
    methods = ["face_rule"]
    try:
        detect._hog()
        methods.append("hog")
    except detect.DetectorUnavailable as exc:
        log.warning("HOG skipped: %s", exc)
    rows = []
    for name, truth in PHOTO_REGIONS.items():
        image = package_photo(name)
        h, w = image.shape[:2]
        row: dict[str, object] = {"photo": name}
        for method in methods:
            started = time.perf_counter()
            found = detect.detect_one(image, person=method)
            seconds = time.perf_counter() - started
            box = np.array([found[c] for c in PERSON_BOX])
            if truth is None:
                row[method] = "none (correct)" if np.isnan(box).all() else "false detection"
            else:
                ref = np.asarray(truth["person"], float) / np.array([w, h, w, h])
                row[method] = "missed" if np.isnan(box).any() else f"IoU {iou(box, ref):.2f}"
            row[f"{method}_s"] = round(seconds, 2)
        rows.append(row)
    return rows


def simulator_recall(n_scenes: int, retry_threshold: float | None = 0.9) -> dict[str, tuple[float, int]]:
    """Share of simulator faces found with IoU >= 0.5 (face_threshold 0.9; MTCNN retries at ``retry_threshold``),
    per builder, and for face_sim per person source (the photograph its face comes from) and per scenario."""
    from iqalab.sim import builders

    sources: dict[str, str] = {}
    face_crop_scene = builders.face_crop_scene

    def recording(*args: object, **kwargs: object) -> object:  # note which photograph each face_sim scene uses
        scene = face_crop_scene(*args, **kwargs)
        sources[scene.name] = scene.meta["person_source"]
        return scene

    builders.face_crop_scene = recording
    groups: dict[str, list[bool]] = {}
    sizes = {"fglive_sim": {"image_size": 256, "n_raters": 5}, "face_sim": {"image_size": 128, "n_raters": 5},
             "portrait_sim": {"image_size": 256}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for builder, opts in sizes.items():
                per_scene = 1 if builder == "fglive_sim" else 2
                ds = builders.build(builder, Path(tmp) / builder, seed=0, n_scenes=n_scenes,
                                    images_per_scene=per_scene, **opts)
                truth = ds.images[list(FACE_BOX)].to_numpy(float)
                for row, ref in zip(ds.images.itertuples(), truth, strict=True):
                    if np.isnan(ref).any():
                        continue
                    found = detect.detect_one(ds.root / row.path, retry_threshold=retry_threshold)
                    box = np.array([found[c] for c in FACE_BOX])
                    hit = bool(np.isfinite(box).all() and iou(box, ref) >= 0.5)
                    keys = [builder]
                    if builder == "face_sim":
                        keys += [f"face_sim source={sources.get(row.scene, '?')}", f"face_sim scenario={row.condition}"]
                    for key in keys:
                        groups.setdefault(key, []).append(hit)
    finally:
        builders.face_crop_scene = face_crop_scene
    return {key: (float(np.mean(hits)), len(hits)) for key, hits in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--sim", type=int, default=20, help="simulator scenes per builder (0 = skip, else >= 2)")
    args = parser.parse_args()
    if args.sim == 1 or args.sim < 0:
        parser.error(f"--sim {args.sim}: 0 skips the simulator, else at least 2 (a builder splits by scene)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    log.info("CPU threads: %d; facenet-pytorch %s", torch.get_num_threads(), detect.package_version("facenet-pytorch"))
    for side in (256, args.side):  # the package photos are at most 640 px: larger sides change nothing
        log.info("MTCNN + face rule at %d px: %.2f images/s", side, throughput(args.images, side))
    for row in person_detectors():
        log.info("person %s", row)
    if args.sim:
        for retry in (None, 0.9):
            for group, (rate, n) in simulator_recall(args.sim, retry).items():
                log.info("simulator faces found (IoU >= 0.5, retries %s) in %s: %.1f%% of %d",
                         "off" if retry is None else f"p >= {retry}", group, 100 * rate, n)


if __name__ == "__main__":
    main()
