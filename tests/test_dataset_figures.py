"""Dataset figures are reproducible: the rater-vs-MOS strip plot jitters the same way in every run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from iqalab.dataset_figures import rater_tiers  # noqa: E402


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    tiers = ["all", "1.0-3.0", "3.0-5.0"]
    return pd.DataFrame({"tier": np.repeat(tiers, 12), "plcc": rng.uniform(-0.2, 1.0, 36),
                         "kept": np.tile([True] * 11 + [False], 3)})


def _points(fig: plt.Figure) -> np.ndarray:
    return np.concatenate([c.get_offsets() for c in fig.axes[0].collections if len(c.get_offsets())])


def test_rater_tiers_jitter_is_seeded_and_leaves_the_global_generator_alone() -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = _points(rater_tiers(_table(), "overall"))
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.seed(7)  # a different global state must not change the drawing
    second = _points(rater_tiers(_table(), "overall"))
    plt.close("all")
    assert first.shape == second.shape and first.shape[0] >= 33
    np.testing.assert_array_equal(first, second)
