"""Inference with a trained checkpoint on images in memory: the one path shared by ``iqalab score``, gMAD and the
camera-tuning study.

:class:`Scorer` rebuilds the model a checkpoint was trained as, prepares images exactly as the training stores did
(:func:`iqalab.data.cache.prepare_image`: the native store's ``max_side`` cap, the square ``cache_size`` resize;
then the optional centre crop and ImageNet normalisation on the device) and standardises camera parameters with
the training split's statistics, so a model sees at inference what it saw in training: a file scored here gets
the very array the cache holds for it (``tests/test_score.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from iqalab.data.cache import RESIZE_REDUCING_GAP, decode_image, planar_crc, prepare_image
from iqalab.data.loaders import CamStats, cut_patch_sets, patch_rng, to_chw_uint8
from iqalab.data.regions import needed_regions
from iqalab.export import load_export
from iqalab.status import training_record, unavailable_reason
from iqalab.train.engine import (
    CheckpointError,
    cpu_native_bf16,
    load_checkpoint,
    model_from_checkpoint,
    resolve_device,
    to_device,
)

if TYPE_CHECKING:
    from iqalab.config import Params

log = logging.getLogger(__name__)


# --------------------------------------------------------------- inputs image files do not carry (score, gMAD)
class RegionsMissing(ValueError):
    """A model that reads human regions was asked to score without detection and without the fallback flag."""


#: how ``iqalab score`` lets a model without its regions through (:func:`check_score_regions`'s ``way_out``)
SCORE_REGIONS_WAY_OUT = ("pass --detect-regions to detect them as ingest does (MTCNN faces and landmarks, person "
                         "box by datasets.<name>.detect.person), or --allow-missing-regions to score with the "
                         "model's whole-image / centre-crop fallback")
#: how ``iqalab score`` lets a model without camera parameters through (:func:`check_score_camera`'s ``way_out``)
SCORE_CAMERA_WAY_OUT = "pass --allow-missing-camera"


def check_score_regions(model: Any, name: str, detect_regions: bool, allow_missing_regions: bool,
                        way_out: str = SCORE_REGIONS_WAY_OUT) -> list[str]:
    """The region batch keys ``model`` reads; :class:`RegionsMissing` (one line naming the model and
    ``way_out``, the caller's ways out: the command's flags, or gMAD's params) when it reads some and neither
    detection nor the fallback was asked for (here, or by the model's own ``allow_missing_regions`` option in
    training)."""
    needed = needed_regions(model)
    allow_missing_regions = allow_missing_regions or bool(getattr(model, "allow_missing_regions", False))
    if needed and not detect_regions and not allow_missing_regions:
        raise RegionsMissing(f"model {name!r} reads {' and '.join(needed)} regions, which image files do not carry, "
                             f"and was trained without allow_missing_regions: {way_out}")
    if needed and not detect_regions:
        log.warning("model %s reads %s but no region was detected (--allow-missing-regions): every image is "
                    "scored with the model's fallback (column regions)", name, ", ".join(needed))
    return needed


class CameraMissing(ValueError):
    """A model that reads camera parameters was asked to score image files (which carry none) without the
    fallback flag."""


def needs_camera(model: Any) -> bool:
    """Whether ``model`` reads the seven camera parameters (TuningIQA's GCPF, seed 000 Sec. 3.3): ``cam`` in its
    ``inputs`` (a model declares only the batch keys it reads: TuningIQA without GCPF leaves ``cam`` out)."""
    return "cam" in model.inputs


def check_score_camera(model: Any, name: str, allow_missing_camera: bool,
                       way_out: str = SCORE_CAMERA_WAY_OUT) -> bool:
    """True when ``model`` reads camera parameters, which image files do not carry; :class:`CameraMissing` (one line
    naming the model and ``way_out``, the caller's opt-in) unless the fallback was asked for, here or by the
    model's own training option ``missing_camera: unknown`` (GCPF's learned "unknown" embedding for every
    parameter; no silent fallback)."""
    if not needs_camera(model):
        return False
    trained_with_unknown = getattr(model, "missing_camera", None) == "unknown"
    if not allow_missing_camera and not trained_with_unknown:
        raise CameraMissing(
            f"model {name!r} reads the seven camera parameters (GCPF), which image files do not carry, and was "
            f"trained with missing_camera: {getattr(model, 'missing_camera', 'refuse')}: {way_out} to score it "
            "with every parameter unknown (GCPF's learned embedding)")
    log.warning("model %s reads camera parameters; image files carry none: every image is scored with all seven "
                "unknown (column camera)", name)
    return True


#: how a file written by ``torch.save`` begins: a zip archive (torch >= 1.6) or a legacy pickle (protocol 2+)
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def check_checkpoint_file(path: str | Path) -> None:
    """:class:`CheckpointError` (one line naming ``path``) when an existing file does not begin as a file
    written by ``torch.save`` does (an image, a ``.safetensors`` file): torch's own complaint about such a
    file is an unpickling error that names neither what was expected nor what to pass instead."""
    path = Path(path)
    if not path.is_file():
        return  # a missing file: load_checkpoint names it
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head.startswith(TORCH_MAGIC):
        raise CheckpointError(f"{path}: not a torch checkpoint or iqalab export (expected a best.pt written "
                              "by training, or the folder `iqalab export` writes)")


def per_attribute_models(record: Mapping[str, Any] | None) -> list[str]:
    """The attributes of an experiment trained with one model per attribute (``train.separate_attributes``, as
    its :func:`training_record` says); empty for one model with a head per attribute, or no record."""
    if not record or not record.get("separate_attributes"):
        return []
    return [str(a) for a in record.get("attributes") or []]


def experiment_checkpoint(root: str | Path, experiment: str, split: str | None = None,
                          attribute: str | None = None, record: Mapping[str, Any] | None = None
                          ) -> tuple[Path | None, str]:
    """The checkpoint the analysis stages use for a trained experiment and, when there is none, why.

    It is ``build/models/<experiment>/<first split>/best.pt`` (or ``split``'s, when it trained), the splits
    taken from ``results/predictions/<experiment>.json``, which training writes only once every split has
    finished (``record``: that file as the caller read it with :func:`training_record`; read here when None).
    An experiment trained with one model per attribute has one under ``<split>/<attribute>/``. An experiment
    whose model could not run (a zero-shot ``pyiqa:<metric>`` without its weights) has none: the reason is its
    status (``"pyiqa not installed"``, ``"weights unavailable: ..."``, see :mod:`iqalab.status`).
    """
    root = Path(root)
    meta = root / "results" / "predictions" / f"{experiment}.json"
    info = record if record is not None else training_record(root, experiment)
    if info is None:
        return None, f"not trained ({meta.relative_to(root)} missing)"
    status = unavailable_reason(info)
    if status is not None:
        return None, status
    splits = [str(s) for s in info.get("splits") or []]
    if not splits:
        return None, f"{meta.relative_to(root)} lists no split"
    if split is not None and split not in splits:
        return None, f"split {split!r} not trained (trained: {', '.join(splits)})"
    folder = root / "build" / "models" / experiment / (split or splits[0])
    if info.get("separate_attributes"):  # one model per attribute (train.separate_attributes)
        attributes = per_attribute_models(info)
        if attribute not in attributes:
            return None, (f"one model per attribute (train.separate_attributes): {folder.relative_to(root)}/"
                          f"<attribute>/best.pt for one of {', '.join(attributes)}")
        folder = folder / attribute
    ckpt = folder / "best.pt"
    if not ckpt.is_file():
        return None, f"checkpoint {ckpt.relative_to(root)} missing"
    return ckpt, ""


def competing_checkpoints(params: Params, dataset: str, experiments: Sequence[str] | None, root: str | Path
                          ) -> tuple[dict[str, Path], dict[str, str]]:
    """The models that compete in gMAD and the camera-tuning study: ``({experiment: checkpoint}, {experiment:
    why it is left out})`` for ``experiments``, or by default every experiment trained on ``dataset`` (in
    ``params`` order), each checkpoint found by :func:`experiment_checkpoint`."""
    candidates = list(experiments) if experiments is not None else [
        name for name, exp in params.experiments.items() if exp.dataset == dataset]
    chosen: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name in candidates:
        ckpt, why = experiment_checkpoint(root, name)
        if ckpt is None:
            skipped[name] = why
        else:
            chosen[name] = ckpt
    return chosen, skipped


def native_patch_options(model: Any, config: dict[str, Any]) -> dict[str, Any] | None:
    """The patch options of a checkpoint trained on patches the loader cut from the native store
    (``train.resolution: native``, the HyperIQA family; :meth:`patch_loader_options`), else ``None``: scoring
    then cuts the same patches as evaluation from the file's native pixels (:func:`cut_patch_sets`)."""
    options = getattr(model, "patch_loader_options", None)
    if options is None or config.get("train", {}).get("resolution") != "native":
        return None
    return dict(options())


class Scorer:
    """A checkpoint ready to score uint8 RGB images (scores in the training dataset's MOS units).

    ``draft`` lets :meth:`decode` read a JPEG at 1/2, 1/4 or 1/8 scale (PIL ``draft``) when the model's input is
    at least :data:`~iqalab.data.cache.RESIZE_REDUCING_GAP` times smaller than the decoded image: on a
    4000 x 3000 photo scored at 224 px the decode is about 5x faster, but the pixels are no longer exactly the
    training pixels (about 18 % of the values differ, by 1 for 99 % of them; ``tests/test_score.py`` bounds the
    difference). Off by default; native-resolution models never draft.

    ``amp`` scores under bf16 autocast with channels_last tensors, on CUDA or on a CPU with native bf16 units
    (:func:`iqalab.train.engine.cpu_native_bf16`: AMX or AVX512_BF16; a ResNet-18 at 224 px and batch 16 took
    12.7 ms per image against 36.0 ms in fp32 on a 2-core Xeon with AMX, 4.8 ms against 11.5 ms on a 2-core AMD
    EPYC with AVX512_BF16, two torch threads, ``benchmarks/bench_inference.py``, which times ``--amp`` where it
    applies). bf16 keeps 8 mantissa bits, so the scores differ from the fp32 ones the engine predicts
    (``tests/test_score.py`` bounds the difference) and close scores can tie; off by default, and refused on a
    CPU without native bf16.
    """

    #: the native store's cap on the longer side the model was trained with (``None``: native resolution)
    max_side: int | None = None

    def __init__(self, checkpoint: str | Path, device: str = "auto", amp: bool = False, draft: bool = False) -> None:
        # a folder is an `iqalab export` (model.safetensors + config.json), a file a training checkpoint
        if Path(checkpoint).is_dir():
            ckpt = load_export(checkpoint)
        else:
            check_checkpoint_file(checkpoint)
            ckpt = load_checkpoint(checkpoint)
        self.model = model_from_checkpoint(ckpt, str(checkpoint))
        self.config: dict[str, Any] = ckpt["config"]
        self.device = resolve_device(device)
        # bf16 autocast only when asked: its 8 mantissa bits tie close scores (see predict_items); never for the
        # classical models (NIQE, BRISQUE, fitted or retrained), whose features are float64 statistics
        if amp and self.model.input_resolution == "native":
            raise ValueError(f"amp: {ckpt['config'].get('model_name', 'this model')} reads each image at its native "
                             "resolution with fp64 features (a classical model); score it without --amp")
        if amp and self.device.type == "cpu" and cpu_native_bf16() is None:
            raise ValueError("amp: this CPU has no native bf16 units (AMX or AVX512_BF16), so bf16 would be converted "
                             "in software; score without it")
        self.amp = bool(amp)
        self.model.to(self.device)
        if self.amp:
            self.model.to(memory_format=torch.channels_last)
        self.attributes = list(self.model.attributes)
        self.size = int(self.config["cache_size"])
        self.max_side = self.config.get("max_side")
        self.patches = native_patch_options(self.model, self.config)
        self.draft = bool(draft) and not self.full_resolution
        self.crop = self.config.get("eval_crop")
        stats = self.config.get("cam_stats")
        self.cam_stats = CamStats(**stats) if stats else None
        self.lo, self.hi = (float(v) for v in self.config["mos_range"])
        self.name = self.config.get("model_name", self.model.registry_name)

    @property
    def raw_column(self) -> str | None:
        """The column of the model's published raw score beside the attribute scores (``raw_niqe``,
        ``raw_brisque``, ``raw_<pyiqa metric>``; the value the engine records as ``raw``), ``None`` for a
        model without one (every learned model, a retrained BRISQUE SVR)."""
        name = self.model.raw_score_name
        return f"raw_{name.lower()}" if name else None

    @property
    def fitted_to_mos(self) -> bool:
        """Whether the attribute scores were fitted to the training MOS. A model that scores as published
        (NIQE with its official pristine model, BRISQUE with the LIVE SVR, a zero-shot metric) maps its raw
        score into the MOS range by a fixed monotone function: good for ranking, not a MOS prediction."""
        return not self.model.ready_without_training

    @property
    def native(self) -> bool:
        """The model reads each image at its own resolution (NIQE, BRISQUE): no resize, crop or batching."""
        return self.model.input_resolution == "native"

    @property
    def full_resolution(self) -> bool:
        """Images are read as the native store holds them: a native-resolution model, or native patches."""
        return self.native or self.patches is not None

    def resize(self, image: np.ndarray) -> np.ndarray:
        """One decoded uint8 ``[H, W, 3]`` image as the training store holds it (:func:`prepare_image`): capped to
        the checkpoint's ``max_side``, then resized to the square cache size; a native-resolution model (or one
        trained on native patches) gets the native store's pixels (the cap only)."""
        return prepare_image(image, None if self.full_resolution else self.size, self.max_side)

    def patch_batch(self, image: np.ndarray, face_box: np.ndarray | None) -> dict[str, list[torch.Tensor]]:
        """One image's patches as evaluation cut them (:class:`iqalab.data.loaders.PatchItems`): the same
        generator (``eval_seed`` and the CRC32 of the native pixels), scales, rounds and face-region rule."""
        opts = self.patches or {}
        rng = patch_rng(opts["eval_seed"], planar_crc(image))
        box = None if face_box is None else np.asarray(face_box, dtype=np.float32).reshape(4)
        sets = cut_patch_sets(image, opts["scales"], rng, opts["rounds"], box, opts["face_scales"],
                              opts["face_margin"])
        return {key: [p[None] for p in value] for key, value in sets.items()}

    def decode(self, source: str | Path) -> np.ndarray:
        """A file decoded by the data package's one decode path and prepared by :meth:`resize` (with ``draft``,
        a large JPEG is decoded at reduced scale first, to no less than ``RESIZE_REDUCING_GAP x cache_size``).
        Pass the result to :meth:`score` with ``prepared=True``: preparing is not idempotent (a ``max_side``
        under the cache size would shrink the square image again)."""
        side = math.ceil(RESIZE_REDUCING_GAP * self.size) if self.draft else None
        return self.resize(decode_image(source, draft=side))

    def prepare(self, image: np.ndarray, prepared: bool = False) -> np.ndarray:
        """Resize (unless ``prepared``: already :meth:`resize`'s output) and centre-crop one uint8 ``[H, W, 3]``
        image as the cache and the engine's loader did."""
        if not prepared:
            image = self.resize(image)
        if self.crop and not self.full_resolution:
            off = (self.size - self.crop) // 2
            image = image[off:off + self.crop, off:off + self.crop]
        return image

    @torch.no_grad()
    def score(self, images: Sequence[np.ndarray], cam: np.ndarray | None = None,
              person_boxes: np.ndarray | None = None, face_boxes: np.ndarray | None = None,
              landmarks: np.ndarray | None = None, batch_size: int = 32,
              with_raw: bool = False, prepared: bool = False) -> dict[str, np.ndarray]:
        """Scores per attribute for ``images`` (uint8 ``[H, W, 3]`` each); with ``with_raw`` also the model's
        published raw score under :attr:`raw_column` (when it has one), from the same forward pass as the
        engine's (:meth:`IQAModel.predict_with_raw`). Without it (or for a model without a raw score) each batch
        goes through the model's plain ``predict``, which gives the same attribute scores.

        ``cam`` is ``[N, 7]`` raw camera parameters in ``CAM_PARAMS`` order (NaN = unknown); boxes are normalised
        ``[N, 4]`` x0, y0, x1, y1 and landmarks ``[N, 5, 2]`` in [0, 1] (NaN = unknown, the model's fallback).
        ``prepared``: the images come from :meth:`decode` (already capped and resized as the store holds them);
        otherwise each is decoded pixels and is prepared here.
        """
        n = len(images)
        out = {a: np.empty(n, dtype=np.float64) for a in self.attributes}
        raw_out = np.full(n, np.nan) if with_raw and self.raw_column else None
        side = self.crop or self.size
        offset = float((self.size - side) // 2)  # where prepare (and the engine's loader) cut the centre crop
        if self.full_resolution:  # each image at its own size: one per batch, boxes in its pixel frame
            batch_size, offset = 1, 0.0
        for start in range(0, n, batch_size):
            idx = slice(start, min(n, start + batch_size))
            chunk = [self.prepare(np.asarray(im, dtype=np.uint8), prepared) for im in images[idx]]
            m = len(chunk)
            batch: dict[str, Any] = {"scene_idx": torch.zeros(m, dtype=torch.long),
                                     "image_id": [str(i) for i in range(start, start + m)]}
            if self.patches is not None:
                batch.update(self.patch_batch(chunk[0], None if face_boxes is None else face_boxes[start]))
            else:
                batch["image"] = torch.stack([to_chw_uint8(a) for a in chunk])
            raw_cam = np.full((m, 7), np.nan) if cam is None else np.asarray(cam, dtype=float)[idx]
            if self.cam_stats is not None:
                z, mask = self.cam_stats.transform(raw_cam)
            else:
                z, mask = np.zeros((m, 7), np.float32), np.zeros((m, 7), np.float32)
            batch["cam"], batch["cam_mask"] = torch.from_numpy(z), torch.from_numpy(mask)
            for key, values, shape in (("person_box", person_boxes, (4,)), ("face_box", face_boxes, (4,)),
                                       ("landmarks", landmarks, (5, 2))):
                pts = np.full((m, *shape), np.nan, dtype=np.float32) if values is None \
                    else np.asarray(values, dtype=np.float32)[idx].reshape(m, *shape)
                frame = np.array(chunk[0].shape[1::-1], dtype=np.float32) if self.full_resolution else self.size
                pixels = pts.reshape(m, -1, 2) * frame - offset
                batch[key] = torch.from_numpy(pixels.reshape(m, *shape).astype(np.float32))
            inputs = to_device(batch, self.device, channels_last=self.amp)
            raw: torch.Tensor | None = None
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                if raw_out is not None:  # the raw score was asked for and the model publishes one
                    pred, raw = self.model.predict_with_raw(inputs)
                else:
                    pred = self.model.predict(inputs)
            for a in self.attributes:
                out[a][idx] = pred[a].float().cpu().numpy() * (self.hi - self.lo) + self.lo
            if raw_out is not None and raw is not None:
                raw_out[idx] = raw.detach().double().cpu().numpy().reshape(-1)
        if raw_out is not None and self.raw_column is not None:
            out[self.raw_column] = raw_out
        return out


class ModelScorer:
    """A model that needs no checkpoint, ready to score uint8 RGB images as published: NIQE and BRISQUE (the
    original LIVE models) and zero-shot ``pyiqa:<metric>``. Each image is scored at its native resolution (no
    resize or crop, as the original code) and the result is the model's published raw score (e.g. NIQE, lower
    is better) in a column named after it; a model without a raw score gives its [0, 1] output.
    """

    def __init__(self, name: str, options: dict[str, Any] | None = None, device: str = "auto") -> None:
        from iqalab.models import build_model

        self.model = build_model(name, ["quality"], key_path="--model", **(options or {}))
        if not self.model.ready_without_training:
            raise ValueError(f"--model {name}: this model (with options {options or {}}) must be trained first; "
                             "score with --checkpoint build/models/<experiment>/<split>/best.pt instead")
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.name = name
        self.column = (self.model.raw_score_name or name).lower()

    @torch.no_grad()
    def score(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """``{column: [N]}`` for uint8 ``[H, W, 3]`` images, one image per forward pass (sizes differ)."""
        out = np.empty(len(images), dtype=np.float64)
        for k, image in enumerate(images):
            batch = to_device({"image": to_chw_uint8(np.asarray(image, dtype=np.uint8))[None]}, self.device)
            pred, raw = self.model.predict_with_raw(batch)
            out[k] = float((raw if raw is not None else pred["quality"]).reshape(-1)[0])
        return {self.column: out}

