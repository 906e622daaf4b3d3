"""``make verify``'s comparison (issue 28) on a tiny fake results folder: a hand-changed metric is caught in every
kind of file, reruns within the stated tolerance pass, provenance and timings are not compared. The real rerun
(``dvc repro`` in a clone, as long as ``make repro``) is not run here: the ``run`` path (``verify`` /
``main(["run"])``) is exercised on a tiny git repository with ``dvc repro --force`` replaced by a fake that writes the
clone's ``results/`` (the clone, the probe of the clone's ``iqalab`` and the comparison are real)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from iqalab import provenance, verify
from iqalab.tables import Table

from .conftest import git


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


# --- the run path (``make verify``): a tiny git repository, ``dvc repro --force`` faked --------------------------

_SRCC = 0.81234567  # the committed metric of the tiny repository
def _write_run_results(results: Path, srcc: float, commit: str) -> None:
    """What the (fake) pipeline writes: a summary JSON with a provenance record and a table CSV."""
    (results / "metrics").mkdir(parents=True, exist_ok=True)
    (results / "tables").mkdir(parents=True, exist_ok=True)
    summary = {"modelA": {"srcc": srcc, "rmse": 0.5}, "_provenance": {"code_commit": commit}}
    (results / "metrics" / "summary.json").write_text(json.dumps(summary))
    (results / "tables" / "t.csv").write_text(f"# caption\nmodel,SRCC\nA,{srcc:.6g}\nB,0.5\n")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed project: dvc.yaml (the root marker), its own ``iqalab`` under src/, results/ with a JSON and a
    CSV; data/raw present but ignored by git. Temporary folders (``verify``'s) go to ``tmp_path/tmp``."""
    repo = tmp_path / "repo"
    (repo / "src" / "iqalab").mkdir(parents=True)
    (repo / "dvc.yaml").write_text("stages: {}\n")
    (repo / ".gitignore").write_text("/data\n")
    (repo / "src" / "iqalab" / "__init__.py").write_text("MARK = 'committed'\n")
    _write_run_results(repo / "results", _SRCC, "a" * 40)
    (repo / "data" / "raw").mkdir(parents=True)
    (repo / "data" / "raw" / "bench.txt").write_text("downloaded\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "committed results")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return repo


def _link(path: Path) -> tuple[str, Path | None]:
    """What ``path`` is (at the time of the rerun): a link and its target, a folder or absent."""
    if path.is_symlink():
        return "link", path.resolve()
    return ("folder" if path.exists() else "absent"), None


class FakeRepro:
    """Replaces ``dvc repro --force`` (only that: git clone and the probe of the clone's ``iqalab`` run for real):
    records what the rerun would see (command, cwd, environment, the clone's HEAD, committed summary, data/raw,
    the ``iqalab`` its environment imports) and writes ``results/`` into the clone with ``srcc``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, srcc: float = _SRCC, fail: bool = False) -> None:
        self.srcc, self.fail, self.calls = srcc, fail, []
        self._run = subprocess.run
        monkeypatch.setattr(verify.subprocess, "run", self)

    def __call__(self, cmd: list[str], *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        if Path(cmd[0]).name != "dvc":
            return self._run(cmd, *args, **kwargs)
        clone, env = Path(kwargs["cwd"]), kwargs["env"]
        imported = self._run([sys.executable, "-c", "import iqalab; print(iqalab.__file__); print(iqalab.MARK)"],
                             env=env, cwd=clone, capture_output=True, text=True, check=True).stdout.split("\n")
        self.calls.append({
            "cmd": list(cmd), "clone": clone, "env": dict(env), "head": git(clone, "rev-parse", "HEAD"),
            "summary": (clone / "results" / "metrics" / "summary.json").read_text(),
            "extra": (clone / "results" / "metrics" / "extra.json").exists(),
            "raw": _link(clone / "data" / "raw"), "imported": (Path(imported[0]), imported[1])})
        if self.fail:
            raise subprocess.CalledProcessError(1, cmd)
        _write_run_results(clone / "results", self.srcc, "b" * 40)  # another commit: provenance is not compared
        return subprocess.CompletedProcess(cmd, 0)


@pytest.mark.parametrize("head", ["branch", "detached"])
def test_run_clones_head_not_the_work_tree(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture, head: str) -> None:
    """The rerun happens in a clone of HEAD (also a detached one): uncommitted edits to results/ and src/ and
    untracked files of the work tree do not reach it, and the committed results it is compared with are HEAD's."""
    caplog.set_level(logging.INFO)
    committed_summary = (repo / "results" / "metrics" / "summary.json").read_text()
    if head == "detached":  # a later commit elsewhere; HEAD is checked out detached at the first one
        first = git(repo, "rev-parse", "HEAD")
        _write_run_results(repo / "results", 0.6, "c" * 40)
        git(repo, "commit", "-qam", "later")
        git(repo, "checkout", "-q", "--detach", first)
    expected_head = git(repo, "rev-parse", "HEAD")
    _write_run_results(repo / "results", 0.1, "d" * 40)  # uncommitted edits
    (repo / "results" / "metrics" / "extra.json").write_text('{"srcc": 0.3}')  # untracked
    (repo / "src" / "iqalab" / "__init__.py").write_text("MARK = 'dirty'\n")
    fake = FakeRepro(monkeypatch)
    monkeypatch.chdir(repo / "src")  # run from a subfolder: the root is found by dvc.yaml
    assert verify.main(["run"]) == 0
    (call,) = fake.calls
    assert call["cmd"][1:] == ["repro", "--force"]
    assert call["head"] == expected_head
    assert call["summary"] == committed_summary and not call["extra"]
    assert not call["clone"].resolve().is_relative_to(repo.resolve())
    assert call["imported"][1] == "committed"  # the committed code runs, not the work tree's edit
    assert "reproduced" in caplog.text and "NOT REPRODUCED" not in caplog.text


def test_run_environment_puts_the_clone_src_first(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """``dvc repro`` runs in the clone with the clone's src first on PYTHONPATH (a PYTHONPATH already set is kept
    after it), this interpreter's bin first on PATH, no IQALAB_WORKDIR / IQALAB_PARAMS, HF_HUB_OFFLINE=1 by default;
    the ``iqalab`` its environment imports is the clone's; data/raw is linked to the checkout's."""
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("PYTHONPATH", str(elsewhere))
    monkeypatch.setenv("IQALAB_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("IQALAB_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fake = FakeRepro(monkeypatch)
    assert verify.verify(repo) == []
    (call,) = fake.calls
    clone, env = call["clone"], call["env"]
    assert clone.name == "clone" and clone.parent.name.startswith("iqalab-verify-")
    assert env["PYTHONPATH"].split(verify.os.pathsep) == [str(clone / "src"), str(elsewhere)]
    assert env["PATH"].split(verify.os.pathsep)[0] == str(Path(sys.executable).parent)
    assert "IQALAB_WORKDIR" not in env and "IQALAB_PARAMS" not in env
    assert env["HF_HUB_OFFLINE"] == "1"
    assert call["imported"][0].resolve().is_relative_to(clone.resolve())
    assert call["raw"] == ("link", (repo / "data" / "raw").resolve())


def test_run_without_data_raw_links_nothing(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.rmtree(repo / "data")
    fake = FakeRepro(monkeypatch)
    assert verify.verify(repo) == []
    (call,) = fake.calls
    assert call["raw"] == ("absent", None)


def test_run_lists_each_difference_and_exits_1(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A rerun that gives another number (as against a hand-edited committed metric): exit 1, each differing file,
    place, committed and rerun value listed; the committed side is the clone's results/ before the rerun."""
    caplog.set_level(logging.INFO)
    FakeRepro(monkeypatch, srcc=0.7)
    differences = verify.verify(repo)
    assert sorted(map(str, differences)) == [
        "metrics/summary.json modelA.srcc: committed 0.81234567, rerun 0.7",
        "tables/t.csv row 0 (A) column 'SRCC': committed 0.812346, rerun 0.7"]
    monkeypatch.chdir(repo)
    caplog.clear()
    assert verify.main(["run"]) == 1
    assert "NOT REPRODUCED: 2 difference(s)" in caplog.text
    assert "metrics/summary.json modelA.srcc: committed 0.81234567, rerun 0.7" in caplog.text
    assert "tables/t.csv row 0 (A) column 'SRCC': committed 0.812346, rerun 0.7" in caplog.text
    assert "reproduced:" not in caplog.text
    # the tolerance stated on the command line reaches the run's comparison
    assert verify.main(["run", "--atol", "0.2"]) == 0


def test_run_removes_its_temporary_folder_unless_keep(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """Without --keep the temporary folder is gone after the run (also after a failed rerun); with --keep it stays,
    named in the log, holding the committed copy and the clone with the rerun's results."""
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(repo)
    fake = FakeRepro(monkeypatch, srcc=0.7)
    assert verify.main(["run"]) == 1
    assert not fake.calls[-1]["clone"].parent.exists() and list((tmp_path / "tmp").iterdir()) == []
    fake.fail = True
    with pytest.raises(subprocess.CalledProcessError):
        verify.main(["run"])
    assert list((tmp_path / "tmp").iterdir()) == []
    fake.fail = False
    caplog.clear()
    assert verify.main(["run", "--keep"]) == 1
    folder = fake.calls[-1]["clone"].parent
    assert list((tmp_path / "tmp").iterdir()) == [folder]
    assert f"verify: kept {folder}" in caplog.text
    kept = json.loads((folder / "committed" / "metrics" / "summary.json").read_text())
    rerun = json.loads((folder / "clone" / "results" / "metrics" / "summary.json").read_text())
    assert (kept["modelA"]["srcc"], rerun["modelA"]["srcc"]) == (_SRCC, 0.7)


def test_rerun_refuses_to_run_code_from_outside_the_clone(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """A clone without its own ``iqalab`` under src/ would run the installed one: refused before ``dvc repro``
    runs, and the temporary folder is still removed."""
    git(repo, "rm", "-rq", "src")
    git(repo, "commit", "-qm", "no src")
    fake = FakeRepro(monkeypatch)
    with pytest.raises(RuntimeError, match="would import iqalab from"):
        verify.verify(repo)
    assert fake.calls == [] and list((tmp_path / "tmp").iterdir()) == []
