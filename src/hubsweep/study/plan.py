"""The study plan: everything that defines a study, parsed once into a frozen object.

`build_plans` turns the composed sweep config into one `StudyPlan` per arm. A plan is
plain, picklable data: workers receive it as it is and never re-parse the config. Its
`question` (metric, direction, seeds per trial, search space, the trial config with
machine-local paths left out, and fingerprints of the dataset files and the module) is
what a resumed study must match: the same study name asked a different question is
refused, naming what differs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hubsweep.config.paths import config_dir, require_name
from hubsweep.config.schema import GROUP_SCHEMAS, RunConfig
from hubsweep.config.sweep import SweepConfig
from hubsweep.config.validation import validate
from hubsweep.data.datasets import source_fingerprint
from hubsweep.errors import ConfigError
from hubsweep.metrics import METRICS, lower_is_better
from hubsweep.results.layout import study_dir
from hubsweep.study import storage
from hubsweep.study.algorithms import PRUNERS, SAMPLERS
from hubsweep.study.arms import STUDY_SETTINGS, experiment_arms, is_study_setting
from hubsweep.study.compose import ComposeSpec, compose_config, search_path_args
from hubsweep.study.space import Param, grid_size, parse_space
from hubsweep.study.tracking import CALLBACKS

log = logging.getLogger(__name__)

# Config keys that say where things are on this machine, not what the study asks.
# Settings that do not change a trial's numbers (paths of this machine, outputs): left out of
# the question, so changing them (or a release adding one) never refuses a resume.
MACHINE_LOCAL = (
    "output_dir",
    "results_dir",
    "cache_dir",
    "dataset.source_dir",
    "dataset.data_dir",
    "embedding.handle",
    "trainer.progress",
    "trainer.tensorboard",
    "trainer.learning_curve",
)


@dataclass(frozen=True)
class StudySettings:
    """`sweep.*` as one study uses them (defaults live in config.SweepConfig)."""

    study_name: str
    n_trials: int
    timeout_s: float | None
    metric: str
    direction: str
    sampler: str
    sampler_seed: int
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_steps: int
    pruner_percentile: float
    storage: str | None
    workers: int
    worker_threads: int
    population: int
    seeds_per_trial: int
    finalists: int
    finalist_seeds: int
    retrain_best_seeds: int
    stop_when_flat: bool
    flat_min_trials: int
    flat_noise: float
    warm_start: str | None
    warm_start_trials: int
    heartbeat_s: float
    grace_s: float
    max_environment_failures: int
    callbacks: tuple[str, ...]


@dataclass(frozen=True)
class StudyPlan:
    name: str  # the Optuna study name
    arm: str | None
    arm_index: int
    arm_overrides: tuple[str, ...]
    factors: tuple[tuple[str, str], ...]  # (config key, level) of a factorial experiment's arm
    directory: str
    storage: str  # never holds a password
    experiment_name: str
    settings: StudySettings
    params: tuple[Param, ...]
    compose: ComposeSpec
    cache_dir: str | None
    command: str
    question_json: str
    max_steps: int  # the most steps a trial can train: what multi-fidelity pruners count to

    @property
    def question(self) -> dict:
        return json.loads(self.question_json)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.question_json.encode()).hexdigest()[:16]

    def info(self) -> dict:
        """study.json: what the report and a resume need to know about this study."""
        return {
            "study_name": self.name,
            "storage": storage.mask(self.storage),
            "arm": self.arm,
            "arm_index": self.arm_index,
            "arm_overrides": list(self.arm_overrides),
            "factors": dict(self.factors),
            "experiment_name": self.experiment_name,
            "overrides": [storage.mask(o) for o in self.compose.overrides],
            "config_dirs": list(self.compose.search_path),
            "command": storage.mask(self.command),
            "sweep": {
                **{f.name: getattr(self.settings, f.name) for f in fields(StudySettings)},
                "storage": storage.mask(self.storage),
                "params": {p.name: p.as_dict() for p in self.params},
            },
            "fingerprint": self.fingerprint,
            "question": self.question,
        }


def no_search_space() -> ConfigError:
    """The error for a sweep with `sweep` unset, naming the spaces there are (hubsweep-sweep
    raises it before Hydra names the study directory after the space)."""
    spaces = sorted(p.stem for p in (config_dir() / "sweep").glob("*.yaml"))
    return ConfigError(
        f"sweep: no search space chosen; give sweep=<a space: {', '.join(spaces)}, or your "
        "own> or an experiment=... that names one"
    )


def _typed_sweep(cfg: DictConfig, choice: str | None) -> SweepConfig:
    """cfg.sweep checked against the schema, also for a user's YAML that does not extend it."""
    if cfg.sweep is None:
        raise no_search_space()
    where = f" (sweep={choice})" if choice else ""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SweepConfig), cfg.sweep)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = f"sweep.{e.full_key}" if getattr(e, "full_key", None) else "sweep"
        message = str(e).splitlines()[0]
        raise ConfigError(f"{key}{where}: {message}") from None


def _settings(s: SweepConfig) -> StudySettings:
    direction = s.direction or ("minimize" if lower_is_better(s.metric) else "maximize")
    checks = [
        (s.metric in METRICS, "sweep.metric", f"{s.metric!r} is not one of {', '.join(METRICS)}"),
        (direction in ("minimize", "maximize"), "sweep.direction", "minimize or maximize"),
        (s.sampler in SAMPLERS, "sweep.sampler", f"{s.sampler!r}: one of {', '.join(SAMPLERS)}"),
        (s.pruner in PRUNERS, "sweep.pruner", f"{s.pruner!r}: one of {', '.join(PRUNERS)}"),
        (s.n_trials > 0, "sweep.n_trials", "must be positive"),
        (s.workers > 0, "sweep.workers", "must be positive"),
        (s.worker_threads >= 0, "sweep.worker_threads", "must be >= 0 (0: cores ÷ workers)"),
        (s.population > 0, "sweep.population", "must be positive (1: one trial at a time)"),
        (s.seeds_per_trial > 0, "sweep.seeds_per_trial", "must be positive"),
        (s.finalists > 0, "sweep.finalists", "must be positive (1: the best trial wins)"),
        (s.finalist_seeds > 0, "sweep.finalist_seeds", "must be positive"),
        (s.retrain_best_seeds >= 0, "sweep.retrain_best_seeds", "must be >= 0"),
        (s.flat_min_trials >= 4, "sweep.flat_min_trials", "must be at least 4"),
        (s.flat_noise >= 0, "sweep.flat_noise", "must be >= 0"),
        (s.warm_start_trials > 0, "sweep.warm_start_trials", "must be positive"),
        (s.max_environment_failures > 0, "sweep.max_environment_failures", "must be positive"),
        (0 < s.heartbeat_s < s.grace_s, "sweep.grace_s", "must exceed sweep.heartbeat_s > 0"),
        (s.timeout_s is None or s.timeout_s > 0, "sweep.timeout_s", "must be positive or null"),
        *(
            (name in CALLBACKS, "sweep.callbacks", f"{name!r}: one of {', '.join(CALLBACKS)}")
            for name in s.callbacks
        ),
    ]
    for ok, key, problem in checks:
        if not ok:
            raise ConfigError(f"{key}: {problem}")
    require_name(s.study_name, "sweep.study_name")
    if s.storage and storage.is_sqlite(s.storage) and s.workers > 1:
        raise ConfigError(
            "sweep.storage: SQLite is not safe for several worker processes; leave "
            "sweep.storage unset (a journal file) or use postgresql://..."
        )
    values = {f.name: getattr(s, f.name) for f in fields(StudySettings)}
    return StudySettings(**{**values, "direction": direction, "callbacks": tuple(s.callbacks)})


def module_fingerprint(handle: str) -> str:
    from hubsweep.embeddings.features import module_fingerprint as content_hash

    if "://" in handle and not handle.startswith("file://"):
        return handle  # a TF-Hub handle names one published version
    try:
        return content_hash(handle)[:16]
    except OSError as e:
        raise ConfigError(f"embedding.handle: cannot read {handle!r}: {e}") from None


def _question(
    s: StudySettings, params: tuple[Param, ...], trial_cfg: DictConfig, hashed: dict[str, str]
) -> dict:
    """What the study asks. `hashed` keeps fingerprints across the arms of one experiment:
    arms usually share their data and module, and a module can be hundreds of MB."""
    handle = str(trial_cfg.embedding.handle)
    data_key = OmegaConf.to_yaml(trial_cfg.dataset)
    if handle not in hashed:
        hashed[handle] = module_fingerprint(handle)
    if data_key not in hashed:
        hashed[data_key] = source_fingerprint(trial_cfg.dataset)
    config = OmegaConf.to_container(trial_cfg, resolve=False)
    for key in (*STUDY_SETTINGS, *MACHINE_LOCAL, *(p.key for p in params)):
        parent, _, leaf = key.rpartition(".")
        node = config
        for part in parent.split(".") if parent else []:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return {
        "metric": s.metric,
        "direction": s.direction,
        "seeds_per_trial": s.seeds_per_trial,
        "params": {p.name: p.as_dict() for p in params},
        "config": config,
        "dataset": hashed[data_key],
        "module": hashed[handle],
    }


def build_plans(
    cfg: DictConfig,
    overrides: Sequence[str],
    compose: ComposeSpec,
    sweep_choice: str | None = None,
) -> list[StudyPlan]:
    """One plan per arm (one for a plain sweep), each checked to compose and validate."""
    settings = _settings(_typed_sweep(cfg, sweep_choice))
    params = parse_space(OmegaConf.to_container(cfg.sweep.params, resolve=True))
    for p in params:
        if OmegaConf.select(cfg, p.key, default="__missing__") == "__missing__":
            raise ConfigError(f"sweep.params.{p.name}.key: {p.key!r} is not a config key")
    if settings.sampler == "grid":
        size = grid_size(params)
        if settings.n_trials > size:
            log.info("grid of %d configs: n_trials lowered from %d", size, settings.n_trials)
            settings = replace(settings, n_trials=size)
    trial_overrides = tuple(o for o in overrides if not is_study_setting(o))
    # Runs as is: the config dirs the study was composed from come with it.
    command = shlex.join(["hubsweep-sweep", *search_path_args(compose.search_path), *overrides])
    hashed: dict[str, str] = {}
    plans = []
    for index, (arm, arm_overrides, factors) in enumerate(experiment_arms(cfg)):
        spec = ComposeSpec(
            compose.config_dir, compose.search_path, (*trial_overrides, *arm_overrides)
        )
        trial_cfg = _checked(spec, arm)
        directory = study_dir(cfg.results_dir, cfg.experiment_name, settings.study_name, arm)
        plans.append(
            StudyPlan(
                name=f"{settings.study_name}-{arm}" if arm else settings.study_name,
                arm=arm,
                arm_index=index,
                arm_overrides=arm_overrides,
                factors=factors,
                directory=str(directory),
                storage=storage.resolve(settings.storage, directory),
                experiment_name=cfg.experiment_name,
                settings=settings,
                params=params,
                compose=spec,
                cache_dir=cfg.cache_dir,
                command=command,
                question_json=json.dumps(
                    _question(settings, params, trial_cfg, hashed), sort_keys=True, default=str
                ),
                max_steps=_max_steps(params, trial_cfg),
            )
        )
    return plans


def _max_steps(params: tuple[Param, ...], trial_cfg: DictConfig) -> int:
    """The most steps a trial of the arm can train: the searched range's top, else the
    arm's trainer.steps."""
    for p in params:
        if p.key == "trainer.steps":
            return int(max(p.choices) if p.type == "categorical" else p.high)
    return int(trial_cfg.trainer.steps)


def _checked(spec: ComposeSpec, arm: str | None) -> DictConfig:
    """A trial's base config must compose and validate before any study starts."""
    where = f"arms.{arm}: " if arm else ""
    try:
        cfg = compose_config(spec, [])
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None
    except Exception as e:  # Hydra's composition errors name the bad override
        raise ConfigError(f"{where}{type(e).__name__}: {e}") from None
    return cfg


def describe_mismatch(stored: dict, asked: dict) -> list[str]:
    """`key: stored → asked` for each part of the question that differs."""
    diffs: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(
                    a.get(key, "<unset>"), b.get(key, "<unset>"), f"{where}.{key}" if where else key
                )
        elif a != b:
            diffs.append(f"{where}: {a!r} → {b!r}")

    walk(stored, asked, "")
    return diffs


def _schema_defaults(config: dict) -> dict:
    """The schemas' defaults for a run config's sections (a group's by its `name`)."""
    defaults = OmegaConf.to_container(OmegaConf.structured(RunConfig), resolve=False)
    for group, schemas in GROUP_SCHEMAS.items():
        section = config.get(group)
        name = section.get("name") if isinstance(section, dict) else None
        schema = next(iter(schemas.values())) if len(schemas) == 1 else schemas.get(name)
        if schema is not None:
            defaults[group] = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)
    return defaults


def with_new_defaults(stored: dict, asked: dict) -> tuple[dict, list[str]]:
    """The stored question with the settings a later release added, where this run leaves
    them at their defaults (`dataset.prefix_keys: []`): a study recorded before they
    existed asked the same question. Returns it and the dotted keys filled in."""
    upgraded, added = copy.deepcopy(stored), []
    defaults = _schema_defaults(asked.get("config", {}))

    def fill(old: dict, new: dict, default: Any, where: str) -> None:
        for key, value in new.items():
            path = f"{where}.{key}" if where else key
            default_value = default.get(key, "<none>") if isinstance(default, dict) else "<none>"
            if key not in old:
                if value == default_value:
                    old[key] = copy.deepcopy(value)
                    added.append(path)
            elif isinstance(old[key], dict) and isinstance(value, dict):
                fill(old[key], value, default_value, path)

    if isinstance(upgraded.get("config"), dict):
        fill(upgraded["config"], asked.get("config", {}), defaults, "")
    return upgraded, added
