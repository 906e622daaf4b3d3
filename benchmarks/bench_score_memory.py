"""Memory benchmark: peak resident memory of ``iqalab score --model niqe`` on large photos, with the decode-ahead
queue bounded by ``--prefetch-mb`` (the default) and unbounded (the queue of two batches that ``iqalab score`` kept
before the bound), and the scoring rate of each.

A native-resolution model (NIQE, BRISQUE, pyiqa metrics; a checkpoint trained on native patches) holds each image
at its stored resolution while it waits to be scored: a 12 MP photo is 34 MiB of RGB pixels, a 24 MP one 69 MiB, so
two batches of 16 decoded ahead plus the batch being scored hold 1.6 GiB and 3.3 GiB. The bound counts each file's
decoded size from its header (:func:`iqalab.stages.score.decoded_nbytes`) from the moment its decode is submitted
until its batch is scored (:func:`iqalab.stages.score.decode_ahead`).

Each setting runs in a fresh Python process (``score_images`` on the same files, same model, same batch size), so
its peak RSS (``ru_maxrss``) is its own; the settings alternate for ``--rounds`` rounds. The files are synthetic
JPEGs (smooth gradients with texture and noise, quality 90) written once to a temporary folder. Run:

    .venv/bin/python benchmarks/bench_score_memory.py [--images 24] [--width 4000] [--height 3000] [--rounds 2]
        [--prefetch-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("bench_score_memory")

#: what each child process runs: score the folder, print the images, seconds and peak RSS (MiB) as JSON
CHILD = """
import json, resource, sys, time
from iqalab.stages.score import score_images
folder, prefetch_mb = sys.argv[1], float(sys.argv[2])
start = time.perf_counter()
frame = score_images(None, [folder], model="niqe", progress=False, prefetch_mb=prefetch_mb)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"images": len(frame), "seconds": seconds, "peak_mib": peak, "sum": float(frame["niqe"].sum())}))
"""


def write_photos(folder: Path, n: int, width: int, height: int, seed: int = 0) -> None:
    """``n`` synthetic JPEG photos of ``width x height``: gradients, a texture and noise, so that NIQE's features are
    defined everywhere and the files compress like photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for k in range(n):
        base = 90 + 60 * np.sin(x / (37 + 5 * k)) * np.cos(y / (53 + 3 * k))
        rgb = np.stack([base + 30 * np.sin((x + y) / 11), base, base - 20 * np.cos(x / 7)], axis=2)
        rgb += rng.normal(0, 6, size=(height, width, 1)).astype(np.float32)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"photo_{k:03d}.jpg", quality=90)


def run_child(folder: Path, prefetch_mb: float) -> dict[str, float]:
    """One scoring run in a fresh process; its JSON line."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(prefetch_mb)], check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prefetch-mb", type=float, default=None,
                        help="the bounded setting (default: iqalab score's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from iqalab.stages.score import PREFETCH_MB

    bounded = args.prefetch_mb if args.prefetch_mb is not None else PREFETCH_MB
    unbounded = 1e9  # MiB: the queue is then held to its count alone (two batches ahead), as before the bound
    log.info("load average before: %s", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_photos(folder, args.images, args.width, args.height)
        decoded = args.width * args.height * 3 / 2**20
        log.info("%d JPEGs of %d x %d (%.0f MiB decoded each, %.0f MiB in all), --model niqe, batch 16",
                 args.images, args.width, args.height, decoded, decoded * args.images)
        runs: dict[str, list[dict[str, float]]] = {"bounded": [], "unbounded": []}
        for r in range(args.rounds):
            for name, mb in (("unbounded", unbounded), ("bounded", bounded)) if r % 2 == 0 else \
                    (("bounded", bounded), ("unbounded", unbounded)):
                result = run_child(folder, mb)
                runs[name].append(result)
                log.info("round %d %-9s peak RSS %7.0f MiB, %5.2f images/s", r + 1, name, result["peak_mib"],
                         result["images"] / result["seconds"])
    sums = {name: {round(r["sum"], 6) for r in rs} for name, rs in runs.items()}
    if sums["bounded"] != sums["unbounded"]:
        raise SystemExit(f"the two settings scored differently: {sums}")
    peak = {name: statistics.median(r["peak_mib"] for r in rs) for name, rs in runs.items()}
    rate = {name: statistics.median(r["images"] / r["seconds"] for r in rs) for name, rs in runs.items()}
    log.info("median peak RSS: unbounded %.0f MiB, bounded (--prefetch-mb %g) %.0f MiB: %.2fx less memory",
             peak["unbounded"], bounded, peak["bounded"], peak["unbounded"] / peak["bounded"])
    log.info("median rate: unbounded %.2f, bounded %.2f images/s: %.2fx; scores equal", rate["unbounded"],
             rate["bounded"], rate["bounded"] / rate["unbounded"])
    log.info("load average after: %s", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
