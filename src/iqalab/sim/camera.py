"""A physically based camera: the seven TuningIQA parameters act on a :class:`~iqalab.sim.scenes.Scene`.

TuningIQA (FGLive-10K, Sec. "Image Collection") varies aperture, shutter speed, ISO, white balance, contrast,
saturation and sharpness around a reference setting; this module makes each of them act through physics and a
plain image signal processor (ISP), so that every image carries *known* degradations:

Optics, per layer (person / background), in reference pixels (a 512-px-wide image; scaled to the render size):
  * diffraction, Gaussian sigma ``0.045 N`` (Airy core grows with the f-number N);
  * wide-open aberrations, sigma ``0.5 (2 / N)^2``;
  * defocus, blur-circle diameter ``D / N`` with the scene's defocus ``D`` at f/1 (sigma = diameter / 3);
  * motion, a box of length ``speed x shutter`` along x and along y (subject motion + camera shake).
Sensor: photo-electrons ``e = radiance x 100 FWC L t / (K N^2)`` (reflected-light meter equation
  ``N^2 / t = L S / K``, K = 12.5, so a metered exposure puts the mean at 0.18 of full scale at every ISO);
  shot noise (variance e), read noise (``READ_E`` electrons), full-well clipping, analogue gain ``S / 100``,
  post-gain ADC noise; raw clipped at 1.
ISP: white-balance gains for the set colour temperature (cast = set vs. true illuminant); saturation in linear
  RGB; sRGB encoding; a symmetric contrast tone curve ``y = v^c / (v^c + (1 - v)^c)``; unsharp-mask sharpening
  of luma (sigma 1 px, amount = the sharpness parameter: halos when overdone); an optional face-enhancement
  step that denoises and hallucinates texture (SFIQA-Bench's fidelity loss); 8-bit quantisation; JPEG (PIL,
  4:2:0) at the set quality.

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
FULL_WELL = 4000.0  # electrons per (rendered) pixel at full scale, ISO 100
READ_E = 3.0        # read noise, electrons
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
    return {"sigma": sigma, "motion_x": float(mx), "motion_y": float(my), "effective": effective}


def _apply_blur(img: np.ndarray, blur: dict[str, float], scale: float) -> np.ndarray:
    sigma = blur["sigma"] * scale
    out = img
    if sigma > 0.15:
        out = gaussian_filter(out, sigma=(sigma, sigma) + (0,) * (img.ndim - 2), mode="reflect", truncate=3.0)
    for axis, key in ((1, "motion_x"), (0, "motion_y")):
        length = blur[key] * scale
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
    # sensor: electrons, shot + read noise, full well, gain, ADC noise
    electrons = colour * np.float32(100.0 * FULL_WELL * scene.luminance * params.shutter
                                    / (METER_K * params.aperture**2))
    gain = np.float32(params.iso / (100.0 * FULL_WELL))
    sd = np.sqrt(np.maximum(electrons, 0.0) * gain**2 + (READ_E * gain) ** 2 + ADC_NOISE**2)
    clean_raw = np.minimum(np.minimum(electrons, FULL_WELL) * gain, 1.0)
    noise = rng.standard_normal(electrons.shape, dtype=np.float32) * sd
    noisy_raw = np.clip(np.minimum(electrons + noise / gain, FULL_WELL) * gain, 0.0, 1.0)
    raw = np.stack([clean_raw, noisy_raw]).astype(np.float32)  # both versions through the same ISP
    # ISP
    rgb = np.clip(raw * wb_gains(params.wb), 0.0, 1.0)
    y_lin = luminance(rgb)[..., None]
    rgb = np.maximum(y_lin + params.saturation * (rgb - y_lin), 0.0)
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
                    clean_raw, detail[0])
    info["hallucination"] = hallucination
    return Capture(image=decoded, jpeg=jpeg, info=info)


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
             blur_person: dict[str, float], clean_raw: np.ndarray, detail: np.ndarray) -> dict[str, float]:
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
        "sensor_clipped": float((clean_raw >= 1.0).any(axis=-1).mean()),
        "contrast_rms": float(luma_clean.std()),
        "contrast_rms_face": float(np.sqrt(_region_mean((luma_clean - _region_mean(luma_clean, hard_face)) ** 2,
                                                        hard_face))) if hard_face is not None else float("nan"),
        "colourfulness": _colourfulness(clean8),
        "cast": colour_cast(scene.cct, params.wb, scene.ir_mix),
        "cast_mired": float(1e6 / params.wb - 1e6 / scene.cct),
        "halo": halo,
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
