"""results/report.md: every table and figure exactly once, in the order of the papers, with the params header and
the simulated-data label; missing stages skipped; the same outputs give the same bytes."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from iqalab.config import parse_params
from iqalab.report import build_report, dataset_papers, params_digest

PNG = b"\x89PNG\r\n\x1a\n"  # links are checked, never decoded


def _params(source: str = "sim", seed: int = 0):
    sim = {"source": source, "builder": "fglive_sim" if source == "sim" else "generic"}
    model = {"name": "backbone_mlp", "backbone": "resnet18"}
    return parse_params({
        "seed": seed, "profile": "ci",
        "datasets": {"fglive_sim": sim, "ugc_sim": {**sim, "builder": "ugc_sim" if source == "sim" else "generic"}},
        "experiments": {
            "tune": {"dataset": "fglive_sim", "model": model, "tables": ["tuningiqa_table3", "tuningiqa_table2"]},
            "reqa": {"dataset": "ugc_sim", "model": model, "tables": ["reqa_table1"], "label": "REQA"},
        },
    }, check_models=False)


FILES = {
    "tables/tuningiqa_table3.md": "**tuningiqa_table3**: per attribute\n\n| a |\n|---|\n| 1 |\n",
    "tables/tuningiqa_table2.md": "**tuningiqa_table2**: averaged\n",
    "tables/reqa_table1.md": "**reqa_table1**: per tier\n",
    "tables/reqa_ablation.md": "**reqa_ablation**: ablation\n",
    "tables/sfiqa_table2.md": "**sfiqa_table2**: dims\n",
    "tables/fhiqa_table1.md": "**fhiqa_table1**: scenes\n",
    "tables/all_metrics.md": "**all_metrics**: long\n",
    "tables/yardstick_fglive_sim.md": "**yardstick_fglive_sim**: probe\n",
    "tables/custom_thing.md": "**custom_thing**: someone's extra table\n",
    "gmad/resistance.md": "**resistance**\n",
    "gmad/aggressiveness.md": "**aggressiveness**\n",
    "significance/bootstrap_ci.md": "**bootstrap_ci**\n",
    "significance/f_test_ugc_sim_overall.md": "**f_test_ugc_sim_overall**\n",
    "tuning/regret.md": "**regret**\n",
    "tuning/win_rates.md": "**win_rates**\n",
}
FIGURES = ["figures/evaluation/scatter_fglive_sim_overall.png", "figures/evaluation/scatter_ugc_sim_overall.png",
           "figures/evaluation/tiers_ugc_sim_overall.png", "figures/evaluation/scatter_other_ds_overall.png",
           "figures/gmad/matrices.png", "significance/f_test_ugc_sim_overall.png", "figures/tuning/picks.png",
           "figures/fglive_sim/mos_distributions.png", "figures/training/curves.png"]


def _results(root):
    results = root / "results"
    for rel, text in FILES.items():
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        (results / rel).write_text(text)
    for rel in FIGURES:
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        (results / rel).write_bytes(PNG)
    (results / "stats").mkdir()
    (results / "stats" / "fglive_sim.json").write_text(json.dumps(
        {"dataset": {"n_images": 321, "n_scenes": 40, "attributes": ["overall", "noise"], "simulated": True}}))
    (results / "predictions").mkdir()
    (results / "predictions" / "tune.json").write_text(json.dumps({"dataset": "fglive_sim", "simulated": True}))
    return results


def _position(text: str, needle: str) -> int:
    assert text.count(needle) == 1, f"{needle!r} should appear exactly once"
    return text.index(needle)


def test_every_table_and_figure_once_in_paper_order(tmp_path):
    results = _results(tmp_path)
    path = build_report(_params(), tmp_path)
    assert path == results / "report.md"
    text = path.read_text()
    for content in FILES.values():
        _position(text, content.splitlines()[0])
    order = [_position(text, f"## {title}\n") for title in (
        "TuningIQA", "FHIQA", "REQA", "SFIQA", "All experiments, all metrics", "Learnability yardstick", "gMAD", "Statistical significance",
        "Camera tuning", "Dataset statistics", "Other outputs")]
    assert order == sorted(order), "sections follow the papers, then gMAD, significance, tuning, statistics"
    assert _position(text, "**tuningiqa_table2**") < _position(text, "**tuningiqa_table3**")
    assert _position(text, "**reqa_table1**") < _position(text, "**reqa_ablation**"), "PAPER_TABLES order"
    assert _position(text, "**aggressiveness**") < _position(text, "**resistance**")
    assert _position(text, "**f_test_ugc_sim_overall**") < _position(text, "**bootstrap_ci**")
    assert _position(text, "**win_rates**") < _position(text, "**regret**")

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(FIGURES), "every figure linked once, relative to results/"
    assert all((results / link).is_file() for link in links)
    # evaluation figures go to the paper their dataset's experiments are tagged for
    assert _position(text, "## TuningIQA") < _position(text, "(figures/evaluation/scatter_fglive_sim_overall.png)") \
        < _position(text, "## FHIQA")
    assert _position(text, "## REQA") < _position(text, "(figures/evaluation/tiers_ugc_sim_overall.png)") \
        < _position(text, "## SFIQA")
    other = _position(text, "## Other outputs")
    assert _position(text, "## Learnability yardstick") < _position(text, "**yardstick_fglive_sim**") < other
    for orphan in ("**custom_thing**", "(figures/training/curves.png)", "(figures/evaluation/scatter_other_ds"):
        assert _position(text, orphan) > other
    stats = _position(text, "## Dataset statistics")
    assert stats < _position(text, "| images | 321 |") < _position(text, "(figures/fglive_sim/mos_distributions")


def test_header_names_profile_seed_params_and_simulated_data(tmp_path):
    _results(tmp_path)
    text = build_report(_params(), tmp_path).read_text()
    assert "profile **ci**" in text and "seed 0" in text and params_digest(_params()) in text
    assert "> **Simulated data.**" in text and "fglive_sim (camera simulator" in text
    assert "```yaml\nseed: 0\nprofile: ci\n" in text
    assert re.search(r"\| tune \| tune \| backbone_mlp \| resnet18 \| fglive_sim \(simulated\) \|.*\| yes \|", text)
    assert re.search(r"\| reqa \| REQA \|.*\| not run \|", text)


def test_real_data_has_no_simulated_label(tmp_path):
    text = build_report(_params(source="adapter"), tmp_path).read_text()
    assert "Simulated data" not in text and "(simulated)" not in text
    assert "No tables or figures yet" in text, "nothing run yet: the report says so instead of failing"


def test_missing_stages_are_skipped(tmp_path):
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "reqa_table1.md").write_text("**reqa_table1**: per tier\n")
    text = build_report(_params(), tmp_path).read_text()
    assert "## REQA" in text
    for title in ("TuningIQA", "gMAD", "Statistical significance", "Camera tuning", "Dataset statistics", "Other"):
        assert f"## {title}" not in text


def test_same_outputs_same_bytes_and_params_change_the_digest(tmp_path):
    _results(tmp_path)
    first = build_report(_params(), tmp_path).read_bytes()
    assert build_report(_params(), tmp_path).read_bytes() == first
    assert params_digest(_params(seed=1)) != params_digest(_params())
    assert build_report(_params(seed=1), tmp_path).read_bytes() != first


@pytest.mark.parametrize("tags, paper", [(["sfiqa_table2", "tuningiqa_table2"], "tuningiqa"),
                                         (["reqa_table4"], "reqa"), (["custom"], None)])
def test_dataset_goes_to_its_first_paper(tags, paper):
    params = parse_params({"datasets": {"d": {"source": "toy", "builder": "toy"}},
                           "experiments": {"e": {"dataset": "d", "model": {"name": "niqe"}, "tables": tags}}},
                          check_models=False)
    assert dataset_papers(params).get("d") == paper


def test_environment_groups_outputs_by_provenance_and_tables_lose_their_footer(tmp_path):
    from iqalab import provenance
    from iqalab.tables import Table

    results = _results(tmp_path)
    rec = {"code_commit": "c" * 40, "code_dirty": True, "params_hash": "a" * 12, "lock_hash": "b" * 12,
           "versions": {"torch": "9.9"}, "device": "cuda:0 (GPU)", "seed": 3}
    (results / "predictions" / "tune.json").write_text(json.dumps({"dataset": "fglive_sim", "provenance": rec}))
    (results / "metrics").mkdir()
    (results / "metrics" / "summary.json").write_text(json.dumps({"tune": {"srcc": 0.5}, "_provenance": rec}))
    other = {**rec, "code_dirty": False, "seed": 4}
    for name in ("regret", "win_rates"):
        Table(name, pd.DataFrame({"x": [1.0]}), "caption", provenance=other).write(results / "tuning")
    text = build_report(_params(), tmp_path).read_text()
    assert provenance.FOOTER_PREFIX not in text.split("## Environment")[0], "footers only in the environment"
    env = text.split("## Environment", 1)[1]
    rows = [line for line in env.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3  # the two JSON files share a record; the table has another; the report's own
    assert rows[0].startswith("| `metrics/summary.json`, `predictions/tune.json` |") and "| yes |" in rows[0]
    assert "c" * 12 + " | yes | " + "a" * 12 in rows[0] and "torch 9.9" in rows[0]
    assert rows[1].startswith("| `tuning/*.md` (2) |") and "| no |" in rows[1] and "| 4 |" in rows[1]
    assert rows[2].startswith("| this report |") and params_digest(_params()) in rows[2]
