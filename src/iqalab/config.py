"""``params.yaml``: the single source of truth, loaded with ``yaml.safe_load`` and validated with pydantic.

Every section forbids unknown keys, so a typo fails with the key's path and the allowed keys (papermill would
silently accept an unknown parameter; notebooks therefore receive only names - a dataset or an experiment - and
read everything else through :func:`load_params`). Experiments inherit ``train_defaults`` and override any of its
keys. Names given to code are checked against the code (:func:`check_names`): model keyword arguments against the
registered model's constructor, ``datasets.<d>.options`` against the builder's or adapter's signature,
``experiments.<e>.tables`` against the paper-table registry and ``splits`` against the builder's declared splits
(an adapter's once ingested, by the engine). A profile is an overlay of another params file (``base:``,
:func:`merge_overlay`); ``params/paper.yaml`` is one, and an error names the file that sets the key.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from iqalab import provenance
from iqalab.data.regions import DetectionConfig
from iqalab.io import project_root

SectionT = TypeVar("SectionT", bound=BaseModel)

log = logging.getLogger(__name__)


#: The optimisers ``train.optimizer``, a model's :class:`iqalab.models.base.OptimizerPhase` and DBCNN's
#: ``head_optimizer`` can name (the training engine builds them, ``iqalab.train.engine._optimizer``);
#: :data:`OPTIMIZERS` is read from the ``Literal``, so the two cannot drift.
OptimizerName = Literal["adamw", "adam", "sgd"]
OPTIMIZERS: tuple[str, ...] = typing.get_args(OptimizerName)


class ParamsError(ValueError):
    """``params.yaml`` is invalid; the message names the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DatasetConfig(_Strict):
    """One dataset: built by the simulator (``source: sim``), read by an adapter or the toy generator."""

    source: Literal["sim", "adapter", "toy"]
    builder: str = Field(description="simulator builder, adapter name, or 'toy'")
    raw: str | None = Field(None, description="folder of the raw dataset (adapters), relative to the project root")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the builder/adapter")
    cache_size: int = Field(256, gt=15, le=4096, description="side of the square uint8 image cache")
    max_side: int | None = Field(None, gt=15, description="cap on the longer side of the native-resolution store "
                                 "(aspect kept); None = every image at its native resolution")
    detect: DetectionConfig = Field(default_factory=DetectionConfig,
                                    description="person/face detection at ingest (iqalab.data.regions)")


class TrainConfig(_Strict):
    """Training recipe; experiments override any key."""

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: OptimizerName = "adamw"
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    step_epochs: list[int] = Field(default_factory=list, validate_default=True,
                                   description="epochs where 'step' multiplies lr by gamma (0.1: a tenth)")
    gamma: float = Field(0.1, gt=0)
    crop: int | None = Field(224, gt=15, description="random-crop size in training; None = whole cached image")
    flip: bool = True
    vflip: bool = False
    eval_crop: int | None = Field(None, gt=15, description="centre crop at evaluation; None = whole image")
    resolution: Literal["cache", "native"] = Field(
        "cache", description="images the loader reads: the square cache, or the native-resolution store (crops and "
        "patches cut at the papers' scales; iqalab.data.loaders)")
    patience: int = Field(0, ge=0, description="early stopping patience in epochs on the monitored metric (0 = off)")
    monitor: Literal["val_srcc", "val_scene_srcc", "val_loss", "train_loss", "last"] = Field(
        "val_srcc", description="model selection and early stopping: mean SRCC over attributes on the val images, "
        "the median over val scenes of the per-scene SRCC (FHIQA, PIQ23), val L1, training loss, or 'last' (the "
        "last epoch's weights, no selection); a val monitor on a split without val images is refused")
    val_images: Literal["monitor", "train"] = Field(
        "monitor", description="the split's val images: held out for the monitor, or trained on (no validation "
        "split carved out of the training scenes; select with monitor 'last')")
    separate_attributes: bool = Field(
        False, description="one model per attribute, each trained, selected and stored on its own "
        "(build/models/<e>/<split>/<attribute>/; PIQ23's protocol, FHIQA seed 001 Sec. IV-D); false: one model "
        "with a head per attribute")
    subset: Literal["all", "camera_complete"] = Field(
        "all", description="images of every role: all, or those with all seven camera parameters known "
        "(TuningIQA's FineLive-p)")
    num_workers: int = Field(0, ge=0)
    amp: bool = Field(True, description="bf16 autocast in the training steps on CUDA and, with cpu_amp, on a CPU "
                      "with native bf16 (AMX or AVX512_BF16); predictions stay fp32")
    channels_last: bool = Field(True, description="channels_last tensors where amp is in effect")
    cpu_amp: bool = Field(False, description="let amp and channels_last apply on a CPU with native bf16 units: AMX "
                          "tiles (Intel Xeon 4th generation and later) or AVX512_BF16 (e.g. AMD EPYC Zen 4); other "
                          "CPUs train in fp32")
    compile: bool = Field(False, description="torch.compile the model's forward (pays on CUDA; first steps slower)")
    compile_backend: Literal["inductor", "aot_eager", "eager"] = Field(
        "inductor", description="torch.compile backend; 'eager' only traces (tests)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    max_train_images: int | None = Field(None, ge=1)
    max_pairs: int | None = Field(None, ge=1, description="pairs per epoch for pair-trained models (fine first)")
    grad_clip: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("step_epochs")
    @classmethod
    def _step_needs_epochs(cls, value: list[int], info: ValidationInfo) -> list[int]:
        if info.data.get("scheduler") == "step" and not value:
            raise ValueError("scheduler 'step' needs at least one epoch here")
        return value


class ModelConfig(BaseModel):
    """``name`` selects the registered model; every other key is a constructor keyword argument."""

    model_config = ConfigDict(extra="allow")
    name: str


class ExperimentConfig(_Strict):
    """One training run (or one per split listed) of one model on one dataset."""

    dataset: str
    model: ModelConfig
    splits: list[str] = Field(default_factory=lambda: ["scene"], min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(None, description="display name in tables (default: the experiment key)")
    tables: list[str] = Field(default_factory=list, description="paper tables this experiment appears in")
    protocol: Literal["standard", "per_scene", "per_tier"] = "standard"


class EvaluateConfig(_Strict):
    """Evaluation options (stage ``evaluate``)."""

    logistic: bool = True
    logistic_bounds: bool = Field(True, description="bounded logistic fit for PLCC (slope and mid-point bounds, "
                                  "issue #27); false: the unconstrained VQEG fit")
    bootstrap: int = Field(200, ge=0)
    fine_pairs_only: bool = True
    yardstick: bool = Field(True, description="learnability yardstick tables (panel ceiling, pixel-feature probe; "
                            "issue #23) beside each dataset's model rows")


class GmadSettings(_Strict):
    """``gmad``: the gMAD competition (stage ``gmad``; Ma et al., CVPR 2016 / TPAMI 2020; TuningIQA Fig. 7).

    Every key is optional; the defaults are a CPU-sized pool on ``fglive_sim``."""

    dataset: str = Field("fglive_sim", description="dataset whose trained experiments compete")
    attribute: str = Field("overall", description="attribute the models compete on")
    experiments: list[str] | None = Field(None, description="competitors (default: all on the dataset)")
    pool_scenes: int = Field(24, ge=1, description="held-out simulator scenes in the pool")
    renders_per_scene: int = Field(12, ge=1, description="camera settings rendered per scene")
    image_size: int | None = Field(None, ge=16, le=4096, description="render size (default: the dataset's)")
    pool_kind: Literal["livestream", "portrait", "face", "ugc"] | None = None
    profile: Literal["livestream", "surveillance", "portrait", "ugc"] | None = None
    levels: int = Field(5, ge=1, description="defender quality levels (bands evenly spaced over its range)")
    band_width: float = Field(0.05, gt=0, le=1, description="width of a level, share of the defender's range "
                              "(at most 1/levels)")
    ranking_prior: float = Field(0.5, ge=0, description="Bradley-Terry pseudo-wins per direction of a model pair")

    @field_validator("band_width")
    @classmethod
    def _bands_do_not_overlap(cls, value: float, info: ValidationInfo) -> float:
        levels = info.data.get("levels")
        if levels and value > 1.0 / levels + 1e-12:
            raise ValueError(f"at most 1/levels = {1.0 / levels:.4g} (the {levels} levels would overlap)")
        return value
    n_raters: int = Field(20, ge=1, description="panel judges per pair")
    seed: int | None = Field(None, description="pool, tie-break and panel seed (default: params.seed)")
    image_folder: str | None = Field(None, description="a folder of images as the pool instead of the simulator")
    allow_missing_camera: bool = Field(False, description="let a model that reads camera parameters (GCPF) compete "
                                       "on an image_folder with all seven unknown (its learned 'unknown' embedding; "
                                       "stated in the captions), as iqalab score --allow-missing-camera")
    allow_missing_regions: bool = Field(False, description="let a model that reads human regions compete on an "
                                        "image_folder with its whole-image / centre-crop fallback (stated in the "
                                        "captions), as iqalab score --allow-missing-regions")
    votes_csv: str | None = Field(None, description="human votes on the pairs (gmad.import_votes format)")
    thumb_size: int = Field(96, ge=16, description="side of the pair thumbnails in the grids")
    batch_size: int = Field(16, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


def _default_steps() -> dict[str, float]:
    from iqalab.data.schema import DEFAULT_TUNING_STEPS  # not analysis.tuning: 1.5 s of imports per stage

    return dict(DEFAULT_TUNING_STEPS)


class CameraTuningSettings(_Strict):
    """``camera_tuning``: models pick camera settings, a virtual panel judges the picks (stage ``camera_tuning``;
    TuningIQA Sec. "Application for Camera Tuning"). Defaults: a CPU-sized study on ``fglive_sim``."""

    dataset: str = Field("fglive_sim", description="dataset whose experiments compete (their checkpoints)")
    attribute: str = Field("overall", description="attribute the models optimise and the panel judges")
    n_scenarios: int = Field(6, ge=1, description="held-out scenes (paper: 44)")
    n_raters: int = Field(12, ge=1, description="judgments per comparison (paper: 12 volunteers)")
    grid_steps: int = Field(2, ge=1, description="sweep steps on each side of the default, per parameter")
    steps: dict[str, float] = Field(default_factory=_default_steps,
                                    description="step per parameter (stops / kelvin / log units / amount)")
    search: bool = Field(True, description="also run the coordinate-descent tuner")
    search_budget: int = Field(12, ge=1, description="renders the search may use per scene and model")
    search_radius: int | None = Field(None, ge=1, description="lattice radius of the search (default 2 x grid)")
    seed: int | None = Field(None, description="scene pool, render noise and panel seed (default: params.seed)")
    experiments: list[str] | None = Field(None, description="competing experiments (default: all on dataset)")
    reference: str | None = Field(None, description="the reference (default: first tuningiqa experiment)")
    image_size: int | None = Field(None, ge=16, description="render size (default: the builder's image_size)")
    scene_kind: Literal["livestream", "portrait", "face", "ugc"] | None = Field(
        None, description="scene pool kind (default: from the dataset's builder)")
    profile: Literal["livestream", "surveillance", "portrait", "ugc"] | None = Field(
        None, description="ground-truth profile of the panel (default: from the dataset's builder)")
    pairwise: bool = Field(True, description="rank the sweep pairwise (Borda) when a model has a pair head")
    n_figure_scenes: int = Field(3, ge=0, description="scenes shown in the picks figure")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("steps")
    @classmethod
    def _known_parameters(cls, value: dict[str, float]) -> dict[str, float]:
        from iqalab.data.schema import CAM_PARAMS

        unknown = sorted(set(value) - set(CAM_PARAMS))
        if unknown:
            raise ValueError(f"unknown camera parameter(s) {unknown}; known: {list(CAM_PARAMS)}")
        if not any(float(v) != 0 for v in value.values()):
            raise ValueError("at least one parameter needs a non-zero step")
        return {k: float(v) for k, v in value.items()}


class CrossDatasetSettings(_Strict):
    """``cross_dataset``: models trained on dataset A predict every image of dataset B (stage ``cross_dataset``;
    REQA Table IV, SFIQA Table IV). The models are the experiments tagged for those tables."""

    datasets: list[str] | None = Field(None, description="the test datasets B (default: every dataset); each "
                                       "tagged experiment predicts those other than its own that have `attribute`")
    attribute: str = Field("overall", description="the attribute shared by A and B that the tables compare")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class Params(_Strict):
    """Top level of ``params.yaml``."""

    seed: int = 0
    profile: str = "default"
    datasets: dict[str, DatasetConfig]
    train_defaults: TrainConfig = Field(default_factory=TrainConfig)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    gmad: GmadSettings = Field(default_factory=GmadSettings)
    camera_tuning: CameraTuningSettings = Field(default_factory=CameraTuningSettings)
    cross_dataset: CrossDatasetSettings = Field(default_factory=CrossDatasetSettings)

    @field_validator("datasets")
    @classmethod
    def _non_empty(cls, value: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        if not value:
            raise ValueError("at least one dataset is needed")
        return value

    def require_dataset(self, path: str, name: str) -> None:
        """Raise :class:`ParamsError` at ``path`` unless ``name`` is a dataset of these params."""
        if name not in self.datasets:
            raise ParamsError(f"{path}: unknown dataset {name!r}; defined: {sorted(self.datasets)}")

    def require_experiments(self, path: str, names: list[str]) -> None:
        """Raise :class:`ParamsError` at ``path`` for the first of ``names`` that is not an experiment."""
        for name in names:
            if name not in self.experiments:
                raise ParamsError(f"{path}: unknown experiment {name!r}; defined: {sorted(self.experiments)}")

    def check_references(self) -> None:
        """Names that point elsewhere in the params: experiments' datasets, and the datasets and experiments the
        gMAD and camera-tuning sections name (their default dataset may be absent: the stage then says so)."""
        for name, exp in self.experiments.items():
            self.require_dataset(f"experiments.{name}.dataset", exp.dataset)
        gmad, tuning = self.gmad, self.camera_tuning
        if "dataset" in gmad.model_fields_set:
            self.require_dataset("gmad.dataset", gmad.dataset)
        self.require_experiments("gmad.experiments", gmad.experiments or [])
        if gmad.image_folder is None and gmad.votes_csv is None:
            from iqalab.sim.observers import ATTRIBUTES

            if gmad.attribute not in ATTRIBUTES:
                raise ParamsError(f"gmad.attribute: the simulator panel cannot judge {gmad.attribute!r}; "
                                  f"known: {list(ATTRIBUTES)}")
        if "dataset" in tuning.model_fields_set:
            self.require_dataset("camera_tuning.dataset", tuning.dataset)
        self.require_experiments("camera_tuning.experiments", tuning.experiments or [])
        self.require_experiments("camera_tuning.reference", [tuning.reference] if tuning.reference else [])
        for k, name in enumerate(self.cross_dataset.datasets or []):
            self.require_dataset(f"cross_dataset.datasets[{k}]", name)

    def train_config(self, experiment: str) -> TrainConfig:
        """The experiment's training recipe: ``train_defaults`` overridden by ``experiments.<e>.train``."""
        exp = self.experiment(experiment)
        merged = {**self.train_defaults.model_dump(), **exp.train}
        try:
            return TrainConfig(**merged)
        except ValidationError as exc:
            raise ParamsError(_format(exc, prefix=f"experiments.{experiment}.train",
                                      allowed=sorted(TrainConfig.model_fields))) from None

    def experiment(self, name: str) -> ExperimentConfig:
        if name not in self.experiments:
            raise ParamsError(f"experiments.{name}: unknown experiment; defined: {sorted(self.experiments)}")
        return self.experiments[name]

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ParamsError(f"datasets.{name}: unknown dataset; defined: {sorted(self.datasets)}")
        return self.datasets[name]

    def model_kwargs(self, experiment: str) -> dict[str, Any]:
        """Constructor kwargs of the experiment's model (everything in ``model`` but ``name``)."""
        return {k: v for k, v in self.experiment(experiment).model.model_dump().items() if k != "name"}


def _allowed_keys(exc_loc: tuple[Any, ...]) -> list[str]:
    node: Any = Params
    for part in exc_loc[:-1]:
        fields = getattr(node, "model_fields", None)
        if fields is None:
            return []
        if part in fields:
            annotation = fields[part].annotation
            node = _model_in(annotation)
        else:  # dict key (a dataset or experiment name)
            continue
        if node is None:
            return []
    return sorted(getattr(node, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _problems(exc: ValidationError, prefix: str = "", allowed: list[str] | None = None) -> list[tuple[str, str]]:
    """``(key path, message)`` per error; ``allowed`` lists the keys of a flat section (else looked up)."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc)
        if err["type"] == "extra_forbidden":
            out.append((path, f"unknown key; allowed keys: {allowed if allowed is not None else _allowed_keys(loc)}"))
        else:
            out.append((path, f"{err['msg']} (got {err.get('input')!r})"))
    return out


def _format(exc: ValidationError, prefix: str = "", allowed: list[str] | None = None) -> str:
    """One line per error with its key path (see :func:`_problems`)."""
    return "; ".join(f"{path}: {msg}" for path, msg in _problems(exc, prefix, allowed))


def _reject_non_finite(node: Any, path: str = "") -> None:
    if isinstance(node, float) and not math.isfinite(node):
        raise ParamsError(f"{path or '<root>'}: NaN/inf is not allowed")
    if isinstance(node, dict):
        for key, value in node.items():
            _reject_non_finite(value, f"{path}.{key}" if path else str(key))
    if isinstance(node, list):
        for i, value in enumerate(node):
            _reject_non_finite(value, f"{path}[{i}]")


# ------------------------------------------------------------------------------------- names checked against code
def known_table_tags() -> list[str]:
    """Every tag ``experiments.<e>.tables`` may hold: the registered paper tables and their aliases
    (:func:`iqalab.paper_tables.table_names`), so a mistyped tag cannot silently drop an experiment from a table."""
    from iqalab.paper_tables import table_names

    return list(table_names())


def _keyword_options(fn: Any, skip: set[str]) -> list[str]:
    sig = inspect.signature(fn)
    return sorted(k for k, p in sig.parameters.items()
                  if k not in skip and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


def check_values(fn: Any, values: dict[str, Any], path: str, what: str) -> None:
    """Raise :class:`ParamsError` at ``<path>.<key>`` for the first value that does not fit the type annotation
    of ``fn``'s keyword ``key`` (pydantic, lax: YAML's ``[1, 2]`` fits a tuple). Keys without an annotation, or
    with one pydantic cannot check (a module class), pass; an unknown key is left to the caller."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - annotations naming TYPE_CHECKING-only classes: nothing to check against
        return
    for key, value in values.items():
        if key not in hints:
            continue
        try:
            adapter = TypeAdapter(hints[key])
        except Exception:  # noqa: BLE001 - pydantic has no schema for this annotation
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise ParamsError(f"{path}.{key}: {reason} for {what}, got {value!r}") from None


def dataset_options(cfg: DatasetConfig, path: str) -> tuple[str, list[str], list[str] | None]:
    """``(what builds it, allowed option names, declared split names or None)`` for one ``datasets`` entry.

    The options are the keyword arguments of the simulator builder (:mod:`iqalab.sim.builders`), the toy
    generator or the adapter (:mod:`iqalab.data.adapters`) minus what ingest passes itself (folders; the
    top-level ``seed`` for the simulator and the toy set). Split names are known without building for the
    simulator and the toy set; an adapter's depend on its files, so they are checked when an experiment trains.
    """
    if cfg.source == "sim":
        from iqalab.sim.builders import BUILDERS, split_names

        if cfg.builder not in BUILDERS:
            raise ParamsError(f"{path}.builder: unknown simulator builder {cfg.builder!r}; "
                              f"available: {sorted(BUILDERS)}")
        allowed = _keyword_options(BUILDERS[cfg.builder], {"root", "seed"})
        what = f"simulator builder {cfg.builder!r}"
        check_values(BUILDERS[cfg.builder], cfg.options, f"{path}.options", what)
        if set(cfg.options) - set(allowed):
            return what, allowed, None
        return what, allowed, _declared_splits(split_names, (cfg.builder,), cfg.options, path, what)
    if cfg.source == "toy":
        from iqalab.data.toy import build_toy, toy_split_names

        allowed = _keyword_options(build_toy, {"root", "seed"})
        check_values(build_toy, cfg.options, f"{path}.options", "the toy generator")
        if set(cfg.options) - set(allowed):
            return "the toy generator", allowed, None
        return "the toy generator", allowed, _declared_splits(toy_split_names, (), cfg.options, path,
                                                              "the toy generator")
    from iqalab.data.adapters import ADAPTERS, resolve
    from iqalab.data.schema import DataError

    try:
        key = resolve(cfg.builder)
    except DataError as exc:
        raise ParamsError(f"{path}.builder: {exc}") from None
    check_values(ADAPTERS[key], cfg.options, f"{path}.options", f"adapter {key!r}")
    return f"adapter {key!r}", _keyword_options(ADAPTERS[key], {"raw_root", "out_root"}), None


def _declared_splits(fn: Any, args: tuple[Any, ...], options: dict[str, Any], path: str, what: str) -> list[str]:
    """The split names ``fn(*args, **options)`` declares; an option value it refuses is a :class:`ParamsError`."""
    try:
        return list(fn(*args, **options))
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"{path}.options: {what} refuses {options}: {exc}") from None


def check_splits(path: str, wanted: list[str], available: list[str], dataset: str) -> None:
    """Raise :class:`ParamsError` at ``path`` unless each wanted split is one of ``available`` or a ``prefix*``
    pattern matching at least one (checked by ``iqalab check`` where the builder declares its splits, and by the
    engine on the ingested dataset)."""
    for name in wanted:
        found = any(s.startswith(name[:-1]) for s in available) if name.endswith("*") else name in available
        if not found:
            raise ParamsError(f"{path}: dataset {dataset!r} has no split {name!r}; available: {available} "
                              "(a trailing * selects every split with that prefix)")


def check_names(params: Params) -> None:
    """Check the names params give to code: model names and keyword arguments (the model registry), dataset
    options (builder/adapter signatures), paper-table tags (:func:`known_table_tags`) and split names (the
    builder's declared splits, where known before ingest)."""
    from iqalab.models.registry import allowed_kwargs, get_model_class

    splits_of: dict[str, list[str] | None] = {}
    for name, cfg in params.datasets.items():
        what, allowed, splits_of[name] = dataset_options(cfg, f"datasets.{name}")
        for key in cfg.options:
            if key not in allowed:
                raise ParamsError(f"datasets.{name}.options.{key}: unknown option of {what}; allowed: {allowed}")
    tags = known_table_tags()
    for name, exp in params.experiments.items():
        try:
            cls = get_model_class(exp.model.name)
        except KeyError as exc:
            raise ParamsError(f"experiments.{name}.model.name: {exc.args[0]}") from None
        allowed_model = allowed_kwargs(cls)
        for key in params.model_kwargs(name):
            if key not in allowed_model:
                raise ParamsError(f"experiments.{name}.model.{key}: unknown parameter for model "
                                  f"{exp.model.name!r}; allowed: {sorted(allowed_model)}")
        check_values(cls.__init__, params.model_kwargs(name), f"experiments.{name}.model", f"model {exp.model.name!r}")
        for tag in exp.tables:
            if tag not in tags:
                raise ParamsError(f"experiments.{name}.tables: unknown table {tag!r}; known: {tags}")
        available = splits_of[exp.dataset]
        if available is not None:
            check_splits(f"experiments.{name}.splits", exp.splits, available, exp.dataset)


def _check_dataset() -> Any:
    """The stand-in dataset :func:`check_models_build` passes to a model's ``dataset_kwargs``: MOS range 0-1 and
    one scene (``check``) with one image, the attributes a ``dataset_kwargs`` reads (``mos_range``, ``images``,
    ``scenes``)."""
    import types

    import pandas as pd

    return types.SimpleNamespace(mos_range=(0.0, 1.0), scenes=["check"],
                                 images=pd.DataFrame({"image_id": ["check"], "scene": ["check"]}))


def check_models_build(params: Params, source: str = "params.yaml") -> None:
    """``iqalab check``'s last step: build every experiment's model once, without pretrained weights (on the meta
    device where the model allows: seconds), so that what only the constructor can judge (a backbone timm does not
    know, a width of -4) fails here with its key instead of at training. A ``pretrained:`` path (any string
    keyword whose name holds ``pretrained``) must name an existing file. Zero-shot ``pyiqa:`` models are not
    built, and a model whose optional package is missing (:class:`~iqalab.status.ModelUnavailable`: pyiqa) passes:
    training records that status in its row by design. What the engine reads from the training data
    (:meth:`iqalab.models.base.IQAModel.dataset_kwargs`: DB-CNN's ``mos_range`` for its linear head, the
    HyperIQA family's ``mos_span`` and scenes) comes from :func:`_check_dataset`, a one-scene stand-in on the
    0-1 scale, since the check runs before any dataset is built; a value set in the params wins, as in training.
    Errors start with ``source``."""
    import torch

    from iqalab.models.registry import build_model, get_model_class
    from iqalab.status import ModelUnavailable

    stand_in = _check_dataset()
    for name, exp in params.experiments.items():
        if exp.model.name.startswith("pyiqa:"):
            continue
        kwargs = params.model_kwargs(name)
        for key, value in kwargs.items():
            if "pretrained" in key and isinstance(value, str) and not Path(value).is_file():
                raise ParamsError(f"{source}: experiments.{name}.model.{key}: weights file {value} not found")
        try:
            derived = get_model_class(exp.model.name).dataset_kwargs(stand_in)
        except Exception:  # noqa: BLE001 - a model that needs more of a dataset than the stand-in: build without
            derived = {}
        build = {**derived, **{k: (False if "pretrained" in k else v) for k, v in kwargs.items()}}
        try:
            try:
                with torch.device("meta"):  # no memory, no initialisation
                    build_model(exp.model.name, ["quality"], key_path=f"experiments.{name}.model", **build)
            except Exception:  # noqa: BLE001 - a constructor that runs real tensors: build it for real
                build_model(exp.model.name, ["quality"], key_path=f"experiments.{name}.model", **build)
        except ModelUnavailable as exc:
            log.warning("experiments.%s: model %r not built by the check (%s)", name, exp.model.name, exc)
        except Exception as exc:  # noqa: BLE001 - constructors raise anything for a bad value: name the key
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            culprit = next((k for k, v in kwargs.items() if isinstance(v, str | int | float) and not isinstance(v, bool)
                            and repr(v) in text), None)
            where = f"experiments.{name}.model" + (f".{culprit}" if culprit else "")
            raise ParamsError(f"{source}: {where}: model {exp.model.name!r} cannot be built with {kwargs}: {text}"
                              ) from None


# ------------------------------------------------------------------------------------------ profiles as overlays
#: top-level key of an overlay profile: the params file it modifies, relative to the overlay's folder
BASE_KEY = "base"


@dataclass(frozen=True)
class _Layers:
    """The files a params mapping was composed from (base first) with their own mappings, so that an error names
    the file that sets the key."""

    files: tuple[tuple[str, dict[str, Any]], ...]

    def where(self, path: str) -> str:
        """The file that sets ``path`` (the topmost of those setting its longest prefix)."""
        parts = [p for p in path.split(".") if p]
        best, depth = self.files[-1][0], -1
        for name, raw in self.files:
            node: Any = raw
            n = 0
            for part in parts:
                key = part.split("[", 1)[0]
                if not isinstance(node, dict) or key not in node:
                    break
                node, n = node[key], n + 1
            if n >= depth:
                best, depth = name, n
        return best


def merge_overlay(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` applied to ``base``: mappings merge key by key (recursively), any other value replaces the
    base's, and ``null`` where the base holds a mapping removes that entry (``experiments.<e>: null`` drops an
    experiment). Neither input is modified."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None and isinstance(out.get(key), dict):
            del out[key]
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path.name}: the top level must be a mapping")
    return raw


def _layers(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    path = path.resolve()
    if path in chain:
        raise ParamsError(f"{chain[-1].name}: {BASE_KEY}: {path} is already part of this profile (a cycle)")
    raw = _read_yaml(path)
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return [(_display(path), raw)]
    if not isinstance(base, str):
        raise ParamsError(f"{_display(path)}: {BASE_KEY}: must be a path (relative to this file), got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ParamsError(f"{_display(path)}: {BASE_KEY}: {base_path} not found")
    below = _layers(base_path, (*chain, path))
    return [*below, (_display(path), raw)]


def _display(path: Path) -> str:
    """How errors name a params file: relative to the project root when inside it (``params/paper.yaml``), else
    its name."""
    try:
        return str(path.resolve().relative_to(project_root().resolve()))
    except ValueError:
        return path.name


def compose_params(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a params file with its ``base`` chain merged in (:func:`merge_overlay`), unvalidated."""
    return _merged(_layers(Path(path)))


def _merged(layers: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The layers of a profile, base first, merged into one raw mapping (:func:`merge_overlay`)."""
    raw: dict[str, Any] = {}
    for _, layer in layers:
        raw = merge_overlay(raw, layer)
    return raw


def dump_params(raw: dict[str, Any]) -> str:
    """A composed params mapping as YAML for ``params.yaml`` (key order kept, no anchors or aliases: DVC's
    ``-S`` loses overrides of aliased keys, docs/experiments.md)."""

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(raw, Dumper=_NoAliases, sort_keys=False, default_flow_style=None, width=118,
                     allow_unicode=True)


# ------------------------------------------------------------------------------------------------- entry points
def parse_params(raw: dict[str, Any], check_models: bool = True, source: str | _Layers = "params.yaml") -> Params:
    """Validate a params mapping: every key (pydantic), the references between sections, and with
    ``check_models`` the names given to code (:func:`check_names`: models, dataset options, tables, splits).

    Errors are one line per problem, ``<file>: <key path>: <message>``; for a composed profile the file is the
    one that sets the key.
    """
    layers = source if isinstance(source, _Layers) else _Layers(((source, raw if isinstance(raw, dict) else {}),))

    def located(problems: list[tuple[str, str]]) -> ParamsError:
        return ParamsError("; ".join(f"{layers.where(path)}: {path}: {msg}" for path, msg in problems))

    if not isinstance(raw, dict):
        raise ParamsError(f"{layers.files[-1][0]}: the top level must be a mapping")
    if "extra" in raw:
        raise located([("extra", "removed: gMAD and camera-tuning settings are the top-level sections 'gmad' and "
                                 f"'camera_tuning'; allowed keys: {sorted(Params.model_fields)}")])
    try:
        _reject_non_finite(raw)
    except ParamsError as exc:
        path, _, msg = str(exc).partition(": ")
        raise located([(path, msg)]) from None
    try:
        params = Params(**raw)
    except ValidationError as exc:
        raise located(_problems(exc)) from None
    try:  # the checks below raise "<key path>: <message>"
        params.check_references()
        for name in params.experiments:
            params.train_config(name)
        if check_models:
            check_names(params)
    except ParamsError as exc:
        path, _, msg = str(exc).partition(": ")
        raise located([(path, msg)]) from None
    return params


def load_params(path: str | Path | None = None, check_models: bool = True) -> Params:
    """Load and validate a params file (default: the project root's ``params.yaml``).

    A profile may be an overlay: a top-level ``base: <file>`` (relative to the profile's folder) names the params
    it modifies, and the profile holds only what differs (:func:`merge_overlay`; ``params/paper.yaml`` is one).
    The loaded params become the ones this process's provenance records name (:func:`iqalab.provenance.remember`).
    """
    path = Path(path) if path is not None else project_root() / "params.yaml"
    layers = _Layers(tuple(_layers(path)))
    params = parse_params(_merged(layers.files), check_models=check_models, source=layers)
    provenance.remember(params)
    return params
