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


def stage_cmd(spec: dict) -> str:
    """A dvc.yaml stage's command as one string (``cmd`` may be a list)."""
    return " ".join(spec["cmd"]) if isinstance(spec["cmd"], list) else spec["cmd"]


def stage_entries(stage: dict) -> tuple[set[str], str | None]:
    """(modules the stage's command runs first, the notebook it executes or None)."""
    cmd = stage_cmd(stage)
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
    uncovered = [d for d in deps if d not in RUN_CODE and d not in RUN_CODE_EXEMPT]
    assert not uncovered, f"train stage code outside engine.RUN_CODE and RUN_CODE_EXEMPT: {uncovered}"
    assert not set(RUN_CODE) & set(RUN_CODE_EXEMPT), "both hashed and exempt"
    # exactly the deps: a folder entry wider than its dep (all of data/ for data/cache.py) would retrain every
    # model when code the training never imports changes (an adapter, the simulator)
    stale = [e for e in [*RUN_CODE, *RUN_CODE_EXEMPT] if e not in deps]
    assert not stale, f"RUN_CODE / RUN_CODE_EXEMPT entries that are not train stage deps: {stale}"


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


# ------------------------------------------------------------------------------------------------ one name
#: README: "A stage has one name: the dvc.yaml stage, the iqalab command, the module iqalab.stages.<name>
#: (iqalab.report for report) and the notebook notebooks/NN_<name>.ipynb (the number only orders the notebooks)"
STAGE_MODULE_EXCEPTIONS = {"report": "iqalab.report"}
#: notebooks that are no stage (README: "notebooks/00_explore.ipynb browses a dataset, ...")
NON_STAGE_NOTEBOOKS = ("00_explore.ipynb",)
NOTEBOOK_NAME = re.compile(r"(\d\d)_(\w+)\.ipynb")


def stage_module(name: str) -> str:
    return STAGE_MODULE_EXCEPTIONS.get(name, f"iqalab.stages.{name}")


def cli_commands() -> dict[str, set[str]]:
    """The commands of ``iqalab`` (``sub.add_parser`` in ``__main__``) -> the modules of ours that the command's
    ``args.command == ...`` branch imports."""
    tree = ast.parse((PACKAGE / "__main__.py").read_text())
    commands: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_parser"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "sub" and node.args
                and isinstance(node.args[0], ast.Constant)):
            commands[node.args[0].value] = set()
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        if (isinstance(test, ast.Compare) and ast.unparse(test.left) == "args.command"
                and isinstance(test.ops[0], ast.Eq) and isinstance(test.comparators[0], ast.Constant)
                and test.comparators[0].value in commands):
            branch = ast.Module(body=node.body, type_ignores=[])
            commands[test.comparators[0].value] |= imported_names(branch, "iqalab")
    return commands


def notebook_files() -> dict[str, set[str]]:
    """``notebooks/*.ipynb`` file names -> the modules of ours each imports."""
    return {p.name: notebook_imports(p) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}


def stage_name_problems(stages: dict[str, dict], notebooks: dict[str, set[str]],
                        commands: dict[str, set[str]]) -> list[str]:
    """Where a stage's name is not that of its ``iqalab`` command, its module and its notebook (and where a
    ``NN_<name>`` notebook is not its stage's): ``stages`` as :func:`dvc_stages`, ``notebooks`` as
    :func:`notebook_files`, ``commands`` as :func:`cli_commands`."""
    problems: list[str] = []
    for name, spec in stages.items():
        module = stage_module(name)
        if module_file(module) is None:
            problems.append(f"{name}: no module {module}")
        if name not in commands:
            problems.append(f"{name}: no command `iqalab {name}`")
        elif module not in commands[name]:
            problems.append(f"{name}: `iqalab {name}` does not run {module} (it imports {sorted(commands[name])})")
        cmd = stage_cmd(spec)
        papermill = re.search(r"\bpapermill (\S+) (\S+)", cmd)
        if papermill:
            notebook, executed = papermill.groups()
            match = NOTEBOOK_NAME.fullmatch(notebook.removeprefix("notebooks/"))
            if not notebook.startswith("notebooks/") or not match or match.group(2) != name:
                problems.append(f"{name}: runs {notebook}, not notebooks/NN_{name}.ipynb")
            elif match.group(0) not in notebooks:
                problems.append(f"{name}: runs {notebook}, which does not exist")
            elif module not in notebooks[match.group(0)]:
                problems.append(f"{name}: {notebook} does not import {module}")
            if not executed.startswith("build/executed/"):
                problems.append(f"{name}: executed copy {executed} outside build/executed/")
            continue
        command = re.search(r"(?:^|&&|;)\s*iqalab(?: -q| --quiet)? (\S+)", cmd)
        if not command or command.group(1) != name:
            problems.append(f"{name}: runs {cmd!r}, neither notebooks/NN_{name}.ipynb nor `iqalab {name}`")
    numbers: dict[str, str] = {}
    for file in notebooks:
        if file in NON_STAGE_NOTEBOOKS:
            continue
        match = NOTEBOOK_NAME.fullmatch(file)
        if not match:
            problems.append(f"notebooks/{file}: not named NN_<stage>.ipynb")
            continue
        number, name = match.groups()
        if number in numbers:
            problems.append(f"notebooks/{file}: number {number} also orders notebooks/{numbers[number]}")
        numbers[number] = file
        if name not in stages:
            problems.append(f"notebooks/{file}: no dvc.yaml stage {name}")
        elif f"notebooks/{file}" not in stage_cmd(stages[name]).split():
            problems.append(f"notebooks/{file}: stage {name} does not run it")
    return problems


def test_each_stage_has_one_name() -> None:
    stages = dvc_stages()
    assert {"ingest", "train", "camera_tuning", "profile", "report"} <= set(stages)
    problems = stage_name_problems(stages, notebook_files(), cli_commands())
    assert not problems, "a stage has one name (README):\n" + "\n".join(problems)


def test_the_readme_lists_each_stage_command() -> None:
    """README: each stage "is also a command: `iqalab ingest <dataset>`, ..., `iqalab report` (the small `profile`,
    `cross_dataset` and `report` stages run the command directly)": those are the dvc.yaml stages, and the ones
    named there are the stages without a notebook."""
    text = " ".join((ROOT / "README.md").read_text().split())
    passage = re.search(r"each is also a command: (.*?) \(the small (.*?) stages run the command directly\)", text)
    assert passage, "README: the list of stage commands moved; update this test"
    listed = re.findall(r"`iqalab (\w+)", passage.group(1))
    stages = dvc_stages()
    assert sorted(listed) == sorted(stages) and len(set(listed)) == len(listed)
    direct = set(re.findall(r"`(\w+)`", passage.group(2)))
    assert direct == {name for name, spec in stages.items() if "papermill" not in stage_cmd(spec)}


@pytest.mark.parametrize(("change", "seen"), [
    ("notebook renamed with its stage command", "gmad: runs notebooks/05_mad.ipynb, not notebooks/NN_gmad.ipynb"),
    ("notebook file renamed", "camera_tuning: runs notebooks/07_camera_tuning.ipynb, which does not exist"),
    ("notebook file renamed", "notebooks/07_tuning.ipynb: no dvc.yaml stage tuning"),
    ("notebook renumbered onto another", "number 05 also orders"),
    ("stage command renamed", "profile: runs 'iqalab -q profiles', neither"),
    ("command runs another module", "evaluate: `iqalab evaluate` does not run iqalab.stages.evaluate"),
    ("notebook imports another stage", "evaluate: notebooks/04_evaluate.ipynb does not import iqalab.stages.evaluate"),
    ("CLI command renamed", "report: no command `iqalab report`"),
    ("dvc.yaml stage renamed", "tuning: no module iqalab.stages.tuning"),
])
def test_the_one_name_check_sees_a_renamed_part(change: str, seen: str) -> None:
    """The check of :func:`test_each_stage_has_one_name` on in-memory copies of dvc.yaml, the notebooks and the
    CLI with one part of one stage renamed (nothing on disk changes)."""
    stages = {name: dict(spec) for name, spec in dvc_stages().items()}
    notebooks, commands = notebook_files(), cli_commands()
    if change == "notebook renamed with its stage command":  # file and command agree, no longer with the stage
        stages["gmad"]["cmd"] = stage_cmd(stages["gmad"]).replace("05_gmad.ipynb", "05_mad.ipynb")
        notebooks["05_mad.ipynb"] = notebooks.pop("05_gmad.ipynb")
    elif change == "notebook file renamed":
        notebooks["07_tuning.ipynb"] = notebooks.pop("07_camera_tuning.ipynb")
    elif change == "notebook renumbered onto another":
        stages["significance"]["cmd"] = stage_cmd(stages["significance"]).replace("06_sig", "05_sig")
        notebooks["05_significance.ipynb"] = notebooks.pop("06_significance.ipynb")
    elif change == "stage command renamed":
        stages["profile"]["cmd"] = "iqalab -q profiles"
    elif change == "command runs another module":
        commands["evaluate"] = {"iqalab.stages", "iqalab.stages.significance"}
    elif change == "notebook imports another stage":
        notebooks["04_evaluate.ipynb"] = {"iqalab.notebook", "iqalab.stages", "iqalab.stages.gmad"}
    elif change == "CLI command renamed":  # `iqalab reporting` runs iqalab.report
        commands["reporting"] = commands.pop("report")
    else:
        stages["tuning"] = stages.pop("camera_tuning")
    problems = stage_name_problems(stages, notebooks, commands)
    assert any(seen in p for p in problems), f"{change}: not seen in {problems}"

if __name__ == "__main__":
    for name, spec in dvc_stages().items():
        entries, notebook = stage_entries(spec)
        print(f"{name}:")
        for dep in ([notebook] if notebook else []) + minimal_deps(closure(entries)):
            print(f"  - {dep}")
