"""`hubsweep-sweep`: plan the studies, open each (refusing a changed question), run its
workers, then race the finalists, write the winner's preset and re-run it over seeds."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from hubsweep.config.paths import ensure_writable
from hubsweep.errors import ConfigError, Interrupted
from hubsweep.results.artifacts import draw_learning_curve, read_metrics
from hubsweep.results.layout import (
    CURVE_FILE,
    STUDY_INFO_FILE,
    SUMMARY_FILE,
    holds_run,
    trial_run_dir,
)
from hubsweep.study import flat, storage
from hubsweep.study.compose import ComposeSpec
from hubsweep.study.finalists import race
from hubsweep.study.liveness import tally
from hubsweep.study.plan import StudyPlan, build_plans, describe_mismatch, with_new_defaults
from hubsweep.study.retrain import retrain_best, write_best_preset
from hubsweep.study.warm_start import warm_start
from hubsweep.study.workers import open_study_storage, run_workers

log = logging.getLogger(__name__)


QUESTION_ATTR = "hubsweep:question"
FINGERPRINT_ATTR = "hubsweep:fingerprint"


def run_sweep(
    cfg: DictConfig, overrides: Sequence[str], compose: ComposeSpec, sweep_choice: str | None = None
) -> dict:
    """Run the study of `cfg.sweep` (one per arm) with `sweep.workers` processes each.

    `overrides` are the command-line overrides of the base config (sweep.*, hydra.* and
    arms.* ones are dropped for trials). Returns the study's summary, or
    {"arms": {arm: summary}} for an experiment with arms.
    """
    return run_plans(build_plans(cfg, overrides, compose, sweep_choice))


def run_plans(plans: Sequence[StudyPlan]) -> dict:
    """Run each plan's study (an arm each); the summary `run_sweep` returns."""
    summaries = {plan.arm: _run_study(plan) for plan in plans}
    return {"arms": summaries} if plans[0].arm else summaries[None]


def open_study(plan: StudyPlan) -> optuna.Study:
    """Create the study, or join it if it asks the same question; refuse otherwise."""
    ensure_writable(plan.directory, "results_dir")
    study = optuna.create_study(
        study_name=plan.name,
        storage=open_study_storage(plan),
        direction=plan.settings.direction,
        load_if_exists=True,
    )
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    if stored is None:
        if study.trials:
            log.warning("study %s predates recorded questions; recording this one", plan.name)
        study.set_user_attr(QUESTION_ATTR, plan.question)
        study.set_user_attr(FINGERPRINT_ATTR, plan.fingerprint)
    elif stored != plan.fingerprint:
        recorded = study.user_attrs.get(QUESTION_ATTR, {})
        upgraded, added = with_new_defaults(recorded, plan.question)
        if added and upgraded == plan.question:
            log.info(
                "study %s was recorded before %s existed; left at their defaults, it asks the "
                "same question: recording it with them",
                plan.name,
                ", ".join(added),
            )
            study.set_user_attr(QUESTION_ATTR, plan.question)
            study.set_user_attr(FINGERPRINT_ATTR, plan.fingerprint)
            return study
        diffs = describe_mismatch(recorded, plan.question)
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise ConfigError(
            f"sweep.study_name={plan.settings.study_name}: study {plan.name!r} in "
            f"{storage.mask(plan.storage)} was created with a different question ({shown}); "
            "choose a new sweep.study_name, or run with the study's own settings to resume it"
        )
    return study


def _run_study(plan: StudyPlan) -> dict:
    study = open_study(plan)
    directory = Path(plan.directory)
    (directory / STUDY_INFO_FILE).write_text(json.dumps(plan.info(), indent=2) + "\n")
    warm_start(plan, study)
    finished, _ = tally(study.get_trials(deepcopy=False))
    log.info(
        "study %s: %d of %d trials finished; %d worker(s); storage %s",
        plan.name,
        finished,
        plan.settings.n_trials,
        plan.settings.workers,
        storage.mask(plan.storage),
    )
    started = time.perf_counter()
    try:
        run_workers(plan)
    except KeyboardInterrupt:
        finished, _ = tally(
            optuna.load_study(study_name=plan.name, storage=open_study_storage(plan)).get_trials(
                deepcopy=False
            )
        )
        raise Interrupted(
            f"interrupted: {finished} of {plan.settings.n_trials} trials of study {plan.name} "
            "finished; run the same command to resume"
        ) from None
    summary = finish_study(plan, time.perf_counter() - started)
    (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def _draw_best_curves(plan: StudyPlan, best: optuna.trial.FrozenTrial) -> None:
    """The best trial's learning-curve PNGs (trials skip them), where its files are here."""
    for k in range(plan.settings.seeds_per_trial):
        run_dir = trial_run_dir(plan.directory, best.number, k)
        if holds_run(run_dir) and not (run_dir / CURVE_FILE).exists():
            history = read_metrics(run_dir, "validation")
            draw_learning_curve(run_dir, history, f"{plan.name}: best trial {best.number}")


def finish_study(plan: StudyPlan, wall_s: float) -> dict:
    study = optuna.load_study(study_name=plan.name, storage=open_study_storage(plan))
    summary: dict[str, Any] = {
        "study": plan.name,
        "storage": storage.mask(plan.storage),
        "trials": _state_counts(study),
        "wall_time_s": round(wall_s, 1),
    }
    stopped = study.user_attrs.get(flat.FLAT_ATTR)
    if plan.settings.stop_when_flat and stopped and plan.settings.n_trials <= stopped["n_trials"]:
        summary["stopped_flat"] = stopped
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        log.warning("no trial completed; no best config")
        return summary
    best = study.best_trial
    summary["best"] = {"trial": best.number, "value": best.value, "params": best.params}
    log.info(
        "best trial %d: %s %.4f with %s",
        best.number,
        plan.settings.metric,
        best.value,
        best.params,
    )
    raced = race(plan, study)
    summary["finalists"] = raced
    if "running_on" in raced:  # that worker names the winner and re-runs it
        return summary
    winner = study.trials[raced.get("winner", best.number)]
    summary["winner"] = {"trial": winner.number, "value": winner.value, "params": winner.params}
    summary["winner"]["preset"] = str(write_best_preset(plan, winner))
    _draw_best_curves(plan, winner)
    if plan.settings.retrain_best_seeds:
        summary["retrain"] = retrain_best(plan, winner, study)
    return summary
