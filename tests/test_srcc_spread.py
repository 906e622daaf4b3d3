"""scripts/srcc_spread.py: the per-cell test-SRCC differences between two runs quoted in the README."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("srcc_spread", ROOT / "scripts" / "srcc_spread.py")
assert _spec is not None and _spec.loader is not None
srcc_spread = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(srcc_spread)


def _run(folder: Path, experiment: str, model: str, preds: dict[tuple[str, str], np.ndarray],
         mos: np.ndarray) -> None:
    rows = []
    for (attribute, split), values in preds.items():
        for k, (p, m) in enumerate(zip(values, mos, strict=True)):
            rows.append({"image_id": f"i{k}", "attribute": attribute, "split": split, "role": "test", "pred": p,
                         "mos": m})
            rows.append({"image_id": f"v{k}", "attribute": attribute, "split": split, "role": "val", "pred": 0.0,
                         "mos": m})
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / "predictions" / f"{experiment}.parquet")
    (folder / "predictions" / f"{experiment}.json").write_text(json.dumps({"model": model}))


def test_cells_are_scipy_srcc_of_the_test_rows_and_classical_models_are_kept_apart(tmp_path):
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 30)
    a = {("overall", "s0"): mos + rng.normal(0, 1, 30), ("noise", "s0"): rng.normal(0, 1, 30)}
    b = {("overall", "s0"): mos + rng.normal(0, 1, 30), ("noise", "s0"): a[("noise", "s0")]}
    _run(tmp_path / "a", "net", "backbone_mlp", a, mos)
    _run(tmp_path / "b", "net", "backbone_mlp", b, mos)
    _run(tmp_path / "a", "niqe_x", "niqe", {("overall", "s0"): mos}, mos)
    _run(tmp_path / "b", "niqe_x", "niqe", {("overall", "s0"): mos}, mos)
    cells, overall = srcc_spread.compare(tmp_path / "a", tmp_path / "b")
    net = cells[cells["experiment"] == "net"].set_index("attribute")
    expected = abs(spearmanr(a[("overall", "s0")], mos).statistic - spearmanr(b[("overall", "s0")], mos).statistic)
    assert net.loc["overall", "diff"] == pytest.approx(expected) and expected > 0
    assert net.loc["noise", "diff"] == 0.0 and net["trained"].all()
    assert not cells[cells["experiment"] == "niqe_x"]["trained"].any()
    assert set(overall["experiment"]) == {"net", "niqe_x"}


def test_runs_with_other_test_images_are_refused_by_name(tmp_path):
    mos = np.arange(10.0)
    _run(tmp_path / "a", "net", "backbone_mlp", {("overall", "s0"): mos}, mos)
    _run(tmp_path / "b", "net", "backbone_mlp", {("overall", "s0"): mos[:8]}, mos[:8])
    with pytest.raises(ValueError, match="net.parquet: the two runs predict different test images"):
        srcc_spread.compare(tmp_path / "a", tmp_path / "b")
