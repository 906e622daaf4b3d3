"""Where a number came from (issue 28): the code, params and environment recorded beside every result.

A *provenance record* is a small flat-ish dict written into the outputs that hold numbers: the predictions JSON
(``provenance``), ``results/metrics/summary.json`` (``_provenance``), a footer line of every table
(:func:`footer`, written by :meth:`iqalab.tables.Table.write` in Markdown, CSV and LaTeX) and the environment
section of ``results/report.md``. It holds:

- ``code_commit``: the last commit touching the code and configuration the pipeline runs (:data:`CODE_PATHS`:
  ``src``, ``notebooks``, ``params.yaml``, ``params``, ``dvc.yaml``), *not* ``HEAD``: a commit that only adds
  results, docs or ``dvc.lock`` does not change it, so re-running an unchanged stage after committing its results
  writes the same record (``dvc repro`` twice in a row changes nothing); ``code_dirty``: whether those paths had
  uncommitted changes or untracked files (``build/``, ``results/`` and ``dvc.lock``, which the pipeline itself
  writes, are outside them). A dirty run is traced through ``dvc.lock``, committed with the results, which holds
  the md5 of every file the stage depended on;
- ``params_hash``: :func:`params_hash` of the resolved params (the digest the report's header shows);
- ``lock_hash``: the first 12 hex digits of the sha256 of ``requirements.lock``;
- ``versions``: torch, timm, numpy, scipy, scikit-learn and pandas (from the installed distributions' metadata,
  nothing is imported), and ``python``;
- ``device`` (``cpu``, or the CUDA device a stage used, with its name) and ``seed``;
- ``cpu``: the CPU model and its widest vector extension (:func:`cpu_label`); ``numerics``: the kernels numpy and
  OpenBLAS run (:func:`iqalab.numerics.label`). With portable numerics (the default) the data stages and classical
  scores are the same on every x86-64 CPU with AVX2; trained models are bit for bit only on one CPU model, since
  torch's kernels choose by instruction set, cache size and thread count (README, "Results on another CPU").

Cheap and robust: the two git calls run once per process (cached); without git, or outside a repository (an
exported folder, a tarball), the git fields read ``unknown`` / ``None`` and nothing fails. The record holds no
timestamp or host name, so the same code, params and environment give the same record byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from iqalab import numerics

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
#: the repository paths whose last commit names the code a stage ran (relative to the repository root)
CODE_PATHS = ("src", "notebooks", "params.yaml", "params", "dvc.yaml")
#: distributions whose versions every record lists (issue 28)
PACKAGES = ("torch", "timm", "numpy", "scipy", "scikit-learn", "pandas")
LOCK_FILE = "requirements.lock"
#: order and short names of the fields in a table footer
_FOOTER_KEYS = (("code", "code_commit"), ("params", "params_hash"), ("lock", "lock_hash"), ("device", "device"),
                ("seed", "seed"), ("cpu", "cpu"), ("numerics", "numerics"))
#: vector extensions named by :func:`cpu_label`, widest first (``/proc/cpuinfo`` flag, label)
_VECTOR_FLAGS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"), ("asimd", "NEON"))
FOOTER_PREFIX = "Provenance:"

_current: dict[str, Any] | None = None
_remembered: Any = None


def code_root() -> Path:
    """The folder of the code that runs: the repository root above the imported ``iqalab`` package
    (``src/iqalab`` -> two levels up), whichever checkout ``PYTHONPATH`` or the editable install points to."""
    return Path(__file__).resolve().parents[2]


def _git(root: Path, *args: str) -> str | None:
    """``git -C root args`` stdout, or None when git is missing, ``root`` is no repository or the call fails."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git unavailable (%s): provenance records the commit as unknown", exc)
        return None
    if done.returncode != 0:
        log.debug("git %s failed in %s: %s", " ".join(args), root, done.stderr.strip())
        return None
    return done.stdout


@functools.cache
def git_state(root: Path | None = None) -> tuple[str, bool | None]:
    """``(code_commit, code_dirty)`` of the repository at ``root`` (default :func:`code_root`), cached per process.

    ``code_commit`` is the last commit touching :data:`CODE_PATHS` (``unknown`` outside a repository or without
    git); ``code_dirty`` is True when any of them has uncommitted changes or untracked (not ignored) files, None
    when unknown.
    """
    root = Path(root) if root is not None else code_root()
    if not (root / ".git").exists():  # an exported folder or a tarball: no repository to ask
        return UNKNOWN, None
    commit = _git(root, "log", "-1", "--format=%H", "--", *CODE_PATHS)
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", "--", *CODE_PATHS)
    commit = (commit or "").strip() or UNKNOWN
    return commit, (None if status is None else bool(status.strip()))


def params_hash(params: Any) -> str:
    """First 12 hex digits of the sha256 of the params as canonical JSON (same params, same hash).

    ``params`` is a :class:`iqalab.config.Params` (its ``model_dump``) or a plain mapping."""
    data = params.model_dump(mode="json") if hasattr(params, "model_dump") else dict(params)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@functools.cache
def lock_hash(root: Path | None = None) -> str:
    """First 12 hex digits of the sha256 of ``requirements.lock`` at ``root`` (``unknown`` when missing)."""
    path = (Path(root) if root is not None else code_root()) / LOCK_FILE
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return UNKNOWN


@functools.cache
def versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` (``not installed`` for a missing one) and of Python."""
    out: dict[str, str] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


@functools.cache
def cpu_label(cpuinfo: str | None = None) -> str:
    """``<CPU model>, <widest vector extension>`` from ``/proc/cpuinfo`` (or its text ``cpuinfo``), e.g.
    ``AMD EPYC 7B13, AVX2``; elsewhere ``platform.processor()`` or the machine type. Free of ``;`` and ``=`` so
    that it fits a footer field."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="ignore")
        except OSError:
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    model = model or platform.processor() or platform.machine() or UNKNOWN
    vector = next((label for flag, label in _VECTOR_FLAGS if flag in flags), None)
    text = f"{model}, {vector}" if vector else model
    return " ".join(text.replace(";", ",").replace("=", "-").split())


def device_label(device: Any = None) -> str:
    """``cpu`` or ``cuda:<i> (<name>)``: ``device`` as given (a ``torch.device`` or its string), else the CUDA
    device this process has used (CUDA initialised), else ``cpu``. torch is never imported for this."""
    torch = sys.modules.get("torch")
    if device is None:
        try:
            used = torch is not None and torch.cuda.is_initialized()
        except (AttributeError, RuntimeError):
            used = False
        if not used:
            return "cpu"
        device = f"cuda:{torch.cuda.current_device()}"
    text = str(device)
    if text.startswith("cuda") and torch is not None:
        try:
            index = int(text.split(":", 1)[1]) if ":" in text else torch.cuda.current_device()
            return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        except (RuntimeError, AssertionError, ValueError, AttributeError):
            return text
    return text


def collect(params: Any = None, device: Any = None, seed: int | None = None,
            root: Path | None = None) -> dict[str, Any]:
    """The provenance record of a stage run with ``params`` on ``device`` (see the module docstring).

    ``seed`` defaults to ``params.seed``. Without ``params`` the params hash and seed read ``unknown`` / None.
    The record becomes :func:`current` for the table footers this process writes."""
    global _current
    commit, dirty = git_state(Path(root) if root is not None else None)
    record: dict[str, Any] = {
        "code_commit": commit, "code_dirty": dirty,
        "params_hash": params_hash(params) if params is not None else UNKNOWN,
        "lock_hash": lock_hash(Path(root) if root is not None else None),
        "versions": versions(), "device": device_label(device),
        "seed": seed if seed is not None else getattr(params, "seed", None),
        "cpu": cpu_label(), "numerics": numerics.label(),
    }
    _current = record
    return record


def remember(params: Any) -> None:
    """Make ``params`` the params of this process's later records (called by
    :func:`iqalab.config.load_params`, so a stage's tables carry its params hash without passing the record
    around). Nothing is computed until a record is needed."""
    global _current, _remembered
    _current, _remembered = None, params


def current() -> dict[str, Any]:
    """The record last collected in this process, else one for the params last loaded (:func:`remember`; hash
    ``unknown`` when none were); the device is re-read, since a stage may have moved to CUDA after its params
    were loaded."""
    record = dict(_current) if _current is not None else collect(_remembered)
    if record["device"] == "cpu":
        record["device"] = device_label()
    return record


def footer(record: Mapping[str, Any] | None = None) -> str:
    """One line for a table's footer: ``Provenance: code=<12 hex>[+dirty]; params=...; lock=...; device=...;
    seed=...; cpu=...; torch=...; ...`` (``;``-separated ``key=value``, read back by :func:`parse_footer`)."""
    record = current() if record is None else record
    parts = []
    for short, key in _FOOTER_KEYS:
        value = record.get(key)
        if key == "code_commit":
            value = str(value)[:12] + ("+dirty" if record.get("code_dirty") else "")
        parts.append(f"{short}={UNKNOWN if value is None else value}")
    parts += [f"{name}={version}" for name, version in (record.get("versions") or {}).items()]
    return f"{FOOTER_PREFIX} " + "; ".join(parts)


def parse_footer(text: str) -> dict[str, str] | None:
    """The ``key=value`` fields of the first provenance footer in ``text`` (a table file's content), else None."""
    for line in text.splitlines():
        start = line.find(FOOTER_PREFIX)
        if start < 0:
            continue
        body = line[start + len(FOOTER_PREFIX):].strip().removesuffix("</sub>").rstrip(".")
        fields = dict(part.strip().split("=", 1) for part in body.split(";") if "=" in part)
        if fields:
            return fields
    return None


def summary_line(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as one flat row (``code``, ``dirty``, ``params``, ``lock``, ``device``, ``seed``, ``cpu``,
    ``numerics``, versions)
    for the report's environment table."""
    dirty = record.get("code_dirty")
    seed = record.get("seed")
    row: dict[str, Any] = {"code": str(record.get("code_commit", UNKNOWN))[:12],
                           "dirty": UNKNOWN if dirty is None else ("yes" if dirty else "no"),
                           "params": record.get("params_hash", UNKNOWN), "lock": record.get("lock_hash", UNKNOWN),
                           "device": record.get("device", UNKNOWN), "seed": UNKNOWN if seed is None else seed,
                           "cpu": record.get("cpu", UNKNOWN), "numerics": record.get("numerics", UNKNOWN)}
    versions_ = record.get("versions") or {}
    row.update({name: versions_.get(name, UNKNOWN) for name in (*PACKAGES, "python")})
    return row


def footer_row(fields: Mapping[str, str]) -> dict[str, Any]:
    """A parsed footer (:func:`parse_footer`) as the row :func:`summary_line` gives for the same record."""
    code = str(fields.get("code", UNKNOWN))
    dirty = UNKNOWN if code.startswith(UNKNOWN) else ("yes" if code.endswith("+dirty") else "no")
    row: dict[str, Any] = {"code": code.removesuffix("+dirty"), "dirty": dirty}
    for short, _ in _FOOTER_KEYS[1:]:
        row[short] = fields.get(short, UNKNOWN)
    row["seed"] = int(row["seed"]) if str(row["seed"]).lstrip("-").isdigit() else row["seed"]
    row.update({name: fields.get(name, UNKNOWN) for name in (*PACKAGES, "python")})
    return row
