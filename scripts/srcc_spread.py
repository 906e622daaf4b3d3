"""How far two runs' test SRCC lie apart, cell by cell: the spread quoted under "Results on another CPU".

For every experiment in both ``<a>/predictions`` and ``<b>/predictions`` and every (attribute, split) of its test
predictions, the pooled Spearman correlation with MOS of the values the tables score (the predictions, or a published
model's raw score: :func:`iqalab.analysis.evaluation.scored_values`) is computed in each run
(:func:`iqalab.analysis.metrics.srcc`) and the absolute difference taken. Printed: the median, 90th percentile and largest difference over the cells of the trained models
and, separately, of the classical ones (NIQE, BRISQUE, pyiqa metrics), and each experiment's overall SRCC averaged
over its test splits in both runs. Both runs must predict the same test images. Typical use, against the results
of an earlier commit::

    git archive <commit> results | tar -x -C /tmp/before
    python scripts/srcc_spread.py /tmp/before/results results
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from iqalab.analysis.evaluation import scored_values
from iqalab.analysis.metrics import srcc

CLASSICAL = ("niqe", "brisque")


def cell_srcc(frame: pd.DataFrame, info: Mapping[str, Any]) -> pd.Series:
    """Test SRCC per (attribute, split) of one predictions parquet whose predictions JSON is ``info``."""
    test = frame[frame["role"] == "test"]
    return test.groupby(["attribute", "split"]).apply(
        lambda g: srcc(scored_values(g, info), g["mos"]), include_groups=False)


def compare(a: Path, b: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(cells, overall)``: one row per experiment, attribute and split with both SRCC, and per experiment its
    overall SRCC averaged over test splits in both runs."""
    cells, overall = [], []
    for path in sorted((a / "predictions").glob("*.parquet")):
        other = b / "predictions" / path.name
        if path.name.endswith(".pairs.parquet") or not other.is_file():
            continue
        x, y = pd.read_parquet(path), pd.read_parquet(other)
        if x.empty or y.empty:
            continue
        ids_x = x[x["role"] == "test"].groupby(["attribute", "split"])["image_id"].apply(frozenset)
        ids_y = y[y["role"] == "test"].groupby(["attribute", "split"])["image_id"].apply(frozenset)
        if not ids_x.equals(ids_y):
            raise ValueError(f"{path.name}: the two runs predict different test images")
        info_a = json.loads(path.with_suffix(".json").read_text())
        info_b = json.loads(other.with_suffix(".json").read_text())
        model = info_a["model"]
        trained = model not in CLASSICAL and not model.startswith("pyiqa:")
        both = pd.DataFrame({"a": cell_srcc(x, info_a), "b": cell_srcc(y, info_b)}).reset_index()
        both.insert(0, "experiment", path.stem)
        both["trained"] = trained
        cells.append(both)
        on = both[both["attribute"] == "overall"]
        if len(on):
            overall.append((path.stem, on["a"].mean(), on["b"].mean()))
    table = pd.concat(cells, ignore_index=True)
    table["diff"] = (table["a"] - table["b"]).abs()
    return table, pd.DataFrame(overall, columns=["experiment", "a", "b"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="a results folder (holding predictions/)")
    parser.add_argument("b", type=Path, help="another results folder")
    args = parser.parse_args()
    cells, overall = compare(args.a, args.b)
    for trained, group in cells.groupby("trained"):
        worst = group.loc[group["diff"].idxmax()]
        print(f"{'trained' if trained else 'classical'}: {len(group)} attribute x split cells; |dSRCC| median "
              f"{group['diff'].median():.4f}, 90th percentile {group['diff'].quantile(0.9):.4f}, largest "
              f"{group['diff'].max():.4f} ({worst['experiment']}, {worst['attribute']}, {worst['split']})")
    for row in overall.itertuples(index=False):
        print(f"  {row.experiment:28s} overall SRCC, mean over test splits: {row.a:.3f} -> {row.b:.3f}")


if __name__ == "__main__":
    main()
