"""GFIQA-20K (generic face image quality) adapter.

S. Su, H. Lin, V. Hosu, O. Wiedemann, J. Sun, Y. Zhu, H. Liu, Y. Zhang, D. Saupe, "Going the extra mile in face
image quality assessment: A novel database and model", IEEE TMM 2023. SFIQA (seed 003, Sec. V-A, Tables III, IV)
follows DSL-FIQA's protocol on it: random 7:1:2 train/val/test splits.

Published as ``mos_val_rating.csv`` (img_name, mos; MOS normalised to [0, 1]) and the 20,000 512x512 faces in
``image/``. The release gives no split; the default is ``n_splits`` seeded 7:1:2 splits ``random_XX`` (val 10%,
test 20%) plus the cross-dataset ``full_train``/``full_test``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from iqalab.data.adapters.base import (
    RANGE_HINT,
    DatasetCard,
    Layout,
    default_splits,
    file_checksums,
    find_layout,
    inspect_images,
    publish,
    read_table,
    relative_image_path,
)
from iqalab.data.schema import Dataset, check_range, check_unique, numeric, require_columns

RATINGS = "mos_val_rating.csv"
IMAGES = "image"
LAYOUTS = (Layout("release", {"ratings": (RATINGS,), "images": (IMAGES,)}, image_dirs=(IMAGES,)),)

CARD = DatasetCard(
    name="gfiqa",
    title="GFIQA-20K",
    attributes=("overall",),
    mos_range=(0.0, 1.0),
    url="https://database.mmsp-kn.de/gfiqa-20k-database.html",
    licence="research use, see the database page",
    citation="S. Su, H. Lin, V. Hosu, O. Wiedemann, J. Sun, Y. Zhu, H. Liu, Y. Zhang, D. Saupe. Going the extra "
             "mile in face image quality assessment: A novel database and model. IEEE TMM, 2023.",
    layout=(RATINGS + " (img_name, mos)", IMAGES + "/<img_name>"),
)


def adapt(raw_root: Path, out_root: Path, *, n_splits: int = 10, test_fraction: float = 0.2,
          val_fraction: float = 0.1, seed: int = 0, cross: bool = True,
          mos_range: tuple[float, float] | None = None, link: str = "hardlink", verify: bool = True,
          workers: int = 4, dataset_name: str | None = None) -> Dataset:
    """Turn ``raw_root`` (GFIQA-20K as published) into a canonical dataset at ``out_root``."""
    raw_root, out_root = Path(raw_root), Path(out_root)
    found = find_layout(CARD, raw_root, LAYOUTS)
    top, raw_root = raw_root, found.root
    scale = tuple(mos_range) if mos_range is not None else CARD.mos_range
    table = read_table(raw_root / RATINGS)
    require_columns(table, RATINGS, ["img_name", "mos"])
    names = [relative_image_path(v, RATINGS, i, "img_name") for i, v in enumerate(table["img_name"])]
    check_unique(names, RATINGS, "img_name")
    mos = numeric(table, RATINGS, "mos")
    check_range(mos, RATINGS, "mos", scale, hint=RANGE_HINT)
    raw_paths = [f"{IMAGES}/{n}" for n in names]
    widths, heights = inspect_images(raw_root, raw_paths, RATINGS, verify=verify, workers=workers)
    images = pd.DataFrame({
        "image_id": names, "raw_path": raw_paths, "scene": names, "condition": None,
        "width": widths, "height": heights, "mos_overall": mos, "std_overall": np.nan,
    })
    splits = default_splits(images, n_splits, test_fraction, val_fraction, seed, cross)
    meta = CARD.meta(scale, dataset_name, raw_files=file_checksums(raw_root, [RATINGS]), **found.meta(top))
    return publish(raw_root, out_root, images, splits, meta, link=link)
