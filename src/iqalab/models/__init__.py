"""Models: a registry (:mod:`.registry`), the shared base (:mod:`.base`), backbones, and one module per paper.

Importing this package imports every model module so that the registry is complete.
"""

from iqalab.models.registry import available, build_model, get_model_class, register

__all__ = ["available", "build_model", "get_model_class", "register"]


def _import_all() -> None:
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in {"registry", "base", "backbones"}:
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()
