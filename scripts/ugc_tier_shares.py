"""ugc_sim's MOS tier shares over several seeds: the measurement behind the README's calibration note on its tails.

Builds ugc_sim (:func:`iqalab.sim.builders.ugc_sim`) in a temporary folder once per seed, at the size
``params.yaml`` gives it unless ``--images`` / ``--size`` say otherwise, and prints each seed's count and share of images per REQA tier (Bad < 20,
Poor, Fair, Good, Excellent >= 80 on 0-100; the builder's own ``tier_counts``, which the calibration report's
``bad_tier_share`` / ``excellent_tier_share`` are computed from). ``--severity`` and ``--conditions`` replace
:data:`iqalab.sim.builders.UGC_SEVERITY` and :data:`~iqalab.sim.builders.UGC_CONDITIONS` for the run, ``--exponent``
the ground truth's power-mean exponent of the ``ugc`` profile (:data:`iqalab.sim.observers.PROFILE_EXPONENT`), to
try a refit before changing the builder or the ground truth::

    python scripts/ugc_tier_shares.py --seeds 0 1 2 3 4 5 6 7
    python scripts/ugc_tier_shares.py --seeds 0 1 2 --severity 0.33 0.30 4 --conditions 0.36 0.36 0.18 0.10
    python scripts/ugc_tier_shares.py --seeds 0 1 2 --images 720 --exponent -1.5 --severity 0.33 0.30 4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import iqalab.sim.builders as builders
import iqalab.sim.observers as observers
from iqalab.analysis.metrics import TIERS as BEST_FIRST
from iqalab.config import load_params
from iqalab.sim.scenes import CONDITIONS as SCENE_CONDITIONS

ROOT = Path(__file__).resolve().parents[1]
TIERS = tuple(reversed(BEST_FIRST))  # Bad .. Excellent, the order of the builder's tier_counts
CONDITIONS = tuple(SCENE_CONDITIONS)


def tier_counts(seed: int, n_images: int, image_size: int = 256) -> list[int]:
    """Images per tier (Bad .. Excellent) of ugc_sim built with ``seed`` and ``n_images``."""
    with tempfile.TemporaryDirectory(prefix="ugc-tiers-") as folder:
        ds = builders.ugc_sim(Path(folder), seed=seed, n_images=n_images, image_size=image_size)
    return [int(c) for c in ds.meta["generator"]["tier_counts"]]


def main(argv: list[str] | None = None) -> None:
    profile = load_params(ROOT / "params.yaml").datasets["ugc_sim"].options  # the default run's size
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--images", type=int, default=profile["n_images"],
                        help=f"n_images (default: params.yaml's {profile['n_images']})")
    parser.add_argument("--size", type=int, default=profile["image_size"],
                        help=f"image_size (default: params.yaml's {profile['image_size']})")
    parser.add_argument("--severity", type=float, nargs=3, metavar=("OFFSET", "SPAN", "K"),
                        help="UGC_SEVERITY: offset + span x Beta(k, k)")
    parser.add_argument("--conditions", type=float, nargs=4, metavar=CONDITIONS,
                        help="UGC_CONDITIONS: odds of outdoor, indoor, lowlight, night")
    parser.add_argument("--exponent", type=float, help="PROFILE_EXPONENT['ugc']: the overall's power-mean exponent")
    args = parser.parse_args(argv)
    saved = builders.UGC_SEVERITY, builders.UGC_CONDITIONS, observers.PROFILE_EXPONENT["ugc"]
    try:  # the overrides hold for this run only (the module's values are restored, also in a test process)
        if args.severity:
            builders.UGC_SEVERITY = tuple(args.severity)
        if args.conditions:
            builders.UGC_CONDITIONS = dict(zip(CONDITIONS, args.conditions, strict=True))
        if args.exponent is not None:
            observers.PROFILE_EXPONENT["ugc"] = args.exponent
        print(f"UGC_SEVERITY={builders.UGC_SEVERITY} UGC_CONDITIONS={builders.UGC_CONDITIONS} "
              f"exponent={observers.PROFILE_EXPONENT['ugc']} n_images={args.images}")
        print(f"{'seed':>4s} " + " ".join(f"{t:>14s}" for t in TIERS))
        for seed in args.seeds:
            counts = np.array(tier_counts(seed, args.images, args.size))
            shares = counts / counts.sum()
            print(f"{seed:4d} " + " ".join(f"{c:5d} ({s:6.2%})" for c, s in zip(counts, shares, strict=True)),
                  flush=True)
    finally:
        builders.UGC_SEVERITY, builders.UGC_CONDITIONS, observers.PROFILE_EXPONENT["ugc"] = saved


if __name__ == "__main__":
    main()
