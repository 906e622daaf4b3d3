"""The locked environment (#28): the locks agree with pyproject.toml, and the check names each kind of drift."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from iqalab.lock import DEV_LOCK, ENVIRONMENT_YML, RUNTIME_LOCK, check_lock, environment_yml, read_lock

ROOT = Path(__file__).resolve().parents[1]


def test_locks_agree_with_pyproject_and_environment_yml():
    assert check_lock(ROOT) == []
    runtime, dev = read_lock(ROOT / RUNTIME_LOCK), read_lock(ROOT / DEV_LOCK)
    assert (runtime["torch"].version, runtime["torchvision"].version) == ("2.14.1", "0.29.1")
    assert {"pytest", "nbval", "ruff", "jupyterlab"} <= set(dev) and not {"pytest", "ruff"} & set(runtime)
    assert "facenet-pytorch" in runtime, "installed without its dependencies, but locked with its hash"


@pytest.fixture
def project(tmp_path):
    for name in ("pyproject.toml", RUNTIME_LOCK, DEV_LOCK, ENVIRONMENT_YML):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_check_names_a_requirement_its_pin_does_not_satisfy(project):
    _edit(project / "pyproject.toml", '"timm>=1.0,<2"', '"timm>=99"')
    problems = check_lock(project)
    assert len(problems) == 1 and "timm==" in problems[0] and "timm>=99" in problems[0]


def test_check_names_a_dependency_missing_from_the_lock(project):
    _edit(project / "pyproject.toml", '"pytest>=8,<10"', '"pytest>=8,<10", "hypothesis>=6"')
    assert check_lock(project) == [f"{DEV_LOCK}: hypothesis>=6 (dev) is not locked; run `make lock`"]


def test_check_names_an_unhashed_pin_and_a_package_in_both_groups(project):
    lock = project / DEV_LOCK
    text = re.sub(r"(ruff==\S+) \\\n(\s+--hash=\S+( \\)?\n)+", r"\1\n", lock.read_text())
    lock.write_text(text + "numpy==" + read_lock(project / RUNTIME_LOCK)["numpy"].version + "\n")
    problems = check_lock(project)
    assert any(p.startswith(f"{DEV_LOCK}: ruff==") and p.endswith("has no --hash") for p in problems)
    assert f"{DEV_LOCK}: numpy is in {RUNTIME_LOCK} as well" in problems


def test_environment_yml_is_generated_not_edited(project):
    _edit(project / ENVIRONMENT_YML, "      - numpy==", "      - numpy>=")
    assert check_lock(project) == [f"{ENVIRONMENT_YML}: not what `make lock` writes from the locks; run `make lock`"]
    text = environment_yml(read_lock(project / RUNTIME_LOCK), read_lock(project / DEV_LOCK), ["facenet-pytorch"])
    pip_lines = [line for line in text.splitlines() if line.startswith("      - ")]
    assert pip_lines[-1] == "      - -e ." and all("==" in line for line in pip_lines[:-1])
    assert not any("facenet" in line for line in pip_lines), "pip would resolve its torch<2.3 pin"


def test_installed_check_names_a_version_that_differs_from_the_lock(project):
    from importlib import metadata

    from iqalab.lock import check_installed

    numpy = metadata.version("numpy")
    (project / RUNTIME_LOCK).write_text(f"numpy=={numpy} \\\n    --hash=sha256:00\npillow==0.0.1 \\\n"
                                        "    --hash=sha256:00\nnot-a-real-package==1.0 \\\n    --hash=sha256:00\n")
    problems = check_installed(project, groups=("runtime",))
    assert f"pillow=={metadata.version('pillow')} is installed but 0.0.1 is locked" in problems
    assert "not-a-real-package==1.0 is locked but not installed" in problems
    assert "scipy==" + metadata.version("scipy") + " is installed but not locked" in problems
    assert not any(p.startswith("numpy==") for p in problems)


def test_dvc_reads_its_files_with_ruamels_c_parser():
    """``ruamel.yaml.clib`` (a locked runtime dependency) is what DVC's safe loads of dvc.lock use: 2.06 -> 0.53 s
    for this project's lock, ``dvc status`` 11 -> 6.5 s (README, Benchmarks). Since ruamel.yaml 0.19.1 it is
    optional, so a lock without it would silently fall back to the pure-Python parser."""
    from ruamel.yaml import YAML
    from ruamel.yaml.main import CParser

    assert CParser is not None, "ruamel.yaml.clib is not installed"
    assert YAML(typ="safe").Parser is CParser
