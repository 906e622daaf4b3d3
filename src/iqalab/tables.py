"""Paper-style result tables: one numeric frame in, Markdown / CSV / LaTeX out, the best value per column in bold.

Owns the *presentation* of results (stages ``evaluate`` and ``significance`` build the numbers). A
:class:`Table` is a numeric frame (row keys in the index, one column per reported quantity; a column may be a
tuple such as ``("overall", "SRCC")`` for the grouped headers of the papers), an optional frame of standard
deviations of the same shape (shown as ``mean ± std`` when a value comes from several splits), and a caption
that names the dataset(s) and says whether they are simulated.

Bold marks the best value of each column, within the groups named by ``group_levels`` (e.g. per dataset, or
per dataset x metric as in REQA Table I where the SROCC and PLCC blocks are ranked separately). The direction
comes from the column name (errors, parameters, GMACs and latency: lower is better; counts: not ranked) unless
the table overrides it. Ties are all bold; a group with a single finite value gets no bold (nothing compared).

Rows named in ``reference_rows`` (the learnability yardstick's panel ceiling and pixel-feature probe, which are
not models) are left out of the ranking: they are never bold and never make a model's value lose its bold.

A row may carry a *status* (``row_status``: row key -> text, e.g. ``"pyiqa not installed"`` for a zero-shot
model whose weights are missing, :mod:`iqalab.status`): its missing cells show that text instead of ``–`` in the
Markdown and LaTeX outputs, and the CSV gains a ``status`` column (``ok`` for the other rows).

Writers:

- Markdown (``<name>.md``): the caption line, then a pipe table;
- CSV (``<name>.csv``): the numbers at full precision, a ``<column> std`` column next to every column that has
  standard deviations, and the caption as a first line starting with ``#`` (read with
  :func:`read_table_csv`, or ``pd.read_csv(path, skiprows=2)`` for a file :meth:`Table.write` wrote);
- LaTeX (``<name>.tex``): a ``table`` float with ``booktabs`` rules, ``\\textbf`` for the best values and the
  caption as ``\\caption``.

:meth:`Table.write` adds the run's provenance (:func:`iqalab.provenance.footer`: code commit, params hash, lock
hash, device, seed, package versions; issue 28) to every file: a ``<sub>`` footer line under the Markdown table, a
second ``#`` line of the CSV, a ``%`` comment line after the LaTeX float.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqalab.io import write_text
from iqalab.provenance import footer

log = logging.getLogger(__name__)

#: Substrings (lower case) of a column's last header level that make lower values better.
LOWER_IS_BETTER = ("mae", "rmse", "params", "gmacs", "latency", "error")
#: Column names (lower case, last header level) that are never ranked.
NOT_RANKED = ("n", "n_undefined", "n_images", "splits", "logistic_fallback", "fallback", "n_splits", "spread")
SIMULATED_NOTE = "SIMULATED data from the iqalab simulator, not a reproduction of the paper's numbers"
MISSING = "–"


def column_label(column: Hashable) -> str:
    """A flat header for a (possibly tuple) column: the non-empty levels joined by a space."""
    if isinstance(column, tuple):
        return " ".join(str(part) for part in column if str(part) != "")
    return str(column)


def default_direction(column: Hashable) -> str | None:
    """``"max"`` (higher is better), ``"min"`` or ``None`` (not ranked) from the column's last non-empty header
    level (``("Params (M)", "")`` is a parameter count)."""
    levels = [str(part) for part in column if str(part) != ""] if isinstance(column, tuple) else [str(column)]
    last = (levels[-1] if levels else "").lower()
    if last in NOT_RANKED:
        return None
    if any(key in last for key in LOWER_IS_BETTER):
        return "min"
    return "max"


def dataset_caption(datasets: Mapping[str, bool] | Sequence[tuple[str, bool]]) -> str:
    """``"Dataset: a (SIMULATED ...); b (real data)"``: every dataset a table draws on, and its nature."""
    items = list(datasets.items()) if isinstance(datasets, Mapping) else list(datasets)
    if not items:
        return "Dataset: none"
    parts = [f"{name} ({SIMULATED_NOTE if simulated else 'real data'})" for name, simulated in items]
    return ("Dataset: " if len(parts) == 1 else "Datasets: ") + "; ".join(parts)


@dataclass
class Table:
    """A result table in a paper's layout.

    ``data`` holds numbers (or text in descriptive columns such as a backbone name); its index levels are the
    row keys and become the leading columns of every output. ``std`` (same index and columns, may be partial)
    holds the standard deviation over splits. ``directions`` overrides :func:`default_direction` per column.
    """

    name: str
    data: pd.DataFrame
    caption: str
    std: pd.DataFrame | None = None
    group_levels: tuple[str, ...] = ()
    directions: dict[Hashable, str | None] = field(default_factory=dict)
    digits: int = 4
    bold: bool = True
    row_status: dict[Hashable, str] = field(default_factory=dict)
    #: row keys that are references, not models (the learnability yardstick): never ranked, never bold
    reference_rows: tuple[Hashable, ...] = ()
    provenance: Mapping[str, Any] | None = None  # the run's record (default: iqalab.provenance.current())

    def direction(self, column: Hashable) -> str | None:
        """How ``column`` is ranked: ``"max"``, ``"min"`` or ``None``."""
        if column in self.directions:
            return self.directions[column]
        return default_direction(column)

    def std_of(self) -> pd.DataFrame:
        """The standard deviations aligned with ``data`` (NaN where unknown)."""
        if self.std is None:
            return pd.DataFrame(np.nan, index=self.data.index, columns=self.data.columns)
        return self.std.reindex(index=self.data.index, columns=self.data.columns)

    def best_mask(self) -> pd.DataFrame:
        """True where a cell holds the best value of its column within its group (see the module docstring)."""
        mask = pd.DataFrame(False, index=self.data.index, columns=self.data.columns)
        if not self.bold or self.data.empty:
            return mask
        levels = [lvl for lvl in self.group_levels if lvl in (self.data.index.names or [])]
        positions = np.arange(len(self.data))
        if levels:
            keys = self.data.index.to_frame(index=False)[levels]
            groups = [np.asarray(idx) for idx in keys.groupby(levels, sort=False, dropna=False).indices.values()]
        else:
            groups = [positions]
        if self.reference_rows:
            ranked = ~np.asarray(self.data.index.isin(list(self.reference_rows)))
            groups = [rows[ranked[rows]] for rows in groups]
        for j, column in enumerate(self.data.columns):
            direction = self.direction(column)
            if direction is None:
                continue
            values = pd.to_numeric(self.data.iloc[:, j], errors="coerce").to_numpy(dtype=float)
            for rows in groups:
                v = values[rows]
                finite = np.isfinite(v)
                if finite.sum() < 2:
                    continue
                best = np.nanmax(v) if direction == "max" else np.nanmin(v)
                hit = rows[finite & np.isclose(v, best, rtol=0, atol=0.5 * 10.0 ** -(self.digits + 2))]
                mask.iloc[hit, j] = True
        return mask

    # ------------------------------------------------------------------------------------------ cells
    def _number(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if value is None or (isinstance(value, float | np.floating) and not math.isfinite(value)):
            return MISSING
        if isinstance(value, bool | np.bool_):
            return str(bool(value))
        if isinstance(value, int | np.integer):
            return str(int(value))
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        if not math.isfinite(number):
            return MISSING
        return f"{number:.{self.digits}f}" if self.digits > 0 else f"{number:.0f}"

    def cells(self, pm: str = " ± ") -> pd.DataFrame:
        """The display strings (value, and ``± std`` where a finite std is known), without bold."""
        std = self.std_of()
        out = pd.DataFrame("", index=self.data.index, columns=self.data.columns, dtype=object)
        statuses = self._statuses()
        for j in range(self.data.shape[1]):
            for i in range(self.data.shape[0]):
                text = self._number(self.data.iat[i, j])
                s = std.iat[i, j]
                if text != MISSING and isinstance(s, float | np.floating) and math.isfinite(s):
                    text += f"{pm}{self._number(s)}"
                if text == MISSING and statuses[i] is not None:
                    text = statuses[i]
                out.iat[i, j] = text
        return out

    def _statuses(self) -> list[str | None]:
        """The status text of each row (None for rows without one)."""
        return [self.row_status.get(key) for key in self.data.index] if self.row_status else \
            [None] * len(self.data)

    def _index_rows(self) -> list[list[str]]:
        frame = self.data.index.to_frame(index=False)
        return [[str(v) for v in row] for row in frame.itertuples(index=False, name=None)]

    def _index_names(self) -> list[str]:
        return [str(name) if name is not None else "" for name in self.data.index.names]

    # --------------------------------------------------------------------------------------- writers
    def to_markdown(self) -> str:
        """The caption line and a pipe table, best values as ``**bold**``."""
        cells, mask = self.cells(), self.best_mask()
        header = self._index_names() + [column_label(c) for c in self.data.columns]
        text = [len(self.data) > 0 and all(isinstance(v, str) for v in self.data.iloc[:, j])
                for j in range(self.data.shape[1])]
        align = ["---"] * len(self._index_names()) + ["---" if t else "---:" for t in text]
        lines = [f"**{self.name}**: {self.caption}", "", _md_row(header), _md_row(align)]
        for i, keys in enumerate(self._index_rows()):
            values = [f"**{c}**" if mask.iat[i, j] else c for j, c in enumerate(cells.iloc[i])]
            lines.append(_md_row(keys + values))
        return "\n".join(lines) + "\n"

    def to_frame(self) -> pd.DataFrame:
        """The CSV content: index levels as columns, numbers at full precision, ``<column> std`` next to each
        column with a known standard deviation."""
        std = self.std_of()
        out = self.data.index.to_frame(index=False)
        for j, column in enumerate(self.data.columns):
            label = column_label(column)
            out[label] = self.data.iloc[:, j].to_numpy()
            s = pd.to_numeric(std.iloc[:, j], errors="coerce")
            if np.isfinite(s.to_numpy(dtype=float)).any():
                out[f"{label} std"] = s.to_numpy()
        if any(status is not None for status in self._statuses()):
            out["status"] = [status or "ok" for status in self._statuses()]
        return out

    def to_csv(self) -> str:
        """CSV text with the caption as a ``#`` comment line."""
        return f"# {self.name}: {self.caption}\n" + self.to_frame().to_csv(index=False, float_format="%.6g")

    def to_latex(self) -> str:
        """A ``booktabs`` table float (``\\textbf`` for the best values)."""
        cells, mask = self.cells(pm=r" $\pm$ "), self.best_mask()
        n_index, n_cols = len(self._index_names()), self.data.shape[1]
        spec = "l" * n_index + "r" * n_cols
        header = [_tex(h) for h in self._index_names()] + [_tex(column_label(c)) for c in self.data.columns]
        lines = [
            r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(self.caption)}}}",
            rf"\label{{tab:{self.name}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
            " & ".join(header) + r" \\", r"\midrule",
        ]
        for i, keys in enumerate(self._index_rows()):
            values = []
            for j, text in enumerate(cells.iloc[i]):
                body = text if r"$\pm$" in text else _tex(text)
                if r"$\pm$" in text:
                    body = r" $\pm$ ".join(_tex(part) for part in text.split(r" $\pm$ "))
                values.append(rf"\textbf{{{body}}}" if mask.iat[i, j] else body)
            lines.append(" & ".join([_tex(k) for k in keys] + values) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path, formats: Sequence[str] = ("md", "csv", "tex")) -> list[Path]:
        """Write ``<folder>/<name>.{md,csv,tex}`` atomically, each with the provenance footer (see the module
        docstring); returns the paths."""
        line = footer(self.provenance)
        writers = {"md": lambda: f"{self.to_markdown()}\n<sub>{line}</sub>\n",
                   "csv": lambda: self.to_csv().replace("\n", f"\n# {line}\n", 1),
                   "tex": lambda: f"{self.to_latex()}% {line}\n"}
        paths = []
        for fmt in formats:
            path = Path(folder) / f"{self.name}.{fmt}"
            write_text(path, writers[fmt]())
            paths.append(path)
        log.info("wrote table %s (%d rows) to %s", self.name, len(self.data), folder)
        return paths


def _md_row(values: Sequence[str]) -> str:
    return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                "–": "--", "→": r"$\rightarrow$", "≥": r"$\geq$"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def read_table_csv(path: str | Path) -> pd.DataFrame:
    """Read a table written by :meth:`Table.to_csv` or :meth:`Table.write` (skips the leading ``#`` lines:
    caption and provenance)."""
    skip = 0
    with open(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            skip += 1
    return pd.read_csv(path, skiprows=skip)


def matrix_table(name: str, matrix: pd.DataFrame, caption: str, digits: int = 3, bold: bool = True,
                 row_name: str | None = None) -> Table:
    """A model x model matrix as a :class:`Table`: gMAD's aggressiveness / resistance (rows attackers or
    defenders, ``digits=3``, best per column in bold) and the significance matrices (REQA Table III: -1 / 0 / 1
    verdicts, ``digits=0``, ``bold=False``). Row and column order are kept; ``row_name`` names the row-key
    column (default: the matrix's index name)."""
    data = matrix.copy()
    if row_name is not None:
        data.index.name = row_name
    return Table(name, data, caption, digits=digits, bold=bold)
