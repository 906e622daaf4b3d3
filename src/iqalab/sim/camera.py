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
in place in reusable buffers; the ISP runs on the clean and then the noisy render (half the working set of both at
once, which stays in cache); the sensor, the ISP's elementwise chains, its short separable filters and the sRGB +
contrast encoding (one gather from an interleaved (value, slope) table, fused into the development pass) are
compiled loops (:mod:`iqalab.sim.kernels`, numba) that do the numpy formulation's float32 operations in its order,
so their images are bit for bit the same; kernels of 15+ taps (wide defocus, slow-shutter motion) are banded matrix
products through BLAS (:func:`_correlate_gemm`); chroma filtered as two planes; box masks are filtered separably;
per-scene constants cached (the light after optics for each aperture/shutter, the layers' colour planes, face mask,
enhancer texture; :func:`clear_scene_caches` forgets them). The sensor noise is the same draw from the same stream
as before, so a builder's generator advances exactly as it did. ``tests/test_sim_render.py`` keeps the
straightforward renderer and checks that both give the same images and measurements; ``benchmarks/bench_sim.py``
times both; ``tests/test_sim_kernels.py`` checks each compiled loop against its numpy formulation, bit for bit; the
measurements' means and standard deviations are numpy's pairwise float32 sums (:func:`iqalab.sim.kernels.mean_std`).
"""

from __future__ import annotations

import io
import logging
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from PIL import Image
from scipy.ndimage import correlate1d, gaussian_filter, gaussian_filter1d

from iqalab.data.cache import decode_image
from iqalab.data.schema import CAM_PARAMS
from iqalab.sim import kernels
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


GEMM_TAPS = 15  #: kernels at least this long are applied as banded matrix products (:func:`_correlate_gemm`)


def _reflect_pad(img: np.ndarray, r: int, axis: int, extra: int = 0) -> np.ndarray:
    """``img`` (float32) padded by ``r`` along ``axis`` with scipy's ``reflect`` borders (numpy's ``symmetric``:
    ``d c b a | a b c d``), plus ``extra`` zeros at the end; a scratch buffer."""
    n = img.shape[axis]
    lead = (slice(None),) * axis
    shape = img.shape[:axis] + (n + 2 * r + extra,) + img.shape[axis + 1:]
    padded = _scratch(f"padded{axis}", shape)
    padded[lead + (slice(r, r + n),)] = img
    if r > 0:
        padded[lead + (slice(0, r),)] = img[lead + (slice(r - 1, None, -1),)]
        padded[lead + (slice(n + r, n + 2 * r),)] = img[lead + (slice(n - 1, n - r - 1, -1),)]
    if extra:
        padded[lead + (slice(n + 2 * r, None),)] = 0.0
    return padded


@lru_cache(maxsize=64)
def _band_matrix(weights: tuple[float, ...], block: int) -> np.ndarray:
    """The (block + taps - 1) x block float32 matrix that correlates a window of a line with ``weights``."""
    taps = len(weights)
    band = np.zeros((block + taps - 1, block), dtype=np.float32)
    for j in range(block):
        band[j:j + taps, j] = weights
    band.setflags(write=False)
    return band


def _correlate_gemm(img: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """:func:`_correlate` for long kernels: each line is cut into blocks of 64 (128) outputs, and a block is the
    product of its window of ``block + taps - 1`` inputs with a band matrix (BLAS, float32): a few times faster
    than tap-by-tap sums once the kernel has 15+ taps (wide defocus, slow-shutter motion)."""
    taps = len(weights)
    r = taps // 2
    n = img.shape[axis]
    block = 32 if taps <= 32 else 64 if taps <= 96 else 128  # fewer wasted products vs. larger BLAS calls
    nb = -(-n // block)
    padded = _reflect_pad(img, r, axis, nb * block - n)
    band = _band_matrix(tuple(float(v) for v in weights), block)
    k = block + 2 * r
    lead, strides = img.shape[:axis], padded.strides
    if axis == img.ndim - 1:  # windows along the contiguous axis: (lead, blocks, window) @ band
        view = as_strided(padded, lead + (nb, k), strides[:axis] + (block * strides[axis], strides[axis]),
                          writeable=False)
        windows = _scratch("windows", lead + (nb, k))
        np.copyto(windows, view)
        out = np.matmul(windows, band)
        return out.reshape(lead + (nb * block,))[..., :n]
    tail = img.shape[axis + 1:]
    view = as_strided(padded, lead + (nb, k) + tail,
                      strides[:axis] + (block * strides[axis], strides[axis]) + strides[axis + 1:], writeable=False)
    windows = _scratch("windows", lead + (nb, k) + tail)
    np.copyto(windows, view)
    inner = int(np.prod(tail))
    out = np.matmul(band.T, windows.reshape(lead + (nb, k, inner)))  # (lead, blocks, block, rest)
    out = out.reshape(lead + (nb * block,) + tail)
    return out[(slice(None),) * axis + (slice(0, n),)]


def _correlate(img: np.ndarray, weights: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    """Correlate float32 ``img`` along ``axis`` with a symmetric odd-length kernel, scipy's ``reflect`` borders;
    into ``out`` (same shape, float32, not ``img``) if given, else a new array.

    Speed (issue #30): short kernels run as compiled tap sums (:func:`iqalab.sim.kernels.correlate_rows` along
    the last axis, :func:`~iqalab.sim.kernels.correlate_columns` along another), in float32: the result of
    :func:`scipy.ndimage.correlate1d` up to float32 rounding. Kernels of ``GEMM_TAPS`` or more taps go to
    :func:`_correlate_gemm`.
    """
    axis = axis % img.ndim
    r = len(weights) // 2
    n = img.shape[axis]
    if out is None:
        out = np.empty(img.shape, dtype=np.float32)
    if r == 0:
        return np.multiply(img, np.float32(weights[0]), out=out)
    if r >= n:
        return correlate1d(img, weights, axis=axis, mode="reflect", output=out)
    if len(weights) >= GEMM_TAPS:
        out[...] = _correlate_gemm(img, weights, axis)
        return out
    w32 = np.asarray(weights, dtype=np.float32)
    src = np.ascontiguousarray(img, dtype=np.float32)
    dst = out if out.flags.c_contiguous else _scratch("correlate_out", img.shape)
    if axis == img.ndim - 1:
        kernels.correlate_rows(src.reshape(1, -1, n), w32, dst.reshape(1, -1, n))
    else:
        lead, tail = int(np.prod(img.shape[:axis])), int(np.prod(img.shape[axis + 1:]))
        kernels.correlate_columns(src.reshape(lead, n, tail), w32, dst.reshape(lead, n, tail))
    if dst is not out:
        np.copyto(out, dst)
    return out


def _smooth(img: np.ndarray, sigma: float, truncate: float, axes: tuple[int, int],
            out: np.ndarray | None = None) -> np.ndarray:
    """A separable Gaussian over two spatial ``axes`` (scipy's kernel and borders; see :func:`_correlate`); into
    ``out`` if given (not ``img``), else a new array."""
    if sigma <= 1e-15:
        if out is None:
            return img.astype(np.float32, copy=True)
        np.copyto(out, img)
        return out
    weights = _gaussian_weights(sigma, truncate)
    r, shape = len(weights) // 2, img.shape
    if ([a % img.ndim for a in axes] == [img.ndim - 2, img.ndim - 1] and len(weights) < GEMM_TAPS
            and r < min(shape[-2:]) and img.dtype == np.float32 and img.flags.c_contiguous
            and (out is None or out.flags.c_contiguous)):
        # both passes of short kernels in one (kernels.smooth_planes): the same sums, no intermediate image
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        kernels.smooth_planes(img.reshape((-1,) + shape[-2:]), np.asarray(weights, dtype=np.float32),
                              out.reshape((-1,) + shape[-2:]))
        return out
    first = _correlate(img, weights, axes[0], _scratch("smooth_pass", img.shape))
    return _correlate(first, weights, axes[1], out)


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
    """An HxWxC image as C contiguous HxW planes (the renderer works plane by plane: no size-3 inner loops).

    Read-only; the last few are kept (keyed by the array object, which is held so its id cannot be reused): a
    scene's layers are converted once, not at every change of aperture or shutter.
    """
    def convert(img: np.ndarray) -> np.ndarray:
        planes = np.ascontiguousarray(np.moveaxis(img, -1, 0), dtype=np.float32)
        planes.setflags(write=False)
        return planes

    return _kept(_PLANAR_CACHE, img, convert)


def _kept(cache: OrderedDict[int, tuple[Any, Any]], source: np.ndarray, make: Callable[[np.ndarray], Any]) -> Any:
    """``make(source)``, kept in ``cache`` for the last few source arrays (keyed by the object, which the cache
    holds so its id cannot be reused; least recently used dropped first). Shared by the renderer's per-scene
    conversions (:func:`_planar`, :func:`_hard_mask`); renders from several threads share the caches."""
    with _LIGHT_LOCK:
        hit = cache.get(id(source))
        if hit is not None and hit[0] is source:
            cache.move_to_end(id(source))
            return hit[1]
    value = make(source)
    with _LIGHT_LOCK:
        cache[id(source)] = (source, value)
        while len(cache) > 2 * _LIGHT_CACHE_SIZE:
            cache.popitem(last=False)
    return value


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
    """The box's indicator, Gaussian-smoothed (``gaussian_filter(mask, soft)``); a box is the product of a row
    and a column indicator, so the smoothed mask is the outer product of the two smoothed indicators (the same
    values up to float32 rounding, without a 2-D filter)."""
    h, w = shape
    x0, y0, x1, y1 = box
    rows, cols = np.zeros(h), np.zeros(w)
    rows[int(y0 * h):max(int(y0 * h) + 1, int(np.ceil(y1 * h)))] = 1.0
    cols[int(x0 * w):max(int(x0 * w) + 1, int(np.ceil(x1 * w)))] = 1.0
    if soft > 0:
        rows, cols = gaussian_filter1d(rows, soft), gaussian_filter1d(cols, soft)
    out = np.multiply.outer(rows.astype(np.float32), cols.astype(np.float32))
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
    key = (name, shape, dtype)  # a hit costs one dictionary look-up (this runs about a thousand times a render)
    buf = buffers.get(key)
    if buf is None:
        shape = tuple(shape)
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
    if abs(contrast - 1.0) >= 1e-9:  # cells computed exactly by :func:`_encode`
        slope[:int(LUT_EXACT_LO * n)] = np.nan
        slope[int(np.ceil(LUT_EXACT_HI * n)):n] = np.nan
    value = np.append(value, value[-1:])
    slope = np.append(slope, np.float32(0.0))
    value.setflags(write=False)
    slope.setflags(write=False)
    return value, slope


@lru_cache(maxsize=64)
def _encoding_pairs(contrast: float) -> np.ndarray:
    """:func:`_encoding_table` interleaved, (entries, 2) float32 rows of (value, slope): one cache line per value
    fetches both (bit for bit the same numbers)."""
    value, slope = _encoding_table(contrast)
    pairs = np.ascontiguousarray(np.stack([value, slope], axis=1))
    pairs.setflags(write=False)
    return pairs


def _encode(rgb: np.ndarray, contrast: float, out: np.ndarray | None = None) -> np.ndarray:
    """``tone_curve(linear_to_srgb(rgb), contrast)``; ``rgb`` (float32) is clipped to [0, 1] in place.

    Speed (issue #30): the sRGB power and the contrast curve's three powers per value become one gather from
    :func:`_encoding_pairs` (value and slope of :func:`_encoding_table`; compiled,
    :func:`iqalab.sim.kernels.encode_table`) and an interpolation that agrees with the formula to about 1e-6
    (2e-4 of an 8-bit level). With a contrast curve, values in the cells near 0 and 1 where its slope is
    unbounded are computed exactly (the table marks those cells with a NaN slope); the sRGB curve alone needs no
    such cells (its interpolation error is below 1e-7 everywhere).

    Not on the renderer's path since :func:`iqalab.sim.kernels.recombine_encode` fuses this encoding into the
    development pass: kept as the plain two-step reference the tests hold the fused pass to (bit for bit).
    """
    enc = out if out is not None else _scratch("enc", rgb.shape)
    flat_in, flat_out = rgb.reshape(-1), enc.reshape(-1)  # both contiguous (views)
    if kernels.encode_table(flat_in, _encoding_pairs(float(contrast)), flat_out):  # cells left NaN: exactly
        _encode_exactly(flat_in, flat_out, contrast)
    return enc


def _encode_exactly(flat_in: np.ndarray, flat_out: np.ndarray, contrast: float,
                    edge: np.ndarray | None = None) -> None:
    """Where the table encoding left NaN in ``flat_out`` (the cells where the contrast curve's slope is
    unbounded; their positions ``edge`` if known), the formula's value for the (clipped) linear value in
    ``flat_in``."""
    if edge is None:
        edge = np.isnan(flat_out, out=_scratch("edge", flat_out.shape, np.bool_))
    exact = flat_in[edge]
    inside = exact > 0.0  # 0 is a grid point: its table value is exact
    exact[inside] = tone_curve(linear_to_srgb(exact[inside]), contrast)
    flat_out[edge] = exact


#: the last scenes' light after optics, keyed by scene identity + blur (see :func:`_scene_light`)
_LIGHT_CACHE: OrderedDict[tuple[Any, ...], tuple[Scene, np.ndarray, np.ndarray | None]] = OrderedDict()
_LIGHT_CACHE_SIZE = 8
_LIGHT_LOCK = threading.Lock()  # renders from several threads share the cache
#: the last scene layers as colour planes (see :func:`_planar`)
_PLANAR_CACHE: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
#: thresholded masks (see :func:`_hard_mask`), keyed by the mask object, which is held
_HARD_CACHE: OrderedDict[int, tuple[np.ndarray, tuple[np.ndarray, float]]] = OrderedDict()


def clear_scene_caches() -> None:
    """Forget every per-scene constant the renderer keeps (light after optics, colour planes, box masks, enhancer
    texture): the next render of any scene starts cold (benchmarks, tests)."""
    with _LIGHT_LOCK:
        _LIGHT_CACHE.clear()
        _PLANAR_CACHE.clear()
        _HARD_CACHE.clear()
    _box_mask_cached.cache_clear()
    _hallucinated_texture.cache_clear()


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
    light = illuminant_rgb(scene.cct)
    if scene.person is not None and scene.alpha is not None:
        person = _apply_blur(_planar(scene.person), blur_person, scale)
        alpha = np.clip(_apply_blur(scene.alpha, blur_person, scale), 0.0, 1.0)
        if person.dtype == alpha.dtype == radiance.dtype == np.float32 and alpha.ndim == 2:
            # person alpha + background (1 - alpha), veiling glare, illuminant: one pass (kernels.composite_light)
            colour = np.empty(person.shape, dtype=np.float32)
            gains = (np.ones(3, dtype=np.float32) if scene.ir_mix > 0  # the infrared mix is applied below
                     else np.array([np.float32(light[c]) for c in range(3)], dtype=np.float32))
            kernels.composite_light(np.ascontiguousarray(person), np.ascontiguousarray(alpha),
                                    np.ascontiguousarray(radiance), np.float32(scene.veil * 0.18), scene.veil > 0,
                                    gains, colour)
            return _keep_light(key, scene, colour, alpha, light)
        colour = np.multiply(person, alpha)  # person alpha + background (1 - alpha)
        colour += np.multiply(radiance, 1.0 - alpha, out=radiance if radiance.flags.writeable else None)
    else:
        colour = radiance if radiance.flags.writeable else radiance.copy()  # no blur: the cached planes
    if scene.veil > 0:
        colour += np.float32(scene.veil * 0.18)
    return _keep_light(key, scene, colour, alpha, light, lit=False)


def _keep_light(key: tuple[Any, ...], scene: Scene, colour: np.ndarray, alpha: np.ndarray | None,
                light: np.ndarray, lit: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The end of :func:`_scene_light`: the infrared mix (and, unless ``lit``, the illuminant's colour) applied
    to ``colour``, then the light kept in the cache, read-only."""
    if scene.ir_mix > 0:
        lum = _luma(colour, np.empty(colour.shape[1:], dtype=np.float32))
        for c in range(3):
            colour[c] *= np.float32(light[c] * (1 - scene.ir_mix))
            colour[c] += lum * np.float32(IR_TINT[c] * scene.ir_mix)
    elif not lit:
        for c in range(3):
            colour[c] *= np.float32(light[c])
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

    The clean and the noisy raw share one (2, 3, H, W) float32 buffer; the ISP (:func:`_develop`) then works on
    one render at a time, in place; per-scene constants (light after optics, colour planes, masks, enhancer
    texture) are cached; the sRGB + contrast encoding is a table look-up (:func:`_encode`).
    ``tests/test_sim_render.py`` keeps the straightforward implementation this replaced and checks that both give
    the same images and measurements.
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
    gain = np.float32(params.iso / (100.0 * float(full_well)))
    saturation_level = min(1.0, float(full_well * gain))
    raw = _scratch("raw", (2,) + colour.shape)  # (clean, noisy) x 3 planes x H x W
    # the noise is drawn pixel-interleaved (H x W x 3), as the sensor model has always drawn it: same stream;
    # one pass (kernels.expose); the scalars are the float32 values of the formulas above
    scalars = (np.float32(exposure), full_well, gain, gain**2, (read_e * gain) ** 2, np.float32(ADC_NOISE**2),
               np.float32(saturation_level))
    light = np.ascontiguousarray(colour, dtype=np.float32)
    state = kernels.pcg64_state(rng)
    if state is not None:  # numpy's default generator: drawn row by row inside the sensor loop, the same values
        clipped = kernels.expose_drawing(light, state, *scalars, raw)
        kernels.set_pcg64_state(rng, state)
    else:
        drawn = rng.standard_normal(dtype=np.float32, out=_scratch("drawn", (h, w, 3)))
        clipped = kernels.expose(light, drawn, *scalars, raw)
    sensor_clipped = float(clipped / (h * w))
    _highlight_knee(raw, saturation_level)
    # ISP, one render at a time (clean, then noisy: half-size working sets stay in cache): white balance, light
    # noise reduction (chroma smoothed; luma blended towards a 0.7 px Gaussian in proportion to the expected
    # mid-grey noise), saturation, sRGB encoding, tone curve, sharpening, face enhancer, 8-bit quantisation
    gains = wb_gains(params.wb)
    px = max(scale, 0.5)
    sd_mid = float(np.sqrt(0.18 * exposure * gain**2 + (read_e * gain) ** 2))
    nr = min(1.0, NR_STRENGTH * sd_mid / 0.02)
    face_mask = _box_mask((h, w), scene.face_box, soft=max(1.0, 0.01 * w))
    enhancer = None
    hallucination = 0.0
    if params.enhance > 0 and face_mask is not None:
        # a generative face enhancer: smooths away noise and paints plausible but invented texture
        strength = float(params.enhance)
        texture = _hallucinated_texture((h, w), zlib.crc32(scene.name.encode()))
        m = face_mask * strength
        invented = 0.07 * strength * texture
        enhancer = (m, invented)
        hallucination = float(255 * np.sqrt(np.mean((invented * face_mask) ** 2))
                              / max(float(face_mask.mean()), 1e-6) ** 0.5)
    quantised = _scratch("quantised", raw.shape)  # (clean, noisy) x 3 planes: the 8-bit values, as float32
    detail = _scratch("detail", (h, w))
    out = _scratch("out8", (2, h, w, 3), np.uint8)  # (clean, noisy) x H x W x 3, interleaved again
    for k in range(2):
        _develop(raw[k], gains, nr, px, params, enhancer, scale, quantised[k], out[k], detail if k == 0 else None)
    clean8, noisy8 = out[0], out[1]
    buf = io.BytesIO()
    Image.fromarray(noisy8).save(buf, format="JPEG", quality=int(round(params.jpeg_quality)), subsampling=2)
    jpeg = buf.getvalue()
    decoded = _decode_own_jpeg(jpeg)
    info = _measure(scene, params, quantised, noisy8, decoded, alpha, face_mask, blur_bg, blur_person,
                    sensor_clipped, detail)
    info.update(_neutral_reference(scene, np.moveaxis(colour, 0, -1), face_mask, clean8))
    info["hallucination"] = hallucination
    info["noise_reduction"] = float(nr)
    return Capture(image=decoded, jpeg=jpeg, info=info)


def _decode_own_jpeg(jpeg: bytes) -> np.ndarray:
    """The pixels of a JPEG this module wrote (RGB, no EXIF): what :func:`iqalab.data.cache.decode_image` gives
    for it, whose orientation, mode and transparency handling are identities here, without its copies."""
    with Image.open(io.BytesIO(jpeg)) as img:
        if img.mode != "RGB" or img.getexif():
            return decode_image(io.BytesIO(jpeg))
        return np.array(img, dtype=np.uint8)


def _develop(rgb: np.ndarray, gains: np.ndarray, nr: float, px: float, params: CameraParams,
             enhancer: tuple[np.ndarray, np.ndarray] | None, scale: float, out: np.ndarray, out8: np.ndarray,
             detail_out: np.ndarray | None) -> None:
    """The ISP of one render, in place on its raw ``rgb`` planes (3 x H x W float32): 8-bit values (as float32)
    into ``out`` and as uint8 into the interleaved ``out8`` (H x W x 3); the unsharp mask's detail layer (luma
    minus its 1 px Gaussian) into ``detail_out`` if given.

    The operations are those of the module docstring (white balance, chroma and luma noise reduction, saturation
    in linear RGB, sRGB + contrast encoding, sharpening of luma, face enhancer), in float32.
    """
    h, w = rgb.shape[1:]
    y_lin = _scratch("y_lin", (h, w))
    chroma = _scratch("chroma", (2, h, w))
    kernels.balance(rgb, gains, LUMA, y_lin, chroma)  # white balance, clip, luma, chroma (red and blue planes)
    # chroma NR: rgb - Y smoothed by a Gaussian of px (truncated at 2.5 sigma); chroma has no luminance
    # (LUMA . chroma = 0), so only red and blue are filtered and green follows from them
    chroma_rb = _smooth(chroma, px, 2.5, (1, 2), _scratch("chroma_smooth", chroma.shape))
    blend = nr > 0.02  # luma NR: blended towards a Gaussian-smoothed luma
    smooth = _smooth(y_lin, 0.7 * px, 2.5, (0, 1), _scratch("nr_smooth", y_lin.shape)) if blend else y_lin
    # saturation (chroma gain), back to RGB (green chroma from red and blue: chroma has no luminance), encoding
    saturation = params.saturation
    wide = isinstance(saturation, np.floating) and np.dtype(type(saturation)).itemsize > 4  # numpy's float64 op
    # then the encoding (:func:`_encode`) and its luma, in the same pass (kernels.recombine_encode)
    enc, luma, nan_at = out, _scratch("luma", rgb.shape[1:]), _scratch("nan_at", (rgb.size,), np.int64)
    nan_cells = kernels.recombine_encode(y_lin, smooth, float(nr), blend, chroma_rb, float(saturation), wide,
                                         -LUMA[0] / LUMA[1], LUMA[2] / LUMA[1], rgb,
                                         _encoding_pairs(float(params.contrast)), LUMA, enc, luma, nan_at)
    if nan_cells:  # exactly where the table cannot serve, then the luma of the exact values
        _encode_exactly(rgb.reshape(-1), enc.reshape(-1), params.contrast, nan_at[:nan_cells])
        _luma(enc, luma)
    detail = _smooth(luma, 1.0, 3.0, (0, 1), _scratch("detail_smooth", luma.shape))
    np.subtract(luma, detail, out=detail)
    if detail_out is not None:
        np.copyto(detail_out, detail)
    if enhancer is None:
        kernels.quantise(enc, detail, np.float32(params.sharpness), params.sharpness > 0, out8)
        return
    if params.sharpness > 0:
        sharpen = np.multiply(detail, np.float32(params.sharpness), out=luma)
        enc += sharpen
    m, invented = enhancer
    smooth = _smooth(enc, 1.5 * max(scale, 0.5), 3.0, (1, 2), _scratch("enhancer_smooth", enc.shape))
    smooth += invented
    smooth *= m
    enc *= 1 - m
    enc += smooth
    kernels.quantise(enc, detail, np.float32(0.0), False, out8)


def _luma(planes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``LUMA``-weighted sum of the three colour planes (axis 0 of a 3 x H x W float32 array), in one pass."""
    if out is None:
        out = np.empty(planes.shape[1:], dtype=np.float32)
    kernels.luma_of(planes, LUMA, out)
    return out


def _highlight_knee(raw: np.ndarray, saturation_level: float) -> np.ndarray:
    """Map the sensor's saturation level to white: identity when it is full scale (ISO >= 100); below ISO 100
    raw values above ``KNEE x`` the saturation level are stretched linearly up to 1 (a highlight roll-off).
    ``raw`` (float32) is changed in place and returned."""
    if saturation_level >= 1.0 - 1e-6:
        return raw
    knee = KNEE * saturation_level
    # ``where raw > knee: ((raw - knee) (1 - knee)) / (saturation - knee) + knee`` in one pass, with the Python
    # floats rounded to float32 as numpy rounds them against a float32 array (kernels.highlight_knee)
    kernels.highlight_knee(raw.reshape(-1), np.float32(knee), np.float32(1.0 - knee),
                           np.float32(saturation_level - knee))
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
    colourfulness_neutral = _colourfulness(neutral8)
    return {
        "colourfulness_neutral": colourfulness_neutral,
        "chroma_log_ratio": float(np.log((_colourfulness(render8) + 5.0) / (colourfulness_neutral + 5.0))),
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
    return _colourfulness_planes(r, g, b)


def _colourfulness_planes(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> float:
    """:func:`_colourfulness` of an image given as its float32 red, green and blue planes (8-bit values)."""
    rg, yb = _scratch("opp_rg", r.shape), _scratch("opp_yb", r.shape)
    kernels.opponents(r, g, b, rg, yb)  # r - g, 0.5 (r + g) - b in one pass
    # numpy's float32 mean and std of each plane (kernels.mean_std), combined with numpy's float32 scalar ops
    mean_rg, std_rg = (np.float32(v) for v in kernels.mean_std(rg.reshape(-1)))
    mean_yb, std_yb = (np.float32(v) for v in kernels.mean_std(yb.reshape(-1)))
    return float(np.hypot(std_rg, std_yb) + 0.3 * np.hypot(mean_rg, mean_yb))


def _hard_mask(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """``(mask > 0.5)`` as float32 and its sum: kept for the last few read-only masks (the person alpha after
    optics and the face mask are per-scene constants, so the shots of a scene threshold them once)."""
    def threshold(mask: np.ndarray) -> tuple[np.ndarray, float]:
        hard = (mask > 0.5).astype(np.float32)
        hard.setflags(write=False)
        return hard, float(hard.sum())

    if mask.flags.writeable:  # not a cached constant: computed each time
        return threshold(mask)
    return _kept(_HARD_CACHE, mask, threshold)


def _masked_mean(values: np.ndarray, mask: np.ndarray | None, weight: float | None = None) -> float:
    """:func:`_region_mean` as one float32 dot product (no temporary); ``weight`` is ``mask.sum()`` if known."""
    if mask is None:
        return float("nan")
    weight = float(mask.sum()) if weight is None else weight
    return float(np.dot(values.reshape(-1), mask.reshape(-1)) / weight) if weight > 0 else float("nan")


def _measure(scene: Scene, params: CameraParams, quantised: np.ndarray, noisy8: np.ndarray, decoded: np.ndarray,
             alpha: np.ndarray | None, face_mask: np.ndarray | None, blur_bg: dict[str, float],
             blur_person: dict[str, float], sensor_clipped: float, detail: np.ndarray) -> dict[str, float]:
    """The known degradations of one capture (8-bit levels for noise/halo, reference px for blur).

    ``quantised`` holds the clean and the noisy render's 8-bit values as float32 planes ((clean, noisy) x 3 x H x
    W, what ``clean8`` and ``noisy8`` hold), ``noisy8`` the noisy render as H x W x 3 uint8 (what was JPEG-coded);
    ``sensor_clipped`` is the share of pixels with a channel at the sensor's saturation level.
    """
    clean = quantised[0]
    # the clean luma in [0, 1] and the clipped-pixel flags, in one pass (kernels.luma_and_clipping)
    luma_clean = _scratch("m_luma", clean.shape[1:])
    clipped_hi, clipped_lo = _scratch("m_clipped_hi", luma_clean.shape), _scratch("m_clipped_lo", luma_clean.shape)
    kernels.luma_and_clipping(clean, LUMA, np.float32(255.0), np.float32(254), np.float32(4 / 255), luma_clean,
                              clipped_hi, clipped_lo)
    err2 = _scratch("m_err_luma", clean.shape[1:])  # squared luma noise, 8-bit levels
    kernels.squared_luma_difference(quantised[1], clean, LUMA, err2)
    person_mask, w_person = _hard_mask(alpha) if alpha is not None else (None, None)
    if person_mask is None and scene.person_box is not None:
        person_mask = _box_mask(scene.size, scene.person_box)
    hard_face, w_face = _hard_mask(face_mask) if face_mask is not None else (None, None)
    # halos: overshoot of the sharpened clean luma beyond the local 3x3 range of the unsharpened luma
    unsharpened = luma_clean
    if params.sharpness > 0:
        unsharpened = np.multiply(detail, np.float32(params.sharpness), out=_scratch("m_unsharp", detail.shape))
        np.subtract(luma_clean, unsharpened, out=unsharpened)
    over = _scratch("m_over", luma_clean.shape)
    kernels.halo_overshoot(luma_clean, unsharpened, over)
    # the overshoot's mean on the edges (|detail| > 2/255), and on the edges of the subject, where the viewer
    # looks (the person; the whole frame without one): background bokeh moves no edges (kernels.edge_means:
    # numpy's ``over[edges].mean()`` without the masks and the gathered copies)
    subject = np.ascontiguousarray(person_mask, dtype=np.float32) if person_mask is not None else over
    n_edges, mean_edges, n_subject, mean_subject = kernels.edge_means(
        over.reshape(-1), detail.reshape(-1), np.float32(2 / 255), subject.reshape(-1), person_mask is not None,
        _scratch("m_edge_values", (2, over.size + 1)))
    halo = float(255 * np.float32(mean_edges)) if n_edges else 0.0
    halo_subject = float(255 * np.float32(mean_subject)) if n_subject else halo
    blur_global = blur_bg["effective"]
    if alpha is not None:
        share = float(alpha.mean())
        blur_global = float(np.sqrt(share * blur_person["effective"] ** 2 + (1 - share) * blur_bg["effective"] ** 2))
    ratio = params.exposure_ratio(scene.luminance)
    jpeg_err = _scratch("m_jpeg", decoded.shape)
    kernels.byte_difference(decoded.reshape(-1), noisy8.reshape(-1), jpeg_err.reshape(-1))
    jpeg_se = float(np.dot(jpeg_err.reshape(-1), jpeg_err.reshape(-1)))
    if person_mask is not None and w_person is None:
        w_person = float(person_mask.sum())
    face_luma = _masked_mean(luma_clean, hard_face, w_face)
    mean_luma, contrast_rms = kernels.mean_std(luma_clean.reshape(-1))  # numpy's float32 mean and std
    info: dict[str, float] = {
        "exposure_ev": float(np.log2(max(ratio, 1e-9))),
        "electrons_mid": float(0.18 * 100.0 * FULL_WELL * scene.luminance * params.shutter
                               / (METER_K * params.aperture**2)),
        "noise_std": float(np.sqrt(err2.mean())),
        "noise_std_person": float(np.sqrt(_masked_mean(err2, person_mask, w_person))),
        "noise_std_face": float(np.sqrt(_masked_mean(err2, hard_face, w_face))),
        "blur": float(blur_global),
        "blur_person": float(blur_person["effective"]) if scene.person_box is not None else float("nan"),
        "blur_face": float(blur_person["effective"]) if scene.face_box is not None else float("nan"),
        "blur_background": float(blur_bg["effective"]),
        "motion_px": float(np.hypot(blur_person["motion_x"], blur_person["motion_y"])),
        "optics_sigma": float(blur_person["sigma"]),
        "mean_luma": float(mean_luma),
        "mean_luma_person": _masked_mean(luma_clean, person_mask, w_person),
        "mean_luma_face": face_luma,
        "clipped_hi": float(clipped_hi.mean()),
        "clipped_lo": float(clipped_lo.mean()),
        "clipped_face": _masked_mean(np.maximum(clipped_hi, clipped_lo, out=_scratch("m_clipped", clipped_lo.shape)),
                                     hard_face, w_face),
        "sensor_clipped": sensor_clipped,
        "contrast_rms": float(contrast_rms),
        "contrast_rms_face": float(np.sqrt(_masked_mean((luma_clean - face_luma) ** 2, hard_face, w_face)))
        if hard_face is not None else float("nan"),
        "colourfulness": _colourfulness_planes(clean[0], clean[1], clean[2]),
        "cast": colour_cast(scene.cct, params.wb, scene.ir_mix),
        "cast_mired": float(1e6 / params.wb - 1e6 / scene.cct),
        "halo": halo,
        "halo_subject": halo_subject,
        "jpeg_rmse": float(np.sqrt(jpeg_se / jpeg_err.size)),
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
