"""Opt-in allocator settings for training and scoring processes (issue #30, loader speed).

Every training batch is a fresh float32 array (``[B, 3, 224, 224]``: 19 MB at batch 32). glibc's ``malloc`` serves
blocks that large with ``mmap`` and gives them back to the kernel on ``free``, or trims the top of its heap when more
than its (dynamic) ``M_TRIM_THRESHOLD`` is free, so the next batch's first write to each 4 KiB page takes a page
fault. :func:`keep_freed_memory` makes glibc keep that memory (``mallopt``); the ``iqalab`` command,
:func:`iqalab.notebook.setup` and the loader benchmark call it at start-up, and it acts only where
``IQALAB_KEEP_FREED_MEMORY=1``. It changes no computed value, only where memory comes from, which is why it lives
outside the code that fingerprints a training run (:data:`iqalab.train.engine.RUN_CODE`).

Why opt-in (2-core Intel Xeon with AVX-512, 2026-12-02; README benchmark table, loader rows): the loader benchmark's
batched path ran at 34-38x its PIL reference with the settings against 25-32x without, but whole CPU training runs
(``iqalab train tuningiqa_r18``, four alternating pairs) took 137.5 s on average with them against 131.0 s without,
with half the page faults: where the model's compute dominates, the settings cost more than they save. Switch them
on where the CPU-side loader is the bottleneck (a GPU fed by few cores). Elsewhere than glibc (macOS, musl,
Windows) the function does nothing and says so in its return value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers from glibc's ``malloc.h``
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap, so a batch of up to 32 MiB (batch 48 at 224 px) is reused instead of
#: mapped afresh; older glibc releases refuse values above ``HEAP_MAX_SIZE / 2`` (32 MiB on 64-bit), 2.36 accepts more
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the heap's top kept before glibc trims it: a few batches in flight
TRIM_THRESHOLD = 512 * 1024 * 1024

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks in the process (``mallopt``); return whether the settings are in force.

    Idempotent; the first call decides. Returns ``False`` unless ``IQALAB_KEEP_FREED_MEMORY=1``, where the C
    library is not glibc, or where glibc refuses a value (logged).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("IQALAB_KEEP_FREED_MEMORY", "0").strip() != "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to set
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok_mmap = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok_trim = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not (ok_mmap and ok_trim):
        log.warning("glibc refused mallopt (mmap threshold %s, trim threshold %s): batches are mapped afresh",
                    "set" if ok_mmap else "refused", "set" if ok_trim else "refused")
    _applied = ok_mmap and ok_trim
    return _applied
