"""Config mistakes end in one line naming the key and exit 2, never a Python traceback (issue 26).

``iqalab check`` must refuse every mistake that would otherwise fail later (at ingest or training): option values
of the dataset builders, model keyword values, backbones timm does not know, missing weight files. Each case
below passed ``check`` (exit 0) or raised a traceback before; ``check`` runs in-process on a scratch project.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from iqalab.__main__ import main

from ..conftest import toy_params
from . import TINY_MODEL


def _base() -> dict[str, Any]:
    return toy_params(e={"dataset": "toy", "model": dict(TINY_MODEL)})


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        raw = raw.setdefault(key, {})
    raw[last] = value


#: (what is wrong, [(key, value)], the key path the message must name, a word of the reason)
CASES = [
    ("dataset option typo", [("datasets.toy.options.n_scene", 4)], "datasets.toy.options.n_scene", "unknown"),
    ("dataset option of the wrong type", [("datasets.toy.options.n_scenes", "four")],
     "datasets.toy.options.n_scenes", "integer"),
    ("simulator option of the wrong type", [("datasets.toy", {"source": "sim", "builder": "fglive_sim",
                                                              "options": {"n_scenes": "many"}})],
     "datasets.toy.options.n_scenes", "integer"),
    ("unknown backbone", [("experiments.e.model.backbone", "resnet_doesnotexist")],
     "experiments.e.model.backbone", "unknown backbone"),
    ("unknown model", [("experiments.e.model.name", "nosuchmodel")], "experiments.e.model.name", "unknown model"),
    ("model keyword of the wrong type", [("experiments.e.model.hidden", "big")], "experiments.e.model.hidden",
     "integer"),
    ("model keyword no constructor accepts", [("experiments.e.model.hidden", -4)], "experiments.e.model.hidden",
     "cannot be built"),
    ("missing pretrained weights file", [("experiments.e.model.pretrained", "weights/none.pth")],
     "experiments.e.model.pretrained", "not found"),
    ("unknown split", [("experiments.e.splits", ["scenery"])], "experiments.e.splits", "no split"),
    ("undefined dataset reference", [("experiments.e.dataset", "nosuch")], "experiments.e.dataset",
     "unknown dataset"),
    ("unknown adapter", [("datasets.toy", {"source": "adapter", "builder": "nosuch"})], "datasets.toy.builder",
     "unknown dataset adapter"),
    ("adapter option of the wrong type", [("datasets.toy", {"source": "adapter", "builder": "koniq10k",
                                                            "options": {"ratings": "sometimes"}})],
     "datasets.toy.options.ratings", "boolean"),
    ("train key typo", [("experiments.e.train", {"epocs": 2})], "experiments.e.train.epocs", "unknown key"),
]


@pytest.mark.parametrize(("what", "changes", "key", "reason"), CASES, ids=[c[0] for c in CASES])
def test_check_refuses_with_one_line_naming_the_key(what: str, changes: list[tuple[str, Any]], key: str,
                                                    reason: str, project, capsys: pytest.CaptureFixture) -> None:
    raw = copy.deepcopy(_base())
    for dotted, value in changes:
        _set(raw, dotted, value)
    path = project.root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = main(["-q", "--params", str(path), "check"])  # a traceback would raise here
    err = capsys.readouterr().err.strip()
    assert code == 2, (what, err)
    assert len(err.splitlines()) == 1, err
    assert err.startswith("iqalab check: error: ") and f"{key}:" in err and reason in err, err
    assert "Traceback" not in err and "{'seed'" not in err  # the key, not a dump of the whole params


def test_the_valid_base_passes_check(project, capsys: pytest.CaptureFixture) -> None:
    path = project.root / "params.yaml"
    path.write_text(yaml.safe_dump(_base()))
    assert main(["-q", "--params", str(path), "check"]) == 0, capsys.readouterr().err


def test_ingest_names_the_option_a_builder_refuses(project, capsys: pytest.CaptureFixture) -> None:
    """A value only the builder can judge (a negative image size) stops ingest with the option's key."""
    raw = _base()
    raw["datasets"]["toy"]["options"]["size"] = -3
    path = project.root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["-q", "--params", str(path), "ingest", "toy"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "datasets.toy.options: the toy generator refuses" in err, err
    assert not (Path(project.root) / "build" / "datasets" / "toy").exists()
