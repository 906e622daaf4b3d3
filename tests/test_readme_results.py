"""The README's inline result tables equal the committed files under results/ (scripts/sync_readme_results.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sync_readme_results", ROOT / "scripts" / "sync_readme_results.py")
assert _spec is not None and _spec.loader is not None
sync_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_readme)


def test_sync_replaces_only_the_named_blocks(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.md").write_text("caption A\n\n| x |\n| --- |\n| 2 |\n")
    readme = "# T\n\n**A** (`results/a.md`)\n\nold caption\n\n| x |\n| --- |\n| 1 |\n\nprose stays\n\n## Next\n\nkept\n"
    text, changed = sync_readme.sync(readme, tmp_path)
    assert changed == ["results/a.md"]
    assert "| 2 |" in text and "| 1 |" not in text and "old caption" not in text
    assert text.endswith("## Next\n\nkept\n") and text.startswith("# T\n\n**A** (`results/a.md`)\n\ncaption A\n")
    again, changed_again = sync_readme.sync(text, tmp_path)
    assert again == text and changed_again == []


def test_sync_drops_the_files_own_title(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "c.md").write_text("# Calibration: c\n\n2 of 2 within.\n\n| s |\n| --- |\n| 1 |\n")
    text, changed = sync_readme.sync("**C** (`results/c.md`)\n\nold\n", tmp_path)
    assert changed == ["results/c.md"]
    assert text == "**C** (`results/c.md`)\n\n2 of 2 within.\n\n| s |\n| --- |\n| 1 |\n"
    assert sync_readme.sync(text, tmp_path) == (text, [])


def test_sync_stops_at_the_end_marker(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "d.md").write_text("| n |\n| --- |\n| 3 |\n")
    readme = f"**D** (`results/d.md`)\n\n| n |\n| --- |\n| 1 |\n\n{sync_readme.END}\n\nprose after the block\n"
    text, changed = sync_readme.sync(readme, tmp_path)
    assert changed == ["results/d.md"]
    assert text == f"**D** (`results/d.md`)\n\n| n |\n| --- |\n| 3 |\n\n{sync_readme.END}\n\nprose after the block\n"


def test_sync_names_a_missing_results_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="results/gone.md"):
        sync_readme.sync("**G** (`results/gone.md`)\n\nx\n", tmp_path)


def test_readme_tables_equal_the_committed_results() -> None:
    _, changed = sync_readme.sync((ROOT / "README.md").read_text(encoding="utf-8"), ROOT)
    assert changed == [], f"README blocks out of date (run python scripts/sync_readme_results.py): {changed}"


def test_readme_calibration_count_is_the_committed_one() -> None:
    """The README's calibration sentence counts the committed reports, and at least 80 % of the targets are within
    tolerance (issue #23's done-when)."""
    import json
    import re

    reports = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "results" / "simulator").glob("*.json"))]
    simulated = [r for r in reports if r.get("simulated")]
    within, total = sum(r["within"] for r in simulated), sum(r["n"] for r in simulated)
    match = re.search(r"In the committed run (\d+) of (\d+) targets are within tolerance",
                      (ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README lost its calibration sentence"
    assert (int(match.group(1)), int(match.group(2))) == (within, total)
    assert total > 0 and within >= 0.8 * total
