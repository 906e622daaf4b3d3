"""The renderer against its own earlier version: speed paired in one process, and whether the renders are the same.

``bench_sim.py`` compares the renderer with the straightforward one it replaced; a round of speed work on the
renderer itself is better judged against the commit before it, in the same process and taking turns shot by shot
(the machine's speed moves by a third within minutes, so rates from separate runs do not compare). This script
extracts ``src/iqalab`` at a git revision into a temporary folder as the package ``iqalab_<rev>`` (its imports
rewritten), renders the same shots with both versions from generators seeded alike and reports the CPU time per
shot of each and their ratio. It also compares every shot's JPEG bytes and ``info`` values: a round that means to
keep the datasets byte for byte must print ``0 shots differ``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sim_against.py HEAD~1 [--cold] [--rounds 3]

The earlier version compiles its numba loops in its own folder; one untimed pass over the shots before the timing
compiles both versions' loops for every type they meet.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sim import builder_shots  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_sim_against")


def extract_package(rev: str, folder: Path) -> str:
    """``src/iqalab`` at git revision ``rev`` into ``folder/iqalab_<sha>``, every ``iqalab`` import rewritten to
    that name; returns the package name."""
    sha = subprocess.run(["git", "rev-parse", "--short=10", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    name = f"iqalab_{sha}"
    archive = subprocess.run(["git", "archive", "--format=tar", sha, "src/iqalab"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "src" / "iqalab").rename(folder / name)
    pattern = re.compile(r"\biqalab(?=[.\s]|$)")
    for path in (folder / name).rglob("*.py"):
        path.write_text(pattern.sub(name, path.read_text()))
    return name


def shots(package: str, size: int, scenes: int, per_scene: int) -> list[tuple[object, object]]:
    """``bench_sim.py``'s builder workload (:func:`bench_sim.builder_shots`) made with ``package``'s own scene pool,
    auto exposure and deviations."""
    builders = importlib.import_module(f"{package}.sim.builders")
    camera = importlib.import_module(f"{package}.sim.camera")
    return builder_shots(builders.scene_pool(scenes, seed=0, image_size=size), camera.auto_params,
                         builders._deviate, per_scene)


def same_info(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal ``info`` dicts, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the earlier revision (e.g. HEAD~1)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--per-scene", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the shots")
    parser.add_argument("--cold", action="store_true", help="empty the per-scene caches before every render")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import scipy.signal  # noqa: F401  (imported by the diagonal-motion path on first use: not timed)

    with tempfile.TemporaryDirectory(prefix="bench-sim-against-") as tmp:
        old_name = extract_package(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        versions: dict[str, ModuleType] = {
            "this tree": importlib.import_module("iqalab.sim.camera"),
            args.rev: importlib.import_module(f"{old_name}.sim.camera"),
        }
        work = {"this tree": shots("iqalab", args.size, args.scenes, args.per_scene),
                args.rev: shots(old_name, args.size, args.scenes, args.per_scene)}
        for label, camera in versions.items():  # one untimed pass: every loop compiled for every type it meets
            warm = np.random.default_rng(0)
            for shot in work[label]:
                camera.capture(*shot, warm)
        rngs = {label: np.random.default_rng(0) for label in versions}
        cpu = dict.fromkeys(versions, 0.0)
        differ = 0
        n = len(work["this tree"])
        for k in range(args.rounds * n):
            order = list(versions) if k % 2 == 0 else list(reversed(versions))
            got = {}
            for label in order:
                camera = versions[label]
                if args.cold:
                    camera.clear_scene_caches()
                start = time.process_time()
                got[label] = camera.capture(*work[label][k % n], rngs[label])
                cpu[label] += time.process_time() - start
            new, old = got["this tree"], got[args.rev]
            differ += not (new.jpeg == old.jpeg and same_info(new.info, old.info))
    shots_run = args.rounds * n
    log.info("%d x %d, %s workload, %d shots, OMP_NUM_THREADS=%s, load average %.1f", args.size, args.size,
             "cold" if args.cold else "builder", shots_run, os.environ.get("OMP_NUM_THREADS", "unset"),
             os.getloadavg()[0])
    log.info("%s: %.1f ms CPU per shot | this tree: %.1f ms (%.1f renders/s) | speed-up %.3fx | %d shots differ",
             args.rev, 1000 * cpu[args.rev] / shots_run, 1000 * cpu["this tree"] / shots_run,
             shots_run / cpu["this tree"], cpu[args.rev] / cpu["this tree"], differ)


if __name__ == "__main__":
    main()
