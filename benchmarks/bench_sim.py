"""Simulator throughput (issue #30: >= 20 renders/s of 512 x 512 on one core).

Renders held-out ``scene_pool`` scenes at their metered reference setting with :func:`iqalab.sim.camera.capture`
in one process (run it with ``OMP_NUM_THREADS=1``) and prints renders per second of wall time and of CPU time
(the CPU-time rate is what one idle core would give when other jobs share the machine), and their ratio to the
issue's target.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sim.py --size 512 --renders 12
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from iqalab.sim.builders import scene_pool
from iqalab.sim.camera import auto_params, capture

log = logging.getLogger("bench_sim")
TARGET = 20.0  # renders/s at 512 px on one core (issue #30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--renders", type=int, default=12)
    parser.add_argument("--scenes", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scenes = scene_pool(args.scenes, seed=0, image_size=args.size)
    params = [auto_params(s, sharpness=0.6) for s in scenes]
    rng = np.random.default_rng(0)
    capture(scenes[0], params[0], rng)  # warm caches (photos, sprites)
    wall, cpu = time.perf_counter(), time.process_time()
    for k in range(args.renders):
        capture(scenes[k % len(scenes)], params[k % len(scenes)], rng)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    log.info("%d renders of %d x %d: %.2f renders/s wall, %.2f renders/s CPU time; ratio to the target of %g/s: "
             "%.2f (wall), %.2f (CPU)", args.renders, args.size, args.size, args.renders / wall,
             args.renders / cpu, TARGET, args.renders / wall / TARGET, args.renders / cpu / TARGET)


if __name__ == "__main__":
    main()
