"""Real-dataset adapters: each benchmark's own files (``data/raw/<name>/``) -> canonical tables.

One module per benchmark (``koniq10k``, ``clive``, ``bid``, ``spaq``, ``piq23``, ``gfiqa``, ``cgfiqa``) plus
``generic`` for FGLive-10K/SFIQA-Bench-style tables; :mod:`.base` holds what they share (checked reading,
image checks, hard-linking images into the output, atomic publish). ``docs/datasets.md`` lists where each
benchmark is published, the folder layout each adapter expects and the ``params.yaml`` entry that enables it.

>>> adapt("koniq10k", Path("data/raw/koniq10k"), Path("build/datasets/koniq10k"), n_splits=20)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iqalab.data.adapters import bid, cgfiqa, clive, generic, gfiqa, koniq10k, piq23, spaq
from iqalab.data.adapters.base import AdapterFn, DatasetCard, Layout
from iqalab.data.schema import DataError, Dataset

#: adapter name -> ``adapt(raw_root, out_root, **options) -> Dataset``
ADAPTERS: dict[str, AdapterFn] = {
    "koniq10k": koniq10k.adapt,
    "clive": clive.adapt,
    "bid": bid.adapt,
    "spaq": spaq.adapt,
    "piq23": piq23.adapt,
    "gfiqa": gfiqa.adapt,
    "cgfiqa": cgfiqa.adapt,
    "generic": generic.adapt,
}

#: other spellings found in papers and configs -> adapter name
ALIASES: dict[str, str] = {
    "koniq": "koniq10k", "koniq-10k": "koniq10k", "livec": "clive", "live_challenge": "clive",
    "gfiqa20k": "gfiqa", "gfiqa-20k": "gfiqa", "cgfiqa40k": "cgfiqa", "cgfiqa-40k": "cgfiqa",
    "piq2023": "piq23", "fglive": "generic", "sfiqa": "generic",
}

#: adapter name -> its :class:`DatasetCard` (provenance, scale, expected layout)
CARDS: dict[str, DatasetCard] = {
    "koniq10k": koniq10k.CARD, "clive": clive.CARD, "bid": bid.CARD, "spaq": spaq.CARD, "piq23": piq23.CARD,
    "gfiqa": gfiqa.CARD, "cgfiqa": cgfiqa.CARD, "generic": generic.CARD,
}


#: adapter name -> the published layouts it reads (tried in order; see :func:`.base.find_layout`)
LAYOUTS: dict[str, tuple[Layout, ...]] = {
    "koniq10k": koniq10k.LAYOUTS, "clive": clive.LAYOUTS, "bid": bid.LAYOUTS, "spaq": spaq.LAYOUTS,
    "piq23": piq23.LAYOUTS, "gfiqa": gfiqa.LAYOUTS, "cgfiqa": cgfiqa.LAYOUTS, "generic": generic.LAYOUTS,
}


def resolve(name: str) -> str:
    """Canonical adapter name for ``name`` (aliases accepted, case-insensitive)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in ADAPTERS:
        raise DataError(f"unknown dataset adapter {name!r}; available: {sorted(ADAPTERS)} "
                        f"(aliases: {sorted(ALIASES)})")
    return key


def adapt(name: str, raw_root: Path, out_root: Path, **kwargs: Any) -> Dataset:
    """Run adapter ``name`` on ``raw_root`` and write the canonical dataset to ``out_root`` (replaced whole).

    ``kwargs`` are the adapter's options (``params.yaml``: ``datasets.<ds>.options``). Missing/wrong folders,
    bad columns, out-of-range scores, missing or unreadable images and duplicates raise
    :class:`~iqalab.data.schema.DataError` naming the file and row; nothing is left half-written.
    """
    return ADAPTERS[resolve(name)](Path(raw_root), Path(out_root), **kwargs)


__all__ = ["ADAPTERS", "ALIASES", "CARDS", "DatasetCard", "adapt", "resolve"]
