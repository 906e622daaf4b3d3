"""Complexity helper: GMACs against hand counts, parameters, latency and the device name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iqalab.models.base import IQAModel
from iqalab.models.profile import count_gmacs, dummy_batch, profile_model

SIZE = 16


class TinyConvNet(nn.Module):
    """conv3x3 (3->8) -> ReLU -> depthwise conv3x3 (8 groups) -> conv1x1 stride 2 (8->4) -> flatten -> linear."""

    def __init__(self, size: int = SIZE) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 4, 1, stride=2)
        self.fc = nn.Linear(4 * (size // 2) ** 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(torch.relu(self.conv(x))))
        return self.fc(x.flatten(1))


def hand_macs(size: int = SIZE) -> int:
    """Multiply-accumulates of TinyConvNet counted by hand (biases excluded, as every counter does)."""
    hw, half = size * size, (size // 2) ** 2
    conv = 3 * 8 * 9 * hw
    depthwise = 8 * 1 * 9 * hw  # one input channel per group
    pointwise = 8 * 4 * half
    linear = 4 * half * 2
    return conv + depthwise + pointwise + linear


class TinyIQA(IQAModel):
    """TinyConvNet behind the batch contract, reading the keys a face model would."""

    inputs = frozenset({"image", "face_box", "landmarks"})

    def __init__(self) -> None:
        super().__init__(["overall"])
        self.net = TinyConvNet()

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        assert batch["face_box"].shape == (batch["image"].shape[0], 4)
        return {"overall": self.net(batch["image"])[:, 0]}


@pytest.mark.parametrize("backend", ["torch", "fvcore"])
def test_gmacs_match_hand_count(backend: str) -> None:
    net = TinyConvNet()
    gmacs, _ = count_gmacs(net, torch.zeros(1, 3, SIZE, SIZE), backend=backend)
    assert gmacs * 1e9 == pytest.approx(hand_macs(), rel=1e-9)


def test_gmacs_scale_with_image_area() -> None:
    small, _ = count_gmacs(TinyConvNet(16), torch.zeros(1, 3, 16, 16))
    large, _ = count_gmacs(TinyConvNet(32), torch.zeros(1, 3, 32, 32))
    assert large * 1e9 == pytest.approx(hand_macs(32))
    assert 3.5 < large / small <= 4.0  # convolutions x4, the linear layer x4 too (its input grows with the area)


def test_profile_model_on_batch_contract_model() -> None:
    model = TinyIQA()
    model.train()
    result = profile_model(model, image_size=SIZE, device="cpu", warmup=1, repeats=3, breakdown_depth=2)
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["params_m"] == pytest.approx(result["params"] / 1e6)
    assert result["gmacs"] * 1e9 == pytest.approx(hand_macs())
    parts = result["gmacs_by_module"]
    children = [v for k, v in parts.items() if k.count(".") == 2]  # TinyIQA.net.<layer>
    assert sum(children) == pytest.approx(result["gmacs"])
    assert result["latency_ms"] > 0 and result["latency_ms_median"] > 0
    assert result["device"] == "cpu" and result["device_name"].startswith("CPU")
    assert result["batch_size"] == 1 and result["image_size"] == SIZE
    assert model.training, "profiling must restore the training mode"


def test_profile_without_latency() -> None:
    result = profile_model(TinyConvNet(), image_size=SIZE, repeats=0)
    assert result["latency_ms"] is None
    assert result["gmacs"] * 1e9 == pytest.approx(hand_macs())


def test_unknown_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match="backend"):
        count_gmacs(TinyConvNet(), torch.zeros(1, 3, SIZE, SIZE), backend="thop")


def test_dummy_batch_follows_inputs() -> None:
    batch = dummy_batch(TinyIQA(), image_size=64, batch_size=2)
    assert set(batch) == {"image", "face_box", "landmarks"}
    assert batch["image"].shape == (2, 3, 64, 64)
    box, lm = batch["face_box"], batch["landmarks"]
    assert lm.shape == (2, 5, 2)
    inside = (lm[..., 0] >= box[:, None, 0]) & (lm[..., 0] <= box[:, None, 2]) \
        & (lm[..., 1] >= box[:, None, 1]) & (lm[..., 1] <= box[:, None, 3])
    assert inside.all()
    assert isinstance(dummy_batch(TinyConvNet(), 16), torch.Tensor)
