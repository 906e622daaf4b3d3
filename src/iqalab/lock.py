"""The locked environment (issue #28): exact versions and hashes of every package, in two groups.

``requirements.lock`` holds what the pipeline runs on (``pyproject.toml``'s ``dependencies`` and the packages
installed without their dependencies, below); ``requirements-dev.lock`` holds the ``dev`` extra (pytest, nbval,
ruff, jupyterlab, uv) on top of it. Both are written by ``make lock`` (``python -m iqalab.lock compile``) with
``uv pip compile --generate-hashes`` from one resolution of runtime and dev together, so a package both groups need
has the same pin in both. ``make install`` installs them with pip, ``--require-hashes --no-deps`` (the lock is
complete, nothing is resolved at install time), then the project itself with ``-e . --no-deps``.

Why uv to lock and pip to install: uv resolves from the index's metadata in seconds, while pip-compile downloads
every file of the torch/CUDA stack to hash it (tens of GB); pip installs the torch pair from the machine's local
wheel index where one is configured (``pip config list``), whose files carry the same hashes as PyPI's, so the
lock's hashes hold on both.

The lock is resolved for CPython 3.11 on x86-64 Linux (manylinux 2.28), the platform of ``.ci/run``.

``facenet-pytorch`` (the ``faces`` extra, the face detector of ingest) declares ``torch<2.3`` and ``numpy<2``
although it runs with ours: it is locked (with its hash) but installed without its dependencies, as before.

``python -m iqalab.lock check`` compares the locks with ``pyproject.toml`` (every requirement satisfied by its
pin, every pin hashed, no package in both groups) and ``environment.yml`` with what :func:`environment_yml` writes;
``python -m iqalab.lock installed`` compares the running environment with the locks (``pip freeze`` equals the
lock) and checks that every installed package's own requirements are met.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = "requirements.lock"
DEV_LOCK = "requirements-dev.lock"
ENVIRONMENT_YML = "environment.yml"
#: The interpreter and platform the locks are resolved for (``uv pip compile --python-version/--python-platform``).
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_28"
#: Extras installed without their dependencies (their declared pins conflict with the stack they run on).
NO_DEPS_EXTRAS = ("faces",)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass
class Pin:
    """One locked package: exact version and the sha256 hashes pip accepts for it."""

    name: str
    version: str
    hashes: list[str] = field(default_factory=list)


def read_lock(path: str | Path) -> dict[str, Pin]:
    """Parse a pip requirements file written by ``uv pip compile --generate-hashes`` into pins by canonical name."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in Path(path).read_text().splitlines():
        text = line.strip()
        match = _PIN.match(text)
        if match:
            current = Pin(canonicalize_name(match.group(1)), match.group(2))
            pins[current.name] = current
        elif current is not None and text.startswith("--hash="):
            current.hashes.append(text.removeprefix("--hash=").rstrip(" \\"))
    return pins


def read_pyproject(path: str | Path) -> dict[str, list[Requirement]]:
    """``pyproject.toml``'s requirements by group: ``runtime`` and one entry per optional extra."""
    project = tomllib.loads(Path(path).read_text())["project"]
    groups = {"runtime": [Requirement(r) for r in project.get("dependencies", [])]}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        groups[extra] = [Requirement(r) for r in reqs]
    return groups


def _applies(req: Requirement) -> bool:
    env = {**default_environment(), "python_version": PYTHON_VERSION, "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
    return req.marker is None or req.marker.evaluate(env)


def check_lock(root: str | Path = ROOT) -> list[str]:
    """Disagreements between ``pyproject.toml``, the two locks and ``environment.yml`` (empty when consistent)."""
    root = Path(root)
    groups = read_pyproject(root / "pyproject.toml")
    runtime, dev = read_lock(root / RUNTIME_LOCK), read_lock(root / DEV_LOCK)
    problems: list[str] = []
    wanted = {"runtime": (RUNTIME_LOCK, runtime), "dev": (DEV_LOCK, {**runtime, **dev})}
    wanted.update({extra: (RUNTIME_LOCK, runtime) for extra in NO_DEPS_EXTRAS})
    for group, (file, pins) in wanted.items():
        for req in groups.get(group, []):
            if not _applies(req):
                continue
            pin = pins.get(canonicalize_name(req.name))
            if pin is None:
                problems.append(f"{file}: {req} ({group}) is not locked; run `make lock`")
            elif not req.specifier.contains(Version(pin.version), prereleases=True):
                problems.append(f"{file}: {pin.name}=={pin.version} does not satisfy {req} ({group}); "
                                "run `make lock`")
    for file, pins in ((RUNTIME_LOCK, runtime), (DEV_LOCK, dev)):
        problems += [f"{file}: {pin.name}=={pin.version} has no --hash" for pin in pins.values() if not pin.hashes]
    problems += [f"{DEV_LOCK}: {name} is in {RUNTIME_LOCK} as well" for name in sorted(set(runtime) & set(dev))]
    env_path = root / ENVIRONMENT_YML
    expected = environment_yml(runtime, dev, _no_deps_names(root))
    if not env_path.is_file() or env_path.read_text() != expected:
        problems.append(f"{ENVIRONMENT_YML}: not what `make lock` writes from the locks; run `make lock`")
    return problems


def environment_yml(runtime: dict[str, Pin], dev: dict[str, Pin], no_deps: Iterable[str] = ()) -> str:
    """The conda environment, generated from the locks (exact versions; conda's pip step cannot check hashes, and
    the ``no_deps`` packages are left to a ``pip install --no-deps`` after it)."""
    no_deps = {canonicalize_name(n) for n in no_deps}
    lines = [
        f"# Generated by `make lock` from {RUNTIME_LOCK} and {DEV_LOCK}: do not edit (pip installs with hashes:",
        f"#   pip install --require-hashes --no-deps -r {RUNTIME_LOCK} -r {DEV_LOCK} && pip install --no-deps -e .).",
        "name: iqalab",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={PYTHON_VERSION}",
        "  - pip",
        "  - pip:",
    ]
    pins = {**runtime, **dev}
    lines += [f"      - {pins[name].name}=={pins[name].version}" for name in sorted(pins) if name not in no_deps]
    lines.append("      - -e .")
    lines += [f"# after creating the env:  pip install --no-deps {pins[n].name}=={pins[n].version}"
              for n in sorted(no_deps) if n in pins]
    return "\n".join(lines) + "\n"


def check_installed(root: str | Path = ROOT, groups: Sequence[str] = ("runtime", "dev")) -> list[str]:
    """Differences between the running environment and the locks, and unmet requirements of installed packages.

    Every locked package must be installed at its pin and nothing else may be (pip, setuptools, wheel and the
    project itself aside); each installed package's requirements must hold, except for the packages installed
    without their dependencies.
    """
    root = Path(root)
    pins = read_lock(root / RUNTIME_LOCK)
    if "dev" in groups:
        pins.update(read_lock(root / DEV_LOCK))
    project = canonicalize_name(tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"])
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    ignored = {"pip", "setuptools", "wheel", project}
    problems = [f"{name}=={pin.version} is locked but not installed" for name, pin in sorted(pins.items())
                if name not in installed]
    problems += [f"{name}=={installed[name].version} is installed but {pin.version} is locked"
                 for name, pin in sorted(pins.items()) if name in installed and installed[name].version != pin.version]
    problems += [f"{name}=={dist.version} is installed but not locked" for name, dist in sorted(installed.items())
                 if name not in pins and name not in ignored]
    no_deps = _no_deps_names(root)
    for name, dist in sorted(installed.items()):
        if name in no_deps or name not in pins:
            continue
        for text in dist.requires or []:
            req = Requirement(text)
            if not _applies(req):
                continue
            have = installed.get(canonicalize_name(req.name))
            if have is None or not req.specifier.contains(Version(have.version), prereleases=True):
                problems.append(f"{name} requires {req}; installed: {have.version if have else 'nothing'}")
    return problems


def compile_locks(root: str | Path = ROOT, uv: str = "uv", upgrade: Iterable[str] = (),
                  prefer: str | Path | None = None) -> None:
    """Resolve runtime and dev together once, then write the two locks and ``environment.yml`` from it.

    The pins of the existing locks (or of ``prefer``, e.g. ``pip freeze`` of an environment the results were made
    with) are kept where they still fit, so only what ``pyproject.toml`` changed (or ``upgrade`` names) moves.
    The joint resolution is left in ``build/lock/resolution.txt`` (the constraint both locks are compiled with).
    """
    root = Path(root)
    common = [uv, "pip", "compile", "--quiet", "--generate-hashes", "--python-version", PYTHON_VERSION,
              "--python-platform", PYTHON_PLATFORM, "--custom-compile-command", "make lock"]
    common += [arg for name in upgrade for arg in ("--upgrade-package", name)]
    full = Path("build") / "lock" / "resolution.txt"
    (root / full).parent.mkdir(parents=True, exist_ok=True)
    seeds = [Path(prefer)] if prefer is not None else [root / f for f in (RUNTIME_LOCK, DEV_LOCK)]
    # uv prefers the pins already in the file it writes
    (root / full).write_text("".join(f.read_text() for f in seeds if f.is_file()))
    _run([*common, "pyproject.toml", "--extra", "dev", "-o", str(full)], root)
    _run([*common, "pyproject.toml", "-c", str(full), "-o", RUNTIME_LOCK], root)
    no_deps = _no_deps_requirements(root)
    if no_deps:
        with tempfile.TemporaryDirectory() as tmp:
            spec, extra_lock = Path(tmp) / "no_deps.in", Path(tmp) / "no_deps.txt"
            spec.write_text("\n".join(no_deps) + "\n")
            _run([*common, "--no-deps", "--no-header", "--no-annotate", str(spec), "-o", str(extra_lock)], root)
            text = (root / RUNTIME_LOCK).read_text()
            text += (f"# installed without its dependencies (extras {', '.join(NO_DEPS_EXTRAS)}: its declared pins "
                     "conflict with the stack it runs on)\n" + extra_lock.read_text())
        (root / RUNTIME_LOCK).write_text(text)
    skip = [a for name in read_lock(root / RUNTIME_LOCK) for a in ("--no-emit-package", name)]
    _run([*common, "pyproject.toml", "--extra", "dev", "-c", str(full), *skip, "-o", DEV_LOCK], root)
    env = environment_yml(read_lock(root / RUNTIME_LOCK), read_lock(root / DEV_LOCK), _no_deps_names(root))
    (root / ENVIRONMENT_YML).write_text(env)
    log.info("wrote %s, %s and %s", RUNTIME_LOCK, DEV_LOCK, ENVIRONMENT_YML)


def _no_deps_requirements(root: Path) -> list[str]:
    groups = read_pyproject(root / "pyproject.toml")
    return [str(r) for extra in NO_DEPS_EXTRAS for r in groups.get(extra, [])]


def _no_deps_names(root: Path) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in _no_deps_requirements(root)}


def _run(cmd: list[str], cwd: Path) -> None:
    shown = [arg for i, arg in enumerate(cmd) if arg != "--no-emit-package" and cmd[i - 1] != "--no-emit-package"]
    log.info("%s", " ".join(shown))
    subprocess.run(cmd, cwd=cwd, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m iqalab.lock {compile,check,installed}``; exit status 1 when a check finds a problem."""
    parser = argparse.ArgumentParser(prog="python -m iqalab.lock", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("compile", help="regenerate the locks and environment.yml (make lock)")
    comp.add_argument("--uv", default="uv", help="the uv executable")
    comp.add_argument("--upgrade-package", action="append", default=[], help="let this package move")
    comp.add_argument("--prefer", help="a requirements file whose pins to keep (default: the current locks)")
    sub.add_parser("check", help="the locks agree with pyproject.toml and environment.yml")
    inst = sub.add_parser("installed", help="the running environment equals the locks")
    inst.add_argument("--runtime-only", action="store_true", help="compare with requirements.lock alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "compile":
        compile_locks(uv=args.uv, upgrade=args.upgrade_package, prefer=args.prefer)
        return 0
    if args.command == "check":
        problems = check_lock()
    else:
        problems = check_installed(groups=("runtime",) if args.runtime_only else ("runtime", "dev"))
    for problem in problems:
        log.error("%s", problem)
    if not problems:
        log.info("%s: consistent", args.command)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
