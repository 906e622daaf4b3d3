"""scripts/ugc_tier_shares.py: the per-seed ugc_sim tier shares quoted in the README's calibration note."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

import iqalab.sim.builders as builders
import iqalab.sim.observers as observers

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ugc_tier_shares", ROOT / "scripts" / "ugc_tier_shares.py")
assert _spec is not None and _spec.loader is not None
ugc_tier_shares = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ugc_tier_shares)


def test_prints_the_builders_tier_counts_per_seed_and_restores_the_overrides(tmp_path, capsys):
    """Each seed's row holds the builder's own tier counts (a dataset built here with the same seed and size) and
    their shares; ``--severity`` / ``--conditions`` / ``--exponent`` change the draw or the ground truth for the run
    and are put back afterwards."""
    before = builders.UGC_SEVERITY, dict(builders.UGC_CONDITIONS), observers.PROFILE_EXPONENT["ugc"]
    ugc_tier_shares.main(["--seeds", "0", "1", "--images", "24", "--size", "48"])
    rows = [line for line in capsys.readouterr().out.splitlines() if re.match(r"^\s+\d+ ", line)]
    assert len(rows) == 2
    for seed, row in zip((0, 1), rows, strict=True):
        counts = [int(c) for c in re.findall(r"(\d+) \(", row)]
        shares = [float(s) / 100 for s in re.findall(r"\(\s*([\d.]+)%\)", row)]
        want = builders.ugc_sim(tmp_path / f"s{seed}", seed=seed, n_images=24, image_size=48).meta["generator"]
        assert counts == want["tier_counts"] and sum(counts) == 24
        np.testing.assert_allclose(shares, np.array(counts) / 24, atol=5e-5)

    ugc_tier_shares.main(["--seeds", "0", "--images", "24", "--size", "48", "--severity", "0.6", "0.3", "4",
                          "--conditions", "0", "0", "0", "1", "--exponent", "-3"])
    out = capsys.readouterr().out
    assert "UGC_SEVERITY=(0.6, 0.3, 4.0)" in out and "'night': 1.0" in out and "exponent=-3.0" in out
    assert (builders.UGC_SEVERITY, builders.UGC_CONDITIONS, observers.PROFILE_EXPONENT["ugc"]) == before


def test_the_exponent_override_reaches_the_ground_truth(capsys):
    """A more negative exponent lets the worst attribute weigh more: at least as many images fall in Bad."""
    counts = {}
    for exponent in ("-0.5", "-4"):
        ugc_tier_shares.main(["--seeds", "0", "--images", "40", "--size", "48", "--exponent", exponent])
        row = next(line for line in capsys.readouterr().out.splitlines() if re.match(r"^\s+0 ", line))
        counts[exponent] = [int(c) for c in re.findall(r"(\d+) \(", row)]
    assert counts["-4"][0] >= counts["-0.5"][0] and counts["-4"] != counts["-0.5"]
