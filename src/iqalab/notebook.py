"""Helpers the notebooks call in their first cell: find the project, load params, set up logging and plots.

Two environment variables let tests run the notebooks on tiny data without touching the project's outputs:
``IQALAB_PARAMS`` (a params file to use instead of the notebook's ``params_file``) and ``IQALAB_WORKDIR`` (a
folder that receives ``build/`` and ``results/`` instead of the project root).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from iqalab.config import Params, load_params
from iqalab.io import project_root, workdir


def setup(params_file: str = "params.yaml") -> tuple[Params, Path]:
    """Return the validated params and the folder that holds ``build/`` and ``results/``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    project = project_root()
    params_path = Path(os.environ.get("IQALAB_PARAMS") or project / params_file)
    params = load_params(params_path if params_path.is_absolute() else project / params_path)
    out = workdir()
    out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200})
    except ImportError:  # pragma: no cover
        pass
    return params, out
