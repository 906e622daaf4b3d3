"""Where outputs go and where raw data is read from (issue 26).

A params file other than the project's ``params.yaml`` (the test params, a paper profile) writes to its own work
folder ``build/work/<name>/``, so that training with it never overwrites the committed ``results/predictions/``;
``IQALAB_WORKDIR`` still chooses the folder. ``raw:`` paths resolve against the project root, also when
``IQALAB_WORKDIR`` moves ``build/`` and ``results/`` elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from iqalab.__main__ import main
from iqalab.io import workdir

from ..conftest import toy_params


@pytest.fixture
def bare_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root (dvc.yaml) as cwd, with neither IQALAB_WORKDIR nor IQALAB_PARAMS set."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.delenv("IQALAB_WORKDIR", raising=False)
    monkeypatch.delenv("IQALAB_PARAMS", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_workdir_of_the_projects_params_and_of_another_file(bare_project: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = bare_project
    assert workdir() == root
    assert workdir(root / "params.yaml") == root
    assert workdir("params.yaml") == root  # relative to the cwd, the same file
    assert workdir(root / "tests" / "nbval" / "params.yaml") == root / "build" / "work" / "tests-nbval-params"
    assert workdir(root / "params" / "paper.yaml") == root / "build" / "work" / "params-paper"
    outside = workdir(root.parent / "elsewhere" / "mine.yaml")
    assert outside.parent == root / "build" / "work" and outside.name.startswith("mine-")
    monkeypatch.setenv("IQALAB_WORKDIR", str(root / "chosen"))
    assert workdir(root / "tests" / "nbval" / "params.yaml") == root / "chosen"  # told otherwise


def test_test_params_leave_the_committed_results_alone(bare_project: Path) -> None:
    """``iqalab --params tests/.../params.yaml ingest`` in the project root writes under build/work/, not to the
    project's build/ and results/."""
    root = bare_project
    committed = root / "results" / "predictions" / "e.parquet"
    committed.parent.mkdir(parents=True)
    committed.write_bytes(b"committed")
    other = root / "tests" / "params.yaml"
    other.parent.mkdir()
    other.write_text(yaml.safe_dump(toy_params()))
    assert main(["-q", "--params", str(other), "ingest", "toy"]) == 0
    assert (root / "build" / "work" / "tests-params" / "build" / "datasets" / "toy" / "dataset.json").is_file()
    assert not (root / "build" / "datasets").exists()
    assert committed.read_bytes() == b"committed"


def test_raw_paths_resolve_against_the_project_root_under_iqalab_workdir(bare_project: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = bare_project
    raw = root / "data" / "raw" / "mine"
    (raw / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["image,scene,mos_overall"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(raw / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,s{i // 2},{1 + i % 4}")
    (raw / "images.csv").write_text("\n".join(lines) + "\n")
    (root / "params.yaml").write_text(yaml.safe_dump({"datasets": {"mine": {
        "source": "adapter", "builder": "generic", "raw": "data/raw/mine", "cache_size": 32,
        "options": {"mos_range": [1, 5], "workers": 1}}}}))
    out = root.parent / f"{root.name}-work"
    monkeypatch.setenv("IQALAB_WORKDIR", str(out))
    assert main(["-q", "ingest", "mine"]) == 0
    assert (out / "build" / "datasets" / "mine" / "dataset.json").is_file()
    assert not (out / "data").exists()


def test_notebook_setup_uses_the_params_files_work_folder(bare_project: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``iqalab.notebook.setup`` follows the rule of the CLI: a params file other than the project's (the notebook's
    ``params_file`` or ``IQALAB_PARAMS``) gets ``build/work/<name>/`` under the project root, the project's
    ``params.yaml`` the root, and ``IQALAB_WORKDIR`` overrides both; found from a notebook's own folder too."""
    from iqalab import notebook

    root = bare_project
    for path in (root / "params.yaml", root / "params" / "paper.yaml", root / "tests" / "nbval" / "params.yaml"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(toy_params()))
    (root / "notebooks").mkdir()
    monkeypatch.chdir(root / "notebooks")  # nbval runs a notebook in its own folder

    params, out = notebook.setup("params/paper.yaml")
    assert out == root / "build" / "work" / "params-paper" and out.is_dir()
    assert list(params.datasets) == ["toy"]
    assert (out / notebook.CHECKED_STAMP).is_file(), "its outputs (here the name-check stamp) go to its work folder"
    assert not (root / notebook.CHECKED_STAMP).exists(), "nothing written to the project's build/"

    monkeypatch.setenv("IQALAB_PARAMS", "tests/nbval/params.yaml")  # how the notebook tests choose their params
    assert notebook.setup()[1] == root / "build" / "work" / "tests-nbval-params"
    monkeypatch.delenv("IQALAB_PARAMS")

    assert notebook.setup()[1] == root, "the project's params.yaml writes into the project"

    chosen = root.parent / f"{root.name}-chosen"
    monkeypatch.setenv("IQALAB_WORKDIR", str(chosen))
    assert notebook.setup("params/paper.yaml")[1] == chosen, "IQALAB_WORKDIR still chooses the folder"
    assert (chosen / notebook.CHECKED_STAMP).is_file()

    # a relative IQALAB_WORKDIR counts from the project root (as IQALAB_PARAMS), not from the notebook's folder:
    # the notebook and a command run from the root write to the same place
    monkeypatch.setenv("IQALAB_WORKDIR", "build/mine")
    assert notebook.setup("params/paper.yaml")[1] == root / "build" / "mine"
    monkeypatch.chdir(root)
    assert workdir() == root / "build" / "mine"
    assert not (root / "notebooks" / "build").exists(), "nothing under the notebook's folder"
