"""params.yaml validation: typos, bad values and unknown model kwargs fail with the key path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from iqalab.config import ParamsError, load_params, parse_params

from .conftest import toy_params

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.experiments, "the default profile trains at least one experiment"
    for name, exp in params.experiments.items():
        assert exp.dataset in params.datasets, name
        params.train_config(name)


def test_paper_profile_is_valid():
    paper = REPO / "params" / "paper.yaml"
    if not paper.exists():
        pytest.skip("no paper profile yet")
    assert load_params(paper).profile == "paper"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["datasets"]["toy"].update(cache_sise=64), "datasets.toy.cache_sise: unknown key"),
        (lambda p: p["train_defaults"].update(epocs=3), "train_defaults.epocs: unknown key"),
        (lambda p: p["experiments"]["e"]["train"].update(lr=-1.0), "experiments.e.train.lr"),
        (lambda p: p["experiments"]["e"]["model"].update(backbon="x"), "experiments.e.model.backbon"),
        (lambda p: p["experiments"]["e"].update(dataset="nope"), "experiments.e.dataset: unknown dataset"),
        (lambda p: p["experiments"]["e"]["model"].update(name="nope"), "experiments.e.model.name"),
        (lambda p: p["train_defaults"].update(lr=math.nan), "train_defaults.lr: NaN/inf"),
        (lambda p: p["train_defaults"].update(batch_size=-4), "train_defaults.batch_size"),
        (lambda p: p["experiments"]["e"].update(splits=[]), "experiments.e.splits"),
        (lambda p: p.update(datasets={}), "datasets"),
    ],
)
def test_bad_params_name_the_key(mutate, expected):
    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}, "train": {}})
    parse_params(raw)  # the unmodified mapping is valid
    mutate(raw)
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert expected in str(err.value)
    assert "\n" not in str(err.value), "errors are one line"


def test_unknown_key_lists_allowed_keys():
    raw = toy_params()
    raw["train_defaults"]["epocs"] = 3
    with pytest.raises(ParamsError, match=r"allowed keys: \[.*'epochs'"):
        parse_params(raw)


def test_experiment_inherits_and_overrides_train_defaults():
    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}, "train": {"epochs": 7}})
    params = parse_params(raw)
    cfg = params.train_config("e")
    assert cfg.epochs == 7 and cfg.batch_size == raw["train_defaults"]["batch_size"]


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "params.yaml"
    evil.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(evil)


def test_missing_params_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


def test_nbval_params_are_valid():
    raw = yaml.safe_load((REPO / "tests" / "nbval" / "params.yaml").read_text())
    parse_params(raw)


@pytest.mark.parametrize("name", ["params.yaml", "params/paper.yaml"])
def test_params_files_have_no_yaml_anchors(name):
    """``dvc exp run -S`` silently drops overrides of anchored or aliased keys (docs/experiments.md, pitfalls)."""
    from iqalab.io import project_root

    text = (project_root() / name).read_text()
    tokens = [t for t in yaml.scan(text) if isinstance(t, (yaml.AnchorToken, yaml.AliasToken))]
    assert not tokens, f"{name}: anchors/aliases at lines {[t.start_mark.line + 1 for t in tokens]}"
