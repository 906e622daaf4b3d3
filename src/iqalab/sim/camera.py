"""A physically based camera: the seven TuningIQA parameters act on a :class:`~iqalab.sim.scenes.Scene`.

TuningIQA (FGLive-10K, Sec. "Image Collection") varies aperture, shutter speed, ISO, white balance, contrast,
saturation and sharpness around a reference setting; this module makes each of them act through physics and a
plain image signal processor (ISP), so that every image carries *known* degradations:

Optics, per layer (person / background), in reference pixels (a 512-px-wide image; scaled to the render size):
  * diffraction, Gaussian sigma ``0.045 N`` (Airy core grows with the f-number N);
  * wide-open aberrations, sigma ``0.5 (2 / N)^2``;
  * defocus, blur-circle diameter ``D / N`` with the scene's defocus ``D`` at f/1 (sigma = diameter / 3);
  * motion, a line of length ``speed x shutter`` along the direction of motion (subject motion + camera shake;
    a 1-D box when the motion is along one axis, a rasterised line kernel otherwise).
Sensor: photo-electrons ``e = radiance x 100 FWC L t / (K N^2)`` (reflected-light meter equation
  ``N^2 / t = L S / K``, K = 12.5, so a metered exposure puts the mean at 0.18 of full scale at every ISO);
  the full-well capacity is defined per unit image area (``FULL_WELL`` electrons per reference pixel, so a
  rendered pixel of a 256-px-wide image collects 4x as many and noise per unit area does not depend on the
  render size); shot noise (variance e), read noise (``READ_E`` electrons), full-well clipping, analogue gain
  ``S / 100``, post-gain ADC noise; raw clipped at the sensor's saturation level, which the ISP maps to white
  (below ISO 100 the saturation level sits under full scale; a highlight knee then rolls the top of the raw range
  up to white, so a clipped ISO 50 exposure still reaches white).
ISP: white-balance gains for the set colour temperature (cast = set vs. true illuminant); saturation in linear
  RGB; a light noise reduction (chroma smoothed, luma blended with a 0.7 px Gaussian in proportion to the
  expected noise, so ISO 1600 no longer leaves its full raw noise); sRGB encoding; a symmetric contrast tone
  curve ``y = v^c / (v^c + (1 - v)^c)``; unsharp-mask sharpening of luma (sigma 1 px, amount = the sharpness
  parameter: halos when overdone); an optional face-enhancement step that denoises and hallucinates texture
  (SFIQA-Bench's fidelity loss); 8-bit quantisation; JPEG (PIL, 4:2:0) at the set quality.

Every capture is rendered twice through the same ISP, once with and once without sensor noise, so the noise
after the ISP (including clipping, tone curve and sharpening) is *measured*, not guessed. ``info`` carries those
measurements and the optical facts; :mod:`iqalab.sim.observers` turns them into perceived quality.

Implementation (issue #30, speed only: the model above is unchanged): colour planes (C x H x W float32) worked on
in place in reusable buffers, separable filters whose row passes add shifted slices (:func:`_correlate`), chroma
filtered as two planes, a table for the contrast curves (:func:`_encode`), and per-scene constants cached (the light
after optics for each aperture/shutter, face mask, enhancer texture). The sensor noise is the same draw from the
same stream as before. ``tests/test_sim_render.py`` keeps the straightforward renderer and checks that both give
the same images and measurements; ``benchmarks/bench_sim.py`` times both.
"""

from __future__ import annotations

import io
import logging
import threading
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import correlate1d, gaussian_filter

from iqalab.data.cache import decode_image
from iqalab.data.schema import CAM_PARAMS
from iqalab.sim.scenes import LUMA, REFERENCE_WIDTH, Scene, illuminant_rgb, linear_to_srgb

log = logging.getLogger(__name__)

METER_K = 12.5      # reflected-light meter calibration constant (ISO 2720)
FULL_WELL = 1000.0  # electrons per *reference* pixel (512-px-wide image) at full scale, ISO 100 (per unit area)
KNEE = 0.7          # highlight roll-off starts at this fraction of the sensor's saturation level (ISO < 100)
NR_STRENGTH = 0.5   # light luma noise reduction: blend weight at a raw noise sd of 0.02 (saturates at 1)
READ_E = 1.5        # read noise, electrons per reference pixel (adds in quadrature over a rendered pixel)
ADC_NOISE = 0.0008  # post-gain noise, fraction of full scale
IR_TINT = np.array([1.12, 0.92, 1.10], dtype=np.float32)  # infrared-lit skin looks pale magenta on RGB sensors

#: allowed range of every parameter (validated in :class:`CameraParams`)
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "aperture": (1.0, 22.0), "shutter": (1 / 8000, 1.0), "iso": (25.0, 51200.0), "wb": (1500.0, 12000.0),
    "contrast": (0.3, 3.0), "saturation": (0.0, 3.0), "sharpness": (0.0, 5.0), "jpeg_quality": (5.0, 100.0),
    "enhance": (0.0, 1.0),
}


@dataclass(frozen=True)
class CameraParams:
    """The seven TuningIQA camera parameters, plus JPEG quality and a face-enhancement strength.

    ``aperture`` f-number N; ``shutter`` exposure time in seconds; ``iso`` sensitivity; ``wb`` white-balance
    colour temperature setting in kelvin; ``contrast`` tone-curve exponent (1 = neutral); ``saturation`` chroma
    gain (1 = neutral); ``sharpness`` unsharp-mask amount (0 = none); ``jpeg_quality`` 1-100; ``enhance`` 0-1
    strength of a hallucinating face enhancement (0 = off; surveillance cameras switch it on in poor light).
    """

    aperture: float = 2.8
    shutter: float = 1 / 60
    iso: float = 100.0
    wb: float = 5500.0
    contrast: float = 1.0
    saturation: float = 1.0
    sharpness: float = 0.5
    jpeg_quality: float = 90.0
    enhance: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = float(getattr(self, f.name))
            lo, hi = PARAM_RANGES[f.name]
            if not (np.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"CameraParams.{f.name}={value!r} outside the allowed range [{lo:g}, {hi:g}]")

    def replace(self, **changes: float) -> CameraParams:
        """A copy with some parameters changed (validated)."""
        values = asdict(self)
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"unknown camera parameter(s) {sorted(unknown)}; known: {sorted(values)}")
        values.update({k: float(v) for k, v in changes.items()})
        return CameraParams(**values)

    def cam_columns(self) -> dict[str, float]:
        """The ``cam_<name>`` columns of the canonical images table (the seven TuningIQA parameters)."""
        return {f"cam_{name}": float(getattr(self, name)) for name in CAM_PARAMS}

    def exposure_ratio(self, scene_luminance: float) -> float:
        """Exposure relative to the meter's: ``L t S / (K N^2)`` (1 = metered mid-grey)."""
        return float(scene_luminance * self.shutter * self.iso / (METER_K * self.aperture**2))


def auto_params(scene: Scene, aperture: float = 2.8, base_iso: float = 100.0, slowest: float = 1 / 30,
                fastest: float = 1 / 4000, max_iso: float = 12800.0, **others: float) -> CameraParams:
    """A program auto-exposure: shutter for ``base_iso`` within [fastest, slowest], then ISO up to ``max_iso``;
    white balance set to the true illuminant. This is the reference setting a tuning engineer starts from."""
    t = float(np.clip(METER_K * aperture**2 / (scene.luminance * base_iso), fastest, slowest))
    iso = float(np.clip(METER_K * aperture**2 / (scene.luminance * t), 50.0, max_iso))
    return CameraParams(aperture=aperture, shutter=t, iso=iso, wb=float(np.clip(scene.cct, 1500, 12000)),
                        **others)


# --------------------------------------------------------------------------------------------- optics
def _box_kernel(length: float) -> np.ndarray:
    """Normalised 1-D box of (fractional) ``length`` pixels, odd support, fractional end taps."""
    if length <= 1.0:
        return np.ones(1, dtype=np.float32)
    n = 2 * int(np.ceil((length - 1) / 2)) + 1
    k = np.ones(n, dtype=np.float32)
    k[0] = k[-1] = 1.0 - (n - length) / 2
    return k / k.sum()


def layer_blur(scene: Scene, params: CameraParams, person: bool) -> dict[str, float]:
    """Optical blur of one layer in reference px: Gaussian sigma (optics) and motion lengths (x, y)."""
    n = params.aperture
    diffraction = 0.045 * n
    aberration = 0.5 * (2.0 / n) ** 2
    focused = person or scene.person is None
    defocus = (scene.person_defocus if focused else scene.background_defocus) / n / 3.0
    sigma = float(np.sqrt(diffraction**2 + aberration**2 + defocus**2))
    vx, vy = scene.shake_speed
    if person or scene.person is None:
        vx, vy = vx + scene.subject_speed[0], vy + scene.subject_speed[1]
    mx, my = abs(vx) * params.shutter, abs(vy) * params.shutter
    # softness already in the pixels: the subject's, or the background's behind a person (issue #23)
    base = scene.base_blur if focused or scene.background_base_blur is None else scene.background_base_blur
    effective = float(np.sqrt(sigma**2 + base**2 + (mx**2 + my**2) / 12.0))
    # motion_dx: the sign of vx * vy (a line from top-left to bottom-right or from bottom-left to top-right)
    return {"sigma": sigma, "motion_x": float(mx), "motion_y": float(my), "effective": effective,
            "motion_dx": 1.0 if vx * vy >= 0 else -1.0}


def line_kernel(dx: float, dy: float, oversample: int = 8) -> np.ndarray:
    """Normalised 2-D kernel of a straight motion path from ``-(dx, dy)/2`` to ``+(dx, dy)/2`` (pixels).

    The path is sampled at ``oversample`` points per pixel of length and splatted bilinearly, so a diagonal
    motion blurs along a line (not over the box that two separable 1-D passes would cover).
    """
    length = float(np.hypot(dx, dy))
    n = max(2, int(np.ceil(length * oversample)))
    t = np.linspace(-0.5, 0.5, n)
    half = int(np.ceil(max(abs(dx), abs(dy)) / 2)) + 1
    xs, ys = t * dx + half, t * dy + half
    size = 2 * half + 1
    k = np.zeros((size, size), dtype=np.float64)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for ox, oy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(k, (np.clip(y0 + oy, 0, size - 1), np.clip(x0 + ox, 0, size - 1)), w)
    return (k / k.sum()).astype(np.float32)


def _gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """The sampled Gaussian of :func:`scipy.ndimage.gaussian_filter` (radius ``int(truncate sigma + 0.5)``)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    return phi / phi.sum()


def _correlate(img: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Correlate float32 ``img`` along ``axis`` with a symmetric odd-length kernel, scipy's ``reflect`` borders.

    Along an axis whose steps are whole rows (64+ contiguous elements, e.g. the rows of an image), shifted slices
    of a padded copy are added tap by tap in float32, two to three times faster than ndimage's line buffers there
    (the same result up to float32 rounding); along the other axes :func:`scipy.ndimage.correlate1d` is the faster
    and is used.
    """
    axis = axis % img.ndim
    r = len(weights) // 2
    n = img.shape[axis]
    run = int(np.prod(img.shape[axis + 1:]))  # contiguous elements per line step along ``axis``
    if run < 64 or r >= n:
        return correlate1d(img, weights, axis=axis, mode="reflect", output=np.float32)
    lead = (slice(None),) * axis
    shape = img.shape[:axis] + (n + 2 * r,) + img.shape[axis + 1:]
    padded = _scratch("padded", shape)  # scipy's reflect = numpy's symmetric padding: (d c b a | a b c d)
    padded[lead + (slice(r, r + n),)] = img
    if r > 0:  # r < n here
        padded[lead + (slice(0, r),)] = img[lead + (slice(r - 1, None, -1),)]
        padded[lead + (slice(n + r, n + 2 * r),)] = img[lead + (slice(n - 1, n - r - 1, -1),)]

    def shifted(i: int) -> np.ndarray:
        return padded[lead + (slice(i, i + n),)]

    out = np.multiply(shifted(r), np.float32(weights[r]), dtype=np.float32)
    tmp = _scratch("taps", out.shape)
    for i in range(r):
        np.add(shifted(i), shifted(2 * r - i), out=tmp)
        tmp *= np.float32(weights[i])
        out += tmp
    return out


def _smooth(img: np.ndarray, sigma: float, truncate: float, axes: tuple[int, int]) -> np.ndarray:
    """A separable Gaussian over two spatial ``axes`` (scipy's kernel and borders; see :func:`_correlate`)."""
    if sigma <= 1e-15:
        return img.astype(np.float32, copy=True)
    weights = _gaussian_weights(sigma, truncate)
    return _correlate(_correlate(img, weights, axes[0]), weights, axes[1])


def _apply_blur(img: np.ndarray, blur: dict[str, float], scale: float) -> np.ndarray:
    """The layer's optical blur over the last two (image) axes of a plane or a stack of planes: Gaussian
    (optics), then the motion path (a box along one axis, a line kernel otherwise)."""
    sigma = blur["sigma"] * scale
    out = img
    if sigma > 0.15:
        out = _smooth(out, sigma, 3.0, (-2, -1))
    mx, my = blur["motion_x"] * scale, blur["motion_y"] * scale
    if mx > 1.0 and my > 1.0:  # diagonal motion: a line kernel (FFT convolution per plane)
        from scipy.signal import fftconvolve

        k = line_kernel(mx * float(np.sign(blur.get("motion_dx", 1.0)) or 1.0), my)
        pad = k.shape[0] // 2
        padded = np.pad(out, ((0, 0),) * (img.ndim - 2) + ((pad, pad), (pad, pad)), mode="reflect")
        kernel = k.reshape((1,) * (img.ndim - 2) + k.shape)
        out = fftconvolve(padded, kernel, mode="valid", axes=(-2, -1))
    else:
        for axis, length in ((-1, mx), (-2, my)):
            if length > 1.0:  # the box is symmetric: convolution = correlation
                out = _correlate(np.asarray(out, dtype=np.float32), _box_kernel(length), axis)
    return np.asarray(out, dtype=np.float32)


def _planar(img: np.ndarray) -> np.ndarray:
    """An HxWxC image as C contiguous HxW planes (the renderer works plane by plane: no size-3 inner loops)."""
    return np.ascontiguousarray(np.moveaxis(img, -1, 0), dtype=np.float32)


# --------------------------------------------------------------------------------------------- ISP
def wb_gains(wb: float) -> np.ndarray:
    """White-balance gains that neutralise a ``wb``-kelvin illuminant (green gain 1)."""
    ill = illuminant_rgb(wb)
    return (ill[1] / ill).astype(np.float32)


def colour_cast(scene_cct: float, wb: float, ir_mix: float = 0.0) -> float:
    """Chromaticity error of a neutral grey after white balance: ``|| log(r/g), log(b/g) ||``."""
    neutral = illuminant_rgb(scene_cct) * (1 - ir_mix) + IR_TINT * ir_mix
    grey = neutral * wb_gains(wb)
    return float(np.hypot(np.log(grey[0] / grey[1]), np.log(grey[2] / grey[1])))


def tone_curve(v: np.ndarray, contrast: float) -> np.ndarray:
    """Symmetric contrast curve on encoded values: ``v^c / (v^c + (1-v)^c)`` (identity at c = 1)."""
    if abs(contrast - 1.0) < 1e-9:
        return v
    v = np.clip(v, 0.0, 1.0)
    a = np.power(v, contrast)
    return (a / np.maximum(a + np.power(1.0 - v, contrast), 1e-12)).astype(np.float32)


@lru_cache(maxsize=8)
def _hallucinated_texture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Band-pass texture standing in for details a generative face enhancer invents (unit RMS; cached per scene,
    read-only)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape).astype(np.float32)
    band = gaussian_filter(noise, 0.7) - gaussian_filter(noise, 2.0)
    out = band / max(float(band.std()), 1e-6)
    out.setflags(write=False)
    return out


def _box_mask(shape: tuple[int, int], box: tuple[float, float, float, float] | None,
              soft: float = 0.0) -> np.ndarray | None:
    """A (softened) box mask; cached per (shape, box, softness) and read-only: it is a per-scene constant."""
    if box is None:
        return None
    return _box_mask_cached(tuple(int(v) for v in shape), tuple(float(v) for v in box), float(soft))


@lru_cache(maxsize=32)
def _box_mask_cached(shape: tuple[int, ...], box: tuple[float, ...], soft: float) -> np.ndarray:
    h, w = shape
    x0, y0, x1, y1 = box
    mask = np.zeros(shape, dtype=np.float32)
    mask[int(y0 * h):max(int(y0 * h) + 1, int(np.ceil(y1 * h))), int(x0 * w):max(int(x0 * w) + 1,
                                                                             int(np.ceil(x1 * w)))] = 1.0
    out = gaussian_filter(mask, soft) if soft > 0 else mask
    out.setflags(write=False)
    return out


_SCRATCH = threading.local()
_SCRATCH_BYTES = 512 << 20  # the buffers of a few image sizes; beyond this the workspace starts afresh


def _scratch(name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """A reusable work buffer of this thread (uninitialised), one per name, shape and dtype.

    Speed (issue #30): fresh full-image temporaries cost page faults on every render (about a fifth of the
    renderer's time); the renderer's largest intermediates live here instead. A buffer never leaves
    :func:`capture` (images, JPEG bytes and measurements it returns are fresh objects).
    """
    buffers: dict[tuple[Any, ...], np.ndarray] | None = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    key = (name, tuple(shape), np.dtype(dtype).str)
    buf = buffers.get(key)
    if buf is None:
        if sum(b.nbytes for b in buffers.values()) > _SCRATCH_BYTES:
            buffers.clear()
        buf = buffers[key] = np.empty(shape, dtype=dtype)
    return buf


LUT_BITS = 16  #: the encoding table samples linear [0, 1] at 2^16 + 1 points, linearly interpolated
#: below / above these linear values a contrast curve is computed exactly (its slope is unbounded at 0 and 1)
LUT_EXACT_LO, LUT_EXACT_HI = 4e-3, 0.99


@lru_cache(maxsize=64)
def _encoding_table(contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """sRGB encoding followed by the contrast curve, sampled on a uniform grid of linear values: (value, slope).

    The table holds exactly what :func:`linear_to_srgb` and :func:`tone_curve` give at the grid points (one extra
    entry with slope 0 serves the value 1.0); between them linear interpolation stays within about 1e-6 of the
    curve (2e-4 of an 8-bit level) except where the contrast curve's slope is unbounded (``v^c`` near 0 and 1 for
    c < 2), which :func:`_encode` computes exactly.
    """
    n = 1 << LUT_BITS
    grid = np.arange(n + 1, dtype=np.float32) / np.float32(n)
    value = tone_curve(linear_to_srgb(grid), contrast).astype(np.float32)
    slope = np.append(np.diff(value), np.float32(0.0)).astype(np.float32)
    value = np.append(value, value[-1:])
    slope = np.append(slope, np.float32(0.0))
    value.setflags(write=False)
    slope.setflags(write=False)
    return value, slope


def _encode(rgb: np.ndarray, contrast: float) -> np.ndarray:
    """``tone_curve(linear_to_srgb(rgb), contrast)``; ``rgb`` (float32) is clipped to [0, 1] in place.

    Speed (issue #30): at neutral contrast the sRGB formula itself (bit-identical to the renderer before); with a
    contrast curve its three powers per value become two look-ups in :func:`_encoding_table` and an interpolation
    that agrees with the formula to about 1e-6 (2e-4 of an 8-bit level), values near 0 and 1 computed exactly.
    """
    np.clip(rgb, 0.0, 1.0, out=rgb)
    if abs(contrast - 1.0) < 1e-9:  # linear_to_srgb's operations, without computing both branches everywhere
        enc = np.power(rgb, np.float32(1 / 2.4), out=_scratch("enc", rgb.shape))
        enc *= 1.055
        enc -= 0.055
        low = rgb <= 0.0031308
        if low.any():
            enc[low] = 12.92 * rgb[low]
        return enc
    value, slope = _encoding_table(float(contrast))
    n = len(value) - 2
    t = np.multiply(rgb, np.float32(n), out=_scratch("t", rgb.shape))
    cell = np.floor(t, out=_scratch("cell", rgb.shape))
    t -= cell
    index = _scratch("index", rgb.shape, np.intp)
    np.copyto(index, cell, casting="unsafe")
    enc = value.take(index, out=_scratch("enc", rgb.shape))
    t *= slope.take(index, out=cell)
    enc += t
    edge = (index < int(LUT_EXACT_LO * n)) | (index >= int(np.ceil(LUT_EXACT_HI * n)))
    if edge.any():
        enc[edge] = tone_curve(linear_to_srgb(rgb[edge]), contrast)
    return enc


#: the last scenes' light after optics, keyed by scene identity + blur (see :func:`_scene_light`)
_LIGHT_CACHE: OrderedDict[tuple[Any, ...], tuple[Scene, np.ndarray, np.ndarray | None]] = OrderedDict()
_LIGHT_CACHE_SIZE = 8
_LIGHT_LOCK = threading.Lock()  # renders from several threads share the cache


def _scene_light(scene: Scene, blur_bg: dict[str, float], blur_person: dict[str, float],
                 scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Light on the sensor before exposure: the layers after their optics, composited, veiling glare, the
    illuminant's colour and infrared share; ``(colour as 3 x H x W planes, person alpha after optics or None)``.

    It depends on the scene and the blur (aperture and shutter) only, so the shots of one scene that share them
    (the reference and its ISO / white balance / tone / sharpening deviations) reuse it: the last few are kept,
    keyed by the scene object (held, so its id cannot be reused), its scalar fields and the blur. Read-only.
    """
    fields_key = (scene.luminance, scene.cct, scene.veil, scene.ir_mix, scene.base_blur, scene.person_defocus,
                  scene.background_defocus, tuple(scene.subject_speed), tuple(scene.shake_speed),
                  id(scene.background), id(scene.person), id(scene.alpha))
    key = (id(scene), fields_key, tuple(sorted(blur_bg.items())), tuple(sorted(blur_person.items())), scale)
    with _LIGHT_LOCK:
        hit = _LIGHT_CACHE.get(key)
        if hit is not None and hit[0] is scene:
            _LIGHT_CACHE.move_to_end(key)
            return hit[1], hit[2]
    radiance = _apply_blur(_planar(scene.background), blur_bg, scale)
    alpha = None
    if scene.person is not None and scene.alpha is not None:
        person = _apply_blur(_planar(scene.person), blur_person, scale)
        alpha = np.clip(_apply_blur(scene.alpha, blur_person, scale), 0.0, 1.0)
        radiance = person * alpha + radiance * (1.0 - alpha)
    if scene.veil > 0:
        radiance = radiance + scene.veil * 0.18
    light = illuminant_rgb(scene.cct)
    colour = np.empty_like(radiance)
    if scene.ir_mix > 0:
        lum = LUMA[0] * radiance[0] + LUMA[1] * radiance[1] + LUMA[2] * radiance[2]
        for c in range(3):
            colour[c] = radiance[c] * light[c] * (1 - scene.ir_mix) + lum * IR_TINT[c] * scene.ir_mix
    else:
        for c in range(3):
            np.multiply(radiance[c], light[c], out=colour[c])
    colour = np.asarray(colour, dtype=np.float32)
    for array in (colour, alpha):
        if array is not None:
            array.setflags(write=False)
    with _LIGHT_LOCK:
        _LIGHT_CACHE[key] = (scene, colour, alpha)
        while len(_LIGHT_CACHE) > _LIGHT_CACHE_SIZE:
            _LIGHT_CACHE.popitem(last=False)
    return colour, alpha


@dataclass
class Capture:
    """One shot: the decoded 8-bit image, the JPEG file bytes, and the known degradations."""

    image: np.ndarray
    jpeg: bytes
    info: dict[str, float]


def capture(scene: Scene, params: CameraParams, rng: np.random.Generator) -> Capture:
    """Photograph ``scene`` with ``params``: optics, sensor noise, ISP, JPEG. See the module docstring.

    The clean and the noisy render share one (2, H, W, 3) float32 buffer worked on in place; per-scene constants
    (light after optics, face mask, enhancer texture) are cached; the sRGB + contrast encoding is a table look-up
    (:func:`_encode`). ``tests/test_sim_render.py`` keeps the straightforward implementation this replaced and
    checks that both give the same images and measurements.
    """
    h, w = scene.size
    scale = w / REFERENCE_WIDTH
    blur_bg = layer_blur(scene, params, person=False)
    has_layer = scene.person is not None and scene.alpha is not None
    blur_person = layer_blur(scene, params, person=True) if has_layer else blur_bg
    colour, alpha = _scene_light(scene, blur_bg, blur_person, scale)
    # sensor: electrons, shot + read noise, full well, gain, ADC noise (full well and read noise per unit area);
    # the operations (and their order) are those of the module docstring's formulas, in float32
    pixel_area = (REFERENCE_WIDTH / w) ** 2  # reference pixels per rendered pixel
    full_well = np.float32(FULL_WELL * pixel_area)
    read_e = READ_E * float(np.sqrt(pixel_area))
    exposure = 100.0 * float(full_well) * scene.luminance * params.shutter / (METER_K * params.aperture**2)
    electrons = np.multiply(colour, np.float32(exposure), out=_scratch("electrons", colour.shape))
    gain = np.float32(params.iso / (100.0 * float(full_well)))
    sd = np.maximum(electrons, 0.0, out=_scratch("sd", colour.shape))
    sd *= gain**2
    sd += (read_e * gain) ** 2
    sd += ADC_NOISE**2
    np.sqrt(sd, out=sd)
    saturation_level = min(1.0, float(full_well * gain))
    raw = _scratch("raw", (2,) + electrons.shape)  # (clean, noisy) x 3 planes x H x W
    clean_raw, noisy_raw = raw[0], raw[1]
    np.minimum(electrons, full_well, out=clean_raw)
    clean_raw *= gain
    np.minimum(clean_raw, saturation_level, out=clean_raw)
    saturated = clean_raw >= saturation_level
    sensor_clipped = float((saturated[0] | saturated[1] | saturated[2]).mean())
    # the noise is drawn pixel-interleaved (H x W x 3), as the sensor model has always drawn it: same stream
    noise = _scratch("noise", colour.shape)
    drawn = rng.standard_normal(dtype=np.float32, out=_scratch("drawn", (h, w, 3)))
    np.copyto(noise, np.moveaxis(drawn, -1, 0))
    noise *= sd
    noise /= gain
    noise += electrons
    np.minimum(noise, full_well, out=noisy_raw)
    noisy_raw *= gain
    np.clip(noisy_raw, 0.0, saturation_level, out=noisy_raw)
    del sd, noise, electrons
    _highlight_knee(raw, saturation_level)
    # ISP: white balance, light noise reduction (chroma smoothed; luma blended towards a 0.7 px Gaussian in
    # proportion to the expected mid-grey noise), saturation, sRGB encoding, tone curve
    for c, g in enumerate(wb_gains(params.wb)):
        raw[:, c] *= g
    rgb = np.clip(raw, 0.0, 1.0, out=raw)
    y_lin = _luma(rgb)
    px = max(scale, 0.5)
    chroma_rb = _smooth_chroma(rgb, y_lin, px)  # (2 [r, b], 2 [clean, noisy], H, W)
    sd_mid = float(np.sqrt(0.18 * exposure * gain**2 + (read_e * gain) ** 2))
    nr = min(1.0, NR_STRENGTH * sd_mid / 0.02)
    if nr > 0.02:
        smooth = _smooth(y_lin, 0.7 * px, 2.5, (1, 2))
        smooth -= y_lin
        smooth *= nr
        y_lin += smooth
    # rgb = max(Y + saturation x chroma, 0); green chroma from red and blue (chroma has no luminance)
    chroma_rb *= params.saturation
    np.add(y_lin, chroma_rb[0], out=rgb[:, 0])
    np.add(y_lin, chroma_rb[1], out=rgb[:, 2])
    np.multiply(chroma_rb[0], -LUMA[0] / LUMA[1], out=rgb[:, 1])
    chroma_rb[1] *= LUMA[2] / LUMA[1]
    rgb[:, 1] -= chroma_rb[1]
    rgb[:, 1] += y_lin
    del chroma_rb
    rgb = np.maximum(rgb, 0.0, out=rgb)
    enc = _encode(rgb, params.contrast)
    luma = _luma(enc)
    detail = _smooth(luma, 1.0, 3.0, (1, 2))
    np.subtract(luma, detail, out=detail)
    if params.sharpness > 0:
        sharpen = detail * params.sharpness
        enc += sharpen[:, None]
    face_mask = _box_mask((h, w), scene.face_box, soft=max(1.0, 0.01 * w))
    hallucination = 0.0
    if params.enhance > 0 and face_mask is not None:
        # a generative face enhancer: smooths away noise and paints plausible but invented texture
        strength = float(params.enhance)
        smooth = _smooth(enc, 1.5 * max(scale, 0.5), 3.0, (2, 3))
        texture = _hallucinated_texture((h, w), zlib.crc32(scene.name.encode()))
        m = face_mask * strength
        invented = 0.07 * strength * texture
        enc = enc * (1 - m) + (smooth + invented) * m
        hallucination = float(255 * np.sqrt(np.mean((invented * face_mask) ** 2))
                              / max(float(face_mask.mean()), 1e-6) ** 0.5)
    np.clip(enc, 0.0, 1.0, out=enc)
    enc *= 255.0
    np.rint(enc, out=enc)
    out = _scratch("out8", (2, h, w, 3), np.uint8)  # (clean, noisy) x H x W x 3, interleaved again
    for c in range(3):
        np.copyto(out[..., c], enc[:, c], casting="unsafe")
    clean8, noisy8 = out[0], out[1]
    buf = io.BytesIO()
    Image.fromarray(noisy8).save(buf, format="JPEG", quality=int(round(params.jpeg_quality)), subsampling=2)
    jpeg = buf.getvalue()
    decoded = decode_image(io.BytesIO(jpeg))
    info = _measure(scene, params, clean8, noisy8, decoded, alpha, face_mask, blur_bg, blur_person,
                    sensor_clipped, detail[0])
    info.update(_neutral_reference(scene, np.moveaxis(colour, 0, -1), face_mask, clean8))
    info["hallucination"] = hallucination
    info["noise_reduction"] = float(nr)
    return Capture(image=decoded, jpeg=jpeg, info=info)


def _luma(planes: np.ndarray) -> np.ndarray:
    """``LUMA``-weighted sum of the colour planes (axis 1 of a (stack, 3, H, W) array)."""
    out = planes[:, 0] * LUMA[0]
    out += planes[:, 1] * LUMA[1]
    out += planes[:, 2] * LUMA[2]
    return out


def _smooth_chroma(rgb: np.ndarray, y_lin: np.ndarray, px: float) -> np.ndarray:
    """The chroma noise reduction: ``rgb - Y`` smoothed by a Gaussian of ``px`` (truncated at 2.5 sigma).

    Chroma has no luminance (``LUMA . chroma = 0``), so only the red and blue planes are filtered and returned,
    as (2 [r, b], stack, H, W); green follows from them, ``g = -(0.2126 r + 0.0722 b) / 0.7152`` (exact up to
    float32 rounding, the filter being linear).
    """
    chroma = np.empty((2,) + y_lin.shape, dtype=np.float32)
    np.subtract(rgb[:, 0], y_lin, out=chroma[0])
    np.subtract(rgb[:, 2], y_lin, out=chroma[1])
    weights = _gaussian_weights(px, 2.5)
    return _correlate(_correlate(chroma, weights, 2), weights, 3)


def _highlight_knee(raw: np.ndarray, saturation_level: float) -> np.ndarray:
    """Map the sensor's saturation level to white: identity when it is full scale (ISO >= 100); below ISO 100
    raw values above ``KNEE x`` the saturation level are stretched linearly up to 1 (a highlight roll-off).
    ``raw`` (float32) is changed in place and returned."""
    if saturation_level >= 1.0 - 1e-6:
        return raw
    knee = KNEE * saturation_level
    stretched = raw - knee
    stretched *= 1.0 - knee
    stretched /= saturation_level - knee
    stretched += knee
    np.copyto(raw, stretched, where=raw > knee)
    return raw


def _neutral_reference(scene: Scene, colour: np.ndarray, face_mask: np.ndarray | None,
                       clean8: np.ndarray) -> dict[str, float]:
    """Measurements of the scene's *neutral render* (metered exposure, white balance at the true illuminant,
    neutral saturation and contrast, no noise or sharpening) against the clean render, on a subsampled grid.

    The ground truth judges saturation and exposure from the image against this reference (issue #23): a
    grey scene is not desaturated by a low saturation setting, and a face's exposure target is its own
    neutral brightness (a fair face is meant to be brighter than the frame's mid-grey).
    """
    step = max(1, colour.shape[1] // 128)
    sub = colour[::step, ::step]
    neutral = np.clip(np.clip(sub, 0.0, 1.0) * wb_gains(scene.cct), 0.0, 1.0)
    neutral8 = np.rint(linear_to_srgb(neutral) * 255.0).astype(np.uint8)
    render8 = clean8[::step, ::step]
    luma_n = (neutral8.astype(np.float32) @ LUMA) / 255.0
    mask = face_mask[::step, ::step] > 0.5 if face_mask is not None else None
    return {
        "colourfulness_neutral": _colourfulness(neutral8),
        "chroma_log_ratio": float(np.log((_colourfulness(render8) + 5.0) / (_colourfulness(neutral8) + 5.0))),
        "mean_luma_neutral": float(luma_n.mean()),
        "mean_luma_face_neutral": float(luma_n[mask].mean()) if mask is not None and mask.any() else float("nan"),
    }


def render(scene: Scene, params: CameraParams, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Photograph ``scene``: ``(uint8 HxWx3 image after JPEG, info)``; ``info`` lists the known degradations."""
    shot = capture(scene, params, rng)
    return shot.image, shot.info


# --------------------------------------------------------------------------------------------- measurement
def _region_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    if mask is None:
        return float("nan")
    weight = float(mask.sum())
    return float((values * mask).sum() / weight) if weight > 0 else float("nan")


def _colourfulness(img8: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M of an 8-bit RGB image."""
    r, g, b = (img8[..., c].astype(np.float32) for c in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _range3(img: np.ndarray, op: np.ufunc) -> np.ndarray:
    """3 x 3 maximum (``op=np.maximum``) or minimum filter of a 2-D image with scipy's ``reflect`` borders (the
    values of :func:`scipy.ndimage.maximum_filter` / ``minimum_filter`` with size 3, separably)."""
    padded = np.pad(img, 1, mode="symmetric")
    rows = op(op(padded[:-2], padded[1:-1]), padded[2:])
    return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _measure(scene: Scene, params: CameraParams, clean8: np.ndarray, noisy8: np.ndarray, decoded: np.ndarray,
             alpha: np.ndarray | None, face_mask: np.ndarray | None, blur_bg: dict[str, float],
             blur_person: dict[str, float], sensor_clipped: float, detail: np.ndarray) -> dict[str, float]:
    """The known degradations of one capture (8-bit levels for noise/halo, reference px for blur);
    ``sensor_clipped`` is the share of pixels with a channel at the sensor's saturation level."""
    luma_clean = (clean8.astype(np.float32) @ LUMA) / 255.0
    err = (noisy8.astype(np.int16) - clean8).astype(np.float32) @ LUMA  # luma noise, 8-bit levels
    err2 = err**2
    person_mask = (alpha > 0.5).astype(np.float32) if alpha is not None else None
    if person_mask is None and scene.person_box is not None:
        person_mask = _box_mask(scene.size, scene.person_box)
    hard_face = (face_mask > 0.5).astype(np.float32) if face_mask is not None else None
    clipped_hi = (np.maximum(np.maximum(clean8[..., 0], clean8[..., 1]), clean8[..., 2]) >= 254).astype(np.float32)
    clipped_lo = (luma_clean <= 4 / 255).astype(np.float32)
    # halos: overshoot of the sharpened clean luma beyond the local 3x3 range of the unsharpened luma
    unsharpened = luma_clean - params.sharpness * detail if params.sharpness > 0 else luma_clean
    over = np.maximum(luma_clean - _range3(unsharpened, np.maximum), 0) + np.maximum(
        _range3(unsharpened, np.minimum) - luma_clean, 0)
    edges = np.abs(detail) > 2 / 255
    halo = float(255 * over[edges].mean()) if edges.any() else 0.0
    # halos where the viewer looks (the person; the whole frame without one): background bokeh moves no edges
    subject_edges = edges & (person_mask > 0.5) if person_mask is not None else edges
    halo_subject = float(255 * over[subject_edges].mean()) if subject_edges.any() else halo
    blur_global = blur_bg["effective"]
    if alpha is not None:
        share = float(alpha.mean())
        blur_global = float(np.sqrt(share * blur_person["effective"] ** 2 + (1 - share) * blur_bg["effective"] ** 2))
    ratio = params.exposure_ratio(scene.luminance)
    jpeg_err = (decoded.astype(np.int16) - noisy8).astype(np.float32)
    info: dict[str, float] = {
        "exposure_ev": float(np.log2(max(ratio, 1e-9))),
        "electrons_mid": float(0.18 * 100.0 * FULL_WELL * scene.luminance * params.shutter
                               / (METER_K * params.aperture**2)),
        "noise_std": float(np.sqrt(err2.mean())),
        "noise_std_person": float(np.sqrt(_region_mean(err2, person_mask))),
        "noise_std_face": float(np.sqrt(_region_mean(err2, hard_face))),
        "blur": float(blur_global),
        "blur_person": float(blur_person["effective"]) if scene.person_box is not None else float("nan"),
        "blur_face": float(blur_person["effective"]) if scene.face_box is not None else float("nan"),
        "blur_background": float(blur_bg["effective"]),
        "motion_px": float(np.hypot(blur_person["motion_x"], blur_person["motion_y"])),
        "optics_sigma": float(blur_person["sigma"]),
        "mean_luma": float(luma_clean.mean()),
        "mean_luma_person": _region_mean(luma_clean, person_mask),
        "mean_luma_face": _region_mean(luma_clean, hard_face),
        "clipped_hi": float(clipped_hi.mean()),
        "clipped_lo": float(clipped_lo.mean()),
        "clipped_face": _region_mean(np.maximum(clipped_hi, clipped_lo), hard_face),
        "sensor_clipped": sensor_clipped,
        "contrast_rms": float(luma_clean.std()),
        "contrast_rms_face": float(np.sqrt(_region_mean((luma_clean - _region_mean(luma_clean, hard_face)) ** 2,
                                                        hard_face))) if hard_face is not None else float("nan"),
        "colourfulness": _colourfulness(clean8),
        "cast": colour_cast(scene.cct, params.wb, scene.ir_mix),
        "cast_mired": float(1e6 / params.wb - 1e6 / scene.cct),
        "halo": halo,
        "halo_subject": halo_subject,
        "jpeg_rmse": float(np.sqrt(np.mean(jpeg_err**2))),
        "veil": float(scene.veil),
        "ir_mix": float(scene.ir_mix),
        "base_blur": float(scene.base_blur),
        "has_person": float(scene.person_box is not None),
        "has_face": float(scene.face_box is not None),
        "scene_luminance": float(scene.luminance),
        "scene_cct": float(scene.cct),
    }
    for key, value in asdict(params).items():
        info[f"param_{key}"] = float(value)
    return info


def info_keys() -> list[str]:
    """Names of the keys :func:`render` puts in ``info`` (for tables and documentation)."""
    from iqalab.sim.scenes import make_scene

    scene = make_scene(np.random.default_rng(0), size=32)
    return sorted(capture(scene, CameraParams(), np.random.default_rng(0)).info)


def sweep(scene: Scene, base: CameraParams, name: str, values: list[float] | np.ndarray,
          rng: np.random.Generator) -> list[tuple[np.ndarray, dict[str, float]]]:
    """Render ``scene`` with parameter ``name`` set to each of ``values`` (the rest from ``base``)."""
    return [render(scene, base.replace(**{name: float(v)}), rng) for v in values]


def describe(info: dict[str, Any]) -> str:
    """One line summarising a capture (for logs and figure titles)."""
    return (f"EV {info['exposure_ev']:+.1f}, noise {info['noise_std']:.1f}, blur {info['blur']:.1f}px, "
            f"clip {100 * info['clipped_hi']:.0f}%, halo {info['halo']:.1f}, cast {info['cast']:.2f}")
