"""Figures shared by the stages and notebooks (matplotlib/seaborn; PNG + PDF, paper column width).

Each function returns the figure; :func:`save` writes it as PNG and PDF atomically (photographic figures as JPEG). Figures of simulated data carry
a "simulated data" label so they are never mistaken for a paper's figure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from iqalab.data.schema import Dataset
from iqalab.io import atomic_path

log = logging.getLogger(__name__)
COLUMN_WIDTH_IN = 3.5  # one column of a two-column paper
PAGE_WIDTH_IN = 7.16


#: Formats of a figure made of photographs (montages, picks): JPEG keeps ``results/`` small, where PNG and PDF
#: store every pixel losslessly (a 4x8 montage was 2.9 MB as PNG plus 2.5 MB as PDF).
PHOTO_FORMATS: tuple[str, ...] = ("jpg",)
#: Formats of every other figure (plots, heat maps): PNG to look at, PDF for a paper.
PLOT_FORMATS: tuple[str, ...] = ("png", "pdf")


def is_photographic(fig: plt.Figure) -> bool:
    """True when the figure shows at least one RGB(A) image (a photograph); colour-mapped 2-D arrays are not."""
    return any(np.ndim(image.get_array()) == 3 for ax in fig.axes for image in ax.get_images())


def save(fig: plt.Figure, path_stem: str | Path, formats: Sequence[str] | None = None) -> list[Path]:
    """Write ``fig`` as ``<stem>.<format>`` for each format (atomically) and return the paths.

    By default a photographic figure (:func:`is_photographic`) is written as JPEG (quality 90) and any other as
    PNG and PDF (JPEG at matplotlib's default quality, as the gMAD pair montages).
    """
    stem = Path(path_stem)
    if formats is None:
        formats = PHOTO_FORMATS if is_photographic(fig) else PLOT_FORMATS
    written = []
    for fmt in formats:
        target = stem.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", metadata={"CreationDate": None} if fmt == "pdf" else None)
        written.append(target)
    return written


def label_simulated(fig: plt.Figure, simulated: bool) -> None:
    """Stamp 'simulated data' in the corner of figures made from simulator datasets."""
    if simulated:
        fig.text(0.995, 0.005, "simulated data (iqalab simulator), not a paper reproduction", ha="right",
                 va="bottom", fontsize=6, color="0.4")


def montage(ds: Dataset, n: int = 8, attribute: str | None = None, cache_size: int | None = None) -> plt.Figure:
    """``n`` images spread from the lowest to the highest MOS of ``attribute``, titled with their MOS."""
    from iqalab.data.cache import decode_image
    from iqalab.data.schema import safe_relative_path

    attribute = attribute or ds.attributes[0]
    col = f"mos_{attribute}"
    table = ds.images.dropna(subset=[col]).sort_values(col).reset_index(drop=True)
    picks = np.unique(np.linspace(0, len(table) - 1, num=min(n, len(table))).round().astype(int))
    fig, axes = plt.subplots(1, len(picks), figsize=(PAGE_WIDTH_IN, PAGE_WIDTH_IN / len(picks) + 0.4), squeeze=False)
    for ax, k in zip(axes[0], picks):
        row = table.iloc[k]
        ax.imshow(decode_image(safe_relative_path(ds.root, row["path"]), cache_size or 160))
        ax.set_title(f"{row[col]:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{ds.name}: {attribute} MOS, low to high", fontsize=9)
    label_simulated(fig, bool(ds.meta.get("simulated")))
    return fig


def learning_curves(model_dir: str | Path) -> plt.Figure:
    """Training loss and validation SRCC per epoch for every split under ``build/models/<experiment>/``."""
    fig, (ax_loss, ax_srcc) = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 2.4))
    for hist_path in sorted(Path(model_dir).glob("*/history.json")):
        # null (NaN written by the engine, e.g. SRCC of constant predictions) -> NaN
        history = pd.DataFrame(json.loads(hist_path.read_text())["history"]).apply(pd.to_numeric, errors="coerce")
        if history.empty:
            continue
        label = hist_path.parent.name
        ax_loss.plot(history["epoch"] + 1, history["train_loss"], marker="o", label=label)
        if "val_srcc" in history:
            ax_srcc.plot(history["epoch"] + 1, history["val_srcc"], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="training loss")
    ax_srcc.set(xlabel="epoch", ylabel="validation SRCC")
    if ax_loss.lines:
        ax_loss.legend(fontsize=7)
    fig.tight_layout()
    return fig
