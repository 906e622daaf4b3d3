"""iqalab: a reproducible research compendium for human-centred blind image quality assessment.

The package computes; notebooks under ``notebooks/`` orchestrate and show. Modules:

- :mod:`iqalab.config` - ``params.yaml`` loading and validation.
- :mod:`iqalab.data` - canonical tables, validator, image cache, splits, torch loaders, real-dataset adapters.
- :mod:`iqalab.sim` - the built-in camera simulator and virtual rater panel.
- :mod:`iqalab.models` - the model registry and one module per paper.
- :mod:`iqalab.train` - training engine and losses.
- :mod:`iqalab.analysis` - pure analyses, one home each (metrics, stats, evaluation, significance, gmad, tuning).
- :mod:`iqalab.paper_tables` - the papers' result tables, one registered function per table.
- :mod:`iqalab.stages` - the thin DVC stages, called by the notebooks and the CLI only (never by the library).

Importing the package sets the portable-numerics environment before numpy loads (:mod:`iqalab.numerics`), so the
datasets and classical scores are the same on every x86-64 CPU with AVX2.
"""

from iqalab.numerics import use_portable_numerics

use_portable_numerics()

__version__ = "0.1.0"
