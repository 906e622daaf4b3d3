"""Portable numerics (iqalab.numerics): importing iqalab holds numpy and OpenBLAS to AVX2 kernels, and the default
face_sim build gives the bytes dvc.lock records, whichever x86-64 CPU runs the test.

Each probe runs in a fresh interpreter: the settings act only when they are in the environment before numpy loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iqalab import numerics

ROOT = Path(__file__).resolve().parents[1]
x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                              reason="portable numerics apply to x86-64 only")


def _clean_env() -> dict[str, str]:
    """This environment without the portable settings and the mode switch."""
    return {k: v for k, v in os.environ.items() if k not in (*numerics.PORTABLE_ENV, numerics.MODE_VARIABLE)}


def _probe(code: str, **env: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter without the settings in its
    environment unless ``env`` gives them."""
    result = subprocess.run([sys.executable, "-c", code], env={**_clean_env(), **env}, capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


_REPORT = ("import json, os; from iqalab import numerics; "
           "print(json.dumps({'env': {k: os.environ.get(k) for k in numerics.PORTABLE_ENV}, "
           "'label': numerics.label(), 'applied': applied}))")


@x86_only
def test_importing_iqalab_first_holds_numpy_and_openblas_to_avx2() -> None:
    out = _probe("import iqalab, numpy; applied = True; " + _REPORT)
    assert out["env"] == numerics.PORTABLE_ENV
    assert out["label"].startswith(("numpy X86_V3,", "numpy baseline,"))  # nothing wider than AVX2 dispatched
    assert out["label"].endswith("OpenBLAS Haswell")


@x86_only
def test_native_mode_leaves_the_environment_alone() -> None:
    out = _probe("import iqalab, numpy; applied = False; " + _REPORT, IQALAB_NUMERICS="native")
    assert out["env"] == dict.fromkeys(numerics.PORTABLE_ENV)


@x86_only
def test_numpy_imported_first_is_not_half_pinned() -> None:
    """Too late for this process: nothing is set, so its child processes run the same kernels as it does."""
    out = _probe("import numpy; from iqalab.numerics import use_portable_numerics; "
                 "applied = use_portable_numerics(); " + _REPORT)
    assert out["applied"] is False
    assert out["env"] == dict.fromkeys(numerics.PORTABLE_ENV)


def test_check_names_the_kernels_when_not_in_effect(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(numerics, "_x86_64", lambda: True)
    monkeypatch.delenv(numerics.MODE_VARIABLE, raising=False)
    monkeypatch.setattr(numerics, "numpy_kernels", lambda: "AVX512_SPR")
    monkeypatch.setattr(numerics, "blas_kernels", lambda: "SkylakeX")
    assert numerics.check() is False
    assert "numpy AVX512_SPR, OpenBLAS SkylakeX" in caplog.text
    monkeypatch.setenv(numerics.MODE_VARIABLE, "native")
    assert numerics.check() is True


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def dvc_md5(path: Path) -> str:
    """DVC 3's md5 of a file, or of a folder (``<md5 of the sorted JSON listing>.dir``)."""
    if path.is_file():
        return _md5(path)
    entries = sorted(({"md5": _md5(p), "relpath": p.relative_to(path).as_posix()}
                      for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts),
                     key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


@x86_only
def test_face_sim_build_reproduces_the_locked_dataset(tmp_path: Path) -> None:
    """The committed dvc.lock holds the hash of ``build/datasets/face_sim`` as the machine that ran the pipeline
    built it; a fresh build here must give the same bytes (measured: an AMD EPYC with AVX2 and an Intel Xeon with
    AVX-512 agree under portable numerics, and differ in 60 of 600 images without them)."""
    stage = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["ingest@face_sim"]
    stale = [dep["path"] for dep in stage["deps"] if dvc_md5(ROOT / dep["path"]) != dep["md5"]]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    locked = stage["params"]["params.yaml"]
    if locked["seed"] != params["seed"] or locked["datasets.face_sim"] != params["datasets"]["face_sim"]:
        stale.append("params.yaml")
    if stale:
        pytest.skip(f"dvc.lock is not up to date for ingest@face_sim ({', '.join(stale)} changed): run dvc repro")
    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    subprocess.run([sys.executable, "-m", "iqalab", "--params", str(tmp_path / "params.yaml"), "-q", "ingest",
                    "face_sim"], env={**_clean_env(), "IQALAB_WORKDIR": str(tmp_path)}, cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    built = tmp_path / "build" / "datasets" / "face_sim"
    locked_out = next(out["md5"] for out in stage["outs"] if out["path"] == "build/datasets/face_sim")
    assert dvc_md5(built) == locked_out
