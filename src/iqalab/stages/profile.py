"""Stage ``profile``: parameters, GMACs at 224x224 and batch-1 latency of each trained experiment's model.

Reads the experiment's first checkpoint and writes ``results/profile/<experiment>.json`` (keys ``params``,
``params_m``, ``gmacs``, ``latency_ms``, ``device``, ...), which the evaluation tables' efficiency columns (SFIQA
Table II, TuningIQA Table 2) read. It runs beside training rather than inside it, so re-profiling never retrains.
Classical models (NIQE/BRISQUE) get latency only: their numpy pipelines have no torch graph to count MACs on;
zero-shot ``pyiqa:<metric>`` models likewise get their parameter count and latency. An experiment whose model
could not run (zero-shot weights unavailable, :mod:`iqalab.status`) gets a profile holding only its ``status``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from iqalab import provenance
from iqalab.config import Params
from iqalab.inference import experiment_checkpoint, per_attribute_models, training_record
from iqalab.io import write_json
from iqalab.models.profile import profile_model
from iqalab.status import unavailable_reason
from iqalab.train.engine import load_checkpoint, model_from_checkpoint

log = logging.getLogger(__name__)


def run(params: Params, root: Path, experiments: list[str] | None = None, image_size: int = 224,
        repeats: int = 10) -> dict[str, dict[str, Any]]:
    """Profile every experiment of ``params`` (or those named) in one process; returns experiment -> profile."""
    return {name: profile_experiment(params, name, root, image_size, repeats)
            for name in (experiments or list(params.experiments))}


def profile_experiment(params: Params, experiment: str, root: Path, image_size: int = 224,
                       repeats: int = 10) -> dict[str, Any]:
    """Profile ``experiment``'s trained model on the CPU (the device the default profile trains on)."""
    exp = params.experiment(experiment)
    record = training_record(root, experiment)  # read once: the status, the attributes and the checkpoint
    status = unavailable_reason(record) if record is not None else None
    if status is not None:  # a zero-shot model that could not run: nothing to profile, say why
        result = {"experiment": experiment, "model": exp.model.name, "status": status, "params": None,
                  "params_m": None, "gmacs": None, "latency_ms": None}
        log.warning("profile: experiment %s did not run (%s); no profile", experiment, status)
        write_json(root / "results" / "profile" / f"{experiment}.json",
                   {**result, "_provenance": provenance.collect(params, device="cpu")})
        return result
    # one model per attribute (train.separate_attributes): each is the same network with one head; the first
    # attribute's is profiled and the record says how many models score an image
    attributes = per_attribute_models(record)
    ckpt, why = experiment_checkpoint(root, experiment, attribute=attributes[0] if attributes else None,
                                      record=record)
    if ckpt is None:
        raise FileNotFoundError(f"experiment {experiment!r}: {why}")
    model = model_from_checkpoint(load_checkpoint(ckpt), str(ckpt))
    result = profile_model(model, image_size=image_size, device="cpu", warmup=2, repeats=repeats)
    if not model.trainable:  # numpy feature pipelines: no torch graph to count MACs on
        result.update(gmacs=None, params=model.num_parameters(), params_m=model.num_parameters() / 1e6)
    result.update({"experiment": experiment, "model": model.registry_name, "checkpoint": str(ckpt.relative_to(root))})
    if attributes:
        result["models_per_image"] = len(attributes)  # params, GMACs and latency are of one attribute's model
    write_json(root / "results" / "profile" / f"{experiment}.json",
               {**result, "_provenance": provenance.collect(params, device="cpu")})
    return result
