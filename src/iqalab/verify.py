"""``make verify`` (issue 28): rerun the committed pipeline in a temporary clone and compare every number of its
``results/`` with the committed ones within a stated tolerance, printing what differs.

:func:`verify` clones ``HEAD`` into a temporary folder, copies the clone's (committed) ``results/``, runs
``dvc repro --force`` there with the clone's ``src`` first on ``PYTHONPATH`` and compares (:func:`compare_results`):
JSON numbers (``results/metrics/summary.json`` and every other JSON), the tables' CSVs and the predictions parquet
cell by cell, the Markdown and LaTeX tables and ``report.md`` number by number. Within tolerance means
``|rerun - committed| <= ATOL + RTOL * |committed|`` (:data:`RTOL` 1e-5, :data:`ATOL` 1e-8: the CSVs hold 6
significant digits), or, for a number printed with *d* decimals, one unit in its last digit (a rounding flip).
Provenance fields and timings (:data:`IGNORED`) are not compared. A hand-edited metric is a difference, reported
with its file, place, committed and rerun values; the exit status is then 1.

Kept apart from :mod:`iqalab.repro` (seeding, a dependency of every training run) so that a change to the check
does not rerun the training stages.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


#: keys (JSON) and columns (tables, parquet) left out of the comparison: provenance and timings, which differ
#: between any two runs by design
IGNORED = re.compile(r"^_?provenance$|seconds|latency|duration", re.IGNORECASE)
#: default tolerance: |rerun - committed| <= ATOL + RTOL * |committed| (CSV files hold 6 significant digits); a
#: number shown with d decimals (Markdown, LaTeX) may also differ by one unit in its last digit (a rounding flip)
RTOL, ATOL = 1e-5, 1e-8
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Difference:
    """One number or piece of text of ``file`` (relative to ``results/``) that the rerun did not reproduce."""

    file: str
    where: str
    committed: Any
    rerun: Any

    def __str__(self) -> str:
        return f"{self.file} {self.where}: committed {self.committed!r}, rerun {self.rerun!r}"


def _close(a: float, b: float, rtol: float, atol: float, unit: float = 0.0) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= max(atol + rtol * abs(a), unit * (1 + 1e-9))


def compare_json(committed: Any, rerun: Any, file: str = "", rtol: float = RTOL, atol: float = ATOL,
                 where: str = "") -> list[Difference]:
    """Differences between two parsed JSON values: numbers within the tolerance, everything else equal, keys
    matching :data:`IGNORED` skipped."""
    here = where or "(top)"
    if isinstance(committed, dict) and isinstance(rerun, dict):
        out: list[Difference] = []
        for key in sorted(set(committed) | set(rerun), key=str):
            if IGNORED.search(str(key)):
                continue
            path = f"{where}.{key}" if where else str(key)
            if key not in rerun or key not in committed:
                out.append(Difference(file, path, committed.get(key, "<missing>"), rerun.get(key, "<missing>")))
            else:
                out += compare_json(committed[key], rerun[key], file, rtol, atol, path)
        return out
    if isinstance(committed, list) and isinstance(rerun, list):
        if len(committed) != len(rerun):
            return [Difference(file, f"{here} length", len(committed), len(rerun))]
        return [d for k, (a, b) in enumerate(zip(committed, rerun, strict=True))
                for d in compare_json(a, b, file, rtol, atol, f"{where}[{k}]")]
    numbers = (int, float)
    if isinstance(committed, numbers) and isinstance(rerun, numbers) and not isinstance(committed, bool) \
            and not isinstance(rerun, bool):
        return [] if _close(float(committed), float(rerun), rtol, atol) else \
            [Difference(file, here, committed, rerun)]
    return [] if committed == rerun else [Difference(file, here, committed, rerun)]


def compare_frames(committed: pd.DataFrame, rerun: pd.DataFrame, file: str = "", rtol: float = RTOL,
                   atol: float = ATOL) -> list[Difference]:
    """Differences between two tables (CSV or parquet contents): same columns and rows, numeric cells within
    the tolerance (NaN equals NaN), other cells equal; columns matching :data:`IGNORED` skipped."""
    if list(committed.columns) != list(rerun.columns):
        return [Difference(file, "columns", list(committed.columns), list(rerun.columns))]
    if len(committed) != len(rerun):
        return [Difference(file, "rows", len(committed), len(rerun))]
    out: list[Difference] = []
    first = committed.columns[0] if len(committed.columns) else None
    for column in committed.columns:
        if IGNORED.search(str(column)):
            continue
        a, b = committed[column], rerun[column]
        numeric = pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b) \
            and not pd.api.types.is_bool_dtype(a)
        for i in range(len(a)):
            x, y = a.iat[i], b.iat[i]
            same = _close(float(x), float(y), rtol, atol) if numeric else \
                (pd.isna(x) and pd.isna(y)) or str(x) == str(y)
            if not same:
                key = f" ({committed[first].iat[i]})" if first is not None and first != column else ""
                out.append(Difference(file, f"row {i}{key} column {column!r}", _plain(x), _plain(y)))
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _unit(token: str) -> float:
    """One unit in the last shown digit of a number token (``0.8123`` -> 1e-4; integers and exponents: 0)."""
    mantissa = re.split(r"[eE]", token)[0]
    return 10.0 ** -len(mantissa.split(".")[1]) if "." in mantissa and re.search(r"[eE]", token) is None else 0.0


def compare_text(committed: str, rerun: str, file: str = "", where: str = "", rtol: float = RTOL,
                 atol: float = ATOL) -> list[Difference]:
    """Two pieces of text with numbers: the text around the numbers equal, the numbers within the tolerance or
    one unit in their last shown digit."""
    a_numbers, b_numbers = _NUMBER.findall(committed), _NUMBER.findall(rerun)
    if _NUMBER.sub("#", committed) != _NUMBER.sub("#", rerun) or len(a_numbers) != len(b_numbers):
        return [Difference(file, where, committed, rerun)]
    for x, y in zip(a_numbers, b_numbers, strict=True):
        if not _close(float(x), float(y), rtol, atol, unit=max(_unit(x), _unit(y))):
            return [Difference(file, where, committed, rerun)]
    return []


def _rendered_rows(text: str, suffix: str) -> list[tuple[str, list[str]]]:
    """The lines of a Markdown or LaTeX table file (or of ``report.md``) as ``(label, cells)``: table rows split
    into cells, the header cells naming each column (cells under an :data:`IGNORED` header dropped), other lines
    as one cell. Provenance lines and ``report.md``'s environment section are left out."""
    from iqalab.provenance import FOOTER_PREFIX

    text = text.split("\n## Environment\n", 1)[0]
    rows: list[tuple[str, list[str]]] = []
    header: list[str] = []
    in_table = False
    for n, line in enumerate(text.splitlines(), 1):
        if FOOTER_PREFIX in line:
            continue
        if suffix == ".md" and line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not in_table:
                header, in_table = cells, True
            rows.append((f"line {n}", [c for h, c in zip(header, cells, strict=False) if not IGNORED.search(h)]))
            continue
        in_table = False
        if suffix == ".tex" and line.endswith(r"\\"):
            cells = [c.strip() for c in line[:-2].split(" & ")]
            header = cells if not header else header
            rows.append((f"line {n}", [c for h, c in zip(header, cells, strict=False) if not IGNORED.search(h)]))
        else:
            rows.append((f"line {n}", [line]))
    return rows


def compare_rendered(committed: str, rerun: str, file: str, suffix: str, rtol: float = RTOL,
                     atol: float = ATOL) -> list[Difference]:
    """Differences between two Markdown / LaTeX renderings of the same results (see :func:`_rendered_rows`)."""
    a, b = _rendered_rows(committed, suffix), _rendered_rows(rerun, suffix)
    if len(a) != len(b):
        return [Difference(file, "lines", len(a), len(b))]
    out: list[Difference] = []
    for (where, x), (_, y) in zip(a, b, strict=True):
        out += compare_text(" | ".join(x), " | ".join(y), file, where, rtol, atol)
    return out


#: the outputs ``verify`` compares (globs under ``results/``); figures are not compared
COMPARED = ("**/*.json", "**/*.csv", "**/*.parquet", "**/*.md", "**/*.tex")
COMPARED_SUFFIXES = (".json", ".csv", ".parquet", ".md", ".tex")


def compare_results(committed: Path, rerun: Path, rtol: float = RTOL, atol: float = ATOL) -> list[Difference]:
    """Every difference between two ``results/`` folders beyond the tolerance: JSON numbers (``summary.json``
    and every other JSON), table CSVs and predictions parquet cell by cell, Markdown and LaTeX tables and
    ``report.md`` number by number. Provenance fields and timings (:data:`IGNORED`) are not compared; a file
    present on one side only is a difference."""
    from iqalab.tables import read_table_csv

    committed, rerun = Path(committed), Path(rerun)
    files = sorted({p.relative_to(root).as_posix() for root in (committed, rerun) for glob in COMPARED
                    for p in root.glob(glob) if p.is_file()})
    out: list[Difference] = []
    for rel in files:
        a, b = committed / rel, rerun / rel
        if not a.is_file() or not b.is_file():
            out.append(Difference(rel, "file", "present" if a.is_file() else "<missing>",
                                  "present" if b.is_file() else "<missing>"))
            continue
        try:
            if a.suffix == ".json":
                out += compare_json(json.loads(a.read_text()), json.loads(b.read_text()), rel, rtol, atol)
            elif a.suffix == ".csv":
                out += compare_frames(read_table_csv(a), read_table_csv(b), rel, rtol, atol)
            elif a.suffix == ".parquet":
                out += compare_frames(pd.read_parquet(a), pd.read_parquet(b), rel, rtol, atol)
            else:
                out += compare_rendered(a.read_text(), b.read_text(), rel, a.suffix, rtol, atol)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            out.append(Difference(rel, "file", "readable", f"unreadable ({exc})"))
    return out


def format_differences(differences: list[Difference], limit: int = 50) -> str:
    """A readable list of differences (the first ``limit``, then a count)."""
    lines = [f"  {d}" for d in differences[:limit]]
    if len(differences) > limit:
        lines.append(f"  ... and {len(differences) - limit} more")
    return "\n".join(lines)


def clone_committed(root: Path, folder: Path) -> Path:
    """A fresh clone of the committed tree (``HEAD``) of the repository at ``root`` in ``folder/clone``, with
    ``data/raw`` linked from ``root`` when present (downloaded benchmarks are not in git)."""
    clone = Path(folder) / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(root), str(clone)], check=True)
    raw = Path(root) / "data" / "raw"
    if raw.is_dir():
        (clone / "data").mkdir(exist_ok=True)
        (clone / "data" / "raw").symlink_to(raw.resolve(), target_is_directory=True)
    return clone


def rerun_pipeline(clone: Path) -> None:
    """``dvc repro --force`` in ``clone`` with this interpreter's environment, the clone's ``src`` first on
    ``PYTHONPATH`` (the clone's code runs, not an editable install's; checked before the run) and no
    ``IQALAB_WORKDIR`` / ``IQALAB_PARAMS`` (the clone's ``params.yaml`` and folders)."""
    clone = Path(clone)
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in {"IQALAB_WORKDIR", "IQALAB_PARAMS"}}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE=env.get("HF_HUB_OFFLINE", "1"),
               PYTHONPATH=os.pathsep.join([str(clone / "src"), *filter(None, [env.get("PYTHONPATH")])]))
    probe = subprocess.run([sys.executable, "-c", "import iqalab; print(iqalab.__file__)"], env=env, cwd=clone,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(probe).resolve().is_relative_to(clone.resolve()):
        raise RuntimeError(f"the rerun would import iqalab from {probe}, not from the clone {clone}")
    dvc = bindir / "dvc" if (bindir / "dvc").exists() else Path("dvc")
    log.info("verify: dvc repro --force in %s (takes as long as `make repro`)", clone)
    subprocess.run([str(dvc), "repro", "--force"], env=env, cwd=clone, check=True)


def verify(root: Path, rtol: float = RTOL, atol: float = ATOL, keep: bool = False) -> list[Difference]:
    """Rerun the committed pipeline in a temporary clone and compare its ``results/`` with the committed ones
    (copied from the clone before the rerun; :func:`compare_results`). The temporary folder is removed unless
    ``keep``."""
    folder = Path(tempfile.mkdtemp(prefix="iqalab-verify-"))
    try:
        clone = clone_committed(root, folder)
        committed = folder / "committed"
        shutil.copytree(clone / "results", committed)
        rerun_pipeline(clone)
        return compare_results(committed, clone / "results", rtol, atol)
    finally:
        if keep:
            log.info("verify: kept %s", folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)


#: data files (no room for a footer) traced by a record in the same folder, written by the same stage
_TRACED_BY_FOLDER = (".parquet", ".csv")


def carries_record(path: Path) -> bool:
    """Whether ``path`` names its provenance: a JSON with a ``provenance`` / ``_provenance`` record, a table
    file with a provenance footer, ``report.md`` with its environment section."""
    from iqalab.provenance import parse_footer

    path = Path(path)
    try:
        text = path.read_text() if path.suffix != ".parquet" else ""
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix == ".json":
        try:
            meta = json.loads(text)
        except ValueError:
            return False
        return isinstance(meta, dict) and isinstance(meta.get("provenance", meta.get("_provenance")), dict)
    if path.name == "report.md":
        return "\n## Environment\n" in text
    return path.suffix in {".md", ".csv", ".tex"} and parse_footer(text) is not None


def untraced(results: Path) -> list[str]:
    """The files under ``results`` that hold numbers (JSON, CSV, parquet, Markdown, LaTeX) but cannot be traced
    to a commit, a params hash and an environment: no record of their own and, for parquet and plain CSV data,
    none in a JSON or table of the same folder. Figures (``figures/``) are traced through their stage's record
    and are not listed."""
    results = Path(results)
    files = sorted(p for p in results.rglob("*") if p.is_file() and p.suffix in {*COMPARED_SUFFIXES}
                   and p.relative_to(results).parts[0] != "figures")
    carrying = {p for p in files if carries_record(p)}
    folders = {p.parent for p in carrying}
    return [p.relative_to(results).as_posix() for p in files
            if p not in carrying and not (p.suffix in _TRACED_BY_FOLDER and p.parent in folders)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m iqalab.verify run`` (``make verify``) or ``... compare COMMITTED RERUN``: exit 0 when every
    compared number is reproduced within the tolerance, 1 (listing the differences) otherwise. ``... traced
    [RESULTS]``: exit 1 listing the files that hold numbers without provenance (:func:`untraced`)."""
    parser = argparse.ArgumentParser(prog="python -m iqalab.verify", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="rerun the committed pipeline in a temporary clone and compare")
    run.add_argument("--keep", action="store_true", help="keep the temporary folder")
    trace = sub.add_parser("traced", help="list the files of a results folder without provenance")
    trace.add_argument("results", type=Path, nargs="?", default=Path("results"))
    cmp = sub.add_parser("compare", help="compare two results folders (no rerun)")
    cmp.add_argument("committed", type=Path)
    cmp.add_argument("rerun", type=Path)
    for p in (run, cmp):
        p.add_argument("--rtol", type=float, default=RTOL)
        p.add_argument("--atol", type=float, default=ATOL)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "traced":
        missing = untraced(args.results)
        if missing:
            log.error("%d file(s) of %s hold numbers without provenance:\n%s", len(missing), args.results,
                      "\n".join(f"  {m}" for m in missing))
            return 1
        log.info("every file of %s that holds numbers names its provenance", args.results)
        return 0
    if args.command == "run":
        from iqalab.io import project_root

        differences = verify(project_root(), args.rtol, args.atol, args.keep)
    else:
        differences = compare_results(args.committed, args.rerun, args.rtol, args.atol)
    tolerance = f"|rerun - committed| <= {args.atol:g} + {args.rtol:g} * |committed|"
    if differences:
        log.error("NOT REPRODUCED: %d difference(s) beyond %s (provenance and timings not compared):\n%s",
                  len(differences), tolerance, format_differences(differences))
        return 1
    log.info("reproduced: every compared number of results/ within %s", tolerance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
