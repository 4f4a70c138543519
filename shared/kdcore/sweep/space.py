"""A sweep's search space: recipe key paths (the ones ``--set`` takes) with Optuna distributions.

``SPACE.yaml``::

    objective: accuracy              # a validation metric the vertical declares
    params:
      student.kd_loss: {choices: [kd, dkd]}
      student.temperature: {low: 1.0, high: 8.0, log: true}   # floats: suggest_float
      student.train.epochs: {low: 5, high: 15, step: 5}      # ints: suggest_int

Every entry is checked before any training: each choice and both ends of each range are applied to the recipe
as ``--set`` would and the recipe is validated, so a key the recipe does not know, a value it would refuse, or a
key that would change the teachers (trained once per fold and shared by every trial) fails naming the entry.

Example:
    >>> from kdcore.config import Section, Field
    >>> class Student(Section):
    ...     temperature: float = Field(4.0, gt=0)
    >>> class Recipe(Section):
    ...     student: Student = Student()
    >>> _ = Recipe.model_rebuild()
    >>> space = parse_space({"objective": "accuracy", "params": {"student.temperature": {"low": 1.0, "high": 8.0}}},
    ...                     "space.yaml", {"accuracy": "maximize"})
    >>> check_space(space, Recipe, {}, trial_sections=("student",))
    >>> parse_space({"objective": "accuracy", "params": {"student.temperature": {"low": 8.0, "high": 1.0}}},
    ...             "space.yaml", {"accuracy": "maximize"})
    Traceback (most recent call last):
    ...
    kdcore.errors.ConfigError: space.yaml: params.student.temperature: low (8.0) must be below high (1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..config import apply_overrides, validate_recipe
from ..errors import ConfigError

__all__ = ["Param", "SweepSpace", "parse_space", "check_space", "load_space"]

SCALAR = (str, int, float, bool, type(None))


@dataclass
class Param:
    """One searched key: ``choices`` or a numeric range ``[low, high]`` (int when both ends are ints)."""

    key: str
    choices: list[Any] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)

    def probe_values(self) -> list[Any]:
        """The values that must all be valid for the entry to be accepted."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        if self.is_int:
            return trial.suggest_int(self.key, self.low, self.high, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass
class SweepSpace:
    objective: str
    direction: str
    params: list[Param]
    source: str = "space"
    extra: dict[str, Any] = field(default_factory=dict)

    def param(self, key: str) -> Param | None:
        return next((p for p in self.params if p.key == key), None)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_param(key: str, entry: Any, where: str) -> Param:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected {{choices: [...]}} or {{low: L, high: H}}, got {entry!r}")
    unknown = sorted(set(entry) - {"choices", "low", "high", "log", "step"})
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} (choices, low, high, log, step)")
    if "choices" in entry:
        if set(entry) - {"choices"}:
            raise ConfigError(f"{where}: choices cannot be combined with low/high/log/step")
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
        if any(not isinstance(c, SCALAR) for c in choices):
            raise ConfigError(f"{where}: choices must be scalars (text, numbers, true/false, null), got {choices!r}")
        if len({repr(c) for c in choices}) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value: {choices!r}")
        return Param(key, choices=list(choices))
    if "low" not in entry or "high" not in entry:
        raise ConfigError(f"{where}: a range needs both low and high (or give choices)")
    low, high = entry["low"], entry["high"]
    if not _number(low) or not _number(high):
        raise ConfigError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    step = entry.get("step")
    if step is not None:
        if not _number(step) or step <= 0:
            raise ConfigError(f"{where}: step must be a positive number, got {step!r}")
        if log:
            raise ConfigError(f"{where}: step and log cannot be combined")
    is_int = isinstance(low, int) and isinstance(high, int)
    if is_int and step is not None and not isinstance(step, int):
        raise ConfigError(f"{where}: an integer range needs an integer step, got {step!r} (write 1.0 and 8.0 for "
                          "a range of real numbers)")
    return Param(key, low=low, high=high, log=log, step=step)


def parse_space(data: Any, source: str, objectives: dict[str, str]) -> SweepSpace:
    """Check the shape of a space mapping; ``objectives`` maps each metric the vertical offers to its direction."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a sweep space must be a mapping with objective and params")
    unknown = sorted(set(data) - {"objective", "params"})
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} (objective, params)")
    objective = data.get("objective")
    if objective not in objectives:
        raise ConfigError(f"{source}: objective: must be one of {sorted(objectives)}, got {objective!r}")
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"{source}: params: must map recipe key paths to choices or ranges")
    parsed = []
    for key, entry in params.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{source}: params: {key!r} is not a recipe key path like student.temperature")
        parsed.append(_parse_param(key, entry, f"{source}: params.{key}"))
    return SweepSpace(objective, objectives[objective], parsed, source)


def _fixed_part(dump: dict, trial_sections: Sequence[str]) -> dict:
    return {k: v for k, v in dump.items() if k not in trial_sections}


def check_space(space: SweepSpace, schema: type, base: dict, trial_sections: Sequence[str]) -> None:
    """Apply every choice and both ends of every range to ``base`` and validate; refuse keys outside
    ``trial_sections`` whose value would change the teachers or the folds."""
    reference = _fixed_part(validate_recipe(schema, base).model_dump(mode="json"), trial_sections)
    for param in space.params:
        where = f"{space.source}: params.{param.key}"
        for value in param.probe_values():
            try:
                data = apply_overrides(base, [(param.key, value)])
            except ConfigError as exc:
                raise ConfigError(f"{where}: {str(exc).removeprefix('--set ')}") from None
            try:
                recipe = validate_recipe(schema, data, source=f"recipe with {param.key}={value!r}")
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if _fixed_part(recipe.model_dump(mode="json"), trial_sections) != reference:
                raise ConfigError(f"{where}: changes the teachers or the folds, which the sweep trains once per "
                                  f"fold and shares with every trial; only keys under {', '.join(trial_sections)} "
                                  "can be searched")


def load_space(path: Any, objectives: dict[str, str]) -> SweepSpace:
    from pathlib import Path

    from ..config import read_yaml

    if not Path(path).is_file():
        raise ConfigError(f"{path}: sweep space file not found")
    return parse_space(read_yaml(path), str(path), objectives)
