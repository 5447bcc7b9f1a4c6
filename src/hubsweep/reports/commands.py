"""The commands that made a report's runs, for its "Reproduce" section: a grid's command line
from Hydra's `multirun.yaml`, a single run's from its `.hydra/` record, and a study
winner's re-runs from the study. Read as the runs left them; a run without Hydra's record
(made through the Python API) has no command to show, and none is made up."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hubsweep.config.paths import MAIN_CONFIG
from hubsweep.reports.collect import Run, Study
from hubsweep.reports.markdown import shown
from hubsweep.results.layout import (
    HYDRA_CONFIG_FILE,
    HYDRA_OVERRIDES_FILE,
    HYDRA_RECORD_DIR,
    MULTIRUN_FILE,
)
from hubsweep.study.compose import added_config_dirs, search_path_args


def _load(path: Path):
    try:
        return OmegaConf.load(path) if path.is_file() else None
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError):
        return None  # a record cut short (a full disk): no command, not a failed report


def _overrides(node) -> list[str]:
    """The overrides as typed: `${...}` in them stays unresolved, as Hydra reads them."""
    return [str(o) for o in OmegaConf.to_container(node, resolve=False)]


def _typed(source: str) -> str:
    """A config dir as the reader types it (Hydra records it absolute): relative to the
    working directory when inside it."""
    scheme, sep, path = source.partition("://")
    return f"{scheme}://{shown(Path(path))}" if sep and scheme == "file" else source


def _command(hydra, overrides: Sequence[str], multirun: bool) -> str | None:
    """`hubsweep-<job> [-m] [config dirs] overrides...` from Hydra's config of the command.
    Its hydra.* overrides (run and grid directories) are not Hydra's task overrides and are
    left out: a re-run writes a new directory."""
    try:
        job = str(hydra.job.name)
        dirs = [_typed(d) for d in added_config_dirs(hydra)]
        args = search_path_args(dirs)
        if hydra.job.config_name != MAIN_CONFIG:
            args = ["--config-name", str(hydra.job.config_name), *args]
    except (AttributeError, OmegaConfBaseException):
        return None
    return shlex.join([f"hubsweep-{job}", *(["-m"] if multirun else []), *args, *overrides])


def group_commands(runs: Sequence[Run]) -> list[str]:
    """The commands a directory's runs came from: a grid's one command line, or each single
    run's (distinct ones, in run order)."""
    if not runs:
        return []
    grid = _load(runs[0].directory.parent / MULTIRUN_FILE)
    if grid is not None and OmegaConf.select(grid, "hydra.overrides.task") is not None:
        command = _command(grid.hydra, _overrides(grid.hydra.overrides.task), multirun=True)
        return [command] if command else []
    commands: list[str] = []
    for run in runs:
        record = run.directory / HYDRA_RECORD_DIR
        overrides, hydra = _load(record / HYDRA_OVERRIDES_FILE), _load(record / HYDRA_CONFIG_FILE)
        if overrides is None or hydra is None or not OmegaConf.is_list(overrides):
            continue
        command = _command(hydra.hydra, _overrides(overrides), multirun=False)
        if command and command not in commands:
            commands.append(command)
    return commands


def retrain_commands(study: Study) -> list[str]:
    """A study winner's runs with test, one per seed, each beside the run it made."""
    dirs = search_path_args(study.info.get("config_dirs", []), shown(study.directory))
    lines = []
    for run in study.retrain:
        seed = run.setting("trainer.seed")
        args = [*dirs, "experiment=best", f"trainer.seed={seed}", "trainer.evaluate_test=true"]
        lines.append(f"{shlex.join(['hubsweep-train', *args])}   # {shown(run.directory)}")
    return lines
