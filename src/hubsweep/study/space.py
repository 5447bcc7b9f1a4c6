"""The search space: `sweep.params` parsed and checked once into frozen parameters.

Every mistake is one ConfigError naming the parameter (`sweep.params.<name>.<field>`):
a non-number bound, a one-value choice list, a zero or negative step, an unknown field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna

from hubsweep.errors import ConfigError

PARAM_TYPES = ("float", "int", "categorical")
FIELDS = ("key", "type", "low", "high", "log", "step", "choices")


@dataclass(frozen=True)
class Param:
    name: str
    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list:
        if self.type == "categorical":
            return list(self.choices)
        if self.step is None:
            raise ConfigError(f"sweep.params.{self.name}: the grid sampler needs choices or a step")
        values = np.arange(self.low, self.high + self.step / 2, self.step)
        return [int(v) for v in values] if self.type == "int" else [float(v) for v in values]

    def refuses(self, value: Any) -> str | None:
        """Why `value` is not a point of this parameter's space (None: it is); a value is
        never clipped into range (an enqueued trial must be what it says)."""
        if self.type == "categorical":
            ok = any(repr(value) == repr(c) for c in self.choices)
            return None if ok else f"{value!r} is not one of {list(self.choices)}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{value!r} is not a number"
        if self.type == "int" and value != int(value):
            return f"{value!r} is not an integer"
        if not self.low <= value <= self.high:
            return f"{value:.6g} lies outside [{self.low:g}, {self.high:g}]"
        if self.step is not None and not math.isclose(
            (value - self.low) / self.step, round((value - self.low) / self.step), abs_tol=1e-9
        ):
            return f"{value!r} is not on the step {self.step:g} from {self.low:g}"
        return None

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _number(where: str, value: Any, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: {value!r} is not {kind}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not finite")
    if integer and value != int(value):
        raise ConfigError(f"{where}: {value!r} is not an integer (type: int)")
    return float(value)


def _parse_one(name: str, spec: Any) -> Param:
    where = f"sweep.params.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: give a mapping with key, type and a range or choices")
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(FIELDS)}")
    key = spec.get("key")
    if not key or not isinstance(key, str):
        raise ConfigError(f"{where}.key: name the config key to search, e.g. trainer.steps")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(PARAM_TYPES)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if isinstance(choices, str) or not isinstance(choices, list | tuple):
            raise ConfigError(f"{where}.choices: a categorical parameter needs a list of choices")
        if len(set(map(repr, choices))) < 2:
            raise ConfigError(
                f"{where}.choices: {list(choices)} offers fewer than two distinct values; "
                "fix the value in the config instead of searching it"
            )
        return Param(name, key, kind, choices=tuple(choices))
    integer = kind == "int"
    low = _number(f"{where}.low", spec.get("low"), integer)
    high = _number(f"{where}.high", spec.get("high"), integer)
    if not low < high:
        raise ConfigError(f"{where}: needs low < high, got low={low:g} high={high:g}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: {log!r} is not true or false")
    if log and low <= 0:
        raise ConfigError(f"{where}.low: a log-scale range must be positive, got {low:g}")
    step = spec.get("step")
    if step is not None:
        step = _number(f"{where}.step", step, integer)
        if step <= 0:
            raise ConfigError(f"{where}.step: must be positive, got {step:g}")
        if step > high - low:
            raise ConfigError(f"{where}.step: {step:g} is larger than the range {low:g}..{high:g}")
        if log:
            raise ConfigError(f"{where}: log and step cannot be combined")
    return Param(name, key, kind, low, high, log, step)


def parse_space(params: Mapping[str, Any]) -> tuple[Param, ...]:
    """`sweep.params` (plain data) → parameters; raises ConfigError naming the parameter."""
    parsed = tuple(_parse_one(str(name), spec) for name, spec in params.items())
    if not parsed:
        raise ConfigError("sweep.params: the search space is empty")
    keys = [p.key for p in parsed]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ConfigError(f"sweep.params: {dupes} searched by more than one parameter")
    return parsed


def grid_size(params: tuple[Param, ...]) -> int:
    return math.prod(len(p.grid()) for p in params)
