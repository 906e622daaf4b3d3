"""Rater-level statistics only where rater ids name people (issue 26).

KonIQ-10k publishes per-image vote histograms; the adapter expands them into votes numbered ``anon_000`` ... within
each image, so ``anon_000`` of one image and of the next are different people. The rater-vs-MOS figure and the
BT.500 observer screening used to treat those numbers as 139 raters. They now run only where the dataset has rater
identities, and the report says why they were skipped; per-image vote statistics (MOS confidence intervals) still
run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from iqalab.analysis.annotation import analyse, rater_identity_problem
from iqalab.data.adapters import adapt
from iqalab.data.schema import read_dataset

from ..test_adapters import FAST, make_koniq, write_image


def test_koniq_votes_give_no_rater_level_statistics(tmp_path: Path) -> None:
    make_koniq(tmp_path / "raw", n=8)
    adapt("koniq10k", tmp_path / "raw", tmp_path / "koniq", n_splits=2, **FAST)
    ds = read_dataset(tmp_path / "koniq")
    assert ds.meta["rater_identities"] is False
    assert ds.ratings is not None and ds.ratings["rater"].nunique() > 20  # the pseudo-raters are there...
    result = analyse(ds)
    assert "raters" not in result.report and "bt500" not in result.report  # ...and are not analysed
    assert result.rater_table is None and result.bt500 is None  # so no figure is drawn
    for section in ("raters", "bt500"):
        assert "not people" in result.skipped[section] and "vote histogram" in result.skipped[section]
    assert result.report["mos_ci"]["attributes"]["overall"]["n_images"] == 8  # per-image statistics stay


def _generic(root: Path, votes: pd.DataFrame, n: int = 6) -> Path:
    raw = root / "raw"
    for i in range(n):
        write_image(raw / "img" / f"{i}.png", i)
    mos = votes.groupby("image_id")["score"].mean()
    pd.DataFrame({"image": [f"img/{i}.png" for i in range(n)], "image_id": [f"i{i}" for i in range(n)],
                  "scene": [f"s{i // 2}" for i in range(n)],
                  "mos_overall": [mos[f"i{i}"] for i in range(n)]}).to_csv(raw / "images.csv", index=False)
    votes.to_csv(raw / "votes.csv", index=False)
    adapt("generic", raw, root / "out", mos_range=[1, 5], **FAST)
    return root / "out"


def test_raters_who_rate_many_images_are_analysed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    votes = pd.DataFrame([{"image_id": f"i{i}", "rater": f"r{r}", "attribute": "overall",
                           "score": float(rng.integers(1, 6))} for i in range(6) for r in range(5)])
    ds = read_dataset(_generic(tmp_path, votes))
    assert rater_identity_problem(ds) is None
    result = analyse(ds)
    assert result.report["raters"]["attributes"]["overall"]["n_raters"] == 5
    assert result.report["bt500"]["all"]["n_raters"] == 5
    assert "raters" not in result.skipped and "bt500" not in result.skipped


def test_rater_ids_never_seen_twice_are_not_raters(tmp_path: Path) -> None:
    """A ratings table without a dataset flag whose ids each vote on one image only has no rater to analyse."""
    rng = np.random.default_rng(0)
    votes = pd.DataFrame([{"image_id": f"i{i}", "rater": f"v{i}_{k}", "attribute": "overall",
                           "score": float(rng.integers(1, 6))} for i in range(6) for k in range(5)])
    ds = read_dataset(_generic(tmp_path, votes))
    result = analyse(ds)
    assert "more than one image" in result.skipped["raters"] and "bt500" not in result.report
    assert "mos_ci" in result.report
