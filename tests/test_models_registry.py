"""Every registered model, built from its ``smoke_params``: forward shapes, [0,1]-scale outputs, gradients,
state-dict round trip, a training step, and the declared contract (the optional hooks of ``IQAModel``, their
signatures and what each promises). A new model gets these tests by registering."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from iqalab.models import available, build_model, get_model_class
from iqalab.models.base import BATCH_KEYS, HOOKS, IQAModel, StepContext
from iqalab.models.registry import allowed_kwargs

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


def smoke(name: str, seed: int = 0) -> IQAModel:
    torch.manual_seed(seed)
    return build_model(name, ATTRS, **get_model_class(name).smoke_params)


def _size(name: str) -> int:
    return get_model_class(name).smoke_image_size


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
        assert ((score >= 0) & (score <= 1)).all(), f"{name}.{attr}: scores leave [0, 1]: {score.tolist()}"


@pytest.mark.parametrize("name", available())
def test_training_step_reaches_every_trainable_parameter(name):
    model = smoke(name)
    if not model.trainable:
        pytest.skip(f"{name} is not trained by gradient descent")
    model.train()
    size = _size(name)
    batch = make_batch(model, n=4 if "pairs" not in model.inputs else 2, size=size)
    if "pairs" in model.inputs:
        batch = {"a": batch, "b": make_batch(model, n=2, size=size, seed=1),
                 "p": torch.full((2, len(model.attributes)), 0.5)}  # the PairItems contract: [B, A]
        batch["p"][0, 0], batch["p"][1, -1] = 1.0, float("nan")
    loss = model.training_step(batch, StepContext(epoch=0, epochs=2))
    assert loss.dim() == 0 and math.isfinite(float(loss))
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    without = [n for n, p in params if p.grad is None]
    # heads of attributes absent from the batch may legitimately stay untouched; all others must learn
    assert len(without) <= len(params) * 0.05, f"{name}: parameters without gradient: {without[:8]}"


@pytest.mark.parametrize("name", available())
def test_state_dict_round_trip(name):
    """A twin built with another seed predicts differently until it loads the model's state dict, then the same
    (models whose weights come from a seed; the others' state is their fitted or shipped statistics)."""
    model = smoke(name, seed=0).eval()
    twin = smoke(name, seed=1).eval()
    batch = make_batch(model, size=_size(name))
    a = model.predict(batch)
    if model.trainable and any(p.requires_grad for p in model.parameters()):
        before = twin.predict(batch)
        assert any(not torch.allclose(a[attr], before[attr]) for attr in ATTRS), \
            f"{name}: a twin from another seed predicts the same, so the round trip below could not fail"
    twin.load_state_dict(model.state_dict())
    b = twin.predict(batch)
    for attr in ATTRS:
        torch.testing.assert_close(a[attr], b[attr])


# ------------------------------------------------------------------------------------------ the declared contract
def _own(cls: type, hook: str) -> bool:
    """``cls`` overrides ``hook`` (somewhere below ``IQAModel``)."""
    return any(hook in vars(klass) for klass in cls.__mro__[:cls.__mro__.index(IQAModel)])


def test_every_hook_is_declared_documented_and_listed_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = re.search(r"## Adding a model\n(.*?)\n## ", readme, re.S)
    assert section, "README has an 'Adding a model' section"
    for hook in HOOKS:
        assert hasattr(IQAModel, hook), hook
        member = inspect.getattr_static(IQAModel, hook)
        if callable(member) or isinstance(member, (classmethod, staticmethod, property)):
            assert inspect.getdoc(getattr(IQAModel, hook)), f"IQAModel.{hook} needs a docstring"
        assert re.search(rf"`{hook}[`(]", section.group(1)), f"README 'Adding a model' does not list `{hook}`"


@pytest.mark.parametrize("name", available())
def test_hooks_keep_the_declared_signatures(name):
    """An override takes the arguments the engine passes (a model cannot rename the contract away)."""
    cls = get_model_class(name)
    model = smoke(name)
    for hook in HOOKS:
        base = inspect.getattr_static(IQAModel, hook)
        if not callable(base) and not isinstance(base, (classmethod, staticmethod)):
            value, default = getattr(cls, hook), getattr(IQAModel, hook)
            assert isinstance(value, type(default)) or value is None or default is None, (hook, value)
            continue
        if _own(cls, hook):
            want = list(inspect.signature(getattr(IQAModel(ATTRS), hook)).parameters)
            got = list(inspect.signature(getattr(model, hook)).parameters)
            assert len(got) == len(want), f"{name}.{hook}{tuple(got)} does not match IQAModel.{hook}{tuple(want)}"


@pytest.mark.parametrize("name", available())
def test_hooks_do_what_they_promise(name, toy_dataset):
    cls = get_model_class(name)
    model = smoke(name).eval()
    batch = make_batch(model, n=3, size=_size(name))
    derived = cls.dataset_kwargs(toy_dataset)
    assert set(derived) <= set(allowed_kwargs(cls)), f"{name}.dataset_kwargs: not constructor arguments"
    sampler = model.make_train_sampler(np.linspace(0, 1, 20), 10, seed=0)
    if sampler is not None:
        batches = list(sampler)
        assert batches and all(0 <= i < 20 for b in batches for i in b)
    if model.has_pair_head:
        scores, emb = model.predict_with_embedding(batch)
        plain = model.predict(batch)
        for attr in ATTRS:
            torch.testing.assert_close(scores[attr], plain[attr])
        assert emb.shape[0] == 3 and emb.dim() == 2
        assert model.pair_logits(emb, emb.flip(0)).shape == (3, len(ATTRS))
    else:
        with pytest.raises(NotImplementedError, match="no pair head"):
            model.predict_with_embedding(batch)


def test_engine_uses_the_hooks_not_attribute_probing():
    """The engine and the stages call the contract; the old ``getattr`` probes are gone."""
    src = Path(__file__).resolve().parents[1] / "src" / "iqalab"
    probes = ("make_train_sampler", "trainable", "pair_logits", "smoke_params", "smoke_image_size")
    found = [f"{path.relative_to(src)}: {hook}" for path in src.rglob("*.py") for hook in probes
             if re.search(rf"getattr\([^)]*[\"']{hook}[\"']", path.read_text())]
    assert not found, found
    engine = (src / "train" / "engine.py").read_text()
    assert "allowed_kwargs" not in engine, "constructor arguments from the data come from dataset_kwargs"


def test_engine_builds_models_with_their_dataset_kwargs(project, toy_dataset):
    """``dataset_kwargs`` reach the constructor (FHIQA's ``scenes`` = the training split's scenes); params win."""
    import shutil

    from iqalab.config import parse_params
    from iqalab.train import engine

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    kwargs = {k: v for k, v in get_model_class("fhiqa").smoke_params.items() if k not in ("n_scenes", "scenes")}
    train = {"epochs": 1, "max_train_images": 4, "crop": None}
    split = toy_dataset.splits[toy_dataset.splits["split"] == "scene"]
    train_ids = split.loc[split["role"] == "train", "image_id"]
    images = toy_dataset.images.set_index("image_id")
    trained = sorted(images.loc[train_ids, "scene"].astype(str).unique())  # FHIQA's scene space (#27)
    everything = sorted(images["scene"].astype(str).unique())
    assert trained != everything  # the toy scene split holds scenes out
    params = parse_params(toy_params(derived={"dataset": "toy", "model": {"name": "fhiqa", **kwargs}, "train": train},
                                     given={"dataset": "toy", "model": {"name": "fhiqa", **kwargs,
                                                                        "scenes": everything}, "train": train}))
    for name, expected in (("derived", trained), ("given", everything)):
        engine.train_experiment(params, name, project.root, progress=False)
        ckpt = engine.load_checkpoint(project.root / "build" / "models" / name / "scene" / "best.pt")
        assert ckpt["config"]["model_kwargs"]["scenes"] == expected
        assert ckpt["config"]["model_kwargs"]["dataset_scenes"] == list(toy_dataset.scenes)
