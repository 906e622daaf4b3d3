"""Pretrained backbones ahead of an offline job: ``iqalab weights fetch [profile]`` and ``iqalab weights status``.

Every experiment whose model has ``pretrained: true`` loads ImageNet weights from the hub through
:func:`iqalab.models.backbones.create_backbone` (timm). A cluster node often has no internet, so this module
lists the backbones a params profile needs (:func:`needed_backbones`), downloads each once into the standard
Hugging Face cache with ``timm.create_model(name, pretrained=True)`` (:func:`fetch_weights`), and reports what
that cache holds (:func:`weights_status`, over ``huggingface_hub``'s ``try_to_load_from_cache`` and
``scan_cache_dir``). A job then runs with ``HF_HUB_OFFLINE=1`` and timm reads the cached files.

Which backbones a model builds is not guessed from parameter names: each pretrained experiment's model is built
once with ``pretrained: false`` while ``timm.create_model`` calls are recorded, so defaults (SFIQA-Assessor's
variant backbones) and conditional branches (TuningIQA's human backbone only with ``use_hfe``) are counted
exactly. A ``pretrained:`` path to a local file needs nothing from the hub and is not listed; torchvision
(``tv:``) backbones and zero-shot ``pyiqa:<metric>`` weights use their own caches and are not covered.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from iqalab.config import Params

log = logging.getLogger(__name__)

#: Files timm looks for in a ``timm/<model>.<tag>`` hub repository, in its order of preference.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


class WeightsUnavailable(RuntimeError):
    """The hub cannot be reached (or refused a download): weights were not fetched."""


@contextlib.contextmanager
def _recording_timm() -> Iterator[list[str]]:
    """Record the model names passed to ``timm.create_model`` inside the block."""
    import timm

    names: list[str] = []
    original = timm.create_model

    def create_model(model_name: str, *args: Any, **kwargs: Any) -> Any:
        names.append(model_name)
        return original(model_name, *args, **kwargs)

    timm.create_model = create_model
    try:
        yield names
    finally:
        timm.create_model = original


def _build_without_weights(model_name: str, experiment: str, kwargs: dict[str, Any]) -> None:
    """Build the model with ``pretrained: false``, on the meta device where it allows (no memory, no init:
    seconds for the paper profile instead of minutes), else on the CPU."""
    import torch

    from iqalab.models import build_model

    build = dict(kwargs, pretrained=False)
    try:
        with torch.device("meta"):
            build_model(model_name, ["quality"], key_path=f"experiments.{experiment}.model", **build)
    except Exception:  # noqa: BLE001 - a model whose constructor runs real tensors: build it for real
        build_model(model_name, ["quality"], key_path=f"experiments.{experiment}.model", **build)


def needed_backbones(params: Params) -> dict[str, list[str]]:
    """``{timm backbone: [experiments]}`` for every experiment of ``params`` with ``pretrained: true``."""
    needed: dict[str, list[str]] = {}
    seen: dict[str, list[str]] = {}
    for name in params.experiments:
        kwargs = params.model_kwargs(name)
        if kwargs.get("pretrained") is not True:
            continue
        model_name = params.experiment(name).model.name
        key = repr((model_name, sorted(kwargs.items(), key=lambda kv: kv[0])))
        if key not in seen:
            with _recording_timm() as names:
                try:  # the attribute list does not change the backbones
                    _build_without_weights(model_name, name, kwargs)
                except Exception as exc:  # noqa: BLE001 - fall back to the declared backbone names
                    log.warning("experiments.%s: model not built (%s); listing its declared backbones", name, exc)
                    names[:] = [v for k, v in kwargs.items() if k.endswith("backbone") and isinstance(v, str)]
            seen[key] = list(dict.fromkeys(n for n in names if not n.startswith("tv:")))
        for backbone in seen[key]:
            needed.setdefault(backbone, []).append(name)
    return needed


def hub_repo(backbone: str) -> str | None:
    """The Hugging Face repository timm downloads ``backbone``'s default weights from (``timm/<name>.<tag>``)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(backbone)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


@dataclass(frozen=True)
class WeightStatus:
    """Whether one backbone's weights are in the local cache, and where."""

    backbone: str
    repo: str | None
    cached: Path | None
    experiments: tuple[str, ...]


def _hub_cache(cache_dir: str | Path | None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)


def cached_file(backbone: str, cache_dir: str | Path | None = None) -> Path | None:
    """The cached weights file of ``backbone`` (``try_to_load_from_cache``), or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    repo = hub_repo(backbone)
    if repo is None:
        return None
    for filename in HUB_FILES:
        found = try_to_load_from_cache(repo, filename, cache_dir=str(_hub_cache(cache_dir)))
        if isinstance(found, str):
            return Path(found)
    return None


def weights_status(needed: dict[str, list[str]], cache_dir: str | Path | None = None) -> list[WeightStatus]:
    """One :class:`WeightStatus` per needed backbone."""
    return [WeightStatus(b, hub_repo(b), cached_file(b, cache_dir), tuple(exps)) for b, exps in needed.items()]


def cache_listing(cache_dir: str | Path | None = None) -> list[tuple[str, int]]:
    """Every ``timm/*`` model repository in the hub cache with its size in bytes (``scan_cache_dir``)."""
    from huggingface_hub import scan_cache_dir

    path = _hub_cache(cache_dir)
    if not path.is_dir():
        return []
    info = scan_cache_dir(path)
    return sorted((r.repo_id, r.size_on_disk) for r in info.repos if r.repo_type == "model"
                  and r.repo_id.startswith("timm/"))


def status_text(rows: list[WeightStatus], cache_dir: str | Path | None = None) -> str:
    """The status as text: needed backbones (cached or not) and the hub cache's timm repositories."""
    lines = [f"hub cache: {_hub_cache(cache_dir)}"]
    if not rows:
        lines.append("no experiment of these params uses pretrained: true")
    for row in rows:
        state = f"cached  {row.cached}" if row.cached else "MISSING"
        lines.append(f"{row.backbone:<28} {state}  (for {', '.join(row.experiments)})")
    listing = cache_listing(cache_dir)
    lines.append(f"{len(listing)} timm repositories cached" + (":" if listing else ""))
    lines += [f"  {repo}  {size / 1e6:.1f} MB" for repo, size in listing]
    return "\n".join(lines)


def _endpoint_host() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def _reachable(timeout: float = 3.0) -> bool:
    import socket

    host, port = _endpoint_host()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_weights(backbones: list[str], cache_dir: str | Path | None = None) -> list[Path]:
    """Download each backbone's default pretrained weights into the hub cache (``cache_dir`` is where to look;
    downloads go to the default cache, ``$HF_HUB_CACHE`` / ``$HF_HOME``, as a later job reads it;``HF_HUB_OFFLINE`` lifted for the
    call); returns the cached files. Fails within seconds with :class:`WeightsUnavailable` when the hub is
    unreachable."""
    missing = [b for b in backbones if cached_file(b, cache_dir) is None]
    if missing and not _reachable():
        host, port = _endpoint_host()
        raise WeightsUnavailable(
            f"the model hub ({host}:{port}) is unreachable, so {len(missing)} backbone(s) cannot be downloaded: "
            f"{', '.join(missing)}. Run `iqalab weights fetch` on a machine with internet and copy its hub cache "
            f"({_hub_cache(cache_dir)}) here, or set `pretrained:` to local weight files in params.yaml.")
    if missing:
        import timm
        from huggingface_hub import constants

        saved = os.environ.pop("HF_HUB_OFFLINE", None), constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = False
        try:
            for backbone in missing:
                log.info("downloading %s (%s)", backbone, hub_repo(backbone))
                try:
                    timm.create_model(backbone, pretrained=True, num_classes=0)
                except Exception as exc:  # noqa: BLE001 - hub errors come in many types
                    raise WeightsUnavailable(f"{backbone}: download failed ({exc})") from exc
        finally:
            constants.HF_HUB_OFFLINE = saved[1]
            if saved[0] is not None:
                os.environ["HF_HUB_OFFLINE"] = saved[0]
    found = [cached_file(b, cache_dir) for b in backbones]
    absent = [b for b, f in zip(backbones, found, strict=True) if f is None]
    if absent:
        raise WeightsUnavailable(f"downloaded, but not in the hub cache (weights from another host?): {absent}")
    return [f for f in found if f is not None]


def profile_params(profile: str | None) -> Path | None:
    """``params/<profile>.yaml`` for a profile name, the path itself for a file, ``None`` for the default."""
    if profile is None:
        return None
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    from iqalab.io import project_root

    return project_root() / "params" / f"{profile}.yaml"
