"""The arms an experiment runs, each its own study with the same search space, budget and
seeds: named arms (`arms: {name: [overrides]}`), or the product of factors (`factors:
{config key: [levels]}`, a factorial experiment whose report estimates each factor's main
effect and their interactions). Also which overrides set up the study rather than a trial.
"""

from __future__ import annotations

import itertools
import re

from omegaconf import DictConfig, OmegaConf

from hubsweep.errors import ConfigError

ARM_NAME = re.compile(r"^[A-Za-z0-9_]+$")
STUDY_SETTINGS = ("sweep", "hydra", "arms", "factors")

# (arm name or None, its overrides, its factor levels as (key, level))
Arm = tuple[str | None, tuple[str, ...], tuple[tuple[str, str], ...]]


def is_study_setting(override: str) -> bool:
    """sweep.*, hydra.*, arms.* and factors.* overrides set up the study; trials do not
    compose them."""
    return override.lstrip("+~").startswith(STUDY_SETTINGS)


def _level(value) -> str:
    """A level as an override writes it (YAML booleans are lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _level_name(level: str) -> str:
    """A level in an arm name: a path by its last part (modules/w2v-128d -> w2v_128d)."""
    return _slug(level.rstrip("/").rsplit("/", 1)[-1])


def _factor_arms(factors: DictConfig) -> list[Arm]:
    levels: dict[str, list[str]] = {}
    for key, values in factors.items():
        if not OmegaConf.is_list(values) or len(values) < 2:
            raise ConfigError(f"factors.{key}: give a list of two or more levels")
        values = [_level(v) for v in values]
        if len(set(values)) < len(values):
            raise ConfigError(f"factors.{key}: {values}: levels repeat")
        if is_study_setting(str(key)):
            raise ConfigError(f"factors.{key}: a factor sets a run setting, not a study one")
        levels[str(key)] = values
    short = {k: _slug(k.split(".")[-1]) for k in levels}
    if len(set(short.values())) < len(short):
        short = {k: _slug(k) for k in levels}
    arms = []
    for combo in itertools.product(*levels.values()):
        chosen = tuple(zip(levels, combo, strict=True))
        name = "__".join(f"{short[k]}_{_level_name(v)}" for k, v in chosen)
        arms.append((name, tuple(f"{k}={v}" for k, v in chosen), chosen))
    return arms


def experiment_arms(cfg: DictConfig) -> list[Arm]:
    if cfg.arms and cfg.factors:
        raise ConfigError("factors: an experiment has arms or factors, not both")
    if cfg.factors:
        return _factor_arms(cfg.factors)
    if not cfg.arms:
        return [(None, (), ())]
    found = []
    for name, overrides in cfg.arms.items():
        if not ARM_NAME.match(str(name)):
            raise ConfigError(f"arms.{name}: an arm name may use letters, digits and _ only")
        if not OmegaConf.is_list(overrides):
            raise ConfigError(f"arms.{name}: give a list of overrides, e.g. [model=mlp]")
        for o in overrides:
            if is_study_setting(str(o)):
                raise ConfigError(
                    f"arms.{name}: {o!r}: arms share the study settings; override run settings only"
                )
        found.append((str(name), tuple(str(o) for o in overrides), ()))
    return found
