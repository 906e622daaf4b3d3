"""``patch_rate``: PIQ23's widened HyperIQA (``DXOMARK-Research/PIQ2023``, ``sem_hyperiqa_util.py``,
``HyperNet(16, 112r, 224r, 112r, 56r, 28r, 14r, 7r, r)`` for a ``224 r`` px patch; seed 001 Table I's HyperIQA-family
rows are r = 6, 1344 x 1).

The reference is an independent implementation of that release's forward pass reading the tensors by its names
(those of the HyperIQA release): torchvision's ResNet-50 trunk, the LDA's 1x1 convs and *fixed* 7x7 average pools
of stride 7 (an 8r / 4r / 2r grid on stages 1-3, an r x r grid on stage 4, flattened channel-major), the three 1x1
convs to ``H`` (112r channels at 7r x 7r, not pooled), the weight generators read channel-major, biases and the
last layer from globally pooled ``H``, four FC + sigmoid layers and a linear FC. Here r = 2 (448 px patches) to keep
the CPU test short; every patch score must agree within 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from iqalab.models import build_model
from iqalab.official import hyperiqa_state_from_official

R = 2
LDA = {1: (256, 16), 2: (512, 32), 3: (1024, 64)}  # stage: (in channels, LDA channels)
GRIDS = {1: 8 * R, 2: 4 * R, 3: 2 * R}
SIZES = (224 * R, 112 * R, 56 * R, 28 * R, 14 * R)  # target_in, fc1..fc4
HYPER = 112 * R
FS = 7 * R


def random_widened_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the widened release's names and shapes at ``R`` (random weights, bounded activations)."""
    import torchvision

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # the trunk's init draws from the global generator: seed it, leave it as it was
        torch.manual_seed(seed)
        trunk = torchvision.models.resnet50(weights=None)
    state = {}
    for key, value in trunk.state_dict().items():
        if key.startswith("fc."):
            continue
        if key.endswith("running_mean"):
            value = torch.randn(value.shape, generator=g) * 0.1
        elif key.endswith("running_var"):
            value = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith("bn3.weight") or key.endswith("downsample.1.weight"):
            value = torch.rand(value.shape, generator=g) * 0.5 + 0.1
        state[f"res.{key}"] = value.clone()

    def rnd(*shape: int, scale: float = 0.05) -> torch.Tensor:
        return torch.randn(shape, generator=g) * scale

    for k, (c, m) in LDA.items():
        state[f"res.lda{k}_pool.0.weight"] = rnd(m, c, 1, 1, scale=0.1)
        state[f"res.lda{k}_fc.weight"] = rnd(16, m * GRIDS[k] ** 2, scale=0.02)
        state[f"res.lda{k}_fc.bias"] = rnd(16)
    state["res.lda4_fc.weight"] = rnd(SIZES[0] - 48, 2048 * R * R, scale=0.02)
    state["res.lda4_fc.bias"] = rnd(SIZES[0] - 48)
    for idx, (cin, cout) in zip((0, 2, 4), ((2048, 1024), (1024, 512), (512, HYPER))):
        state[f"conv1.{idx}.weight"] = rnd(cout, cin, 1, 1, scale=0.05)
        state[f"conv1.{idx}.bias"] = rnd(cout, scale=0.05)
    for k in range(1, 5):
        fin, fout = SIZES[k - 1], SIZES[k]
        state[f"fc{k}w_conv.weight"] = rnd(fin * fout // FS ** 2, HYPER, 3, 3, scale=0.05)
        state[f"fc{k}w_conv.bias"] = rnd(fin * fout // FS ** 2, scale=0.1)
        state[f"fc{k}b_fc.weight"] = rnd(fout, HYPER, scale=0.1)
        state[f"fc{k}b_fc.bias"] = rnd(fout, scale=0.1)
    state["fc5w_fc.weight"] = rnd(SIZES[4], HYPER, scale=0.5)
    state["fc5w_fc.bias"] = rnd(SIZES[4], scale=0.5)
    state["fc5b_fc.weight"] = rnd(1, HYPER, scale=0.5)
    state["fc5b_fc.bias"] = torch.tensor([3.0])  # a JOD-like score
    return state


@torch.no_grad()
def widened_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The widened release's score of each ``224 R`` px patch of ``x`` [N, 3, 224R, 224R]."""
    import torchvision

    trunk = torchvision.models.resnet50(weights=None)
    trunk.load_state_dict({k[4:]: v for k, v in state.items()
                           if k.startswith("res.") and not k.startswith("res.lda")}, strict=False)
    trunk.eval()
    n = len(x)
    h = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    parts = []
    for k, layer in enumerate((trunk.layer1, trunk.layer2, trunk.layer3), start=1):
        h = layer(h)
        pooled = F.avg_pool2d(F.conv2d(h, state[f"res.lda{k}_pool.0.weight"]), 7, stride=7)
        assert pooled.shape[-1] == GRIDS[k]
        parts.append(F.linear(pooled.reshape(n, -1), state[f"res.lda{k}_fc.weight"], state[f"res.lda{k}_fc.bias"]))
    h = trunk.layer4(h)
    last = F.avg_pool2d(h, 7, stride=7)
    assert last.shape[-1] == R
    parts.append(F.linear(last.reshape(n, -1), state["res.lda4_fc.weight"], state["res.lda4_fc.bias"]))
    vec = torch.cat(parts, dim=1)
    hyper = h
    for idx in (0, 2, 4):
        hyper = F.relu(F.conv2d(hyper, state[f"conv1.{idx}.weight"], state[f"conv1.{idx}.bias"]))
    assert hyper.shape[1:] == (HYPER, FS, FS)
    pooled = hyper.mean(dim=(2, 3))
    scores = []
    for i in range(n):
        q = vec[i]
        for k in range(1, 5):
            w = F.conv2d(hyper[i:i + 1], state[f"fc{k}w_conv.weight"], state[f"fc{k}w_conv.bias"], padding=1)
            w = w.reshape(SIZES[k], SIZES[k - 1])  # the release's .view(-1, f_k, f_{k-1}, 1, 1)
            b = F.linear(pooled[i], state[f"fc{k}b_fc.weight"], state[f"fc{k}b_fc.bias"])
            q = torch.sigmoid(w @ q + b)
        w5 = F.linear(pooled[i], state["fc5w_fc.weight"], state["fc5w_fc.bias"])
        b5 = F.linear(pooled[i], state["fc5b_fc.weight"], state["fc5b_fc.bias"])
        scores.append(w5 @ q + b5[0])
    return torch.stack(scores)


def test_patch_rate_builds_the_release_widened_network_and_computes_its_scores():
    state = random_widened_state()
    model = build_model("hyperiqa", ["quality"], backbone="resnet50", pretrained=False, patch_size=224 * R,
                        patch_rate=R)
    model.load_state_dict(hyperiqa_state_from_official(state))  # every tensor has its place, shapes included
    model.eval()
    x = torch.randn(2, 3, 224 * R, 224 * R, generator=torch.Generator().manual_seed(1))
    expected = widened_forward(state, x)
    with torch.no_grad():
        got = model.patch_outputs(x[None])["q"][0, :, 0]
    assert (expected[0] - expected[1]).abs() > 1e-3  # the patches score differently
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_patch_rate_sizes_and_the_scene_models():
    """The widths scale with r and the LDA keeps grids; SEM-HyperIQA's scene features follow the widened ``H``;
    without ``patch_rate`` the 224 network is unchanged (27.38 M parameters with ResNet-50)."""
    wide = build_model("hyperiqa", ["quality"], backbone="resnet50", pretrained=False, patch_size=672, patch_rate=3)
    assert wide.hyper.hyper_in == 336 and wide.hyper.sizes == [672, 336, 168, 84, 42]
    assert wide.hyper.feature_size == 21 and wide.lda.last_grid == 3
    assert [p.output_size for p in wide.lda.pools] == [24, 12, 6]
    assert wide.lda.fc_last.in_features == 2048 * 9 and wide.lda.fcs[0].in_features == 16 * 24 * 24
    plain = build_model("hyperiqa", ["quality"], backbone="resnet50", pretrained=False)
    assert plain.num_parameters() == 27_375_369 and plain.lda.last_grid == 1
    sem = build_model("sem_hyperiqa", ["quality"], backbone="resnet10t", pretrained=False, patch_size=448,
                      n_patches=1, patch_rate=2, n_scenes=3, scene_pool_width=1)
    with torch.no_grad():
        out = sem.image_outputs(torch.randn(1, 1, 3, 448, 448))
    assert out["quality"].shape == (1, 1) and out["logits"].shape == (1, 3)
    assert sem.hyper.hyper_in == 224 and out["q_patches"].shape == (1, 1, 1)  # 112 r channels of H classify
    with pytest.raises(ValueError, match="patch_rate"):
        build_model("hyperiqa", ["quality"], backbone="resnet10t", patch_rate=0)
