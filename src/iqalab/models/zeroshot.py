"""Zero-shot deep IQA metrics through pyiqa: the ``pyiqa:<metric>`` models (``pyiqa:musiq``, ``pyiqa:liqe``, ...).

C. Chen, J. Mo, "IQA-PyTorch: PyTorch Toolbox for Image Quality Assessment" (``pyiqa``,
https://github.com/chaofengc/IQA-PyTorch), ships the published weights of many no-reference metrics. The seed
papers compare against several of them: TuningIQA (seed 000) uses LIQE and MUSIQ as the opponents of its gMAD
study and of the camera-tuning study (Sec. "Application for Camera Tuning"). Here they are *zero-shot* rows:
the metric's published weights score the test images as they are, nothing is fitted on the training split.

Contract (how a ``pyiqa:<metric>`` model behaves in the registry):

- ``get_model_class("pyiqa:<metric>")`` returns a subclass of :class:`PyIQAModel` made for that metric (cached),
  so ``params.yaml`` validation, checkpoints (``model_name``) and :func:`iqalab.models.build_model` treat it like
  any other model. pyiqa is **not** imported when :mod:`iqalab.models` is imported, only when a model is built.
- Non-trainable (``trainable = False``, no ``fit``): the engine saves a checkpoint holding only the config (the
  pyiqa network is kept out of the state dict, so ``best.pt`` is a few kB and the weights stay in pyiqa's cache),
  then predicts the val and test images.
- Prediction undoes the loader's ImageNet normalisation (``iqalab.data.loaders``) to RGB in [0, 1], calls the
  metric in float32 (autocast off) and gives the same score to every attribute (these metrics predict one
  overall quality). Scores are mapped so that higher is better and, when the metric's score range is known
  (pyiqa's ``score_range``, e.g. ``"~0, ~100"`` for MUSIQ, or the ``score_range`` argument), linearly onto
  [0, 1]: ``s' = (s - lo) / (hi - lo)``, and ``1 - s'`` for metrics where lower is better
  (pyiqa's ``lower_better``). Without a range, lower-is-better scores are negated (``s' = -s``). The maps are
  monotone, so SRCC/KRCC are the metric's own and PLCC after the logistic map is unaffected; raw RMSE/MAE of a
  zero-shot row are not meaningful.
- **Never downloads.** The metric runs only when its weights are already on disk: pyiqa's cache
  (``$TORCH_HOME/hub/pyiqa``, by default ``~/.cache/torch/hub/pyiqa``; CLIP-based metrics also read
  ``~/.cache/clip``) or the ``weights`` argument (a local file, passed to pyiqa as ``pretrained_model_path``).
  Building the metric runs inside :func:`no_downloads`, which blocks every download path (``torch.hub``,
  pyiqa's downloader, ``urllib`` and socket connections). A blocked download, a missing ``weights`` file or a
  hub offline error raises :class:`~iqalab.status.ModelUnavailable` (``"weights unavailable: <reason>"``), and a
  missing pyiqa raises it with ``"pyiqa not installed"``. The training stage catches it and records the status;
  the tables then show the row as unavailable (see :mod:`iqalab.status`).

Putting weights in the cache offline: on a machine with internet, ``pip install 'iqalab[pyiqa]'`` and run
``python -c "import pyiqa; pyiqa.create_metric('musiq')"`` once (or download the files listed in pyiqa's
``default_model_urls`` of the metric's ``*_arch.py``), then copy ``~/.cache/torch/hub/pyiqa`` (and
``~/.cache/clip`` for LIQE / CLIP-IQA) to the same place on the offline machine, or point ``weights`` at the file.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from iqalab.data.loaders import denormalise_batch
from iqalab.models.base import IQAModel
from iqalab.status import PYIQA_MISSING, ModelUnavailable

log = logging.getLogger(__name__)

PREFIX = "pyiqa:"
PYIQA_PAPER = ("C. Chen, J. Mo, IQA-PyTorch: PyTorch Toolbox for Image Quality Assessment (pyiqa), "
               "https://github.com/chaofengc/IQA-PyTorch")
#: metric name (or the prefix of its variants, e.g. ``musiq-ava``) -> the paper of the method
METRIC_PAPERS: dict[str, str] = {
    "musiq": "J. Ke, Q. Wang, Y. Wang, P. Milanfar, F. Yang, 'MUSIQ: Multi-scale Image Quality Transformer', "
             "ICCV 2021",
    "liqe": "W. Zhang, G. Zhai, Y. Wei, X. Yang, K. Ma, 'Blind Image Quality Assessment via Vision-Language "
            "Correspondence: A Multitask Learning Perspective' (LIQE), CVPR 2023",
    "clipiqa": "J. Wang, K. C. K. Chan, C. C. Loy, 'Exploring CLIP for Assessing the Look and Feel of Images' "
               "(CLIP-IQA, CLIP-IQA+), AAAI 2023",
    "topiq": "C. Chen, J. Mo, J. Hou, H. Wu, L. Liao, W. Sun, Q. Yan, W. Lin, 'TOPIQ: A Top-down Approach from "
             "Semantics to Distortions for Image Quality Assessment', IEEE TIP 2024",
    "dbcnn": "W. Zhang, K. Ma, J. Yan, D. Deng, Z. Wang, 'Blind Image Quality Assessment Using a Deep Bilinear "
             "Convolutional Neural Network', IEEE TCSVT 2020",
    "hyperiqa": "S. Su et al., 'Blindly Assess Image Quality in the Wild Guided by a Self-Adaptive Hyper "
                "Network', CVPR 2020",
    "maniqa": "S. Yang et al., 'MANIQA: Multi-dimension Attention Network for No-Reference Image Quality "
              "Assessment', CVPR Workshops 2022",
    "nima": "H. Talebi, P. Milanfar, 'NIMA: Neural Image Assessment', IEEE TIP 2018",
    "paq2piq": "Z. Ying et al., 'From Patches to Pictures (PaQ-2-PiQ): Mapping the Perceptual Space of Picture "
               "Quality', CVPR 2020",
    "arniqa": "L. Agnolucci, L. Galteri, M. Bertini, A. Del Bimbo, 'ARNIQA: Learning Distortion Manifold for "
              "Image Quality Assessment', WACV 2024",
    "qalign": "H. Wu et al., 'Q-Align: Teaching LMMs for Visual Scoring via Discrete Text-Defined Levels', "
              "ICML 2024",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+\-.]*$")
_CLASSES: dict[str, type[PyIQAModel]] = {}


class DownloadBlocked(ConnectionError):
    """Raised in place of a network access while a pyiqa metric is built (see :func:`no_downloads`)."""


def is_pyiqa_name(name: str) -> bool:
    """Whether ``name`` is a ``pyiqa:<metric>`` model name."""
    return str(name).startswith(PREFIX)


def metric_paper(metric: str) -> str:
    """The paper of ``metric`` (longest known prefix of its name), followed by the pyiqa citation."""
    key = next((k for k in sorted(METRIC_PAPERS, key=len, reverse=True) if metric.lower().startswith(k)), None)
    method = METRIC_PAPERS[key] if key else f"pyiqa metric {metric!r} (see the pyiqa model card)"
    return f"{method}; zero-shot through {PYIQA_PAPER}"


def pyiqa_cache_dir() -> Path:
    """pyiqa's weights cache: ``<torch hub dir>/pyiqa`` (``$TORCH_HOME/hub/pyiqa``, by default
    ``~/.cache/torch/hub/pyiqa``), the folder ``pyiqa.utils.download_util.DEFAULT_CACHE_DIR`` names."""
    module = sys.modules.get("pyiqa.utils.download_util")
    folder = getattr(module, "DEFAULT_CACHE_DIR", None)
    return Path(folder) if folder else Path(torch.hub.get_dir()) / "pyiqa"


def _target(what: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if what == "socket":
        address = args[1] if len(args) > 1 else kwargs.get("address")
        return f"connection to {address}"
    if what == "create_connection":
        return f"connection to {args[0] if args else kwargs.get('address')}"
    url = args[0] if args else kwargs.get("url")
    url = getattr(url, "full_url", url)
    dst = (args[1] if len(args) > 1 else kwargs.get("dst")) if what == "download" else None
    return f"download of {url}" + (f" to {dst}" if dst else "")


@contextlib.contextmanager
def no_downloads() -> Iterator[list[str]]:
    """Block every network path while the block runs; yields the list of blocked attempts.

    Patched: ``torch.hub.download_url_to_file`` (torchvision and ``torch.hub`` weights), pyiqa's own
    ``download_util.download_url_to_file`` (its ``load_file_from_url``), ``urllib.request.urlopen`` (pyiqa's CLIP
    loader) and ``socket.socket.connect`` / ``connect_ex`` / ``socket.create_connection`` (anything else, e.g.
    the Hugging Face hub, which then falls back to its local cache). Each raises :class:`DownloadBlocked`. The
    originals are restored on exit.
    """
    attempts: list[str] = []

    def blocker(what: str) -> Any:
        def blocked(*args: Any, **kwargs: Any) -> Any:
            target = _target(what, args, kwargs)
            attempts.append(target)
            raise DownloadBlocked(f"iqalab blocks network access while building a pyiqa metric: {target}")

        return blocked

    targets: list[tuple[Any, str, str]] = [(torch.hub, "download_url_to_file", "download"),
                                           (urllib.request, "urlopen", "urlopen"),
                                           (socket.socket, "connect", "socket"),
                                           (socket.socket, "connect_ex", "socket"),
                                           (socket, "create_connection", "create_connection")]
    downloader = sys.modules.get("pyiqa.utils.download_util")
    if downloader is not None and hasattr(downloader, "download_url_to_file"):
        targets.append((downloader, "download_url_to_file", "download"))
    saved = [(obj, name, name in vars(obj), getattr(obj, name)) for obj, name, _ in targets]
    try:
        for obj, name, what in targets:
            setattr(obj, name, blocker(what))
        yield attempts
    finally:
        for obj, name, own, original in reversed(saved):
            if own:
                setattr(obj, name, original)
            else:
                delattr(obj, name)


def _import_pyiqa() -> Any:
    """``import pyiqa`` (downloads blocked), or :class:`ModelUnavailable` saying how to install it."""
    try:
        with no_downloads():
            import pyiqa
    except ImportError as exc:
        raise ModelUnavailable(PYIQA_MISSING, f"{exc}; install the optional extra: pip install 'iqalab[pyiqa]'") \
            from None
    except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways
        raise ModelUnavailable(f"pyiqa not importable: {type(exc).__name__}: {exc}") from None
    return pyiqa


def _is_offline_error(exc: BaseException) -> bool:
    """Hub errors that mean "not in the local cache and offline" (huggingface_hub, transformers)."""
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "DownloadBlocked"}) or any(
        "offline" in str(e).lower() and isinstance(e, OSError | ValueError) for e in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        node = node.__cause__ or node.__context__


def load_metric(metric: str, weights: str | Path | None = None, options: dict[str, Any] | None = None) -> nn.Module:
    """Build pyiqa's ``metric`` on the CPU from local weights only (see the module docstring).

    Raises :class:`ModelUnavailable` when pyiqa is missing or the weights are not on disk, ``ValueError`` for a
    metric pyiqa does not know or a full-reference metric.
    """
    pyiqa = _import_pyiqa()
    known = getattr(pyiqa, "list_models", None)
    if callable(known):
        names = list(known())
        if metric not in names:
            no_ref = list(known(metric_mode="NR")) if _accepts_mode(known) else names
            raise ValueError(f"model.name: pyiqa has no metric {metric!r}; no-reference metrics: {sorted(no_ref)}")
    opts = dict(options or {})
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelUnavailable.weights(f"weights file {path} not found",
                                           f"model.weights of pyiqa:{metric} must be a local file")
        opts["pretrained_model_path"] = str(path)
    cache = pyiqa_cache_dir()
    with no_downloads() as attempts:
        try:
            net = pyiqa.create_metric(metric, as_loss=False, device=torch.device("cpu"), **opts)
        except ImportError as exc:
            # pyiqa imports a metric's own packages lazily; e.g. LIQE and CLIP-IQA need openai-clip, which
            # imports pkg_resources (gone from setuptools >= 81)
            raise ModelUnavailable(f"pyiqa:{metric} not importable: {type(exc).__name__}: {exc}",
                                   "install what the metric imports into this environment (for openai-clip: "
                                   "pip install 'setuptools<81')") from None
        except Exception as exc:
            if attempts or _is_offline_error(exc):
                what = attempts[0] if attempts else f"{type(exc).__name__}: {exc}"
                raise ModelUnavailable.weights(
                    f"pyiqa:{metric} is not in the local cache {cache} (blocked: {what})",
                    "put the weights in the cache offline (docs/models.md, 'Zero-shot deep metrics') or set "
                    "model.weights to a local file") from None
            raise
    if attempts:
        log.info("pyiqa:%s built from local files (network attempts blocked and bypassed: %s)", metric, attempts)
    if str(getattr(net, "metric_mode", "NR")).upper() == "FR":
        raise ValueError(f"model.name: pyiqa:{metric} is a full-reference metric; blind IQA needs a no-reference "
                         "one")
    return net


def _accepts_mode(fn: Any) -> bool:
    import inspect

    try:
        return "metric_mode" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def parse_score_range(value: Any) -> tuple[float, float] | None:
    """``(lo, hi)`` from pyiqa's ``score_range`` (``"~0, ~100"``, ``"1, 5"``) or a 2-sequence; None if unknown."""
    if value is None:
        return None
    parts: Sequence[Any] = value.replace("~", "").split(",") if isinstance(value, str) else value
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        return None
    return (lo, hi) if hi > lo else None


class PyIQAModel(IQAModel):
    """A pyiqa no-reference metric as a zero-shot registry model (``pyiqa:<metric>``); one score for all
    attributes, higher is better, mapped onto [0, 1] by the metric's score range when known.

    ``weights``: a local weights file (else pyiqa's cache); ``score_range``: ``[lo, hi]`` of the raw scores
    (default: pyiqa's ``score_range``); ``options``: extra keyword arguments for ``pyiqa.create_metric``.
    """

    trainable: ClassVar[bool] = False
    inputs = frozenset({"image"})
    paper = PYIQA_PAPER
    metric_name: ClassVar[str] = ""

    def __init__(self, attributes: list[str], weights: str | Path | None = None,
                 score_range: Sequence[float] | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(attributes)
        if not self.metric_name:
            raise ValueError("PyIQAModel is built through a 'pyiqa:<metric>' model name (get_model_class)")
        if score_range is not None and parse_score_range(score_range) is None:
            raise ValueError(f"model.score_range: expected [low, high] with low < high, got {score_range!r}")
        metric = load_metric(self.metric_name, weights, options)
        metric.eval()
        # kept out of the module tree: the weights stay in pyiqa's cache, not in every best.pt
        object.__setattr__(self, "_metric", metric)
        self.lower_better = bool(getattr(metric, "lower_better", False))
        self.score_range = parse_score_range(score_range) or parse_score_range(getattr(metric, "score_range", None))
        log.info("pyiqa:%s ready (%s is better, score range %s)", self.metric_name,
                 "lower" if self.lower_better else "higher", self.score_range)

    @property
    def metric(self) -> nn.Module:
        """The pyiqa metric (not a registered submodule; moved and kept in eval mode with this model)."""
        return self.__dict__["_metric"]

    def _apply(self, fn: Any, recurse: bool = True) -> PyIQAModel:  # .to(), .cuda(), .float(), channels_last
        super()._apply(fn, recurse)
        metric = self.__dict__.get("_metric")
        if metric is not None:
            metric._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> PyIQAModel:
        super().train(mode)
        self.metric.eval()  # a zero-shot metric is always evaluated as published
        return self

    def num_parameters(self) -> int:
        """Parameters of the pyiqa network (the zero-shot model's size in the tables)."""
        return sum(p.numel() for p in self.metric.parameters())

    def raw_scores(self, image: torch.Tensor) -> torch.Tensor:
        """The metric's own scores ``[B]`` of ImageNet-normalised images (float32, autocast off)."""
        rgb = denormalise_batch(image).clamp(0.0, 1.0)
        with torch.autocast(device_type=rgb.device.type, enabled=False):
            out = self.metric(rgb)
        if isinstance(out, tuple | list):
            out = out[0]
        out = torch.as_tensor(out, device=rgb.device).float()
        if out.numel() != rgb.shape[0]:
            raise RuntimeError(f"pyiqa:{self.metric_name} returned {tuple(out.shape)} scores for a batch of "
                               f"{rgb.shape[0]} images")
        return out.reshape(rgb.shape[0])

    def to_unit(self, raw: torch.Tensor) -> torch.Tensor:
        """Higher-is-better scores, on [0, 1] when the score range is known (see the module docstring)."""
        if self.score_range is not None:
            lo, hi = self.score_range
            unit = (raw - lo) / (hi - lo)
            return 1.0 - unit if self.lower_better else unit
        return -raw if self.lower_better else raw

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.predict_with_raw(batch)[0]

    @property
    def raw_score_name(self) -> str:  # type: ignore[override]
        """The metric's name (its raw score is pyiqa's output)."""
        return self.metric_name

    @property
    def raw_lower_is_better(self) -> bool:  # type: ignore[override]
        return self.lower_better

    @torch.no_grad()
    def predict_with_raw(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        raw = self.raw_scores(batch["image"])
        score = self.to_unit(raw)
        return {attr: score for attr in self.attributes}, raw

    @property
    def ready_without_training(self) -> bool:
        return True

    def run_notes(self) -> dict[str, Any]:
        """The raw score's name and sign (tables state them in their captions)."""
        return {"raw_score": self.metric_name, "raw_lower_is_better": self.lower_better, "trained": False}

    def training_step(self, batch: dict[str, Any], ctx: Any) -> torch.Tensor:  # pragma: no cover - guard
        raise RuntimeError(f"pyiqa:{self.metric_name} is a zero-shot metric: it is not trained")


def pyiqa_model_class(name: str) -> type[PyIQAModel]:
    """The :class:`PyIQAModel` subclass for ``pyiqa:<metric>`` (made once, then cached); ``KeyError`` naming the
    expected form for a malformed name. pyiqa is not imported (whether it knows the metric is checked at build)."""
    metric = str(name)[len(PREFIX):] if is_pyiqa_name(name) else ""
    if not _NAME.match(metric):
        raise KeyError(f"model {name!r}: zero-shot models are named 'pyiqa:<metric>' with a pyiqa metric name, "
                       "e.g. 'pyiqa:musiq', 'pyiqa:liqe', 'pyiqa:clipiqa+', 'pyiqa:topiq_nr'")
    cls = _CLASSES.get(metric)
    if cls is None:
        safe = re.sub(r"\W", "_", metric.replace("+", "plus"))
        doc = (f"pyiqa's ``{metric}`` as a zero-shot model (see :class:`PyIQAModel`): one score for every "
               "attribute, higher is better.")
        cls = type(f"PyIQA_{safe}", (PyIQAModel,), {
            "__doc__": doc, "__module__": __name__, "metric_name": metric, "registry_name": f"{PREFIX}{metric}",
            "paper": metric_paper(metric)})
        _CLASSES[metric] = cls
    return cls


#: heading of the zero-shot section of ``docs/models.md`` (and its anchor)
CARD_HEADING = "pyiqa zero-shot metrics"
CARD_ANCHOR = "pyiqa-zero-shot-metrics"


def card_overview_row() -> str:
    """The ``docs/models.md`` overview-table row of the ``pyiqa:<metric>`` models (none is built for the cards:
    pyiqa is optional and its weights may be absent)."""
    return (f"| [`pyiqa:<metric>`](#{CARD_ANCHOR}) | image | the metric's network (not built here) | not counted | "
            f"zero-shot pyiqa metrics: MUSIQ, LIQE, CLIP-IQA+, TOPIQ, ... ({PYIQA_PAPER}) |")


def card_markdown() -> list[str]:
    """The ``docs/models.md`` section on the ``pyiqa:<metric>`` models: what they are, their arguments, how to
    provide weights offline and what a table shows without them."""
    lines = [f"## {CARD_HEADING}", "",
             f"`{PyIQAModel.__name__}`: any no-reference metric of pyiqa as a **zero-shot** model, named "
             "`pyiqa:<metric>` in `params.yaml` (e.g. `pyiqa:musiq`, `pyiqa:liqe`, `pyiqa:clipiqa+`, "
             "`pyiqa:topiq_nr`). Its published weights score the test images as they are: nothing is trained or "
             "fitted on the dataset, so these rows measure how a metric trained elsewhere transfers. They are the "
             "LIQE/MUSIQ opponents of TuningIQA's gMAD and camera-tuning studies.", "",
             f"- **Package**: optional extra, `pip install 'iqalab[pyiqa]'` ({PYIQA_PAPER}); not imported until "
             "such a model is built.",
             "- **Inputs** (batch keys): `image` (the ImageNet normalisation is undone to RGB in [0, 1]).",
             "- **Output**: one score for every attribute; higher is better (metrics with pyiqa's `lower_better` "
             "are flipped); mapped linearly onto [0, 1] by the metric's score range (pyiqa's `score_range`, or "
             "the `score_range` argument), negated when lower is better and no range is known.",
             "- **Parameters**: those of the metric's network (the tables' `Params (M)`); not built for these "
             "cards.",
             "- **Checkpoints**: `best.pt` holds the config only; the weights stay in pyiqa's cache.", "",
             "| constructor argument | default | meaning |", "|---|---|---|",
             "| `weights` | `None` | a local weights file, passed to pyiqa as `pretrained_model_path` "
             "(default: pyiqa's cache) |",
             "| `score_range` | `None` | `[low, high]` of the raw scores (default: pyiqa's `score_range`) |",
             "| `options` | `None` | extra keyword arguments of `pyiqa.create_metric` |", "",
             "**Weights are never downloaded.** The metric is built with every network path blocked; it runs only "
             "when its files are already in pyiqa's cache, `$TORCH_HOME/hub/pyiqa` (default "
             "`~/.cache/torch/hub/pyiqa`; CLIP-based metrics such as LIQE and CLIP-IQA also read "
             "`~/.cache/clip`), or in the file `weights` names. To fill the cache for an offline machine: on a "
             "machine with internet run `python -c \"import pyiqa; pyiqa.create_metric('musiq')\"` once per "
             "metric (or download the URLs of `default_model_urls` in the metric's `pyiqa/archs/*_arch.py`), then "
             "copy `~/.cache/torch/hub/pyiqa` (and `~/.cache/clip`) to the same place offline.", "",
             "**Without pyiqa or without the weights** the training stage still completes: "
             "`results/predictions/<experiment>.json` gets `\"status\": \"pyiqa not installed\"` or "
             "`\"status\": \"weights unavailable: <reason>\"` and an empty predictions file; the results tables "
             "keep the experiment's row with `pyiqa not installed` / `weights unavailable` in its cells (and the "
             "reason in the caption); gMAD, camera tuning and the significance tests list it as not competing; "
             "the profile holds only the status.", "",
             "Known methods (the metric name, or the prefix of its variants such as `musiq-ava`):", ""]
    lines += [f"- `{name}`: {paper}" for name, paper in METRIC_PAPERS.items()]
    return lines


def pyiqa_installed() -> bool:
    """Whether pyiqa can be found (without importing it)."""
    import importlib.util

    return "pyiqa" in sys.modules or importlib.util.find_spec("pyiqa") is not None


__all__ = ["PREFIX", "DownloadBlocked", "card_markdown", "card_overview_row", "PyIQAModel", "is_pyiqa_name", "load_metric", "metric_paper",
           "no_downloads", "parse_score_range", "pyiqa_cache_dir", "pyiqa_installed", "pyiqa_model_class"]
