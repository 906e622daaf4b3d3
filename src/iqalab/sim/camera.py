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
"""

from __future__ import annotations

import io
import logging
import zlib
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import convolve1d, gaussian_filter, maximum_filter, minimum_filter

from iqalab.data.cache import decode_image
from iqalab.data.schema import CAM_PARAMS
from iqalab.sim.scenes import LUMA, REFERENCE_WIDTH, Scene, illuminant_rgb, linear_to_srgb, luminance

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
    effective = float(np.sqrt(sigma**2 + scene.base_blur**2 + (mx**2 + my**2) / 12.0))
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


def _apply_blur(img: np.ndarray, blur: dict[str, float], scale: float) -> np.ndarray:
    sigma = blur["sigma"] * scale
    out = img
    if sigma > 0.15:
        out = gaussian_filter(out, sigma=(sigma, sigma) + (0,) * (img.ndim - 2), mode="reflect", truncate=3.0)
    mx, my = blur["motion_x"] * scale, blur["motion_y"] * scale
    if mx > 1.0 and my > 1.0:  # diagonal motion: a line kernel (FFT convolution per channel)
        from scipy.signal import fftconvolve

        k = line_kernel(mx * float(np.sign(blur.get("motion_dx", 1.0)) or 1.0), my)
        pad = k.shape[0] // 2
        padded = np.pad(out, ((pad, pad), (pad, pad)) + ((0, 0),) * (img.ndim - 2), mode="reflect")
        kernel = k if img.ndim == 2 else k[..., None]
        out = fftconvolve(padded, kernel, mode="valid", axes=(0, 1))
    else:
        for axis, length in ((1, mx), (0, my)):
            if length > 1.0:
                out = convolve1d(out, _box_kernel(length), axis=axis, mode="reflect")
    return np.asarray(out, dtype=np.float32)


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


def _hallucinated_texture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Band-pass texture standing in for details a generative face enhancer invents (unit RMS)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape).astype(np.float32)
    band = gaussian_filter(noise, 0.7) - gaussian_filter(noise, 2.0)
    return band / max(float(band.std()), 1e-6)


def _box_mask(shape: tuple[int, int], box: tuple[float, float, float, float] | None,
              soft: float = 0.0) -> np.ndarray | None:
    if box is None:
        return None
    h, w = shape
    x0, y0, x1, y1 = box
    mask = np.zeros(shape, dtype=np.float32)
    mask[int(y0 * h):max(int(y0 * h) + 1, int(np.ceil(y1 * h))), int(x0 * w):max(int(x0 * w) + 1,
                                                                             int(np.ceil(x1 * w)))] = 1.0
    return gaussian_filter(mask, soft) if soft > 0 else mask


@dataclass
class Capture:
    """One shot: the decoded 8-bit image, the JPEG file bytes, and the known degradations."""

    image: np.ndarray
    jpeg: bytes
    info: dict[str, float]


def capture(scene: Scene, params: CameraParams, rng: np.random.Generator) -> Capture:
    """Photograph ``scene`` with ``params``: optics, sensor noise, ISP, JPEG. See the module docstring."""
    h, w = scene.size
    scale = w / REFERENCE_WIDTH
    blur_bg = layer_blur(scene, params, person=False)
    radiance = _apply_blur(scene.background, blur_bg, scale)
    blur_person = blur_bg
    alpha = None
    if scene.person is not None and scene.alpha is not None:
        blur_person = layer_blur(scene, params, person=True)
        person = _apply_blur(scene.person, blur_person, scale)
        alpha = np.clip(_apply_blur(scene.alpha, blur_person, scale), 0.0, 1.0)
        radiance = person * alpha[..., None] + radiance * (1.0 - alpha[..., None])
    if scene.veil > 0:
        radiance = radiance + scene.veil * 0.18
    light = illuminant_rgb(scene.cct)
    if scene.ir_mix > 0:
        lum = luminance(radiance)[..., None]
        colour = radiance * light * (1 - scene.ir_mix) + lum * IR_TINT * scene.ir_mix
    else:
        colour = radiance * light
    # sensor: electrons, shot + read noise, full well, gain, ADC noise (full well and read noise per unit area)
    pixel_area = (REFERENCE_WIDTH / w) ** 2  # reference pixels per rendered pixel
    full_well = np.float32(FULL_WELL * pixel_area)
    read_e = READ_E * float(np.sqrt(pixel_area))
    exposure = 100.0 * float(full_well) * scene.luminance * params.shutter / (METER_K * params.aperture**2)
    electrons = colour * np.float32(exposure)
    gain = np.float32(params.iso / (100.0 * float(full_well)))
    sd = np.sqrt(np.maximum(electrons, 0.0) * gain**2 + (read_e * gain) ** 2 + ADC_NOISE**2)
    saturation_level = min(1.0, float(full_well * gain))
    clean_raw = np.minimum(np.minimum(electrons, full_well) * gain, saturation_level)
    noise = rng.standard_normal(electrons.shape, dtype=np.float32) * sd
    noisy_raw = np.clip(np.minimum(electrons + noise / gain, full_well) * gain, 0.0, saturation_level)
    raw = _highlight_knee(np.stack([clean_raw, noisy_raw]).astype(np.float32), saturation_level)
    # ISP: white balance, light noise reduction (chroma smoothed; luma blended towards a 0.7 px Gaussian in
    # proportion to the expected mid-grey noise), saturation, sRGB encoding, tone curve
    rgb = np.clip(raw * wb_gains(params.wb), 0.0, 1.0)
    y_lin = luminance(rgb)
    chroma = rgb - y_lin[..., None]
    px = max(scale, 0.5)
    chroma = gaussian_filter(chroma, sigma=(0, px, px, 0), truncate=2.5)
    sd_mid = float(np.sqrt(0.18 * exposure * gain**2 + (read_e * gain) ** 2))
    nr = min(1.0, NR_STRENGTH * sd_mid / 0.02)
    if nr > 0.02:
        y_lin = y_lin + nr * (gaussian_filter(y_lin, sigma=(0, 0.7 * px, 0.7 * px), truncate=2.5) - y_lin)
    rgb = np.maximum(y_lin[..., None] + params.saturation * chroma, 0.0)
    enc = tone_curve(linear_to_srgb(rgb), params.contrast)
    luma = enc @ LUMA
    detail = luma - gaussian_filter(luma, sigma=(0, 1.0, 1.0), truncate=3.0)
    if params.sharpness > 0:
        enc = enc + params.sharpness * detail[..., None]
    face_mask = _box_mask((h, w), scene.face_box, soft=max(1.0, 0.01 * w))
    hallucination = 0.0
    if params.enhance > 0 and face_mask is not None:
        # a generative face enhancer: smooths away noise and paints plausible but invented texture
        strength = float(params.enhance)
        smooth = gaussian_filter(enc, sigma=(0, 1.5 * max(scale, 0.5), 1.5 * max(scale, 0.5), 0), truncate=3.0)
        texture = _hallucinated_texture((h, w), zlib.crc32(scene.name.encode()))
        m = (face_mask * strength)[..., None]
        invented = 0.07 * strength * texture[..., None]
        enc = enc * (1 - m) + (smooth + invented) * m
        hallucination = float(255 * np.sqrt(np.mean((invented * face_mask[..., None]) ** 2))
                              / max(float(face_mask.mean()), 1e-6) ** 0.5)
    out = np.clip(np.rint(np.clip(enc, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    clean8, noisy8 = out[0], out[1]
    buf = io.BytesIO()
    Image.fromarray(noisy8).save(buf, format="JPEG", quality=int(round(params.jpeg_quality)), subsampling=2)
    jpeg = buf.getvalue()
    decoded = decode_image(io.BytesIO(jpeg))
    info = _measure(scene, params, clean8, noisy8, decoded, alpha, face_mask, blur_bg, blur_person,
                    clean_raw >= saturation_level, detail[0])
    info.update(_neutral_reference(scene, colour, face_mask, clean8))
    info["hallucination"] = hallucination
    info["noise_reduction"] = float(nr)
    return Capture(image=decoded, jpeg=jpeg, info=info)


def _highlight_knee(raw: np.ndarray, saturation_level: float) -> np.ndarray:
    """Map the sensor's saturation level to white: identity when it is full scale (ISO >= 100); below ISO 100
    raw values above ``KNEE x`` the saturation level are stretched linearly up to 1 (a highlight roll-off)."""
    if saturation_level >= 1.0 - 1e-6:
        return raw
    knee = KNEE * saturation_level
    return np.where(raw <= knee, raw, knee + (raw - knee) * (1.0 - knee) / (saturation_level - knee)).astype(
        np.float32)


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


def _measure(scene: Scene, params: CameraParams, clean8: np.ndarray, noisy8: np.ndarray, decoded: np.ndarray,
             alpha: np.ndarray | None, face_mask: np.ndarray | None, blur_bg: dict[str, float],
             blur_person: dict[str, float], saturated: np.ndarray, detail: np.ndarray) -> dict[str, float]:
    """The known degradations of one capture (8-bit levels for noise/halo, reference px for blur)."""
    luma_clean = (clean8.astype(np.float32) @ LUMA) / 255.0
    err = (noisy8.astype(np.float32) - clean8.astype(np.float32)) @ LUMA  # luma noise, 8-bit levels
    err2 = err**2
    person_mask = (alpha > 0.5).astype(np.float32) if alpha is not None else None
    if person_mask is None and scene.person_box is not None:
        person_mask = _box_mask(scene.size, scene.person_box)
    hard_face = (face_mask > 0.5).astype(np.float32) if face_mask is not None else None
    clipped_hi = (clean8.max(axis=-1) >= 254).astype(np.float32)
    clipped_lo = (luma_clean <= 4 / 255).astype(np.float32)
    # halos: overshoot of the sharpened clean luma beyond the local 3x3 range of the unsharpened luma
    unsharpened = luma_clean - params.sharpness * detail if params.sharpness > 0 else luma_clean
    over = np.maximum(luma_clean - maximum_filter(unsharpened, 3), 0) + np.maximum(
        minimum_filter(unsharpened, 3) - luma_clean, 0)
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
    jpeg_err = decoded.astype(np.float32) - noisy8.astype(np.float32)
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
        "sensor_clipped": float(saturated.any(axis=-1).mean()),
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
