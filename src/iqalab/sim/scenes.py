"""Scenes for the camera simulator: real photographs that installed packages ship, made linear and varied.

A :class:`Scene` is what stands in front of the camera: a linear-light background layer, optionally a person
layer with a soft alpha matte (a head-and-shoulders cut-out of a shipped portrait composited onto a background),
the light (level in cd/m^2 and correlated colour temperature), and the physical facts the camera needs that a
photograph alone does not carry: how far each layer is out of the focal plane (defocus at f/1), how fast each
layer moves (subject motion, camera shake), veiling glare (car windows), infrared mixing (surveillance at night)
and the intrinsic softness of a low-resolution capture. Person and face boxes and the 5 facial landmarks are
known exactly because the composite is built from sprites whose face geometry is stored below.

Sources (all offline): scikit-image ``astronaut``, ``camera``, ``coffee``, ``chelsea``, ``cat``, ``rocket``,
``stereo_motorcycle``, ``brick``, ``grass``, ``gravel``, ``clock``, ``coins`` and the 100 faces of ``lfw_subset``
(Labeled Faces in the Wild, 25 px grey crops); matplotlib's ``grace_hopper``; scikit-learn's ``china`` and
``flower``. Face boxes and landmarks of the person sources were found once with MTCNN (facenet-pytorch 2.6.0,
probability > 0.999; the LFW tiles' in :mod:`iqalab.sim.lfw_geometry`) and are stored as constants; person boxes
were read off the images by hand.

Controlled variation (issue #23): every face is given one of six skin-tone levels, the categories of the
individual typology angle ITA = atan((L* - 50) / b*) (Chardon et al. 1991; Del Bino et al. 2006), by moving the
skin's CIELAB colour (a perceptually uniform space; shading and texture are kept as offsets in L*, a*, b*) to the
level's centre (:func:`toned_photo`); composited people get a head roll of up to 12 degrees either way and a mirror
image (pose), and fill 45-100 % of the frame height (scale). Nothing is upsampled silently: a source shown larger
than it was captured records its softness as ``base_blur`` (the subject) or ``background_base_blur``.

Units: lengths that describe optics and motion are in *reference pixels*, i.e. pixels of a 512-px-wide image,
and are scaled to the rendered size, so a scene blurs the same at 256 px and at 512 px relative to its width.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from iqalab.data.cache import decode_image
from iqalab.sim.lfw_geometry import LFW_FACES

log = logging.getLogger(__name__)

#: rendered widths are expressed relative to this width (see module docstring)
REFERENCE_WIDTH = 512
#: lighting conditions (PIQ23-like); each has a luminance range (cd/m^2) and a CCT range (K)
CONDITIONS: dict[str, dict[str, tuple[float, float]]] = {
    "outdoor": {"luminance": (1500.0, 5000.0), "cct": (5000.0, 7000.0)},
    "indoor": {"luminance": (80.0, 400.0), "cct": (3000.0, 4800.0)},
    "lowlight": {"luminance": (8.0, 40.0), "cct": (2700.0, 4000.0)},
    "night": {"luminance": (1.0, 6.0), "cct": (2100.0, 3200.0)},
}
BACKGROUNDS = ("coffee", "chelsea", "cat", "rocket", "motorcycle", "china", "flower", "brick", "grass", "gravel",
               "clock", "coins")


@dataclass(frozen=True)
class PersonSource:
    """A shipped photograph of a person: face box / landmarks (MTCNN, source pixels) and person box (by hand)."""

    name: str
    face_box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]  # left eye, right eye, nose, mouth left, mouth right
    person_box: tuple[float, float, float, float]
    photo: str = ""  # the photograph's loader name when it differs from ``name``

    @property
    def source(self) -> str:
        return self.photo or self.name


PERSONS: dict[str, PersonSource] = {
    "astronaut": PersonSource("astronaut", (181.1, 62.2, 267.7, 172.1),
                              ((205.0, 101.7), (246.8, 103.7), (224.7, 129.0), (201.7, 139.2), (245.3, 141.9)),
                              (15.0, 12.0, 365.0, 512.0)),
    "grace_hopper": PersonSource("grace_hopper", (174.4, 119.6, 355.6, 340.5),
                                 ((221.7, 192.2), (309.8, 186.1), (269.4, 239.2), (232.7, 279.6), (306.6, 275.9)),
                                 (10.0, 20.0, 512.0, 600.0)),
    "camera": PersonSource("camera", (199.2, 118.9, 254.3, 192.3),
                           ((234.4, 147.2), (252.3, 149.6), (250.7, 169.1), (231.2, 180.4), (243.5, 181.9)),
                           (0.0, 62.0, 340.0, 512.0)),
}
#: LFW faces (scikit-image ``lfw_subset``, tiles 0-99): one identity each, for the surveillance face crops
LFW_IDENTITIES = tuple(f"lfw_{i:03d}" for i in sorted(LFW_FACES))
#: every face source of :func:`face_crop_scene`: the three photographs and the LFW tiles
FACE_SOURCES = (*PERSONS, *LFW_IDENTITIES)
#: skin-tone levels: ITA categories (degrees: very light > 55, light 41-55, intermediate 28-41, tan 10-28, brown
#: -30-10, dark < -30) and the CIELAB centre (L*, a*, b*) each face is moved to; L* = 50 + b* tan(ITA) at the
#: category's centre angle (62, 48, 34, 19, -10, -45 degrees), a* and b* typical of measured skin
SKIN_TONES: dict[str, tuple[float, float, float]] = {
    "very_light": (50.0 + 14.0 * float(np.tan(np.radians(62.0))), 9.0, 14.0),
    "light": (50.0 + 15.0 * float(np.tan(np.radians(48.0))), 10.0, 15.0),
    "intermediate": (50.0 + 17.0 * float(np.tan(np.radians(34.0))), 11.0, 17.0),
    "tan": (50.0 + 18.0 * float(np.tan(np.radians(19.0))), 12.0, 18.0),
    "brown": (50.0 + 16.0 * float(np.tan(np.radians(-10.0))), 11.0, 16.0),
    "dark": (50.0 + 12.0 * float(np.tan(np.radians(-45.0))), 9.0, 12.0),
}
ITA_BOUNDS: dict[str, tuple[float, float]] = {
    "very_light": (55.0, 90.0), "light": (41.0, 55.0), "intermediate": (28.0, 41.0), "tan": (10.0, 28.0),
    "brown": (-30.0, 10.0), "dark": (-90.0, -30.0),
}
#: largest head roll (degrees) of a composited person, either way
MAX_ROLL = 12.0
#: a surveillance face crop's capture resolution, as a share of the saved crop's size (uniform in this range; an
#: LFW tile is at most its 25 px): small faces are soft (fitted, :mod:`iqalab.sim.calibration`)
FACE_CAPTURE = (0.12, 0.6)
#: share of surveillance face crops showing an LFW face (the rest one of the three photographs). LFW tiles are 25 px,
#: so their crops are soft; fitted so that face_sim's sharpness stays SFIQA-Bench's lowest dimension at a mean
#: within tolerance (0.5 gave 2.53 < 2.66; 0.25 gives 2.71; README's calibration)
LFW_SHARE = 0.25

#: sources usable as composited head-and-shoulders sprites. (A former ``rider`` source, a box on the
#: ``stereo_motorcycle`` photo, was dropped: it lay on the front wheel and MTCNN finds no face there, issue #23;
#: ``tests/test_sim_scenes.py`` runs MTCNN over every source and every scene builder.)
SPRITES = ("astronaut", "grace_hopper", "camera")


# --------------------------------------------------------------------------------------------- colour helpers
def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding (values in [0, 1])."""
    v = np.asarray(v, dtype=np.float32)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding; input clipped to [0, 1]."""
    v = np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(v, 1 / 2.4) - 0.055).astype(np.float32)


LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec. 709 / sRGB luminance weights


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance of linear sRGB (or luma of encoded values) over the last axis."""
    return rgb @ LUMA


def illuminant_rgb(cct: float) -> np.ndarray:
    """Relative RGB of a black body at ``cct`` kelvin, sampled at 610/550/465 nm, unit luminance.

    Planck's law at one wavelength per channel is a coarse stand-in for camera spectral sensitivities; it gives
    the right direction and roughly the right size of a white-balance cast (3000 K light under a 6500 K setting
    looks orange).
    """
    hc_k = 1.4388e-2  # second radiation constant, m K
    lam = np.array([610e-9, 550e-9, 465e-9])
    radiance = lam**-5.0 / np.expm1(hc_k / (lam * float(cct)))
    rgb = radiance / radiance[1]
    return (rgb / float(rgb @ LUMA)).astype(np.float32)


# --------------------------------------------------------------------------------------------- sources
def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """A shipped photograph as linear-light float32 RGB (read once per process, then cached read-only)."""
    import skimage.data

    if name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
            img = decode_image(fh)
    elif name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(f"{name}.jpg")
    elif name == "motorcycle":
        img = skimage.data.stereo_motorcycle()[0]
    elif name.startswith("lfw_"):
        img = np.rint(skimage.data.lfw_subset()[int(name[4:])] * 255.0).astype(np.uint8)
    else:
        img = getattr(skimage.data, name)()
    lin = srgb_to_linear(_to_rgb(img).astype(np.float32) / 255.0)
    lin.setflags(write=False)
    return lin


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a float32 HxW or HxWxC array (antialiased bilinear via PIL's float mode)."""
    if img.shape[1] == width and img.shape[0] == height:
        return img.astype(np.float32, copy=True)
    if img.ndim == 2:
        return np.asarray(Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F")
                          .resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None))
    return np.stack([resize(img[..., c], width, height) for c in range(img.shape[-1])], axis=-1)


def face_geometry(name: str) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """(face box, 5 landmarks) of face source ``name`` (a :data:`PERSONS` key or an ``lfw_NNN`` tile), in the
    source photograph's pixels."""
    if name.startswith("lfw_"):
        box, landmarks, _ = LFW_FACES[int(name[4:])]
        return box, np.asarray(landmarks, dtype=np.float64)
    src = PERSONS[name]
    return src.face_box, np.asarray(src.landmarks, dtype=np.float64)


def ita(lab: np.ndarray) -> np.ndarray:
    """Individual typology angle (degrees) of CIELAB colours ``[..., 3]``: atan((L* - 50) / b*)."""
    return np.degrees(np.arctan2(lab[..., 0] - 50.0, lab[..., 2]))


def skin_weight(lab: np.ndarray, face_box: tuple[float, float, float, float],
                landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft skin mask of a face (0-1, HxW) and the skin's median CIELAB colour.

    Spatial prior: an ellipse over the face box plus the neck below it; colour term: closeness in CIELAB to the
    median of the cheeks-to-mouth region between the landmarks (L* within about 18 units, and a*, b* within about
    10 when the photograph has colour at all). Hair, eyes' surroundings, clothes and background weigh little.
    """
    from scipy.ndimage import gaussian_filter

    h, w = lab.shape[:2]
    fx0, fy0, fx1, fy1 = face_box
    fw, fh = fx1 - fx0, fy1 - fy0
    cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    face = ((xx - cx) / (0.55 * fw)) ** 2 + ((yy - (cy + 0.05 * fh)) / (0.62 * fh)) ** 2 <= 1.0
    neck = (np.abs(xx - cx) <= 0.3 * fw) & (yy >= cy + 0.3 * fh) & (yy <= cy + 1.0 * fh)
    prior = gaussian_filter((face | neck).astype(np.float32), sigma=max(0.6, 0.04 * fw))
    lm = np.asarray(landmarks, dtype=np.float64)
    sx0, sx1 = int(np.floor(lm[:, 0].min())), int(np.ceil(lm[:, 0].max())) + 1
    sy0, sy1 = int(np.floor(lm[:2, 1].min())), int(np.ceil(lm[3:, 1].max())) + 1
    region = (slice(max(sy0, 0), min(sy1, h)), slice(max(sx0, 0), min(sx1, w)))
    sample = lab[region].reshape(-1, 3)
    median = np.median(sample, axis=0) if len(sample) else np.median(lab.reshape(-1, 3), axis=0)
    close = np.exp(-0.5 * ((lab[..., 0] - median[0]) / 18.0) ** 2)
    if float(np.hypot(median[1], median[2])) > 3.0:  # a colour photograph: the skin's hue counts too
        close = close * np.exp(-0.5 * ((lab[..., 1] - median[1]) ** 2 + (lab[..., 2] - median[2]) ** 2) / 10.0**2)
    weight = prior * close
    # full weight on typical skin: scaled so that the sample region's median weight is 1
    typical = float(np.median(weight[region])) if weight[region].size else 1.0
    return np.clip(weight / max(typical, 1e-3), 0.0, 1.0).astype(np.float32), median


@functools.cache
def toned_photo(name: str, tone: str | None) -> np.ndarray:
    """Face source ``name`` (a :data:`PERSONS` key or ``lfw_NNN``) as linear RGB with its skin moved to skin-tone
    level ``tone`` (:data:`SKIN_TONES`; ``None``: as photographed), read-only and cached.

    In CIELAB (D65), each skin pixel moves by ``weight x (centre - skin median)``, so shading and texture stay as
    they were (offsets in a perceptually uniform space) while the skin's mean colour becomes the level's; grey
    photographs (the cameraman, the LFW tiles) get the level's hue on their skin only.
    """
    import warnings

    from skimage.color import lab2rgb, rgb2lab

    photo = load_photo(PERSONS[name].source if name in PERSONS else name)
    if tone is None:
        return photo
    if tone not in SKIN_TONES:
        raise ValueError(f"unknown skin tone {tone!r}; choose from {list(SKIN_TONES)}")
    box, landmarks = face_geometry(name)
    h, w = photo.shape[:2]
    fw, fh = box[2] - box[0], box[3] - box[1]
    x0, y0 = int(max(0, box[0] - 0.8 * fw)), int(max(0, box[1] - 0.8 * fh))
    x1, y1 = int(min(w, box[2] + 0.8 * fw)), int(min(h, box[3] + 1.2 * fh))
    region = photo[y0:y1, x0:x1]
    lab = rgb2lab(linear_to_srgb(region))
    shift_box = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    weight, median = skin_weight(lab, shift_box, landmarks - [x0, y0])
    lab = lab + weight[..., None] * (np.asarray(SKIN_TONES[tone]) - median)[None, None, :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # out-of-gamut colours are clipped by lab2rgb (it warns about them)
        srgb = np.clip(lab2rgb(lab), 0.0, 1.0)
    out = photo.copy()
    out[y0:y1, x0:x1] = srgb_to_linear(srgb)
    out.setflags(write=False)
    return out


@functools.cache
def sprite(name: str, tone: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Head-and-shoulders cut-out of a person source: (linear RGB crop of the person box, soft alpha matte), with
    the skin at level ``tone`` (:func:`toned_photo`).

    The matte is a head ellipse around the MTCNN face box (extended upwards for hair/caps), a neck, and
    shoulders widening downwards to the person box: crude, but its geometry is known exactly.
    """
    from scipy.ndimage import gaussian_filter

    src = PERSONS[name]
    photo = toned_photo(name, tone)
    x0, y0, x1, y1 = (int(round(v)) for v in src.person_box)
    crop = photo[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    fx0, fy0, fx1, fy1 = src.face_box
    fw, fh = fx1 - fx0, fy1 - fy0
    cx, cy = (fx0 + fx1) / 2 - x0, (fy0 + fy1) / 2 - y0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    head = ((xx - cx) / (0.68 * fw)) ** 2 + ((yy - (cy - 0.12 * fh)) / (0.8 * fh)) ** 2 <= 1.0
    neck_top = cy + 0.35 * fh
    half = np.where(yy < neck_top, 0.0, np.minimum(0.38 * fw + np.clip(yy - (cy + 0.6 * fh), 0, None) * 1.4,
                                                     1.9 * fw))
    body = (yy >= neck_top) & (np.abs(xx - cx) <= half)
    alpha = gaussian_filter((head | body).astype(np.float32), sigma=max(1.0, 0.02 * fw))
    return crop, alpha.astype(np.float32)


# --------------------------------------------------------------------------------------------- scenes
@dataclass
class Scene:
    """What stands in front of the camera (see the module docstring for units).

    ``background`` (and ``person``) hold linear relative radiance whose luminance averages 0.18 over the frame
    (a metered mid-grey); ``luminance`` scales it to cd/m^2. Boxes are normalised ``(x0, y0, x1, y1)``,
    landmarks normalised ``(x, y)`` rows: left eye, right eye, nose, mouth left, mouth right (image left first).
    """

    name: str
    background: np.ndarray
    luminance: float
    cct: float
    condition: str | None = None
    person: np.ndarray | None = None
    alpha: np.ndarray | None = None
    person_box: tuple[float, float, float, float] | None = None
    face_box: tuple[float, float, float, float] | None = None
    landmarks: np.ndarray | None = None
    person_defocus: float = 0.5      # blur-circle diameter at f/1 (reference px) of the focused subject
    background_defocus: float = 0.0  # same for the background layer (unused without a person: the camera then
    #                                  focuses on the background, which gets ``person_defocus``)
    subject_speed: tuple[float, float] = (0.0, 0.0)  # subject motion, reference px/s (x, y); without a person
    #                                                  layer it moves the whole frame (a face crop)
    shake_speed: tuple[float, float] = (0.0, 0.0)    # camera shake, reference px per second (moves everything)
    veil: float = 0.0        # veiling glare, fraction of the mean radiance added uniformly (windscreens)
    ir_mix: float = 0.0      # infrared illumination share (desaturates and tints; surveillance at night)
    base_blur: float = 0.0   # softness already in the pixels (Gaussian sigma, reference px), e.g. low resolution
    #                          or an upsampled source: of the subject (the person layer, else the frame)
    background_base_blur: float | None = None  # the same for the background layer behind a person (None: base_blur)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.background.shape[0]), int(self.background.shape[1])

    @property
    def has_person(self) -> bool:
        return self.person is not None

    def radiance(self) -> np.ndarray:
        """The sharp composite (no optics), for previews and tests."""
        if self.person is None or self.alpha is None:
            return self.background
        a = self.alpha[..., None]
        return self.person * a + self.background * (1 - a)


def upsampling_blur(magnification: float, size: int) -> float:
    """Softness (Gaussian sigma, reference px) that showing a source ``magnification`` x its captured size leaves
    in a ``size``-px-wide render: about 0.45 output px per unit of magnification above 1 (none when reduced)."""
    return float(0.45 * max(float(magnification) - 1.0, 0.0) * REFERENCE_WIDTH / size)


def _random_crop(photo: np.ndarray, size: int, rng: np.random.Generator, min_frac: float = 0.45,
                 max_frac: float = 1.0) -> tuple[np.ndarray, float]:
    """A random square crop resized to ``size`` and its magnification (output px per source px).

    The crop is never smaller than ``size`` source pixels where the photograph allows, so it is not upsampled;
    a photograph whose short side is below ``size`` is (magnification > 1, for the caller to record).
    """
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(min_frac, max_frac))
    side = max(side, min(size, h, w))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    return resize(photo[y:y + side, x:x + side], size, size), size / side


def _relight(img: np.ndarray, rng: np.random.Generator, strength: float = 0.6) -> np.ndarray:
    """Multiply by a smooth directional light ramp (side or top light), then normalise mean luminance to 0.18."""
    h, w = img.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5)) * 2
    gain = np.exp(rng.uniform(0, strength) * ramp).astype(np.float32)
    out = img * gain[..., None]
    return _normalise(out)


def _normalise(img: np.ndarray, target: float = 0.18) -> np.ndarray:
    mean = float(luminance(img).mean())
    return (img * (target / max(mean, 1e-6))).astype(np.float32)


def _tint_if_grey(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Give a greyscale photograph (brick, grass, ...) a plausible reflectance colour."""
    if np.allclose(img[..., 0], img[..., 1]) and np.allclose(img[..., 1], img[..., 2]):
        tint = rng.uniform(0.55, 1.0, size=3).astype(np.float32)
        img = img * tint / float(tint @ LUMA)
    return img


def _flip_landmarks(lm: np.ndarray) -> np.ndarray:
    out = lm.copy()
    out[:, 0] = 1.0 - out[:, 0]
    return out[[1, 0, 2, 4, 3]]


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(0, len(options)))])


def make_scene(rng: np.random.Generator, size: int = 256, condition: str | None = None, person: str | None = "any",
               name: str = "scene", background: str | None = None, skin_tone: str | None = "any") -> Scene:
    """Draw a random scene: a background crop, relit, with a composited person (``person``: a sprite name,
    ``"any"`` or ``None`` for none; ``skin_tone``: a :data:`SKIN_TONES` level, ``"any"`` or ``None`` for the
    photograph's own), under ``condition`` lighting (random when ``None``)."""
    condition = condition or _pick(rng, tuple(CONDITIONS))
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {sorted(CONDITIONS)}")
    bg_name = background or _pick(rng, BACKGROUNDS)
    bg, bg_mag = _random_crop(load_photo(bg_name), size, rng)
    bg = _tint_if_grey(bg, rng)
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    bg = _relight(bg, rng)
    light = CONDITIONS[condition]
    lum = float(np.exp(rng.uniform(*np.log(light["luminance"]))))
    cct = float(rng.uniform(*light["cct"]))
    bg_blur = upsampling_blur(bg_mag, size)
    scene = Scene(name=name, background=np.ascontiguousarray(bg), luminance=lum, cct=cct, condition=condition,
                  background_defocus=float(rng.uniform(0.0, 30.0)),
                  person_defocus=float(rng.uniform(0.0, 3.0)),
                  shake_speed=(float(rng.normal(0, 15)), float(rng.normal(0, 10))),
                  base_blur=bg_blur, meta={"background_source": bg_name, "background_magnification": bg_mag})
    if person is not None:
        who = _pick(rng, SPRITES) if person == "any" else person
        tone = _pick(rng, tuple(SKIN_TONES)) if skin_tone == "any" else skin_tone
        scene.base_blur, scene.background_base_blur = 0.0, bg_blur
        _composite(scene, who, rng, tone)
    return scene


def _posed(rgb: np.ndarray, alpha: np.ndarray, face_box: tuple[float, float, float, float], landmarks: np.ndarray,
           angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Roll a sprite's head by ``angle`` degrees (positive: counter-clockwise as seen) about its face centre.

    Returns (rgb, alpha, face box, landmarks) in the sprite's pixels. Edge pixels extend the body where the
    rotation uncovers the bottom rows; the face box keeps its size around the rotated centre (a detector's box of
    a slightly tilted face), the landmarks turn exactly.
    """
    from skimage.transform import SimilarityTransform, warp

    cx, cy = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
    theta = -np.radians(angle)  # image rows grow downwards: a visual counter-clockwise turn is negative here
    tform = (SimilarityTransform(translation=(-cx, -cy)) + SimilarityTransform(rotation=theta)
             + SimilarityTransform(translation=(cx, cy)))
    rgb_r = warp(np.array(rgb, dtype=np.float64), tform.inverse, order=1, mode="edge", preserve_range=True).astype(np.float32)
    alpha_r = warp(np.array(alpha, dtype=np.float64), tform.inverse, order=1, mode="edge", preserve_range=True).astype(np.float32)
    lm = tform(np.asarray(landmarks, dtype=np.float64))
    hw, hh = (face_box[2] - face_box[0]) / 2, (face_box[3] - face_box[1]) / 2
    return rgb_r, alpha_r, np.array([cx - hw, cy - hh, cx + hw, cy + hh]), lm


def _composite(scene: Scene, who: str, rng: np.random.Generator, tone: str | None = None,
               roll: float | None = None, mirror: bool | None = None) -> None:
    """Paste a relit head-and-shoulders sprite (skin tone ``tone``, head rolled by ``roll`` degrees, drawn within
    +-:data:`MAX_ROLL` when None), bottom-aligned, filling 45-100 % of the frame height, at a random horizontal
    position, mirrored with odds 1/2 (or as ``mirror`` says). A sprite shown larger than its photograph records
    the softness as ``base_blur``."""
    src = PERSONS[who]
    rgb, alpha = sprite(who, tone)
    px0, py0 = src.person_box[:2]
    angle = float(rng.uniform(-MAX_ROLL, MAX_ROLL))
    angle = angle if roll is None else float(roll)
    rgb, alpha, face, lm = _posed(rgb, alpha, (src.face_box[0] - px0, src.face_box[1] - py0,
                                               src.face_box[2] - px0, src.face_box[3] - py0),
                                  np.asarray(src.landmarks, dtype=np.float64) - [px0, py0], angle)
    size_h, size_w = scene.size
    sh, sw = rgb.shape[:2]
    scale = rng.uniform(0.45, 1.0) * size_h / sh
    new_h, new_w = max(8, int(round(sh * scale))), max(8, int(round(sw * scale)))
    rgb_s = resize(rgb, new_w, new_h)
    alpha_s = np.clip(resize(alpha, new_w, new_h), 0, 1)
    # person reflectance brightness relative to the background: relit by the same light, +/- 1 stop
    rgb_s = rgb_s * float(np.exp(rng.uniform(-0.7, 0.7)))
    x_left = int(rng.integers(-new_w // 4, max(-new_w // 4 + 1, size_w - 3 * new_w // 4)))
    y_top = size_h - new_h
    person = np.zeros_like(scene.background)
    matte = np.zeros(scene.size, dtype=np.float32)
    xs0, xs1 = max(0, x_left), min(size_w, x_left + new_w)
    ys0 = max(0, y_top)
    person[ys0:, xs0:xs1] = rgb_s[ys0 - y_top:, xs0 - x_left:xs1 - x_left]
    matte[ys0:, xs0:xs1] = alpha_s[ys0 - y_top:, xs0 - x_left:xs1 - x_left]

    def to_frame(x: np.ndarray | float, y: np.ndarray | float) -> tuple[Any, Any]:
        return np.asarray(x) * scale + x_left, np.asarray(y) * scale + y_top

    fx, fy = to_frame(face[0::2], face[1::2])
    lx, ly = to_frame(lm[:, 0], lm[:, 1])
    ys, xs = np.nonzero(matte > 0.5)
    if len(xs) == 0:
        return
    flip = bool(rng.random() < 0.5)
    flip = flip if mirror is None else bool(mirror)
    if flip:
        person, matte = person[:, ::-1].copy(), matte[:, ::-1].copy()
        xs = size_w - 1 - xs
        fx = size_w - fx[::-1]
        lx = size_w - lx
    scene.person, scene.alpha = np.ascontiguousarray(person), np.ascontiguousarray(matte)
    scene.person_box = _clip_box((xs.min() / size_w, ys.min() / size_h, (xs.max() + 1) / size_w,
                                  (ys.max() + 1) / size_h))
    scene.face_box = _clip_box((fx[0] / size_w, fy[0] / size_h, fx[1] / size_w, fy[1] / size_h))
    landmarks = np.stack([lx / size_w, ly / size_h], axis=1)
    scene.landmarks = np.clip(landmarks[[1, 0, 2, 4, 3]] if flip else landmarks, 0.0, 1.0)
    scene.subject_speed = (float(rng.normal(0, 60)), float(rng.normal(0, 20)))
    scene.base_blur = upsampling_blur(scale, size_w)
    # whole composite normalised to a metered mid-grey
    total = luminance(scene.radiance()).mean()
    k = 0.18 / max(float(total), 1e-6)
    scene.background = (scene.background * k).astype(np.float32)
    scene.person = (scene.person * k).astype(np.float32)
    scene.meta.update({"person_source": who, "flipped": flip, "skin_tone": tone, "roll_deg": angle,
                       "person_height": new_h / size_h})


def _clip_box(box: tuple[float, ...]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(np.clip(v, 0.0, 1.0)) for v in box)
    return x0, y0, x1, y1


def face_crop_scene(rng: np.random.Generator, size: int = 128, scenario: str = "indoor", night: bool = False,
                    name: str = "face", who: str | None = None, skin_tone: str | None = "any",
                    lfw_share: float = LFW_SHARE) -> Scene:
    """A loosely cropped face (SFIQA-Bench style: the camera saves only the face region) under a surveillance
    ``scenario`` (indoor / outdoor / vehicle), by day or by night.

    ``who``: a :data:`FACE_SOURCES` name, or ``None`` for an LFW tile with probability ``lfw_share`` (100
    identities, tight 25 px crops: the crop is the whole tile) and else one of the three photographs;
    ``skin_tone``: a :data:`SKIN_TONES` level, ``"any"`` (drawn) or ``None`` (as photographed).

    Vehicle scenes get veiling glare (windscreen) and faster subject motion; night scenes infrared mixing and
    low light. The source face is resampled from a random lower capture resolution, so small faces are soft
    (the softness is recorded as ``base_blur``).
    """
    if scenario not in ("indoor", "outdoor", "vehicle"):
        raise ValueError(f"unknown scenario {scenario!r}; choose indoor, outdoor or vehicle")
    if not 0.0 <= lfw_share <= 1.0:
        raise ValueError(f"lfw_share must be a share in [0, 1], got {lfw_share!r}")
    if who is None:
        who = _pick(rng, LFW_IDENTITIES) if rng.random() < lfw_share else _pick(rng, tuple(PERSONS))
    if who not in FACE_SOURCES:
        raise ValueError(f"unknown face source {who!r}; choose a photograph {sorted(PERSONS)} or lfw_000-lfw_099")
    tone = _pick(rng, tuple(SKIN_TONES)) if skin_tone == "any" else skin_tone
    photo = toned_photo(who, tone)
    (fx0, fy0, fx1, fy1), landmarks = face_geometry(who)
    side = max(fx1 - fx0, fy1 - fy0) * rng.uniform(1.5, 2.0)
    cx = (fx0 + fx1) / 2 + rng.uniform(-0.08, 0.08) * side
    cy = (fy0 + fy1) / 2 + rng.uniform(-0.08, 0.08) * side
    h, w = photo.shape[:2]
    side = min(side, h, w)
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    side_i = int(round(side))
    # surveillance cameras save small faces: capture at a random lower resolution, shown upsampled
    native = int(np.clip(round(rng.uniform(*FACE_CAPTURE) * size), 16, size))
    crop = resize(resize(photo[y0:y0 + side_i, x0:x0 + side_i], native, native), size, size)
    flip = bool(rng.random() < 0.5)
    if flip:
        crop = crop[:, ::-1]
    crop = _relight(crop, rng, strength=0.9 if scenario != "indoor" else 0.4)
    s = size / side_i
    face = np.array([(fx0 - x0) * s, (fy0 - y0) * s, (fx1 - x0) * s, (fy1 - y0) * s]) / size
    lm = (landmarks - [x0, y0]) * s / size
    if flip:
        face = np.array([1 - face[2], face[1], 1 - face[0], face[3]])
        lm = _flip_landmarks(lm)
    if night:
        condition = "night" if scenario != "indoor" else "lowlight"
    else:
        condition = "indoor" if scenario == "indoor" else "outdoor"
    light = CONDITIONS[condition]
    # upsampling from min(native, source) px to ``size`` px leaves a softness of about 0.45 px per unit of
    # magnification (output px); expressed in reference px. Already in the pixels: counted, not re-applied.
    magnification = size / max(min(native, side_i), 1)
    scene = Scene(name=name, background=np.ascontiguousarray(crop),
                  luminance=float(np.exp(rng.uniform(*np.log(light["luminance"])))),
                  cct=float(rng.uniform(*light["cct"])), condition=scenario,
                  face_box=_clip_box(tuple(face)), landmarks=np.clip(lm, 0, 1),
                  person_box=(0.0, 0.0, 1.0, 1.0),
                  person_defocus=float(rng.uniform(0.0, 3.0)),
                  subject_speed=(float(rng.normal(0, 150 if scenario == "vehicle" else 100)),
                                 float(rng.normal(0, 40))),
                  veil=float(rng.uniform(0.05, 0.5)) if scenario == "vehicle" else 0.0,
                  ir_mix=float(rng.uniform(0.4, 0.9)) if night and scenario != "indoor" else 0.0,
                  base_blur=upsampling_blur(magnification, size),
                  meta={"person_source": who, "night": night, "flipped": flip, "skin_tone": tone})
    return scene


def high_dynamic_range(scene: Scene, rng: np.random.Generator, backlight: float | None = None,
                       n_lamps: int | None = None) -> Scene:
    """A high-dynamic-range variant of ``scene`` (issue #23): a brighter background behind the subject
    (``backlight`` stops, a window or the sky behind a streamer; default 1.5-3 when a person is present, else 0)
    and ``n_lamps`` small light sources in the background (default 1-3) whose peak radiance is 20-150x the frame's
    mean, far above the sensor's full scale at a metered exposure; the camera's clipping and highlight roll-off
    handle them. The whole frame is then re-metered to a mean of 0.18 (a lamp in the frame darkens the rest, as
    in-camera metering does). Boxes and landmarks are unchanged: lamps sit in the background layer, behind the
    person's matte. Recorded in ``meta["hdr"]``.
    """
    h, w = scene.size
    if backlight is None:
        backlight = float(rng.uniform(1.5, 3.0)) if scene.person is not None else 0.0
    n_lamps = int(rng.integers(1, 4)) if n_lamps is None else int(n_lamps)
    background = scene.background * np.float32(2.0 ** backlight)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(n_lamps):
        cy, cx = rng.uniform(0.05, 0.6) * h, rng.uniform(0.05, 0.95) * w
        radius = float(rng.uniform(0.01, 0.04)) * w
        peak = float(rng.uniform(20.0, 150.0)) * 0.18
        glow = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)).astype(np.float32)
        tint = illuminant_rgb(float(rng.uniform(2700.0, 6500.0)))
        background = background + peak * glow[..., None] * (tint / float(tint @ LUMA))[None, None, :]
    out = scene_with(scene, background=np.ascontiguousarray(background, dtype=np.float32),
                     meta={**scene.meta, "hdr": {"backlight_stops": backlight, "lamps": n_lamps}})
    k = 0.18 / max(float(luminance(out.radiance()).mean()), 1e-6)
    out.background = (out.background * k).astype(np.float32)
    if out.person is not None:
        out.person = (out.person * k).astype(np.float32)
    return out


def scene_with(scene: Scene, **changes: Any) -> Scene:
    """A copy of ``scene`` with some fields replaced (arrays are shared, never mutated by the camera)."""
    return replace(scene, **changes)
