"""How a trial's config is made: Hydra's compose API over the same config dirs and overrides
the command line used, so every trial is validated like any run."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hubsweep.config.paths import MAIN_CONFIG


@dataclass(frozen=True)
class ComposeSpec:
    """Hydra's primary config dir, the dirs added with --config-dir, and the overrides."""

    config_dir: str
    search_path: tuple[str, ...]
    overrides: tuple[str, ...]


def added_config_dirs(hydra_cfg) -> tuple[str, ...]:
    """Config dirs the command line added (--config-dir, hydra.searchpath), from Hydra's
    runtime config (a live one, or the `.hydra/hydra.yaml` a run keeps): trials need them."""
    added = ("command-line", "hydra.searchpath in command-line", "hydra.searchpath in main")
    return tuple(
        f"{source.schema}://{source.path}"
        for source in hydra_cfg.runtime.config_sources
        if source.provider in added
    )


def search_path_args(search_path: Sequence[str], config_dir: str | None = None) -> list[str]:
    """Command-line arguments that compose from the same config dirs again: `config_dir` as
    Hydra's --config-dir, and the dirs a study added (--config-dir, hydra.searchpath) as
    one `hydra.searchpath=[...]`, or as --config-dir when it is the only one."""
    args = ["--config-dir", config_dir] if config_dir else []
    dirs = list(search_path)
    if not config_dir and len(dirs) == 1 and dirs[0].startswith("file://"):
        return ["--config-dir", dirs[0].removeprefix("file://")]
    if dirs:
        args.append(f"hydra.searchpath=[{','.join(dirs)}]")
    return args


@contextmanager
def _hydra(spec: ComposeSpec):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hubsweep.config.schema import register_configs

    register_configs()  # a spawned worker starts with an empty ConfigStore
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=spec.config_dir, version_base="1.3"):
        yield


def compose_config(spec: ComposeSpec, extra: Sequence[str], with_hydra: bool = False) -> DictConfig:
    """The base config plus `extra` overrides, composed and type-checked by Hydra; config
    dirs given with --config-dir stay on the search path."""
    from hydra import compose

    search = [f"hydra.searchpath=[{','.join(spec.search_path)}]"] if spec.search_path else []
    with _hydra(spec):
        return compose(
            MAIN_CONFIG,
            overrides=[*search, *spec.overrides, *extra],
            return_hydra_config=with_hydra,
        )


def seeded_run(spec: ComposeSpec, extra: Sequence[str], k: int, run_dir: Path) -> DictConfig:
    """The k-th seed (trainer.seed + k) of a composed config, writing to `run_dir`."""
    return seeded(compose_config(spec, extra), k, run_dir)


class TrialComposer:
    """A study's trial configs from one Hydra composition.

    Composing takes Hydra ~0.5 s (it reads and merges the whole config tree), more than a
    frozen trial's training. Sampled values that set a leaf of the composed base config are
    set on a copy of it instead: the base holds the schema's typed nodes, so a value of the
    wrong type is refused as Hydra would refuse it. A sampled key that is not such a leaf
    (a config group choice, an unknown key) goes through Hydra, which composes it or
    names the problem.
    """

    def __init__(self, spec: ComposeSpec, extra: Sequence[str]) -> None:
        self.spec, self.extra = spec, tuple(extra)
        self._base: DictConfig | None = None

    @property
    def base(self) -> DictConfig:
        """The study's config before sampling."""
        if self._base is None:
            self._base = compose_config(self.spec, self.extra)
        return self._base

    def __call__(self, values: dict[str, Any]) -> DictConfig:
        base = self.base
        if not all(_is_leaf(base, key) for key in values):
            return compose_config(self.spec, [*self.extra, *param_overrides(values)])
        cfg = copy.deepcopy(base)
        try:
            for key, value in values.items():
                OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException:  # Hydra names the problem in its own words
            return compose_config(self.spec, [*self.extra, *param_overrides(values)])
        return cfg


def _is_leaf(cfg: DictConfig, key: str) -> bool:
    try:
        node = OmegaConf.select(cfg, key, throw_on_missing=False, throw_on_resolution_failure=False)
    except OmegaConfBaseException:
        return False
    return node is not None and not OmegaConf.is_config(node)


def seeded(cfg: DictConfig, k: int, run_dir: Path) -> DictConfig:
    """The k-th seed (trainer.seed + k) of a composed config, writing to `run_dir`."""
    run = {"trainer": {"seed": cfg.trainer.seed + k, "progress": False}, "output_dir": str(run_dir)}
    return OmegaConf.merge(cfg, run)


def param_overrides(params: dict) -> list[str]:
    return [f"{key}={value}" for key, value in params.items()]
