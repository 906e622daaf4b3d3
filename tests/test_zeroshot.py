"""Zero-shot ``pyiqa:<metric>`` models: registry resolution without importing pyiqa, the real absence of pyiqa,
a fake pyiqa (weights present, weights missing, downloads blocked), the score mapping, and the stages that must
still complete and list an experiment whose model could not run."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from iqalab.config import ParamsError, parse_params
from iqalab.models import available, build_model, get_model_class
from iqalab.models.zeroshot import DownloadBlocked, PyIQAModel, no_downloads, parse_score_range
from iqalab.status import ModelUnavailable

from .conftest import toy_params

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
PYIQA_INSTALLED = importlib.util.find_spec("pyiqa") is not None


def normalised(rgb: torch.Tensor) -> torch.Tensor:
    """What the loaders feed a model: ImageNet-normalised RGB."""
    return (rgb - MEAN) / STD


class FakeMetric(nn.Module):
    """pyiqa's InferenceModel surface: [B, 3, H, W] in [0, 1] -> [B, 1]; here 100 x the mean intensity."""

    def __init__(self, name: str, lower_better: bool, score_range: str | None, mode: str = "NR") -> None:
        super().__init__()
        self.metric_name = name
        self.scale = nn.Parameter(torch.tensor(100.0))
        self.lower_better, self.score_range, self.metric_mode = lower_better, score_range, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.min() >= 0 and x.max() <= 1, "pyiqa asserts inputs in [0, 1]"
        assert x.dtype == torch.float32
        return (x.mean(dim=(1, 2, 3)) * self.scale).unsqueeze(1)


@pytest.fixture
def fake_pyiqa(monkeypatch, tmp_path):
    """A stand-in ``pyiqa`` module: ``musiq`` (higher better, range 0-100), ``niqe`` (lower better, no range),
    ``psnr`` (full-reference) and ``needs_download`` (its weights file is absent: it calls torch.hub's
    downloader, which iqalab must block)."""
    calls: list[dict] = []
    specs = {"musiq": (False, "~0, ~100", "NR"), "niqe": (True, None, "NR"), "psnr": (False, None, "FR"),
             "needs_download": (False, "0, 1", "NR"), "liqe": (False, "1, 5", "NR")}

    def create_metric(name, as_loss=False, device=None, **kwargs):
        calls.append({"name": name, "device": device, **kwargs})
        if name == "needs_download" and "pretrained_model_path" not in kwargs:
            target = tmp_path / "hub" / "pyiqa" / "needs_download.pth"
            if not target.is_file():
                torch.hub.download_url_to_file("https://example.invalid/needs_download.pth", str(target))
        if name == "liqe":  # as real pyiqa: the arch imports openai-clip, which imports pkg_resources
            raise ModuleNotFoundError("No module named 'pkg_resources'")
        lower, score_range, mode = specs[name]
        return FakeMetric(name, lower, score_range, mode)

    def list_models(metric_mode=None):
        return sorted(n for n, s in specs.items() if metric_mode is None or s[2] == metric_mode)

    module = types.ModuleType("pyiqa")
    module.create_metric = create_metric
    module.list_models = list_models
    module.calls = calls
    monkeypatch.setitem(sys.modules, "pyiqa", module)
    return module


# ------------------------------------------------------------------------------------------------ registry
def test_names_resolve_without_importing_pyiqa(monkeypatch):
    monkeypatch.delitem(sys.modules, "pyiqa", raising=False)
    cls = get_model_class("pyiqa:clipiqa+")
    assert issubclass(cls, PyIQAModel) and cls.metric_name == "clipiqa+" and cls.registry_name == "pyiqa:clipiqa+"
    assert get_model_class("pyiqa:clipiqa+") is cls, "one class per metric"
    assert cls.trainable is False and "CLIP" in cls.paper and "pyiqa" in cls.paper
    assert "pyiqa" not in sys.modules
    assert not any(name.startswith("pyiqa:") for name in available())
    for bad in ("pyiqa:", "pyiqa: musiq", "pyiqa:a/b"):
        with pytest.raises(KeyError, match="pyiqa:<metric>"):
            get_model_class(bad)


def test_params_accept_pyiqa_names_and_check_their_arguments():
    raw = toy_params(z={"dataset": "toy", "model": {"name": "pyiqa:topiq_nr", "score_range": [0, 1]}})
    assert parse_params(raw).experiments["z"].model.name == "pyiqa:topiq_nr"
    raw["experiments"]["z"]["model"]["weigths"] = "x.pth"
    with pytest.raises(ParamsError, match="experiments.z.model.weigths: unknown parameter.*'weights'"):
        parse_params(raw)
    raw = toy_params(z={"dataset": "toy", "model": {"name": "pyiqa:"}})
    with pytest.raises(ParamsError, match="experiments.z.model.name"):
        parse_params(raw)


@pytest.mark.skipif(PYIQA_INSTALLED, reason="pyiqa is installed here: the absence path cannot be exercised")
def test_real_absence_of_pyiqa_is_a_model_unavailable():
    with pytest.raises(ModelUnavailable) as err:
        build_model("pyiqa:musiq", ["overall"])
    assert err.value.status == "pyiqa not installed"
    assert "pip install 'iqalab[pyiqa]'" in err.value.detail


# ------------------------------------------------------------------------------------------ fake pyiqa
def test_scores_undo_normalisation_and_share_one_score(fake_pyiqa):
    model = build_model("pyiqa:musiq", ["overall", "noise"])
    rgb = torch.stack([torch.full((3, 8, 8), v) for v in (0.1, 0.25, 0.8)])
    out = model.predict({"image": normalised(rgb)})
    torch.testing.assert_close(out["overall"], torch.tensor([0.1, 0.25, 0.8]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["overall"], out["noise"])
    assert fake_pyiqa.calls[-1]["device"] == torch.device("cpu")
    assert model.state_dict() == {}, "the pyiqa network stays in its cache, not in every checkpoint"
    assert model.num_parameters() == 1 and not list(model.parameters())


def test_lower_is_better_metrics_are_flipped(fake_pyiqa):
    rgb = torch.stack([torch.full((3, 8, 8), v) for v in (0.1, 0.6)])
    niqe = build_model("pyiqa:niqe", ["overall"])  # no score range: negated
    torch.testing.assert_close(niqe.predict({"image": normalised(rgb)})["overall"], torch.tensor([-10.0, -60.0]),
                               atol=1e-4, rtol=0)
    ranged = build_model("pyiqa:niqe", ["overall"], score_range=[0, 100])  # with a range: 1 - unit
    torch.testing.assert_close(ranged.predict({"image": normalised(rgb)})["overall"], torch.tensor([0.9, 0.4]),
                               atol=1e-5, rtol=0)
    assert parse_score_range("~0, ~100") == (0.0, 100.0) and parse_score_range("1, 5") == (1.0, 5.0)
    assert parse_score_range("n/a") is None and parse_score_range([3, 1]) is None
    with pytest.raises(ValueError, match="score_range"):
        build_model("pyiqa:musiq", ["overall"], score_range=[5, 5])


def test_the_metric_moves_with_the_model_and_stays_in_eval_mode(fake_pyiqa):
    model = build_model("pyiqa:musiq", ["overall"])
    model.train()
    assert model.training and not model.metric.training
    model.double()
    assert model.metric.scale.dtype == torch.float64
    model.float()
    assert model.predict({"image": normalised(torch.full((1, 3, 4, 4), 0.5))})["overall"].dtype == torch.float32


def test_unknown_and_full_reference_metrics_are_config_errors(fake_pyiqa):
    with pytest.raises(ValueError, match="no metric 'musiqq'.*musiq"):
        build_model("pyiqa:musiqq", ["overall"])
    with pytest.raises(ValueError, match="full-reference"):
        build_model("pyiqa:psnr", ["overall"])


def test_missing_weights_block_the_download_and_say_so(fake_pyiqa):
    original = torch.hub.download_url_to_file
    with pytest.raises(ModelUnavailable) as err:
        build_model("pyiqa:needs_download", ["overall"])
    assert err.value.status.startswith("weights unavailable: pyiqa:needs_download is not in the local cache")
    assert "https://example.invalid/needs_download.pth" in err.value.status
    assert torch.hub.download_url_to_file is original, "the downloader is restored"


def test_a_metric_whose_packages_fail_to_import_is_unavailable(fake_pyiqa):
    """Seen with real pyiqa 0.1.16: LIQE and CLIP-IQA import openai-clip, which needs pkg_resources."""
    with pytest.raises(ModelUnavailable, match=r"pyiqa:liqe not importable: ModuleNotFoundError.*pkg_resources"):
        build_model("pyiqa:liqe", ["overall"])


def test_weights_argument_is_a_local_file(fake_pyiqa, tmp_path):
    with pytest.raises(ModelUnavailable, match="weights unavailable: weights file .*absent.pth not found"):
        build_model("pyiqa:needs_download", ["overall"], weights=str(tmp_path / "absent.pth"))
    local = tmp_path / "local.pth"
    local.write_bytes(b"weights")
    build_model("pyiqa:needs_download", ["overall"], weights=str(local), options={"extra": 1})
    assert fake_pyiqa.calls[-1]["pretrained_model_path"] == str(local) and fake_pyiqa.calls[-1]["extra"] == 1


def test_no_downloads_blocks_sockets_and_restores_them():
    assert "connect" not in vars(socket.socket)
    with no_downloads() as attempts:
        with pytest.raises(DownloadBlocked):
            socket.create_connection(("example.invalid", 443), timeout=0.1)
        sock = socket.socket()
        try:
            with pytest.raises(DownloadBlocked):
                sock.connect(("127.0.0.1", 9))
        finally:
            sock.close()
    assert len(attempts) == 2 and "example.invalid" in attempts[0]
    assert "connect" not in vars(socket.socket) and socket.create_connection.__name__ == "create_connection"


# ------------------------------------------------------------------------------------------------ stages
def _project(project, toy_dataset, **experiments):
    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    raw = toy_params(**experiments)
    raw["gmad"] = {"dataset": "toy", "attribute": "overall"}
    raw["camera_tuning"] = {"dataset": "toy", "n_scenarios": 1, "n_raters": 2, "grid_steps": 1, "search": False,
                            "image_size": 48, "n_figure_scenes": 0, "steps": {"iso": 0.5}}
    return project.write_params(raw)


def test_engine_runs_a_present_metric_and_records_ok(project, toy_dataset, fake_pyiqa):
    from iqalab.inference import experiment_checkpoint
    from iqalab.train.engine import load_checkpoint, model_from_checkpoint, train_experiment

    params = _project(project, toy_dataset, z={"dataset": "toy", "model": {"name": "pyiqa:musiq"}})
    preds = train_experiment(params, "z", project.root, progress=False)
    meta = json.loads((project.root / "results" / "predictions" / "z.json").read_text())
    assert meta["status"] == "ok" and meta["n_params"] == 1 and meta["splits"] == ["scene"]
    assert np.isfinite(preds.pred).all() and set(preds.role) == {"val", "test"}
    one = preds[preds.attribute == toy_dataset.attributes[0]].set_index("image_id").pred
    other = preds[preds.attribute == toy_dataset.attributes[-1]].set_index("image_id").pred
    pd.testing.assert_series_equal(one, other, check_names=False)
    ckpt, why = experiment_checkpoint(project.root, "z")
    assert ckpt is not None and why == ""
    assert not load_checkpoint(ckpt)["model"], "no pyiqa weights in best.pt"
    assert model_from_checkpoint(load_checkpoint(ckpt)).registry_name == "pyiqa:musiq"


@pytest.fixture
def absent_pyiqa(monkeypatch):
    """pyiqa made unimportable, whether or not it is installed (``None`` in sys.modules blocks the import)."""
    monkeypatch.setitem(sys.modules, "pyiqa", None)


def test_stages_complete_and_list_the_unavailable_experiment(project, toy_dataset, absent_pyiqa):
    from iqalab.inference import experiment_checkpoint
    from iqalab.report import build_report
    from iqalab.stages import camera_tuning, evaluate, gmad, profile, significance
    from iqalab.tables import read_table_csv
    from iqalab.train.engine import PREDICTION_COLUMNS, train_experiment

    tags = ["tuningiqa_table2", "tuningiqa_table3", "reqa_table1", "fhiqa_table1"]
    params = _project(project, toy_dataset,
                      net={"dataset": "toy", "label": "DBCNN", "tables": tags, "train": {"epochs": 1},
                           "model": {"name": "dbcnn", **get_model_class("dbcnn").smoke_params}},
                      musiq={"dataset": "toy", "label": "MUSIQ (zero-shot)", "tables": tags,
                             "model": {"name": "pyiqa:musiq"}})
    root: Path = project.root
    train_experiment(params, "net", root, progress=False)
    empty = train_experiment(params, "musiq", root, progress=False)
    assert list(empty.columns) == PREDICTION_COLUMNS and empty.empty

    meta = json.loads((root / "results" / "predictions" / "musiq.json").read_text())
    assert meta["status"] == "pyiqa not installed" and meta["splits"] == [] and meta["n_params"] is None
    on_disk = pd.read_parquet(root / "results" / "predictions" / "musiq.parquet")
    assert list(on_disk.columns) == PREDICTION_COLUMNS and on_disk.empty
    assert json.loads((root / "build" / "models" / "musiq" / "status.json").read_text())["status"] == meta["status"]
    assert experiment_checkpoint(root, "musiq") == (None, "pyiqa not installed")
    stale = root / "build" / "models" / "musiq" / "scene" / "best.pt"  # e.g. from a run that had the weights
    stale.parent.mkdir(parents=True)
    shutil.copy(root / "build" / "models" / "net" / "scene" / "best.pt", stale)
    assert experiment_checkpoint(root, "musiq")[0] is None and experiment_checkpoint(root, "net")[0] is not None

    profiles = profile.run(params, root, repeats=1)
    assert profiles["musiq"]["status"] == "pyiqa not installed" and profiles["musiq"]["params"] is None
    assert profiles["net"]["params"] > 0

    tables = evaluate.run(params, root, figures=False)
    assert {"tuningiqa_table2", "tuningiqa_table3", "reqa_table1", "fhiqa_table1", "all_metrics"} <= set(tables)
    summary = json.loads((root / "results" / "metrics" / "summary.json").read_text())
    assert set(summary) - {"_provenance"} == {"net"}, "no metrics for an experiment without predictions"
    table2 = read_table_csv(root / "results" / "tables" / "tuningiqa_table2.csv").set_index("model")
    assert table2.loc["MUSIQ (zero-shot)", "status"] == "pyiqa not installed" and table2.loc["DBCNN", "status"] == "ok"
    assert np.isnan(table2.loc["MUSIQ (zero-shot)", "SRCC"]) and np.isfinite(table2.loc["DBCNN", "SRCC"])
    assert table2.loc["DBCNN", "Params (M)"] > 0
    md = (root / "results" / "tables" / "tuningiqa_table2.md").read_text()
    row = next(line for line in md.splitlines() if "| MUSIQ (zero-shot) |" in line)
    assert row.count("pyiqa not installed") == 4 + 1, "SRCC, PLCC, PLCC (raw), FG-ACC and Params (M) cells"
    assert "MUSIQ (zero-shot): pyiqa not installed" in md.splitlines()[0], "the caption gives the reason"
    assert "mean ± std over 0" not in md and "one test split per experiment" in md
    for name in ("reqa_table1", "fhiqa_table1", "tuningiqa_table3", "all_metrics"):
        text = (root / "results" / "tables" / f"{name}.md").read_text()
        assert any("MUSIQ" in line or "musiq" in line for line in text.splitlines()[1:]), name
        assert "pyiqa not installed" in text.split("\n", 1)[1], name
    for name in ("reqa_table1", "fhiqa_table1"):
        assert any("Params (M)" in str(c) for c in tables[name].columns), f"{name} shows the parameter count"

    sig = significance.run(params, root, figures=False)
    assert isinstance(sig, dict)
    sig_summary = json.loads((root / "results" / "significance" / "summary.json").read_text())
    assert all(entry["unavailable"] == {"MUSIQ (zero-shot)": "pyiqa not installed"}
               for key, entry in sig_summary.items() if key != "_provenance")

    result = gmad.run(params, root, progress=False)
    assert result["report"]["unavailable"] == {"musiq": "pyiqa not installed"}
    assert "at least two" in result["report"]["skipped"] and result["report"]["competitors"] == ["net"]

    tuning = camera_tuning.run(params, root, progress=False)
    assert tuning["models"] == ["net"] and tuning["unavailable"] == {"musiq": "pyiqa not installed"}
    assert "MUSIQ (zero-shot): pyiqa not installed" in (root / "results" / "tuning" / "win_rates.md").read_text()

    report = build_report(params, root).read_text()
    assert "| musiq | MUSIQ (zero-shot) | pyiqa:musiq |" in report and "pyiqa not installed" in report


def test_model_cards_document_the_zero_shot_models():
    from iqalab.models.cards import cards_markdown, model_cards

    cards = model_cards(names=["niqe"], gmacs=False)
    text = cards_markdown(cards)
    assert "| [`pyiqa:<metric>`](#pyiqa-zero-shot-metrics) |" in text and "\n## pyiqa zero-shot metrics\n" in text
    assert "~/.cache/torch/hub/pyiqa" in text and "never downloaded" in text and "zero-shot" in text
    assert "`liqe`: W. Zhang" in text and "`musiq`: J. Ke" in text
    assert text.count("| n/a |") == 1, "the zero-shot row does not pretend to have GMACs"
    assert "pyiqa:<metric>" not in cards_markdown(cards, zero_shot=False)


def test_table_rows_with_a_status_and_params_column_direction():
    from iqalab.tables import Table, default_direction

    index = pd.MultiIndex.from_tuples([("d", "NIQE"), ("d", "MUSIQ"), ("d", "Net")], names=["dataset", "model"])
    data = pd.DataFrame({("overall", "SRCC"): [0.2, np.nan, 0.5], ("Params (M)", ""): [0.0007, np.nan, 11.5]},
                        index=index)
    table = Table("t", data, "caption", group_levels=("dataset",), row_status={("d", "MUSIQ"): "weights unavailable"})
    assert default_direction(("Params (M)", "")) == "min", "the empty last level does not hide 'params'"
    md = table.to_markdown()
    assert "| d | MUSIQ | weights unavailable | weights unavailable |" in md
    assert "| d | NIQE | 0.2000 | **0.0007** |" in md and "| d | Net | **0.5000** | 11.5000 |" in md
    assert table.to_frame()["status"].tolist() == ["ok", "weights unavailable", "ok"]
    assert r"weights unavailable & weights unavailable \\" in table.to_latex()
    assert "status" not in Table("t", data, "caption").to_frame().columns
