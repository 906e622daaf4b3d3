"""``iqalab.notebook.setup``: the name checks run once per params and code, and every change of either reruns them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import iqalab.config
from iqalab import notebook
from iqalab.config import ParamsError

from .conftest import toy_params


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the calls of :func:`iqalab.config.check_names` (parse_params looks it up at call time)."""
    calls: list[int] = []
    real = iqalab.config.check_names

    def check_names(params):  # noqa: ANN001, ANN202
        calls.append(1)
        return real(params)

    monkeypatch.setattr(iqalab.config, "check_names", check_names)
    return calls


def _params(project, raw: dict) -> Path:  # noqa: ANN001
    path = project.root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_names_are_checked_once_per_params_and_code(project, counted, monkeypatch):
    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}})
    _params(project, raw)
    params, out = notebook.setup()
    assert out == project.root and list(params.experiments) == ["e"]
    stamp = project.root / notebook.CHECKED_STAMP
    assert counted == [1] and stamp.read_text().strip() == notebook.params_key(project.root / "params.yaml")
    params_again, _ = notebook.setup()
    assert counted == [1], "same params, same code: the checks are not repeated"
    assert params_again.model_dump() == params.model_dump()

    raw["experiments"]["e"]["model"]["widht"] = 3  # a typo: another key, so the checks run and refuse it
    _params(project, raw)
    with pytest.raises(ParamsError, match=r"experiments\.e\.model\.widht: unknown parameter"):
        notebook.setup()
    assert counted == [1, 1]
    assert stamp.read_text().strip() != notebook.params_key(project.root / "params.yaml"), "a failure stamps nothing"

    del raw["experiments"]["e"]["model"]["widht"]
    _params(project, raw)
    notebook.setup()
    assert counted == [1, 1], "back to the checked params"
    monkeypatch.setattr(notebook, "package_digest", lambda: "other code")
    notebook.setup()
    assert counted == [1, 1, 1], "other code: checked again"


def test_the_key_covers_every_overlay_layer(project):
    _params(project, toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}}))
    overlay = project.root / "profiles" / "big.yaml"
    overlay.parent.mkdir()
    overlay.write_text(yaml.safe_dump({"base": "../params.yaml", "profile": "big"}))
    before = notebook.params_key(overlay)
    _params(project, toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}, "train": {"epochs": 9}}))
    assert notebook.params_key(overlay) != before, "a change to the base changes the overlay's key"


def test_package_digest_reads_the_package_source(tmp_path, monkeypatch):
    """The digest is of every ``.py`` file below the package (bytes and relative paths) and of nothing else: an
    edited, added or renamed module changes it, a data file does not. Computed on a stand-in package folder."""
    digest = notebook.package_digest()
    assert len(digest) == 64 and digest == notebook.package_digest.__wrapped__()
    package = tmp_path / "iqalab"
    (package / "sim").mkdir(parents=True)
    (package / "notebook.py").write_text("x = 1\n")
    (package / "sim" / "camera.py").write_text("y = 2\n")
    monkeypatch.setattr(notebook, "__file__", str(package / "notebook.py"))
    first = notebook.package_digest.__wrapped__()
    assert first != digest
    (package / "data.json").write_text("{}")
    assert notebook.package_digest.__wrapped__() == first
    (package / "sim" / "camera.py").write_text("y = 3\n")
    edited = notebook.package_digest.__wrapped__()
    assert edited != first
    (package / "sim" / "kernels.py").write_text("")
    added = notebook.package_digest.__wrapped__()
    assert added != edited
    (package / "sim" / "kernels.py").rename(package / "sim" / "kernels2.py")
    assert notebook.package_digest.__wrapped__() not in {added, edited, first}


def test_stage_commands_share_the_checked_stamp(project, counted):
    """``iqalab <stage>`` loads params like the notebooks (the same stamp); ``iqalab check`` checks every time."""
    import argparse

    from iqalab.__main__ import _stage_params, main

    _params(project, toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}}))
    args = argparse.Namespace(params=None)
    assert list(_stage_params(args).experiments) == ["e"] and counted == [1]
    _stage_params(args)
    notebook.setup()
    assert counted == [1]
    assert main(["check"]) == 0
    assert counted == [1, 1]
