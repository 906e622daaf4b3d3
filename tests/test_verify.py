"""``make verify``'s comparison (issue 28) on a tiny fake results folder: a hand-changed metric is caught in every
kind of file, reruns within the stated tolerance pass, provenance and timings are not compared. The rerun itself
(``dvc repro`` in a clone, as long as ``make repro``) is not run here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from iqalab import provenance, verify
from iqalab.tables import Table


def _results(root: Path, srcc: float = 0.81234567, record: dict | None = None) -> Path:
    """A results folder as the pipeline writes it: summary.json, a table in three formats, predictions."""
    results = root / "results"
    record = record or {"code_commit": "a" * 40, "code_dirty": False, "params_hash": "p" * 12,
                        "lock_hash": "l" * 12, "versions": {"torch": "2.5.1"}, "device": "cpu", "seed": 0}
    summary = {"modelA": {"srcc": srcc, "rmse": 0.5}, "_provenance": record}
    (results / "metrics").mkdir(parents=True)
    (results / "metrics" / "summary.json").write_text(json.dumps(summary))
    data = pd.DataFrame({"SRCC": [srcc, 0.5], "Latency (ms)": [3.2, 4.1]}, index=pd.Index(["A", "B"], name="model"))
    Table("t", data, "caption with 2 splits", provenance=record).write(results / "tables")
    (results / "predictions").mkdir()
    (results / "predictions" / "A.json").write_text(json.dumps({"train_seconds": 12.5, "n_params": 10,
                                                                 "provenance": record}))
    pd.DataFrame({"image_id": ["x", "y"], "pred": [srcc, 1.0]}).to_parquet(results / "predictions" / "A.parquet")
    return results


@pytest.fixture
def committed(tmp_path: Path) -> Path:
    return _results(tmp_path / "committed")


def test_identical_and_within_tolerance_pass(committed: Path, tmp_path: Path) -> None:
    assert verify.compare_results(committed, committed) == []
    other = {"code_commit": "b" * 40, "code_dirty": True, "params_hash": "p" * 12, "lock_hash": "m" * 12,
             "versions": {"torch": "2.6.0"}, "device": "cuda:0 (X)", "seed": 0}
    # 1e-7 relative noise: within the tolerance; provenance differs everywhere: not compared
    rerun = _results(tmp_path / "rerun", srcc=0.81234567 * (1 + 1e-7), record=other)
    assert verify.compare_results(committed, rerun) == []


def test_a_hand_changed_metric_is_caught_in_each_file(committed: Path, tmp_path: Path) -> None:
    rerun = _results(tmp_path / "rerun", srcc=0.80234567)  # what a rerun gives; committed says 0.8123...
    found = {(d.file, d.where) for d in verify.compare_results(committed, rerun)}
    assert ("metrics/summary.json", "modelA.srcc") in found
    assert ("tables/t.csv", "row 0 (A) column 'SRCC'") in found
    assert ("predictions/A.parquet", "row 0 (x) column 'pred'") in found
    assert {"tables/t.md", "tables/t.tex"} <= {f for f, _ in found}
    assert all("rmse" not in where and "Latency" not in where for _, where in found)


def test_only_the_markdown_edited_by_hand_is_caught(committed: Path, tmp_path: Path) -> None:
    rerun = tmp_path / "rerun"
    shutil.copytree(committed, rerun)
    md = committed / "tables" / "t.md"
    md.write_text(md.read_text().replace("0.8123", "0.9123"))
    (differences,) = verify.compare_results(committed, rerun)
    assert differences.file == "tables/t.md" and "0.9123" in differences.committed
    assert "0.8123" in differences.rerun


def test_rounding_flip_in_the_last_shown_digit_passes_a_real_change_does_not() -> None:
    assert verify.compare_text("| A | 0.8124 ± 0.0100 |", "| A | 0.8123 ± 0.0100 |") == []
    assert verify.compare_text("| A | 0.8125 |", "| A | 0.8123 |") != []
    assert verify.compare_text("| A | 0.8123 |", "| B | 0.8123 |") != []  # the text around the numbers too


def test_json_structure_and_missing_files_are_differences(committed: Path, tmp_path: Path) -> None:
    rerun = tmp_path / "rerun"
    shutil.copytree(committed, rerun)
    summary = json.loads((rerun / "metrics" / "summary.json").read_text())
    summary["modelB"] = {"srcc": 0.1}
    (rerun / "metrics" / "summary.json").write_text(json.dumps(summary))
    (rerun / "tables" / "t.tex").unlink()
    found = {(d.file, d.where, str(d.rerun)) for d in verify.compare_results(committed, rerun)}
    assert ("metrics/summary.json", "modelB", "{'srcc': 0.1}") in found
    assert ("tables/t.tex", "file", "<missing>") in found
    assert verify.compare_json({"a": [1, 2]}, {"a": [1, 2, 3]}, "f") != []
    assert verify.compare_json({"n": float("nan")}, {"n": float("nan")}) == []


def test_compare_command_exit_status_and_listing(committed: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    assert verify.main(["compare", str(committed), str(committed)]) == 0
    rerun = _results(tmp_path / "rerun", srcc=0.7)
    assert verify.main(["compare", str(committed), str(rerun)]) == 1
    assert "NOT REPRODUCED" in caplog.text and "modelA.srcc: committed 0.81234567, rerun 0.7" in caplog.text
    # a looser tolerance, as stated on the command line, accepts the same difference
    assert verify.main(["compare", str(committed), str(rerun), "--atol", "0.2"]) == 0


def test_report_environment_section_is_not_compared(tmp_path: Path) -> None:
    text = "# r\n\n| model | SRCC |\n|---|---:|\n| A | 0.8123 |\n\n## Environment\n\n| code |\n|---|\n| {} |\n"
    a, b = text.format("a" * 12), text.format("b" * 12)
    assert verify.compare_rendered(a, b, "report.md", ".md") == []
    footer_a = f"x\n<sub>{provenance.FOOTER_PREFIX} code=1</sub>\n"
    assert verify.compare_rendered(footer_a, footer_a.replace("code=1", "code=2"), "t.md", ".md") == []


def test_untraced_lists_files_with_numbers_but_no_provenance(committed: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    assert verify.untraced(committed) == []  # JSONs carry records, tables footers, the parquet its folder's
    assert verify.main(["traced", str(committed)]) == 0
    (committed / "metrics" / "extra.json").write_text('{"srcc": 0.5}')
    (committed / "tables" / "hand.md").write_text("| a |\n|---|\n| 1 |\n")
    (committed / "tables" / "data.csv").write_text("a\n1\n")  # plain data beside the tables: their record
    (committed / "loose").mkdir()
    (committed / "loose" / "data.csv").write_text("a\n1\n")  # no record in its folder
    (committed / "figures").mkdir()
    (committed / "figures" / "x.json").write_text("{}")  # figures: traced through their stage
    (committed / "report.md").write_text("# report\n\n| 1 |\n")
    assert verify.untraced(committed) == ["loose/data.csv", "metrics/extra.json", "report.md", "tables/hand.md"]
    assert verify.main(["traced", str(committed)]) == 1 and "loose/data.csv" in caplog.text


@pytest.mark.parametrize("committed_value", [0.81234567, 123.456, -2.5])
def test_tolerance_boundary_is_atol_plus_rtol_times_committed(committed_value: float) -> None:
    """|rerun - committed| <= 1e-8 + 1e-5 * |committed| (README, make verify): 0.9x that difference passes, 1.1x
    fails, in JSON and in a table cell alike."""
    bound = verify.ATOL + verify.RTOL * abs(committed_value)
    assert (verify.RTOL, verify.ATOL) == (1e-5, 1e-8)
    for factor, reproduced in ((0.9, True), (-0.9, True), (1.1, False), (-1.1, False)):
        rerun = committed_value + factor * bound
        json_ok = verify.compare_json({"srcc": committed_value}, {"srcc": rerun}) == []
        frame_ok = verify.compare_frames(pd.DataFrame({"m": ["a"], "srcc": [committed_value]}),
                                         pd.DataFrame({"m": ["a"], "srcc": [rerun]})) == []
        assert json_ok is frame_ok is reproduced, (committed_value, factor)
    # the absolute term alone decides near zero
    assert verify.compare_json({"x": 0.0}, {"x": 0.9e-8}) == []
    assert verify.compare_json({"x": 0.0}, {"x": 1.1e-8}) != []


def test_relative_differences_just_inside_and_outside_the_tolerance(committed: Path, tmp_path: Path) -> None:
    """A rerun 0.9e-5 (relative) off every committed number is reproduced; 1.1e-5 off is listed in summary.json
    and the predictions parquet (cell by cell, full precision)."""
    inside = _results(tmp_path / "inside", srcc=0.81234567 * (1 + 0.9e-5))
    assert verify.compare_results(committed, inside) == []
    outside = _results(tmp_path / "outside", srcc=0.81234567 * (1 + 1.1e-5))
    found = {(d.file, d.where) for d in verify.compare_results(committed, outside)}
    assert {("metrics/summary.json", "modelA.srcc"), ("predictions/A.parquet", "row 0 (x) column 'pred'")} <= found
    assert verify.main(["compare", str(committed), str(inside)]) == 0
    assert verify.main(["compare", str(committed), str(outside)]) == 1


def test_differing_timings_are_not_compared(committed: Path, tmp_path: Path) -> None:
    """Train seconds and latency differ between any two runs: a rerun where only they differ (JSON key
    ``train_seconds``, table column ``Latency (ms)`` in CSV, Markdown and LaTeX) is reproduced, while the same change
    to a compared column is caught."""
    rerun = tmp_path / "rerun"
    shutil.copytree(committed, rerun)
    meta = json.loads((rerun / "predictions" / "A.json").read_text())
    meta["train_seconds"] = 99.25
    (rerun / "predictions" / "A.json").write_text(json.dumps(meta))
    record = json.loads((committed / "predictions" / "A.json").read_text())["provenance"]
    slow = pd.DataFrame({"SRCC": [0.81234567, 0.5], "Latency (ms)": [17.9, 0.4]},
                        index=pd.Index(["A", "B"], name="model"))
    Table("t", slow, "caption with 2 splits", provenance=record).write(rerun / "tables")
    assert (rerun / "tables" / "t.csv").read_text() != (committed / "tables" / "t.csv").read_text()
    assert verify.compare_results(committed, rerun) == []
    # the same edit to a compared number is a difference in every table file: the check can fail
    changed = pd.DataFrame({"SRCC": [0.81234567, 0.7], "Latency (ms)": [3.2, 4.1]},
                           index=pd.Index(["A", "B"], name="model"))
    Table("t", changed, "caption with 2 splits", provenance=record).write(rerun / "tables")
    assert {d.file for d in verify.compare_results(committed, rerun)} == {"tables/t.csv", "tables/t.md", "tables/t.tex"}
    meta["n_params"] = 11  # and a non-timing JSON key
    (rerun / "predictions" / "A.json").write_text(json.dumps(meta))
    assert ("predictions/A.json", "n_params") in {(d.file, d.where) for d in verify.compare_results(committed, rerun)}
