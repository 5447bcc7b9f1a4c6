"""Cost beside every score: what each arm's answer cost to get.

A trial's compute is what its runs took (the trial's `wall_time_s` user attribute: wall
seconds, a population member's share of its program's; `train_time_s`: stepping only),
compared per trial without the cache builds it paid (`cache_build_s`: embedding a module's
splits, and loading the datasets, once per `cache_dir`, so the first trial, or the first
arm, to need them pays for the rest).
An arm's cost is its finished trials' (completed, pruned, failed on their own), its
finalists' re-runs and its re-runs with test, and, where its module is a pair that
`hubsweep-adapt` wrote, the adaptation's training seconds (once per module, before any
trial: charged to the first arm on it).
An arm's elapsed time is the wall-clock time its search had a trial running (trials side by
side, on several workers or hosts, counted once; the gaps between resumed invocations left
out), then its finalists' and re-runs' (one after another) and its adaptation.
The quality is the arm's test score over the re-run seeds (else the winner's validation
re-runs in the finalists' race, else its search score). An arm is on the Pareto front
when no other arm scores at least as well for no more compute per trial, better in one of
the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from optuna.trial import TrialState

from hubsweep.embeddings.transformer.adapted import adaptation_summary
from hubsweep.reports.collect import Study
from hubsweep.reports.tables import ADAPTATION_COLUMN, LABELS
from hubsweep.results.artifacts import read_run
from hubsweep.results.layout import RunStatus
from hubsweep.study.finalists import run_cost
from hubsweep.study.liveness import (
    CACHE_BUILD_TIME,
    RUN_DIRS,
    TRAIN_TIME,
    WALL_TIME,
    compute_s,
)


@dataclass(frozen=True)
class ArmCost:
    arm: str
    trials: int  # finished trials with a recorded cost
    per_trial_s: float  # mean wall seconds per trial, without its cache builds
    train_per_trial_s: float | None  # mean training seconds per trial (None: not recorded)
    search_s: float  # the trials' wall seconds, their cache builds included
    cache_build_s: float  # of search_s: the cache builds (what later arms reuse)
    finalists_s: float
    retrain_s: float
    quality: float  # test score mean over the re-run seeds, else the winner's validation
    quality_std: float
    quality_from: str  # "test" or "validation"
    search_elapsed_s: float  # wall-clock time with a trial of the search running
    adaptation_s: float = 0.0  # the module's masked-LM adaptation (hubsweep-adapt), if any

    @property
    def total_s(self) -> float:
        return self.search_s + self.finalists_s + self.retrain_s + self.adaptation_s

    @property
    def elapsed_s(self) -> float:
        return self.search_elapsed_s + self.finalists_s + self.retrain_s + self.adaptation_s


def _finished(study: Study) -> list:
    done = study.by_state(TrialState.COMPLETE) + study.by_state(TrialState.PRUNED)
    return [t for t in done + study.failed if WALL_TIME in t.user_attrs]


def _located(path: str, study: Study) -> Path:
    """A path a run's config gave, as the sweep's working directory saw it: tried from
    here, then from each folder above the study (a relative `modules/...` next to
    `results/`), else as it is."""
    given = Path(path)
    if given.is_absolute():
        return given
    for base in (Path.cwd(), *study.directory.resolve().parents):
        if (base / given).exists():
            return base / given
    return given


def _runs(study: Study):
    """The arm's runs, re-runs first, then its trials' (read as they are needed)."""
    yield from study.retrain
    for trial in study.trials:
        for run_dir in trial.user_attrs.get(RUN_DIRS, []):
            yield read_run(_located(run_dir, study))


def module_adaptation(study: Study) -> dict | None:
    """The adaptation of the arm's module as its runs recorded it (final.json's
    `module_adaptation`); for runs from before that was recorded, as the record beside the
    pair says, where the pair still is."""
    for run in _runs(study):
        if run.final and "module_adaptation" in run.final:  # recorded (null: not adapted)
            return run.final["module_adaptation"]
        if handle := run.setting("embedding.handle"):  # a run from before it was recorded
            return adaptation_summary(_located(str(handle), study))
    return None


def adaptations(studies: Sequence[Study]) -> dict[str, float]:
    """Per arm, the seconds `hubsweep-adapt` trained its module for: charged once, to the
    first arm on each adapted pair (as cache builds are to the first arm that needs them)."""
    charged: set[str] = set()
    seconds = {}
    for study in studies:
        adapted = module_adaptation(study)
        if adapted is None or adapted["record"] in charged:
            continue
        charged.add(adapted["record"])
        seconds[study.label] = float(adapted["seconds"])
    return seconds


def arm_cost(study: Study, adaptation_s: float = 0.0) -> ArmCost | None:
    """The arm's cost; `adaptation_s`: its module's adaptation, where it is charged to it."""
    trials = _finished(study)
    winner = study.winner
    if not trials or winner is None:
        return None
    walls = [float(t.user_attrs[WALL_TIME]) for t in trials]
    builds = [float(t.user_attrs.get(CACHE_BUILD_TIME, 0.0)) for t in trials]
    trains = [float(t.user_attrs[TRAIN_TIME]) for t in trials if TRAIN_TIME in t.user_attrs]
    finalists = study.raced.get("finalists", [])
    tested = [r for r in study.retrain if r.status == RunStatus.COMPLETED and r.test]
    scores = [r.test[study.metric] for r in tested if study.metric in r.test]
    reran = next((f for f in finalists if f.get("winner") and f.get("values")), None)
    if scores:
        quality, spread, source = float(np.mean(scores)), _std(scores), "test"
    elif reran:  # the winner's re-runs: fresh draws, unlike its search score
        quality, spread, source = float(reran["mean"]), _std(reran["values"]), "validation"
    else:
        quality, spread, source = float(winner.value), 0.0, "validation"
    return ArmCost(
        arm=study.label,
        trials=len(trials),
        per_trial_s=float(np.mean([compute_s(t.user_attrs) for t in trials])),
        train_per_trial_s=float(np.mean(trains)) if len(trains) == len(trials) else None,
        search_s=float(np.sum(walls)),
        cache_build_s=float(np.sum(builds)),
        finalists_s=float(sum(f.get("wall_s", 0.0) for f in finalists)),
        retrain_s=float(sum(run_cost(r)[0] for r in study.retrain)),
        quality=quality,
        quality_std=spread,
        quality_from=source,
        search_elapsed_s=running_s(trials),
        adaptation_s=adaptation_s,
    )


def running_s(trials: Sequence) -> float:
    """The seconds during which at least one of `trials` ran (the union of their start to
    end intervals)."""
    spans = sorted(
        (t.datetime_start.timestamp(), t.datetime_complete.timestamp())
        for t in trials
        if t.datetime_start and t.datetime_complete
    )
    total, end = 0.0, -np.inf
    for start, stop in spans:
        total += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return total


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def arm_costs(studies: Sequence[Study]) -> dict[str, ArmCost]:
    adapted = adaptations(studies)
    costs = {s.label: arm_cost(s, adapted.get(s.label, 0.0)) for s in studies}
    return {label: c for label, c in costs.items() if c is not None}


def _budget_of(study: Study) -> str:
    sweep = study.sweep
    pruner = sweep.get("pruner", "none")
    pruning = "no pruner" if pruner in (None, "none") else f"{pruner} pruner"
    space = ", ".join(p.get("key", name) for name, p in (sweep.get("params") or {}).items())
    finalists = sweep.get("finalists", 1)
    race = (
        f"{finalists} finalists × {sweep.get('finalist_seeds', 0)} seeds"
        if finalists > 1
        else "no finalists' race"
    )
    return (
        f"{sweep.get('n_trials')} trials of the `{sweep.get('study_name')}` space ({space}; "
        f"{sweep.get('sampler', 'tpe')} sampler, {pruning}), {race}, the winner re-run over "
        f"{sweep.get('retrain_best_seeds', 0)} seeds"
    )


def budget_sentence(studies: Sequence[Study], costs: dict[str, ArmCost]) -> str:
    """How the arms' budgets differ (or that they do not): what each searched, and what a
    trial of each cost."""
    groups: dict[str, list[str]] = {}
    for study in studies:
        if study.label in costs:  # the arms the cost table compares
            groups.setdefault(_budget_of(study), []).append(study.label)
    per_trial = [c for c in costs.values() if c.per_trial_s > 0]
    spread = ""
    if len(per_trial) > 1:
        cheap = min(per_trial, key=lambda c: c.per_trial_s)
        dear = max(per_trial, key=lambda c: c.per_trial_s)
        spread = (
            f" A trial cost {cheap.per_trial_s:.3g} s ({cheap.arm}) to {dear.per_trial_s:.3g} s "
            f"({dear.arm}), {dear.per_trial_s / cheap.per_trial_s:.3g}× apart; each arm's "
            f"total: "
            + ", ".join(f"{c.arm} {c.total_s / 60:.1f} min" for c in costs.values())
            + "."
        )
    adapted = [c for c in costs.values() if c.adaptation_s > 0]
    if adapted:
        spread += (
            " "
            + "; ".join(
                f"{c.arm}'s module was first adapted to the task's training text (hubsweep-adapt, "
                f"{c.adaptation_s / 60:.1f} min, once; in its total, not per trial)"
                for c in adapted
            )
            + "."
        )
    if len(costs) == 1:
        (only,) = costs.values()
        return (
            f"The budget: {next(iter(groups))}; {only.total_s / 60:.1f} min in all "
            f"(the search {only.search_s / 60:.1f}, the finalists and re-runs "
            f"{(only.finalists_s + only.retrain_s) / 60:.1f}){_side_by_side(only)}.{spread}"
        )
    if len(groups) == 1:
        return f"Every arm had the same budget: {next(iter(groups))}.{spread}"
    described = "; ".join(f"{', '.join(arms)}: {budget}" for budget, arms in groups.items())
    return (
        f"The arms' budgets differ: {described}. A comparison across them sets one search "
        f"against another of another size, not configs of equal effort.{spread}"
    )


def _side_by_side(cost: ArmCost) -> str:
    """How long the arm took by the clock, where its trials ran side by side."""
    if cost.elapsed_s >= 0.95 * cost.total_s:
        return ""
    return (
        f", {cost.elapsed_s / 60:.1f} min by the clock (the search's trials side by side: "
        f"{cost.search_elapsed_s / 60:.1f} min)"
    )


def ratio_phrase(a: str, a_s: float, b: str, b_s: float, per: str = "compute per trial") -> str:
    """`a` against `b` in seconds `per` trial or run, as the paired sentences say it."""
    if not b_s > 0 or a_s != a_s:  # no baseline, or a's runs all unfinished (NaN)
        return ""

    def seconds(x: float) -> str:
        return f"{x:.3g}" if x < 1000 else f"{x:.0f}"  # never 1.04e+03

    return f"{a} at {a_s / b_s:.2g}× {b}'s {per} ({seconds(a_s)} s against {seconds(b_s)} s)"


def pareto(costs: Sequence[ArmCost], minimize: bool) -> set[str]:
    """The arms no other arm dominates in (compute per trial, quality). Test and validation
    scores are not compared: where some arms have test scores, only they can be on it."""

    def better(x: float, y: float) -> bool:
        return x < y if minimize else x > y

    source = "test" if any(c.quality_from == "test" for c in costs) else "validation"
    costs = [c for c in costs if c.quality_from == source]
    front = set()
    for c in costs:
        dominated = any(
            o is not c
            and o.per_trial_s <= c.per_trial_s
            and not better(c.quality, o.quality)
            and (o.per_trial_s < c.per_trial_s or better(o.quality, c.quality))
            for o in costs
        )
        if not dominated:
            front.add(c.arm)
    return front


def cost_table(costs: Sequence[ArmCost], metric: str, minimize: bool) -> tuple:
    """(numbers for CSV, formatted for Markdown/LaTeX), one row per arm."""
    front = pareto(costs, minimize)
    label = LABELS.get(metric, metric)
    numbers, text = [], []
    for c in costs:
        numbers.append(
            {
                "arm": c.arm,
                f"{c.quality_from}_{metric}_mean": c.quality,
                f"{c.quality_from}_{metric}_std": c.quality_std,
                "trials": c.trials,
                "wall_s_per_trial": c.per_trial_s,
                "train_s_per_trial": c.train_per_trial_s,
                "search_s": c.search_s,
                "cache_build_s": c.cache_build_s,
                "finalists_s": c.finalists_s,
                "retrain_s": c.retrain_s,
                "adaptation_s": c.adaptation_s,
                "total_s": c.total_s,
                "elapsed_s": c.elapsed_s,
                "pareto": c.arm in front,
            }
        )
        text.append(
            {
                "arm": c.arm,
                label: f"{c.quality:.4f} ± {c.quality_std:.4f} ({c.quality_from})",
                "trials": c.trials,
                "s / trial (wall)": f"{c.per_trial_s:.3g}",
                "s / trial (training)": (
                    f"{c.train_per_trial_s:.3g}" if c.train_per_trial_s is not None else "–"
                ),
                "search (min)": f"{c.search_s / 60:.2f}",
                "of it, cache builds (min)": f"{c.cache_build_s / 60:.2f}",
                "finalists + re-runs (min)": f"{(c.finalists_s + c.retrain_s) / 60:.2f}",
                ADAPTATION_COLUMN: f"{c.adaptation_s / 60:.2f}",
                "total (min)": f"{c.total_s / 60:.2f}",
                "elapsed (min)": f"{c.elapsed_s / 60:.2f}",
                "Pareto front": "yes" if c.arm in front else "",
            }
        )
    text = pd.DataFrame(text)
    if not any(c.adaptation_s for c in costs):  # no adapted module: no column of zeros
        text = text.drop(columns=ADAPTATION_COLUMN)
    return pd.DataFrame(numbers), text
