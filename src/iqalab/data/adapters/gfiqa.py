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

from iqalab.data.adapters.base import (
    DatasetCard,
    Layout,
    default_splits,
    inspect_images,
    open_layout,
    overall_images,
    publish_release,
    read_score_table,
    scores_in_range,
)
from iqalab.data.schema import Dataset

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
    found, scale = open_layout(CARD, raw_root, LAYOUTS, mos_range)
    raw_root = found.root
    table, names = read_score_table(raw_root, RATINGS, "img_name", ["mos"])
    mos = scores_in_range(table, RATINGS, "mos", scale)
    raw_paths = [f"{IMAGES}/{n}" for n in names]
    widths, heights = inspect_images(raw_root, raw_paths, RATINGS, verify=verify, workers=workers)
    images = overall_images(names, raw_paths, widths, heights, mos)
    splits = default_splits(images, n_splits, test_fraction, val_fraction, seed, cross)
    return publish_release(CARD, found, out_root, images, splits, scale, dataset_name, [RATINGS], link=link)
