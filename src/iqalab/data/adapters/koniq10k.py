"""KonIQ-10k adapter.

V. Hosu, H. Lin, T. Sziranyi, D. Saupe, "KonIQ-10k: An ecologically valid database for deep learning of blind
image quality assessment", IEEE TIP 29:4041-4056, 2020. Used by REQA (Sec. IV-A, Tables I, II, IV-VI).

Published as ``koniq10k_scores_and_distributions.csv`` (image_name, c1..c5, c_total, MOS, SD, MOS_zscore) and
the images in ``1024x768/`` (``koniq10k_1024x768.zip``) or ``512x384/`` (``koniq10k_512x384.zip``); with
``resolution="auto"`` (default) the adapter reads ``1024x768/`` where present, else ``512x384/``, and records which
in ``dataset.json`` (``resolution``, ``raw_layout``). Everything may also sit in one folder an unzip left inside
``raw_root``. MOS is on the 1-5 ACR scale (the tables keep the published scale); when the file has
``MOS_zscore`` (the published 0-100 z-score MOS) it is kept as ``tier_overall``, the 0-100 value REQA's quality
tiers are read from (``dataset.json`` ``tier_scale``), else the tiers rescale MOS to 0-100 downstream. The vote
histogram c1..c5 is kept as ``ratings.parquet``: one row per vote with an anonymous rater id ``anon_<k>``
numbered within the image (KonIQ does not publish rater identities, so ids are not linked across images). ``n_overall`` = c_total,
``std_overall`` = SD. If ``koniq10k_distributions_sets.csv`` (image_name, set) is present, its
training/validation/test sets become the split ``official``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from iqalab.data.adapters.base import (
    DatasetCard,
    Layout,
    default_splits,
    inspect_images,
    open_layout,
    overall_images,
    publish_release,
    read_score_table,
    read_table,
    scores_in_range,
)
from iqalab.data.schema import DataError, Dataset, numeric, require_columns
from iqalab.data.splits import mapped_split

SCORES = "koniq10k_scores_and_distributions.csv"
SETS = "koniq10k_distributions_sets.csv"
VOTES = ("c1", "c2", "c3", "c4", "c5")
RESOLUTIONS = ("1024x768", "512x384")
#: The two image releases, each beside the same score file (and the optional official sets).
LAYOUTS = tuple(Layout(f"{res} release", {"scores": (SCORES,), "images": (res,)}, {"sets": (SETS,)},
                       image_dirs=(res,)) for res in RESOLUTIONS)

CARD = DatasetCard(
    name="koniq10k",
    title="KonIQ-10k",
    attributes=("overall",),
    mos_range=(1.0, 5.0),
    url="https://database.mmsp-kn.de/koniq-10k-database.html",
    licence="research use; images from YFCC100M under their Creative Commons licences, see the database page",
    citation="V. Hosu, H. Lin, T. Sziranyi, D. Saupe. KonIQ-10k: An ecologically valid database for deep "
             "learning of blind image quality assessment. IEEE TIP 29:4041-4056, 2020.",
    layout=(SCORES + " (image_name, c1..c5, c_total, MOS, SD, MOS_zscore)",
            "1024x768/<image_name> or 512x384/<image_name> (resolution: auto picks 1024x768 where present)",
            SETS + " (optional: image_name, set)"),
)


def adapt(raw_root: Path, out_root: Path, *, resolution: str = "auto", n_splits: int = 20,
          test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0, cross: bool = True,
          ratings: bool = True, mos_range: tuple[float, float] | None = None, link: str = "hardlink",
          verify: bool = True, workers: int = 4, dataset_name: str | None = None) -> Dataset:
    """Turn ``raw_root`` (KonIQ-10k as published) into a canonical dataset at ``out_root``."""
    if resolution != "auto" and resolution not in RESOLUTIONS:
        raise DataError(f"KonIQ-10k option resolution={resolution!r}: expected 'auto' or one of {RESOLUTIONS}")
    layouts = LAYOUTS if resolution == "auto" else [LAYOUTS[RESOLUTIONS.index(resolution)]]
    found, scale = open_layout(CARD, raw_root, layouts, mos_range)
    raw_root, resolution = found.root, found["images"]
    table, names = read_score_table(raw_root, SCORES, "image_name", [*VOTES, "c_total", "MOS", "SD"])
    mos = scores_in_range(table, SCORES, "MOS", scale)
    sd = numeric(table, SCORES, "SD", allow_missing=True)
    counts = np.stack([numeric(table, SCORES, c) for c in VOTES], axis=1)
    total = numeric(table, SCORES, "c_total")
    bad = (counts < 0).any(axis=1) | (counts.sum(axis=1) != total)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{SCORES} row {row} (line {row + 2}) column 'c_total': vote counts c1..c5 "
                        f"{counts[row].astype(int).tolist()} do not sum to c_total={total[row]:g}")
    raw_paths = [f"{resolution}/{n}" for n in names]
    widths, heights = inspect_images(raw_root, raw_paths, SCORES, verify=verify, workers=workers)
    images = overall_images(names, raw_paths, widths, heights, mos, sd).assign(n_overall=total)
    tier_scale = {}
    if "MOS_zscore" in table.columns:  # REQA's tiers (Sec. IV-A-1) on KonIQ's 0-100 scale
        images["tier_overall"] = scores_in_range(table, SCORES, "MOS_zscore", (0.0, 100.0))
        tier_scale = {"tier_scale": {"overall": "MOS_zscore (0-100)"}}
    splits = [default_splits(images, n_splits, test_fraction, val_fraction, seed, cross)]
    read = [SCORES]
    if found.get("sets"):
        sets = read_table(raw_root / SETS)
        require_columns(sets, SETS, ["image_name", "set"])
        role_of = dict(zip(sets["image_name"].astype(str), sets["set"].astype(str)))
        try:
            splits.append(mapped_split(images, role_of, name="official"))
        except (KeyError, ValueError) as exc:
            raise DataError(f"{SETS}: {exc.args[0]}") from exc
        read.append(SETS)
    vote_table = _votes(names, counts.astype(np.int64)) if ratings else None
    # the rater ids number votes within an image: no rater-level statistics on them (analysis.annotation)
    extra = {"ratings_from": "vote histogram c1..c5, anonymous raters numbered per image",
             "rater_identities": False} if ratings else {}
    return publish_release(CARD, found, out_root, images, pd.concat(splits, ignore_index=True), scale,
                           dataset_name, read, ratings=vote_table, link=link, resolution=resolution, **extra,
                           **tier_scale)


def _votes(names: list[str], counts: np.ndarray) -> pd.DataFrame:
    """Expand per-image vote histograms (columns = scores 1..5) into one row per vote."""
    per_image = counts.sum(axis=1)
    image_ids = np.repeat(np.asarray(names, dtype=object), per_image)
    scores = np.concatenate([np.repeat(np.arange(1, counts.shape[1] + 1), row) for row in counts]) \
        if len(counts) else np.zeros(0, dtype=np.int64)
    within = np.concatenate([np.arange(n) for n in per_image]) if len(counts) else np.zeros(0, dtype=np.int64)
    return pd.DataFrame({
        "image_id": image_ids,
        "rater": [f"anon_{k:03d}" for k in within],
        "attribute": "overall",
        "score": scores.astype(float),
    })
