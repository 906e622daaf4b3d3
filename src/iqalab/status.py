"""Run status of an experiment: ``"ok"``, or why a model could not run at all.

Zero-shot models (``pyiqa:<metric>``, :mod:`iqalab.models.zeroshot`) run only when their weights are already on
disk. When they are not (or pyiqa itself is not installed), building the model raises :class:`ModelUnavailable`;
the training stage then still completes and writes ``results/predictions/<experiment>.json`` with
``"status": "<why>"`` and an empty predictions parquet, and every later stage reads the status through
:func:`unavailable_reason` to list the experiment as unavailable instead of failing.

Status strings (the JSON's ``status`` key; a missing key means ``"ok"``, as in files written before it existed):

- ``"ok"``: the experiment ran and has predictions;
- ``"pyiqa not installed"``: the optional extra is missing (``pip install 'iqalab[pyiqa]'``);
- ``"weights unavailable: <reason>"``: the metric's weights are not in the local cache (nothing is downloaded).

This module imports nothing heavy (no torch) so that the table and report code can use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STATUS_OK = "ok"
PYIQA_MISSING = "pyiqa not installed"
WEIGHTS_UNAVAILABLE = "weights unavailable"


class ModelUnavailable(RuntimeError):  # noqa: N818 - the name says what happened, as the brief asks
    """A model cannot be built on this machine (optional package or local weights missing).

    ``status`` is the string written to the predictions JSON (``"pyiqa not installed"`` or
    ``"weights unavailable: <reason>"``); ``detail`` says how to fix it.
    """

    def __init__(self, status: str, detail: str = "") -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{status}{f' ({detail})' if detail else ''}")

    @classmethod
    def weights(cls, reason: str, detail: str = "") -> ModelUnavailable:
        """``"weights unavailable: <reason>"``."""
        return cls(f"{WEIGHTS_UNAVAILABLE}: {reason}", detail)


def run_status(meta: Mapping[str, Any] | None) -> str:
    """The ``status`` of a predictions JSON (``"ok"`` when the key is absent)."""
    if not meta:
        return STATUS_OK
    return str(meta.get("status") or STATUS_OK)


def unavailable_reason(meta: Mapping[str, Any] | None) -> str | None:
    """The status of an experiment that produced no predictions because its model could not run, else None."""
    status = run_status(meta)
    return None if status == STATUS_OK else status


def short_status(status: str) -> str:
    """The part of a status shown in a table cell: ``"weights unavailable"`` / ``"pyiqa not installed"``."""
    return status.split(":", 1)[0].strip()


def training_record(root: str | Path, experiment: str) -> dict[str, Any] | None:
    """``results/predictions/<experiment>.json`` under ``root``, the record training writes once every split has
    finished (splits, attributes, ``separate_attributes``, status); None when it is missing."""
    meta = Path(root) / "results" / "predictions" / f"{experiment}.json"
    return json.loads(meta.read_text()) if meta.is_file() else None


def experiment_unavailable(root: str | Path, experiment: str) -> str | None:
    """The status of ``experiment`` when its :func:`training_record` (under ``root``) says its model could not
    run, else None (also when the file is missing or unreadable: not trained is not unavailable)."""
    try:
        meta = training_record(root, experiment)
    except (OSError, ValueError):
        return None
    return unavailable_reason(meta) if isinstance(meta, dict) else None
