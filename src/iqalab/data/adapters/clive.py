"""LIVE In the Wild Image Quality Challenge (CLIVE) adapter.

D. Ghadiyaram, A. C. Bovik, "Massive online crowdsourced study of subjective and objective picture quality",
IEEE TIP 25(1):372-387, 2016. Used by REQA (Sec. IV-A, Tables II-IV).

Published as ``Data/AllImages_release.mat`` (cell array ``AllImages_release`` of file names),
``Data/AllMOS_release.mat`` (``AllMOS_release``, MOS 0-100), ``Data/AllStdDev_release.mat``
(``AllStdDev_release``) and the images in ``Images/`` (the seven calibration images ``t1.bmp``..``t7.bmp`` in
``Images/trainingImages/``). The first seven entries are those calibration images and are dropped, as is
customary, leaving 1162 images. Rows in error messages are MATLAB entries counted from 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from iqalab.data.adapters.base import (
    RANGE_HINT,
    DatasetCard,
    Layout,
    default_splits,
    first_existing,
    inspect_images,
    open_layout,
    overall_images,
    publish_release,
)
from iqalab.data.schema import DataError, Dataset, check_range, check_unique

NAMES = "Data/AllImages_release.mat"
MOS = "Data/AllMOS_release.mat"
STD = "Data/AllStdDev_release.mat"
N_CALIBRATION = 7
#: ``ChallengeDB_release.zip`` unpacks to ``ChallengeDB_release/{Data,Images}``: read there or one level up.
LAYOUTS = (Layout("ChallengeDB release", {"names": (NAMES,), "mos": (MOS,), "std": (STD,), "images": ("Images",)},
                  image_dirs=("Images",)),)

CARD = DatasetCard(
    name="clive",
    title="LIVE Challenge (CLIVE)",
    attributes=("overall",),
    mos_range=(0.0, 100.0),
    url="https://live.ece.utexas.edu/research/ChallengeDB/index.html",
    licence="LIVE copyright notice: research use with attribution, see the database page",
    citation="D. Ghadiyaram, A. C. Bovik. Massive online crowdsourced study of subjective and objective picture "
             "quality. IEEE TIP 25(1):372-387, 2016.",
    layout=(NAMES + " (AllImages_release)", MOS + " (AllMOS_release)", STD + " (AllStdDev_release)",
            "Images/<name> (calibration images in Images/trainingImages/)"),
)


def _mat_variable(raw_root: Path, rel: str, key: str) -> np.ndarray:
    try:
        content = scipy.io.loadmat(raw_root / rel)
    except Exception as exc:  # scipy raises ValueError/MatReadError/TypeError for damaged files
        raise DataError(f"{raw_root / rel}: cannot be read as a MATLAB file ({exc})") from exc
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{rel} variable '{key}': not found (variables present: {found})")
    return np.asarray(content[key])


def _as_text(entry: Any) -> str:
    while isinstance(entry, np.ndarray):
        entry = entry.ravel()[0] if entry.size else ""
    return str(entry).strip()


def adapt(raw_root: Path, out_root: Path, *, drop_calibration: bool = True, n_splits: int = 20,
          test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0, cross: bool = True,
          mos_range: tuple[float, float] | None = None, link: str = "hardlink", verify: bool = True,
          workers: int = 4, dataset_name: str | None = None) -> Dataset:
    """Turn ``raw_root`` (CLIVE as published) into a canonical dataset at ``out_root``."""
    found, scale = open_layout(CARD, raw_root, LAYOUTS, mos_range)
    raw_root = found.root
    names = [_as_text(e) for e in _mat_variable(raw_root, NAMES, "AllImages_release").ravel()]
    mos = _mat_variable(raw_root, MOS, "AllMOS_release").astype(float).ravel()
    std = _mat_variable(raw_root, STD, "AllStdDev_release").astype(float).ravel()
    for rel, values in ((MOS, mos), (STD, std)):
        if len(values) != len(names):
            raise DataError(f"{rel}: {len(values)} entries but {NAMES} lists {len(names)} images")
    start = N_CALIBRATION if drop_calibration else 0
    entries = list(range(start, len(names)))  # 0-based; messages show MATLAB's 1-based entry
    names, mos, std = names[start:], mos[start:], std[start:]
    shown = [e + 1 for e in entries]
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{NAMES} entry {shown[i]}: empty file name")
    check_unique(names, NAMES, "AllImages_release", rows=shown, line_offset=None, unit="entry")
    if np.isnan(mos).any():
        i = int(np.flatnonzero(np.isnan(mos))[0])
        raise DataError(f"{MOS} entry {shown[i]}: MOS missing (NaN)")
    check_range(mos, MOS, "AllMOS_release", scale, rows=shown, line_offset=None, hint=RANGE_HINT,
                unit="entry")
    raw_paths = [first_existing(raw_root, [f"Images/{n}", f"Images/trainingImages/{n}"]) or f"Images/{n}"
                 for n in names]
    widths, heights = inspect_images(raw_root, raw_paths, NAMES, rows=shown, verify=verify, workers=workers,
                                     line_offset=None)
    images = overall_images(names, raw_paths, widths, heights, mos, std)
    splits = default_splits(images, n_splits, test_fraction, val_fraction, seed, cross)
    return publish_release(CARD, found, out_root, images, splits, scale, dataset_name, [NAMES, MOS, STD],
                           link=link, dropped_calibration_images=start)
