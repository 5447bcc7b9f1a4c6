"""One trial: compose its config, call `train_and_evaluate` with a pruning reporter, record.

A trial's failure is told apart by cause. The sampled values failed it (diverged, an
invalid combination): the reason is recorded and the trial counts toward the budget. The
environment failed it (a missing module or file, an unwritable directory, a full disk):
it is marked so, does not count, and the worker stops after a few in a row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import optuna
from omegaconf import DictConfig

from hubsweep.errors import HubsweepError, SetupError
from hubsweep.metrics import METRICS
from hubsweep.results.layout import RunStatus, trial_run_dir
from hubsweep.study.compose import TrialComposer, seeded
from hubsweep.study.liveness import (
    CACHE_BUILD_TIME,
    ENV_FAILURE,
    FAIL_REASON,
    RUN_COSTS,
    RUN_DIRS,
    SURPLUS,
    TRAIN_TIME,
    WALL_TIME,
    counts_toward_target,
    mark_worker,
)
from hubsweep.study.plan import StudyPlan

log = logging.getLogger(__name__)

# TensorFlow's own I/O errors, by name (importing TensorFlow here would slow every command).
_TF_ENVIRONMENT_ERRORS = ("NotFoundError", "PermissionDeniedError", "UnavailableError")


def is_environment_failure(error: BaseException) -> bool:
    if isinstance(error, OSError | ImportError | SetupError):
        return True
    return type(error).__name__ in _TF_ENVIRONMENT_ERRORS


class SurplusTrial(Exception):
    """Asked for beyond the budget (another worker took the last slot)."""


class TrialFailed(HubsweepError):
    """The trial's own values failed it (diverged): recorded, never a traceback."""


def plan_cache(plan: StudyPlan):
    """One trial cache for a process's runs of a plan: datasets loaded and frozen features
    embedded once (the feature cache on disk where `cache_dir` is usable)."""
    from hubsweep.embeddings.features import FeatureCache
    from hubsweep.training.trial_cache import TrialCache

    return TrialCache(FeatureCache.usable(plan.cache_dir))


class Objective:
    """Optuna's objective for one plan; tells the worker about environment failures."""

    def __init__(self, plan: StudyPlan, cache) -> None:
        self.plan, self.cache = plan, cache
        # Test never feeds the search; the learning-curve PNG waits for the study's end.
        self.compose = TrialComposer(
            plan.compose, ["trainer.evaluate_test=false", "trainer.learning_curve=false"]
        )
        self.environment_failures = 0  # in a row
        self.last_environment_error: str | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        from hubsweep.study.liveness import heartbeat

        self.check_budget(trial)
        mark_worker(trial)
        with heartbeat(trial.study, trial, self.plan.settings.heartbeat_s):
            return self.settle(trial, lambda: self.run_alone(trial, self.configs(trial)))

    def settle(self, trial: optuna.Trial, compute: Callable[[], float]) -> float:
        """`compute`'s value, or NaN (Optuna fails the trial) after recording why it failed;
        a pruned trial's TrialPruned and a bug's exception propagate."""
        try:
            value = compute()
        except optuna.TrialPruned:
            self.environment_failures = 0
            raise
        except Exception as e:
            self._record_failure(trial, e)
            if not isinstance(e, HubsweepError | OSError):
                raise  # a bug: Optuna logs it with its traceback
            # A clear error: the line above says it all; NaN makes Optuna fail the trial.
            return float("nan")
        self.environment_failures = 0
        return value

    def check_budget(self, trial: optuna.Trial) -> None:
        from optuna.trial import TrialState

        ahead = sum(
            counts_toward_target(t) or t.state in (TrialState.RUNNING, TrialState.WAITING)
            for t in trial.study.get_trials(deepcopy=False)
            if t.number < trial.number
        )
        if ahead >= self.plan.settings.n_trials:
            trial.set_user_attr(SURPLUS, True)
            raise SurplusTrial(f"trial {trial.number} is beyond n_trials")

    def _record_failure(self, trial: optuna.Trial, error: Exception) -> None:
        message = f"{type(error).__name__}: {error}"
        if is_environment_failure(error):
            self.environment_failures += 1
            self.last_environment_error = (
                str(error) if isinstance(error, HubsweepError) else message
            )
            trial.set_user_attr(ENV_FAILURE, message)
            log.error("trial %d failed outside its sampled values: %s", trial.number, error)
            return
        self.environment_failures = 0
        if FAIL_REASON not in trial.user_attrs:
            trial.set_user_attr(FAIL_REASON, message)
        log.error("trial %d failed: %s", trial.number, message)

    def configs(self, trial: optuna.Trial) -> list[DictConfig]:
        """The trial's runs: its sampled values, one config per seed."""
        cfg = self.compose({p.key: p.suggest(trial) for p in self.plan.params})
        cfgs = [
            seeded(cfg, k, trial_run_dir(self.plan.directory, trial.number, k))
            for k in range(self.plan.settings.seeds_per_trial)
        ]
        trial.set_user_attr(RUN_DIRS, [str(c.output_dir) for c in cfgs])
        return cfgs

    def run_alone(self, trial: optuna.Trial, cfgs: list[DictConfig]) -> float:
        """Train the trial's runs one after another (a pruned or diverged seed ends it)."""
        from hubsweep.training.run import train_and_evaluate

        results = []
        for k, cfg in enumerate(cfgs):
            reporter = self.reporter(trial) if k == 0 else None
            results.append(train_and_evaluate(cfg, reporter=reporter, cache=self.cache))
            check_run(trial, results[-1])
        return self.conclude(trial, results)

    def conclude(self, trial: optuna.Trial, results: list) -> float:
        """The trial's value from its runs' results (RunResult); records their metrics."""
        for result in results:
            check_run(trial, result)
        values = [r.final[self.plan.settings.metric] for r in results]
        _record_metrics(trial, [r.final for r in results], values)
        return float(np.mean(values))

    def reporter(self, trial: optuna.Trial):
        metric = self.plan.settings.metric

        def report(step: int, metrics: dict) -> bool:
            trial.report(metrics[metric], step)
            return trial.should_prune()

        return report


def check_run(trial: optuna.Trial, result) -> None:
    """Record a run's outcome on its trial; a stopped run prunes it, a diverged one fails it.

    The trial's compute is the sum over its runs (seeds): wall seconds (a population
    member's share of its program's, `wall_share_s`), training seconds, and of the wall
    seconds those that built feature-cache entries."""
    trial.set_user_attr("status", str(result.status))
    trial.set_user_attr("steps_done", result.steps_done)
    costs = dict(trial.user_attrs.get(RUN_COSTS, {}))
    costs[result.run_dir] = [result.wall_share_s, result.train_time_s, result.cache_build_s]
    trial.set_user_attr(RUN_COSTS, costs)
    for attr, i in ((WALL_TIME, 0), (TRAIN_TIME, 1), (CACHE_BUILD_TIME, 2)):
        # A run recorded before cache builds were counted has two entries.
        trial.set_user_attr(attr, round(sum(c[i] for c in costs.values() if len(c) > i), 3))
    if result.status == RunStatus.STOPPED:
        raise optuna.TrialPruned(f"pruned at step {result.steps_done}")
    if result.status == RunStatus.DIVERGED:
        reason = f"diverged at step {result.diverged_at_step}"
        trial.set_user_attr(FAIL_REASON, reason)
        raise TrialFailed(reason)


def _record_metrics(trial: optuna.Trial, finals: list[dict], values: list[float]) -> None:
    for key in METRICS:
        trial.set_user_attr(f"val_{key}", float(np.mean([f[key] for f in finals])))
    for name in finals[0]["per_class"]:
        f1 = np.mean([f["per_class"][name]["f1"] for f in finals])
        trial.set_user_attr(f"val_f1_{name}", float(f1))
    trial.set_user_attr("seed_values", [float(v) for v in values])
    trial.set_user_attr("value_std", float(np.std(values)))
