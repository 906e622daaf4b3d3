"""The paper-table registry: one function per table of a paper, registered by name with :func:`register_table`.

A table function takes the :class:`~iqalab.paper_tables.common.TableContext` (every score of the run, the
experiments' metadata, display labels, profiles) and the experiments tagged for it (``experiments.<e>.tables`` in
``params.yaml``), and returns a :class:`iqalab.tables.Table` (or ``None`` when it has nothing to show). The names
are what ``experiments.<e>.tables`` may hold (:func:`table_names`, which config validation checks against);
a table may also answer to alias tags (REQA Tables V and VI share the ablation layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from iqalab.paper_tables.common import TableContext
    from iqalab.tables import Table

TableFn = Callable[["TableContext", list[str]], "Table | None"]
#: score groups beyond the whole test set that a table may read (:func:`iqalab.analysis.evaluation.compute_scores`)
Group = Literal["tier", "scene_median"]


@dataclass(frozen=True)
class PaperTable:
    """One registered table: its name (the output file stem), the tags that select its rows (the name and any
    aliases), the score groups it needs computed, the paper module it belongs to and the function."""

    name: str
    tags: tuple[str, ...]
    needs: tuple[Group, ...]
    paper: str
    build: TableFn


#: the papers in the compendium's order (tables are built and reported in this order, then registration order)
PAPERS = ("tuningiqa", "fhiqa", "reqa", "sfiqa")
_TABLES: dict[str, PaperTable] = {}


def register_table(name: str, *, aliases: tuple[str, ...] = (), needs: tuple[Group, ...] = ()
                   ) -> Callable[[TableFn], TableFn]:
    """Register the decorated function as paper table ``name``; ``aliases`` are further tags selecting its rows,
    ``needs`` the score groups (``tier``, ``scene_median``) it reads. Names and aliases are unique."""

    def decorator(func: TableFn) -> TableFn:
        taken = {tag for table in _TABLES.values() for tag in table.tags}
        for tag in (name, *aliases):
            if tag in taken:
                raise ValueError(f"paper table tag {tag!r} is registered twice")
        paper = func.__module__.rsplit(".", 1)[-1]
        _TABLES[name] = PaperTable(name, (name, *aliases), tuple(needs), paper, func)
        return func

    return decorator


def registered_tables() -> list[PaperTable]:
    """Every registered table: papers in :data:`PAPERS` order (others after), then each paper's registration order."""
    rank = {paper: i for i, paper in enumerate(PAPERS)}
    return sorted(_TABLES.values(), key=lambda table: rank.get(table.paper, len(PAPERS)))


def table_names() -> list[str]:
    """Every tag ``experiments.<e>.tables`` may hold: the registered table names and their aliases, in order."""
    return [tag for table in registered_tables() for tag in table.tags]


def tags_needing(group: Group) -> frozenset[str]:
    """The tags of the tables that read score group ``group`` (so the scores compute it for their rows)."""
    return frozenset(tag for table in _TABLES.values() if group in table.needs for tag in table.tags)
