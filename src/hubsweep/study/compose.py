"""How a trial's config is made: Hydra's compose API over the same config dirs and overrides
the command line used, so every trial is validated like any run."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


@dataclass(frozen=True)
class ComposeSpec:
    """Hydra's primary config dir, the dirs added with --config-dir, and the overrides."""

    config_dir: str
    search_path: tuple[str, ...]
    overrides: tuple[str, ...]


@contextmanager
def _hydra(spec: ComposeSpec):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hubsweep.config import register_configs

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
            "config",
            overrides=[*search, *spec.overrides, *extra],
            return_hydra_config=with_hydra,
        )


def seeded_run(spec: ComposeSpec, extra: Sequence[str], k: int, run_dir: Path) -> DictConfig:
    """The k-th seed (trainer.seed + k) of a composed config, writing to `run_dir`."""
    base = compose_config(spec, extra)
    run = {
        "trainer": {"seed": base.trainer.seed + k, "progress": False},
        "output_dir": str(run_dir),
    }
    return OmegaConf.merge(base, run)


def param_overrides(params: dict) -> list[str]:
    return [f"{key}={value}" for key, value in params.items()]
