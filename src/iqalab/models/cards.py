"""Model cards generated from the registry: inputs, paper, constructor parameters, parameter count and GMACs.

:func:`model_cards` builds every registered model (``iqalab models``) and :func:`write_model_cards` writes them
as ``docs/models.md`` (``iqalab models --write docs/models.md``). Nothing here is written by hand, so the cards
cannot drift from the code: a new ``@register``-ed model gets a card for free.

The counts are of each model's ``smoke_params`` build by default (the tiny configuration the CPU tests use, so a
card is built in seconds, offline): they show how the pieces of a model weigh against each other, not the size of
the paper's configuration. ``config="default"`` builds the constructor defaults instead (with ``pretrained`` off,
so nothing is downloaded). GMACs are those of one forward pass at 224 x 224 (batch 1), counted by
:func:`iqalab.models.profile.profile_model` (``torch.utils.flop_counter``: convolutions, matrix multiplies and
attention; not activations, normalisation or pooling). Models without a torch network (NIQE, BRISQUE: NumPy
features and a fitted regressor) have no countable multiply-accumulates: their GMACs are reported as
not applicable. The zero-shot ``pyiqa:<metric>`` models are not registered one by one and are not built here
(pyiqa is optional, its weights may be absent): the page describes them in one section of their own.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from iqalab.io import write_text
from iqalab.models import pyiqa_arch, zeroshot
from iqalab.models.registry import allowed_kwargs, available, build_model, default_kwargs, get_model_class

log = logging.getLogger(__name__)

CARD_IMAGE_SIZE = 224
COLUMNS = ["model", "class", "inputs", "params", "gmacs", "paper", "summary", "kwargs", "config"]


def _square(side: int) -> str:
    return f"{int(side)}×{int(side)}"


def items_input_size(model: Any, items: Any) -> str:
    """What ``model`` is given by ``items`` (:mod:`iqalab.data.loaders`), in TuningIQA Table 2's "Input Size"
    terms: ``Full res.`` (each whole image at its stored resolution: NIQE, BRISQUE, or the native store without a
    crop), ``S×S`` (the square cache or a crop of it / of the native store), or ``n × S×S patches`` (patches the
    loader cuts, :class:`~iqalab.data.loaders.PatchItems`, or the model cuts from its image, HyperIQA's
    ``patch_side``)."""
    from iqalab.data.cache import NativeStore
    from iqalab.data.loaders import NativeImageItems, PatchItems

    native = isinstance(items.cache, NativeStore)
    if isinstance(items, NativeImageItems):
        return "Full res."
    if isinstance(items, PatchItems):
        short = int(items.cache.shapes[items.rows].min()) if native and len(items.rows) else \
            (None if native else int(items.cache.size))
        sides = [(side if short is None else min(side, short), n) for side, n in items.scales]
        return " + ".join(f"{n} × {_square(side)} patches" for side, n in sides)
    if items.crop is None and native:
        return "Full res."
    side = int(items.crop) if items.crop is not None else int(items.cache.size)
    if callable(getattr(model, "patch_side", None)) and getattr(model, "n_patches", None):
        return f"{int(model.n_patches)} × {_square(model.patch_side(side, side))} patches of {_square(side)}"
    return _square(side)


def input_size(model: Any, train_items: Any | None, eval_items: Any | None) -> str:
    """The experiment's input size, recorded in the predictions JSON (``input_size``) and shown in TuningIQA
    Table 2's "Input Size" column: :func:`items_input_size` of the training items, followed by ``(test: ...)``
    when evaluation gives the model something else (e.g. a 224 px crop in training, the whole 256 px cache at
    test). ``train_items`` is ``None`` for a model that is not trained by gradient descent (NIQE, BRISQUE,
    zero-shot metrics): their input is what evaluation gives them."""
    train = items_input_size(model, train_items) if train_items is not None else None
    test = items_input_size(model, eval_items) if eval_items is not None else None
    if train is None or test is None or train == test:
        return train or test or "-"
    return f"{train} (test: {test})"


def _summary(cls: type) -> str:
    """First sentence-line of the class docstring."""
    doc = inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def constructor_defaults(cls: type) -> dict[str, Any]:
    """Constructor keyword arguments of ``cls`` with their defaults (``"required"`` when there is none)."""
    defaults = default_kwargs(cls)
    return {name: defaults.get(name, "required") for name in allowed_kwargs(cls)}


def card_kwargs(cls: type, config: Literal["smoke", "default"] = "smoke") -> dict[str, Any]:
    """The constructor kwargs a card is built with: ``smoke_params``, or ``{}`` (defaults) with any
    ``pretrained`` argument set to False so a card never downloads weights."""
    if config == "smoke":
        return dict(cls.smoke_params)
    if config != "default":
        raise ValueError(f"unknown card config {config!r}: expected 'smoke' or 'default'")
    return {"pretrained": False} if "pretrained" in allowed_kwargs(cls) else {}


def model_card(name: str, attributes: Sequence[str] = ("overall",), image_size: int = CARD_IMAGE_SIZE,
               gmacs: bool = True, config: Literal["smoke", "default"] = "smoke") -> dict[str, Any]:
    """One model's card: ``model``, ``class``, ``inputs`` (sorted, comma-separated batch keys), ``params``
    (parameter count, or ``"error: ..."``), ``gmacs`` (at ``image_size``^2; None when not computed or not
    applicable), ``paper``, ``summary`` (docstring first line), ``kwargs`` (constructor defaults) and ``config``
    (the kwargs it was built with)."""
    cls = get_model_class(name)
    kwargs = card_kwargs(cls, config)
    card: dict[str, Any] = {"model": name, "class": cls.__name__, "inputs": ",".join(sorted(cls.inputs)),
                            "params": None, "gmacs": None, "paper": cls.paper, "summary": _summary(cls),
                            "kwargs": constructor_defaults(cls), "config": kwargs}
    try:
        model = build_model(name, list(attributes), **kwargs)
    except Exception as exc:  # noqa: BLE001 - one broken model must not hide the others' cards
        card["params"] = f"error: {exc}"
        log.warning("model card %s: cannot build (%s)", name, exc)
        return card
    card["params"] = sum(p.numel() for p in model.parameters())
    if gmacs:
        from iqalab.models.profile import profile_model

        try:
            counted = profile_model(model, image_size=image_size, repeats=0)["gmacs"]
        except Exception as exc:  # noqa: BLE001
            log.warning("model card %s: GMACs not counted (%s)", name, exc)
        else:
            # no parameters and no counted operation: not a torch network (classical model), nothing to count
            card["gmacs"] = None if counted == 0 and card["params"] == 0 else counted
    return card


def model_cards(attributes: tuple[str, ...] = ("overall",), names: Sequence[str] | None = None,
                image_size: int = CARD_IMAGE_SIZE, gmacs: bool = True,
                config: Literal["smoke", "default"] = "smoke") -> pd.DataFrame:
    """One row per registered model (or per name of ``names``), columns :data:`COLUMNS` (see
    :func:`model_card`)."""
    rows = [model_card(name, attributes, image_size, gmacs, config) for name in (names or available())]
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt_params(value: Any) -> str:
    return f"{value / 1e6:.3f} M ({value:,})" if isinstance(value, int) else str(value)


def _fmt_gmacs(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def cards_markdown(cards: pd.DataFrame, image_size: int = CARD_IMAGE_SIZE, config: str = "smoke",
                   zero_shot: bool = True) -> str:
    """``docs/models.md``: an overview table and one card per model; with ``zero_shot`` also the row and section
    of the ``pyiqa:<metric>`` models (:func:`iqalab.models.zeroshot.card_markdown`; none is built)."""
    built = "its `smoke_params` (the tiny CPU-test configuration)" if config == "smoke" \
        else "its constructor defaults (`pretrained` off)"
    lines = ["# Models", "",
             "Generated from the registry by `iqalab models --write docs/models.md` "
             "(`iqalab.models.cards.write_model_cards`); do not edit by hand.", "",
             f"Each model is built with {built} and one `overall` output. Parameters count every tensor of the "
             f"model; GMACs are one forward pass at {image_size}x{image_size}, batch 1 "
             "(`torch.utils.flop_counter`: convolutions, matrix multiplies, attention), n/a for models without a "
             "torch network. The paper configurations are larger: see `params/paper.yaml` and "
             "`results/profile/` for their numbers.", "",
             "| model | inputs | params | GMACs | paper |", "|---|---|---:|---:|---|"]
    for card in cards.to_dict(orient="records"):
        lines.append(f"| [`{card['model']}`](#{card['model'].replace('_', '-')}) | {card['inputs']} | "
                     f"{_md(_fmt_params(card['params']))} | {_fmt_gmacs(card['gmacs'])} | {_md(card['paper'])} |")
    if zero_shot:
        lines += [zeroshot.card_overview_row(), pyiqa_arch.card_overview_row()]
    lines.append("")
    for card in cards.to_dict(orient="records"):
        lines += [f"## {card['model']}", "", f"`{card['class']}`: {card['summary']}", "",
                  f"- **Paper**: {card['paper']}",
                  f"- **Inputs** (batch keys): {', '.join(f'`{k}`' for k in card['inputs'].split(',') if k)}",
                  f"- **Parameters** ({config} build): {_fmt_params(card['params'])}",
                  f"- **GMACs** at {image_size}x{image_size} ({config} build): {_fmt_gmacs(card['gmacs'])}",
                  f"- **{config.capitalize()} build**: `{card['config']}`", "",
                  "| constructor argument | default |", "|---|---|"]
        lines += [f"| `{k}` | `{_md(repr(v))}` |" for k, v in card["kwargs"].items()]
        lines.append("")
    if zero_shot:
        lines += [*zeroshot.card_markdown(), "", *pyiqa_arch.card_markdown(), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_model_cards(path: str | Path = "docs/models.md", names: Sequence[str] | None = None,
                      image_size: int = CARD_IMAGE_SIZE, config: Literal["smoke", "default"] = "smoke") -> Path:
    """Build the cards of every registered model (or ``names``) and write them to ``path`` as Markdown."""
    path = Path(path)
    cards = model_cards(names=names, image_size=image_size, config=config)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, cards_markdown(cards, image_size, config, zero_shot=names is None))
    log.info("wrote %d model cards to %s", len(cards), path)
    return path
