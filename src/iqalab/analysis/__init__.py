"""Pure analysis functions, each concept implemented once and tested once.

- :mod:`iqalab.analysis.metrics` - correlation and accuracy metrics (SRCC, PLCC, KRCC, FG-ACC, logistic fit).
- :mod:`iqalab.analysis.stats` - annotation statistics (BT.500 screening, reliability, Wilson intervals).
- :mod:`iqalab.analysis.significance` - which differences between models are statistically real.
- :mod:`iqalab.analysis.gmad` - the gMAD competition (pair selection, panel judgements, scores).
- :mod:`iqalab.analysis.tuning` - the camera-tuning study (sweeps, search, win rates, regret).

Nothing here reads params or writes files for a stage; the stages in :mod:`iqalab.stages` do that.
"""
