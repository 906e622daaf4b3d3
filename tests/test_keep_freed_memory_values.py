"""``IQALAB_KEEP_FREED_MEMORY=1`` (``iqalab.memory``) "changes no computed value" (README benchmark table, loader
rows; the reason it sits outside ``engine.RUN_CODE``): the same tiny training run with and without it, each in its
own ``iqalab train`` process, gives bit-identical predictions and training curves, and the setting was in force
in the one that asked for it."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .reliability import make_project, subprocess_env

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt settings are glibc's")

# `iqalab train`, then whether the allocator settings were in force in that process
_TRAIN = """
import sys
from iqalab.__main__ import main
import iqalab.memory as memory
code = main(sys.argv[1:])
print("KEPT", memory._applied)
sys.exit(code)
"""


def _train(root: Path, toy_root: Path, keep: str) -> tuple[str, pd.DataFrame, list]:
    params = make_project(root, toy_root, epochs=2)
    env = {**subprocess_env(root), "IQALAB_KEEP_FREED_MEMORY": keep}
    done = subprocess.run([sys.executable, "-c", _TRAIN, "--params", str(params), "-q", "train", "e"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    kept = done.stdout.strip().splitlines()[-1]
    preds = pd.read_parquet(root / "results" / "predictions" / "e.parquet")
    (history,) = root.glob("build/models/e/*/history.json")
    curves = json.loads(history.read_text())
    return kept, preds, curves


@pytest.mark.slow
def test_keeping_freed_memory_changes_no_prediction(tmp_path: Path, toy_dataset) -> None:
    """Two one-thread CPU trainings (2 epochs, ``backbone_mlp`` + ``mobilenetv3_small_050``), about 10 s."""
    kept_off, preds_off, curves_off = _train(tmp_path / "off", toy_dataset.root, "0")
    kept_on, preds_on, curves_on = _train(tmp_path / "on", toy_dataset.root, "1")
    assert (kept_off, kept_on) == ("KEPT False", "KEPT True"), "the setting is off by default and on when asked"
    assert preds_off["pred"].notna().all() and preds_off["pred"].nunique() > 1
    pd.testing.assert_frame_equal(preds_on, preds_off, check_exact=True)
    assert curves_on == curves_off
