"""Read a results directory as it is: single runs, multirun grids and Optuna studies,
finished or not. Nothing here trains or changes a study; missing pieces are recorded as
such (a run without final.json, a study whose workers died) rather than raised."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState

from hubsweep.artifacts import CONFIG_FILE, FINAL_FILE, METRICS_FILE
from hubsweep.best import RETRAIN_DIR, RETRAIN_RUN
from hubsweep.sweep import (
    HEARTBEAT,
    INFO_FILE,
    STUDY_FILE,
    SURPLUS,
    counts_toward_target,
    open_storage,
)

CURVE_COLUMNS = ("step", "loss", "accuracy", "macro_precision", "macro_recall", "macro_f1")
# Keys that differ between runs of one config without making it a different config.
RUN_IDENTITY_IGNORED = ("output_dir", "trainer.seed", "trainer.progress", "cache_dir")


@dataclass
class Run:
    directory: Path
    config: dict
    final: dict | None  # None: the run has not finished (running, or killed)
    history: pd.DataFrame  # one row per validation evaluation

    @property
    def status(self) -> str:
        return self.final["status"] if self.final else "incomplete"

    @property
    def test(self) -> dict | None:
        return self.final.get("test") if self.final else None

    @cached_property
    def flat(self) -> dict[str, Any]:
        """The config as dotted key -> value."""
        return flat_config(self.config)

    def setting(self, key: str) -> Any:
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def read_run(directory: Path) -> Run:
    config_path = directory / CONFIG_FILE
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    final_path = directory / FINAL_FILE
    final = json.loads(final_path.read_text()) if final_path.is_file() else None
    rows = []
    metrics_path = directory / METRICS_FILE
    if metrics_path.is_file():
        for line in metrics_path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the last line of a run killed mid-write
                continue
            if record.get("split") == "validation":
                rows.append({k: record.get(k) for k in CURVE_COLUMNS})
    history = pd.DataFrame(rows, columns=list(CURVE_COLUMNS), dtype=float)
    return Run(directory, config or {}, final, history)


def flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


@dataclass
class RunGroup:
    """The runs of one directory (runs/ or one multirun/<time>/), by config."""

    name: str
    runs: list[Run]
    varying: list[str] = field(default_factory=list)  # config keys that differ between configs

    def configs(self) -> list[tuple[dict[str, Any], list[Run]]]:
        """(the varying settings, the runs with them) per distinct config; seeds pooled."""
        grouped: dict[tuple, tuple[dict, list[Run]]] = {}
        for run in self.runs:
            identity = tuple(
                sorted((k, repr(v)) for k, v in run.flat.items() if k not in RUN_IDENTITY_IGNORED)
            )
            settings = {k: run.flat.get(k) for k in self.varying}
            grouped.setdefault(identity, (settings, []))[1].append(run)
        return list(grouped.values())


def _varying_keys(runs: list[Run]) -> list[str]:
    flats = [r.flat for r in runs]
    keys = sorted({k for f in flats for k in f} - set(RUN_IDENTITY_IGNORED))
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def best_model(runs: Sequence[Run], metric: str, minimize: bool) -> Run | None:
    """The seed with the best validation score (test never selects)."""
    tested = [r for r in runs if r.test and r.final.get("final")]
    if not tested:
        return None
    pick = min if minimize else max
    return pick(tested, key=lambda r: r.final["final"][metric])


@dataclass
class Study:
    directory: Path
    name: str
    arm: str | None
    info: dict  # study.json: storage, command, sweep settings
    storage: str  # the storage URL it was read from
    trials: list[FrozenTrial]
    error: str | None = None  # the storage could not be read
    retrain: list[Run] = field(default_factory=list)
    optuna_study: optuna.Study | None = None

    @property
    def label(self) -> str:
        return self.arm or self.name

    @property
    def sweep(self) -> dict:
        return self.info.get("sweep", {})

    @property
    def metric(self) -> str:
        return self.sweep.get("metric", "macro_f1")

    @property
    def minimize(self) -> bool:
        return self.optuna_study is not None and self.optuna_study.direction.name == "MINIMIZE"

    def by_state(self, state: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == state and not t.user_attrs.get(SURPLUS)]

    @property
    def failed(self) -> list[FrozenTrial]:
        """Trials that failed on their own (diverged, bad config); not those retried."""
        return [t for t in self.by_state(TrialState.FAIL) if counts_toward_target(t)]

    @property
    def best_trial(self) -> FrozenTrial | None:
        complete = self.by_state(TrialState.COMPLETE)
        if not complete:
            return None
        pick = min if self.minimize else max
        return pick(complete, key=lambda t: t.value)

    def param_names(self) -> dict[str, str]:
        """Config key -> the search space's short name (lr, batch, ...)."""
        params = self.sweep.get("params", {})
        names = {spec["key"]: name for name, spec in params.items() if "key" in spec}
        for t in self.trials:
            for key in t.params:
                names.setdefault(key, key)
        return names

    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        target = self.sweep.get("n_trials")
        finished = sum(counts_toward_target(t) for t in self.trials)
        of = f"{finished} of {target}" if target else f"{finished}"
        grace = self.sweep.get("grace_s", 120.0)
        running = self.by_state(TrialState.RUNNING)
        stale = [t for t in running if now - _last_beat(t) > grace]
        if self.error:
            return f"unreadable: {self.error}"
        if stale:
            return (
                f"crashed: {of} trials finished, {len(stale)} left running by a stopped "
                "worker; run the same command to resume"
            )
        if running:
            return f"running: {of} trials finished, {len(running)} running"
        if target and finished < target:
            return f"partial: {of} trials finished; run the same command to resume"
        return f"finished: {of} trials"

    def retrain_status(self) -> str:
        wanted = self.sweep.get("retrain_best_seeds", 0)
        done = sum(r.status == "completed" and r.test is not None for r in self.retrain)
        if not wanted and not self.retrain:
            return "best config not re-run (sweep.retrain_best_seeds=0)"
        return f"best config re-run with {done} of {max(wanted, len(self.retrain))} seeds"


def last_reported(trial: FrozenTrial) -> float | None:
    """The last intermediate value a trial reported (where a pruned trial stopped)."""
    if not trial.intermediate_values:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)]


def _last_beat(trial: FrozenTrial) -> float:
    start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return max(trial.system_attrs.get(HEARTBEAT, 0.0), start)


def _seed_number(run_dir: Path) -> int:
    match = re.search(r"seed(\d+)$", run_dir.name)
    return int(match.group(1)) if match else 0


def read_study(directory: Path) -> Study:
    info_path = directory / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    storage_url = info.get("storage") or f"journal:{directory / STUDY_FILE}"
    name = info.get("study_name")
    try:
        storage = open_storage(storage_url)
        if name is None:  # a study from before study.json: its journal holds one study
            name = optuna.get_all_study_names(storage)[0]
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    except Exception as e:
        label = name or directory.name
        return Study(directory, label, info.get("arm"), info, storage_url, [], str(e))
    found = Study(directory, name, info.get("arm"), info, storage_url, trials, optuna_study=study)
    best = found.best_trial
    if best is not None:
        pattern = RETRAIN_RUN.format(trial=best.number, seed="*")
        dirs = sorted((directory / RETRAIN_DIR).glob(pattern), key=_seed_number)
        found.retrain = [read_run(d) for d in dirs if d.is_dir()]
    return found


@dataclass
class Results:
    root: Path
    studies: list[Study]
    groups: list[RunGroup]

    @property
    def empty(self) -> bool:
        return not self.studies and not any(g.runs for g in self.groups)


def _is_study(directory: Path) -> bool:
    return (directory / INFO_FILE).is_file() or (directory / STUDY_FILE).is_file()


def _walk(root: Path) -> Iterator[Path]:
    """Directories below root, not descending into studies (their runs are the study's)."""
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if child.name.startswith(".") or child.name == "report":
            continue
        yield child
        if not _is_study(child):
            yield from _walk(child)


def collect(root: Path) -> Results:
    below = [] if _is_study(root) else list(_walk(root))
    study_dirs = [root] if _is_study(root) else [d for d in below if _is_study(d)]
    # Arms of one experiment in the order it lists them.
    studies = sorted(
        (read_study(d) for d in study_dirs),
        key=lambda s: (str(s.directory.parent), s.info.get("arm_index", 0), s.name),
    )
    by_parent: dict[Path, list[Run]] = {}
    for d in below:
        if (d / CONFIG_FILE).is_file() and (d / METRICS_FILE).is_file():
            by_parent.setdefault(d.parent, []).append(read_run(d))
    groups = []
    for parent, runs in by_parent.items():
        name = str(parent.relative_to(root)) if parent != root else "."
        groups.append(RunGroup(name, runs, _varying_keys(runs)))
    return Results(root, studies, groups)
