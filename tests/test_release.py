"""The one reader of released weights files (:mod:`iqalab.models.release`): a plain state dict, pyiqa's
``params`` nesting and a ``state_dict`` nesting give the same tensors; a missing, damaged or non-dict file is
refused in one line naming it, by the reader and by both of its callers (``official`` and DBCNN's
``release_weights``)."""

from __future__ import annotations

import pytest
import torch

from iqalab.models.backbones import PretrainedUnavailable
from iqalab.models.dbcnn import read_release_weights
from iqalab.models.release import ReleaseWeightsError, read_release_state, unwrap_state
from iqalab.official import OfficialWeightsError, _official_state

STATE = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.tensor([0.5, -1.0])}


@pytest.mark.parametrize("nesting", [None, "params", "state_dict"])
def test_plain_and_nested_files_give_the_same_state(tmp_path, nesting):
    path = tmp_path / "weights.pkl"
    torch.save(STATE if nesting is None else {nesting: STATE, "epoch": 3}, path)
    for state in (read_release_state(path), read_release_weights(path), _official_state(path)[0]):
        assert sorted(state) == sorted(STATE)
        for key, value in STATE.items():
            torch.testing.assert_close(state[key], value)
    assert _official_state(path)[1] == str(path)


def test_unwrap_prefers_params_and_keeps_a_non_mapping_wrapper():
    assert unwrap_state({"params": STATE, "state_dict": {}}) is STATE
    odd = {"params": torch.zeros(1), "fc.bias": STATE["fc.bias"]}  # a tensor named ``params`` is a tensor
    assert unwrap_state(odd) is odd
    assert unwrap_state([1, 2]) == [1, 2]


def test_bad_files_are_refused_naming_the_file(tmp_path):
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a checkpoint")
    listed = tmp_path / "listed.pkl"
    torch.save([torch.zeros(1)], listed)
    cases = [(tmp_path / "missing.pkl", "missing.pkl not found"), (junk, "junk.pkl is not a torch state dict"),
             (listed, "listed.pkl holds a list, not a state dict")]
    for path, message in cases:
        with pytest.raises(ReleaseWeightsError, match=message):
            read_release_state(path)
        with pytest.raises(PretrainedUnavailable, match=f"model.release_weights: .*{message}"):
            read_release_weights(path)
        with pytest.raises(OfficialWeightsError, match=message):
            _official_state(path)
