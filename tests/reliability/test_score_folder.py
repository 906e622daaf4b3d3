"""``iqalab score`` on a folder with an unreadable file (issue 26): every readable image is scored, the failed
one is listed (file and reason) in the CSV and on stderr, and the exit status is non-zero only with ``--strict``
or when nothing could be scored."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from PIL import Image

from iqalab.__main__ import main


def _folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "c.png", "d.png"):
        smooth = np.cumsum(rng.normal(0, 4, (96, 96, 3)), axis=1)
        Image.fromarray(np.clip(smooth + 128, 0, 255).astype(np.uint8)).save(folder / name)
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return folder


def test_one_bad_file_does_not_stop_the_others(tmp_path, capsys):
    folder = _folder(tmp_path)
    out = tmp_path / "scores.csv"
    assert main(["-q", "score", "--model", "niqe", "--out", str(out), str(folder)]) == 0
    err = capsys.readouterr().err
    # docs/reliability.md: "stderr lists `not scored: <file>: cannot decode image (...)`": once, the file named once
    listed = [line for line in err.splitlines() if "not scored" in line]
    assert len(listed) == 1, err
    assert re.fullmatch(rf"iqalab score: not scored: {re.escape(str(folder / 'b.jpg'))}: cannot decode image \(.+\)",
                        listed[0]), listed[0]
    scores = pd.read_csv(out, keep_default_na=False)
    assert [name.rsplit("/", 1)[-1] for name in scores["path"]] == ["a.png", "b.jpg", "c.png", "d.png"]
    ok = scores[scores["error"] == ""]
    assert len(ok) == 3 and np.isfinite(ok["niqe"].astype(float)).all()
    bad = scores[scores["error"] != ""]
    assert len(bad) == 1 and "cannot decode image" in bad["error"].iloc[0] and bad["niqe"].iloc[0] == ""


def test_strict_fails_on_any_bad_file_but_still_writes_the_scores(tmp_path, capsys):
    folder = _folder(tmp_path)
    out = tmp_path / "scores.csv"
    assert main(["-q", "score", "--model", "niqe", "--strict", "--out", str(out), str(folder)]) == 2
    assert "1 of 4 images could not be scored (--strict)" in capsys.readouterr().err
    assert (pd.read_csv(out)["niqe"].notna()).sum() == 3


def test_nothing_scorable_is_an_error(tmp_path, capsys):
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"garbage")
    assert main(["-q", "score", "--model", "niqe", "--out", str(tmp_path / "s.csv"), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"iqalab score: error: no image could be scored: {bad}: cannot decode image ("), err
    assert "not scored" not in err and not (tmp_path / "s.csv").exists()
