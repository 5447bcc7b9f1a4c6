"""A finished study's winner (study/finalists.py): a ready-to-run preset, and re-runs over
seeds with test (seeds after the search's and the finalists', `retrain_offset`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import optuna
from omegaconf import OmegaConf

from hubsweep.metrics import METRICS
from hubsweep.results.artifacts import RunFiles, read_run, run_record, set_aside
from hubsweep.results.layout import (
    RETRAIN_FILE,
    RunStatus,
    best_preset_path,
    retrain_run_dir,
)
from hubsweep.study.claim import Outcome, take
from hubsweep.study.compose import compose_config, param_overrides, seeded_run
from hubsweep.study.finalists import retrain_offset
from hubsweep.study.liveness import worker_host
from hubsweep.study.plan import StudyPlan

log = logging.getLogger(__name__)

PRESET_GROUPS = ("dataset", "embedding", "model", "optimizer", "schedule")


def write_best_preset(plan: StudyPlan, best: optuna.trial.FrozenTrial) -> Path:
    """<study>/experiment/best.yaml: `hubsweep-train --config-dir <study> experiment=best`."""
    composed = compose_config(plan.compose, param_overrides(best.params), with_hydra=True)
    choices = composed.hydra.runtime.choices
    values = OmegaConf.to_container(composed, resolve=False)
    # One run's config: no study settings, and no arms (hubsweep-sweep would run them).
    for key in ("hydra", "sweep", "arms", "factors", "output_dir"):
        values.pop(key, None)
    header = [
        "# @package _global_",
        f"# The winning config, trial {best.number} of study {plan.name}: "
        f"validation {plan.settings.metric} {best.value:.4f} in the search.",
        f"# Run it: hubsweep-train --config-dir {plan.directory} experiment=best",
    ]
    defaults = {"defaults": [{f"override /{g}": choices[g]} for g in PRESET_GROUPS]}
    text = "\n".join(header) + "\n" + OmegaConf.to_yaml(OmegaConf.create(defaults))
    text += OmegaConf.to_yaml(OmegaConf.create(values))
    path = best_preset_path(plan.directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _spread(values: list[float]) -> dict:
    arr = np.array(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "values": [float(v) for v in arr]}


RETRAIN_ATTR = "retrain"  # the study's user attr with the summary
RETRAIN_RUN_ATTR = "retrain:seed{}"  # ... and one with each seed's run record


def retrain_best(plan: StudyPlan, best: optuna.trial.FrozenTrial, study: optuna.Study) -> dict:
    """Re-run the best config with sweep.retrain_best_seeds seeds, test evaluated once each.

    One worker of all those on all hosts does it (a claim in the storage); the others
    return its summary, or say where it is running. Seeds already done for the same best
    trial (an interrupted sweep) are not re-run; an earlier attempt that did not complete
    is set aside, never overwritten.
    """
    s = plan.settings
    done = _done(plan, best, study)
    if done is not None:
        return done
    name = f"{plan.name}:retrain:trial{best.number}:seeds{s.retrain_best_seeds}"
    taken = take(study._storage, name, s.heartbeat_s, s.grace_s)
    if isinstance(taken, Outcome):
        log.info("the best config is being re-run on %s", taken.holder or "another worker")
        return {"best_trial": best.number, "running_on": str(taken.holder)}
    with taken:
        done = _done(plan, best, study)  # finished by another worker just before we took it
        if done is not None:
            return done
        runs = _retrain_runs(plan, best)
        summary = {**_summary(best, runs), "first_seed": retrain_offset(plan)}
        (Path(plan.directory) / RETRAIN_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        for k, run in enumerate(runs):
            study.set_user_attr(RETRAIN_RUN_ATTR.format(k), run_record(run))
        study.set_user_attr(RETRAIN_ATTR, summary)
    return summary


def _done(plan: StudyPlan, best: optuna.trial.FrozenTrial, study: optuna.Study) -> dict | None:
    """The stored summary, if some worker completed every seed of this best trial."""
    attrs = study._storage.get_study_user_attrs(study._study_id)
    summary = attrs.get(RETRAIN_ATTR)
    if (
        isinstance(summary, dict)
        and summary.get("best_trial") == best.number
        and summary.get("seeds") == plan.settings.retrain_best_seeds
        and summary.get("first_seed") == retrain_offset(plan)
        and summary.get("statuses") == [RunStatus.COMPLETED] * summary["seeds"]
    ):
        if summary.get("host") != worker_host():
            log.info("the best config was re-run on %s", summary.get("host"))
        return summary
    return None


def _retrain_runs(plan: StudyPlan, best: optuna.trial.FrozenTrial) -> list[RunFiles]:
    from hubsweep.training.run import train_and_evaluate

    extra = [*param_overrides(best.params), "trainer.evaluate_test=true"]
    offset = retrain_offset(plan)
    runs = []
    for k in range(offset, offset + plan.settings.retrain_best_seeds):
        run_dir = retrain_run_dir(plan.directory, best.number, k)
        run = read_run(run_dir)
        if run.status != RunStatus.COMPLETED:
            if run.exists:
                log.info("setting aside the unfinished retrain run %s", set_aside(run_dir))
            log.info("retraining best trial %d, seed %d, with test", best.number, k)
            train_and_evaluate(seeded_run(plan.compose, extra, k, run_dir))
            run = read_run(run_dir)
        runs.append(run)
    return runs


def _summary(best: optuna.trial.FrozenTrial, runs: list[RunFiles]) -> dict:
    finals = [run.final or {} for run in runs]
    summary = {
        "best_trial": best.number,
        "params": best.params,
        "seeds": len(finals),
        "host": worker_host(),
        "run_dirs": [str(run.directory) for run in runs],
        "statuses": [run.status for run in runs],
    }
    for split, key in (("test", "test"), ("validation", "final")):
        ok = [f[key] for f in finals if f.get(key)]
        if ok:
            summary[split] = {m: _spread([f[m] for f in ok]) for m in METRICS}
    if "test" in summary:
        t = summary["test"]
        log.info(
            "best config over %d seeds: test accuracy %.4f ± %.4f, macro-F1 %.4f ± %.4f",
            len(finals),
            t["accuracy"]["mean"],
            t["accuracy"]["std"],
            t["macro_f1"]["mean"],
            t["macro_f1"]["std"],
        )
    return summary
