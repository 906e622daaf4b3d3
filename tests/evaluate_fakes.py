"""Fake prediction files for the evaluation and significance stage tests (helpers only, no tests here).

A fake experiment is a ``results/predictions/<name>.{parquet,json}`` pair in the layout the training stage writes,
built from a shared ground truth so that models with known properties (perfect, noisy, identical) can be compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ATTRIBUTES = ["overall", "sharpness"]
MOS_RANGE = (1.0, 5.0)


def ground_truth(n_images: int = 60, splits: tuple[str, ...] = ("scene",), n_scenes: int = 4, seed: int = 0,
                 attributes: list[str] | None = None, mos_range: tuple[float, float] = MOS_RANGE) -> pd.DataFrame:
    """Test and val rows (no predictions yet): every split tests a different random subset of the images."""
    rng = np.random.default_rng(seed)
    attributes = attributes or ATTRIBUTES
    ids = [f"img{i:03d}" for i in range(n_images)]
    scenes = [f"s{i % n_scenes}" for i in range(n_images)]
    lo, hi = mos_range
    mos = {a: rng.uniform(lo, hi, n_images) for a in attributes}
    frames = []
    for k, split in enumerate(splits):
        order = np.random.default_rng(seed + 100 + k).permutation(n_images)
        n_test = int(round(0.7 * n_images))
        roles = np.where(np.isin(np.arange(n_images), order[:n_test]), "test", "val")
        for a in attributes:
            frames.append(pd.DataFrame({"image_id": ids, "attribute": a, "mos": mos[a], "split": split,
                                        "role": roles, "scene": scenes}))
    return pd.concat(frames, ignore_index=True)


def with_predictions(truth: pd.DataFrame, kind: str, noise: float = 0.5, seed: int = 1) -> pd.DataFrame:
    """``perfect`` (pred = MOS), ``monotone`` (a strictly increasing non-linear map of MOS), ``noisy``
    (MOS + Gaussian noise of sd ``noise``), ``constant`` or ``reversed`` (pred = -MOS)."""
    rng = np.random.default_rng(seed)
    mos = truth["mos"].to_numpy(float)
    if kind == "perfect":
        pred = mos.copy()
    elif kind == "monotone":
        pred = np.exp(mos)
    elif kind == "noisy":
        pred = mos + rng.normal(0, noise, mos.size)
    elif kind == "constant":
        pred = np.full(mos.size, 3.0)
    elif kind == "reversed":
        pred = -mos
    else:
        raise ValueError(kind)
    return truth.assign(pred=pred)


def write_experiment(root: Path, name: str, frame: pd.DataFrame, dataset: str = "toy", model: str = "backbone_mlp",
                     tables: list[str] | None = None, protocol: str = "standard", label: str | None = None,
                     simulated: bool = True, mos_range: tuple[float, float] = MOS_RANGE,
                     n_params: int = 1_500_000, model_kwargs: dict[str, Any] | None = None,
                     extra_meta: dict[str, Any] | None = None) -> None:
    """Write the prediction parquet + JSON of one experiment as the training stage does."""
    out = Path(root) / "results" / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    frame = frame.assign(model=model, experiment=name)
    tested_on = frame["dataset"].fillna(dataset) if "dataset" in frame.columns else dataset
    frame = frame.assign(dataset=tested_on)
    columns = ["image_id", "attribute", "pred", "mos", "split", "role", "scene", "model", "dataset", "experiment"]
    frame[columns].to_parquet(out / f"{name}.parquet", index=False)
    meta = {"experiment": name, "label": label or name, "model": model, "model_kwargs": model_kwargs or {},
            "dataset": dataset, "attributes": sorted(frame["attribute"].unique(), key=ATTRIBUTES.index)
            if set(frame["attribute"]) <= set(ATTRIBUTES) else sorted(frame["attribute"].unique()),
            "mos_range": list(mos_range), "simulated": simulated, "dataset_source": "toy",
            "tables": tables or [], "protocol": protocol, "splits": sorted(frame["split"].unique()),
            "n_params": n_params, "train_seconds": 1.0, "profile": "default", **(extra_meta or {})}
    (out / f"{name}.json").write_text(json.dumps(meta))


def params_dict(experiments: dict[str, dict[str, Any]], datasets: tuple[str, ...] = ("toy",),
                bootstrap: int = 50) -> dict[str, Any]:
    """A params mapping: toy datasets and one ``backbone_mlp`` experiment entry per name (``tables``,
    ``protocol``, ``label``, ``dataset`` taken from each experiment's dict)."""
    exps = {}
    for name, spec in experiments.items():
        exps[name] = {"dataset": spec.get("dataset", "toy"), "tables": spec.get("tables", []),
                      "protocol": spec.get("protocol", "standard"),
                      "model": {"name": "backbone_mlp", **spec.get("model_kwargs", {"backbone": "resnet18"})}}
        if "label" in spec:
            exps[name]["label"] = spec["label"]
    return {"seed": 0,
            "datasets": {d: {"source": "toy", "builder": "toy", "cache_size": 64} for d in datasets},
            "experiments": exps, "evaluate": {"bootstrap": bootstrap}}
