"""``iqalab export <experiment>``: a trained model as a self-contained folder, ready to publish on a model hub.

The folder holds everything ``iqalab score --checkpoint <folder>`` needs, and nothing of this repository's
``build/``:

- ``model.safetensors``: the weights (safetensors: no pickled code, loadable without this package);
- ``config.json``: the training configuration the checkpoint carried (``model_name`` and ``model_kwargs``
  rebuild the model through the registry, :func:`iqalab.models.build_model`), with ``format`` naming this layout;
- ``preprocessor_config.json``: how images are prepared (the native store's ``max_side`` cap, then a square
  bicubic ``cache_size`` resize and optional centre ``eval_crop`` with ImageNet normalisation; or, for a model
  that reads native resolution or native patches, no resize, named in ``resize`` and ``patches``), the
  camera-parameter standardisation ``cam_stats`` and ``mos_range``, the scale scores are returned in -- the same
  keys :class:`iqalab.inference.Scorer` reads from ``config.json``;
- ``metrics.json``: the experiment's training record (``results/predictions/<experiment>.json``: dataset, splits,
  parameters, training time) and its test metrics (SRCC/PLCC per split and attribute, from the predictions);
- ``README.md``: a model card (hub front matter, what it was trained on, how to score, metrics, citation).

:func:`load_export` returns what :func:`iqalab.train.engine.load_checkpoint` returns for a ``best.pt``, so every
consumer of a checkpoint (the Scorer, gMAD, camera tuning) reads either.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from iqalab.io import unwritable_reason, write_bytes, write_json, write_text

log = logging.getLogger(__name__)

#: ``config.json``'s ``format`` for this layout.
FORMAT = "iqalab-export/1"
WEIGHTS = "model.safetensors"
PREPROCESSING_KEYS = ("max_side", "cache_size", "eval_crop", "cam_stats", "mos_range")
#: ImageNet normalisation of the learned models' inputs (:func:`iqalab.data.loaders.normalise_batch`)
NORMALIZE = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
#: every file an export holds: an existing ``--out`` holding only these (and a ``config.json`` of
#: :data:`FORMAT`) is an earlier export, replaced whole; anything else there is refused
FILES = ("README.md", "config.json", "metrics.json", WEIGHTS, "preprocessor_config.json")
#: the split exported by default when the experiment trained it (every image of the dataset), as cross_dataset
FULL_TRAIN = "full_train"


class ExportError(ValueError):
    """An experiment that cannot be exported, or a folder that is not an export."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _metrics(predictions: pd.DataFrame) -> list[dict[str, Any]]:
    """SRCC and PLCC of the test predictions per split and attribute (:mod:`iqalab.analysis.metrics`)."""
    from iqalab.analysis.metrics import plcc, srcc

    test = predictions[predictions["role"] == "test"] if "role" in predictions else predictions.iloc[:0]
    rows = []
    for (split, attribute), group in test.groupby(["split", "attribute"], sort=True):
        rows.append({"split": split, "attribute": attribute, "n": int(len(group)),
                     "srcc": float(srcc(group["pred"], group["mos"])),
                     "plcc": float(plcc(group["pred"], group["mos"]))})
    return rows


def _preprocessing(config: dict[str, Any], model: Any) -> tuple[dict[str, Any], str]:
    """``preprocessor_config.json`` and the model card's sentence on it: what :class:`iqalab.inference.Scorer`
    does to a file before the model sees it (:func:`iqalab.data.cache.prepare_image`)."""
    from iqalab.inference import native_patch_options

    cap = config.get("max_side")
    capped = f"capped to {cap} px on the long side, " if cap else ""
    prep: dict[str, Any] = {k: config.get(k) for k in PREPROCESSING_KEYS}
    patches = native_patch_options(model, config)
    if model.input_resolution == "native":
        prep.update(resize=None, eval_crop=None, normalize=None)
        text = f"Images are {capped}read at their own resolution (no resize or crop), as the published model."
    elif patches is not None:
        prep.update(resize=None, eval_crop=None, normalize=NORMALIZE, patches=_jsonable(patches))
        text = (f"Images are {capped}read at their own resolution; the model scores patches cut from them as in "
                f"training (`patches` in `preprocessor_config.json`).")
    else:
        prep.update(resize="square, bicubic", normalize=NORMALIZE)
        text = (f"Images are {capped}resized to {config['cache_size']}x{config['cache_size']} (bicubic)"
                + (f" and centre-cropped to {config['eval_crop']}" if config.get("eval_crop") else "")
                + ", as in training (`preprocessor_config.json`).")
    return prep, text


def _card(experiment: str, config: dict[str, Any], record: dict[str, Any], metrics: list[dict[str, Any]],
          classical: bool, preparing: str) -> str:
    """The model card ``README.md``; ``classical``: the model scores as published (not fitted to MOS);
    ``preparing``: :func:`_preprocessing`'s sentence."""
    dataset = record.get("dataset", config.get("split", "?"))
    lines = [
        "---",
        "library_name: iqalab",
        "tags: [image-quality-assessment, blind-iqa, iqalab]",
        f"model_name: {config['model_name']}",
        "---",
        "",
        f"# {record.get('label') or experiment} ({config['model_name']})",
        "",
        f"Blind image quality model exported by `iqalab export {experiment}`: model `{config['model_name']}` "
        f"trained on dataset `{dataset}` (split `{config.get('split')}`, seed {config.get('seed')}"
        + (", simulated data" if record.get("simulated") else "") + ").",
        f"Scores are per attribute ({', '.join(config['attributes'])}) on the training MOS scale "
        f"{config['mos_range']}" + (
            f"; this model scores as published (`{config['model_name']}`), so they are a fixed monotone "
            "map of its raw score into that range (for ranking, not fitted to MOS), and its raw score has a "
            "column of its own (NIQE, BRISQUE: lower is better)." if classical else "."),
        "",
        "## Use",
        "",
        "```bash",
        "pip install iqalab",
        "iqalab score --checkpoint <this folder> photo.jpg more_photos/ --out scores.csv",
        "```",
        "",
        preparing,
        "",
        "## Metrics (test images)",
        "",
    ]
    if metrics:
        lines += ["| split | attribute | n | SRCC | PLCC |", "|---|---|---|---|---|"]
        lines += [f"| {m['split']} | {m['attribute']} | {m['n']} | {m['srcc']:.3f} | {m['plcc']:.3f} |"
                  for m in metrics]
    else:
        lines.append("No test predictions were recorded.")
    lines += ["", "## Training", "",
              f"- parameters: {record.get('n_params', 'n/a')}; training time: {record.get('train_seconds', 'n/a')} s",
              f"- model arguments: `{json.dumps(_jsonable(config['model_kwargs']), sort_keys=True)}`",
              f"- training data checksums: {len(config.get('data') or {})} files (`config.json`, `data`)",
              "", "## Citation", "",
              "Cite the paper of the model (see `iqalab models`) and the iqalab compendium (`CITATION.cff`).", ""]
    return "\n".join(lines)


def _check_out(out: Path, experiment: str) -> None:
    """Refuse, before anything is read or written, an ``out`` that is not a new or empty folder or an earlier
    export (:data:`FILES` only, ``config.json`` of :data:`FORMAT`): one line naming it; nothing is touched."""
    where = f"cannot export {experiment} to {out}"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"{where}: it exists and is not a folder (nothing was changed)")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries and not _is_export(out):
            raise ExportError(f"{where}: a non-empty folder that is not an iqalab export (no config.json of "
                              f"format {FORMAT}); nothing was changed: choose a new or empty folder")
        foreign = [name for name in entries if name not in FILES]
        if foreign:
            named = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ExportError(f"{where}: the earlier export there also holds {named}, which export did not "
                              "write and would delete; nothing was changed")
    reason = unwritable_reason(out)
    if reason is not None:
        raise ExportError(f"{where}: {reason}")


def _is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an ``iqalab export`` (its ``config.json`` names :data:`FORMAT`)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _experiment_checkpoint(root: Path, experiment: str, split: str | None,
                           known: list[str] | None) -> tuple[Path, str, dict[str, Any]]:
    """``(checkpoint, split, training record)`` of ``experiment``: ``split``'s ``best.pt``, by default
    :data:`FULL_TRAIN`'s when it trained, else the first split's; :class:`ExportError` naming what is
    missing."""
    from iqalab.inference import experiment_checkpoint

    meta = root / "results" / "predictions" / f"{experiment}.json"
    if not meta.is_file():
        if known is not None and experiment not in known:
            raise ExportError(f"unknown experiment {experiment!r} (known: {', '.join(known)})")
        raise ExportError(f"cannot export {experiment}: not trained ({meta.relative_to(root)} missing; "
                          f"`iqalab train {experiment}` trains it)")
    record = json.loads(meta.read_text())
    splits = [str(s) for s in record.get("splits") or []]
    if split is None and splits:
        split = FULL_TRAIN if FULL_TRAIN in splits else splits[0]
    checkpoint, why = experiment_checkpoint(root, experiment, split)
    if checkpoint is None:
        raise ExportError(f"cannot export {experiment}: {why}")
    return checkpoint, str(split), record


def export_experiment(root: str | Path, experiment: str, out: str | Path | None = None,
                      split: str | None = None, known: list[str] | None = None) -> Path:
    """Write the export folder of ``experiment`` (the ``best.pt`` of ``split``; default ``full_train`` when it
    trained, else its first split) to ``out`` (default ``build/export/<experiment>``); returns the folder.

    An earlier export at ``out`` is replaced whole; a file, a folder holding anything else, or an earlier
    export beside other files is refused before anything is read (:class:`ExportError`, nothing is touched).
    ``known`` (the experiments of the params file) lets an experiment that is neither trained nor among them
    be called unknown. Every file gets the mode of a new file of the user (0666 less the umask)."""
    from safetensors.torch import save

    from iqalab.train.engine import load_checkpoint, model_from_checkpoint

    root = Path(root)
    out = Path(out) if out is not None else root / "build" / "export" / experiment
    trained = sorted(p.stem for p in (root / "results" / "predictions").glob("*.json"))
    known = None if known is None else list(known) + [name for name in trained if name not in known]
    checkpoint, split, record = _experiment_checkpoint(root, experiment, split, known)
    _check_out(out, experiment)
    ckpt = load_checkpoint(checkpoint)
    config = _jsonable(ckpt["config"])
    model = model_from_checkpoint(ckpt, str(checkpoint))
    classical = model.ready_without_training
    preprocessing, preparing = _preprocessing(config, model)
    preds_path = root / "results" / "predictions" / f"{experiment}.parquet"
    metrics = _metrics(pd.read_parquet(preds_path)) if preds_path.is_file() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        # clone: safetensors refuses tensors sharing storage, and non-contiguous views; written through
        # write_bytes so that the weights get the mode of the other files (safetensors' own writer: 0600)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt["model"].items()}
        write_bytes(partial / WEIGHTS, save(tensors, metadata={"format": "pt", "iqalab": FORMAT}))
        write_json(partial / "config.json", {"format": FORMAT, "experiment": experiment, **config})
        write_json(partial / "preprocessor_config.json", preprocessing)
        write_json(partial / "metrics.json", {"training": _jsonable(record), "test": metrics, "split": split,
                                              "checkpoint": str(checkpoint.relative_to(root))})
        write_text(partial / "README.md", _card(experiment, config, record, metrics, classical, preparing))
        if out.is_dir():  # an earlier export (_check_out): swapped for the new one, then deleted
            stale = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, stale)
            os.rename(partial, out)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("exported %s (split %s, %s) to %s", experiment, split, checkpoint, out)
    return out


def exported_split(folder: str | Path) -> str:
    """The split whose checkpoint an export folder holds (``metrics.json``; ``config.json`` for older
    exports)."""
    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    return str(metrics.get("split") or json.loads((folder / "config.json").read_text()).get("split"))


def load_export(folder: str | Path) -> dict[str, Any]:
    """An export folder as :func:`iqalab.train.engine.load_checkpoint` returns a checkpoint:
    ``{"model": state_dict, "config": config}``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights = folder / "config.json", folder / WEIGHTS
    if not config_path.is_file() or not weights.is_file():
        raise ExportError(f"{folder}: not an iqalab export (needs config.json and {WEIGHTS}; "
                          "`iqalab export <experiment>` writes one)")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise ExportError(f"{config_path}: format {config.get('format')!r}, expected {FORMAT!r}")
    return {"model": load_file(str(weights)), "config": config}
