"""Reading a released network's weights file: the state dict in it, unwrapped from pyiqa's nesting.

An original implementation saves its network with ``torch.save(net.state_dict())`` (HyperIQA's
``koniq_pretrained.pkl``, DBCNN's ``net_params_best.pkl``); pyiqa's weight files of the same networks
(``pyiqa/archs/hypernet_arch.py``, ``pyiqa/archs/dbcnn_arch.py``) hold that dict under ``params``, other
checkpoints under ``state_dict``. :func:`read_release_state` returns the tensors either way; it is the one reader
of :func:`iqalab.official.hyperiqa_from_official`, :func:`iqalab.official.dbcnn_from_official`, DBCNN's
``model.release_weights`` (:func:`iqalab.models.dbcnn.read_release_weights`) and ``model.scnn_weights``
(:func:`iqalab.models.dbcnn.load_scnn_weights`), each of which turns :class:`ReleaseWeightsError` into its own
error type; a backbone's local weights file (:mod:`iqalab.models.backbones`) is unwrapped by :func:`unwrap_state`
too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from iqalab.io import load_error_reason

#: the keys under which a checkpoint file may nest the network's state dict, first found first: pyiqa's files
#: ``params``, training checkpoints ``state_dict``, timm's ``model`` / ``state_dict_ema``
WRAPPERS: tuple[str, ...] = ("params", "state_dict", "model", "state_dict_ema")


class ReleaseWeightsError(ValueError):
    """A released weights file that is missing, unreadable or holds no state dict; the message names the file."""


def unwrap_state(state: Any) -> Any:
    """The mapping under the first of :data:`WRAPPERS` that ``state`` holds as a mapping, else ``state`` itself."""
    if isinstance(state, Mapping):
        for wrapper in WRAPPERS:
            if isinstance(state.get(wrapper), Mapping):
                return state[wrapper]
    return state


def read_release_state(path: str | Path) -> Mapping[str, torch.Tensor]:
    """The state dict in the weights file ``path`` (``torch.load(weights_only=True)``: tensors only), unwrapped
    from ``params`` / ``state_dict`` (:func:`unwrap_state`). A missing file, one ``torch.load`` refuses, or one
    holding something other than a mapping raises :class:`ReleaseWeightsError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ReleaseWeightsError(f"{path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is refused in one line naming it
        raise ReleaseWeightsError(f"{path} is not a torch state dict ({load_error_reason(exc)})") from None
    state = unwrap_state(state)
    if not isinstance(state, Mapping):
        raise ReleaseWeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
