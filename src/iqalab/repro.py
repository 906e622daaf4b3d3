"""Determinism in one place: every stage seeds through :func:`seed_everything`."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = True) -> np.random.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a NumPy generator for local use.

    With ``deterministic`` the CPU path gives identical results run to run; on CUDA cuDNN is put in
    deterministic mode (``cudnn.benchmark`` is then switched on only by the engine when asked for speed).
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        if deterministic:
            torch.backends.cudnn.deterministic = True
    except ImportError:  # pragma: no cover - torch is a hard dependency, kept optional for the sim alone
        pass
    return np.random.default_rng(seed)
