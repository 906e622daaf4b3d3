"""``patch_rate``: PIQ23's widened HyperIQA (``DXOMARK-Research/PIQ2023``, ``sem_hyperiqa_util.py``,
``HyperNet(16, 112r, 224r, 112r, 56r, 28r, 14r, 7r, r)`` for a ``224 r`` px patch; seed 001 Table I's HyperIQA-family
rows are r = 6, 1344 x 1).

The reference is ``tests/test_official.py``'s independent implementation of the original forward pass at ``rate``
r, which is that release's (the HyperIQA release's tensor names, widened): torchvision's ResNet-50 trunk, the LDA's 1x1 convs and *fixed* 7x7 average pools
of stride 7 (an 8r / 4r / 2r grid on stages 1-3, an r x r grid on stage 4, flattened channel-major), the three 1x1
convs to ``H`` (112r channels at 7r x 7r, not pooled), the weight generators read channel-major, biases and the
last layer from globally pooled ``H``, four FC + sigmoid layers and a linear FC. Here r = 2 (448 px patches) to keep
the CPU test short; every patch score must agree within 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from iqalab.models import build_model
from iqalab.official import hyperiqa_state_from_official

from .test_official import original_forward, random_official_state

R = 2


def test_patch_rate_builds_the_release_widened_network_and_computes_its_scores():
    state = random_official_state(rate=R, last_bias=3.0)  # a JOD-like score
    model = build_model("hyperiqa", ["quality"], backbone="resnet50", pretrained=False, patch_size=224 * R,
                        patch_rate=R)
    model.load_state_dict(hyperiqa_state_from_official(state))  # every tensor has its place, shapes included
    model.eval()
    x = torch.randn(2, 3, 224 * R, 224 * R, generator=torch.Generator().manual_seed(1))
    expected = original_forward(state, x, rate=R)
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
