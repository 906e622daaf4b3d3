"""Physics of the simulated camera: each parameter moves the known degradations the right way (real scenes)."""

from __future__ import annotations

import numpy as np
import pytest

from iqalab.sim.camera import (
    CameraParams,
    _box_kernel,
    auto_params,
    capture,
    colour_cast,
    render,
    tone_curve,
    wb_gains,
)
from iqalab.sim.observers import true_quality
from iqalab.sim.scenes import (
    PERSONS,
    face_crop_scene,
    illuminant_rgb,
    linear_to_srgb,
    make_scene,
    srgb_to_linear,
)

SIZE = 96


@pytest.fixture(scope="module")
def scene():
    s = make_scene(np.random.default_rng(3), SIZE, condition="indoor", person="astronaut", name="t")
    s.subject_speed = (80.0, 10.0)  # a moving subject, so the shutter matters
    return s


def shot(scene, params, seed=0):
    return capture(scene, params, np.random.default_rng(seed)).info


def test_render_returns_uint8_image_and_is_deterministic(scene):
    params = auto_params(scene)
    img1, info1 = render(scene, params, np.random.default_rng(1))
    img2, info2 = render(scene, params, np.random.default_rng(1))
    img3, _ = render(scene, params, np.random.default_rng(2))
    assert img1.dtype == np.uint8 and img1.shape == (SIZE, SIZE, 3)
    assert np.array_equal(img1, img2) and info1 == info2
    assert not np.array_equal(img1, img3)  # the sensor noise is drawn from rng


def test_metered_exposure_is_zero_ev_and_mid_grey(scene):
    info = shot(scene, auto_params(scene))
    assert abs(info["exposure_ev"]) < 1e-6
    assert 0.3 < info["mean_luma"] < 0.55  # a metered 18 % grey encodes near 0.46


def test_exposure_ratio_follows_the_meter_equation():
    p = CameraParams(aperture=4.0, shutter=1 / 100, iso=200)
    assert p.exposure_ratio(1000.0) == pytest.approx(1000 * 0.01 * 200 / (12.5 * 16))
    assert p.replace(shutter=1 / 50).exposure_ratio(1000.0) == pytest.approx(2 * p.exposure_ratio(1000.0))
    assert p.replace(aperture=4.0 * np.sqrt(2)).exposure_ratio(1000.0) == pytest.approx(
        p.exposure_ratio(1000.0) / 2)


def test_raising_iso_at_fixed_exposure_raises_noise_and_lowers_noise_quality(scene):
    ref = auto_params(scene)
    noise, quality = [], []
    for stops in (0, 2, 4):
        p = ref.replace(iso=ref.iso * 2**stops, shutter=ref.shutter / 2**stops)
        info = shot(scene, p)
        assert abs(info["exposure_ev"] - shot(scene, ref)["exposure_ev"]) < 1e-6
        noise.append(info["noise_std"])
        quality.append(true_quality(info, "noise"))
    assert noise[0] < noise[1] < noise[2]
    assert quality[0] > quality[1] > quality[2]
    # shot-noise limited: 4 stops fewer electrons is about 4x the noise (sqrt(16)); clipping/tone bend it a bit
    assert 2.0 < noise[2] / noise[0] < 6.0


def test_longer_shutter_blurs_motion_and_lowers_sharpness(scene):
    ref = auto_params(scene)
    infos = [shot(scene, ref.replace(shutter=ref.shutter * 2**s, iso=max(25.0, ref.iso / 2**s))) for s in (0, 2, 4)]
    motion = [i["motion_px"] for i in infos]
    assert motion[0] < motion[1] < motion[2]
    assert motion[2] == pytest.approx(16 * motion[0], rel=1e-6)  # length = speed x time
    sharp = [true_quality(i, "sharpness") for i in infos]
    assert sharp[0] > sharp[2]


def test_over_exposure_clips_and_lowers_exposure_quality(scene):
    ref = auto_params(scene)
    infos = [shot(scene, ref.replace(shutter=min(1.0, ref.shutter * 2**s))) for s in (0, 1.5, 3)]
    clipped = [i["clipped_hi"] for i in infos]
    assert clipped[0] < clipped[1] < clipped[2]
    assert infos[2]["sensor_clipped"] > 0.2
    assert true_quality(infos[0], "exposure") > true_quality(infos[2], "exposure")
    assert infos[0]["mean_luma"] < infos[2]["mean_luma"]


def test_small_apertures_diffract_and_wide_apertures_defocus_the_background(scene):
    ref = auto_params(scene)
    sigma = {n: shot(scene, ref.replace(aperture=n))["optics_sigma"] for n in (2.8, 8.0, 16.0)}
    assert sigma[8.0] < sigma[16.0]
    bg = [shot(scene, ref.replace(aperture=n))["blur_background"] for n in (1.4, 4.0, 11.0)]
    assert bg[0] > bg[1]  # the background is out of the focal plane: its blur circle shrinks as N grows


def test_white_balance_cast_is_zero_when_set_to_the_illuminant_and_grows_with_the_error(scene):
    assert colour_cast(4000, 4000) == pytest.approx(0.0, abs=1e-6)
    assert colour_cast(4000, 5000) < colour_cast(4000, 7000)
    ref = auto_params(scene)
    wrong = shot(scene, ref.replace(wb=ref.wb + 3000))
    assert wrong["cast"] > 0.3
    assert true_quality(wrong, "colorfulness") < true_quality(shot(scene, ref), "colorfulness")


def test_oversharpening_makes_halos(scene):
    ref = auto_params(scene)
    halos = [shot(scene, ref.replace(sharpness=a))["halo"] for a in (0.0, 1.0, 4.0)]
    assert halos[0] < halos[1] < halos[2]


def test_hallucinating_enhancement_lowers_fidelity_and_noise():
    face = face_crop_scene(np.random.default_rng(0), 64, scenario="outdoor", night=True, name="f")
    p = auto_params(face, max_iso=25600)
    plain, enhanced = shot(face, p), shot(face, p.replace(enhance=1.0))
    assert enhanced["hallucination"] > plain["hallucination"] == 0.0
    assert enhanced["noise_std_face"] < plain["noise_std_face"]
    assert true_quality(enhanced, "fidelity") < true_quality(plain, "fidelity")


def test_lower_jpeg_quality_adds_error(scene):
    ref = auto_params(scene)
    err = [shot(scene, ref.replace(jpeg_quality=q))["jpeg_rmse"] for q in (95, 50, 10)]
    assert err[0] < err[1] < err[2]


def test_params_are_validated():
    with pytest.raises(ValueError, match="shutter"):
        CameraParams(shutter=5.0)
    with pytest.raises(TypeError, match="unknown camera parameter"):
        CameraParams().replace(focus=1.0)
    cols = CameraParams().cam_columns()
    assert list(cols) == [f"cam_{n}" for n in ("aperture", "shutter", "iso", "wb", "contrast", "saturation",
                                                 "sharpness")]


def test_colour_helpers():
    v = np.linspace(0, 1, 11, dtype=np.float32)
    assert np.allclose(linear_to_srgb(srgb_to_linear(v)), v, atol=1e-5)
    warm, cold = illuminant_rgb(3000), illuminant_rgb(9000)
    assert warm[0] / warm[2] > 1 > cold[0] / cold[2]
    assert np.allclose(wb_gains(5000) * illuminant_rgb(5000) / illuminant_rgb(5000)[1], 1.0, atol=1e-5)
    curve = tone_curve(v, 2.0)
    assert np.all(np.diff(curve) >= 0) and curve[5] == pytest.approx(0.5) and curve[2] < v[2]
    for length in (1.0, 2.5, 4.0, 7.3):
        k = _box_kernel(length)
        assert k.sum() == pytest.approx(1.0) and len(k) % 2 == 1


def test_composited_scene_boxes_and_landmarks_are_inside_the_frame_and_consistent():
    rng = np.random.default_rng(5)
    for who in PERSONS:
        s = make_scene(rng, 80, person=who)
        x0, y0, x1, y1 = s.face_box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        px0, py0, px1, py1 = s.person_box
        assert px0 <= x1 and px1 >= x0  # the face overlaps the person
        lm = s.landmarks
        assert lm.shape == (5, 2) and lm[0, 0] < lm[1, 0]  # left eye first after any flip
        assert abs(float((s.radiance() @ np.array([0.2126, 0.7152, 0.0722])).mean()) - 0.18) < 1e-3
