"""Released weights of an original implementation, loaded into iqalab's port and scored by the original's test
protocol: ``iqalab score --model official:hyperiqa --option weights=koniq_pretrained.pkl photos/``, or
``--model official:dbcnn --option weights=net_params_best.pkl``.

HyperIQA (S. Su et al., "Blindly Assess Image Quality in the Wild Guided by a Self-Adaptive Hyper Network",
CVPR 2020; code github.com/SSL92/hyperIQA, ``models.py``) releases ``koniq_pretrained.pkl``: the ``state_dict``
of its ``HyperNet(16, 112, 224, 112, 56, 28, 14, 7)`` trained on KonIQ-10k. :func:`hyperiqa_from_official`
renames its tensors onto :class:`iqalab.models.hyperiqa.HyperIQA` with a ResNet-50 backbone (the same layers:
``res.*`` ResNet-50 -> ``backbone.*``, ``res.lda{1,2,3}_pool.0`` / ``_fc`` -> ``lda.convs`` / ``lda.fcs``,
``res.lda4_fc`` -> ``lda.fc_last``, ``conv1.{0,2,4}`` -> ``hyper.reduce``, ``fc{1-4}w_conv`` / ``fc{1-4}b_fc``
-> ``hyper.weight_gens`` / ``hyper.bias_gens``, ``fc5w_fc`` / ``fc5b_fc`` -> ``hyper.last_weight_gens.0`` /
``hyper.last_bias_gens.0``). The port adds a constant 0.5 to the target network's output (an untrained model
starts mid-scale, :mod:`iqalab.models.hyperiqa`); the import subtracts it from the last bias, so a patch scores
exactly what the original ``TargetNet`` gives (``tests/test_official.py`` checks every patch against an
independent implementation of the original forward pass on the original's tensor names, within 1e-4). pyiqa's
copy of the network (``pyiqa/archs/hypernet_arch.py``; its ``hyperiqa`` weights file in pyiqa's cache) loads too:
its tensors have other names for the same layers.

:class:`OfficialHyperIQAScorer` applies the original's test protocol (``data_loader.py`` and ``demo.py``): the
image resized with PIL bilinear to 512 x 384 (height x width, KonIQ's ``Resize((512, 384))``; ``resize: null``
keeps the file's size, the LIVE Challenge protocol), ``crops`` random 224 x 224 crops (25 in the original's
test, 10 in its demo), ``ToTensor`` and the ImageNet ``Normalize``, and the mean of the crops' scores: the
KonIQ model's scores are on its 0-100 MOS scale, higher is better. The original draws unseeded crops, so its own
score of an image varies from run to run (not measured here); here they come from a generator seeded by ``seed`` and
the image's pixels, so a score is repeatable. The original reads files with ``PIL.Image.open(...).convert("RGB")``
(EXIF orientation not applied); iqalab's decoder applies it, as a viewer shows the photo.

DBCNN (W. Zhang et al., "Blind Image Quality Assessment Using a Deep Bilinear Convolutional Neural Network",
TCSVT 2020; code github.com/zwx8981/DBCNN-PyTorch, ``DBCNN.py``) saves its fine-tuned ``DBCNN`` with
``torch.save(net.state_dict())``: ``features1.*`` (torchvision's VGG-16 ``features`` less the last pooling),
``features2.*`` (the S-CNN's ``features``), ``fc.*`` (the linear layer on the 512 x 128 bilinear features, whose
output is the MOS of the training set), under ``module.`` when saved from ``DataParallel``; pyiqa's copy
(``pyiqa/archs/dbcnn_arch.py``, its DBCNN weight files) has the same names under ``params``.
:func:`dbcnn_from_official` renames them onto :class:`iqalab.models.dbcnn.DBCNN` with ``backbone="vgg16",
backbone_stage=4`` (timm's VGG-16 features, the same layer indices: ``features1.{i}`` -> ``backbone.features_{i}``),
``scnn.features.*`` and the release's linear head (``head="linear"`` on the unit range, so the port's score is
the layer's output). :class:`OfficialDBCNNScorer` applies the release's test protocol: the whole image at its
size (``ToTensor`` and the ImageNet ``Normalize``, no resize), batch 1; ``tests/test_official_dbcnn.py`` checks
the score against an independent implementation of the release's forward pass (torchvision's VGG-16, the S-CNN,
``F.upsample_bilinear``, ``sqrt(X + 1e-8)``, l2 normalisation, ``fc``) within 1e-4 on a 0-100 scale. The
renaming is :func:`iqalab.models.dbcnn.release_state`, which ``model.release_weights`` also uses to fine-tune from
a released DBCNN.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqalab.data.cache import planar_crc
from iqalab.data.loaders import IMAGENET_MEAN, IMAGENET_STD, patch_corners, patch_rng

#: ``HyperNet(lda_out, hyper_in, target_in, fc1..fc4, feature_size)`` of the released KonIQ model
OFFICIAL_HYPERIQA_SIZES = {"lda_out": 16, "hyper_in": 112, "target_in": 224, "target_sizes": (112, 56, 28, 14),
                           "feature_size": 7}
#: the port's constant output offset (:meth:`iqalab.models.hyperiqa.HyperIQA.patch_outputs`)
PORT_OFFSET = 0.5

_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^res\.lda([123])_pool\.0\.weight$", "lda.convs.{0}.weight"),
    (r"^res\.lda([123])_fc\.(weight|bias)$", "lda.fcs.{0}.{1}"),
    (r"^res\.lda4_fc\.(weight|bias)$", "lda.fc_last.{0}"),
    (r"^res\.(.+)$", "backbone.{0}"),
    (r"^conv1\.([024])\.(weight|bias)$", "hyper.reduce.{0}.{1}"),
    (r"^fc([1-4])w_conv\.(weight|bias)$", "hyper.weight_gens.{0}.{1}"),
    (r"^fc([1-4])b_fc\.(weight|bias)$", "hyper.bias_gens.{0}.{1}"),
    (r"^fc5w_fc\.(weight|bias)$", "hyper.last_weight_gens.0.{0}"),
    (r"^fc5b_fc\.(weight|bias)$", "hyper.last_bias_gens.0.{0}"),
)


#: pyiqa's port of the same network (``pyiqa/archs/hypernet_arch.py``, the ``hyperiqa`` metric's weights file):
#: its module names -> the port's; its timm ResNet-50 (``base_model``) has the port's backbone names
_PYIQA_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^base_model\.(.+)$", "backbone.{0}"),
    (r"^lda_modules\.([012])\.0\.weight$", "lda.convs.{0}.weight"),
    (r"^lda_modules\.([012])\.3\.(weight|bias)$", "lda.fcs.{0}.{1}"),
    (r"^lda_modules\.3\.2\.(weight|bias)$", "lda.fc_last.{0}"),
    (r"^conv1\.([024])\.(weight|bias)$", "hyper.reduce.{0}.{1}"),
    (r"^fc_w_modules\.([0-3])\.(weight|bias)$", "hyper.weight_gens.{0}.{1}"),
    (r"^fc_w_modules\.4\.2\.(weight|bias)$", "hyper.last_weight_gens.0.{0}"),
    (r"^fc_b_modules\.([0-3])\.2\.(weight|bias)$", "hyper.bias_gens.{0}.{1}"),
    (r"^fc_b_modules\.4\.2\.(weight|bias)$", "hyper.last_bias_gens.0.{0}"),
)


class OfficialWeightsError(ValueError):
    """A file that is not the original implementation's weights (names the file and the tensors that differ)."""


def _renamed(key: str, pyiqa: bool = False) -> str | None:
    for pattern, target in _PYIQA_RENAMES if pyiqa else _RENAMES:
        match = re.match(pattern, key)
        if match:
            groups = list(match.groups())
            # the original numbers its LDA stages and target layers from 1, the port's module lists from 0
            if not pyiqa and target.startswith(("lda.convs", "lda.fcs", "hyper.weight_gens", "hyper.bias_gens")):
                groups[0] = str(int(groups[0]) - 1)
            return target.format(*groups)
    return None


def hyperiqa_state_from_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released ``HyperNet`` state dict renamed onto the port's (module docstring), the last bias shifted by
    :data:`PORT_OFFSET`. pyiqa's copy of the network (``base_model``, ``lda_modules``, ``fc_w_modules``,
    ``fc_b_modules``: the ``hyperiqa`` metric's weights file) is recognised by its names and renamed the same way.
    A ``module.`` prefix (weights saved from ``DataParallel``) is dropped; tensors the port has no place for raise
    :class:`OfficialWeightsError` with their names."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    keys = {key: key.removeprefix("module.") for key in state}
    pyiqa = any(k.startswith(("base_model.", "lda_modules.")) for k in keys.values())
    for key, value in state.items():
        name = _renamed(keys[key], pyiqa)
        if name is None:
            unknown.append(key)
            continue
        out[name] = value
    if unknown:
        raise OfficialWeightsError(f"{len(unknown)} tensors are not HyperNet's: {unknown[:5]}")
    bias = "hyper.last_bias_gens.0.bias"
    if bias in out:
        out[bias] = out[bias] - PORT_OFFSET
    return out


def hyperiqa_from_official(weights: str | Path | Mapping[str, torch.Tensor]) -> Any:
    """iqalab's :class:`~iqalab.models.hyperiqa.HyperIQA` (ResNet-50, one attribute ``quality``) holding the
    original's released weights: a file written by ``torch.save(model_hyper.state_dict())`` (e.g.
    ``koniq_pretrained.pkl``) or that state dict. Its :meth:`patch_outputs` give the original's patch scores."""
    from iqalab.models import build_model
    from iqalab.train.engine import CheckpointError, load_model_state

    state, source = _official_state(weights)
    try:
        renamed = hyperiqa_state_from_official(state)
    except OfficialWeightsError as exc:
        raise OfficialWeightsError(f"{source}: {exc}") from None
    model = build_model("hyperiqa", ["quality"], backbone="resnet50", pretrained=False, patch_size=224,
                        **{k: list(v) if isinstance(v, tuple) else v for k, v in OFFICIAL_HYPERIQA_SIZES.items()})
    try:
        load_model_state(model, renamed, f"{source} (renamed from the original HyperNet's tensor names)")
    except CheckpointError as exc:
        raise OfficialWeightsError(str(exc)) from None
    return model.eval()


def _official_state(weights: str | Path | Mapping[str, torch.Tensor]) -> tuple[Mapping[str, torch.Tensor], str]:
    """The state dict of a released weights file (or the mapping itself) and how to name its source: the file is
    read by :func:`iqalab.models.release.read_release_state` (pyiqa's files nest the weights under ``params`` or
    ``state_dict``); a file it refuses raises :class:`OfficialWeightsError` naming the file."""
    from iqalab.models.release import ReleaseWeightsError, read_release_state

    if isinstance(weights, Mapping):
        return weights, "state dict"
    try:
        return read_release_state(weights), str(weights)
    except ReleaseWeightsError as exc:
        raise OfficialWeightsError(str(exc)) from None


def dbcnn_state_from_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released ``DBCNN`` state dict (or pyiqa's copy) renamed onto the port's with one attribute
    ``quality`` (:func:`iqalab.models.dbcnn.release_state`, which ``model.release_weights`` uses to fine-tune
    from it); a ``module.`` prefix is dropped; tensors the port has no place for raise
    :class:`OfficialWeightsError` with their names."""
    from iqalab.models.dbcnn import release_state

    try:
        return release_state(state, ["quality"])
    except ValueError as exc:
        raise OfficialWeightsError(str(exc)) from None


def dbcnn_from_official(weights: str | Path | Mapping[str, torch.Tensor]) -> Any:
    """iqalab's :class:`~iqalab.models.dbcnn.DBCNN` (VGG-16 conv5_3 x S-CNN, the release's linear layer, one
    attribute ``quality``) holding the release's weights: a file of ``torch.save(net.state_dict())`` (or pyiqa's
    DBCNN weights) or that state dict. Its ``quality`` score is the release's ``fc`` output."""
    from iqalab.models import build_model
    from iqalab.train.engine import CheckpointError, load_model_state

    state, source = _official_state(weights)
    try:
        renamed = dbcnn_state_from_official(state)
    except OfficialWeightsError as exc:
        raise OfficialWeightsError(f"{source}: {exc}") from None
    model = build_model("dbcnn", ["quality"], backbone="vgg16", pretrained=False, backbone_stage=4, head="linear",
                        mos_range=[0.0, 1.0])
    try:
        load_model_state(model, renamed, f"{source} (renamed from the released DBCNN's tensor names)")
    except CheckpointError as exc:
        raise OfficialWeightsError(str(exc)) from None
    return model.eval()


def official_resize(image: np.ndarray, size: Sequence[int] | None) -> np.ndarray:
    """``torchvision.transforms.Resize((h, w))`` of a PIL image, as the original: PIL bilinear to height x width
    (``None``: the image as it is)."""
    if size is None:
        return image
    height, width = (int(v) for v in size)
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_option(opts: dict[str, Any], default: Sequence[int] | None) -> tuple[int, int] | None:
    """``--option resize=[height, width]`` popped from ``opts`` (``default`` when absent; ``null``: the file's
    size), checked: two positive pixel counts, else a ``ValueError`` naming the option."""
    resize = opts.pop("resize", default)
    size = None if resize is None else tuple(int(v) for v in resize)
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"--option resize={resize}: give [height, width] in pixels, or null")
    return size  # type: ignore[return-value]


def crop_offsets(height: int, width: int, side: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` top-left corners of ``RandomCrop(side)``: uniform over every position inside the image, ``[n, 2]``
    (row, column). An image smaller than ``side`` raises a ``ValueError`` naming its size, as the original's
    ``RandomCrop`` does."""
    if height < side or width < side:
        raise ValueError(f"image of {width} x {height} px is smaller than the {side} px crop")
    return patch_corners((height, width), [(side, n)], 1, rng)[0][1]


def to_official_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 ``[n, s, s, 3]`` -> float32 ``[n, 3, s, s]``: ``ToTensor`` (x / 255) then ``Normalize``, in float32
    as the original computes it (the engine's :func:`iqalab.data.loaders.normalise_batch` folds the two into one
    scale and shift)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255.0)
    return (x - torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)


class OfficialHyperIQAScorer:
    """The released HyperIQA weights scored by the original's test protocol (module docstring).

    ``options`` (``iqalab score --option``): ``weights`` (required: the ``.pkl`` file), ``resize`` (height,
    width; default ``[512, 384]``, KonIQ's; ``null`` for the file's size), ``crops`` (default 25), ``side``
    (default 224), ``seed`` (default 0). One column, ``hyperiqa``: the mean crop score on the weights' training
    scale (KonIQ: 0-100, higher is better).
    """

    column = "hyperiqa"

    def __init__(self, options: Mapping[str, Any] | None = None, device: str = "auto") -> None:
        from iqalab.train.engine import resolve_device

        opts = dict(options or {})
        weights = opts.pop("weights", None)
        if weights is None:
            raise ValueError("--model official:hyperiqa needs --option weights=<file>: the original's released "
                             "state dict (koniq_pretrained.pkl from github.com/SSL92/hyperIQA)")
        self.resize = resize_option(opts, [512, 384])
        self.crops = int(opts.pop("crops", 25))
        self.side = int(opts.pop("side", 224))
        self.seed = int(opts.pop("seed", 0))
        if self.crops < 1 or self.side < 1:
            raise ValueError(f"--option crops={self.crops} side={self.side}: both must be positive")
        if opts:
            raise ValueError(f"--model official:hyperiqa: unknown options {sorted(opts)}; known: weights, "
                             "resize, crops, side, seed")
        self.model = hyperiqa_from_official(Path(str(weights)))
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.name = "HyperIQA (original weights)"

    def crops_of(self, image: np.ndarray) -> np.ndarray:
        """The ``crops`` uint8 crops of one decoded image, ``[n, side, side, 3]``, from its resized pixels; the
        generator is seeded by ``seed`` and those pixels as evaluation patches are (:func:`patch_rng` of
        :func:`planar_crc`: the same file, the same crops)."""
        resized = official_resize(np.asarray(image, dtype=np.uint8), self.resize)
        rng = patch_rng(self.seed, planar_crc(resized))
        offsets = crop_offsets(resized.shape[0], resized.shape[1], self.side, self.crops, rng)
        return np.stack([resized[r:r + self.side, c:c + self.side] for r, c in offsets])

    @torch.no_grad()
    def score(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """``{"hyperiqa": [N]}``: each image's mean crop score (module docstring)."""
        out = np.empty(len(images), dtype=np.float64)
        for k, image in enumerate(images):
            patches = to_official_tensor(self.crops_of(image)).to(self.device)
            q = self.model.patch_outputs(patches[None])["q"]  # [1, n, 1]
            out[k] = float(q.double().mean())
        return {self.column: out}


class OfficialDBCNNScorer:
    """The released DBCNN weights scored by the release's test protocol (module docstring).

    ``options`` (``iqalab score --option``): ``weights`` (required: the state dict file), ``resize`` (height,
    width, PIL bilinear; default ``null``: the image at its size, as the release tests). One column, ``dbcnn``:
    the linear layer's output on the weights' training scale (the release's LIVE / LIVE Challenge models: their
    MOS or DMOS, as that dataset's files give it).
    """

    column = "dbcnn"

    def __init__(self, options: Mapping[str, Any] | None = None, device: str = "auto") -> None:
        from iqalab.train.engine import resolve_device

        opts = dict(options or {})
        weights = opts.pop("weights", None)
        if weights is None:
            raise ValueError("--model official:dbcnn needs --option weights=<file>: the released DBCNN state dict "
                             "(DBCNN.py's db_models/net_params_best.pkl, or pyiqa's DBCNN weights)")
        self.resize = resize_option(opts, None)
        if opts:
            raise ValueError(f"--model official:dbcnn: unknown options {sorted(opts)}; known: weights, resize")
        self.model = dbcnn_from_official(Path(str(weights)))
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.name = "DBCNN (original weights)"

    @torch.no_grad()
    def score(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """``{"dbcnn": [N]}``: each whole image's score, one image per forward pass (module docstring)."""
        out = np.empty(len(images), dtype=np.float64)
        for k, image in enumerate(images):
            pixels = official_resize(np.asarray(image, dtype=np.uint8), self.resize)
            x = to_official_tensor(pixels[None]).to(self.device)
            out[k] = float(self.model({"image": x})["quality"].double()[0])
        return {self.column: out}


#: a scorer of ``--model official:<name>``
OfficialScorer = OfficialHyperIQAScorer | OfficialDBCNNScorer
#: ``--model official:<name>`` -> scorer class
OFFICIAL_SCORERS: dict[str, type[OfficialScorer]] = {"hyperiqa": OfficialHyperIQAScorer, "dbcnn": OfficialDBCNNScorer}


def official_scorer(name: str, options: Mapping[str, Any] | None, device: str = "auto") -> OfficialScorer:
    """The scorer of ``--model official:<name>`` (:data:`OFFICIAL_SCORERS`); an unknown name is refused with the
    known ones."""
    if name not in OFFICIAL_SCORERS:
        raise ValueError(f"--model official:{name}: no released weights are supported for it; known: "
                         f"{', '.join('official:' + k for k in OFFICIAL_SCORERS)}")
    return OFFICIAL_SCORERS[name](options, device)
