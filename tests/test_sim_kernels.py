"""The simulator's compiled loops (iqalab.sim.kernels) give bit for bit what the numpy formulation they replaced
gives (issue #30: the datasets built with them are byte-identical). Each test keeps that numpy formulation as its
oracle and asserts exact equality, not a tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import correlate1d

from iqalab.sim import camera, kernels
from iqalab.sim.builders import scene_pool
from iqalab.sim.scenes import LUMA


def _tap_sums(img: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """The numpy tap sums the renderer used before the kernels: a reflect-padded copy, ``x w[r]``, then
    ``+= (shifted(i) + shifted(2r - i)) w[i]`` for i = 0 .. r - 1, every operation on float32 arrays."""
    r = len(weights) // 2
    n = img.shape[axis]
    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    padded = np.pad(img, pad, mode="symmetric")

    def shifted(i: int) -> np.ndarray:
        return np.take(padded, np.arange(i, i + n), axis=axis)

    total = shifted(r) * np.float32(weights[r])
    for i in range(r):
        tmp = shifted(i) + shifted(2 * r - i)
        tmp *= np.float32(weights[i])
        total += tmp
    return total


@pytest.mark.parametrize("shape", [(1, 64, 80), (2, 37, 41), (3, 9, 200), (1, 200, 7)])
@pytest.mark.parametrize("sigma", [0.5, 0.7, 1.0, 1.5, 2.2])
def test_correlate_kernels_equal_the_numpy_tap_sums(shape: tuple[int, ...], sigma: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    weights = camera._gaussian_weights(sigma, 3.0)
    w32 = weights.astype(np.float32)
    for axis, kernel in ((2, kernels.correlate_rows), (1, kernels.correlate_columns)):
        if len(weights) // 2 >= shape[axis]:
            continue
        out = np.empty_like(x)
        kernel(x, w32, out)
        assert np.array_equal(out, _tap_sums(x, weights, axis)), (shape, sigma, axis)
        # and the same as scipy's filter up to float32 rounding (the borders are scipy's 'reflect')
        np.testing.assert_allclose(out, correlate1d(x.astype(np.float64), weights, axis=axis, mode="reflect"),
                                   atol=2e-6)


def test_correlate_routes_short_kernels_through_the_kernels_on_any_axis_and_layout() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((8, 40, 50), dtype=np.float32)
    weights = camera._gaussian_weights(1.0, 3.0)  # 7 taps (r = 3 < 8)
    for axis in (0, 1, 2, -1):
        out = camera._correlate(x, weights, axis)
        assert np.array_equal(out, _tap_sums(x, weights, axis % 3)), axis
    view = x[:, ::2, :]  # not contiguous, and a non-contiguous ``out``
    out = np.zeros((8, 20, 100), np.float32)[:, :, ::2]
    assert camera._correlate(view, weights, 1, out) is out
    assert np.array_equal(out, _tap_sums(np.ascontiguousarray(view), weights, 1))


def _table_encode(rgb: np.ndarray, contrast: float) -> np.ndarray:
    """The numpy gather the renderer used: clip, ``t = v n``, ``cell = floor(t)``, take (value, slope), interpolate."""
    pairs = camera._encoding_pairs(contrast)
    v = np.clip(rgb, 0.0, 1.0)
    t = v * np.float32(len(pairs) - 2)
    cell = np.floor(t)
    t -= cell
    looked = pairs.take(cell.astype(np.intp), axis=0, mode="clip")
    enc = looked[:, 1] * t
    enc += looked[:, 0]
    return enc


@pytest.mark.parametrize("contrast", [1.0, 0.8, 1.35])
def test_encode_table_equals_the_numpy_gather(contrast: float) -> None:
    rng = np.random.default_rng(2)
    rgb = np.concatenate([rng.random(20000, dtype=np.float32) * 1.2 - 0.1,
                          np.array([0.0, -0.0, 1.0, 1e-9, 0.004, 0.99, 0.999999], np.float32)])
    expected = _table_encode(rgb, contrast)
    out = np.empty_like(rgb)
    work = rgb.copy()
    nan_cells = kernels.encode_table(work, camera._encoding_pairs(contrast), out)
    assert np.array_equal(out, expected, equal_nan=True)
    assert nan_cells == int(np.isnan(expected).sum())
    assert np.array_equal(work, np.clip(rgb, 0.0, 1.0))  # clipped in place
    assert np.isnan(out).any() == (contrast != 1.0)  # the cells left to the exact formula
    # and _encode fills those cells with the formula itself
    full = camera._encode(rgb.copy(), contrast)
    formula = camera.tone_curve(camera.linear_to_srgb(np.clip(rgb, 0.0, 1.0)), contrast)
    np.testing.assert_allclose(full, formula, atol=2e-6)


def test_expose_equals_the_numpy_sensor_chain() -> None:
    rng = np.random.default_rng(3)
    colour = (rng.random((3, 30, 40), dtype=np.float32) * 1.3).astype(np.float32)
    colour[0, 0, :5] = -1e-3  # negative light from a filter's undershoot
    drawn = rng.standard_normal((30, 40, 3), dtype=np.float32)
    full_well = np.float32(camera.FULL_WELL * 0.25)
    read_e = camera.READ_E * 0.5
    exposure = 812.5
    for iso in (50.0, 100.0, 1600.0):
        gain = np.float32(iso / (100.0 * float(full_well)))
        saturation = min(1.0, float(full_well * gain))
        # the numpy formulation (the order of capture's formulas)
        electrons = colour * np.float32(exposure)
        sd = np.maximum(electrons, 0.0)
        sd *= gain**2
        sd += (read_e * gain) ** 2
        sd += camera.ADC_NOISE**2
        np.sqrt(sd, out=sd)
        clean = np.minimum(electrons, full_well)
        clean *= gain
        np.minimum(clean, saturation, out=clean)
        noisy = np.moveaxis(drawn, -1, 0) * sd
        noisy /= gain
        noisy += electrons
        noisy = np.minimum(noisy, full_well)
        noisy *= gain
        np.clip(noisy, 0.0, saturation, out=noisy)
        hits = int(np.count_nonzero((clean >= np.float32(saturation)).any(axis=0)))
        raw = np.empty((2, 3, 30, 40), np.float32)
        got = kernels.expose(colour, drawn, np.float32(exposure), full_well, gain, gain**2, (read_e * gain) ** 2,
                             np.float32(camera.ADC_NOISE**2), np.float32(saturation), raw)
        assert np.array_equal(raw[0], clean) and np.array_equal(raw[1], noisy), iso
        assert got == hits, iso
    assert hits > 0  # ISO 1600 clips: the count was exercised


def _luma(planes: np.ndarray) -> np.ndarray:
    out = planes[0] * LUMA[0]
    out += planes[1] * LUMA[1]
    out += planes[2] * LUMA[2]
    return out


@pytest.mark.parametrize("saturation", [1.0, 0.35, np.float64(1.7), 2])
@pytest.mark.parametrize("nr", [0.0, 0.6])
def test_isp_kernels_equal_the_numpy_isp(saturation: float, nr: float) -> None:
    rng = np.random.default_rng(4)
    raw = rng.random((3, 24, 30), dtype=np.float32) * np.float32(1.1)
    gains = camera.wb_gains(4300.0)
    # numpy: white balance, clip, luma, chroma
    rgb = raw.copy()
    for c in range(3):
        rgb[c] *= gains[c]
    np.clip(rgb, 0.0, 1.0, out=rgb)
    y_lin = _luma(rgb)
    chroma = np.stack([rgb[0] - y_lin, rgb[2] - y_lin])
    work, y_k, chroma_k = raw.copy(), np.empty_like(y_lin), np.empty_like(chroma)
    kernels.balance(work, gains, LUMA, y_k, chroma_k)
    assert np.array_equal(work, rgb) and np.array_equal(y_k, y_lin) and np.array_equal(chroma_k, chroma)
    # numpy: NR blend, saturation, back to RGB, encoding
    smooth = camera._smooth(y_lin, 0.7, 2.5, (0, 1))
    blended = y_lin.copy()
    if nr > 0.02:
        step = smooth - blended
        step *= nr
        blended += step
    c_rb = chroma.copy()
    c_rb *= saturation
    out = np.empty_like(rgb)
    np.add(blended, c_rb[0], out=out[0])
    np.add(blended, c_rb[1], out=out[2])
    np.multiply(c_rb[0], -LUMA[0] / LUMA[1], out=out[1])
    c_rb[1] *= LUMA[2] / LUMA[1]
    out[1] -= c_rb[1]
    out[1] += blended
    wide = isinstance(saturation, np.floating)
    y_start = y_k.copy()
    kernels.recombine(y_k, smooth, float(nr), nr > 0.02, chroma_k, float(saturation), wide, -LUMA[0] / LUMA[1],
                      LUMA[2] / LUMA[1], work)
    assert np.array_equal(y_k, blended)
    assert np.array_equal(work, np.clip(out, 0.0, 1.0))
    # the encoding (table, and the formula where the table's slope is unbounded), then luma of the planes,
    # sharpening, clipping and 8-bit rounding
    enc = camera._encode(work, 1.3)
    luma = np.empty_like(y_lin)
    kernels.luma_of(enc, LUMA, luma)
    assert np.array_equal(luma, _luma(enc))
    # the fused pass (recombine, table encoding and luma), with the exact values filled in where it says; some
    # grey pixels in the cells where the contrast curve is computed exactly
    y_in, s_in, c_in = y_start.copy(), smooth.copy(), chroma_k.copy()
    y_in[0, :6] = s_in[0, :6] = [0.001, 0.002, 0.0035, 0.995, 0.999, 0.9999]
    c_in[:, 0, :6] = 0.0
    y_r, rgb_r = y_in.copy(), np.empty_like(work)
    kernels.recombine(y_r, s_in, float(nr), nr > 0.02, c_in, float(saturation), wide, -LUMA[0] / LUMA[1],
                      LUMA[2] / LUMA[1], rgb_r)
    enc_r = camera._encode(rgb_r.copy(), 1.3)
    y_f, rgb_f, enc_f = y_in.copy(), np.empty_like(work), np.empty_like(work)
    luma_f, nan_at = np.empty_like(y_lin), np.empty(work.size, dtype=np.int64)
    n = kernels.recombine_encode(y_f, s_in, float(nr), nr > 0.02, c_in, float(saturation), wide,
                                 -LUMA[0] / LUMA[1], LUMA[2] / LUMA[1], rgb_f, camera._encoding_pairs(1.3), LUMA,
                                 enc_f, luma_f, nan_at)
    table_only = np.empty_like(work)
    assert n == kernels.encode_table(rgb_r.reshape(-1).copy(), camera._encoding_pairs(1.3), table_only.reshape(-1))
    assert n >= 18 and sorted(nan_at[:n]) == np.flatnonzero(np.isnan(table_only)).tolist()
    assert np.array_equal(y_f, y_r) and np.array_equal(rgb_f, rgb_r)
    camera._encode_exactly(rgb_f.reshape(-1), enc_f.reshape(-1), 1.3, nan_at[:n])
    kernels.luma_of(enc_f, LUMA, luma_f)
    assert np.array_equal(enc_f, enc_r) and np.array_equal(luma_f, _luma(enc_r))
    detail = luma - camera._smooth(luma, 1.0, 3.0, (0, 1))
    for sharpness in (0.0, 0.6):
        expected = enc + detail * np.float32(sharpness) if sharpness > 0 else enc.copy()
        np.clip(expected, 0.0, 1.0, out=expected)
        expected *= 255.0
        np.rint(expected, out=expected)
        got, got8 = enc.copy(), np.empty(enc.shape[1:] + (3,), dtype=np.uint8)
        kernels.quantise(got, detail, np.float32(sharpness), sharpness > 0, got8)
        assert np.array_equal(got, expected), sharpness
        assert np.array_equal(got8, np.moveaxis(expected, 0, -1).astype(np.uint8)), sharpness


def test_a_float64_saturation_is_applied_in_float64_as_numpy_does() -> None:
    """numpy multiplies a float32 array by a float64 *numpy* scalar in float64 (NEP 50), by a Python float in
    float32: the kernel follows whichever the parameters hold, and the two differ for some values."""
    s = 1.0000001
    values = np.random.default_rng(5).random(1000, dtype=np.float32)
    weak, strong = values.copy(), values.copy()
    weak *= s  # as capture's in-place ``chroma *= params.saturation``
    strong *= np.float64(s)
    assert not np.array_equal(weak, strong)  # the two roundings differ for some values
    assert all(kernels._times(v, s, False) == a for v, a in zip(values, weak, strict=True))
    assert all(kernels._times(v, s, True) == b for v, b in zip(values, strong, strict=True))


@pytest.mark.parametrize("seed", [0, 7, [12345, 678]])
def test_standard_normal_kernel_draws_numpys_values_and_leaves_numpys_state(seed: int | list[int]) -> None:
    """The sensor noise drawn in the kernel is numpy's float32 ziggurat on the same PCG64 stream: equal values
    (2 M draws: thousands through the wedge test and dozens through the tail) and the generator's state after them
    equal, whether numpy had a 32-bit half buffered or not, so every later draw of the builders is unchanged."""
    ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
    for n in (2_000_000, 1, 3, 1000):
        ours.integers(10, dtype=np.uint32)  # leaves a buffered half every other time round
        theirs.integers(10, dtype=np.uint32)
        expected = theirs.standard_normal(size=n, dtype=np.float32)
        state = kernels.pcg64_state(ours)
        got = np.empty(n, dtype=np.float32)
        kernels.standard_normal_f32(state, got)
        kernels.set_pcg64_state(ours, state)
        np.testing.assert_array_equal(got, expected)
        assert np.signbit(got).tolist() == np.signbit(expected).tolist()  # -0.0 stays -0.0
        assert ours.bit_generator.state == theirs.bit_generator.state
    assert ours.random() == theirs.random()


def test_standard_normal_kernel_goes_through_the_slow_paths() -> None:
    """The test above means something only if its draws reach numpy's rare branches: count them."""
    values = np.random.default_rng(0).standard_normal(size=2_000_000, dtype=np.float32)
    assert (np.abs(values) > float(kernels._R)).sum() > 20  # the tail beyond the base layer
    assert kernels._KI.dtype == np.uint32 and kernels._WI.dtype == np.float32 and kernels._FI.dtype == np.float32


def test_capture_draws_the_same_noise_inside_the_sensor_loop_as_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture whose noise is drawn row by row inside the sensor loop (PCG64, ``kernels.expose_drawing``) is
    byte for byte the capture from numpy's draws (the path of any other bit generator), with the same
    measurements, and leaves the generator where numpy's draws leave it."""
    scene = scene_pool(1, seed=2, image_size=96)[0]
    params = camera.auto_params(scene, sharpness=0.6).replace(iso=1600.0, contrast=1.4)
    inside, numpys = np.random.default_rng(5), np.random.default_rng(5)
    fast = camera.capture(scene, params, inside)
    with monkeypatch.context() as patch:
        patch.setattr(kernels, "pcg64_state", lambda rng: None)  # as for a bit generator other than PCG64
        slow = camera.capture(scene, params, numpys)
    assert fast.jpeg == slow.jpeg and np.array_equal(fast.image, slow.image)
    assert fast.info.keys() == slow.info.keys()
    assert all(fast.info[k] == slow.info[k] or (np.isnan(fast.info[k]) and np.isnan(slow.info[k])) for k in fast.info)
    assert inside.bit_generator.state == numpys.bit_generator.state
    other = np.random.Generator(np.random.MT19937(5))
    assert kernels.pcg64_state(other) is None
    assert camera.capture(scene, params, other).image.shape == (96, 96, 3)


def test_measurement_kernels_equal_their_numpy_formulas() -> None:
    """The compiled measurements of ``camera._measure``: the squared luma noise, the JPEG error and the opponent
    planes of the colourfulness, each against the numpy expression it replaced (exactly)."""
    rng = np.random.default_rng(8)
    a, b = (np.rint(rng.random((3, 33, 47), dtype=np.float32) * 255).astype(np.float32) for _ in range(2))
    got = np.empty(a.shape[1:], dtype=np.float32)
    kernels.squared_luma_difference(a, b, LUMA, got)
    assert np.array_equal(got, np.square(_luma(a - b)))
    u, v = (rng.integers(0, 256, (33, 47, 3), dtype=np.uint8) for _ in range(2))
    diff = np.empty(u.shape, dtype=np.float32)
    kernels.byte_difference(u.reshape(-1), v.reshape(-1), diff.reshape(-1))
    assert np.array_equal(diff, u.astype(np.float32) - v.astype(np.float32))
    a[:, 0, :3] = [[255, 254, 0], [3, 0, 0], [0, 1, 2]]  # clipped high (255, 254), and dark enough to count
    luma, hi, lo = np.empty_like(got), np.empty_like(got), np.empty_like(got)
    kernels.luma_and_clipping(a, LUMA, np.float32(255.0), np.float32(254), np.float32(4 / 255), luma, hi, lo)
    expected = _luma(a)
    expected /= 255.0
    assert np.array_equal(luma, expected)
    assert np.array_equal(hi, (np.maximum(np.maximum(a[0], a[1]), a[2]) >= 254).astype(np.float32))
    assert np.array_equal(lo, (expected <= np.float32(4 / 255)).astype(np.float32))
    assert hi[0, :2].tolist() == [1.0, 1.0] and lo[0, 2] == 1.0
    rg, yb = np.empty_like(got), np.empty_like(got)
    kernels.opponents(a[0], a[1], a[2], rg, yb)
    assert np.array_equal(rg, a[0] - a[1]) and np.array_equal(yb, 0.5 * (a[0] + a[1]) - a[2])


@pytest.mark.parametrize("size", [1, 7, 8, 9, 15, 16, 127, 128, 129, 136, 257, 1000, 8191, 8193, 65536, 100003,
                                  262144])
def test_pairwise_sums_are_numpys_float32_sums_means_and_stds(size: int) -> None:
    """``kernels.sum_f32`` / ``mean_std`` against numpy's float32 ``sum``, ``mean`` and ``std`` (exactly): the run
    lengths cover every branch of numpy's pairwise summation (under 8, the 8-way block with and without a
    remainder, the split at 128, uneven splits), values spread over six decades so that the order of the
    additions shows in the last bits."""
    rng = np.random.default_rng(size)
    for _ in range(4):
        a = (rng.standard_normal(size) * 10.0 ** rng.uniform(-3, 3, size)).astype(np.float32)
        assert kernels.sum_f32(a) == np.sum(a)
        mean, std = kernels.mean_std(a)
        assert (mean, std) == (a.mean(), a.std())
    shifted = a + np.float32(1e4)  # a large mean: the two-pass variance rounds as numpy's
    assert kernels.mean_std(shifted) == (shifted.mean(), shifted.std())


def test_pairwise_sums_of_a_plane_are_numpys_sums_of_the_plane() -> None:
    """numpy reduces a contiguous (H, W) plane as one run: the kernels' sums of the flat view equal numpy's
    ``mean`` / ``std`` of the plane itself (what ``camera._measure`` replaced)."""
    rng = np.random.default_rng(3)
    for shape in [(512, 512), (256, 384), (128, 128), (37, 41)]:
        plane = (rng.random(shape, dtype=np.float32) * 255).astype(np.float32)
        assert kernels.mean_std(plane.reshape(-1)) == (plane.mean(), plane.std())


def test_edge_means_equal_the_masked_numpy_means() -> None:
    """``kernels.edge_means`` against ``over[edges].mean()`` and ``over[edges & (subject > 0.5)].mean()`` of
    ``camera._measure`` before it (exactly), with and without a subject, and with no edge at all."""
    rng = np.random.default_rng(5)
    over = rng.random((64, 90), dtype=np.float32)
    detail = (rng.standard_normal((64, 90)) * 0.01).astype(np.float32)
    subject = (rng.random((64, 90)) > 0.6).astype(np.float32)
    threshold = np.float32(2 / 255)
    edges = np.abs(detail) > threshold
    buf = np.empty((2, over.size + 1), dtype=np.float32)
    n, mean, n_subject, mean_subject = kernels.edge_means(over.reshape(-1), detail.reshape(-1), threshold,
                                                          subject.reshape(-1), True, buf)
    on_subject = edges & (subject > 0.5)
    assert (n, n_subject) == (edges.sum(), on_subject.sum()) and 0 < n_subject < n
    assert np.float32(mean) == over[edges].mean() and np.float32(mean_subject) == over[on_subject].mean()
    assert kernels.edge_means(over.reshape(-1), detail.reshape(-1), threshold, over.reshape(-1), False,
                              buf)[2:] == (n, mean)
    flat = np.zeros_like(detail)  # no edge: counts 0 (the caller then uses 0 / the frame's halo)
    assert kernels.edge_means(over.reshape(-1), flat.reshape(-1), threshold, subject.reshape(-1), True, buf)[::2] \
        == (0, 0)


def _highlight_knee_numpy(raw: np.ndarray, saturation_level: float) -> np.ndarray:
    """The numpy formulation ``camera._highlight_knee`` had before its kernel."""
    knee = camera.KNEE * saturation_level
    stretched = raw - knee
    stretched *= 1.0 - knee
    stretched /= saturation_level - knee
    stretched += knee
    np.copyto(raw, stretched, where=raw > knee)
    return raw


@pytest.mark.parametrize("saturation_level", [0.5, 0.62, 0.999])
def test_highlight_knee_kernel_equals_the_numpy_roll_off(saturation_level: float) -> None:
    """``camera._highlight_knee`` (now ``kernels.highlight_knee``) against its numpy formulation, exactly,
    including values at and next to the knee (the comparison is made in float32, as numpy makes it)."""
    rng = np.random.default_rng(11)
    raw = rng.random((2, 3, 24, 31), dtype=np.float32) * np.float32(saturation_level)
    knee32 = np.float32(camera.KNEE * saturation_level)
    raw.reshape(-1)[:3] = [knee32, np.nextafter(knee32, np.float32(0)), np.nextafter(knee32, np.float32(1))]
    expected = _highlight_knee_numpy(raw.copy(), saturation_level)
    got = camera._highlight_knee(raw, saturation_level)
    assert got is raw and np.array_equal(got, expected)
    assert got.reshape(-1)[0] == knee32 and got.max() <= 1.0


@pytest.mark.parametrize("shape", [(1, 40, 52), (3, 17, 9), (2, 64, 64)])
@pytest.mark.parametrize("sigma", [0.35, 0.7, 1.0, 2.0])
def test_smooth_planes_equals_the_two_passes(shape: tuple[int, ...], sigma: float) -> None:
    """Both Gaussian passes in one (``kernels.smooth_planes``, what ``camera._smooth`` runs for short kernels) give
    the two separate passes' values bit for bit."""
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    weights = camera._gaussian_weights(sigma, 3.0)
    two = np.empty_like(x)
    kernels.correlate_columns(x, weights.astype(np.float32), two)
    expected = np.empty_like(x)
    kernels.correlate_rows(two, weights.astype(np.float32), expected)
    assert np.array_equal(camera._smooth(x, sigma, 3.0, (1, 2)), expected)
    assert np.array_equal(camera._smooth(x[0], sigma, 3.0, (0, 1)), expected[0])


def test_composite_light_equals_the_numpy_compositing() -> None:
    rng = np.random.default_rng(9)
    person, background = (rng.random((3, 21, 30), dtype=np.float32) for _ in range(2))
    alpha = np.clip(rng.random((21, 30), dtype=np.float32) * 1.4 - 0.2, 0.0, 1.0)
    light = np.array([0.9, 1.0, 1.13], dtype=np.float32)
    for veil in (0.0, 0.07):
        expected = np.multiply(person, alpha)
        expected += np.multiply(background, 1.0 - alpha)
        if veil > 0:
            expected += np.float32(veil * 0.18)
        for c in range(3):
            expected[c] *= light[c]
        got = np.empty_like(person)
        kernels.composite_light(person, alpha, background, np.float32(veil * 0.18), veil > 0, light, got)
        assert np.array_equal(got, expected), veil
