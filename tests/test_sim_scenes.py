"""No false faces (issue #23): every face box the simulator writes lies on a face that a detector finds.

MTCNN (facenet-pytorch, weights inside its wheel) runs on a crop around each stored face box of every person
source, and on the face region of scenes made by each scene builder (composited livestream/portrait scenes and
surveillance face crops). A box on a non-face (the former ``rider`` box lay on a motorcycle wheel) finds no face
or a face elsewhere, and the test fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from iqalab.sim.scenes import PERSONS, SPRITES, face_crop_scene, linear_to_srgb, load_photo, make_scene

detect = pytest.importorskip("iqalab.data.detect")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _found(image8: np.ndarray, box: np.ndarray, margin: float = 0.5) -> float:
    """IoU of the stored ``box`` (pixels) with MTCNN's face in a crop ``margin`` box-sizes around it (0: none)."""
    w, h = box[2] - box[0], box[3] - box[1]
    x0, y0 = int(max(0, box[0] - margin * w)), int(max(0, box[1] - margin * h))
    x1, y1 = int(min(image8.shape[1], box[2] + margin * w)), int(min(image8.shape[0], box[3] + margin * h))
    try:
        hit = detect.mtcnn_faces(np.ascontiguousarray(image8[y0:y1, x0:x1]), threshold=0.9, min_face_size=12)
    except detect.DetectorUnavailable as exc:
        pytest.skip(str(exc))
    if hit is None:
        return 0.0
    return _iou(hit[0] + [x0, y0, x0, y0], box)


def _to8(linear: np.ndarray) -> np.ndarray:
    return np.rint(linear_to_srgb(linear / max(float(np.percentile(linear, 99)), 1e-6)) * 255).astype(np.uint8)


@pytest.mark.parametrize("who", sorted(PERSONS))
def test_every_person_source_face_box_is_a_detected_face(who):
    src = PERSONS[who]
    assert _found(_to8(load_photo(src.source)), np.array(src.face_box)) >= 0.5, who


def test_scene_builders_put_face_boxes_on_faces():
    rng = np.random.default_rng(3)
    scenes = [make_scene(rng, 256, condition="indoor", person=who) for who in SPRITES]
    scenes += [face_crop_scene(rng, 160, scenario="indoor", who=who) for who in sorted(PERSONS)]
    for scene in scenes:
        h, w = scene.size
        box = np.array(scene.face_box) * [w, h, w, h]
        assert _found(_to8(scene.radiance()), box) >= 0.4, scene.meta


def test_high_dynamic_range_scene_has_light_above_full_scale_and_a_darker_backlit_subject():
    """HDR content (issue #23): lamps brighter than the sensor's full scale at a metered exposure, a backlit
    subject darker against its frame; the person layer, matte and boxes are those of the source scene."""
    from iqalab.sim.camera import auto_params, capture
    from iqalab.sim.scenes import high_dynamic_range, luminance, make_scene

    rng = np.random.default_rng(4)
    scene = make_scene(rng, 96, condition="indoor", person="grace_hopper")
    hdr = high_dynamic_range(scene, rng, backlight=2.0, n_lamps=2)
    assert float(luminance(hdr.radiance()).mean()) == pytest.approx(0.18, rel=1e-3)  # re-metered
    assert float(luminance(hdr.background).max()) > 1.0 > float(luminance(scene.background).max())
    face = hdr.alpha > 0.5
    ratio = (luminance(hdr.radiance())[face].mean() / luminance(scene.radiance())[face].mean())
    assert ratio < 0.6  # the subject in front of a 2-stop brighter background is metered darker
    assert hdr.face_box == scene.face_box and np.array_equal(hdr.alpha, scene.alpha)
    assert hdr.meta["hdr"] == {"backlight_stops": 2.0, "lamps": 2}
    ref = auto_params(hdr)
    info = capture(hdr, ref, np.random.default_rng(0)).info
    assert info["clipped_hi"] > 0  # the camera's clipping / roll-off meets the lamps
