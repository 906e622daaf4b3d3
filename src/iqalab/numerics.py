"""Portable numerics: the same datasets and classical scores on every x86-64 CPU with AVX2 (README, "Results on
another CPU").

numpy and OpenBLAS choose their kernels when they load, by the instruction sets the CPU has, and kernels for
different instruction sets may round differently. Measured (2026-12-02, same commit and params): the four
simulated datasets built on a 2-core AMD EPYC (AVX2) and on a 2-core Intel Xeon with AVX-512 differed in 60 of
face_sim's 600 JPEGs and in every table; on the Xeon with numpy's AVX-512 dispatch switched off **and** OpenBLAS
held to its Haswell (AVX2) kernels, ``iqalab ingest face_sim`` wrote the EPYC's files byte for byte (DVC hash
``caacd060...``). Either setting alone was not enough.

:func:`use_portable_numerics` therefore sets, before numpy is imported,

- ``NPY_DISABLE_CPU_FEATURES`` = :data:`NUMPY_BEYOND_AVX2`: numpy's dispatch targets beyond AVX2 (names numpy does
  not know are ignored, so a newer or older numpy and a CPU without them are unaffected);
- ``OPENBLAS_CORETYPE=Haswell``: the OpenBLAS kernels of AVX2 + FMA CPUs (what AMD Zen also runs).

:mod:`iqalab` calls it on import, so the ``iqalab`` command and every notebook (whose first cell imports
:mod:`iqalab.notebook`) run with it, and so do their child processes (data-loader workers). It does nothing when

- ``IQALAB_NUMERICS=native`` (the CPU's own fastest kernels; results then match only on the same CPU model);
- the machine is not x86-64 (ARM has other kernels; results there are its own);
- numpy was imported before :mod:`iqalab` (then the settings would come too late for this process and would
  differ between it and its children): :func:`label` then names the kernels in use and
  :func:`iqalab.notebook.setup` warns.

Cost (same Xeon, ``OMP_NUM_THREADS=1 python benchmarks/bench_sim.py``, alternating): within the machine's run-to-run
noise (10-14 renders/s either way); ``iqalab ingest face_sim`` 17.2-22.1 s with the settings against 17.1-17.6 s
without. Out of scope: torch. Its CPU kernels (ATen, MKL, oneDNN) also choose by instruction set and by cache size
and thread count; holding them to AVX2 (``ATEN_CPU_CAPABILITY=avx2``, ``MKL_CBWR=AVX2``, ``DNNL_MAX_CPU_ISA=AVX2``)
made CPU training 1.85x slower on the Xeon and still did not reproduce the EPYC's trained predictions on the same
data (``sfiqa_xxs_face``: largest difference 1.31 against 1.61 unpinned), so trained rows stay CPU-dependent.

:func:`label` (recorded as ``numerics`` in every provenance record) names the kernels actually loaded, e.g.
``numpy X86_V3, OpenBLAS Haswell``: two runs whose records agree on it, the code and the params build the same
datasets.
"""

from __future__ import annotations

import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

#: numpy's dispatch targets beyond AVX2 + FMA (numpy 2.4 groups them as X86_V4 and its extensions; the older
#: names cover numpy < 2.4)
NUMPY_BEYOND_AVX2 = ("X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX "
                     "AVX512_CNL AVX512FP16")
#: the environment :func:`use_portable_numerics` sets (values a user has set are kept)
PORTABLE_ENV = {"NPY_DISABLE_CPU_FEATURES": NUMPY_BEYOND_AVX2, "OPENBLAS_CORETYPE": "Haswell"}
#: ``native`` switches the settings off
MODE_VARIABLE = "IQALAB_NUMERICS"


def _x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def _wanted() -> bool:
    """The settings apply: ``IQALAB_NUMERICS`` is not ``native`` and the machine is x86-64."""
    return os.environ.get(MODE_VARIABLE, "portable").strip().lower() != "native" and _x86_64()


def use_portable_numerics() -> bool:
    """Set :data:`PORTABLE_ENV` (each only where unset) unless ``IQALAB_NUMERICS=native``, the machine is not
    x86-64, or numpy is already imported; return whether the settings were set (or already present)."""
    if not _wanted():
        return False
    if "numpy" in sys.modules:
        return all(os.environ.get(key) for key in PORTABLE_ENV)
    for key, value in PORTABLE_ENV.items():
        os.environ.setdefault(key, value)
    return True


def numpy_kernels() -> str:
    """The widest numpy dispatch target in use (``X86_V3``, ``X86_V4``, ``AVX512_SPR``, ``ASIMD``, ...) or
    ``baseline``; imports numpy."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    active = [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]
    return active[-1] if active else "baseline"


def blas_kernels() -> str:
    """The core type of each OpenBLAS loaded into this process (``Haswell``, ``SkylakeX``, ``Zen``), joined by
    ``/``; ``none`` when none is loaded."""
    from threadpoolctl import threadpool_info

    cores = sorted({str(lib.get("architecture")) for lib in threadpool_info() if lib.get("internal_api") == "openblas"})
    return "/".join(cores) or "none"


def label() -> str:
    """``numpy <target>, OpenBLAS <core>``: the kernels numpy and OpenBLAS run in this process."""
    return f"numpy {numpy_kernels()}, OpenBLAS {blas_kernels()}"


def check() -> bool:
    """Warn (once per call) when the portable settings were wanted but did not take effect in this process;
    return whether they are in effect or not wanted."""
    if not _wanted():
        return True
    in_effect = numpy_kernels() in ("X86_V3", "AVX2", "FMA3", "baseline", "X86_V2") and \
        set(blas_kernels().split("/")) <= {"Haswell", "none"}
    if not in_effect:
        log.warning("portable numerics are not in effect (%s): numpy was imported before iqalab, so datasets and "
                    "classical scores of this process match only on this CPU model; import iqalab first or set "
                    "%s=native to silence this", label(), MODE_VARIABLE)
    return in_effect
