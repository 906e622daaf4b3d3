"""Model cards generated from the registry: inputs, paper, parameter count of the smoke configuration."""

from __future__ import annotations

import pandas as pd

from iqalab.models.registry import available, build_model, get_model_class


def model_cards(attributes: tuple[str, ...] = ("overall",)) -> pd.DataFrame:
    """One row per registered model: name, class, inputs, paper, parameters of its ``smoke_params`` build."""
    rows = []
    for name in available():
        cls = get_model_class(name)
        smoke = dict(getattr(cls, "smoke_params", {}))
        try:
            n_params = build_model(name, list(attributes), **smoke).num_parameters()
        except Exception as exc:  # noqa: BLE001 - a card must not fail the listing
            n_params = f"error: {exc}"
        rows.append({"model": name, "class": cls.__name__, "inputs": ",".join(sorted(cls.inputs)),
                     "params (smoke config)": n_params, "paper": cls.paper})
    return pd.DataFrame(rows)
