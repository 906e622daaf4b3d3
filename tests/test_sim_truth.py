"""Ground truth that is perceptual and measured on the render (issue #23), asserted on real renders."""

from __future__ import annotations

import numpy as np
import pytest

from iqalab.sim.camera import auto_params, capture, line_kernel
from iqalab.sim.observers import PROFILES, true_quality
from iqalab.sim.scenes import make_scene, scene_with

SIZE = 128


@pytest.fixture(scope="module")
def scene():
    return make_scene(np.random.default_rng(1), SIZE, condition="indoor", person="astronaut", name="truth")


def info(scene, params, seed=0):
    return capture(scene, params, np.random.default_rng(seed)).info


def test_a_greyscale_render_of_a_colour_scene_scores_lower_overall_and_face(scene):
    ref = auto_params(scene, sharpness=0.6)
    colour, grey = info(scene, ref), info(scene, ref.replace(saturation=0.0))
    for attr in ("overall", "face", "colorfulness"):
        assert true_quality(grey, attr, "livestream") < true_quality(colour, attr, "livestream") - 0.2, attr


def test_saturation_is_judged_against_the_neutral_render_so_grey_content_is_not_penalised(scene):
    grey_scene = scene_with(scene, person=None, alpha=None, person_box=None, face_box=None, landmarks=None,
                            background=np.repeat(scene.background.mean(axis=-1, keepdims=True), 3, axis=-1))
    ref = auto_params(grey_scene)
    low = info(grey_scene, ref.replace(saturation=0.2))
    assert abs(low["chroma_log_ratio"]) < 0.1
    assert true_quality(low, "colorfulness") == pytest.approx(true_quality(info(grey_scene, ref), "colorfulness"),
                                                              abs=0.1)


def test_moderate_sharpening_of_a_soft_render_helps_and_strong_sharpening_hurts(scene):
    soft = scene_with(scene, person_defocus=30.0, subject_speed=(0.0, 0.0), shake_speed=(0.0, 0.0))
    ref = auto_params(soft, sharpness=0.0, jpeg_quality=95)
    q = {a: true_quality(info(soft, ref.replace(sharpness=a)), "sharpness") for a in (0.0, 1.5, 4.5)}
    assert q[1.5] > q[0.0] + 0.2
    assert q[4.5] < q[0.0] - 0.2


def test_background_bokeh_does_not_lower_the_subject_sharpness(scene):
    ref = auto_params(scene, sharpness=0.6)
    sharp_bg = info(scene_with(scene, background_defocus=0.0), ref)
    bokeh = info(scene_with(scene, background_defocus=80.0), ref)
    assert bokeh["blur_background"] > sharp_bg["blur_background"] + 1.0
    assert true_quality(bokeh, "sharpness") == pytest.approx(true_quality(sharp_bg, "sharpness"), abs=0.05)


def test_iso_below_100_reaches_white_when_exposed_to_clip(scene):
    metered = auto_params(scene, base_iso=50.0)
    over = metered.replace(iso=50.0, shutter=min(1.0, metered.shutter * 50.0 / metered.iso * 8))
    shot = capture(scene, over, np.random.default_rng(0))
    assert over.exposure_ratio(scene.luminance) > 4
    assert shot.info["sensor_clipped"] > 0.05
    assert int(shot.image.max()) >= 250  # the saturation level maps to white (it capped at ~188 before)


def test_face_exposure_target_is_the_face_s_own_neutral_brightness(scene):
    shot = info(scene, auto_params(scene))
    assert np.isfinite(shot["mean_luma_face_neutral"])
    # the metered render keeps the face at its neutral brightness, so face exposure is near the best
    assert abs(shot["mean_luma_face"] - shot["mean_luma_face_neutral"]) < 0.06


def test_diagonal_motion_blurs_along_a_line_not_a_box():
    k = line_kernel(10.0, 10.0)
    assert k.sum() == pytest.approx(1.0)
    c = k.shape[0] // 2
    assert k[c, c] > 0 and k[0, -1] == 0 and k[-1, 0] == 0  # the anti-diagonal corners stay empty
    off = sum(k[i, j] for i in range(k.shape[0]) for j in range(k.shape[1]) if abs(i - j) > 1)
    assert off < 1e-6


def test_noise_is_defined_per_unit_area_and_noise_reduction_lowers_it():
    rng = np.random.default_rng(4)
    big = make_scene(rng, 256, condition="lowlight", person=None, name="n")
    small = scene_with(big, background=big.background.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3)))
    p = auto_params(big, max_iso=3200).replace(sharpness=0.0)
    n_big, n_small = info(big, p)["noise_std"], info(small, p)["noise_std"]
    # the same sensor area: a pixel of the half-size render collects 4x the light, so ~half the noise
    assert 0.35 < n_small / n_big < 0.7
    assert info(big, p)["noise_reduction"] > 0.1


def test_overall_weights_are_not_copied_from_the_sfiqa_regression():
    assert PROFILES["surveillance"] != {"sharpness": 0.41, "fidelity": 0.31, "contrast": 0.15, "noise": 0.08,
                                        "colorfulness": 0.06}
