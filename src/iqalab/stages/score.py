"""``iqalab score``: scores of a user's own images as a CSV, from a trained checkpoint (per attribute, in the
training MOS units, and the model's published raw score where it has one: ``raw_niqe``, ``raw_brisque``) or
from a model that needs none (``--model niqe|brisque|pyiqa:<metric>``: its published score), or from an original
implementation's released weights scored by its own test protocol (``--model official:hyperiqa --option
weights=<file>``, :mod:`iqalab.official`).

A model that reads human regions (``person_box`` / ``face_box`` in its ``inputs``: TuningIQA's human-aware
feature extractor, SFIQA-Assessor's face views) is refused unless the regions are detected
(``detect_regions``: the detectors and settings of ingest, :class:`iqalab.data.regions.DetectionConfig`) or the
fallback is asked for (``allow_missing_regions``); the ``regions`` column of the output says, per image, which of
the two the scores rest on (issue 21: no silent fallback).

Files are prepared exactly as the training stores hold them (:meth:`iqalab.inference.Scorer.decode`). ``--draft``
trades that exactness for speed on large JPEGs: the decoder works at 1/2, 1/4 or 1/8 scale while the decoded
image stays at least 3x the model's input; its stated tolerance against the training pixels (``tests/test_score.py``,
a 2400 x 1800 JPEG at 224 px) is a mean absolute difference <= 0.5 grey level, 99th percentile <= 1, maximum <= 8.
PNG files and JPEGs less than 6x larger than the input are decoded in full either way.

Decoding runs ahead of the model in threads (:func:`decode_ahead`), held to a memory bound: the decoded images
waiting to be scored and the batch being scored take at most ``prefetch_mb`` (:data:`PREFETCH_MB` by default),
each file counted at its decoded size read from its header (:func:`decoded_nbytes`). It matters for the
native-resolution models (NIQE, BRISQUE, pyiqa metrics, checkpoints trained on native patches), which hold each
photo at its stored size: two batches of 16 decoded ahead of a third would hold 3.3 GiB of 24 MP photos
(``benchmarks/bench_score_memory.py``). ``IQALAB_PREFETCH_MB`` changes the bound.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iqalab.data.cache import capped_size, decode_image, probe_image
from iqalab.data.regions import DetectionConfig
from iqalab.data.schema import FACE_BOX, LANDMARKS, PERSON_BOX, DataError
from iqalab.export import ExportError
from iqalab.inference import (  # the input checks are shared with the gMAD stage
    ModelScorer,
    Scorer,
    check_score_camera,
    check_score_regions,
)
from iqalab.io import atomic_path, expand_images, unwritable_reason

if TYPE_CHECKING:
    from iqalab.official import OfficialScorer

log = logging.getLogger(__name__)

#: ``regions`` column values: the model's regions were detected / the detector found none (the model's fallback
#: scored the image) / nobody looked (``allow_missing_regions``: fallback)
REGIONS_DETECTED, REGIONS_NONE, REGIONS_FALLBACK = "detected", "none found: fallback", "not detected: fallback"


#: the ``camera`` column of a model that reads camera parameters: image files carry none, so all seven are unknown
CAMERA_UNKNOWN = "unknown"
#: the ``precision`` column of scores made under ``amp`` (without it the scores are the engine's fp32 ones)
PRECISION_BF16 = "bf16 autocast"
#: default bound, in MiB, on the decoded images :func:`score_images` holds at once; the environment variable
#: :data:`PREFETCH_ENV` sets another (the command line has no flag for it yet)
PREFETCH_MB = 512.0
PREFETCH_ENV = "IQALAB_PREFETCH_MB"


class OutputError(ValueError):
    """``--out`` cannot be written: a folder, below a file, or in a folder this user may not write to."""


def check_output_file(path: str | Path) -> Path:
    """``path`` when a CSV can be written there (:func:`iqalab.io.atomic_path` creates missing folders and
    replaces an existing file); else :class:`OutputError`, one line naming it, before any image is scored."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; name a file (e.g. {path / 'scores.csv'})")
    reason = unwritable_reason(path)
    if reason is not None:
        raise OutputError(f"--out {path}: {reason}")
    return path


def score_chunk(scorer: Scorer | ModelScorer | OfficialScorer, images: list[np.ndarray],
                regions: dict[str, np.ndarray], batch_size: int) -> tuple[dict[str, np.ndarray], list[int], dict[int, str]]:
    """Scores of decoded ``images`` (``regions``: the Scorer's per-image box arrays), the positions scored and,
    for the images the model refuses, the reason by position.

    A model may refuse one image of a batch (NIQE: smaller than its 96 px patch; any ``ValueError`` or
    ``RuntimeError`` of its forward pass): the batch is then scored again one image at a time, so that only
    the refused images go unscored (issue 30) and the others get the scores they would get in the batch.
    """
    def run(sel: list[int]) -> dict[str, np.ndarray]:
        sub = [images[k] for k in sel]
        if isinstance(scorer, Scorer):
            return scorer.score(sub, batch_size=batch_size, with_raw=True, prepared=True,
                                **{k: np.asarray(v)[sel] for k, v in regions.items()})
        return scorer.score(sub)

    everything = list(range(len(images)))
    try:
        return run(everything), everything, {}
    except (ValueError, RuntimeError) as exc:
        if len(images) == 1:
            return {}, [], {0: str(exc)}
    parts: list[dict[str, np.ndarray]] = []
    kept: list[int] = []
    refused: dict[int, str] = {}
    for k in everything:
        try:
            parts.append(run([k]))
            kept.append(k)
        except (ValueError, RuntimeError) as exc:
            refused[k] = str(exc)
    scores = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]} if parts else {}
    return scores, kept, refused


def detect_file_regions(path: Path, cfg: DetectionConfig, weights: Path | None) -> dict[str, float]:
    """Person box, face box and landmarks (normalised, NaN = none found) of one file, exactly as ingest detects
    them (:func:`iqalab.data.regions.fill_regions`: same detector, thresholds and ``max_side``)."""
    from iqalab.data import detect

    return detect.detect_one(path, person=cfg.person, face_threshold=cfg.face_threshold,
                             person_threshold=cfg.person_threshold, min_face_size=cfg.min_face_size,
                             arch=cfg.fasterrcnn_arch, weights=weights, max_side=cfg.max_side)


def _scorer(checkpoint: str | Path | None, model: str | None, options: dict[str, Any] | None, device: str,
            amp: bool, draft: bool) -> Scorer | ModelScorer | OfficialScorer:
    """The scorer of :func:`score_images`: ``--model official:<name>`` is an original implementation's released
    weights scored by its own test protocol (:mod:`iqalab.official`). A folder that is not an export but holds
    training checkpoints (an experiment's ``build/models/<experiment>``) is refused with the checkpoints it holds
    named. torch 2.14
    deprecates ``torch.jit.script``, which torch_geometric (TuningIQA's GCPF) calls when it is imported: that
    FutureWarning is not the user's to act on and is kept out of the scoring output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
        if checkpoint is None and str(model).startswith("official:"):
            from iqalab.official import official_scorer

            return official_scorer(str(model).split(":", 1)[1], options, device)
        if checkpoint is None:
            return ModelScorer(str(model), options, device)
        try:
            return Scorer(checkpoint, device, amp=amp, draft=draft)
        except ExportError as exc:
            inside = sorted(Path(checkpoint).glob("**/best.pt")) if Path(checkpoint).is_dir() else []
            if not inside:
                raise
            named = ", ".join(str(p) for p in inside[:3]) + (f" and {len(inside) - 3} more" if len(inside) > 3 else "")
            raise ExportError(f"{exc}; it holds training checkpoints, each scorable as --checkpoint: {named}") \
                from None


def score_images(checkpoint: str | Path | None, images: Sequence[str | Path], out_csv: str | Path | None = None,
                 batch_size: int = 16, device: str = "auto", progress: bool = True,
                 workers: int | None = None, model: str | None = None,
                 options: dict[str, Any] | None = None, detect_regions: bool = False,
                 allow_missing_regions: bool = False, detection: DetectionConfig | None = None,
                 draft: bool = False, allow_missing_camera: bool = False, amp: bool = False,
                 prefetch_mb: float | None = None) -> pd.DataFrame:
    """Score image files; columns ``path`` and the scores.

    With ``checkpoint``: one column per attribute in the training MOS units (for a model that scores as
    published, NIQE, BRISQUE with the LIVE SVR or a zero-shot metric, a fixed monotone map of its raw score
    into that range, not fitted to MOS) and, for a model with a published raw score, that score (column
    :attr:`iqalab.inference.Scorer.raw_column`, the engine's ``raw``); images are decoded and prepared
    exactly as in training (:class:`iqalab.inference.Scorer`). Image files carry no camera parameters: a model
    that reads them (TuningIQA's GCPF) is refused with :class:`CameraMissing` unless ``allow_missing_camera`` (or
    its training option ``missing_camera: unknown``) accepts every parameter unknown; the ``camera`` column then
    says so. A model that reads person or face boxes needs ``detect_regions`` (each file is searched
    with the ingest detectors, ``detection`` settings, default :class:`DetectionConfig`) or
    ``allow_missing_regions`` (its fallback; the ``regions`` column says so), else :class:`RegionsMissing` is
    raised before any file is read. With ``model`` (and its keyword ``options``): a model
    that needs no checkpoint (:class:`iqalab.inference.ModelScorer`), each image at native resolution, one
    column with its published score. ``draft`` decodes large JPEGs at reduced scale for a checkpoint's square input
    (:class:`iqalab.inference.Scorer`; faster, within a stated tolerance of the training pixels, off by default).
    ``amp`` scores a checkpoint under bf16 autocast (CUDA, or a CPU with AMX or AVX512_BF16; faster, not the fp32 scores
    the engine predicts, off by default); a ``precision`` column then says so.
    ``workers`` threads (default: up to 4, one per core) decode (and resize)
    the next batches while the model scores the current one; Pillow releases the GIL while it decodes and
    resizes. The decoded images held at once, waiting or being scored, take at most ``prefetch_mb`` MiB
    (default ``$IQALAB_PREFETCH_MB``, else :data:`PREFETCH_MB`; :func:`prefetch_budget`, :func:`decode_ahead`; an
    image larger than that is still scored, alone); a batch may then hold fewer than ``batch_size`` images, which
    changes no score.

    A file that cannot be decoded, or that the model refuses (NIQE: smaller than its 96 px patch;
    :func:`score_chunk`), does not stop the others (issues 26, 30): every readable image is scored, the
    failed ones keep their row (empty scores) with the reason in an ``error`` column (present only when a file
    failed; :func:`failed_files`) and their number is logged as a warning. When no image could be scored
    :class:`ScoreError` is raised and nothing is written (an earlier ``out_csv`` is kept). ``out_csv`` is
    checked before the model is built (:func:`check_output_file`); ``options`` with a checkpoint and ``draft``
    with a model, which would change nothing, are refused.
    """
    if (checkpoint is None) == (model is None):
        raise ValueError("score needs exactly one of a checkpoint or a model name")
    budget = prefetch_budget(prefetch_mb)
    if amp and checkpoint is None:
        raise ValueError("amp applies to a checkpoint's model; NIQE, BRISQUE and pyiqa metrics score in fp32")
    if options and checkpoint is not None:
        raise ValueError(f"--option applies to --model only: the keywords of {checkpoint}'s model were fixed "
                         "when it was trained (or exported)")
    if draft and checkpoint is None:
        raise ValueError(f"--draft applies to --checkpoint only: --model {model} decodes each image in full "
                         "and scores it at its native resolution")
    if out_csv is not None:
        check_output_file(out_csv)
    scorer = _scorer(checkpoint, model, options, device, amp, draft)
    if draft and isinstance(scorer, Scorer) and scorer.full_resolution:
        raise ValueError(f"--draft applies to models fed a resized image: {scorer.name} reads each image at its "
                         "native resolution (as in training), which a reduced-scale decode would not give")
    if isinstance(scorer, Scorer) and not scorer.fitted_to_mos:
        raw = f"; column {scorer.raw_column} holds the raw score" if scorer.raw_column else ""
        log.info("%s scores as published: its attribute scores are a fixed monotone map of its raw score "
                 "into the MOS range %s (for ranking, not fitted to MOS)%s", scorer.name, [scorer.lo, scorer.hi], raw)
    needed = check_score_regions(scorer.model, scorer.name, detect_regions, allow_missing_regions)
    camera = isinstance(scorer, Scorer) and check_score_camera(scorer.model, scorer.name, allow_missing_camera)
    cfg = detection or DetectionConfig()
    weights = None
    if needed and detect_regions and cfg.person == "fasterrcnn":
        from iqalab.data.detect import require_fasterrcnn_weights

        weights = require_fasterrcnn_weights(cfg.fasterrcnn_arch, cfg.fasterrcnn_weights)
    load = scorer.decode if isinstance(scorer, Scorer) else decode_image  # the training pixels / native pixels
    files = expand_images(images)
    workers = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))
    frames = []
    failed: dict[int, str] = {}  # position in ``files`` -> reason
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(files), disable=not progress, desc="score", unit="img") as bar:
        for batch in decode_ahead(files, load, decoded_nbytes(scorer), pool, batch_size, budget):
            for position, error in [(p, r) for p, r in batch if isinstance(r, DataError)]:
                failed[position] = str(error)  # names the file; the others are still scored
                log.debug("not scored: %s", error)  # reported once, by the caller (failed_files)
            chunk = [p for p, r in batch if not isinstance(r, DataError)]
            decoded = [r for _, r in batch if not isinstance(r, DataError)]
            n_batch = len(batch)
            del batch  # no reference to the pixels outlives `decoded`: the next batch may take their memory
            if decoded:
                regions: dict[str, Any] = {}
                label: list[str] | None = None
                if needed and detect_regions:
                    rows = pd.DataFrame([detect_file_regions(files[i], cfg, weights) for i in chunk])
                    regions = {"person_boxes": rows[list(PERSON_BOX)].to_numpy(float),
                               "face_boxes": rows[list(FACE_BOX)].to_numpy(float),
                               "landmarks": rows[list(LANDMARKS)].to_numpy(float).reshape(len(chunk), -1, 2)}
                    box = {"person_box": PERSON_BOX, "face_box": FACE_BOX}
                    found = np.all([np.isfinite(rows[list(box[k])].to_numpy(float)).all(axis=1) for k in needed],
                                   axis=0)
                    label = [REGIONS_DETECTED if f else REGIONS_NONE for f in found]
                elif needed:
                    label = [REGIONS_FALLBACK] * len(chunk)
                scores, kept, refused = score_chunk(scorer, decoded, regions, batch_size)
                for k, reason in refused.items():  # e.g. smaller than NIQE's patch: the file's row says why
                    failed[chunk[k]] = f"{files[chunk[k]]}: cannot score ({reason})"
                    log.debug("not scored: %s", failed[chunk[k]])
                chunk = [chunk[k] for k in kept]
                label = None if label is None else [label[k] for k in kept]
                if chunk:
                    extra: dict[str, Any] = {} if label is None else {"regions": label}
                    if camera:
                        extra["camera"] = CAMERA_UNKNOWN
                    if amp:
                        extra["precision"] = PRECISION_BF16
                    frames.append(pd.DataFrame({"path": [str(files[i]) for i in chunk], **scores, **extra},
                                               index=chunk))
            decoded.clear()
            bar.update(n_batch)
    frame = pd.concat(frames) if frames else pd.DataFrame({"path": pd.Series(dtype=str)})
    if failed:
        rows = pd.DataFrame({"path": [str(files[i]) for i in failed], "error": list(failed.values())},
                            index=list(failed))
        frame = pd.concat([frame.assign(error=""), rows]).sort_index()  # the order of the input
    frame = frame.reset_index(drop=True)
    if len(failed) == len(files):  # nothing to write: an earlier CSV at out_csv is kept
        reasons = list(failed.values())
        more = f"; and {len(reasons) - MAX_REASONS} more" if len(reasons) > MAX_REASONS else ""
        kept = f" ({out_csv} not written)" if out_csv is not None else ""
        raise ScoreError(f"no image could be scored: {'; '.join(reasons[:MAX_REASONS])}{more}{kept}")
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.4f")
        log.info("wrote %d scores to %s", len(files) - len(failed), out_csv)
    if failed:
        log.warning("%d of %d images could not be scored (listed in the error column%s)", len(failed), len(files),
                    f" of {out_csv}" if out_csv is not None else "")
    return frame


def prefetch_budget(prefetch_mb: float | None = None) -> int:
    """The bound of :func:`decode_ahead` in bytes: ``prefetch_mb`` MiB, or when it is None the environment
    variable :data:`PREFETCH_ENV` (``IQALAB_PREFETCH_MB``), or :data:`PREFETCH_MB`. Anything but a finite positive
    number is refused in one line naming where it came from."""
    where = "prefetch_mb"
    if prefetch_mb is None and os.environ.get(PREFETCH_ENV, "").strip():
        where, text = PREFETCH_ENV, os.environ[PREFETCH_ENV].strip()
        try:
            prefetch_mb = float(text)
        except ValueError:
            raise ValueError(f"{PREFETCH_ENV}={text!r} is not a number of MiB") from None
    value = PREFETCH_MB if prefetch_mb is None else float(prefetch_mb)
    if not 0 < value < math.inf:
        raise ValueError(f"{where}={value}: the decode-ahead bound must be a positive number of MiB")
    return int(value * 2**20)


def decode_ahead(files: Sequence[Path], load: Callable[[Path], np.ndarray], nbytes: Callable[[Path], int],
                 pool: Executor, batch_size: int, budget: int) -> Iterator[list[tuple[int, np.ndarray | DataError]]]:
    """Batches of ``files`` decoded by ``load`` in ``pool``'s threads ahead of the consumer, in order: lists of
    ``(position in files, decoded image)``, or the file's :class:`DataError` in place of the image (issue 30).

    At most two batches are decoding or decoded ahead of the one being scored, and their estimated sizes
    (``nbytes``, counted from the moment a file's decode is submitted) add up to at most ``budget`` bytes
    together with the batch out with the consumer, whose bytes are released when the consumer asks for the next
    batch: the consumer must hold no reference to a batch's images by then (the list yielded is cleared). A file
    larger than ``budget`` is decoded when nothing else is held, and makes a batch alone. A batch holds up to
    ``batch_size`` files, fewer where the budget allows no more.
    """
    pending: deque[tuple[int, Future[np.ndarray], int]] = deque()
    held = 0  # estimated bytes submitted or decoded and not yet released
    upcoming = 0

    def fill() -> None:
        nonlocal held, upcoming
        while upcoming < len(files) and len(pending) < 2 * batch_size:
            size = nbytes(files[upcoming])
            if held and held + size > budget:
                return
            pending.append((upcoming, pool.submit(load, files[upcoming]), size))
            held += size
            upcoming += 1

    fill()
    while pending:
        batch: list[tuple[int, np.ndarray | DataError]] = []
        size = 0
        while pending and len(batch) < batch_size:
            position, future, n = pending.popleft()
            size += n
            batch.append((position, _outcome(future)))
        del future  # a Future keeps its image: none may outlive the batch
        fill()  # the next files decode while the consumer scores this batch
        yield batch
        batch.clear()
        held -= size
        fill()


def _outcome(future: Future[np.ndarray]) -> np.ndarray | DataError:
    """A decode's image, or the :class:`DataError` naming its file (any other error propagates)."""
    try:
        return future.result()
    except DataError as exc:
        return exc


def decoded_nbytes(scorer: Scorer | ModelScorer | OfficialScorer) -> Callable[[Path], int]:
    """The size in bytes of a file as ``scorer`` decodes it (RGB uint8), for :func:`decode_ahead`'s bound: the
    square cache size of a checkpoint fed resized images; else the file's own size read from its header
    (:func:`iqalab.data.cache.probe_image`, no decoding), capped to the checkpoint's ``max_side``. A file whose
    header cannot be read counts 0: its decode fails and names it."""
    if isinstance(scorer, Scorer) and not scorer.full_resolution:
        square = 3 * scorer.size * scorer.size
        return lambda path: square
    cap = scorer.max_side if isinstance(scorer, Scorer) else None

    def native(path: Path) -> int:
        try:
            width, height = probe_image(path, verify=False)
        except Exception:  # noqa: BLE001 - PIL raises several kinds for a bad file; decoding reports it
            return 0
        width, height = capped_size(width, height, cap)
        return 3 * width * height

    return native


#: the reasons :class:`ScoreError` names when no image could be scored (the rest are counted)
MAX_REASONS = 5


class ScoreError(ValueError):
    """No image of the input could be scored."""


def failed_files(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`score_images`' result whose file could not be scored (``path``, ``error``)."""
    if "error" not in frame:
        return frame.iloc[0:0].reindex(columns=["path", "error"])
    return frame.loc[frame["error"].fillna("") != "", ["path", "error"]]
