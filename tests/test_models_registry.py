"""Every registered model, built from its ``smoke_params``: forward shapes, [0,1]-scale outputs, gradients,
state-dict round trip, and a training step. A new model gets these tests by registering."""

from __future__ import annotations

import math

import pytest
import torch

from iqalab.models import available, build_model, get_model_class
from iqalab.models.base import BATCH_KEYS, IQAModel, StepContext

ATTRS = ["overall", "noise"]


def make_batch(model: IQAModel, n: int = 2, size: int = 64, seed: int = 0) -> dict:
    """A synthetic batch with every key the model declares (boxes and landmarks inside the image)."""
    g = torch.Generator().manual_seed(seed)
    batch: dict = {"image": torch.randn(n, 3, size, size, generator=g),
                   "mos_norm": torch.rand(n, len(model.attributes), generator=g),
                   "std_norm": torch.full((n, len(model.attributes)), 0.1),
                   "cam": torch.randn(n, 7, generator=g), "cam_mask": torch.ones(n, 7),
                   "person_box": torch.tensor([[size * 0.2, size * 0.1, size * 0.8, size * 0.95]] * n),
                   "face_box": torch.tensor([[size * 0.3, size * 0.2, size * 0.7, size * 0.6]] * n),
                   "scene_idx": torch.arange(n) % 2, "image_id": [f"img{i}" for i in range(n)]}
    batch["std"] = batch["std_norm"] * 4
    batch["mos"] = batch["mos_norm"] * 4 + 1
    lm = torch.tensor([[0.4, 0.35], [0.6, 0.35], [0.5, 0.45], [0.42, 0.55], [0.58, 0.55]]) * size
    batch["landmarks"] = lm.expand(n, 5, 2).clone()
    return batch


def smoke(name: str) -> IQAModel:
    cls = get_model_class(name)
    torch.manual_seed(0)
    return build_model(name, ATTRS, **getattr(cls, "smoke_params", {}))


def _size(name: str) -> int:
    return int(getattr(get_model_class(name), "smoke_image_size", 64))


@pytest.mark.parametrize("name", available())
def test_declares_known_inputs_and_paper(name):
    cls = get_model_class(name)
    assert set(cls.inputs) <= BATCH_KEYS, f"{name} declares unknown batch keys"
    assert cls.paper, f"{name} must cite its paper"


@pytest.mark.parametrize("name", available())
def test_forward_shapes_and_range(name):
    model = smoke(name)
    model.eval()
    out = model.predict(make_batch(model, size=_size(name)))
    assert set(out) == set(ATTRS)
    for attr, score in out.items():
        assert score.shape == (2,), attr
        assert torch.isfinite(score).all(), attr


@pytest.mark.parametrize("name", available())
def test_training_step_reaches_every_trainable_parameter(name):
    model = smoke(name)
    if not getattr(model, "trainable", True):
        pytest.skip(f"{name} is not trained by gradient descent")
    model.train()
    size = _size(name)
    batch = make_batch(model, n=4 if "pairs" not in model.inputs else 2, size=size)
    if "pairs" in model.inputs:
        batch = {"a": batch, "b": make_batch(model, n=2, size=size, seed=1),
                 "p": torch.tensor([1.0, 0.0]), "attr_idx": torch.tensor([0, 1])}
    loss = model.training_step(batch, StepContext(epoch=0, epochs=2))
    assert loss.dim() == 0 and math.isfinite(float(loss))
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    without = [n for n, p in params if p.grad is None]
    # heads of attributes absent from the batch may legitimately stay untouched; all others must learn
    assert len(without) <= len(params) * 0.05, f"{name}: parameters without gradient: {without[:8]}"


@pytest.mark.parametrize("name", available())
def test_state_dict_round_trip(name):
    model = smoke(name)
    model.eval()
    twin = smoke(name)
    twin.load_state_dict(model.state_dict())
    twin.eval()
    batch = make_batch(model, size=_size(name))
    a, b = model.predict(batch), twin.predict(batch)
    for attr in ATTRS:
        torch.testing.assert_close(a[attr], b[attr])
