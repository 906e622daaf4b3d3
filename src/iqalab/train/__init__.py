"""Training: the engine (loop, AMP, checkpoint/resume, early stopping, predictions) and shared losses."""
