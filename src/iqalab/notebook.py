"""Helpers the notebooks call in their first cell: find the project, load params, set up logging and plots.

Two environment variables let tests run the notebooks on tiny data without touching the project's outputs:
``IQALAB_PARAMS`` (a params file to use instead of the notebook's ``params_file``) and ``IQALAB_WORKDIR`` (a
folder that receives ``build/`` and ``results/`` instead of the project root; without it, a params file other than
the project's writes to its own ``build/work/<name>/``, :func:`iqalab.io.workdir`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from iqalab import numerics
from iqalab.config import Params, load_params
from iqalab.io import project_root, workdir
from iqalab.memory import keep_freed_memory


def setup(params_file: str = "params.yaml") -> tuple[Params, Path]:
    """Return the validated params and the folder that holds ``build/`` and ``results/``.

    Also applies the opt-in allocator settings (:func:`iqalab.memory.keep_freed_memory`, ``IQALAB_KEEP_FREED_MEMORY=1``)
    and warns when the portable numerics did not take effect (:func:`iqalab.numerics.check`).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    keep_freed_memory()
    numerics.check()
    project = project_root()
    params_path = Path(os.environ.get("IQALAB_PARAMS") or project / params_file)
    params_path = params_path if params_path.is_absolute() else project / params_path
    params = load_params(params_path)
    out = workdir(params_path)  # another params file than the project's writes to its own work folder
    out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200})
    except ImportError:  # pragma: no cover
        pass
    return params, out
