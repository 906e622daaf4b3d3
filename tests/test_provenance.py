"""Provenance (issue 28): the record's fields, its git rules (last commit touching the code, dirty ignoring the
pipeline's own outputs, no repository -> unknown), the table footers, and every writer of numbers under results/
run on tiny data (evaluation tables and summary.json, the training engine's predictions JSON, the report)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from iqalab import provenance
from iqalab.config import parse_params
from iqalab.tables import Table, read_table_csv

from .conftest import git, toy_params
from .evaluate_fakes import ground_truth, params_dict, with_predictions, write_experiment

HEX40 = re.compile(r"^[0-9a-f]{40}$")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with code, params and a lock committed."""
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("x = 1\n")
    (root / "params.yaml").write_text("seed: 0\n")
    (root / "requirements.lock").write_text("numpy==2.0 --hash=sha256:00\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "code")
    return root


def test_record_in_this_checkout_names_code_params_lock_versions() -> None:
    params = parse_params(toy_params(), check_models=False)
    record = provenance.collect(params)
    root = provenance.code_root()
    if (root / ".git").exists() and shutil.which("git"):
        assert HEX40.match(record["code_commit"]) and isinstance(record["code_dirty"], bool)
    lock = root / "requirements.lock"
    assert record["lock_hash"] == hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    assert record["versions"]["numpy"] == metadata.version("numpy")
    assert set(provenance.PACKAGES) <= set(record["versions"])
    assert record["seed"] == params.seed and record["device"] == "cpu"
    other = parse_params({**toy_params(), "seed": params.seed + 1}, check_models=False)
    assert provenance.collect(other)["params_hash"] != record["params_hash"]
    assert provenance.collect(params)["params_hash"] == record["params_hash"]  # canonical: same params, same hash


def test_commit_is_the_last_one_touching_code_and_outputs_never_make_it_dirty(repo: Path) -> None:
    code_commit = git(repo, "rev-parse", "HEAD")
    for folder in ("results", "build"):
        (repo / folder).mkdir()
        (repo / folder / "x.json").write_text("{}")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    (repo / "README.md").write_text("docs\n")
    git(repo, "add", "results", "dvc.lock", "README.md")
    git(repo, "commit", "-qm", "results and docs")
    assert git(repo, "rev-parse", "HEAD") != code_commit
    # build/ untracked, results/ changed again after the commit: neither makes the code dirty
    (repo / "results" / "x.json").write_text('{"a": 1}')
    assert provenance.git_state.__wrapped__(repo) == (code_commit, False)
    (repo / "src" / "a.py").write_text("x = 2\n")
    assert provenance.git_state.__wrapped__(repo) == (code_commit, True)
    (repo / "src" / "a.py").write_text("x = 1\n")
    (repo / "src" / "new.py").write_text("")  # an untracked module runs too
    assert provenance.git_state.__wrapped__(repo) == (code_commit, True)


def test_no_repository_or_no_git_reads_unknown(tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exported = tmp_path / "exported"
    shutil.copytree(repo, exported, ignore=shutil.ignore_patterns(".git"))
    assert provenance.git_state.__wrapped__(exported) == (provenance.UNKNOWN, None)
    assert provenance.lock_hash.__wrapped__(tmp_path / "nowhere") == provenance.UNKNOWN
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git executable
    assert provenance.git_state.__wrapped__(repo) == (provenance.UNKNOWN, None)
    record = provenance.collect(root=exported)
    assert record["code_commit"] == provenance.UNKNOWN and record["params_hash"] == provenance.UNKNOWN
    assert provenance.footer(record).startswith("Provenance: code=unknown; params=unknown;")


def test_footer_reads_back_as_the_records_row() -> None:
    record = {"code_commit": "a" * 40, "code_dirty": True, "params_hash": "0123456789ab", "lock_hash": "ffffeeee0000",
              "versions": {"torch": "2.5.1+cpu", "numpy": "2.1.0"}, "device": "cuda:0 (NVIDIA H200)", "seed": 7}
    fields = provenance.parse_footer(f"| a |\n\n<sub>{provenance.footer(record)}</sub>\n")
    assert fields is not None and fields["code"] == "a" * 12 + "+dirty" and fields["seed"] == "7"
    assert provenance.footer_row(fields) == provenance.summary_line(record)
    assert provenance.parse_footer("| no footer |\n") is None


def test_table_files_carry_the_footer_and_still_read_back(tmp_path: Path) -> None:
    params = parse_params(toy_params(), check_models=False)
    record = provenance.collect(params)
    table = Table("toy", pd.DataFrame({"SRCC": [0.9, 0.8]}, index=pd.Index(["a", "b"], name="model")), "caption")
    table.write(tmp_path)
    for ext in ("md", "csv", "tex"):
        fields = provenance.parse_footer((tmp_path / f"toy.{ext}").read_text())
        assert fields is not None and fields["params"] == record["params_hash"], ext
    pd.testing.assert_frame_equal(read_table_csv(tmp_path / "toy.csv"), table.to_frame())
    assert (tmp_path / "toy.tex").read_text().rstrip().splitlines()[-1].startswith("% Provenance:")


def _assert_traced(results: Path, params_hash: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """Walk ``results``: every JSON of predictions/ and metrics/, every table file and report.md must name the
    params hash of the run, a code commit and the environment. Returns the files checked."""
    checked = []
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results).as_posix()
        if rel.split("/")[0] in skip:
            continue
        if path.suffix == ".json" and path.parent.name in {"predictions", "metrics"}:
            meta = json.loads(path.read_text())
            record = meta.get("provenance") or meta.get("_provenance")
            assert record is not None, rel
            assert record["params_hash"] == params_hash and record["code_commit"] and record["versions"], rel
        elif path.suffix in {".md", ".csv", ".tex"} and path.parent.name == "tables":
            fields = provenance.parse_footer(path.read_text())
            assert fields is not None and fields["params"] == params_hash and "torch" in fields, rel
        elif path.name == "report.md":
            env = path.read_text().split("## Environment", 1)[1]
            assert params_hash in env and "this report" in env, rel
        else:
            continue
        checked.append(rel)
    return checked


def test_every_writer_of_numbers_records_provenance(project, toy_dataset) -> None:
    """The engine's predictions JSON, then evaluate's tables and summary.json and the report, on tiny data."""
    from iqalab.report import build_report
    from iqalab.stages import evaluate
    from iqalab.train.engine import train_experiment

    results = project.root / "results"
    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    model = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 8}
    trained = parse_params(toy_params(e={"dataset": "toy", "model": model, "train": {"epochs": 1}}))
    train_experiment(trained, "e", project.root, progress=False)
    assert _assert_traced(results, provenance.params_hash(trained)) == ["predictions/e.json"]
    assert json.loads((results / "predictions" / "e.json").read_text())["provenance"]["device"] == "cpu"
    # the evaluation reads fake predictions of known quality (no provenance: not a writer under test)
    shutil.rmtree(results / "predictions")
    write_experiment(project.root, "perfect", with_predictions(ground_truth(n_images=30), "perfect"),
                     tables=["tuningiqa_table2"])
    params = project.write_params(params_dict({"perfect": {"tables": ["tuningiqa_table2"]}}))
    evaluate.run(params, project.root, figures=False)
    build_report(params, project.root)
    checked = _assert_traced(results, provenance.params_hash(params), skip=frozenset({"predictions"}))
    assert {"metrics/summary.json", "tables/tuningiqa_table2.md", "tables/tuningiqa_table2.tex",
            "tables/all_metrics.csv", "report.md"} <= set(checked)


def test_cpu_label_names_model_and_widest_vector_extension() -> None:
    epyc = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx fma avx2\n\nprocessor\t: 1\n"
    xeon = "model name\t: Intel(R) Xeon(R) Processor\nflags\t: sse4_2 avx avx2 avx512f avx512_vnni\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm\n"
    assert provenance.cpu_label(epyc) == "AMD EPYC 7B13, AVX2"
    assert provenance.cpu_label(xeon) == "Intel(R) Xeon(R) Processor, AVX-512"
    assert provenance.cpu_label(arm).endswith(", NEON")
    odd = provenance.cpu_label("model name\t: Weird;CPU=1\nflags\t: sse2\n")
    assert ";" not in odd and "=" not in odd
    record = provenance.collect()
    assert record["cpu"] == provenance.cpu_label()
    fields = provenance.parse_footer(provenance.footer(record))
    assert fields is not None and fields["cpu"] == record["cpu"]  # a label with ", " survives the footer
    assert provenance.footer_row(fields)["cpu"] == provenance.summary_line(record)["cpu"]


_RECORD_IN_A_FRESH_PROCESS = """
import json, sys
from iqalab import provenance
from iqalab.config import parse_params
sys.path.insert(0, sys.argv[1])
from tests.conftest import toy_params
print(json.dumps(provenance.collect(parse_params(toy_params(), check_models=False), device="cpu")))
"""


def test_record_holds_no_time_or_host_and_is_the_same_in_another_process() -> None:
    """README: "The record holds no time or host name", so `dvc repro` twice writes the same record: no field named
    after a time, date, host, user or process, no value holding this host's name, user name or today's date, and
    a second process (another pid, another start time) collects the same record."""
    import datetime
    import getpass
    import os
    import socket
    import subprocess
    import sys

    params = parse_params(toy_params(), check_models=False)
    provenance.git_state.cache_clear()  # this process's git state read now, as the other process reads it
    record = provenance.collect(params, device="cpu")
    assert provenance.collect(params, device="cpu") == record

    def keys(value, prefix=""):  # noqa: ANN001, ANN202
        if isinstance(value, dict):
            for k, v in value.items():
                yield f"{prefix}{k}"
                yield from keys(v, f"{prefix}{k}.")

    forbidden = re.compile(r"time|date|host|node|user|pid|when|clock", re.IGNORECASE)
    assert [k for k in keys(record) if forbidden.search(k)] == []
    text = json.dumps(record)
    today = datetime.date.today()
    for stamp in (today.isoformat(), today.strftime("%Y%m%d"), socket.gethostname(), getpass.getuser()):
        if len(stamp) >= 4:  # a very short host or user name could match by chance
            assert stamp not in text, stamp
    root = provenance.code_root()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _RECORD_IN_A_FRESH_PROCESS, str(root)], capture_output=True,
                         text=True, check=True, env=env, cwd=root).stdout
    assert json.loads(out.strip().splitlines()[-1]) == record


@pytest.mark.parametrize("path", ["notebooks/evaluate.ipynb", "params/paper.yaml", "dvc.yaml", "params.yaml",
                                  "src/b.py"])
def test_every_code_path_moves_the_code_commit_and_makes_it_dirty(repo: Path, path: str) -> None:
    """The "last code commit" rule covers every path of CODE_PATHS (src, notebooks, params.yaml, params/, dvc.yaml):
    an uncommitted change there makes the record dirty, its commit becomes the recorded commit."""
    assert provenance.CODE_PATHS == ("src", "notebooks", "params.yaml", "params", "dvc.yaml")
    before = git(repo, "rev-parse", "HEAD")
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(target.read_text() + "# edit\n" if target.exists() else "{}\n")
    assert provenance.git_state.__wrapped__(repo) == (before, True)
    git(repo, "add", path)
    git(repo, "commit", "-qm", f"edit {path}")
    after = git(repo, "rev-parse", "HEAD")
    assert after != before and provenance.git_state.__wrapped__(repo) == (after, False)
    # a later commit outside the code paths leaves the recorded commit where it was
    (repo / "docs").mkdir(exist_ok=True)
    (repo / "docs" / "notes.md").write_text("notes\n")
    git(repo, "add", "docs")
    git(repo, "commit", "-qm", "docs only")
    assert provenance.git_state.__wrapped__(repo) == (after, False)


def test_the_two_git_calls_run_once_per_process(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: "The two git calls run once per process": records, footers and the git state asked for again and
    again (a stage writes many tables) run git twice in all (last code commit, status), not twice per record."""
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(cmd, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if list(cmd)[:1] == ["git"]:
            calls.append(list(cmd))
        return real_run(cmd, *args, **kwargs)

    def clear() -> None:  # without the cache there is nothing to clear: the count below says so
        getattr(provenance.git_state, "cache_clear", lambda: None)()

    code_commit = git(repo, "rev-parse", "HEAD")
    clear()
    monkeypatch.setattr(provenance, "_current", provenance._current)  # the last record is restored afterwards
    monkeypatch.setattr(provenance.subprocess, "run", counting_run)
    try:
        params = parse_params(toy_params(), check_models=False)
        records = [provenance.collect(params, root=repo) for _ in range(3)]
        records.append(provenance.collect(root=repo))
        footers = [provenance.footer() for _ in range(3)]  # the last record, as every table writer asks for it
        states = [provenance.git_state(repo) for _ in range(3)]
    finally:
        clear()  # no state of this temporary repository outlives the test
    assert all(r["code_commit"] == code_commit and r["code_dirty"] is False for r in records)
    assert all(f.startswith(f"Provenance: code={code_commit[:12]};") for f in footers)
    assert states == [(code_commit, False)] * 3
    assert len(calls) == 2, calls
    assert [c[3:5] for c in calls] == [["log", "-1"], ["status", "--porcelain"]]
