"""Stage ``train``: train one experiment (every split it lists) and write its predictions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iqalab.config import Params
from iqalab.train.engine import train_experiment


def run(params: Params, experiment: str, root: Path, progress: bool = True) -> pd.DataFrame:
    """Train ``experiment``; returns the predictions also written to ``results/predictions/<experiment>.parquet``."""
    return train_experiment(params, experiment, root, progress=progress)
