"""Stage ``train``: train one experiment (every split it lists) and write its predictions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iqalab.config import Params
from iqalab.models.nss import feature_cache
from iqalab.train.engine import train_experiment


def run(params: Params, experiment: str, root: Path, progress: bool = True) -> pd.DataFrame:
    """Train ``experiment``; returns the predictions also written to ``results/predictions/<experiment>.parquet``.

    Classical models (NIQE, BRISQUE) keep each image's features in ``build/features`` (content-keyed,
    :func:`iqalab.models.nss.feature_cache`): every split and every experiment on the same images analyses each
    image once."""
    with feature_cache(root / "build" / "features"):
        return train_experiment(params, experiment, root, progress=progress)
