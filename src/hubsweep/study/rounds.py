"""Population rounds (`sweep.population=K`): K trials asked at once, trained together.

Optuna's ask-and-tell interface gives K trials (TPE's constant liar, on for populations,
counts the pending ones so it does not sample K near-copies); their runs that can train as
one population (`hubsweep.training.population.blocker`: a frozen module on cached features, an
optimizer the population implements, no dropout) do so, grouped by what the program cannot
vary per member (`group_key`). Each run reports its own validation scores to its own
trial, so the pruner stops members one by one. A trial whose runs cannot join a population
trains alone, as with K = 1. Every trial is then told its outcome with the rules of a
trial run alone (`Objective.settle`), and the study's callbacks see it.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from hubsweep.study.liveness import INTERRUPTED, RETRY_OF, heartbeat, mark_worker
from hubsweep.study.storage import StorageWriteError
from hubsweep.study.trial import Objective, SurplusTrial
from hubsweep.training.population import blocker, group_key

log = logging.getLogger(__name__)

Callback = Callable[[optuna.Study, FrozenTrial], None]
# A trial's runs' results (RunResult, one per seed), what stopped them, or (a trial that
# trains alone) the call that trains it.
Outcome = list | BaseException | Callable[[], float]


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """A Ctrl-C waits for the block to end (raised then), a second one does not: a block
    that storage writes hang can still be stopped. For the steps between which an interrupt
    would leave a trial RUNNING with nobody to fail it (a resume then waits `sweep.grace_s`
    for its heartbeat): asking (the storage makes the trial before the round holds it) and
    failing and requeueing the interrupted trials."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    caught: list[int] = []

    def defer(signum, frame) -> None:
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)
        log.warning("interrupt: waiting for the trial(s) to be recorded (Ctrl-C again stops now)")

    previous = signal.signal(signal.SIGINT, defer)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _ask(study: optuna.Study, objective: Objective, n: int) -> list[optuna.Trial]:
    trials = []
    for _ in range(n):
        trial = study.ask()
        try:
            objective.check_budget(trial)
        except SurplusTrial as e:
            log.info("%s", e)
            study.tell(trial, state=TrialState.FAIL)
            continue
        mark_worker(trial)
        trials.append(trial)
    return trials


def _prune_reporter(objective: Objective, trial: optuna.Trial, pruned: set[int]):
    """Seed 0 reports to the trial; the trial's other seeds stop when it is pruned."""
    report = objective.reporter(trial)

    def first(step: int, metrics: dict) -> bool:
        if report(step, metrics):
            pruned.add(trial.number)
            return True
        return False

    return first


def _train_group(
    objective: Objective,
    runs: Sequence[tuple[optuna.Trial, int, DictConfig]],
    outcomes: dict[int, Outcome],
) -> None:
    from hubsweep.training.run import train_population

    pruned: set[int] = set()
    reporters = [
        _prune_reporter(objective, trial, pruned)
        if k == 0
        else (lambda step, metrics, n=trial.number: n in pruned)
        for trial, k, _ in runs
    ]
    try:
        results = train_population([c for *_, c in runs], reporters, objective.cache)
    except Exception as e:  # every trial of the population shares the error
        for trial, _, _ in runs:
            outcomes[trial.number] = e
        return
    for (trial, _, _), result in zip(runs, results, strict=True):
        outcome = outcomes.setdefault(trial.number, [])
        if isinstance(outcome, list):
            outcome.append(result)


def _train(objective: Objective, trials: Sequence[optuna.Trial]) -> dict:
    """Each trial's outcome; trials whose runs cannot join a population run alone."""
    outcomes: dict[int, Outcome] = {}
    groups: dict[tuple, list] = defaultdict(list)
    alone: list[tuple[optuna.Trial, list[DictConfig]]] = []
    for trial in trials:
        try:
            cfgs = objective.configs(trial)
        except Exception as e:
            outcomes[trial.number] = e
            continue
        reasons = {blocker(c) for c in cfgs} - {None}
        if reasons:
            # Said where the user asked for populations; with K = 1 every trial trains alone.
            if objective.plan.settings.population > 1:
                log.info("trial %d trains alone: %s", trial.number, "; ".join(sorted(reasons)))
            alone.append((trial, cfgs))
            continue
        for k, cfg in enumerate(cfgs):
            groups[group_key(cfg)].append((trial, k, cfg))
    for runs in groups.values():
        _train_group(objective, runs, outcomes)
    for trial, cfgs in alone:
        # Trained when told, so its heartbeat keeps beating and its pruner sees the others.
        outcomes[trial.number] = partial(objective.run_alone, trial, cfgs)
    return outcomes


def _value(objective: Objective, trial: optuna.Trial, outcome: Outcome) -> float:
    if callable(outcome):
        return outcome()
    if isinstance(outcome, BaseException):
        raise outcome
    return objective.conclude(trial, outcome)


def _told(study: optuna.Study, trial: optuna.Trial, **outcome) -> FrozenTrial:
    """Tell the study; the grid sampler's request to stop is Optuna's RuntimeError outside
    `study.optimize`, raised after the trial's state is stored. The plan caps n_trials at
    the grid's size, so the worker stops anyway."""
    try:
        return study.tell(trial, **outcome)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise
        return study._storage.get_trial(trial._trial_id)


def _tell(
    study: optuna.Study,
    objective: Objective,
    trial: optuna.Trial,
    outcome: Outcome,
    beat: ExitStack,
    callbacks: Sequence[Callback],
) -> None:
    """Settle the trial (training it, if it trains alone) while it beats; stop its beat,
    then tell: a beat after the tell would write to a finished trial."""
    outcome_kwargs: dict
    try:
        value = objective.settle(trial, lambda: _value(objective, trial, outcome))
    except optuna.TrialPruned:
        outcome_kwargs = {"state": TrialState.PRUNED}
    except StorageWriteError:
        raise  # nothing can be told: the sweep stops with this one error
    except Exception:
        log.exception("trial %d failed", trial.number)  # a bug: with its traceback
        outcome_kwargs = {"state": TrialState.FAIL}
    else:
        failed = math.isnan(value)
        outcome_kwargs = {"state": TrialState.FAIL} if failed else {"values": value}
    beat.close()
    frozen = _told(study, trial, **outcome_kwargs)
    for callback in callbacks:
        callback(study, frozen)


def round_size(objective: Objective) -> int:
    """Trials a round asks for: `sweep.population`, or 1 when the study's runs cannot train
    as a population (asking for more would only blunt the sampler, see constant liar)."""
    why = blocker(objective.compose.base)
    if why and objective.plan.settings.population > 1:
        log.info("sweep.population: trials run one at a time here: %s", why)
        return 1
    return objective.plan.settings.population


def run_round(
    study: optuna.Study, objective: Objective, n: int, callbacks: Sequence[Callback]
) -> None:
    """Ask `n` trials, train them (as populations where they can), tell each its outcome."""
    s = objective.plan.settings
    trials: list[optuna.Trial] = []
    beats: dict[int, ExitStack] = {}
    told: set[int] = set()
    try:
        with _interrupts_deferred():
            trials = _ask(study, objective, n)
        beats = {trial.number: ExitStack() for trial in trials}
        for trial in trials:
            beats[trial.number].enter_context(heartbeat(study, trial, s.heartbeat_s))
        outcomes = _train(objective, trials)
        for trial in trials:
            _tell(study, objective, trial, outcomes[trial.number], beats[trial.number], callbacks)
            told.add(trial.number)
    except KeyboardInterrupt:
        # The next Ctrl-C waits for the requeue: a worker's parent passes the interrupt on
        # to workers the terminal's has reached already, and one that cut this short left
        # a trial running with nobody to fail it.
        with _interrupts_deferred():
            for beat in beats.values():
                beat.close()
            requeue_interrupted(study, [t for t in trials if t.number not in told])
        raise
    finally:
        for beat in beats.values():
            beat.close()


def requeue_interrupted(study: optuna.Study, trials: Sequence[optuna.Trial]) -> None:
    """Ctrl-C: fail the round's running trials at once and queue each again with the same
    values, as `study.optimize` fails an interrupted trial; a resume runs them first rather
    than waiting for their heartbeats to go stale."""
    for trial in trials:
        try:
            trial.set_user_attr(INTERRUPTED, True)
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
        except Exception as e:  # the storage itself is gone: the heartbeat rule retries it
            log.warning("trial %d: not requeued (%s)", trial.number, e)
