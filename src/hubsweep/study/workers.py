"""Workers: processes that run trials of one plan until the study has its budget.

`sweep.workers=N` (N > 1) starts N spawned processes, each with its share of this machine's
cores (`sweep.worker_threads`), and waits for them; one worker runs in this process. On
other machines the same `hubsweep-sweep` command against the same storage adds more. A
worker stops when the study has `n_trials` finished trials, when `sweep.timeout_s` passes,
when the search went flat (`sweep.stop_when_flat`, study/flat.py), or, with an error, after
`sweep.max_environment_failures` trials in a row failed for reasons outside their values.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import optuna

from hubsweep.errors import HubsweepError
from hubsweep.study import flat, storage
from hubsweep.study.algorithms import make_pruner, make_sampler
from hubsweep.study.liveness import (
    recover_stale_trials,
    retry_once,
    tally,
    usable_cores,
    waiting_note,
)
from hubsweep.study.plan import StudyPlan
from hubsweep.study.rounds import round_size, run_round
from hubsweep.study.tracking import make_callbacks
from hubsweep.study.trial import Objective, plan_cache

log = logging.getLogger(__name__)


class EnvironmentFailure(HubsweepError):
    """Trials keep failing for a reason outside their sampled values."""


def open_study_storage(plan: StudyPlan) -> optuna.storages.BaseStorage:
    s = plan.settings
    beat = storage.Heartbeat(s.heartbeat_s, s.grace_s, retry_once)
    return storage.open_storage(plan.storage, heartbeat=beat)


def _watch_parent(parent_pid: int) -> None:
    """A spawned worker ends when the sweep process that started it is gone (even SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def sampler_seed(base: int, index: int, existing: int) -> int:
    """The seed of worker `index`'s sampler when the study already holds `existing` trials.

    A fresh single-worker study uses `sweep.sampler_seed` itself, so it draws the same
    configs on every machine. Any other worker or invocation (a resume) needs its own
    stream: Optuna keeps no sampler state in the storage, so a resumed sampler would start
    its random draws over. Adding small integers to the seed does not give one, because
    MT19937 seeded with nearby integers starts with nearly equal draws (RandomState(0) and
    RandomState(3) both begin 0.55, 0.71), and the resumed study re-ran near-copies of its
    first configs; a SeedSequence of the three numbers mixes them into unrelated streams.
    """
    if index == 0 and existing == 0:
        return base
    return int(np.random.SeedSequence([base, index, existing]).generate_state(1)[0])


def thread_share(workers: int, worker_threads: int) -> int:
    """Threads for each of `workers` processes on this machine: `worker_threads`, else its
    cores (those this process may run on) shared evenly, at least one each."""
    return worker_threads or max(1, usable_cores() // workers)


def run_worker(plan: StudyPlan, index: int = 0, parent_pid: int | None = None) -> None:
    """Run trials until the study has `n_trials` finished trials (or the timeout passes)."""
    if parent_pid is not None:
        _watch_parent(parent_pid)
        logging.basicConfig(level=logging.INFO, format=f"[worker {index}] %(message)s")
        _limit_threads(thread_share(plan.settings.workers, plan.settings.worker_threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    s = plan.settings
    objective = Objective(plan, plan_cache(plan))
    population = round_size(objective)
    backend = open_study_storage(plan)
    existing = len(optuna.load_study(study_name=plan.name, storage=backend).trials)
    seed = sampler_seed(s.sampler_seed, index, existing)
    study = optuna.load_study(
        study_name=plan.name,
        storage=backend,
        # Trials of this round, or of the other workers here, are pending while this one
        # samples: TPE counts them (Optuna's constant liar) so as not to sample near-copies.
        sampler=make_sampler(s.sampler, plan.params, seed, pending=population > 1 or s.workers > 1),
        pruner=make_pruner(
            s.pruner,
            s.pruner_startup_trials,
            s.pruner_warmup_steps,
            s.pruner_percentile,
            plan.max_steps,
        ),
    )
    callbacks = make_callbacks(s.callbacks, plan.directory, s.metric)
    deadline = time.time() + s.timeout_s if s.timeout_s else math.inf
    poll_s = min(s.heartbeat_s, 5.0)
    waited_for = None
    while time.time() < deadline:
        recover_stale_trials(study, s.grace_s)
        trials = study.get_trials(deepcopy=False)
        finished, running = tally(trials)
        if finished >= s.n_trials:
            break
        if s.stop_when_flat and flat.check(study, s) is not None:
            if not running:
                break
            # Trials running elsewhere finish first: every host then races the same finalists.
            if waited_for != running:
                log.info("%s", waiting_note(trials, s.grace_s, time.time()))
                waited_for = running
            time.sleep(poll_s)
            continue
        if finished + running >= s.n_trials:
            if waited_for != running:  # said once per change, not at every poll
                log.info("%s", waiting_note(trials, s.grace_s, time.time()))
                waited_for = running
            time.sleep(poll_s)  # the remaining trials are running elsewhere
            continue
        waited_for = None
        # A fair share of what is left, so the other workers get trials too.
        share = math.ceil((s.n_trials - finished - running) / s.workers)
        run_round(study, objective, min(population, share), callbacks)
        if objective.environment_failures >= s.max_environment_failures:
            raise EnvironmentFailure(
                f"{objective.environment_failures} trials in a row failed for a reason outside "
                f"their sampled values: {objective.last_environment_error}. They do not count "
                f"toward sweep.n_trials; fix this and run the same command to finish the study"
            )


def _limit_threads(threads: int) -> None:
    """TensorFlow's thread pools of this process, before its first op creates them."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    log.info("%d thread(s) of TensorFlow", threads)


INTERRUPTED_EXIT = 130  # a process stopped by SIGINT, as shells report it
PASS_ON_AFTER_S = 2.0  # how long a Ctrl-C'd parent waits before interrupting its workers


def _child(plan: StudyPlan, index: int, parent_pid: int, errors) -> None:
    try:
        run_worker(plan, index, parent_pid)
    except HubsweepError as e:
        log.error("%s", e)
        errors.put(f"worker {index}: {e}")  # the parent's one error says what went wrong
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # its running trials are requeued; the parent says so
        # The parent passes the terminal's Ctrl-C on: a copy that lands now has nothing to
        # stop, and would print a traceback from the exit.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise SystemExit(INTERRUPTED_EXIT) from None


def run_workers(plan: StudyPlan) -> None:
    """One worker in this process, or `sweep.workers` spawned ones (this process then only
    waits, so its TensorFlow keeps every core for the finalists and re-runs after the
    search); an error in any is raised here."""
    if plan.settings.workers == 1:
        run_worker(plan)
        return
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.SimpleQueue()
    children = [
        ctx.Process(target=_child, args=(plan, i, os.getpid(), errors), daemon=False)
        for i in range(plan.settings.workers)
    ]
    for child in children:
        child.start()
    try:
        for child in children:
            child.join()
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches every worker; a SIGINT sent to this process alone
        # is passed on, so each worker requeues its own running trials before it ends. Passed
        # on only to workers still running a moment later: the terminal's has stopped the
        # others, and a second interrupt is one fewer for those busy requeueing.
        deadline = time.time() + PASS_ON_AFTER_S
        for child in children:
            child.join(timeout=max(deadline - time.time(), 0))
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signal.SIGINT)
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.terminate()
        raise
    finally:
        for child in children:
            child.join()
    failed = [i for i, c in enumerate(children) if c.exitcode not in (0, INTERRUPTED_EXIT)]
    if failed:
        said = []
        while not errors.empty():
            said.append(errors.get())
        raise EnvironmentFailure(
            "; ".join(said)
            or f"worker(s) {failed} of study {plan.name} stopped with an error (see sweep.log)"
        )
