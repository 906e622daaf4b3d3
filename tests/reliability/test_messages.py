"""The messages a user meets for common mistakes (issue 26): each names what to fix, in one line, exit 2.

A missing raw folder lists the files expected there; a truncated image is named by its CSV row and its raw path;
a non-UTF-8 CSV by its row; ``--device cuda`` without a GPU names the flag; ``--batch-size 0`` is refused by the
argument parser; ``-q`` leaves no progress bar, also from code that has no progress switch (the adapters' image
check).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from iqalab.__main__ import main

from . import subprocess_env


def _generic_project(root: Path, n: int = 6) -> Path:
    """A project whose dataset ``mine`` is read by the generic adapter from ``data/raw/mine``."""
    raw = root / "data" / "raw" / "mine"
    (raw / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["image,scene,mos_overall"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(raw / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,s{i // 2},{1 + i % 4}")
    (raw / "images.csv").write_text("\n".join(lines) + "\n")
    (root / "dvc.yaml").write_text("stages: {}\n")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"datasets": {
        "mine": {"source": "adapter", "builder": "generic", "raw": "data/raw/mine", "cache_size": 32,
                 "options": {"mos_range": [1, 5], "workers": 1}},
        "koniq": {"source": "adapter", "builder": "koniq10k"}}}))
    return params


def _one_error_line(capsys: pytest.CaptureFixture, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"iqalab {command}: error: "), err
    return err


def test_missing_raw_folder_lists_the_expected_files(project, capsys: pytest.CaptureFixture) -> None:
    params = _generic_project(project.root)
    assert main(["-q", "--params", str(params), "ingest", "koniq"]) == 2
    err = _one_error_line(capsys, "ingest")
    assert "datasets.koniq.raw:" in err and str(project.root / "data" / "raw" / "koniq") in err
    assert "koniq10k_scores_and_distributions.csv" in err and "1024x768/" in err  # what to put there


def test_truncated_image_named_by_csv_row_and_raw_path(project, capsys: pytest.CaptureFixture) -> None:
    params = _generic_project(project.root)
    image = project.root / "data" / "raw" / "mine" / "img" / "3.png"
    image.write_bytes(image.read_bytes()[:200])
    assert main(["-q", "--params", str(params), "ingest", "mine"]) == 2
    err = _one_error_line(capsys, "ingest")
    assert str(image) in err and "images.csv row 3 (line 5)" in err
    assert "build" not in err  # not the staged copy


def test_non_utf8_csv_names_the_row(project, capsys: pytest.CaptureFixture) -> None:
    params = _generic_project(project.root)
    csv = project.root / "data" / "raw" / "mine" / "images.csv"
    lines = csv.read_bytes().splitlines()
    lines[4] = lines[4].replace(b",s1,", b",s\xe9,")  # Latin-1 e-acute: data row 3, line 5
    csv.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["-q", "--params", str(params), "ingest", "mine"]) == 2
    err = _one_error_line(capsys, "ingest")
    assert f"{csv} row 3 (line 5): not UTF-8" in err, err


def test_device_cuda_without_gpu_names_the_flag(project, capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    image = project.root / "a.png"
    Image.new("RGB", (40, 40), (90, 120, 150)).save(image)
    assert main(["-q", "score", "--model", "niqe", "--device", "cuda", "--out", str(project.root / "s.csv"),
                 str(image)]) == 2
    err = _one_error_line(capsys, "score")
    # docs/reliability.md quotes this line in full (was: "train.device is 'cuda' ...", which names no flag)
    assert err == "iqalab score: error: --device cuda: no CUDA device is available here (use --device cpu or auto)"


#: argparse's reason for each refused count (docs/reliability.md quotes the first: "must be at least 1, got 0")
_COUNT_REASONS = {"0": "must be at least 1, got 0", "-1": "must be at least 1, got -1", "two": "'two' is not an integer"}


@pytest.mark.parametrize("flag", ["--batch-size", "--workers"])
@pytest.mark.parametrize("value", list(_COUNT_REASONS))
def test_score_counts_are_refused_by_the_argument_parser(flag: str, value: str, project,
                                                         capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["score", "--model", "niqe", flag, value, "x.png"])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("usage: iqalab score ") and "Traceback" not in "\n".join(lines)
    assert lines[-1] == f"iqalab score: error: argument {flag}: {_COUNT_REASONS[value]}", lines


#: run ``iqalab <argv>`` (a cheap command), then, in the same process, the adapters' image check: a bar with no
#: progress switch of its own
_BAR_AFTER_MAIN = """
import sys
from pathlib import Path
from iqalab.__main__ import main
main(sys.argv[2:])
from iqalab.data.adapters.base import inspect_images
raw = Path(sys.argv[1])
inspect_images(raw, sorted(p.name for p in raw.glob("*.png")), "images.csv", workers=1)
import logging, subprocess
logging.getLogger("iqalab.probe").info("an info line")
logging.getLogger("iqalab.probe").warning("a warning line")
child = "import time; from tqdm import tqdm; [time.sleep(0.01) for _ in tqdm(range(30), mininterval=0)]"
subprocess.run([sys.executable, "-c", child], check=True)  # a child process's bar (e.g. a papermill kernel's)
"""


@pytest.mark.parametrize("quiet", [False, True], ids=["loud", "quiet"])
def test_quiet_silences_every_progress_bar(quiet: bool, tmp_path: Path) -> None:
    """``-q`` silences bars also in code that has no progress switch and in child processes (through
    ``TQDM_DISABLE``), and leaves warnings only; without it the same bars and the info line are shown."""
    for i in range(30):
        Image.new("RGB", (16, 16), (i, i, i)).save(tmp_path / f"{i}.png")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    env = subprocess_env(tmp_path)
    env.pop("TQDM_DISABLE", None)
    argv = [*(["-q"] if quiet else []), "data", "status"]
    proc = subprocess.run([sys.executable, "-c", _BAR_AFTER_MAIN, str(tmp_path), *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    drawn = "it/s]" in proc.stderr or "%|" in proc.stderr
    assert drawn is not quiet, proc.stderr
    assert proc.stderr.count("30/30") == (0 if quiet else 2), proc.stderr  # this process's bar and the child's
    assert "a warning line" in proc.stderr and ("an info line" in proc.stderr) is not quiet
