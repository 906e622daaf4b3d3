"""The package's layering, checked from the source (AST) without importing anything.

``python tests/test_layout.py`` prints each stage's code deps as ``dvc.yaml`` should list them (a folder where every
module in it is needed), to paste after changing what a stage imports.

- One-way stages: nothing under ``src/iqalab`` imports :mod:`iqalab.stages` except the CLI (``__main__``), and a
  stage never imports another stage (notebooks and tests may import stages).
- ``dvc.yaml`` deps follow the code: each stage's import closure (the modules under ``src/iqalab`` its notebook or
  CLI command reaches, lazy imports included) is covered by its deps, and each ``src/`` dep lies wholly inside
  that closure (a folder counts as its ``.py`` files), so editing a module reruns exactly the stages that run it.
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "iqalab"
#: packages whose ``__init__`` imports every module in their folder at run time (pkgutil), invisible to the AST
IMPORTS_WHOLE_FOLDER = ("iqalab.models",)
#: modules whose function-level imports are not what a stage runs, so only their top-level imports count: the
#: params' validation looks names up in the registries (models, paper tables, builders, adapters), and the CLI
#: imports each command's module inside its branch (:data:`CLI_COMMANDS` names the one a stage runs)
TOP_LEVEL_IMPORTS_ONLY = ("iqalab.config", "iqalab.__main__")
#: ``iqalab <command>`` stages of dvc.yaml -> the module the CLI runs for them
CLI_COMMANDS = {"profile": "iqalab.stages.profile", "report": "iqalab.report", "cross_dataset": "iqalab.stages.cross_dataset"}


def module_file(name: str) -> Path | None:
    """The file of module ``name`` under ``src/`` (a package's ``__init__.py``), or None when not ours."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (imports there never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported_names(tree: ast.Module, package: str, top_level_only: bool = False) -> set[str]:
    """Every module name an ``import`` in ``tree`` may load (relative imports resolved against ``package``;
    ``from a import b`` yields ``a`` and ``a.b``), skipping ``TYPE_CHECKING`` blocks; with ``top_level_only``
    the imports inside functions and classes are left out."""
    skip = _type_checking_lines(tree)
    names: set[str] = set()
    nodes = [n for top in tree.body for n in ast.walk(top)
             if not (top_level_only and isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    for node in nodes:
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "iqalab" or n.startswith("iqalab.")}


@cache
def direct_imports(path: Path) -> frozenset[str]:
    """Our modules that ``path`` imports, as existing module names (with their parent packages)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    top_level_only = name in TOP_LEVEL_IMPORTS_ONLY
    for imported in imported_names(ast.parse(path.read_text()), package, top_level_only=top_level_only):
        if module_file(imported) is None:
            continue
        parts = imported.split(".")
        found.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))  # parents' __init__ run first
    if name in IMPORTS_WHOLE_FOLDER:
        found.update(module_name(p) for p in path.parent.rglob("*.py") if p != path)
    found.discard(name)
    return frozenset(found)


def has_code(path: Path) -> bool:
    """Whether a module holds more than a docstring and ``__version__`` / ``__all__`` (a package ``__init__``
    without code changes nothing a stage computes)."""
    body = ast.parse(path.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    dunder = {"__version__", "__all__"}
    return any(not (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id in dunder
                                                         for t in node.targets)) for node in body)


def closure(entries: set[str]) -> set[Path]:
    """The files of every module reached from ``entries`` (package ``__init__`` files only when they hold code)."""
    seen: set[str] = set()
    todo = [e for e in entries if module_file(e) is not None]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(direct_imports(module_file(name)) - seen)  # type: ignore[arg-type]
    files = {module_file(n) for n in seen}
    return {f for f in files if f is not None and (f.name != "__init__.py" or has_code(f))}


def notebook_imports(path: Path) -> set[str]:
    """Our modules imported by the code cells of a notebook (IPython magics and shell lines left out)."""
    cells = json.loads(path.read_text())["cells"]
    names: set[str] = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        names |= imported_names(ast.parse(source), "iqalab")
    return {n for n in names if module_file(n) is not None}


def stage_entries(stage: dict) -> tuple[set[str], str | None]:
    """(modules the stage's command runs first, the notebook it executes or None)."""
    cmd = " ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"]
    notebook = re.search(r"papermill (notebooks/\S+\.ipynb)", cmd)
    if notebook:
        return notebook_imports(ROOT / notebook.group(1)), notebook.group(1)
    command = re.search(r"\biqalab\b(?: -q)? (\S+)", cmd)
    assert command and command.group(1) in CLI_COMMANDS, f"unknown stage command {cmd!r}"
    # stage commands load params through iqalab.notebook.load_checked (__main__._stage_params)
    return {"iqalab.__main__", "iqalab.config", "iqalab.notebook", CLI_COMMANDS[command.group(1)]}, None


def dvc_stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def src_files(dep: str) -> set[Path]:
    """The modules a ``src/`` dep names: the file, or a folder's ``.py`` files (empty ``__init__`` left out)."""
    path = ROOT / dep
    if not path.is_dir():
        return {path}
    return {p for p in path.rglob("*.py") if p.name != "__init__.py" or has_code(p)}


# ------------------------------------------------------------------------------------------------ one-way
def test_only_the_cli_imports_stages_and_no_stage_imports_another() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        stages = {n for n in direct_imports(path) if n.startswith("iqalab.stages.")}
        if name == "iqalab.__main__":
            continue
        if name.startswith("iqalab.stages."):
            stages.discard(name)
        if stages:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(stages)}")
    assert not offenders, "stages import the library, never the reverse:\n" + "\n".join(offenders)


def test_the_import_walk_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from iqalab.stages import gmad\n"
                     "def f():\n    from iqalab.stages.evaluate import run\n    from . import tables\n")
    names = imported_names(tree, "iqalab.analysis")
    assert "iqalab.stages.evaluate" in names and "iqalab.analysis.tables" in names
    assert "iqalab.stages.gmad" not in names, "imports under TYPE_CHECKING never run"


# ------------------------------------------------------------------------------------------------ dvc deps
@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_dvc_deps_are_the_stage_import_closure(stage: str) -> None:
    spec = dvc_stages()[stage]
    entries, notebook = stage_entries(spec)
    needed = {p.relative_to(ROOT).as_posix() for p in closure(entries)}
    deps = [d for d in spec.get("deps", []) if isinstance(d, str)]
    code_deps = [d for d in deps if d.startswith("src/")]
    if notebook is not None:
        assert notebook in deps, f"{stage}: the notebook {notebook} is not a dep"
    covered = {p.relative_to(ROOT).as_posix() for d in code_deps for p in src_files(d)}
    missing = sorted(needed - covered)
    assert not missing, f"{stage}: dvc.yaml deps miss modules the stage runs: {missing}"
    extra = {d: sorted(p.relative_to(ROOT).as_posix() for p in src_files(d)) for d in code_deps}
    extra = {d: [f for f in files if f not in needed] for d, files in extra.items()}
    extra = {d: files for d, files in extra.items() if files}
    assert not extra, f"{stage}: dvc.yaml deps list code the stage never imports: {extra}"


def test_the_run_fingerprint_covers_the_train_stage_code() -> None:
    """A finished split is reused only by the code that made it (``engine.RUN_CODE`` in its fingerprint): every code
    dep of the train stage is in ``RUN_CODE`` or exempted with a reason, and every ``RUN_CODE`` entry is a dep."""
    from iqalab.train.engine import RUN_CODE, RUN_CODE_EXEMPT

    deps = [d.removeprefix("src/iqalab/") for d in dvc_stages()["train"]["deps"]
            if isinstance(d, str) and d.startswith("src/iqalab/")]
    def covered(dep: str) -> bool:
        return any(dep == entry or dep.startswith(entry + "/") for entry in RUN_CODE)

    uncovered = [d for d in deps if not covered(d) and d not in RUN_CODE_EXEMPT]
    assert not uncovered, f"train stage code outside engine.RUN_CODE and RUN_CODE_EXEMPT: {uncovered}"
    assert not [d for d in deps if covered(d) and d in RUN_CODE_EXEMPT], "both hashed and exempt"
    stale = [e for e in [*RUN_CODE, *RUN_CODE_EXEMPT] if not any(d == e or d.startswith(e + "/") or
                                                                  e.startswith(d + "/") for d in deps)]
    assert not stale, f"RUN_CODE / RUN_CODE_EXEMPT entries the train stage does not run: {stale}"


def minimal_deps(files: set[Path]) -> list[str]:
    """``files`` as dvc.yaml deps: the shallowest folders whose every module is in ``files``, then the rest."""
    folders: list[Path] = []
    candidates = {d for f in files for d in f.parents if d != PACKAGE and d.is_relative_to(PACKAGE)}
    for folder in sorted(candidates, key=lambda d: len(d.parts)):
        members = src_files(folder.relative_to(ROOT).as_posix())
        if members and members <= files and not any(folder.is_relative_to(f) for f in folders):
            folders.append(folder)
    loose = [f for f in files if not any(f.is_relative_to(d) for d in folders)]
    return sorted(p.relative_to(ROOT).as_posix() for p in [*folders, *loose])


def test_minimal_deps_prefers_whole_folders() -> None:
    models = {p for p in (PACKAGE / "models").rglob("*.py") if p.name != "__init__.py" or has_code(p)}
    deps = minimal_deps(models | {PACKAGE / "io.py"})
    assert deps == ["src/iqalab/io.py", "src/iqalab/models"]
    assert minimal_deps({PACKAGE / "sim" / "camera.py"}) == ["src/iqalab/sim/camera.py"]


if __name__ == "__main__":
    for name, spec in dvc_stages().items():
        entries, notebook = stage_entries(spec)
        print(f"{name}:")
        for dep in ([notebook] if notebook else []) + minimal_deps(closure(entries)):
            print(f"  - {dep}")
