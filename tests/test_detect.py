"""Human regions: dataset boxes, the face-to-body rule, MTCNN on real photos shipped with installed packages and on
the simulator's known faces, Faster R-CNN selection, detection at ingest (cached, with provenance) and the refusal
of region models on datasets never searched for regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iqalab.data import detect
from iqalab.data.detect import DetectorUnavailable, boxes_from_table, detect_boxes, face_to_body
from iqalab.data.schema import FACE_BOX, LANDMARKS, PERSON_BOX

COLUMNS = [*PERSON_BOX, *FACE_BOX, *LANDMARKS]


def test_face_to_body_contains_the_face_and_is_clipped() -> None:
    face = np.array([[100.0, 50.0, 140.0, 100.0]])  # 40 x 50 px
    body = face_to_body(face, width=1000, height=1000)[0]
    assert body[0] <= face[0, 0] and body[1] <= face[0, 1] and body[2] >= face[0, 2] and body[3] >= face[0, 3]
    assert body[2] - body[0] == pytest.approx(3 * 40)  # shoulders: three face widths
    assert body[3] - body[1] == pytest.approx(50 * (1 + 0.5 + 7))
    small = face_to_body(face, width=150, height=200)[0]  # clipped to the frame
    assert small[0] >= 0 and small[2] <= 150 and small[3] == 200
    assert np.isnan(face_to_body(np.full(4, np.nan), 10, 10)).all()


def test_dataset_boxes_pass_through_and_derive_person_from_face() -> None:
    nan = np.nan
    table = pd.DataFrame({
        "width": [200, 200, 100], "height": [100, 100, 100],
        "person_x0": [0.1, nan, nan], "person_y0": [0.2, nan, nan], "person_x1": [0.5, nan, nan],
        "person_y1": [0.9, nan, nan],
        "face_x0": [0.2, 0.4, nan], "face_y0": [0.25, 0.1, nan], "face_x1": [0.3, 0.5, nan],
        "face_y1": [0.4, 0.2, nan],
    })
    out = detect_boxes([], method="dataset", table=table)
    assert list(out.columns) == COLUMNS and len(out) == 3
    assert out.loc[0, list(PERSON_BOX)].tolist() == pytest.approx([0.1, 0.2, 0.5, 0.9])  # given: unchanged
    person, face = out.loc[1, list(PERSON_BOX)].to_numpy(), out.loc[1, list(FACE_BOX)].to_numpy()
    assert person[0] <= face[0] and person[1] <= face[1] and person[2] >= face[2] and person[3] >= face[3]
    # the rule works in pixels: 3 face widths of a 20 px face in a 200 px wide image = 0.3 of the width
    assert person[2] - person[0] == pytest.approx(0.3)
    assert out.loc[2].isna().all()  # no box at all stays unknown
    known = out.to_numpy()[~np.isnan(out.to_numpy())]
    assert ((known >= 0) & (known <= 1)).all()
    with pytest.raises(ValueError, match="table"):
        detect_boxes([], method="dataset")
    with pytest.raises(ValueError, match="unknown detection method"):
        detect_boxes([], method="yolo")
    assert boxes_from_table(table).equals(out)


def test_fasterrcnn_needs_local_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache: nothing on disk
    assert detect.local_fasterrcnn_weights("fasterrcnn_resnet50_fpn") is None
    with pytest.raises(DetectorUnavailable, match="weights"):
        detect_boxes([np.zeros((32, 32, 3), np.uint8)], method="fasterrcnn", progress=False)
    with pytest.raises(DetectorUnavailable, match="not found"):
        detect.local_fasterrcnn_weights("fasterrcnn_resnet50_fpn", tmp_path / "missing.pth")


def test_fasterrcnn_picks_the_best_person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    weights = tmp_path / "frcnn.pth"
    weights.write_bytes(b"stand-in")

    def fake_detector(image_list: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        assert image_list[0].shape == (3, 40, 80) and image_list[0].max() <= 1.0
        return [{"boxes": torch.tensor([[0.0, 0, 80, 40], [10, 5, 30, 35], [40, 0, 60, 20], [1, 1, 2, 2]]),
                 "labels": torch.tensor([3, 1, 1, 1]), "scores": torch.tensor([0.99, 0.9, 0.6, 0.3])}]

    monkeypatch.setattr(detect, "_fasterrcnn", lambda arch, path: fake_detector)
    monkeypatch.setattr(detect, "find_face", lambda image, threshold, size, retry: None)  # no face in this stand-in
    monkeypatch.setattr(detect, "_mtcnn", lambda size=20: None)
    image = np.zeros((40, 80, 3), np.uint8)
    out = detect_boxes([image], method="fasterrcnn", weights=weights, progress=False)
    # the car (label 3) is ignored; the best-scoring person is kept, normalised by width 80 / height 40
    assert out.loc[0, list(PERSON_BOX)].tolist() == pytest.approx([10 / 80, 5 / 40, 30 / 80, 35 / 40])
    assert out.loc[0, list(FACE_BOX)].isna().all()
    high = detect_boxes([image], method="fasterrcnn", weights=weights, person_threshold=0.95, progress=False)
    assert high.loc[0, list(PERSON_BOX)].isna().all()


def test_mtcnn_finds_the_astronauts_face() -> None:
    try:
        import facenet_pytorch  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the install
        pytest.skip(f"facenet_pytorch not importable: {exc}")
    from skimage.data import astronaut

    image = astronaut()  # 512 x 512, one face near the top centre
    blank = np.full((96, 96, 3), 128, np.uint8)
    out = detect_boxes([image, blank], method="mtcnn", progress=False)
    face = out.loc[0, list(FACE_BOX)].to_numpy()
    person = out.loc[0, list(PERSON_BOX)].to_numpy()
    assert not np.isnan(face).any()
    assert 0.25 < (face[0] + face[2]) / 2 < 0.65 and (face[1] + face[3]) / 2 < 0.45  # upper centre
    assert 0.08 < face[2] - face[0] < 0.35
    marks = out.loc[0, list(LANDMARKS)].to_numpy().reshape(5, 2)
    assert ((marks[:, 0] >= face[0]) & (marks[:, 0] <= face[2])).all()
    assert ((marks[:, 1] >= face[1]) & (marks[:, 1] <= face[3])).all()
    assert marks[0, 0] < marks[1, 0]  # left eye left of right eye (image coordinates)
    assert person[0] <= face[0] and person[1] <= face[1] and person[2] >= face[2] and person[3] >= face[3]
    assert out.loc[1].isna().all()  # nothing in a flat grey image
    auto = detect_boxes([image], method="auto", progress=False)  # no Faster R-CNN weights here -> MTCNN
    if detect.local_fasterrcnn_weights() is None:
        assert auto.loc[0, list(FACE_BOX)].to_numpy() == pytest.approx(face)


# ------------------------------------------------------------------------ real photos shipped with packages
#: boxes drawn by hand on the photos (pixels of the original photo, x0 y0 x1 y1): the face from brow to chin, the
#: person as far as it is visible in the frame; None = nobody in the photo
PHOTO_REGIONS: dict[str, dict[str, tuple[float, float, float, float]] | None] = {
    "astronaut": {"face": (178, 72, 272, 185), "person": (20, 15, 365, 512)},
    "grace_hopper": {"face": (160, 135, 370, 335), "person": (10, 25, 512, 600)},
    "camera": {"face": (180, 115, 255, 195), "person": (0, 65, 330, 512)},
    "coffee": None, "chelsea": None, "china": None,
}


def package_photo(name: str) -> np.ndarray:
    """uint8 RGB photo shipped with scikit-image, matplotlib or scikit-learn."""
    if name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as im:
            return np.asarray(im.convert("RGB"))
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    return detect.as_rgb(getattr(skimage.data, name)())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _normalised(box: tuple[float, ...], image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return np.asarray(box, dtype=float) / np.array([w, h, w, h])


needs_mtcnn = pytest.mark.skipif(detect.package_version("facenet-pytorch") == "missing",
                                 reason="facenet-pytorch not installed")


@needs_mtcnn
@pytest.mark.parametrize("name", list(PHOTO_REGIONS))
def test_faces_found_where_they_are_and_nowhere_else(name: str) -> None:
    image = package_photo(name)
    row = detect.detect_one(image, max_side=256)  # detections are normalised: the scale does not matter
    face = np.array([row[c] for c in FACE_BOX])
    person = np.array([row[c] for c in PERSON_BOX])
    marks = np.array([row[c] for c in LANDMARKS]).reshape(5, 2)
    truth = PHOTO_REGIONS[name]
    if truth is None:
        assert np.isnan(face).all() and np.isnan(person).all() and np.isnan(marks).all()
        assert np.isnan(row["face_score"])
        return
    assert iou(face, _normalised(truth["face"], image)) >= 0.5
    # the face-to-body rule centres the body under the face: the leaning cameraman scores 0.50 (the others > 0.7)
    assert iou(person, _normalised(truth["person"], image)) >= 0.45
    assert row["face_score"] >= 0.9 and row["person_score"] == row["face_score"]
    inside = (marks >= face[:2]) & (marks <= face[2:])
    assert inside.all()
    assert marks[0, 0] < marks[1, 0] and marks[:2, 1].max() < marks[3:, 1].min()  # eyes left-right, above mouth


@needs_mtcnn
@pytest.mark.parametrize(("gain", "offset"), [(0.15, 215.0), (0.08, 5.0)])
def test_veiled_and_dark_faces_are_found_by_the_contrast_retries(gain: float, offset: float) -> None:
    """A face under windscreen glare (washed out) or in the dark: MTCNN alone misses it, the retries on the
    equalised copies find it where it is; without retries nothing is found."""
    image = detect.as_rgb(package_photo("astronaut"), 160)
    veiled = (image * gain + offset).clip(0, 255).astype(np.uint8)
    assert detect.mtcnn_faces(veiled) is None
    assert detect.find_face(veiled, retry_threshold=None) is None
    found = detect.find_face(veiled)
    assert found is not None and found[2] >= 0.9
    truth = _normalised(PHOTO_REGIONS["astronaut"]["face"], package_photo("astronaut"))
    assert iou(found[0] / 160, truth) >= 0.5
    row = detect.detect_one(veiled)
    assert row["face_score"] == pytest.approx(found[2]) and np.isfinite(row["person_x0"])


@needs_mtcnn
def test_simulator_faces_are_found_in_their_known_boxes(tmp_path: Path) -> None:
    """The livestream simulator knows where it pasted each face: IoU >= 0.5 on at least 90% of them."""
    from iqalab.sim.builders import build

    ds = build("fglive_sim", tmp_path / "sim", seed=3, n_scenes=10, images_per_scene=1, image_size=224, n_raters=5)
    truth = ds.images[list(FACE_BOX)].to_numpy(float)
    assert np.isfinite(truth).all()
    hits = [iou(np.array([detect.detect_one(ds.root / p)[c] for c in FACE_BOX]), t) >= 0.5
            for p, t in zip(ds.images["path"], truth, strict=True)]
    assert np.mean(hits) >= 0.9, hits
    # the simulator's own boxes count as regions: the default pipeline trains region models without detecting
    from types import SimpleNamespace

    from iqalab.data.regions import check_regions

    reader = SimpleNamespace(inputs=frozenset({"image", "person_box", "face_box"}))
    checked = check_regions(reader, ds, {"test": ds.images["image_id"].tolist()}, "experiments.x")
    assert checked["detectors"] == {"person_box": ["simulator"], "face_box": ["simulator"]}
    assert checked["missing_test_ids"] == set()


def test_hog_needs_opencv_or_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_cv2(name: str, *args: object, **kwargs: object) -> object:
        if name == "cv2":
            raise ImportError("no cv2 here")
        return real_import(name, *args, **kwargs)

    detect._hog.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(DetectorUnavailable, match="opencv-python-headless"):
        detect.hog_person(np.zeros((128, 64, 3), np.uint8))
    detect._hog.cache_clear()
    with pytest.raises(ValueError, match="unknown person detector"):
        detect.detect_one(np.zeros((8, 8, 3), np.uint8), person="yolo")


# ------------------------------------------------------------------------------------- ingest and training
def _photo_dataset(raw: Path) -> None:
    """A generic-adapter folder of real photos without box columns, except one given face (mirrored astronaut)."""
    from PIL import Image

    names = ["astronaut", "grace_hopper", "camera", "coffee", "chelsea", "china", "astronaut_m", "camera_m"]
    roles = ["train", "test", "train", "train", "test", "val", "train", "train"]
    rows = []
    (raw / "img").mkdir(parents=True)
    for k, (name, role) in enumerate(zip(names, roles, strict=True)):
        image = package_photo(name.removesuffix("_m"))
        if name.endswith("_m"):
            image = image[:, ::-1]
        im = Image.fromarray(np.ascontiguousarray(image))
        im.thumbnail((160, 160))
        im.save(raw / "img" / f"{name}.png")
        rows.append({"image": f"img/{name}.png", "image_id": name, "scene": name.removesuffix("_m"),
                     "mos_overall": 1.0 + k / 2, "mos_sharpness": 5.0 - k / 2, "split_main": role})
    table = pd.DataFrame(rows)
    x0, y0, x1, y1 = _normalised(PHOTO_REGIONS["astronaut"]["face"], package_photo("astronaut"))
    table.loc[6, ["face_x0", "face_y0", "face_x1", "face_y1"]] = [1 - x1, y0, 1 - x0, y1]  # mirrored
    for k, (u, v) in enumerate(((0.35, 0.4), (0.65, 0.4), (0.5, 0.55), (0.4, 0.7), (0.6, 0.7))):  # with landmarks
        table.loc[6, [f"lm{k}_x", f"lm{k}_y"]] = [1 - x1 + u * (x1 - x0), y0 + v * (y1 - y0)]
    table.to_csv(raw / "images.csv", index=False)


def _photo_params(**experiments: dict) -> dict:
    return {"seed": 0,
            "datasets": {"photos": {"source": "adapter", "builder": "generic", "raw": "raw/photos", "cache_size": 64,
                                    "options": {"mos_range": [1, 5], "workers": 1},
                                    "detect": {"enabled": True, "max_side": 256}}},
            "train_defaults": {"epochs": 1, "batch_size": 4, "crop": None, "lr": 1e-3, "device": "cpu"},
            "experiments": experiments}


def _smoke(name: str, **extra: object) -> dict:
    from iqalab.models import get_model_class

    return {"name": name, **get_model_class(name).smoke_params, **extra}


@needs_mtcnn
def test_ingest_fills_regions_once_and_region_models_train_on_them(project, caplog: pytest.LogCaptureFixture
                                                                   ) -> None:
    import json

    from iqalab.stages import ingest
    from iqalab.train.engine import train_experiment

    _photo_dataset(project.root / "raw" / "photos")
    params = project.write_params(_photo_params(
        tune={"dataset": "photos", "splits": ["main"], "model": _smoke("tuningiqa")},
        sf={"dataset": "photos", "splits": ["main"], "model": _smoke("sfiqa_xxs")}))
    ds = ingest.run(params, "photos", project.root, progress=False)
    table = ds.images.set_index("image_id")
    faces = ["astronaut", "grace_hopper", "camera", "astronaut_m", "camera_m"]
    assert table.loc[faces, list(FACE_BOX)].notna().all().all()
    assert table.loc[faces, list(PERSON_BOX)].notna().all().all()
    empty = ["coffee", "chelsea", "china"]
    assert table.loc[empty, [*FACE_BOX, *PERSON_BOX]].isna().all().all()
    # provenance: who looked at each image, with which version, how sure
    assert table.loc["astronaut_m", "face_detector"] == "dataset"  # a given box is kept, not re-detected
    assert table.loc["astronaut_m", "face_x0"] == pytest.approx(1 - 272 / 512)
    assert set(table.drop(index="astronaut_m")["face_detector"]) == {"mtcnn"}  # looked: found or not
    assert table["face_detector_version"].str.startswith("facenet-pytorch").sum() == 7
    assert set(table["person_detector"]) == {"face_rule"}
    assert (table.loc[["astronaut", "grace_hopper", "camera"], "face_score"] >= 0.9).all()
    assert ds.meta["regions"]["detected"] == 7 and ds.meta["regions"]["faces"] == 5
    cache_files = list((project.root / "build" / "detections" / "photos").glob("*.parquet"))
    assert len(cache_files) == 1

    again = ingest.run(params, "photos", project.root, progress=False)  # a re-ingest reads the cache
    assert again.meta["regions"]["detected"] == 0 and again.meta["regions"]["from_cache"] == 7
    pd.testing.assert_frame_equal(again.images, ds.images)

    with caplog.at_level("WARNING"):
        train_experiment(params, "tune", project.root, progress=False)
        train_experiment(params, "sf", project.root, progress=False)
    assert "fallback" not in caplog.text
    out = project.root / "results" / "predictions"
    tune, sf = (json.loads((out / f"{e}.json").read_text()) for e in ("tune", "sf"))
    assert tune["regions"] == ["person_box"] and tune["regions_detector"] == {"person_box": ["face_rule"]}
    assert sf["regions"] == ["face_box", "landmarks"]
    assert sf["regions_detector"] == {"face_box": ["dataset", "mtcnn"], "landmarks": ["dataset", "mtcnn"]}
    for meta in (tune, sf):  # test images: grace_hopper (found) and chelsea (looked, nobody there)
        assert meta["regions_missing"] == 1 and meta["allow_missing_regions"] is False


def test_region_models_refuse_datasets_never_searched(project, toy_dataset) -> None:
    import json
    import shutil

    from iqalab.config import parse_params
    from iqalab.data.regions import needed_regions
    from iqalab.data.schema import DataError
    from iqalab.models import build_model
    from iqalab.train.engine import train_experiment

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    train = {"epochs": 1, "batch_size": 4, "device": "cpu", "max_train_images": 4, "max_pairs": 4}
    refused = parse_params(toy_params(e={"dataset": "toy", "model": _smoke("tuningiqa"), "train": train}))
    with pytest.raises(DataError) as err:
        train_experiment(refused, "e", project.root, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "needs person_box regions but 20 of 20 images of dataset 'toy'" in message
    assert "datasets.toy.detect.enabled: true" in message and "experiments.e.model.allow_missing_regions" in message
    assert not (project.root / "results" / "predictions" / "e.json").exists()
    sfiqa = parse_params(toy_params(e={"dataset": "toy", "model": _smoke("sfiqa_xxs"), "train": train}))
    with pytest.raises(DataError, match="needs face_box regions"):
        train_experiment(sfiqa, "e", project.root, progress=False)

    allowed = parse_params(toy_params(e={"dataset": "toy", "train": train,
                                         "model": _smoke("tuningiqa", allow_missing_regions=True)}))
    preds = train_experiment(allowed, "e", project.root, progress=False)
    meta = json.loads((project.root / "results" / "predictions" / "e.json").read_text())
    n_test = preds.loc[preds.role == "test", "image_id"].nunique()
    assert meta["allow_missing_regions"] is True and meta["regions_missing"] == n_test > 0
    # the Table 4 baseline never reads the person box; SFIQA's original view alone reads no face
    smoke = {k: v for k, v in _smoke("tuningiqa", use_hfe=False).items() if k != "name"}
    assert needed_regions(build_model("tuningiqa", ["a"], **smoke)) == []
    assert needed_regions(build_model("sfiqa_xxs", ["a"], views=["original"])) == []
    assert needed_regions(build_model("sfiqa_xxs", ["a"], views=["original", "eyes_mouth"])) == ["face_box", "landmarks"]


def test_face_boxes_a_dataset_gives_without_landmarks_are_not_a_search_for_landmarks(toy_dataset) -> None:
    """SFIQA's eyes-and-mouth view reads the five landmarks. A face box the dataset gives (``face_detector``
    ``dataset``) comes without them: unless the dataset has them too, the model refuses in one line instead of
    silently placing its template landmarks, and with ``allow_missing_regions`` the test images are counted."""
    from iqalab.data.regions import check_regions, needed_regions, region_status
    from iqalab.data.schema import DataError, read_dataset
    from iqalab.models import build_model

    ds = read_dataset(toy_dataset.root)
    images = ds.images.copy()
    images[list(FACE_BOX)] = [0.3, 0.2, 0.7, 0.6]
    images["face_detector"] = "dataset"
    for col in LANDMARKS:
        images[col] = np.nan
    ids = images["image_id"].astype(str).tolist()
    images.loc[images.index[:5], list(LANDMARKS)] = 0.45  # five images come with their landmarks
    images.loc[images.index[5], "face_detector"] = "mtcnn"  # a detector looked and found no landmarks: "none"
    ds.images = images
    status = region_status(ds, "landmarks")
    assert (status.iloc[:5] == "present").all() and status.iloc[5] == "none" and (status.iloc[6:] == "unknown").all()
    assert (region_status(ds, "face_box") == "present").all()
    model = build_model("sfiqa_xxs", ["overall"])
    assert needed_regions(model) == ["face_box", "landmarks"]
    with pytest.raises(DataError) as err:
        check_regions(model, ds, {"train": ids[:10], "test": ids[10:]}, "experiments.e")
    message = str(err.value)
    assert "\n" not in message and f"needs landmarks but {len(ids) - 6} of {len(ids)} images" in message
    assert "face box from the dataset" in message and "experiments.e.model.allow_missing_regions" in message
    allowed = build_model("sfiqa_xxs", ["overall"], allow_missing_regions=True)
    out = check_regions(allowed, ds, {"train": ids[:10], "test": ids[10:]}, "experiments.e")
    assert out["missing_test_ids"] == set(ids[10:])
    ds.images.loc[ds.images.index[5:], list(LANDMARKS)] = 0.45  # the dataset gives every landmark: no refusal
    assert check_regions(model, ds, {"train": ids[:10], "test": ids[10:]}, "experiments.e")["missing_test_ids"] \
        == set()


def test_detection_settings_are_validated() -> None:
    from pydantic import ValidationError

    from iqalab.data.regions import DetectionConfig

    assert DetectionConfig().person == "face_rule" and not DetectionConfig().enabled
    with pytest.raises(ValidationError):
        DetectionConfig(person="yolo")
    with pytest.raises(ValidationError):
        DetectionConfig(face_threshold=1.5)
    with pytest.raises(ValidationError, match="Faster R-CNN score"):
        DetectionConfig(person="fasterrcnn", person_threshold=2.0)
    with pytest.raises(ValidationError):
        DetectionConfig(threshold=0.5)  # unknown key
    assert DetectionConfig(face_threshold=0.8).key() != DetectionConfig().key()
    assert DetectionConfig(enabled=True).key() == DetectionConfig().key()  # switching on does not re-detect


def test_region_montage_draws_boxes_and_rates(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from iqalab.dataset_figures import region_montage

    images = pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "condition": ["day", "day", "night"],
                           "face_detector": ["mtcnn", "mtcnn", "mtcnn"], "person_detector": "face_rule"})
    for k, col in enumerate(FACE_BOX):
        images[col] = [0.2 + 0.5 * (k >= 2), np.nan, 0.1 + 0.5 * (k >= 2)]
    for k, col in enumerate(PERSON_BOX):
        images[col] = [0.1 + 0.8 * (k >= 2), np.nan, np.nan]
    for col in LANDMARKS:
        images[col] = [0.4, np.nan, np.nan]
    fig = region_montage(tmp_path, images, load=lambda row: np.zeros((20, 40, 3), np.uint8))
    assert fig is not None
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "day (n=2)\nface 50%\nperson 50%" in labels and "night (n=1)\nface 100%\nperson 0%" in labels
    boxes = [p for ax in fig.axes for p in ax.patches]
    assert len(boxes) == 3  # person + face on one day image, face on the night image
    assert {tuple(np.round(b.get_xy(), 1)) for b in boxes} >= {(4.0, 2.0), (8.0, 4.0)}  # scaled to 40 x 20 px
    assert "face: mtcnn" in fig._suptitle.get_text()
    plt.close(fig)
    assert region_montage(tmp_path, images[["path", "condition"]]) is None
    from iqalab.data.regions import detection_rates

    rates = detection_rates(images).set_index("group")
    assert rates.loc["day"].tolist() == [2, 0.5, 0.5] and rates.loc["night"].tolist() == [1, 1.0, 0.0]
    assert rates.loc["all", "face"] == pytest.approx(2 / 3) and rates.loc["all", "n"] == 3
    assert detection_rates(images[["path"]], "condition").to_dict("records") == [
        {"group": "all", "n": 3, "face": 0.0, "person": 0.0}]


def test_ingest_with_fasterrcnn_fails_fast_without_local_weights(tmp_path: Path, toy_dataset,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """TuningIQA's own detector is used only from a local file: no download is tried, the message says what to do,
    and the dataset folder is left as it was."""
    import shutil

    import torch

    from iqalab.data.regions import DetectionConfig, fill_regions
    from iqalab.data.schema import read_dataset

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty hub cache
    root = tmp_path / "toy"
    shutil.copytree(toy_dataset.root, root)
    ds = read_dataset(root)
    before = (root / "images.parquet").read_bytes()
    cfg = DetectionConfig(enabled=True, person="fasterrcnn")
    with pytest.raises(DetectorUnavailable, match="no local weights for fasterrcnn_resnet50_fpn.*face_rule"):
        fill_regions(ds, cfg, tmp_path / "cache", progress=False)
    with pytest.raises(DetectorUnavailable, match="not found"):
        fill_regions(ds, DetectionConfig(person="fasterrcnn", fasterrcnn_weights="w.pth"), tmp_path / "cache",
                     root=tmp_path, progress=False)
    assert (root / "images.parquet").read_bytes() == before
    assert not (tmp_path / "cache").exists()
