"""Scene content (issue #23): no false faces, skin-tone levels, head roll, scale and no silent upsampling.

No false faces: MTCNN (facenet-pytorch, weights inside its wheel) runs on a crop around each stored face box of
every face source (the three photographs and the 100 LFW tiles) and on the face region of scenes from every
scene-building path the builders use (composited livestream/portrait/ugc scenes at every skin-tone level with a
drawn head roll, surveillance face crops, HDR variants, the held-out scene pools of gMAD and camera tuning). A box
on a non-face (the former ``rider`` box lay on a motorcycle wheel) finds no face or a face elsewhere, and the test
fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from iqalab.sim.scenes import (
    BACKGROUNDS,
    ITA_BOUNDS,
    LFW_IDENTITIES,
    MAX_ROLL,
    PERSONS,
    SKIN_TONES,
    SPRITES,
    face_crop_scene,
    face_geometry,
    ita,
    linear_to_srgb,
    load_photo,
    make_scene,
    skin_weight,
    toned_photo,
    upsampling_blur,
)

detect = pytest.importorskip("iqalab.data.detect")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _detect(image8: np.ndarray, box: np.ndarray, margin: float = 0.5):
    """MTCNN's face in a crop ``margin`` box-sizes around ``box`` (pixels), in image pixels, or None."""
    w, h = box[2] - box[0], box[3] - box[1]
    x0, y0 = int(max(0, box[0] - margin * w)), int(max(0, box[1] - margin * h))
    x1, y1 = int(min(image8.shape[1], box[2] + margin * w)), int(min(image8.shape[0], box[3] + margin * h))
    try:
        hit = detect.mtcnn_faces(np.ascontiguousarray(image8[y0:y1, x0:x1]), threshold=0.9, min_face_size=12)
    except detect.DetectorUnavailable as exc:
        pytest.skip(str(exc))
    if hit is None:
        return None
    return hit[0] + [x0, y0, x0, y0], np.asarray(hit[1]) + [x0, y0]


def _found(image8: np.ndarray, box: np.ndarray, margin: float = 0.5) -> float:
    """IoU of the stored ``box`` (pixels) with MTCNN's face around it (0: none found)."""
    hit = _detect(image8, box, margin)
    return 0.0 if hit is None else _iou(hit[0], box)


def _to8(linear: np.ndarray) -> np.ndarray:
    return np.rint(linear_to_srgb(linear / max(float(np.percentile(linear, 99)), 1e-6)) * 255).astype(np.uint8)


def _scene_box(scene) -> np.ndarray:
    h, w = scene.size
    return np.array(scene.face_box) * [w, h, w, h]


@pytest.mark.parametrize("who", sorted(PERSONS))
def test_every_person_source_face_box_is_a_detected_face(who):
    src = PERSONS[who]
    assert _found(_to8(load_photo(src.source)), np.array(src.face_box)) >= 0.5, who


def test_every_lfw_tile_face_box_is_the_detected_face():
    """The stored geometry of all 100 LFW tiles is MTCNN's (4x upsampled tile, as measured)."""
    from PIL import Image

    for who in LFW_IDENTITIES:
        tile = np.rint(linear_to_srgb(load_photo(who))[..., 0] * 255).astype(np.uint8)  # the shipped pixels
        big = np.asarray(Image.fromarray(tile).resize((100, 100), Image.Resampling.BICUBIC))
        box, _ = face_geometry(who)
        stored = (np.asarray(box) + 0.5) * 4 - 0.5
        assert _found(np.stack([big] * 3, axis=-1), stored, margin=1.0) >= 0.8, who


def test_scene_builders_put_face_boxes_on_faces():
    """Every skin-tone level on every sprite (head roll drawn), face crops of the photographs and of LFW tiles,
    an HDR variant, and the held-out pools of every kind: the face box is on a detected face."""
    from iqalab.sim.builders import scene_pool
    from iqalab.sim.scenes import high_dynamic_range

    rng = np.random.default_rng(3)
    scenes = [make_scene(rng, 256, condition="indoor", person=who, skin_tone=tone)
              for who in SPRITES for tone in SKIN_TONES]
    scenes += [face_crop_scene(rng, 160, scenario="indoor", who=who) for who in sorted(PERSONS)]
    scenes += [face_crop_scene(rng, 128, scenario="outdoor", who=who) for who in LFW_IDENTITIES[::9]]
    scenes.append(high_dynamic_range(make_scene(rng, 256, condition="indoor", person="astronaut"), rng))
    for kind in ("livestream", "portrait", "face", "ugc"):
        scenes += [s for s in scene_pool(3, seed=1, image_size=160 if kind == "face" else 256, kind=kind)
                   if s.face_box is not None]
    for scene in scenes:
        assert _found(_to8(scene.radiance()), _scene_box(scene)) >= 0.4, scene.meta


@pytest.mark.parametrize("who", [*sorted(PERSONS), "lfw_000", "lfw_042"])
def test_skin_tone_levels_land_in_their_ita_category(who):
    """Each level moves the skin's median CIELAB colour into its ITA category (grey sources included), and the
    pixels far from the face are left alone."""
    from skimage.color import rgb2lab

    box, landmarks = face_geometry(who)
    original = toned_photo(who, None)
    for tone, (lo, hi) in ITA_BOUNDS.items():
        photo = toned_photo(who, tone)
        _, median = skin_weight(rgb2lab(linear_to_srgb(photo)), box, landmarks)
        assert lo <= float(ita(median)) <= hi, (who, tone, float(ita(median)))
        if who in PERSONS:
            assert np.array_equal(photo[:5, :5], original[:5, :5])  # a corner far from the face
    with pytest.raises(ValueError, match="skin tone"):
        toned_photo(who, "green")


def test_head_roll_turns_the_landmarks_with_the_face():
    """A head rolled by the maximum either way: MTCNN's eye line tilts as the stored landmarks' eye line does
    (a roll applied the wrong way round would put them about 2 x 12 degrees apart)."""
    from iqalab.sim.scenes import _composite

    stored_angles = []
    for roll in (-MAX_ROLL, MAX_ROLL):
        scene = make_scene(np.random.default_rng(11), 256, condition="indoor", person=None, background="brick")
        scene.base_blur, scene.background_base_blur = 0.0, 0.0
        _composite(scene, "grace_hopper", np.random.default_rng(2), roll=roll, mirror=False)
        h, w = scene.size
        hit = _detect(_to8(scene.radiance()), _scene_box(scene))
        assert hit is not None and scene.meta["roll_deg"] == roll
        eyes, lm = hit[1][:2], scene.landmarks * [w, h]
        detected = np.degrees(np.arctan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0]))
        stored = np.degrees(np.arctan2(lm[1, 1] - lm[0, 1], lm[1, 0] - lm[0, 0]))
        assert abs(detected - stored) < 6.0, (roll, detected, stored)
        stored_angles.append(stored)
    assert stored_angles[0] - stored_angles[1] == pytest.approx(2 * MAX_ROLL, abs=0.5)


def test_no_silent_upsampling():
    """At 256 px no background is upsampled; at 512 px a background smaller than the frame records its softness
    (``background_base_blur`` behind a person, ``base_blur`` without one), and the camera counts it."""
    from iqalab.sim.camera import auto_params, layer_blur

    rng = np.random.default_rng(0)
    for name in BACKGROUNDS:
        scene = make_scene(rng, 256, person=None, background=name)
        assert scene.meta["background_magnification"] <= 1.0 and scene.base_blur == 0.0, name
    alone = make_scene(rng, 512, person=None, background="clock")  # 300 x 400 px photograph
    assert alone.meta["background_magnification"] > 1.0
    assert alone.base_blur == pytest.approx(upsampling_blur(alone.meta["background_magnification"], 512))
    behind = make_scene(rng, 512, person="astronaut", background="clock")
    assert behind.background_base_blur == pytest.approx(
        upsampling_blur(behind.meta["background_magnification"], 512))
    params = auto_params(behind)
    sharp_bg = layer_blur(behind.__class__(**{**behind.__dict__, "background_base_blur": 0.0}), params, False)
    assert layer_blur(behind, params, False)["effective"] > sharp_bg["effective"]
    assert layer_blur(behind, params, True)["effective"] == pytest.approx(
        layer_blur(behind.__class__(**{**behind.__dict__, "background_base_blur": 0.0}), params, True)["effective"])
    assert 0.45 <= behind.meta["person_height"] <= 1.0 + 1e-9


def test_high_dynamic_range_scene_has_light_above_full_scale_and_a_darker_backlit_subject():
    """HDR content (issue #23): lamps brighter than the sensor's full scale at a metered exposure, a backlit
    subject darker against its frame; the person layer, matte and boxes are those of the source scene."""
    from iqalab.sim.camera import auto_params, capture
    from iqalab.sim.scenes import high_dynamic_range, luminance

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


def test_skin_tone_alone_barely_moves_the_ground_truth():
    """The same scenes at the same settings, only the skin-tone level changed: the ground truth of the reference
    render (livestream overall and face, ugc overall) differs by less than 0.1 on the 1-5 scale between levels
    (measured: <= 0.04 over 12 scenes), so a level is content, not a quality grade."""
    from iqalab.sim.camera import auto_params, capture
    from iqalab.sim.observers import true_quality

    means = []
    for tone in SKIN_TONES:
        q = []
        for seed in range(4):
            scene = make_scene(np.random.default_rng(seed), 96, person="any", skin_tone=tone)
            info = capture(scene, auto_params(scene, sharpness=0.6, jpeg_quality=92),
                           np.random.default_rng(100 + seed)).info
            q.append([true_quality(info, "overall", "livestream"), true_quality(info, "face", "livestream"),
                      true_quality(info, "overall", "ugc")])
        means.append(np.mean(q, axis=0))
    spread = np.ptp(np.array(means), axis=0)
    assert (spread < 0.1).all(), dict(zip(("overall", "face", "ugc"), spread.round(3), strict=True))
    assert (spread > 0).any()  # the faces did change
