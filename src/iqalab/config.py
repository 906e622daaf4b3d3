"""``params.yaml``: the single source of truth, loaded with ``yaml.safe_load`` and validated with pydantic.

Every section forbids unknown keys, so a typo fails with the key's path and the allowed keys (papermill would
silently accept an unknown parameter; notebooks therefore receive only names - a dataset or an experiment - and
read everything else through :func:`load_params`). Experiments inherit ``train_defaults`` and override any of its
keys; model keyword arguments are checked against the registered model's constructor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from iqalab.io import project_root

SectionT = TypeVar("SectionT", bound=BaseModel)


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
    detect_faces: bool = Field(False, description="run the face detector at ingest when boxes are unknown")


class TrainConfig(_Strict):
    """Training recipe; experiments override any key."""

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    step_epochs: list[int] = Field(default_factory=list, validate_default=True,
                                   description="epochs where 'step' divides lr by gamma")
    gamma: float = Field(0.1, gt=0)
    crop: int | None = Field(224, gt=15, description="random-crop size in training; None = whole cached image")
    flip: bool = True
    vflip: bool = False
    eval_crop: int | None = Field(None, gt=15, description="centre crop at evaluation; None = whole image")
    patience: int = Field(0, ge=0, description="early stopping patience in epochs on the monitored metric (0 = off)")
    monitor: Literal["val_srcc", "val_loss", "train_loss"] = "val_srcc"
    num_workers: int = Field(0, ge=0)
    amp: bool = True
    channels_last: bool = True
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
    """Evaluation options (``04_evaluate``)."""

    logistic: bool = True
    bootstrap: int = Field(200, ge=0)
    fine_pairs_only: bool = True


class Params(_Strict):
    """Top level of ``params.yaml``."""

    seed: int = 0
    profile: str = "default"
    datasets: dict[str, DatasetConfig]
    train_defaults: TrainConfig = Field(default_factory=TrainConfig)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    extra: dict[str, Any] = Field(default_factory=dict, description="settings of stages added later (gmad, ...)")

    @field_validator("datasets")
    @classmethod
    def _non_empty(cls, value: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        if not value:
            raise ValueError("at least one dataset is needed")
        return value

    @model_validator(mode="after")
    def _experiments_reference_datasets(self) -> Params:
        for name, exp in self.experiments.items():
            if exp.dataset not in self.datasets:
                raise ValueError(
                    f"experiments.{name}.dataset: unknown dataset {exp.dataset!r}; defined: {sorted(self.datasets)}"
                )
        return self

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


def _format(exc: ValidationError, prefix: str = "", allowed: list[str] | None = None) -> str:
    """One line per error with its key path; ``allowed`` lists the keys of a flat section (else looked up)."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc)
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key; allowed keys: {allowed if allowed is not None else _allowed_keys(loc)}")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def validate_section(model: type[SectionT], raw: Any, prefix: str) -> SectionT:
    """Validate a stage's settings block (e.g. ``extra.gmad``) with the same one-line, key-path errors as the
    rest of ``params.yaml``; a missing block gives the model's defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{prefix}: must be a mapping, got {type(raw).__name__}")
    try:
        return model(**raw)
    except ValidationError as exc:
        raise ParamsError(_format(exc, prefix=prefix, allowed=sorted(model.model_fields))) from None


def _reject_non_finite(node: Any, path: str = "") -> None:
    if isinstance(node, float) and not math.isfinite(node):
        raise ParamsError(f"{path or '<root>'}: NaN/inf is not allowed")
    if isinstance(node, dict):
        for key, value in node.items():
            _reject_non_finite(value, f"{path}.{key}" if path else str(key))
    if isinstance(node, list):
        for i, value in enumerate(node):
            _reject_non_finite(value, f"{path}[{i}]")


def parse_params(raw: dict[str, Any], check_models: bool = True, source: str = "params.yaml") -> Params:
    """Validate a params mapping; with ``check_models`` also the model kwargs against the registry."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping")
    _reject_non_finite(raw)
    try:
        params = Params(**raw)
    except ValidationError as exc:
        raise ParamsError(f"{source}: {_format(exc)}") from None
    for name in params.experiments:
        params.train_config(name)
    if check_models:
        from iqalab.models.registry import allowed_kwargs, get_model_class

        for name, exp in params.experiments.items():
            try:
                cls = get_model_class(exp.model.name)
            except KeyError as exc:
                raise ParamsError(f"{source}: experiments.{name}.model.name: {exc.args[0]}") from None
            allowed = allowed_kwargs(cls)
            for key in params.model_kwargs(name):
                if key not in allowed:
                    raise ParamsError(
                        f"{source}: experiments.{name}.model.{key}: unknown parameter for model "
                        f"{exp.model.name!r}; allowed: {sorted(allowed)}"
                    )
    return params


def load_params(path: str | Path | None = None, check_models: bool = True) -> Params:
    """Load and validate ``params.yaml`` (default: the project root's)."""
    path = Path(path) if path is not None else project_root() / "params.yaml"
    if not path.is_file():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    return parse_params(raw, check_models=check_models, source=str(path.name))
