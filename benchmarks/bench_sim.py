"""Simulator throughput (issue #30: >= 20 renders/s of 512 x 512 on one core), fast renderer vs. the reference.

Renders held-out ``scene_pool`` scenes with :func:`iqalab.sim.camera.capture` and with the renderer it replaced
(``reference_capture``, kept in ``tests/test_sim_render.py``) in one process, and prints renders per second of
wall time and of CPU time for both, their ratio, and the ratio to the issue's target. Run it with
``OMP_NUM_THREADS=1``; the CPU-time rate is what one core gives when other jobs share the machine (the load
average is printed with the result).

Two workloads:

* ``cold``: every render recomputes the per-scene constants (light after optics, colour planes, masks: the
  caches are emptied first, :func:`iqalab.sim.camera.clear_scene_caches`), the worst case, e.g. ``ugc_sim``'s
  one image per scene;
* ``builder``: shots as ``fglive_sim`` renders them (per scene an auto-exposure reference plus deviations of 1-3
  of the 7 camera parameters, :func:`iqalab.sim.builders._deviate`), where the shots that keep aperture and
  shutter reuse the scene's light: the per-shot cost of a dataset build (without the builder's own previews).

It then times one render's sensor noise drawn by numpy and by the compiled draw the renderer uses (the same values
from the same stream; the generators' states are compared after the rounds).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sim.py --size 512 --scenes 4 --per-scene 8

``--compile`` times instead what the compiled loops cost a fresh process: one capture in a new interpreter with an
empty numba cache (every loop compiled), then the same with the cache it left (loops loaded), and the same capture
in that process once they are in memory; the README's compile and load times of the simulator's loops come from
here.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the reference renderer lives in tests/

from iqalab.sim import camera  # noqa: E402
from iqalab.sim.builders import _deviate, scene_pool  # noqa: E402
from iqalab.sim.camera import CameraParams, auto_params, capture  # noqa: E402
from iqalab.sim.scenes import Scene  # noqa: E402
from tests.test_sim_render import reference_capture  # noqa: E402

log = logging.getLogger("bench_sim")
TARGET = 20.0  # renders/s at 512 px on one core (issue #30)


def builder_shots(scenes: list[Scene], auto: Callable[..., CameraParams], deviate: Callable[..., CameraParams],
                  per_scene: int) -> list[tuple[Scene, CameraParams]]:
    """The ``builder`` workload: per scene an auto-exposure reference and ``per_scene - 1`` deviations of 1-3
    camera parameters, as fglive_sim draws them (``auto`` and ``deviate``: :func:`iqalab.sim.camera.auto_params`
    and :func:`iqalab.sim.builders._deviate`, or an earlier version's, for ``bench_sim_against.py``)."""
    rng = np.random.default_rng(1)
    shots: list[tuple[Scene, CameraParams]] = []
    for s in scenes:
        ref = auto(s, aperture=float(rng.choice([2.0, 2.8, 4.0])), sharpness=0.6, jpeg_quality=92)
        shots += [(s, ref)] + [(s, deviate(ref, rng, int(rng.choice([1, 2, 3, 3])), bool(rng.random() < 0.2)))
                               for _ in range(per_scene - 1)]
    return shots


def _time(renderers: dict[str, Callable[..., object]], shots: list[tuple[Scene, CameraParams]],
          cold: bool) -> dict[str, tuple[float, float]]:
    """(renders/s wall, renders/s CPU) of each renderer over ``shots``; one generator per renderer, as the
    builders use one. The renderers take turns shot by shot (the order alternating), so a change of the
    machine's load during the run weighs on all of them alike and their ratio stays fair (the reference keeps no
    caches, so the fast renderer's persist between its turns)."""
    rngs = {name: np.random.default_rng(0) for name in renderers}
    wall = dict.fromkeys(renderers, 0.0)
    cpu = dict.fromkeys(renderers, 0.0)
    camera.clear_scene_caches()
    for k, (scene, params) in enumerate(shots):
        order = list(renderers) if k % 2 == 0 else list(reversed(renderers))
        for name in order:
            if cold:
                camera.clear_scene_caches()
            t_wall, t_cpu = time.perf_counter(), time.process_time()
            renderers[name](scene, params, rngs[name])
            cpu[name] += time.process_time() - t_cpu
            wall[name] += time.perf_counter() - t_wall
    return {name: (len(shots) / wall[name], len(shots) / cpu[name]) for name in renderers}


def _time_draws(size: int, rounds: int = 5) -> None:
    """The sensor noise of one render (``size x size x 3`` float32 standard normals): numpy's
    ``Generator.standard_normal`` against :func:`iqalab.sim.kernels.standard_normal_f32` (the same values from the
    same PCG64 stream, tested), alternating; medians of CPU time."""
    from iqalab.sim import kernels

    out = np.empty(size * size * 3, dtype=np.float32)
    ours, numpys = np.random.default_rng(2), np.random.default_rng(2)
    times: dict[str, list[float]] = {"numpy": [], "kernel": []}

    def kernel_draw() -> None:
        state = kernels.pcg64_state(ours)
        kernels.standard_normal_f32(state, out)
        kernels.set_pcg64_state(ours, state)

    kernel_draw()  # load the compiled loop
    numpys.standard_normal(dtype=np.float32, out=out)
    for k in range(rounds):
        for name in (("numpy", "kernel") if k % 2 == 0 else ("kernel", "numpy")):
            t = time.process_time()
            if name == "kernel":
                kernel_draw()
            else:
                numpys.standard_normal(dtype=np.float32, out=out)
            times[name].append(time.process_time() - t)
    assert ours.bit_generator.state == numpys.bit_generator.state  # the same stream, advanced alike
    numpy_ms, kernel_ms = (1000 * float(np.median(times[name])) for name in ("numpy", "kernel"))
    log.info("noise draw (%d float32 normals): numpy %.2f ms, kernel %.2f ms (%.1f / %.1f ns a value) | "
             "speed-up %.2fx", out.size, numpy_ms, kernel_ms, 1e6 * numpy_ms / out.size, 1e6 * kernel_ms / out.size,
             numpy_ms / kernel_ms)


#: one capture in a fresh interpreter: its import and compile-or-load time, then the same capture again
_ONE_CAPTURE = """
import sys, time
import numpy as np
from iqalab.sim.builders import scene_pool
from iqalab.sim.camera import auto_params, capture
scene = scene_pool(1, seed=0, image_size=int(sys.argv[1]))[0]
shot = auto_params(scene, sharpness=0.6)
start = time.perf_counter()
capture(scene, shot, np.random.default_rng(0))
first = time.perf_counter() - start
start = time.perf_counter()
capture(scene, shot, np.random.default_rng(0))
print(first, time.perf_counter() - start)
"""


def _time_compile(size: int) -> None:
    """First capture of a fresh process with an empty numba cache, with a warm one, and a capture once loaded."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = []
        for label in ("empty cache (compiles)", "cache filled (loads)"):
            out = subprocess.run([sys.executable, "-c", _ONE_CAPTURE, str(size)], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            first, again = float(out[-2]), float(out[-1])
            runs.append(first)
            log.info("first capture, %s: %.2f s; the same capture again in that process: %.3f s", label, first,
                     again)
        log.info("compiling costs %.1f s more than loading (%.1fx)", runs[0] - runs[1], runs[0] / runs[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--per-scene", type=int, default=8, help="shots per scene in the builder workload")
    parser.add_argument("--renders", type=int, default=12, help="renders in the cold workload")
    parser.add_argument("--compile", action="store_true", help="time numba's compile and cache load instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.compile:
        _time_compile(args.size)
        return
    scenes = scene_pool(args.scenes, seed=0, image_size=args.size)
    cold = [(s, auto_params(s, sharpness=0.6)) for s in scenes]
    cold = [cold[k % len(cold)] for k in range(args.renders)]
    builder = builder_shots(scenes, auto_params, _deviate, args.per_scene)
    capture(*cold[0], np.random.default_rng(0))  # warm the photo / sprite caches and the imports
    reference_capture(*cold[0], np.random.default_rng(0))
    # both renderers import scipy.signal on their first diagonal motion blur (about 0.3 s, once per process):
    # imported here, so that it is not charged to whichever renderer meets such a shot first
    import scipy.signal  # noqa: F401
    log.info("%d x %d renders, OMP_NUM_THREADS=%s, load average %.1f (%d CPUs)", args.size, args.size,
             os.environ.get("OMP_NUM_THREADS", "unset"), os.getloadavg()[0], os.cpu_count() or 0)
    for name, shots, is_cold in (("cold", cold, True), ("builder", builder, False)):
        rates = _time({"reference": reference_capture, "fast": capture}, shots, is_cold)
        (old_wall, old_cpu), (new_wall, new_cpu) = rates["reference"], rates["fast"]
        log.info("%-7s (%2d renders): reference %.2f/s wall, %.2f/s CPU | fast %.2f/s wall, %.2f/s CPU | "
                 "speed-up %.2fx (CPU) | fast vs target %g/s: %.2f (wall), %.2f (CPU); %.1f ms CPU per shot",
                 name, len(shots), old_wall, old_cpu, new_wall, new_cpu, new_cpu / old_cpu, TARGET,
                 new_wall / TARGET, new_cpu / TARGET, 1000 / new_cpu)
    _time_draws(args.size)


if __name__ == "__main__":
    main()
