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
"""

__version__ = "0.1.0"
