"""iqalab.memory: the allocator keeps freed batch buffers, so a new batch does not page-fault (issue #30)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt settings are glibc's")

# Four batch-sized blocks (32 x 3 x 224 x 224 float32, 19 MB each: a batch, its uint8 source, activations) taken
# from malloc, written and freed, round after round; minor page faults counted per round. With glibc's defaults the
# freed blocks at the top of the heap (76 MB, over the dynamic trim threshold of twice the largest block) go back to
# the kernel every round; with the settings kept, only the first round faults.
_PROBE = """
import ctypes, json, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
kept = None
if sys.argv[1] == "keep":
    from iqalab.memory import keep_freed_memory
    kept = keep_freed_memory()
size = 32 * 3 * 224 * 224 * 4
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(size) for _ in range(4)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in reversed(blocks):
        libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""
PAGES = 4 * 32 * 3 * 224 * 224 * 4 // 4096  # pages written per round


def _probe(mode: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k != "IQALAB_KEEP_FREED_MEMORY"}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                         env={**base, "OMP_NUM_THREADS": "1", **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_batches_are_reused_without_page_faults() -> None:
    default, kept = _probe("default"), _probe("keep", IQALAB_KEEP_FREED_MEMORY="1")
    assert kept["kept"] is True
    assert all(f > PAGES / 2 for f in default["faults"]), default  # glibc's defaults: every round maps afresh
    assert default["faults"][0] > PAGES / 2 and kept["faults"][0] > PAGES / 2  # the first round always faults
    assert sum(kept["faults"][1:]) < PAGES / 20, kept  # kept: later rounds reuse the mapped pages


@pytest.mark.parametrize("switch", [None, "0"])
def test_off_unless_asked(switch: str | None) -> None:
    """Opt-in: without ``IQALAB_KEEP_FREED_MEMORY=1`` the call leaves glibc's defaults (CPU training is faster)."""
    off = _probe("keep", **({} if switch is None else {"IQALAB_KEEP_FREED_MEMORY": switch}))
    assert off["kept"] is False
    assert all(f > PAGES / 2 for f in off["faults"]), off
