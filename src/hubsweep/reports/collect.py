"""Read a results directory as it is: single runs, multirun grids and Optuna studies,
finished or not. Nothing here trains or changes a study; missing pieces are recorded as
such (a run without final.json, a study whose workers died) rather than raised."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hubsweep.results.artifacts import RunFiles, read_run, run_from_record
from hubsweep.results.layout import (
    CONFIG_FILE,
    METRICS_FILE,
    REPORT_DIR,
    STUDY_INFO_FILE,
    STUDY_JOURNAL_FILE,
    RunStatus,
    holds_run,
    is_study_dir,
    retrain_run_dirs,
    trial_run_dir,
)
from hubsweep.study import storage as storages
from hubsweep.study.finalists import FINALISTS_ATTR, top_distinct
from hubsweep.study.flat import FLAT_ATTR
from hubsweep.study.liveness import (
    HOST,
    SURPLUS,
    WARM_START,
    counts_toward_target,
    is_stale,
    worker_host,
)
from hubsweep.study.retrain import RETRAIN_ATTR, RETRAIN_RUN_ATTR
from hubsweep.study.warm_start import WARM_START_ATTR

# Keys that differ between runs of one config without making it a different config.
RUN_IDENTITY_IGNORED = ("output_dir", "trainer.seed", "trainer.progress", "cache_dir")

Run = RunFiles


@dataclass
class RunGroup:
    """The runs of one directory (runs/ or one multirun/<time>/), by config."""

    name: str
    runs: list[Run]
    # The config keys that differ between the report's configs, this group's and the
    # others': what labels a config, so several grids' configs are told apart by settings.
    varying: list[str] = field(default_factory=list)

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
    finalists: dict = field(default_factory=dict)  # the race's summary (study.finalists)
    retrain_host: str | None = None  # where the re-runs' files are, when not here
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

    @property
    def raced(self) -> dict:
        """The finalists' race, if it raced the study's current top configs ({} otherwise:
        not raced, raced before more trials were added, or `sweep.finalists=1` now)."""
        race = self.finalists
        rows = race.get("finalists", [])
        if not race.get("raced") or self.sweep.get("finalists", 3) <= 1 or not rows:
            return {}
        current = top_distinct(self.trials, len(rows), self.minimize)
        return race if [t.number for t in current] == [f["trial"] for f in rows] else {}

    @property
    def winner(self) -> FrozenTrial | None:
        """The config the study settled on: the finalists' winner, else the best trial."""
        number = self.raced.get("winner")
        for t in self.by_state(TrialState.COMPLETE):
            if t.number == number:
                return t
        return self.best_trial

    def _attr(self, name: str) -> dict:
        value = self.optuna_study.user_attrs.get(name) if self.optuna_study else None
        return value if isinstance(value, dict) else {}

    @property
    def stopped_flat(self) -> dict:
        """The early stop's record (study/flat.py) where the search stopped when flat at its
        current budget; {} otherwise."""
        record = self._attr(FLAT_ATTR)
        target = self.sweep.get("n_trials")
        current = target is None or target <= record.get("n_trials", 0)
        return record if record and self.sweep.get("stop_when_flat") and current else {}

    @property
    def warm_started(self) -> list[FrozenTrial]:
        """Trials queued from an earlier study (sweep.warm_start): not random draws."""
        return [t for t in self.trials if t.user_attrs.get(WARM_START)]

    def warm_start_text(self) -> str:
        record = self._attr(WARM_START_ATTR)
        skipped = record.get("skipped", [])
        text = (
            f"warm start: {len(self.warm_started)} trial(s) queued from study "
            f"`{record.get('study', '?')}` (`{record.get('source', '?')}`), marked in the trials "
            "table"
        )
        if skipped:
            text += "; skipped: " + "; ".join(
                f"its trial {s['trial']} ({s['reason']})" for s in skipped
            )
        return text

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
        stale = [t for t in running if is_stale(t, grace, now)]
        if self.error:
            return (
                self.error if self.error.startswith("not opened") else f"unreadable: {self.error}"
            )
        if stale:
            return (
                f"crashed: {of} trials finished, {len(stale)} left running by a stopped "
                "worker; run the same command to resume"
            )
        if running:
            return f"running: {of} trials finished, {len(running)} running"
        if target and finished < target and self.stopped_flat:
            return f"stopped when flat: {of} trials finished"
        if target and finished < target:
            return f"partial: {of} trials finished; run the same command to resume"
        return f"finished: {of} trials"

    def elsewhere(self) -> dict[str, list[str]]:
        """Host -> what ran there and has no files under this study directory (another
        machine of the study: its trials are reported from the storage)."""
        here, hosts = worker_host(), {}
        for t in self.trials:
            host = t.user_attrs.get(HOST)
            if host and host != here and not holds_run(trial_run_dir(self.directory, t.number, 0)):
                hosts.setdefault(host, []).append(f"trial {t.number}")
        if self.retrain_host:
            hosts.setdefault(self.retrain_host, []).append("the best config's re-runs")
        return hosts

    def retrain_status(self) -> str:
        wanted = self.sweep.get("retrain_best_seeds", 0)
        done = sum(r.status == RunStatus.COMPLETED and r.test is not None for r in self.retrain)
        if not wanted and not self.retrain:
            return "best config not re-run (sweep.retrain_best_seeds=0)"
        return f"best config re-run with {done} of {max(wanted, len(self.retrain))} seeds"


def last_reported(trial: FrozenTrial) -> float | None:
    """The last intermediate value a trial reported (where a pruned trial stopped)."""
    if not trial.intermediate_values:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)]


def _read_info(directory: Path) -> tuple[dict, str | None]:
    path = directory / STUDY_INFO_FILE
    if not path.is_file():
        return {}, None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return {}, f"{STUDY_INFO_FILE} unreadable ({type(e).__name__})"
    if not isinstance(info, dict):
        return {}, f"{STUDY_INFO_FILE} unreadable (not an object)"
    return info, None


def _owned_by_user(path: Path) -> bool:
    stat = path.stat()
    return stat.st_uid == os.getuid() and not stat.st_mode & 0o002


def _storage_for(directory: Path, info: dict, allowed: Sequence[str]) -> tuple[str, str | None]:
    """The storage URL to read, or why it is not opened. A journal or SQLite file is read only
    where it exists; a database named by a study.json is connected to only when the user
    asked for it (--storage) or the study directory and its study.json are the user's own."""
    named = info.get("storage")
    if not named or storages.is_journal(named):
        return f"{storages.JOURNAL}{directory / STUDY_JOURNAL_FILE}", None
    url = named.replace(":***@", "@")  # a masked password is no password
    if url in allowed or storages.is_sqlite(url):
        return url, None
    owner_ok = _owned_by_user(directory) and _owned_by_user(directory / STUDY_INFO_FILE)
    if owner_ok:
        return url, None
    return url, (
        f"not opened: {STUDY_INFO_FILE} names the database {storages.mask(url)} but this "
        f"directory is not yours; pass --storage {storages.mask(url)} to read it"
    )


def read_study(directory: Path, allowed_storages: Sequence[str] = ()) -> Study:
    info, problem = _read_info(directory)
    name = info.get("study_name")
    label = name or directory.name
    storage_url, refused = _storage_for(directory, info, allowed_storages)
    if problem or refused:
        return Study(directory, label, info.get("arm"), info, storage_url, [], problem or refused)
    try:
        backend = storages.open_storage(storage_url, create=False)
        if name is None:  # a study from before study.json: its journal holds one study
            name = optuna.get_all_study_names(backend)[0]
        study = optuna.load_study(study_name=name, storage=backend)
        trials = study.get_trials(deepcopy=False)
    except Exception as e:
        error = storages.mask(str(e).splitlines()[0] if str(e) else type(e).__name__)
        return Study(directory, label, info.get("arm"), info, storage_url, [], error)
    found = Study(directory, name, info.get("arm"), info, storage_url, trials, optuna_study=study)
    raced = study.user_attrs.get(FINALISTS_ATTR)
    found.finalists = raced if isinstance(raced, dict) else {}
    best = found.winner
    if best is not None:
        found.retrain = _retrain_here(directory, study.user_attrs, best.number)
        if not found.retrain:
            found.retrain, found.retrain_host = _stored_retrain(study.user_attrs, best.number)
    return found


def _retrain_here(directory: Path, attrs: dict, best: int) -> list[Run]:
    """The best config's re-runs on this host: those the study's re-run summary names (the
    directory may also hold re-runs of seeds the study no longer uses, as a study resumed
    after `sweep.finalists=1` stopped re-running the search's own seed), else all there."""
    dirs = retrain_run_dirs(directory, best)
    summary = _retrain_summary(attrs, best)
    if summary and summary.get("run_dirs"):
        named = {Path(d).name for d in summary["run_dirs"]}
        dirs = [d for d in dirs if d.name in named]
    return [read_run(d) for d in dirs]


def _retrain_summary(attrs: dict, best: int) -> dict | None:
    """The study's stored re-run summary, if it is of the best trial's re-runs."""
    summary = attrs.get(RETRAIN_ATTR)
    return summary if isinstance(summary, dict) and summary.get("best_trial") == best else None


def _stored_retrain(attrs: dict, best: int) -> tuple[list[Run], str | None]:
    """The best config's re-runs as the host that ran them stored them in the storage."""
    summary = _retrain_summary(attrs, best)
    if summary is None:
        return [], None
    records = [attrs.get(RETRAIN_RUN_ATTR.format(k)) for k in range(summary.get("seeds", 0))]
    runs = [run_from_record(r) for r in records if isinstance(r, dict)]
    return runs, (summary.get("host") if runs else None)


@dataclass
class Results:
    root: Path
    studies: list[Study]
    groups: list[RunGroup]

    @property
    def empty(self) -> bool:
        return not self.studies and not any(g.runs for g in self.groups)


def _walk(root: Path, top: Path, seen: set[Path]) -> Iterator[Path]:
    """Directories below root, not descending into studies (their runs are the study's).
    A symlink is followed only to a directory inside `top` (the resolved results tree) not
    yet visited: never out of the tree, never round a loop."""
    try:
        # A multirun's job folders 0..n in job order (as text, 10 sorts before 2).
        children = sorted(
            (p for p in root.iterdir() if p.is_dir()),
            key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name),
        )
    except OSError:
        return
    for child in children:
        if child.name.startswith(".") or child.name == REPORT_DIR:
            continue
        real = child.resolve()
        if real in seen or (child.is_symlink() and not real.is_relative_to(top)):
            continue
        seen.add(real)
        yield child
        if not is_study_dir(child):
            yield from _walk(child, top, seen)


def collect(root: Path, allowed_storages: Sequence[str] = ()) -> Results:
    root_is_study = is_study_dir(root)
    top = root.resolve()
    below = [] if root_is_study else list(_walk(root, top, {top}))
    study_dirs = [root] if root_is_study else [d for d in below if is_study_dir(d)]
    # Arms of one experiment in the order it lists them.
    studies = sorted(
        (read_study(d, allowed_storages) for d in study_dirs),
        key=lambda s: (str(s.directory.parent), _arm_index(s), s.name),
    )
    by_parent: dict[Path, list[Run]] = {}
    for d in below:
        if (d / CONFIG_FILE).is_file() and (d / METRICS_FILE).is_file():
            by_parent.setdefault(d.parent, []).append(read_run(d))
    varying = _varying_keys([run for runs in by_parent.values() for run in runs])
    groups = [
        RunGroup(str(parent.relative_to(root)) if parent != root else ".", runs, varying)
        for parent, runs in by_parent.items()
    ]
    return Results(root, studies, groups)


def _arm_index(study: Study) -> int:
    index = study.info.get("arm_index", 0)
    return index if isinstance(index, int) else 0
