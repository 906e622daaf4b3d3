"""Repository hygiene (#24): notebooks committed clean, every test module holds tests, no path outside the repo."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TEST_MODULES = sorted((ROOT / "tests").rglob("test_*.py"))


def test_the_globs_find_the_files():
    assert len(NOTEBOOKS) >= 8 and len(TEST_MODULES) >= 30


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_with_one_parameters_cell(path):
    """papermill injects the stage's parameters after the one cell tagged ``parameters``; outputs are build
    artefacts (``build/executed/``), never committed."""
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "exactly one code cell tagged 'parameters'"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} carry outputs or execution counts: clear them before committing"


def _defines_tests(tree: ast.Module) -> bool:
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, functions) and node.name.startswith("test"):
            return True
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            if any(isinstance(n, functions) and n.name.startswith("test") for n in node.body):
                return True
    return False


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda p: str(p.relative_to(ROOT / "tests")))
def test_test_module_defines_tests(path):
    """A ``test_*.py`` without tests (helpers, fakes) is named otherwise, so pytest's count means something."""
    assert _defines_tests(ast.parse(path.read_text())), f"{path.name} defines no test: rename it"


def test_product_does_not_refer_to_the_shared_folder():
    """The notes beside the repository are not shipped: what the product needs is in README.md or docs/."""
    shared = "../" + "shared"  # spelled in two pieces so that this file does not name the folder itself
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *NOTEBOOKS,
             *(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml",
             ROOT / "environment.yml", ROOT / ".ci" / "run", ROOT / "dvc.yaml"]
    offending = [str(f.relative_to(ROOT)) for f in files if shared in f.read_text()]
    assert not offending, f"refer to {shared}: {offending}"


def test_photographs_are_saved_as_jpeg_and_plots_as_png_and_pdf(tmp_path):
    """``results/`` stays small: a montage of photographs is JPEG; a heat map or a curve keeps PNG + PDF."""
    import matplotlib.pyplot as plt
    import numpy as np

    from iqalab.plots import save

    rng = np.random.default_rng(0)
    photo, heat = plt.subplots(1, 2)[0], plt.subplots()[0]
    photo.axes[0].imshow(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    photo.axes[1].plot([0, 1])
    heat.axes[0].imshow(rng.random((8, 8)), cmap="viridis")
    try:
        assert [p.name for p in save(photo, tmp_path / "montage")] == ["montage.jpg"]
        assert [p.name for p in save(heat, tmp_path / "matrix")] == ["matrix.png", "matrix.pdf"]
        assert [p.name for p in save(photo, tmp_path / "forced", formats=("png",))] == ["forced.png"]
    finally:
        plt.close("all")
    assert (tmp_path / "montage.jpg").read_bytes()[:2] == b"\xff\xd8"
