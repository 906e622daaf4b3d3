"""Smoke test of the scripts in benchmarks/: each runs to its end with the smallest arguments that still exercise
its real code path, and prints its ratio / summary line (the README's Benchmarks table cites their output; nothing
in the test suite ran them, so a refactor of the package could break one silently).

Only that the measurement completes is checked, never the numbers: the sizes below are far too small for the
ratios to mean anything. Each script runs in its own process from the repository root, with one OpenMP thread and
the Hugging Face hub offline, as the scripts' docstrings run them. No case needs a GPU: bench_inference and
bench_train_step run with ``--device cpu`` here (their CUDA runs are benchmarks/gpu_checks.sh's).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180  # each script takes 1-15 s here with these arguments; the limit only catches a hang

NUMBER = r"\d+(?:\.\d+)?"

#: script -> (arguments, patterns its output must contain). ``{tmp}`` in an argument is the test's tmp_path.
CASES: dict[str, tuple[list[str], list[str]]] = {
    # 2 scenes x 8 images (the script's minimum) at 64 px, both sides of the comparison; the predictions of the
    # feature cache and of the recomputing engine must still be identical
    "bench_classical": (
        ["--images", "16", "--size", "64"],
        [rf"ratio \(reference / cached\): {NUMBER}x; identical predictions: True"]),
    # one timed MTCNN image at 256 px, the person boxes on the package photos, and the simulator's face recall on
    # 2 scenes per builder (the least a scene split accepts: --sim 1 is refused, see below)
    "bench_detect": (
        ["--images", "1", "--side", "256", "--sim", "2"],
        [rf"MTCNN \+ face rule at 256 px: {NUMBER} images/s", r"person \{'photo': 'astronaut', 'face_rule': ",
         rf"simulator faces found \(IoU >= 0\.5, retries p >= 0\.9\) in portrait_sim: {NUMBER}% of \d+"]),
    # 2 JPEGs of 64 px scored at 64 px, one round with one torch thread; JPEG so that --draft is timed too
    "bench_inference": (
        ["--images", "2", "--size", "64", "--cache", "64", "--batch-size", "2", "--rounds", "1", "--threads", "1",
         "--format", "jpeg"],
        [r"torch_threads=1 one image: decode .* ms, prepare_image .* ms, model batch 1 .* ms",
         rf"iqalab score \(batched Scorer\)\s+{NUMBER} images/s .*; ratio {NUMBER}x",
         rf"iqalab score --draft\s+{NUMBER} images/s .*; ratio {NUMBER}x"]),
    # 16 images (2 scenes of 8: fewer are refused, see below), 48 px crops, 2 epochs (the least: first + steady
    # state), both settings; the labels name the crop size asked for
    "bench_loading": (
        ["--images", "16", "--size", "96", "--cache", "64", "--crop", "48", "--epochs", "2", "--batch-size", "4"],
        [rf"epochs 2-2\s+batched\s+{NUMBER} images/s \(\s*{NUMBER}x\)", r"^native 1024x768 JPEG -> 48 crops$",
         rf"square 96 JPEG -> 64 cache -> 48 crops\n(?:.*\n){{5}}\s+epochs 2-2\s+batched\s+{NUMBER} images/s"]),
    # 2 images just large enough for FHIQA's 1344 px patch, one epoch, normalised on both sides
    "bench_patches": (
        ["--images", "2", "--height", "1344", "--width", "1344", "--epochs", "1", "--batch-size", "2",
         "--normalise"],
        [rf"FHIQA 224x5 \+ 672x3 \+ 1344x1 .* ratio\s+{NUMBER}x", rf"HyperIQA 224x25 .* ratio\s+{NUMBER}x"]),
    # 2 small JPEGs, one round (one child process per setting), a 1 MiB bound
    "bench_score_memory": (
        ["--images", "2", "--width", "256", "--height", "192", "--rounds", "1", "--prefetch-mb", "1"],
        [rf"median peak RSS: .*: {NUMBER}x less memory", rf"median rate: .*: {NUMBER}x; scores equal"]),
    # 64 px renders of one scene: 1 cold render, a builder scene of 2 shots, then the noise draws
    # (--compile, which compiles every numba loop in fresh interpreters, is left out: it is the slow path by design)
    "bench_sim": (
        ["--size", "64", "--scenes", "1", "--per-scene", "2", "--renders", "1"],
        [rf"cold\s+\(\s*1 renders\): .* speed-up {NUMBER}x \(CPU\)",
         rf"builder \(\s*2 renders\): .* speed-up {NUMBER}x \(CPU\)",
         rf"noise draw \(12288 float32 normals\): .* speed-up {NUMBER}x"]),
    # against HEAD (git archive of src/iqalab into a temporary package), 32 px, one scene of one shot, one round,
    # with numba's JIT off (EXTRA_ENV): the copy's loops would otherwise be compiled afresh in its temporary folder,
    # 10-15 s here, while everything else the script does runs as it is; the working tree may differ from HEAD, so
    # the count of differing shots is not asserted
    "bench_sim_against": (
        ["HEAD", "--size", "32", "--scenes", "1", "--per-scene", "1", "--rounds", "1"],
        [rf"HEAD: {NUMBER} ms CPU per shot \| this tree: {NUMBER} ms .* speed-up {NUMBER}x \| \d+ shots differ"]),
    # the reference model alone (backbone_mlp, fp32 on the CPU), 32 px, batch 2, one timed step
    "bench_train_step": (
        ["--models", "backbone_mlp", "--size", "32", "--batch", "2", "--steps", "1", "--warmup", "0",
         "--device", "cpu"],
        [rf"backbone_mlp\s+amp=False channels_last=False compile=False\s+{NUMBER} images/s\s+x1\.00 vs backbone_mlp"]),
    # the paper profile's SFIQA-XXS through the engine on a tiny face_sim (64 px views, 2 epochs, no workers): the
    # timed epoch, the model-only steps on its first batch and the FLOP count all run
    "bench_train_loader": (
        ["--tiny", "--epochs", "2", "--workers", "0", "--experiments", "sfiqa_xxs_face", "--root", "{tmp}",
         "--out", "{tmp}/rows.json"],
        [r"^datasets ready in \d+ s$",
         rf"sfiqa_xxs_face\s+sfiqa_xxs\s+4\s+\d+\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER} (?:met|NOT met)\s+{NUMBER}"
         rf"\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}%",
         r"target: steady/model >= 0\.8"]),
    # a fake `dvc repro` build: three executed notebooks with papermill metadata and one older one that --since
    # leaves out (see _fake_executed)
    "stage_times": (
        ["--executed", "{tmp}/build/executed", "--params", "{tmp}/params.yaml", "--wall", "100",
         "--since", "2026-12-02T12:30", "--top", "2"],
        [r"^3 papermill stages, first start 2026-12-02 12:30:05, last end 12:31:05 \(span 1\.0 min\)",
         r"sum of papermill stages\s+60\.0 s", r"rest of the run \(CLI stages, DVC\)\s+40\.0 s",
         r"  train: brisque \(1\)\s+30\.0 s", r"  ingest \(1\)\s+20\.0 s",
         r"papermill outside cells \(kernel\)\s+15\.0 s .*\(5\.0 s per stage\)",
         r"setup cell \(imports, params\)\s+9\.0 s .*\(3\.0 s per stage\)",
         r"slowest 2:\n  03_train_e\s+30\.0 s.*\n  01_ingest_toy\s+20\.0 s"]),
}

#: environment a script's case runs with besides OMP_NUM_THREADS=1, HF_HUB_OFFLINE=1 and MPLBACKEND=Agg
EXTRA_ENV: dict[str, dict[str, str]] = {"bench_sim_against": {"NUMBA_DISABLE_JIT": "1"}}


def _notebook(start: str, end: str, seconds: float, cells: list[tuple[list[str], float]]) -> dict:
    """An executed notebook as papermill leaves it: its start, end and duration, every code cell's duration."""
    return {"cells": [{"cell_type": "code", "source": "", "outputs": [], "execution_count": None,
                       "metadata": {"tags": tags, "papermill": {"duration": d}}} for tags, d in cells],
            "metadata": {"papermill": {"start_time": start, "end_time": end, "duration": seconds}},
            "nbformat": 4, "nbformat_minor": 5}


def _fake_executed(tmp: Path) -> None:
    """``build/executed`` of a small `dvc repro` (ingest 20 s, train 30 s, evaluate 10 s; 15 s of it outside the
    cells, setup cells of 3 s each), an executed copy left over from an earlier run, and the params file that
    names the experiment's model."""
    folder = tmp / "build" / "executed"
    folder.mkdir(parents=True)
    tagged, plain = ["parameters"], []
    notebooks = {
        "00_ingest_old": _notebook("2026-12-01T09:00:00.000000", "2026-12-01T09:01:00.000000", 60.0,
                                   [(tagged, 0.1), (plain, 3.0), (plain, 50.0)]),
        "01_ingest_toy": _notebook("2026-12-02T12:30:05.000000", "2026-12-02T12:30:25.000000", 20.0,
                                   [(tagged, 0.5), (["injected-parameters"], 0.5), (plain, 3.0), (plain, 11.0)]),
        "03_train_e": _notebook("2026-12-02T12:30:25.000000", "2026-12-02T12:30:55.000000", 30.0,
                                [(tagged, 0.0), (plain, 3.0), (plain, 22.0)]),
        "04_evaluate": _notebook("2026-12-02T12:30:55.000000", "2026-12-02T12:31:05.000000", 10.0,
                                 [(tagged, 0.0), (plain, 3.0), (plain, 2.0)]),
    }
    for name, nb in notebooks.items():
        (folder / f"{name}.ipynb").write_text(json.dumps(nb))
    (tmp / "params.yaml").write_text("experiments:\n  e:\n    dataset: toy\n    model:\n      name: brisque\n")


@pytest.mark.slow
@pytest.mark.parametrize("script", list(CASES), ids=list(CASES))
def test_benchmark_runs(script: str, tmp_path: Path) -> None:
    args, patterns = CASES[script]
    if script == "bench_sim_against" and (shutil.which("git") is None or subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"], cwd=ROOT, capture_output=True).returncode != 0):
        pytest.skip("bench_sim_against.py extracts src/iqalab at a git revision: needs git and a checkout")
    if script == "stage_times":
        _fake_executed(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           **EXTRA_ENV.get(script, {})}
    command = [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *(a.format(tmp=tmp_path) for a in args)]
    done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=TIMEOUT_S)
    output = done.stdout  # stdout and stderr together: several scripts report through logging (stderr)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output[-4000:]}"
    if script in ("bench_train_step", "bench_train_loader"):  # they report a model's error and go on
        assert " failed: " not in output, output[-4000:]
    if script == "bench_train_loader":  # the rows as JSON, the ratios from the timed epoch
        rows = json.loads((tmp_path / "rows.json").read_text())
        assert [r["experiment"] for r in rows] == ["sfiqa_xxs_face"]
        assert rows[0]["steady_img_s"] >= rows[0]["loader_img_s"] > 0 and rows[0]["model_img_s"] > 0
        assert rows[0]["gflop_per_image"] > 0
    for pattern in patterns:
        assert re.search(pattern, output, re.MULTILINE), f"{pattern!r} not in the output of {script}:\n{output[-4000:]}"


@pytest.mark.parametrize("script, args, message", [
    ("bench_detect", ["--sim", "1"], "--sim 1: 0 skips the simulator, else at least 2"),
    ("bench_loading", ["--images", "15"], "--images 15: at least 16"),
    ("bench_loading", ["--epochs", "1"], "--epochs 1: at least 2"),
])
def test_benchmark_refuses_sizes_it_cannot_measure(script: str, args: list[str], message: str) -> None:
    """Arguments under a script's minimum are refused in one argparse line before anything runs (they used to
    crash deep in a builder's scene split)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1], done.stderr
