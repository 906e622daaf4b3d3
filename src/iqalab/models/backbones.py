"""Backbone factory over timm (torchvision names with a ``tv:`` prefix).

``pretrained`` is ``False``, ``True`` (hub download) or a path to a local weights file. Offline, ``True`` fails
within seconds with a message saying how to pass a local file: ``HF_HUB_OFFLINE`` is set for the call when the
hub is unreachable, so huggingface_hub does not retry for ~45 s.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqalab.io import load_error_reason
from iqalab.models.release import unwrap_state

log = logging.getLogger(__name__)


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be had."""


def _hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_local_weights(model: nn.Module, path: str | Path, strict: bool = False) -> nn.Module:
    """Load a local ``.pth``/``.pt``/``.safetensors`` state dict into ``model`` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedUnavailable(f"pretrained weights file not found: {path}")
    state = _read_state(path)
    missing, unexpected = model.load_state_dict(state, strict=strict)
    if len(missing) > len(list(model.state_dict())) // 2:
        raise PretrainedUnavailable(
            f"{path}: weights do not fit this backbone ({len(missing)} missing keys, e.g. {missing[:3]})"
        )
    log.info("loaded %s (%d missing, %d unexpected keys)", path, len(missing), len(unexpected))
    return model


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a local weights file: safetensors, or ``torch.load(weights_only=True)`` unwrapped by
    :func:`iqalab.models.release.unwrap_state` (timm's ``model`` / ``state_dict_ema``, ``state_dict``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return unwrap_state(torch.load(path, map_location="cpu", weights_only=True))


def _check_weights_file(name: str, path: Path) -> None:
    """Refuse a weights file that does not hold most of ``name``'s weights (timm would load it non-strictly)."""
    import timm

    try:
        state = _read_state(path)
    except pickle.UnpicklingError as exc:  # torch's several-paragraph text, kept to the refused object
        raise PretrainedUnavailable(f"{path}: cannot be read as a weights file: {load_error_reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - damaged files, wrong formats
        raise PretrainedUnavailable(f"{path}: cannot be read as a weights file ({load_error_reason(exc)})") from None
    keys = {k.removeprefix("module.") for k in state}
    wanted = set(timm.create_model(name, pretrained=False, num_classes=0).state_dict())
    found = len(wanted & keys)
    if found < 0.5 * len(wanted):
        raise PretrainedUnavailable(
            f"{path}: holds {found} of the {len(wanted)} weights of backbone {name!r}; is it the right file?"
        )


def pooled_dim(model: nn.Module, size: int = 64) -> int:
    """Width of a backbone's pooled output, measured with a dummy forward (timm's ``num_features`` is the
    pre-head width for models such as MobileNetV3, whose ``conv_head`` widens it)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    return int(out.shape[-1])


def create_backbone(name: str, pretrained: bool | str | Path = False, features_only: bool = False,
                    out_indices: tuple[int, ...] | None = None, **kwargs: Any) -> nn.Module:
    """Create a timm (or ``tv:<name>`` torchvision) model without its classifier.

    With ``features_only`` the module returns a list of feature maps and exposes ``feature_info.channels()``;
    otherwise it returns pooled features and exposes ``num_features`` (measured: the true pooled width).
    """
    use_hub = pretrained is True
    local = None if isinstance(pretrained, bool) else Path(pretrained)
    if use_hub and not _hub_reachable():
        raise PretrainedUnavailable(
            f"pretrained=true for backbone {name!r} needs the model hub, which is unreachable. Download the "
            f"weights elsewhere and set `pretrained: /path/to/{name}.pth` (or .safetensors) in params.yaml, "
            f"or use `pretrained: false`."
        )
    if name.startswith("tv:"):
        return _torchvision_backbone(name[3:], use_hub, local, features_only)
    import timm

    opts: dict[str, Any] = dict(kwargs)
    if features_only:
        opts["features_only"] = True
        if out_indices is not None:
            opts["out_indices"] = out_indices
    else:
        opts["num_classes"] = 0
    if local is not None:
        if not local.is_file():
            raise PretrainedUnavailable(f"pretrained weights file not found: {local}")
        _check_weights_file(name, local)
        # timm loads the file itself, so its key remapping (e.g. features_only stem names) and classifier
        # filtering apply exactly as for hub weights
        opts["pretrained_cfg_overlay"] = {"file": str(local)}
    try:
        model = timm.create_model(name, pretrained=use_hub or local is not None, **opts)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ValueError(f"unknown backbone {name!r} (timm has no such model)") from exc
        raise
    except Exception as exc:  # hub and file errors come in many types
        if local is not None:
            raise PretrainedUnavailable(f"{local}: cannot load as weights for backbone {name!r} ({exc})") from exc
        if use_hub:
            raise PretrainedUnavailable(f"could not download weights for {name!r}: {exc}. Pass a local file.") from exc
        raise
    if not features_only:
        model.num_features = pooled_dim(model)
    return model


def _torchvision_backbone(name: str, use_hub: bool, local: Path | None, features_only: bool) -> nn.Module:
    import torchvision

    weights = "DEFAULT" if use_hub else None
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except Exception as exc:
        if use_hub:
            raise PretrainedUnavailable(f"could not download torchvision weights for {name!r}: {exc}") from exc
        raise
    if local is not None:
        load_local_weights(model, local)
    if features_only:
        raise ValueError("features_only is only supported for timm backbones")
    for attr in ("fc", "classifier", "heads"):
        head = getattr(model, attr, None)
        if head is not None:
            in_features = _head_in_features(head)
            setattr(model, attr, nn.Identity())
            model.num_features = in_features  # type: ignore[assignment]
            break
    return model


def _head_in_features(head: nn.Module) -> int:
    if isinstance(head, nn.Linear):
        return head.in_features
    for module in head.modules():
        if isinstance(module, nn.Linear):
            return module.in_features
    raise ValueError("cannot find the classifier's input size")
