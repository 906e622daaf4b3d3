"""Helpers the notebooks call in their first cell: find the project, load params, set up logging and plots.

Two environment variables let tests run the notebooks on tiny data without touching the project's outputs:
``IQALAB_PARAMS`` (a params file to use instead of the notebook's ``params_file``) and ``IQALAB_WORKDIR`` (a
folder that receives ``build/`` and ``results/`` instead of the project root; without it, a params file other than
the project's writes to its own ``build/work/<name>/``, :func:`iqalab.io.workdir`).

Every stage validates the params in full, but the checks of the names params give to code
(:func:`iqalab.config.check_names`: model keywords, builder options, table tags, split names) import every model,
the simulator and torch, about 5 s of a stage that may need none of them. They depend only on the params files
and the package's source, so :func:`setup` runs them once per combination of the two: after they pass it writes
that combination's key to ``build/.params-checked`` and later stages with the same key skip them (the pydantic
validation and the cross-references still run every time). ``iqalab check`` always runs everything.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
from pathlib import Path

import pydantic

from iqalab import numerics
from iqalab.config import Params, _layers, load_params
from iqalab.io import atomic_path, project_root, workdir
from iqalab.memory import keep_freed_memory

log = logging.getLogger(__name__)

#: Where :func:`setup` keeps the key of the last params whose names passed, under the work folder.
CHECKED_STAMP = Path("build") / ".params-checked"


@functools.lru_cache(maxsize=1)
def package_digest() -> str:
    """SHA-256 over every ``.py`` file of the installed ``iqalab`` package (relative paths and bytes, sorted), with
    the Python and pydantic versions: everything the name checks read besides the params."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"{platform.python_version()} pydantic {pydantic.VERSION}".encode())
    for file in sorted(package.rglob("*.py")):
        digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def params_key(params_path: Path) -> str:
    """The key of one params file as composed (every overlay layer's mapping) and of the code that checks it."""
    layers = json.dumps(_layers(params_path), sort_keys=True, default=str)
    return hashlib.sha256(f"{package_digest()}\0{layers}".encode()).hexdigest()


def load_checked(params_path: Path, out: Path) -> Params:
    """:func:`iqalab.config.load_params`, running the name checks only when ``out``'s stamp holds another key."""
    stamp = out / CHECKED_STAMP
    key = params_key(params_path)
    if stamp.is_file() and stamp.read_text().strip() == key:
        log.debug("params names already checked for this params file and code (%s)", stamp)
        return load_params(params_path, check_models=False)
    params = load_params(params_path)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(stamp) as tmp:
        tmp.write_text(key + "\n")
    return params


def setup(params_file: str = "params.yaml") -> tuple[Params, Path]:
    """Return the validated params and the folder that holds ``build/`` and ``results/``.

    The name checks run once per params and code (module docstring, :func:`load_checked`). Also applies the
    opt-in allocator settings (:func:`iqalab.memory.keep_freed_memory`, ``IQALAB_KEEP_FREED_MEMORY=1``)
    and warns when the portable numerics did not take effect (:func:`iqalab.numerics.check`).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    keep_freed_memory()
    numerics.check()
    project = project_root()
    params_path = Path(os.environ.get("IQALAB_PARAMS") or project / params_file)
    params_path = params_path if params_path.is_absolute() else project / params_path
    out = workdir(params_path)  # another params file than the project's writes to its own work folder
    out.mkdir(parents=True, exist_ok=True)
    params = load_checked(params_path, out)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200})
    except ImportError:  # pragma: no cover
        pass
    return params, out
