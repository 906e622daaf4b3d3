"""The released DBCNN's weights in iqalab's port (:mod:`iqalab.official`, ``official:dbcnn``).

The reference is an independent implementation of the release's forward pass (github.com/zwx8981/DBCNN-PyTorch,
``DBCNN.py``; pyiqa's ``dbcnn_arch.py`` is the same) reading the tensors by the release's names: torchvision's
VGG-16 ``features`` less the last max pooling (``features1``), the S-CNN's nine conv - BN - ReLU blocks
(``features2``), ``F.upsample_bilinear`` of the S-CNN map to the VGG map's size (bilinear, corners aligned),
the bilinear product averaged over locations, ``sqrt(X + 1e-8)``, l2 normalisation and ``fc``. A random state
dict in those names goes through both.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from iqalab.models.dbcnn import SCNN_CHANNELS, SCNN_STRIDES
from iqalab.official import OfficialDBCNNScorer, OfficialWeightsError, dbcnn_from_official, to_official_tensor


def release_scnn() -> nn.Sequential:
    """The S-CNN's ``features`` as ``SCNN.py`` builds it: conv 3x3 (padding 1) - BN - ReLU per block."""
    layers: list[nn.Module] = []
    previous = 3
    for width, stride in zip(SCNN_CHANNELS, SCNN_STRIDES):
        layers += [nn.Conv2d(previous, width, 3, stride, 1), nn.BatchNorm2d(width), nn.ReLU(True)]
        previous = width
    return nn.Sequential(*layers)


def random_release_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the released DBCNN's names and shapes (random VGG-16 and S-CNN, random BatchNorm
    statistics, an ``fc`` whose bias puts the scores on a 0-100 scale)."""
    import torchvision

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    vgg = torchvision.models.vgg16(weights=None).features
    state = {f"features1.{k}": v.clone() for k, v in vgg.state_dict().items()}
    for key, value in release_scnn().state_dict().items():
        if key.endswith("running_mean"):
            value = torch.randn(value.shape, generator=g) * 0.1
        elif key.endswith("running_var"):
            value = torch.rand(value.shape, generator=g) + 0.5
        state[f"features2.{key}"] = value.clone()
    state["fc.weight"] = torch.randn(1, 512 * 128, generator=g) * 20.0
    state["fc.bias"] = torch.tensor([50.0])
    return state


@torch.no_grad()
def release_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The release's ``DBCNN.forward`` on ``x`` [N, 3, H, W] (ImageNet-normalised), from the tensors by name."""
    import torchvision

    vgg = nn.Sequential(*list(torchvision.models.vgg16(weights=None).features.children())[:-1])
    vgg.load_state_dict({k[len("features1."):]: v for k, v in state.items() if k.startswith("features1.")})
    scnn = release_scnn()
    scnn.load_state_dict({k[len("features2."):]: v for k, v in state.items() if k.startswith("features2.")})
    vgg.eval(), scnn.eval()
    x1, x2 = vgg(x), scnn(x)
    n, _, h, w = x1.shape
    if x2.shape[-2:] != (h, w):
        x2 = F.interpolate(x2, (h, w), mode="bilinear", align_corners=True)  # F.upsample_bilinear
    z = torch.bmm(x1.view(n, 512, h * w), x2.view(n, 128, h * w).transpose(1, 2)) / (h * w)
    z = F.normalize(torch.sqrt(z.view(n, 512 * 128) + 1e-8))
    return F.linear(z, state["fc.weight"], state["fc.bias"])[:, 0]


@pytest.fixture(scope="module")
def release_state():
    return random_release_state()


def _image(seed: int, height: int = 100, width: int = 130) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_released_weights_give_the_release_score(release_state):
    """The VGG map (100 x 130 -> 6 x 8) and the S-CNN map (7 x 9) differ, so the aligned-corner resize counts; a
    zero-product feature gets the release's sqrt(1e-8). Equal within 1e-4 on a 0-100 scale (float32)."""
    model = dbcnn_from_official(release_state)
    x = to_official_tensor(np.stack([_image(0), _image(1)]))
    expected = release_forward(release_state, x)
    with torch.no_grad():
        got = model({"image": x})["quality"]
    assert expected.abs().max() > 1.0 and (expected[0] - expected[1]).abs() > 1e-3  # not a constant
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_dataparallel_and_pyiqa_files_load_and_score(release_state, tmp_path):
    """``module.`` names (DBCNN.py saves from DataParallel) and pyiqa's ``params`` wrapper give the same scores;
    the scorer scores each whole image at its size."""
    release = tmp_path / "net_params_best.pkl"
    torch.save({f"module.{k}": v for k, v in release_state.items()}, release)
    pyiqa = tmp_path / "DBCNN_pyiqa.pth"
    torch.save({"params": release_state}, pyiqa)
    images = [_image(2), _image(3, 90, 70)]
    expected = [float(release_forward(release_state, to_official_tensor(im[None]))[0]) for im in images]
    for path in (release, pyiqa):
        scores = OfficialDBCNNScorer({"weights": str(path)}, device="cpu").score(images)["dbcnn"]
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-4)


def test_a_wrong_file_is_refused_with_the_tensors_named(release_state, tmp_path):
    bad = dict(release_state)
    bad["classifier.weight"] = torch.zeros(39, 256)
    with pytest.raises(OfficialWeightsError, match=r"classifier\.weight"):
        dbcnn_from_official(bad)
    short = {k: v for k, v in release_state.items() if k != "fc.bias"}
    with pytest.raises(OfficialWeightsError, match=r"missing keys.*heads\.quality\.bias"):
        dbcnn_from_official(short)
    path = tmp_path / "net_params_best.pkl"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(OfficialWeightsError, match="net_params_best.pkl"):
        dbcnn_from_official(path)
    with pytest.raises(ValueError, match="needs --option weights"):
        OfficialDBCNNScorer({})
    with pytest.raises(ValueError, match="unknown options"):
        OfficialDBCNNScorer({"weights": str(path), "crops": 3})


def test_score_cli_with_released_dbcnn_weights(release_state, tmp_path):
    import pandas as pd
    from PIL import Image

    from iqalab.__main__ import main

    weights = tmp_path / "net_params_best.pkl"
    torch.save(release_state, weights)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(2):
        Image.fromarray(_image(10 + k, 80, 96)).save(folder / f"p{k}.png")
    out = tmp_path / "scores.csv"
    assert main(["-q", "score", "--model", "official:dbcnn", "--option", f"weights={weights}", "--out", str(out),
                 str(folder)]) in (0, None)
    frame = pd.read_csv(out).sort_values("path")
    assert list(frame.columns) == ["path", "dbcnn"] and len(frame) == 2
    expected = [float(release_forward(release_state, to_official_tensor(_image(10 + k, 80, 96)[None]))[0])
                for k in range(2)]
    np.testing.assert_allclose(frame["dbcnn"].to_numpy(), expected, rtol=0, atol=1e-3)


def test_resize_option_is_read_alike_by_both_official_scorers():
    from iqalab.official import resize_option

    opts = {"resize": [384, 512], "weights": "w"}
    assert resize_option(opts, None) == (384, 512) and opts == {"weights": "w"}
    assert resize_option({}, [512, 384]) == (512, 384) and resize_option({"resize": None}, [512, 384]) is None
    for bad in ([512], [0, 384]):
        with pytest.raises(ValueError, match=r"--option resize=.*\[height, width\]"):
            resize_option({"resize": bad}, None)
