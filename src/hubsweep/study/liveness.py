"""Which trials count toward `sweep.n_trials`, and what happens when a worker dies.

A trial counts when it finished (complete, pruned) or failed because of its own sampled
values (a reason is recorded). It does not count when its worker died (it is retried once
with the same parameters), when the environment failed it (a missing module, a full
disk: fixing that and re-running completes the budget), or when it was surplus.

A dead worker is found by its heartbeat: RDB storages use Optuna's own
(`RDBStorage(heartbeat_interval=...)` with `RetryHeartbeatStaleTrialCallback`); the
journal file has none, so a thread here beats into the trial's system attributes and the
same rule fails and retries stale trials.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from contextlib import AbstractContextManager

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)
# Optuna marks its heartbeat API experimental; it is the documented way to retry trials.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# Study.ask warns on every trial that an RDB heartbeat is meant for Study.optimize; asked
# trials here start Optuna's heartbeat thread themselves (`heartbeat`), as optimize does.
warnings.filterwarnings(
    "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
)

HEARTBEAT = "hubsweep:heartbeat"
FAIL_REASON = "fail_reason"  # the trial's own values failed it: it counts
ENV_FAILURE = "environment_failure"  # the environment failed it: it does not count
SURPLUS = "surplus"
HOST = "host"  # the machine a trial ran on: its run files live there
THREADS = "threads"  # TensorFlow's threads within an op in the worker that ran the trial
DIED_TWICE = "worker died twice"
INTERRUPTED = "interrupted"  # stopped by Ctrl-C: failed, not counted, queued again
RETRY_OF = "retry_of"  # the trial a queued retry repeats
# A trial's compute, summed over its runs: wall seconds (a population member's share),
# training seconds, and of the wall seconds those spent on cache builds (feature-cache
# entries and datasets' first loads, once per cache_dir: the first trial pays for the
# trials, and arms, after it);
# RUN_COSTS keeps each run's three so a re-check does not count it twice.
WALL_TIME = "wall_time_s"
TRAIN_TIME = "train_time_s"
CACHE_BUILD_TIME = "cache_build_s"
RUN_COSTS = "run_costs"
RUN_DIRS = "run_dirs"  # a trial's run directories, one per seed
WARM_START = "warm_start"  # enqueued from an earlier study (study/warm_start.py): its source


def compute_s(record: Mapping) -> float | None:
    """Compute as reports compare it, of a trial (its user attributes) or a run (its
    final.json, the same keys): wall seconds without the cache builds it paid for the
    trials and arms after it (which of them happened to pay says nothing about the
    configs); None where no wall time was recorded."""
    wall = record.get(WALL_TIME)
    return None if wall is None else float(wall) - float(record.get(CACHE_BUILD_TIME, 0.0))


def worker_host() -> str:
    """This machine's name, as a trial or a claim records it."""
    return socket.gethostname()


def mark_worker(trial) -> None:
    """Where a trial runs: the machine (its run files live there) and the threads of its
    worker's TensorFlow (its seconds depend on them; 0, TensorFlow's default, is every core
    this process may run on)."""
    import tensorflow as tf

    threads = tf.config.threading.get_intra_op_parallelism_threads()
    trial.set_user_attr(HOST, worker_host())
    trial.set_user_attr(THREADS, threads or usable_cores())


def usable_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def counts_toward_target(t: FrozenTrial) -> bool:
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and FAIL_REASON in t.user_attrs


def tally(trials: list[FrozenTrial]) -> tuple[int, int]:
    """(finished, running): trials that count toward n_trials, and trials running now.

    Waiting trials (retries) are not counted as taken: the next worker to ask runs them.
    """
    finished = sum(counts_toward_target(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return finished, running


def last_beat(t: FrozenTrial) -> float:
    start = t.datetime_start.timestamp() if t.datetime_start else 0.0
    return max(t.system_attrs.get(HEARTBEAT, 0.0), start)


def is_stale(t: FrozenTrial, grace_s: float, now: float) -> bool:
    """A running trial left by a stopped worker (the journal's rule; the report's too)."""
    return t.state == TrialState.RUNNING and now - last_beat(t) > grace_s


def waiting_note(trials: list[FrozenTrial], grace_s: float, now: float) -> str:
    """What a worker with nothing to run waits for, and for how long at most: trials running
    elsewhere, or left by a stopped worker, retried once their heartbeat is grace_s old."""
    running = [t for t in trials if t.state == TrialState.RUNNING]
    oldest = max((now - last_beat(t) for t in running), default=0.0)
    return (
        f"waiting for {len(running)} running trial(s): they run in another worker, or theirs "
        f"stopped; a stopped worker's trial is retried once its heartbeat is "
        f"sweep.grace_s={grace_s:g} s old (the oldest beat {oldest:.0f} s ago: within "
        f"{max(grace_s - oldest, 0):.0f} s)"
    )


def retry_once(study: optuna.Study, failed: FrozenTrial) -> None:
    """The stale-trial callback: retry a dead worker's trial once; the second time it
    counts as failed (`mark_second_deaths` gave it its reason while it still ran), so a
    trial that kills its worker cannot loop forever."""
    if failed.system_attrs.get("retry_history"):
        log.warning("trial %d: its worker died again; not retried", failed.number)
        return
    RetryHeartbeatStaleTrialCallback(max_retry=1)(study, failed)
    log.warning("trial %d: its worker stopped responding; retrying it", failed.number)


def mark_second_deaths(study: optuna.Study, stale: list[FrozenTrial]) -> None:
    """Give each stale trial that is already a retry its reason, `worker died twice`,
    before it is failed: Optuna refuses attributes on a finished trial (the reason written
    after failing it raised UpdateFinishedTrialError and stopped the sweep)."""
    for t in stale:
        if t.system_attrs.get("retry_history"):
            try:
                study._storage.set_trial_user_attr(t._trial_id, FAIL_REASON, DIED_TWICE)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it
                continue


def has_native_heartbeat(study: optuna.Study) -> bool:
    storage = study._storage
    return isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)


def recover_stale_trials(study: optuna.Study, grace_s: float) -> None:
    """Fail running trials whose worker stopped beating, and retry each once."""
    storage = study._storage
    if has_native_heartbeat(study):
        ids = storage._get_stale_trial_ids(study._study_id)
        mark_second_deaths(study, [storage.get_trial(i) for i in ids])
        optuna.storages.fail_stale_trials(study)
        return
    now = time.time()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale = [t for t in running if is_stale(t, grace_s, now)]
    mark_second_deaths(study, stale)
    for t in stale:
        try:
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # another worker failed it first
            continue
        retry_once(study, storage.get_trial(t._trial_id))


class _BeatThread:
    def __init__(self, study: optuna.Study, trial: optuna.Trial, every_s: float) -> None:
        self._stop = threading.Event()
        self._beat = lambda: study._storage.set_trial_system_attr(
            trial._trial_id, HEARTBEAT, time.time()
        )
        self._every_s = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self._beat()
            except Exception as e:  # a full disk, say: the trial's own writes will say so
                log.warning("heartbeat stopped: %s", e)
                return

    def __enter__(self) -> _BeatThread:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def heartbeat(study: optuna.Study, trial: optuna.Trial, every_s: float) -> AbstractContextManager:
    """Beat while a trial runs: the storage's own heartbeat (RDB), or ours (journal).

    Trials are asked and told (study/rounds.py), not run by `study.optimize`, which is
    what starts Optuna's heartbeat thread; without it a dead worker's trials would never go
    stale on PostgreSQL and the other workers would wait for them forever."""
    if has_native_heartbeat(study):
        return get_heartbeat_thread(trial._trial_id, study._storage)
    return _BeatThread(study, trial, every_s)
