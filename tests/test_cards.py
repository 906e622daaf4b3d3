"""Model cards from the registry: inputs, paper, parameter count and GMACs of each model, and docs/models.md."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from iqalab.models import registry
from iqalab.models.base import IQAModel
from iqalab.models.cards import cards_markdown, model_card, model_cards, write_model_cards
from iqalab.models.registry import available, build_model, get_model_class

NAMES = ["backbone_mlp", "niqe", "tuningiqa"]


@pytest.fixture(scope="module")
def cards():
    return model_cards(names=NAMES, image_size=64)


def test_cards_describe_each_model(cards):
    assert cards["model"].tolist() == NAMES
    for card in cards.to_dict(orient="records"):
        cls = get_model_class(card["model"])
        assert card["inputs"].split(",") == sorted(cls.inputs)
        assert card["paper"] == cls.paper and card["class"] == cls.__name__
        assert card["config"] == dict(getattr(cls, "smoke_params", {}))
        torch.manual_seed(0)
        fresh = build_model(card["model"], ["overall"], **card["config"])
        assert card["params"] == sum(p.numel() for p in fresh.parameters())


def test_gmacs_counted_for_networks_not_for_classical_models(cards):
    by_name = cards.set_index("model")
    assert by_name.loc["backbone_mlp", "gmacs"] > 0 and by_name.loc["tuningiqa", "gmacs"] > 0
    assert by_name.loc["niqe", "params"] == 0 and pd.isna(by_name.loc["niqe", "gmacs"])


def test_gmacs_grow_with_the_image_area(cards):
    small = cards.set_index("model").loc["backbone_mlp", "gmacs"]
    large = model_card("backbone_mlp", image_size=128)["gmacs"]
    assert 3.0 < large / small < 5.0, "a convolutional backbone's MACs scale with the number of pixels"


def test_default_config_builds_without_downloading():
    smoke = model_card("backbone_mlp", gmacs=False)
    default = model_card("backbone_mlp", gmacs=False, config="default")
    assert default["config"] == {"pretrained": False}
    assert isinstance(default["params"], int) and default["params"] > 0
    assert default["kwargs"] == smoke["kwargs"]
    with pytest.raises(ValueError, match="smoke"):
        model_card("backbone_mlp", config="paper")


def test_a_broken_model_gets_an_error_card(monkeypatch):
    class Broken(IQAModel):
        """Fails on construction."""

        inputs = frozenset({"image"})
        paper = "nobody"

        def __init__(self, attributes: list[str], width: int = 3) -> None:
            super().__init__(attributes)
            raise RuntimeError("no weights here")

        def forward(self, batch):  # pragma: no cover
            return {}

    monkeypatch.setitem(registry._REGISTRY, "broken_for_test", Broken)
    card = model_card("broken_for_test")
    assert card["params"].startswith("error:") and "no weights here" in card["params"]
    assert card["kwargs"] == {"width": 3} and card["gmacs"] is None


def test_every_registered_model_gets_a_card(monkeypatch):
    from iqalab.models import cards as cards_module

    monkeypatch.setattr(cards_module, "model_card", lambda name, *args: {"model": name})
    assert model_cards()["model"].tolist() == available()


def test_markdown_has_a_row_and_a_card_per_model(cards):
    text = cards_markdown(cards, image_size=64)
    for name in NAMES:
        assert f"| [`{name}`](#{name.replace('_', '-')}) |" in text
        assert f"\n## {name}\n" in text
    assert "| `backbone` | `'resnet18'` |" in text, "constructor defaults are listed"
    assert text.count("| n/a |") == 1, "only NIQE has no countable GMACs"


def test_write_model_cards_writes_markdown(tmp_path, cards):
    path = write_model_cards(tmp_path / "docs" / "models.md", names=["backbone_mlp"], image_size=64)
    text = path.read_text()
    gmacs = cards.set_index("model").loc["backbone_mlp", "gmacs"]
    assert text.startswith("# Models") and f"| {gmacs:.3f} |" in text and "64x64" in text


def test_input_size_names_what_the_loader_gives_each_model(toy_dataset):
    """TuningIQA Table 2's "Input Size" (#27): whole native images are ``Full res.``, a crop its side, the loader's
    patches their count and side (clipped to the image), patches a model cuts itself their side in the image."""
    from iqalab.data.cache import ImageCache
    from iqalab.data.loaders import ImageItems, NativeImageItems, PatchItems
    from iqalab.models.cards import input_size

    ids = list(toy_dataset.images.image_id[:4])
    cache = ImageCache(toy_dataset, 64)
    common = {"ds": toy_dataset, "ids": ids, "inputs": {"image"}}
    plain = build_model("backbone_mlp", ["overall"], **get_model_class("backbone_mlp").smoke_params)
    crop = ImageItems(cache=cache, train=True, crop=48, **common)
    whole = ImageItems(cache=cache, train=False, **common)
    assert input_size(plain, crop, whole) == "48×48 (test: 64×64)"
    assert input_size(plain, crop, ImageItems(cache=cache, train=False, eval_crop=48, **common)) == "48×48"
    assert input_size(plain, None, NativeImageItems(cache=cache, **common)) == "Full res."
    assert input_size(plain, ImageItems(cache=cache.native, train=True, **common), None) == "Full res."
    patches = PatchItems(cache=cache.native, train=True, scales=[(32, 5), (500, 1)], **common)
    assert input_size(plain, patches, None) == "5 × 32×32 patches + 1 × 72×72 patches"  # toy images: 72 px
    hyper = build_model("hyperiqa", ["overall"], **get_model_class("hyperiqa").smoke_params)
    side = hyper.patch_side(64, 64)
    assert input_size(hyper, whole, whole) == f"{hyper.n_patches} × {side}×{side} patches of 64×64"


def test_defaults_come_from_one_registry_helper():
    """Model cards write "required" where a constructor argument has no default; the ablation tables' settings
    column reads only the real defaults (``registry.default_kwargs``, the one helper both use)."""
    from iqalab.models.cards import constructor_defaults
    from iqalab.models.registry import default_kwargs
    from iqalab.paper_tables.common import model_defaults

    class Needs(IQAModel):
        """A constructor argument without a default."""

        inputs = frozenset({"image"})
        paper = "nobody"

        def __init__(self, attributes: list[str], depth: int, width: int = 3, *args, **kwargs) -> None:
            super().__init__(attributes)

        def forward(self, batch):  # pragma: no cover
            return {}

    assert default_kwargs(Needs) == {"width": 3}
    assert constructor_defaults(Needs) == {"depth": "required", "width": 3}
    assert model_defaults("dbcnn") == default_kwargs(registry.get_model_class("dbcnn"))
    assert "backbone" in model_defaults("dbcnn") and model_defaults("no_such_model") == {}


def test_the_committed_model_cards_are_what_the_registry_generates(tmp_path):
    """``docs/models.md`` is generated (``iqalab models --write docs/models.md``), not edited: regenerating it
    from the registry gives the committed file byte for byte, so a changed model, default or count cannot leave
    the page stale (regenerate it with that command when this fails)."""
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "docs" / "models.md"
    fresh = write_model_cards(tmp_path / "models.md")
    if fresh.read_text() != committed.read_text():
        import difflib

        diff = difflib.unified_diff(committed.read_text().splitlines(), fresh.read_text().splitlines(),
                                    "docs/models.md", "regenerated", lineterm="", n=0)
        pytest.fail("docs/models.md is stale; run `iqalab models --write docs/models.md`:\n" +
                    "\n".join(list(diff)[:40]))
