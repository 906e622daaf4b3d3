"""Where `make repro`'s time goes: wall time of every papermill stage of the last `dvc repro`, from the executed
notebooks' own papermill metadata (``build/executed/*.ipynb``: start, end and every cell's duration). Run after a
`dvc repro` (nothing is executed, so it takes a second):

    .venv/bin/python benchmarks/stage_times.py [--wall 3060] [--top 15] [--since 2026-12-02T12:30]

Printed: the stages grouped by kind (ingest, annotation_stats, train by model, evaluate, gmad, ...) with their sum,
the slowest stages, and the fixed cost of a stage: the seconds papermill spends before and between cells (starting
the kernel) plus the notebook's first cell after the parameters (imports, among them torch, and the params
validation). With ``--wall`` (the run's wall seconds, e.g. from ``/usr/bin/time``), the remainder is what the three command-line stages (profile, cross_dataset, report)
and DVC's own hashing took; each line also gives its share of the 20-minute target (issue #23) so a reader sees what
a cut would buy. Only notebooks whose papermill start is at or after ``--since`` count (a partial rerun leaves older
executed copies behind).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path

TARGET_S = 20 * 60


def _kind(name: str, experiments: dict[str, str]) -> str:
    """``03_train_dbcnn_portrait`` -> ``train: dbcnn``; ``01_ingest_x`` -> ``ingest``."""
    stem = name.split("_", 1)[1]
    for kind in ("ingest", "annotation_stats", "train"):
        if stem.startswith(kind + "_"):
            if kind == "train":
                return f"train: {experiments.get(stem[len('train_'):], '?')}"
            return kind
    return stem


def _experiments(params: Path) -> dict[str, str]:
    """Experiment name -> model name from the params file (without validating it)."""
    import yaml

    data = yaml.safe_load(params.read_text())
    return {name: (spec.get("model") or {}).get("name", "?") for name, spec in (data.get("experiments") or {}).items()}


def read_times(folder: Path, since: str | None = None) -> list[dict]:
    """One row per executed notebook: name, wall seconds, the sum of cell seconds and the seconds of the first cell
    after the parameters (``iqalab.notebook.setup``: imports and params validation)."""
    rows = []
    for path in sorted(folder.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        pm = nb.get("metadata", {}).get("papermill", {})
        if not pm.get("duration") or (since and pm.get("start_time", "") < since):
            continue
        code = [c for c in nb["cells"] if c.get("cell_type") == "code"]
        cells = [c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0 for c in code]
        setup = [d for c, d in zip(code, cells)
                 if not {"parameters", "injected-parameters"} & set(c.get("metadata", {}).get("tags", []))]
        rows.append({"name": path.stem, "wall": float(pm["duration"]), "cells": float(sum(cells)),
                     "setup": float(setup[0]) if setup else 0.0, "start": pm.get("start_time", ""),
                     "end": pm.get("end_time", "")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executed", type=Path, default=Path("build/executed"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--wall", type=float, default=None, help="the whole run's wall seconds")
    parser.add_argument("--since", default=None, help="ignore notebooks started before this ISO time")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    rows = read_times(args.executed, args.since)
    if not rows:
        raise SystemExit(f"no executed notebooks with papermill metadata in {args.executed}")
    experiments = _experiments(args.params)
    total = sum(r["wall"] for r in rows)
    first = min(datetime.fromisoformat(r["start"]) for r in rows)
    last = max(datetime.fromisoformat(r["end"]) for r in rows)
    span = (last - first).total_seconds()

    def line(label: str, seconds: float, extra: str = "") -> str:
        return f"{label:<34} {seconds:8.1f} s {seconds / 60:6.1f} min {seconds / TARGET_S:6.2f} of 20 min {extra}"

    print(f"{len(rows)} papermill stages, first start {first:%Y-%m-%d %H:%M:%S}, last end {last:%H:%M:%S} "
          f"(span {span / 60:.1f} min)")
    print(line("sum of papermill stages", total))
    if args.wall:
        print(line("rest of the run (CLI stages, DVC)", args.wall - total))
        print(line("whole run (--wall)", args.wall))
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_kind[_kind(r["name"], experiments)].append(r["wall"])
    print("\nby kind (stages):")
    for kind, walls in sorted(by_kind.items(), key=lambda kv: -sum(kv[1])):
        print(line(f"  {kind} ({len(walls)})", sum(walls)))
    overhead = sum(r["wall"] - r["cells"] for r in rows)
    setup_cells = sum(r["setup"] for r in rows)
    print("\nfixed cost of a stage:")
    print(line("  papermill outside cells (kernel)", overhead, f"({overhead / len(rows):.1f} s per stage)"))
    print(line("  setup cell (imports, params)", setup_cells, f"({setup_cells / len(rows):.1f} s per stage)"))
    print(f"\nslowest {args.top}:")
    for r in sorted(rows, key=lambda r: -r["wall"])[: args.top]:
        print(line(f"  {r['name']}", r["wall"]))


if __name__ == "__main__":
    main()
