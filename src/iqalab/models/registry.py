"""Model registry: ``@register("name")`` on an :class:`~iqalab.models.base.IQAModel` subclass.

``build_model(name, attributes, **kwargs)`` checks ``kwargs`` against the constructor's signature so a typo in
``params.yaml`` fails with the key's path and the allowed keys instead of being silently ignored.

Names with the ``pyiqa:`` prefix (``pyiqa:musiq``, ``pyiqa:liqe``, ...) are not registered one by one: they resolve
to a zero-shot wrapper made for that pyiqa metric (:func:`iqalab.models.zeroshot.pyiqa_model_class`), which imports
pyiqa only when the model is built. Building one raises :class:`iqalab.status.ModelUnavailable` when pyiqa or the
metric's local weights are missing. :func:`available` lists the registered models only.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from iqalab.models.base import IQAModel

_REGISTRY: dict[str, type[IQAModel]] = {}
T = TypeVar("T", bound="type[IQAModel]")


def register(name: str):  # noqa: ANN201 - decorator
    """Register a model class under ``name`` (the value of ``model.name`` in ``params.yaml``)."""

    def wrap(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def available() -> list[str]:
    """Names of all registered models."""
    import iqalab.models  # noqa: F401 - populates the registry

    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[IQAModel]:
    """The class registered under ``name`` (or the zero-shot wrapper of ``pyiqa:<metric>``); unknown names list
    the known ones."""
    import iqalab.models  # noqa: F401

    if str(name).startswith("pyiqa:"):
        from iqalab.models.zeroshot import pyiqa_model_class

        return pyiqa_model_class(name)
    if str(name).startswith("pyiqa_arch:"):  # trainable pyiqa architectures (iqalab.models.pyiqa_arch)
        from iqalab.models.pyiqa_arch import arch_model_class

        return arch_model_class(name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {sorted(_REGISTRY)}, or a zero-shot "
                       "'pyiqa:<metric>'")
    return _REGISTRY[name]


def allowed_kwargs(cls: type) -> dict[str, inspect.Parameter]:
    """Constructor keyword arguments of ``cls`` (minus ``self`` and ``attributes``)."""
    sig = inspect.signature(cls.__init__)
    return {k: p for k, p in sig.parameters.items() if k not in {"self", "attributes"}
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def default_kwargs(cls: type) -> dict[str, Any]:
    """The constructor keyword arguments of ``cls`` that have a default, with it: the value a setting left out of
    ``params.yaml`` runs with (model cards, the ablation tables' settings column)."""
    return {k: p.default for k, p in allowed_kwargs(cls).items() if p.default is not inspect.Parameter.empty}


def build_model(name: str, attributes: list[str], key_path: str = "model", **kwargs: Any) -> IQAModel:
    """Instantiate a registered model; unknown keyword arguments raise ``ValueError`` naming the key path."""
    cls = get_model_class(name)
    allowed = allowed_kwargs(cls)
    for key in kwargs:
        if key not in allowed:
            raise ValueError(f"{key_path}.{key}: unknown parameter for model {name!r}; allowed: {sorted(allowed)}")
    return cls(attributes=list(attributes), **kwargs)
