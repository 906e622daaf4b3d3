"""Trainable pyiqa architectures (``pyiqa_arch:<arch>``): names, constructor checks and the "pyiqa not installed"
status row always; with pyiqa importable (``PYTHONPATH`` to an install; never in CI), the real MUSIQ, MANIQA and
TReS built offline: shapes, gradients, one optimisation step, parameter counts, an engine run."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch

from iqalab.config import ParamsError, parse_params
from iqalab.models import available, build_model, get_model_class
from iqalab.models.base import StepContext
from iqalab.models.pyiqa_arch import ARCHS, MUSIQArch, arch_names, offline_backbones
from iqalab.models.zeroshot import no_downloads
from iqalab.status import ModelUnavailable

from .conftest import toy_params

PYIQA_INSTALLED = importlib.util.find_spec("pyiqa") is not None
ATTRS = ["overall", "noise"]


@pytest.fixture
def absent_pyiqa(monkeypatch):
    """pyiqa made unimportable, whether or not it is installed (``None`` in sys.modules blocks the import)."""
    monkeypatch.setitem(sys.modules, "pyiqa", None)


# ------------------------------------------------------------------------------------------ always
def test_names_resolve_without_pyiqa_and_stay_out_of_the_generic_registry(absent_pyiqa):
    assert arch_names() == ["pyiqa_arch:musiq", "pyiqa_arch:maniqa", "pyiqa_arch:tres", "pyiqa_arch:topiq",
                            "pyiqa_arch:wadiqam"]
    for name in arch_names():
        cls = get_model_class(name)
        assert cls.registry_name == name and cls.paper and ("random init" in cls.paper or "from scratch" in cls.paper)
        assert cls.smoke_params["options"] == ARCHS[name.split(":")[1]].smoke
    assert not any(name.startswith("pyiqa_arch:") for name in available())
    with pytest.raises(KeyError, match=r"pyiqa_arch:musiq.*pyiqa_arch:wadiqam"):
        get_model_class("pyiqa_arch:nope")


def test_absent_pyiqa_is_a_status_not_a_crash(absent_pyiqa):
    with pytest.raises(ModelUnavailable) as err:
        build_model("pyiqa_arch:maniqa", ATTRS)
    assert err.value.status == "pyiqa not installed"
    assert "pip install 'iqalab[pyiqa]'" in err.value.detail


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"options": {"pretrained": True}}, r"\['pretrained'\] are set by pyiqa_arch:musiq"),
    ({"options": {"num_class": 10, "pretrained_model_path": "x.pth"}}, r"\['num_class', 'pretrained_model_path'\]"),
    ({"loss": "smooth_l1"}, r"model.loss must be one of \['l1', 'l2', 'huber'\]"),
])
def test_constructor_refuses_weights_and_unknown_losses_before_importing_pyiqa(absent_pyiqa, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model("pyiqa_arch:musiq", ATTRS, **kwargs)


def test_missing_backbone_weights_file_is_a_weights_status(absent_pyiqa, tmp_path):
    with pytest.raises(ModelUnavailable, match="weights unavailable: backbone weights file .*none.pth not found"):
        build_model("pyiqa_arch:tres", ATTRS, backbone_weights=tmp_path / "none.pth")


def test_params_accept_arch_names_and_check_their_arguments():
    raw = toy_params(m={"dataset": "toy", "model": {"name": "pyiqa_arch:musiq", "options": {"num_layers": 2}}})
    assert parse_params(raw).experiments["m"].model.name == "pyiqa_arch:musiq"
    raw["experiments"]["m"]["model"]["pretrained"] = True
    with pytest.raises(ParamsError, match=r"experiments.m.model.pretrained: unknown parameter.*'options'"):
        parse_params(raw)
    raw = toy_params(m={"dataset": "toy", "model": {"name": "pyiqa_arch:vit"}})
    with pytest.raises(ParamsError, match="experiments.m.model.name"):
        parse_params(raw)


def test_offline_backbones_never_load_weights_and_restore_the_builders():
    import timm
    import torchvision.models as tvm

    create, resnet18 = timm.create_model, tvm.resnet18
    with no_downloads() as attempts, offline_backbones({"resnet50": "resnet10t"}) as built:
        net = tvm.resnet18(weights="IMAGENET1K_V1")  # would download without the patch
        small = timm.create_model("resnet50", pretrained=True)
    assert attempts == [] and built == ["torchvision:resnet18", "timm:resnet10t"]
    assert sum(p.numel() for p in small.parameters()) < 6e6, "the rename built the small model"
    torch.manual_seed(0)
    fresh = tvm.resnet18(weights=None)
    assert not torch.equal(net.conv1.weight, fresh.conv1.weight), "random init, not a cached checkpoint"
    assert timm.create_model is create and tvm.resnet18 is resnet18


def test_engine_records_the_status_row_without_pyiqa(project, toy_dataset, absent_pyiqa):
    from iqalab.train.engine import PREDICTION_COLUMNS, train_experiment

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = project.write_params(toy_params(
        tres={"dataset": "toy", "label": "TReS (trained)", "tables": ["sfiqa_table2"],
              "model": {"name": "pyiqa_arch:tres", **get_model_class("pyiqa_arch:tres").smoke_params}}))
    preds = train_experiment(params, "tres", project.root, progress=False)
    assert preds.empty and list(preds.columns) == PREDICTION_COLUMNS
    meta = json.loads((project.root / "results" / "predictions" / "tres.json").read_text())
    assert meta["status"] == "pyiqa not installed" and meta["model"] == "pyiqa_arch:tres"


def test_baselines_page_lists_every_paper_row_as_the_module_does():
    from pathlib import Path

    from iqalab.comparison_rows import COMPARISON_TABLES, section_markdown
    from iqalab.paper_tables.registry import table_names

    page = (Path(__file__).resolve().parents[1] / "docs" / "baselines.md").read_text()
    assert set(COMPARISON_TABLES) == {"tuningiqa_table2", "fhiqa_table1", "reqa_table2", "sfiqa_table2"}
    assert set(COMPARISON_TABLES) <= set(table_names())
    for tag in COMPARISON_TABLES:
        assert section_markdown(tag) in page, f"docs/baselines.md is out of step with {tag}"


def test_every_model_a_running_row_names_exists():
    from iqalab.comparison_rows import COMPARISON_TABLES

    named = {m for t in COMPARISON_TABLES.values() for r in t.rows if r.kind.startswith("runs")
             for m in re.findall(r"`([a-z_]+(?::[a-z_+]+)?)`", r.how)}
    assert {"niqe", "brisque", "dbcnn", "hyperiqa", "fhiqa", "reqa", "tuningiqa", *arch_names()} <= named
    for name in named - {"regressor", "backbone_weights"}:
        get_model_class(name)  # KeyError for a model that does not exist
    runs = {r.label for r in COMPARISON_TABLES["sfiqa_table2"].rows if r.kind.startswith("runs (pyiqa arch)")}
    assert runs == {"TReS", "MUSIQ", "MANIQA", "TOPIQ"}
    assert any(r.label == "WaDIQaM" and "pyiqa_arch:wadiqam" in r.how for r in COMPARISON_TABLES["reqa_table2"].rows)


def test_model_cards_document_the_arch_models(absent_pyiqa):
    from iqalab.models.cards import cards_markdown, model_cards

    text = cards_markdown(model_cards(names=["niqe"], gmacs=False), image_size=64)
    assert "| [`pyiqa_arch:<arch>`](#pyiqa-architectures-trained-here) |" in text
    assert "\n## pyiqa architectures trained here\n" in text and "[baselines.md](baselines.md)" in text
    for name in arch_names():
        assert f"| `{name}` |" in text


def test_rows_not_run_carry_their_reason():
    from iqalab.comparison_rows import Row, rows_not_run

    missing = dict(rows_not_run("tuningiqa_table2"))
    assert set(missing) == {"ILNIQE", "MT-A (Fang et al. 2020)", "CLIP-IQA+", "SARQUE (Huang et al. 2023)", "LIQE",
                            "Q-Align (mPLUG-Owl2-7B)", "Compare2Score (mPLUG-Owl2-7B)"}
    assert missing["SARQUE (Huang et al. 2023)"].startswith("cannot run: no public implementation")
    assert rows_not_run("fhiqa_table1") == [] and rows_not_run("tuningiqa_table4") == []
    with pytest.raises(ValueError, match="kind 'maybe'"):
        Row("X", "maybe", "")


# ------------------------------------------------------------------------------------------ with pyiqa
needs_pyiqa = pytest.mark.skipif(not PYIQA_INSTALLED, reason="pyiqa is not installed (optional extra)")

#: parameters of the arch itself that get no gradient because pyiqa's forward never uses them
UNUSED = {"musiq": r"$^",  # everything is used
          # ViT blocks after the 10th and its classifier; the Swin stages' unused patch-merging layers
          "maniqa": r"^arch\.(vit\.(blocks\.(1[0-9])\.|norm\.|fc_norm\.|head\.)|swintransformer\d\.downsample\.)",
          "tres": r"^arch\.model\.fc\.",  # the ResNet's ImageNet classifier
          "topiq": r"^arch\.attn_blks\.\d+\.layers\.\d+\.self_attn\.",  # decoder self-attention, never called
          "wadiqam": r"$^"}
#: SGD step that lowers each smoke model's loss on its batch (TReS's loss is dominated by its consistency term)
STEP_LR = {"musiq": 0.05, "maniqa": 0.01, "tres": 0.001, "topiq": 0.01, "wadiqam": 0.01}


def _smoke(key: str, seed: int = 0):
    cls = get_model_class(f"pyiqa_arch:{key}")
    torch.manual_seed(seed)
    model = build_model(f"pyiqa_arch:{key}", ATTRS, **cls.smoke_params)
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randn(2, 3, 64, 64, generator=g), "mos_norm": torch.rand(2, len(ATTRS), generator=g)}
    return model, batch


def _loss(model, batch, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    np.random.seed(seed)  # pyiqa's random crops
    return model.training_step(batch, StepContext(epoch=0, epochs=1))


@needs_pyiqa
@pytest.mark.parametrize("key", list(ARCHS))
def test_real_arch_shapes_gradients_and_one_step(key):
    model, batch = _smoke(key)
    model.eval()
    out = model.predict(batch)
    assert set(out) == set(ATTRS)
    for score in out.values():
        assert score.shape == (2,) and ((score >= 0) & (score <= 1)).all()
    model.train()
    loss = _loss(model, batch)
    loss.backward()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    without = [n for n, p in named if p.grad is None]
    assert [n for n in without if not re.match(UNUSED[key], n)] == []
    arch = [p for n, p in named if n.startswith("arch.") and not re.match(UNUSED[key], n)]
    assert arch and all(p.grad is not None for p in arch), "gradients reach the architecture, not only the head"
    opt = torch.optim.SGD([p for _, p in named], lr=STEP_LR[key])
    opt.step()
    model.zero_grad()
    assert float(_loss(model, batch).detach()) < float(loss.detach()), "one step on the same batch lowers the loss"


@needs_pyiqa
def test_backbone_weights_initialise_the_arch_offline(tmp_path):
    trained, _ = _smoke("musiq", seed=0)
    path = tmp_path / "musiq.pth"
    torch.save({"params": {k: v for k, v in trained.arch.state_dict().items()}}, path)
    fresh = build_model("pyiqa_arch:musiq", ATTRS, backbone_weights=path, **MUSIQArch.smoke_params)
    other, _ = _smoke("musiq", seed=1)
    for name, value in trained.arch.state_dict().items():
        torch.testing.assert_close(fresh.arch.state_dict()[name], value)
    assert not torch.equal(other.arch.embedding.weight, trained.arch.embedding.weight)


@needs_pyiqa
def test_losses_skip_missing_targets():
    model, batch = _smoke("musiq")
    pred = {"overall": torch.tensor([0.2, 0.9]), "noise": torch.tensor([0.5, 0.5])}
    target = torch.tensor([[0.4, float("nan")], [0.2, 0.3]])
    expected = {"l1": (0.45 + 0.2) / 2, "l2": ((0.04 + 0.49) / 2 + 0.04) / 2,
                "huber": ((0.1 * (0.2 - 0.05) + 0.1 * (0.7 - 0.05)) / 2 + 0.1 * (0.2 - 0.05)) / 2}  # delta 0.1
    for loss, value in expected.items():
        model.loss_name = loss
        assert float(model.regression_loss(pred, target)) == pytest.approx(value), loss


#: the "Sizes of the pyiqa architectures" table of docs/baselines.md: one row per arch, counts with thousands commas
_SIZE_ROW = re.compile(r"^\| `pyiqa_arch:(?P<key>[a-z]+)` \| (?P<arch>[\d,]+) \| (?P<millions>\d+\.\d+) M "
                       r"\((?P<total>[\d,]+)\) \| (?P<papers>[^|]*) \|$")


def _documented_sizes() -> dict[str, dict]:
    """``{arch: {"arch": n, "total": n, "millions": "27.13", "papers": "..."}}`` from docs/baselines.md, so the test of
    the real counts below and the page cannot drift apart."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "baselines.md").read_text()
    section = page.split("\n## Sizes of the pyiqa architectures", 1)[1].split("\n## ", 1)[0]
    sizes = {}
    for line in section.splitlines():
        if line.startswith("| `pyiqa_arch:"):
            row = _SIZE_ROW.match(line)
            assert row, f"docs/baselines.md: size row not in the expected form: {line}"
            sizes[row["key"]] = {"arch": int(row["arch"].replace(",", "")),
                                 "total": int(row["total"].replace(",", "")),
                                 "millions": row["millions"], "papers": row["papers"]}
    return sizes


def test_documented_sizes_parse_and_agree_with_themselves():
    """Runs without pyiqa: the size table parses into every arch, its rounded column is its exact count, and the
    page's claim that MANIQA, TReS and TOPIQ "match SFIQA's counts to the stated digits" holds for its numbers."""
    sizes = _documented_sizes()
    assert list(sizes) == list(ARCHS)
    assert sizes["musiq"]["arch"] == 27_125_440 and sizes["wadiqam"]["total"] == 5_238_562
    for key, row in sizes.items():
        assert row["total"] > row["arch"], f"{key}: the one-attribute head adds parameters"
        assert f"{row['total'] / 1e6:.2f}" == row["millions"], f"{key}: {row['millions']} M vs {row['total']:,}"

    def matches_sfiqa(key: str) -> bool:
        stated = re.search(r"SFIQA (\d+\.(\d+)) M", sizes[key]["papers"])
        assert stated, f"{key}: no SFIQA count in the papers' column"
        return round(sizes[key]["total"] / 1e6, len(stated[2])) == float(stated[1])

    assert [key for key in ("musiq", "maniqa", "tres", "topiq") if matches_sfiqa(key)] == ["maniqa", "tres", "topiq"]


@needs_pyiqa
def test_real_archs_are_built_offline_at_the_papers_size():
    """Parameter counts at pyiqa's defaults (the papers' configurations), random init, one attribute: exactly the
    counts of docs/baselines.md's size table (both columns), and near the papers' sizes."""
    counts = {}
    for key in ARCHS:
        model = build_model(f"pyiqa_arch:{key}", ["overall"])
        counts[key] = (model.arch_parameters(), model.num_parameters(), model.backbones_built)
    documented = _documented_sizes()
    assert {key: (arch, total) for key, (arch, total, _) in counts.items()} == {
        key: (row["arch"], row["total"]) for key, row in documented.items()}
    assert counts["musiq"][0] == pytest.approx(27.1e6, rel=0.02) and counts["musiq"][2] == []
    assert counts["maniqa"][0] == pytest.approx(135.4e6, rel=0.02)
    assert counts["maniqa"][2] == ["timm:vit_base_patch8_224"]
    assert counts["tres"][0] == pytest.approx(152.5e6, rel=0.02) and counts["tres"][2] == ["torchvision:resnet50"]
    assert counts["topiq"][0] == pytest.approx(45.06e6, rel=0.01) and counts["topiq"][2] == ["timm:resnet50"]
    assert counts["wadiqam"][0] == 4_712_224 and counts["wadiqam"][2] == []


@needs_pyiqa
def test_real_musiq_trains_in_the_engine_and_reloads(project, toy_dataset):
    from iqalab.train.engine import load_checkpoint, model_from_checkpoint, train_experiment

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = project.write_params(toy_params(
        m={"dataset": "toy", "label": "MUSIQ (trained)", "train": {"epochs": 1},
           "model": {"name": "pyiqa_arch:musiq", **MUSIQArch.smoke_params}}))
    preds = train_experiment(params, "m", project.root, progress=False)
    meta = json.loads((project.root / "results" / "predictions" / "m.json").read_text())
    assert meta["status"] == "ok" and meta["notes"]["pretrained"] is False and meta["notes"]["loss"] == "l2"
    assert np.isfinite(preds.pred).all() and not preds.empty
    model = model_from_checkpoint(load_checkpoint(project.root / "build" / "models" / "m" / "scene" / "best.pt"))
    assert isinstance(model, MUSIQArch)
