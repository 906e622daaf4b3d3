"""Human-box detection: dataset boxes, the face-to-body rule, MTCNN on a real photo, Faster R-CNN selection."""

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
    monkeypatch.setattr(detect, "mtcnn_faces", lambda image, threshold: None)  # no face in this stand-in
    monkeypatch.setattr(detect, "_mtcnn", lambda: None)
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
