"""``iqalab score``: scores of a user's own images as a CSV, from a trained checkpoint (per attribute, in the
training MOS units) or from a model that needs none (``--model niqe|brisque|pyiqa:<metric>``: its published
score)."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iqalab.data.cache import decode_image
from iqalab.data.schema import DataError
from iqalab.inference import ModelScorer, Scorer
from iqalab.io import atomic_path, expand_images

log = logging.getLogger(__name__)


def score_images(checkpoint: str | Path | None, images: Sequence[str | Path], out_csv: str | Path | None = None,
                 batch_size: int = 16, device: str = "auto", progress: bool = True,
                 workers: int | None = None, model: str | None = None,
                 options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Score image files; columns ``path`` and the scores.

    With ``checkpoint``: one column per attribute in the training MOS units; images are decoded and prepared
    exactly as in training (:class:`iqalab.inference.Scorer`). Models needing boxes or camera parameters receive
    "unknown" values and use their documented fallbacks. With ``model`` (and its keyword ``options``): a model
    that needs no checkpoint (:class:`iqalab.inference.ModelScorer`), each image at native resolution, one
    column with its published score. ``workers`` threads (default: up to 4, one per core) decode (and resize)
    the next batches while the model scores the current one; Pillow releases the GIL while it decodes and
    resizes.

    A file that cannot be decoded does not stop the others (issue 26): every readable image is scored, the
    failed ones keep their row (empty scores) with the reason in an ``error`` column (present only when a file
    failed; :func:`failed_files`) and their number is logged as a warning. :class:`ScoreError` is raised, after the CSV is written, when no image
    could be scored.
    """
    if (checkpoint is None) == (model is None):
        raise ValueError("score needs exactly one of a checkpoint or a model name")
    scorer: Scorer | ModelScorer = Scorer(checkpoint, device) if checkpoint is not None \
        else ModelScorer(str(model), options, device)
    prepare = scorer.resize if isinstance(scorer, Scorer) else (lambda image: image)
    files = expand_images(images)
    workers = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))
    frames = []
    failed: dict[int, str] = {}  # position in ``files`` -> reason
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(files), disable=not progress, desc="score", unit="img") as bar:
        pending: deque[Future[np.ndarray]] = deque()
        upcoming = iter(files)

        def fill() -> None:  # keep two batches decoding ahead of the model
            while len(pending) < 2 * batch_size:
                path = next(upcoming, None)
                if path is None:
                    return
                pending.append(pool.submit(lambda p: prepare(decode_image(p)), path))

        for start in range(0, len(files), batch_size):
            fill()
            chunk, decoded = [], []
            for position in range(start, min(start + batch_size, len(files))):
                try:
                    decoded.append(pending.popleft().result())
                    chunk.append(position)
                except DataError as exc:  # names the file; the others are still scored
                    failed[position] = str(exc)
                    log.info("not scored: %s", exc)
            fill()
            if decoded:
                scores = scorer.score(decoded, batch_size=batch_size) if isinstance(scorer, Scorer) \
                    else scorer.score(decoded)
                frames.append(pd.DataFrame({"path": [str(files[i]) for i in chunk], **scores}, index=chunk))
            bar.update(min(batch_size, len(files) - start))
    frame = pd.concat(frames) if frames else pd.DataFrame({"path": pd.Series(dtype=str)})
    if failed:
        rows = pd.DataFrame({"path": [str(files[i]) for i in failed], "error": list(failed.values())},
                            index=list(failed))
        frame = pd.concat([frame.assign(error=""), rows]).sort_index()  # the order of the input
    frame = frame.reset_index(drop=True)
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.4f")
        log.info("wrote %d scores to %s", len(files) - len(failed), out_csv)
    if failed:
        log.warning("%d of %d images could not be scored (listed in the error column%s)", len(failed), len(files),
                    f" of {out_csv}" if out_csv is not None else "")
    if len(failed) == len(files):
        raise ScoreError(f"no image could be scored: {'; '.join(failed.values())}")
    return frame


class ScoreError(ValueError):
    """No image of the input could be scored."""


def failed_files(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`score_images`' result whose file could not be scored (``path``, ``error``)."""
    if "error" not in frame:
        return frame.iloc[0:0].reindex(columns=["path", "error"])
    return frame.loc[frame["error"].fillna("") != "", ["path", "error"]]
