"""The original HyperIQA's released weights in iqalab's port (:mod:`iqalab.official`).

The reference below is an independent implementation of the original forward pass (github.com/SSL92/hyperIQA,
``models.py``: ``HyperNet`` + ``TargetNet``) that reads the tensors by the original's names: torchvision's
ResNet-50 as the trunk (the original's ``ResNetBackbone`` has torchvision's layer names and layout), its LDA
heads (1x1 conv, 7x7 average pool of stride 7, flatten, linear), the three 1x1 convs to ``H``, the 3x3 weight
generators viewed channel-major as ``[out, in]``, the biases and the last layer from globally pooled ``H``, and
the target network (four FC + sigmoid, then a linear FC). A random state dict in the original's names goes
through both; every patch score must agree within 1e-4 (float32, ResNet-50 depth).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from iqalab.official import (
    OfficialHyperIQAScorer,
    OfficialWeightsError,
    crop_offsets,
    hyperiqa_from_official,
    official_resize,
    to_official_tensor,
)

LDA = {1: (256, 16, 8), 2: (512, 32, 4), 3: (1024, 64, 2)}  # stage: (in channels, LDA channels, pooled grid)
SIZES = (224, 112, 56, 28, 14)  # target_in, fc1..fc4


def random_official_state(seed: int = 0, rate: int = 1, last_bias: float = 42.0) -> dict[str, torch.Tensor]:
    """A state dict with the released ``HyperNet(16, 112, 224, 112, 56, 28, 14, 7)``'s names and shapes (the
    trunk from torchvision's ResNet-50 with random BatchNorm statistics, the rest random); with ``rate`` r, those of
    PIQ23's widened ``HyperNet(16, 112r, 224r, 112r, 56r, 28r, 14r, 7r, r)`` (the same names), the weights read by
    the widened layers scaled down by r to keep activations bounded."""
    import torchvision

    sizes, hyper_in, area = [v * rate for v in SIZES], 112 * rate, (7 * rate) ** 2

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
            value = torch.rand(value.shape, generator=g) * 0.5 + 0.1  # keep the residual stream bounded
        state[f"res.{key}"] = value.clone()

    def rnd(*shape: int, scale: float = 0.05) -> torch.Tensor:
        return torch.randn(shape, generator=g) * scale

    for k, (c, m, grid) in LDA.items():
        state[f"res.lda{k}_pool.0.weight"] = rnd(m, c, 1, 1, scale=0.1)
        state[f"res.lda{k}_fc.weight"] = rnd(16, m * (grid * rate) ** 2, scale=0.05 / rate)
        state[f"res.lda{k}_fc.bias"] = rnd(16)
    state["res.lda4_fc.weight"] = rnd(sizes[0] - 48, 2048 * rate * rate, scale=0.05 / rate)
    state["res.lda4_fc.bias"] = rnd(sizes[0] - 48)
    for idx, (cin, cout) in zip((0, 2, 4), ((2048, 1024), (1024, 512), (512, hyper_in))):
        state[f"conv1.{idx}.weight"] = rnd(cout, cin, 1, 1, scale=0.05)
        state[f"conv1.{idx}.bias"] = rnd(cout, scale=0.05)
    for k in range(1, 5):
        fin, fout = sizes[k - 1], sizes[k]
        state[f"fc{k}w_conv.weight"] = rnd(fin * fout // area, hyper_in, 3, 3, scale=0.1 / rate)
        state[f"fc{k}w_conv.bias"] = rnd(fin * fout // area, scale=0.1)
        state[f"fc{k}b_fc.weight"] = rnd(fout, hyper_in, scale=0.1)
        state[f"fc{k}b_fc.bias"] = rnd(fout, scale=0.1)
    state["fc5w_fc.weight"] = rnd(sizes[4], hyper_in, scale=0.5)
    state["fc5w_fc.bias"] = rnd(sizes[4], scale=0.5)
    state["fc5b_fc.weight"] = rnd(1, hyper_in, scale=0.5)
    state["fc5b_fc.bias"] = torch.tensor([last_bias])  # default: a score on KonIQ's 0-100 scale
    return state


@torch.no_grad()
def original_forward(state: dict[str, torch.Tensor], x: torch.Tensor, rate: int = 1) -> torch.Tensor:
    """The original's score of each 224 x 224 patch of ``x`` [N, 3, 224, 224], from the tensors by their names;
    with ``rate`` r, PIQ23's widened network on 224r px patches (its fixed 7x7 pools then keep 8r / 4r / 2r / r
    grids, ``H`` is 7r x 7r)."""
    import torchvision

    sizes = [v * rate for v in SIZES]

    trunk = torchvision.models.resnet50(weights=None)
    trunk.load_state_dict({k[4:]: v for k, v in state.items()
                           if k.startswith("res.") and not k.startswith("res.lda")}, strict=False)
    trunk.eval()
    h = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    ldas = []
    for k, layer in enumerate((trunk.layer1, trunk.layer2, trunk.layer3), start=1):
        h = layer(h)
        pooled = F.avg_pool2d(F.conv2d(h, state[f"res.lda{k}_pool.0.weight"]), 7, stride=7)
        assert pooled.shape[-1] == LDA[k][2] * rate
        ldas.append(F.linear(pooled.reshape(len(x), -1), state[f"res.lda{k}_fc.weight"], state[f"res.lda{k}_fc.bias"]))
    h = trunk.layer4(h)
    last = F.avg_pool2d(h, 7, stride=7)
    assert last.shape[-1] == rate
    ldas.append(F.linear(last.reshape(len(x), -1), state["res.lda4_fc.weight"], state["res.lda4_fc.bias"]))
    vec = torch.cat(ldas, dim=1)
    hyper = h
    for idx in (0, 2, 4):
        hyper = F.relu(F.conv2d(hyper, state[f"conv1.{idx}.weight"], state[f"conv1.{idx}.bias"]))
    assert hyper.shape[1:] == (112 * rate, 7 * rate, 7 * rate)
    pooled = hyper.mean(dim=(2, 3))
    scores = []
    for n in range(len(x)):
        q = vec[n]
        for k in range(1, 5):
            w = F.conv2d(hyper[n:n + 1], state[f"fc{k}w_conv.weight"], state[f"fc{k}w_conv.bias"], padding=1)
            w = w.reshape(sizes[k], sizes[k - 1])  # the original's .view(-1, f_k, f_{k-1}, 1, 1)
            b = F.linear(pooled[n], state[f"fc{k}b_fc.weight"], state[f"fc{k}b_fc.bias"])
            q = torch.sigmoid(w @ q + b)
        w5 = F.linear(pooled[n], state["fc5w_fc.weight"], state["fc5w_fc.bias"])
        b5 = F.linear(pooled[n], state["fc5b_fc.weight"], state["fc5b_fc.bias"])
        scores.append(w5 @ q + b5[0])
    return torch.stack(scores)


@pytest.fixture(scope="module")
def official_state():
    return random_official_state()


@pytest.fixture(scope="module")
def ported(official_state):
    return hyperiqa_from_official(official_state)


def test_released_weights_give_the_original_patch_scores(official_state, ported):
    """Every patch scores what the original HyperNet + TargetNet give with the same tensors (within 1e-4 on a
    score near 42), and the scores differ between patches (the weights reach the output)."""
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ref = original_forward(official_state, x)
    with torch.no_grad():
        ours = ported.patch_outputs(x[None])["q"].reshape(-1)
    assert ref.shape == ours.shape == (3,)
    assert float(ref.std()) > 1e-3
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)


def test_a_wrong_file_is_refused_with_the_tensors_named(official_state, tmp_path):
    bad = dict(official_state)
    bad["head.fc.weight"] = torch.zeros(2, 2)
    with pytest.raises(OfficialWeightsError, match=r"head\.fc\.weight"):
        hyperiqa_from_official(bad)
    short = {k: v for k, v in official_state.items() if not k.startswith("fc3b_fc")}
    with pytest.raises(OfficialWeightsError, match=r"missing keys.*bias_gens\.2"):
        hyperiqa_from_official(short)
    path = tmp_path / "koniq_pretrained.pkl"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(OfficialWeightsError, match="koniq_pretrained.pkl"):
        hyperiqa_from_official(path)


def test_weights_saved_from_dataparallel_load(official_state, ported):
    """``module.``-prefixed names (saved from ``nn.DataParallel``) give the same model."""
    model = hyperiqa_from_official({f"module.{k}": v for k, v in official_state.items()})
    for (name, a), b in zip(model.state_dict().items(), ported.state_dict().values()):
        assert torch.equal(a, b), name


def test_resize_and_crops_follow_the_original_protocol():
    """``Resize((512, 384))`` is height x width with PIL bilinear; crops are uniform over every position,
    both borders included, and refuse an image smaller than the crop."""
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    out = official_resize(image, (512, 384))
    assert out.shape == (512, 384, 3)
    expected = np.asarray(Image.fromarray(image).resize((384, 512), Image.BILINEAR))
    assert np.array_equal(out, expected)
    assert official_resize(image, None) is image
    offsets = crop_offsets(230, 226, 224, 4000, np.random.default_rng(1))
    assert set(offsets[:, 0]) == set(range(7)) and set(offsets[:, 1]) == set(range(3))
    with pytest.raises(ValueError, match="200 x 100 px is smaller than the 224 px crop"):
        crop_offsets(100, 200, 224, 1, np.random.default_rng(0))
    tensor = to_official_tensor(np.full((1, 4, 4, 3), 255, dtype=np.uint8))
    np.testing.assert_allclose(tensor[0, :, 0, 0].numpy(), (1 - np.array([0.485, 0.456, 0.406]))
                               / np.array([0.229, 0.224, 0.225]), rtol=1e-6)


def test_scorer_scores_the_mean_of_the_original_crops(official_state, tmp_path):
    """The scorer's score is the mean of the original forward over its crops of the resized image, the same on
    a second call, and different with another seed."""
    path = tmp_path / "koniq_pretrained.pkl"
    torch.save(official_state, path)
    scorer = OfficialHyperIQAScorer({"weights": str(path), "crops": 3})
    image = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    crops = scorer.crops_of(image)
    assert crops.shape == (3, 224, 224, 3)
    ref = float(original_forward(official_state, to_official_tensor(crops)).double().mean())
    score = scorer.score([image])["hyperiqa"]
    assert score.shape == (1,) and abs(score[0] - ref) < 1e-4
    assert scorer.score([image])["hyperiqa"][0] == score[0]
    other = OfficialHyperIQAScorer({"weights": str(path), "crops": 3, "seed": 1})
    assert not np.array_equal(other.crops_of(image), crops)
    with pytest.raises(ValueError, match="unknown options.*'crop'"):
        OfficialHyperIQAScorer({"weights": str(path), "crop": 3})
    with pytest.raises(ValueError, match="needs --option weights"):
        OfficialHyperIQAScorer({})


def test_score_cli_with_released_weights(official_state, tmp_path):
    """``iqalab score --model official:hyperiqa --option weights=...`` writes one ``hyperiqa`` column per file;
    an unknown ``official:`` name is refused with the known ones."""
    import pandas as pd
    from PIL import Image

    from iqalab.__main__ import main

    weights = tmp_path / "koniq_pretrained.pkl"
    torch.save(official_state, weights)
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)).save(folder / f"p{k}.png")
    out = tmp_path / "scores.csv"
    assert main(["-q", "score", "--model", "official:hyperiqa", "--option", f"weights={weights}",
                 "--option", "crops=2", "--out", str(out), str(folder)]) in (0, None)
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["path", "hyperiqa"] and len(frame) == 2
    assert frame["hyperiqa"].notna().all() and frame["hyperiqa"].nunique() == 2
    from iqalab.official import official_scorer

    with pytest.raises(ValueError, match="known: official:hyperiqa, official:dbcnn"):
        official_scorer("musiq", {})


def pyiqa_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original's tensors under the names of pyiqa's copy of the network (``pyiqa/archs/hypernet_arch.py``:
    ``base_model`` = timm ResNet-50, ``lda_modules[k]`` = conv, pool, flatten, linear, ``fc_w_modules[0..3]``
    convs and ``[4]`` pool, flatten, linear, ``fc_b_modules[k]`` pool, flatten, linear)."""
    out = {}
    for key, value in state.items():
        if key.startswith("res.lda"):
            k = int(key[7])
            if k == 4:
                out[key.replace("res.lda4_fc.", "lda_modules.3.2.")] = value
            elif "_pool.0." in key:
                out[f"lda_modules.{k - 1}.0.weight"] = value
            else:
                out[key.replace(f"res.lda{k}_fc.", f"lda_modules.{k - 1}.3.")] = value
        elif key.startswith("res."):
            out["base_model." + key[4:]] = value
        elif key.startswith("fc5w_fc."):
            out[key.replace("fc5w_fc.", "fc_w_modules.4.2.")] = value
        elif key.startswith("fc5b_fc."):
            out[key.replace("fc5b_fc.", "fc_b_modules.4.2.")] = value
        elif key.startswith("fc") and "w_conv." in key:
            out[key.replace(f"fc{key[2]}w_conv.", f"fc_w_modules.{int(key[2]) - 1}.")] = value
        elif key.startswith("fc") and "b_fc." in key:
            out[key.replace(f"fc{key[2]}b_fc.", f"fc_b_modules.{int(key[2]) - 1}.2.")] = value
        else:
            out[key] = value  # conv1.{0,2,4}: the same names in both
    return out


def test_pyiqa_copy_of_the_weights_loads_to_the_same_model(official_state, ported, tmp_path):
    """pyiqa's ``hyperiqa`` weights (other names for the same tensors, nested under ``params``) give the model the
    original's file gives, tensor for tensor."""
    renamed = pyiqa_names(official_state)
    assert len(renamed) == len(official_state) and not any(k.startswith(("res.", "fc1w")) for k in renamed)
    path = tmp_path / "HyperIQA_resnet50_koniq10k.pth"
    torch.save({"params": renamed}, path)
    model = hyperiqa_from_official(path)
    for (name, a), b in zip(model.state_dict().items(), ported.state_dict().values()):
        assert torch.equal(a, b), name
