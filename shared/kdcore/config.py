"""Recipes: YAML files loaded into typed, validated objects.

Every error names the full key path and the reason, e.g. ``student.temperature: must be > 0, got -1``,
and an unknown key suggests the closest valid one. ``--set a.b=value`` overrides are parsed as YAML
scalars and validated like the file itself.

Example:
    >>> class Student(Section):
    ...     temperature: float = Field(4.0, gt=0)
    >>> class Recipe(Section):
    ...     student: Student = Student()
    >>> _ = Recipe.model_rebuild()  # classes made inside a function or doctest must be rebuilt; module ones not
    >>> validate_recipe(Recipe, {"student": {"temperature": -1}})
    Traceback (most recent call last):
    ...
    kdcore.errors.ConfigError: invalid recipe:
      student.temperature: must be > 0, got -1
"""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

__all__ = ["read_yaml", "TeacherCacheSection", 
    "Section", "Field", "field_validator", "model_validator", "load_recipe", "validate_recipe", "parse_overrides", "apply_overrides",
    "TrainConfig", "SWAConfig", "CVConfig", "RuntimeConfig", "ConfigError", "Seed", "KeyedValueError",
]

T = TypeVar("T", bound=BaseModel)


class KeyedValueError(ValueError):
    """Raised by a section's validator about one of its keys: the message names ``<section>.<key>``."""

    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key = key


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# numpy's legacy seeding (used by DataLoader workers and many augmentations) takes 0 .. 2**32 - 1.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class SWAConfig(Section):
    """Stochastic weight averaging (torch.optim.swa_utils); when enabled the averaged model is the one kept."""

    enabled: bool = False
    start_epoch: int = Field(0, ge=0, description="0-based epoch from which weights are averaged")
    lr: float | None = Field(None, gt=0, description="SWALR target learning rate; None keeps the current one")
    anneal_epochs: int = Field(1, ge=1, description="SWALR anneal from the current lr to lr (torch's default is 10)")
    anneal_strategy: Literal["cos", "linear"] = "cos"
    on_plateau: Literal["start_swa", "stop"] = Field(
        "start_swa", description="early-stopping patience running out before the SWA phase: start that phase now "
                                 "(with its planned length), or stop training as KD-OCT's code does (patience then "
                                 "also applies during the SWA phase); either way the log and report say so")


class TrainConfig(Section):
    """How one model is trained by the engine; the same fields for teachers, students and baselines."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps per optimizer step")
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="learning rate of the head")
    backbone_lr: float | None = Field(None, gt=0, description="learning rate of the backbone; None = lr")
    weight_decay: float = Field(0.01, ge=0)
    filter_bias_and_bn: bool = Field(True, description="no weight decay on biases and normalisation weights (timm's "
                                                       "default); false decays every parameter, as KD-OCT's code")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    freeze_backbone_epochs: int = Field(0, ge=0)
    warmup_epochs: float = Field(0, ge=0)
    warmup_start_factor: float | None = Field(
        0.01, gt=0, le=1, description="lr factor of the first warm-up step, rising linearly to 1 when warm-up ends; "
                                      "None: (u + 1) / warmup for unit u, as KD-OCT's LambdaLR (full lr on the last "
                                      "warm-up unit)")
    schedule: Literal["cosine", "constant", "inverse_time"] = Field(
        "cosine", description="after warm-up: cosine to min_lr, constant, or lr / (1 + lr_decay * step) (Keras' "
                              "legacy optimizer `decay`, as the KD-Loss code's Adam(decay=1e-4))")
    schedule_per: Literal["step", "epoch"] = Field(
        "step", description="advance warm-up and schedule per optimizer step or once per epoch (KD-OCT's code)")
    schedule_epochs: int | None = Field(
        None, ge=1, description="length of the cosine in epochs; None = until the SWA start (or all epochs)")
    lr_decay: float = Field(0.0, ge=0, description="inverse_time schedule: decay per optimizer step")
    min_lr: float = Field(1e-6, ge=0)
    amp: bool = Field(False, description="mixed precision where the device supports it (see runtime.amp_dtype)")
    clip_grad_norm: float | None = Field(None, gt=0)
    patience: int | None = Field(None, ge=1, description="early-stopping patience in epochs; None disables it")
    swa: SWAConfig = SWAConfig()

    @model_validator(mode="after")
    def _check_epochs(self) -> "TrainConfig":
        if self.swa.enabled and self.swa.start_epoch >= self.epochs:
            raise ValueError(f"swa.start_epoch must be < epochs ({self.epochs}), got {self.swa.start_epoch}")
        if self.warmup_epochs >= self.epochs and self.epochs > 1:
            raise ValueError(f"warmup_epochs must be < epochs ({self.epochs}), got {self.warmup_epochs}")
        if self.schedule_per == "epoch" and not float(self.warmup_epochs).is_integer():
            raise ValueError(f"warmup_epochs must be a whole number with schedule_per: epoch, got {self.warmup_epochs}")
        if self.schedule == "inverse_time" and self.lr_decay == 0:
            raise ValueError("schedule inverse_time needs lr_decay > 0")
        return self


class CVConfig(Section):
    """Patient- (or subject-) level cross-validation."""

    folds: int = Field(5, ge=2)
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="share of each training part's patients kept for "
                                                                 "inner validation (rounded to whole patients, "
                                                                 "stratified by class; folds.json records the share "
                                                                 "obtained)")
    seed: Seed | None = Field(None, description="split seed; None = the recipe's seed")


class RuntimeConfig(Section):
    """Where and how to run; none of it changes the numbers of the default CPU path."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    workers: int = Field(0, ge=0, description="DataLoader worker processes")
    deterministic: bool = True
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = False
    compile: bool = False
    sync_batchnorm: bool = Field(False, description="under DDP on GPUs, BatchNorm over the global batch "
                                                    "(SyncBatchNorm) instead of each GPU's share")
    tensorboard: bool = False
    progress: bool = Field(True, description="progress bars (always off under CI or without a terminal)")


# ---------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicated keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` (YAML 1.1): own keys override merged ones
            continue
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise ConfigError(f"{loader.name}:{key_node.start_mark.line + 1}: a key must be a plain name, "
                              f"got a {type(key).__name__} (complex key `? ...`)")
        if key in seen:
            raise ConfigError(
                f"{loader.name}:{key_node.start_mark.line + 1}: duplicated key {key!r} "
                f"(first at line {seen[key] + 1})"
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; syntax errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read recipe ({exc})") from None
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


def parse_overrides(pairs: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse ``key.path=value`` strings; values are YAML scalars (``2``, ``true``, ``[a, b]``, ``null``)."""
    parsed = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {pair!r}: expected KEY.PATH=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair!r}: cannot parse value ({exc})") from None
        parsed.append((key, value))
    return parsed


def _unshared_copy(value: Any) -> Any:
    """A deep copy in which no two keys share a section: a YAML alias (``tolerant: *teacher``) becomes its own
    copy, so ``--set tough.lr=...`` changes the Tough teacher only (``copy.deepcopy`` would keep them shared)."""
    if isinstance(value, dict):
        return {k: _unshared_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared_copy(v) for v in value]
    return value


def apply_overrides(data: dict, overrides: Sequence[tuple[str, Any]]) -> dict:
    """Return a copy of ``data`` with each dotted key set; missing sections are created (and validated later)."""
    result = _unshared_copy(data)
    for key, value in overrides:
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def validate_recipe(schema: type[T], data: dict, source: str = "recipe") -> T:
    """Validate a plain dict against ``schema``; all problems are reported at once with key paths."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        lines = [_describe_error(schema, err) for err in exc.errors()]
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(lines)) from None


def load_recipe(
    schema: type[T],
    path: str | os.PathLike,
    overrides: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> T:
    """Load ``path``, apply ``--set`` overrides and ``extra`` dotted keys, and validate against ``schema``."""
    data = read_yaml(path)
    data = apply_overrides(data, parse_overrides(overrides))
    if extra:
        data = apply_overrides(data, list(extra.items()))
    return validate_recipe(schema, data, source=f"recipe {path}")


# ---------------------------------------------------------------- error messages

_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le")}


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or "<top level>"


def _strip_validator_names(loc: tuple) -> tuple:
    # Unions and tagged models add the branch type name to loc (e.g. 'float'); keep user keys only.
    return tuple(p for p in loc if isinstance(p, int) or not str(p).startswith(("function-", "union[")))


def _fields_at(schema: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = schema
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return []
        model = _unwrap_model(fields[part].annotation)
    return list(getattr(model, "model_fields", {}).keys())


def _unwrap_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _describe_error(schema: type[BaseModel], err: dict) -> str:
    loc = _strip_validator_names(tuple(err["loc"]))
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        valid = _fields_at(schema, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else (f" (valid keys: {', '.join(valid)})" if valid else "")
        return f"{_key_path(loc)}: unknown key{hint}"
    if kind == "missing":
        return f"{_key_path(loc)}: required key is missing"
    if kind in _BOUNDS:
        symbol, ctx_key = _BOUNDS[kind]
        bound = err["ctx"][ctx_key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"{_key_path(loc)}: must be {symbol} {bound}, got {value!r}"
    if kind == "literal_error":
        return f"{_key_path(loc)}: must be one of {err['ctx']['expected']}, got {value!r}"
    if kind == "value_error":
        error = err["ctx"]["error"]
        if isinstance(error, KeyedValueError):
            loc = loc + tuple(error.key.split("."))
        reason = str(error)
        return f"{_key_path(loc)}: {reason}" if loc else reason
    if kind == "model_type" or kind == "dict_type":
        return f"{_key_path(loc)}: must be a section (mapping of keys), got {value!r}"
    return f"{_key_path(loc)}: {err['msg'][0].lower() + err['msg'][1:]}, got {value!r}"


class TeacherCacheSection(Section):
    """A student's ``teacher_cache`` keys (kdcore.teacher_cache), the same in every vertical."""

    teacher_cache: Literal["off", "views", "pool"] = Field(
        "off", description="teacher outputs computed once per fold (run folder, kdcore.teacher_cache): views = "
                           "every (epoch, sample) view, same predictions as online KD; pool = FKD-style fixed pool "
                           "of teacher_cache_views views per image (an approximation)")
    teacher_cache_views: int = Field(8, ge=1, description="pool: augmented views kept per image")
    teacher_cache_dtype: Literal["auto", "float16", "float32"] = Field(
        "auto", description="cache storage; auto = float16 when the teacher(s) run under 16-bit autocast "
                            "(lossless), else float32")
