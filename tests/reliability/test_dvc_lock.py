"""Two ``dvc repro`` at once: DVC's locks refuse the second run, the first finishes untouched.

This documents DVC's own protection (``.dvc/tmp/lock`` for the repository, ``.dvc/tmp/rwlock`` for each stage's
outputs): iqalab adds none of its own. While the first ``dvc repro`` runs a stage's command, DVC releases the
repository lock and keeps the stage's outputs locked, so the second invocation fails with "... is busy, it is being
blocked by: (PID n): dvc repro"; one started before the first has reached the stage fails with "Unable to acquire
lock". Either way it exits non-zero without running the command. Skipped when ``dvc`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

_STAGE = """stages:
  slow:
    cmd: python -c "import time; open('started', 'w').close(); time.sleep(3); open('out.txt', 'w').write('done')"
    outs:
      - out.txt
"""


def _dvc() -> str:
    found = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    if not Path(found).is_file():
        pytest.skip("dvc is not installed")
    return found


def test_second_dvc_repro_is_refused_while_the_first_runs(tmp_path):
    dvc = _dvc()
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}"
                                                        f"{os.environ.get('PATH', '')}")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True, capture_output=True)
    (tmp_path / "dvc.yaml").write_text(_STAGE)
    first = subprocess.Popen([dvc, "repro"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert first.poll() is None, first.stdout.read() if first.stdout else ""
        assert time.monotonic() < deadline, "the first dvc repro never started its stage"
        time.sleep(0.05)
    second = subprocess.run([dvc, "repro"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    first_out, _ = first.communicate(timeout=60)
    message = second.stdout + second.stderr
    assert second.returncode != 0, message
    assert "is busy, it is being blocked by" in message or "Unable to acquire lock" in message, message
    assert first.returncode == 0, first_out
    assert (tmp_path / "out.txt").read_text() == "done", "the first run's output is complete"
    assert (tmp_path / "dvc.lock").is_file()
