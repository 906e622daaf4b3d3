"""Process-wide allocator settings for training and scoring processes (issue #30, loader speed).

Every training batch is a fresh float32 array (``[B, 3, 224, 224]``: 19 MB at batch 32). glibc's ``malloc`` serves
blocks that large with ``mmap`` and gives them back to the kernel on ``free``, or trims the top of its heap when more
than ``M_TRIM_THRESHOLD`` is free, so the next batch's first write to each 4 KiB page takes a page fault. Measured on
the 2-core CPU (README benchmark table, loader rows): 1,873 images/s with glibc's defaults against 3,061 images/s
when freed memory stays in the process. :func:`keep_freed_memory` sets that once at start-up (``iqalab`` command,
:func:`iqalab.notebook.setup`, the loader benchmark). It changes no computed value, only where memory comes from,
which is why it lives outside the code that fingerprints a training run (:data:`iqalab.train.engine.RUN_CODE`).

Set ``IQALAB_KEEP_FREED_MEMORY=0`` to keep glibc's defaults. Elsewhere than glibc (macOS, musl, Windows) it does
nothing and says so in its return value.
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

#: Largest ``M_MMAP_THRESHOLD`` glibc accepts on 64-bit Linux (``HEAP_MAX_SIZE / 2``); blocks up to it come from the
#: heap, so a batch of up to 32 MiB (batch 48 at 224 px) is reused instead of mapped afresh
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the heap's top kept before glibc trims it: a few batches in flight
TRIM_THRESHOLD = 512 * 1024 * 1024

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks in the process (``mallopt``); return whether the settings are in force.

    Idempotent; the first call decides. Returns ``False`` where the C library is not glibc, where
    ``IQALAB_KEEP_FREED_MEMORY=0``, or where glibc refuses a value (logged).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("IQALAB_KEEP_FREED_MEMORY", "1").strip() == "0":
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
