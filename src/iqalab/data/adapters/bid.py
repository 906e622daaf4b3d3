"""BID (Blurred Image Database) adapter.

A. Ciancio, A. L. N. T. da Costa, E. A. B. da Silva, A. Said, R. Samadani, P. Obrador, "No-reference blur
assessment of digital pictures based on multifeature classifiers", IEEE TIP 20(1):64-75, 2011. Used by REQA
(Sec. IV-A, Tables II, IV).

Published as ``DatabaseGrades.xlsx`` (first sheet: ``Image Number``, ``Average Subjective Grade`` on 0-5) and
586 images ``DatabaseImage%04d.JPG``, either beside the workbook or in ``ImageDatabase/`` (both layouts
circulate). A ``Standard Deviation``/``std`` column, where a copy carries one, becomes ``std_overall``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iqalab.data.adapters.base import (
    DatasetCard,
    Layout,
    default_splits,
    first_existing,
    inspect_images,
    open_layout,
    overall_images,
    publish_release,
    read_table,
    scores_in_range,
)
from iqalab.data.schema import DataError, Dataset, check_unique, numeric, require_columns

GRADES = "DatabaseGrades.xlsx"
NUMBER, GRADE = "Image Number", "Average Subjective Grade"
IMAGE_DIRS = ("", "ImageDatabase/")
LAYOUTS = (Layout("workbook with the images beside it or in ImageDatabase/", {"grades": (GRADES,)},
                  image_dirs=("ImageDatabase", ".")),)

CARD = DatasetCard(
    name="bid",
    title="BID",
    attributes=("overall",),
    mos_range=(0.0, 5.0),
    url="http://www02.smt.ufrj.br/~eduardo/ImageDatabase.htm",
    licence="research use, see the database page",
    citation="A. Ciancio, A. L. N. T. da Costa, E. A. B. da Silva, A. Said, R. Samadani, P. Obrador. "
             "No-reference blur assessment of digital pictures based on multifeature classifiers. "
             "IEEE TIP 20(1):64-75, 2011.",
    layout=(GRADES + f" ({NUMBER}, {GRADE})",
            "DatabaseImage0001.JPG .. DatabaseImage0586.JPG (beside the workbook or in ImageDatabase/)"),
)


def adapt(raw_root: Path, out_root: Path, *, n_splits: int = 20, test_fraction: float = 0.2,
          val_fraction: float = 0.0, seed: int = 0, cross: bool = True,
          mos_range: tuple[float, float] | None = None, link: str = "hardlink", verify: bool = True,
          workers: int = 4, dataset_name: str | None = None) -> Dataset:
    """Turn ``raw_root`` (BID as published) into a canonical dataset at ``out_root``."""
    found, scale = open_layout(CARD, raw_root, LAYOUTS, mos_range)
    raw_root = found.root
    table = read_table(raw_root / GRADES)
    require_columns(table, GRADES, [NUMBER, GRADE])
    numbers = numeric(table, GRADES, NUMBER)
    fractional = numbers != np.round(numbers)
    if fractional.any():
        row = int(np.flatnonzero(fractional)[0])
        raise DataError(f"{GRADES} row {row} (line {row + 2}) column '{NUMBER}': {numbers[row]:g} is not an "
                        "image number")
    names = [f"DatabaseImage{int(n):04d}.JPG" for n in numbers]
    check_unique(names, GRADES, NUMBER)
    mos = scores_in_range(table, GRADES, GRADE, scale)
    std_col = next((c for c in table.columns if c.lower() in ("std", "standard deviation", "sd")), None)
    std = numeric(table, GRADES, std_col, allow_missing=True) if std_col else np.full(len(names), np.nan)
    raw_paths = [first_existing(raw_root, [d + n for d in IMAGE_DIRS]) or n for n in names]
    widths, heights = inspect_images(raw_root, raw_paths, GRADES, verify=verify, workers=workers)
    images = overall_images(names, raw_paths, widths, heights, mos, std)
    splits = default_splits(images, n_splits, test_fraction, val_fraction, seed, cross)
    return publish_release(CARD, found, out_root, images, splits, scale, dataset_name, [GRADES], link=link)
