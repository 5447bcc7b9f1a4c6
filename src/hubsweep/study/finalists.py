"""Finalists: the search's top configs raced on new seeds before one is called the winner.

A trial's score is one draw over seeds (or the mean of `seeds_per_trial` draws), so the
single best trial of a search is partly luck: the winner's curse. After an arm's search,
its top `sweep.finalists` distinct configs are each re-run on `sweep.finalist_seeds` seeds
the search did not use (trainer.seed + seeds_per_trial + j), on validation only; the
winner is the best mean of those re-runs (the search's own scores are left out: they are
the biased draws). Only the winner is re-run with test (`study.retrain`).

Like the re-runs with test, the race is run once across workers and hosts (a claim in the
storage), resumable (completed runs are kept, an unfinished one is set aside), and its
summary (every re-run's score) is stored in the study so a host without the files can
report it. The re-runs with test then take seeds after these (`retrain_offset`). Runs that can
train as a population (frozen features) do, grouped as trials are.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from hubsweep.results.artifacts import RunFiles, read_run, set_aside
from hubsweep.results.layout import FINALISTS_FILE, RunStatus, finalist_run_dir
from hubsweep.study.claim import Outcome, take
from hubsweep.study.compose import TrialComposer, seeded
from hubsweep.study.liveness import SURPLUS, worker_host
from hubsweep.study.plan import StudyPlan
from hubsweep.study.trial import plan_cache

log = logging.getLogger(__name__)

FINALISTS_ATTR = "finalists"  # the study's user attr with the race's summary


def top_distinct(trials: Sequence[FrozenTrial], k: int, minimize: bool) -> list[FrozenTrial]:
    """The k best completed trials with distinct sampled values (a requeued or enqueued
    copy of a config counts once, by its best score)."""
    complete = [
        t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get(SURPLUS)
    ]
    ranked = sorted(complete, key=lambda t: (t.value if minimize else -t.value, t.number))
    seen, out = set(), []
    for t in ranked:
        key = tuple(sorted((name, repr(v)) for name, v in t.params.items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
        if len(out) == k:
            break
    return out


def finalist_seed_indices(plan: StudyPlan) -> list[int]:
    """Seed offsets the search never used: after its seeds_per_trial ones."""
    s = plan.settings
    return [s.seeds_per_trial + j for j in range(s.finalist_seeds)]


def retrain_offset(plan: StudyPlan) -> int:
    """The re-runs with test take seeds after the search's and the finalists' (the same for
    every arm, so arms stay paired): their validation scores are fresh draws too. Unraced
    (`sweep.finalists=1`) they start after the search's: seed 0 would train the winning
    trial again, the draw chosen for its luck on validation."""
    s = plan.settings
    return s.seeds_per_trial + (s.finalist_seeds if s.finalists > 1 else 0)


def race(plan: StudyPlan, study: optuna.Study) -> dict:
    """Race the top configs; the summary names the winner. With `sweep.finalists=1` (or one
    distinct completed config) the search's best trial wins unraced. While another worker
    races, the summary says where (`running_on`) and names no winner."""
    s = plan.settings
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = study.get_trials(deepcopy=False)
    finalists = top_distinct(trials, s.finalists, minimize)
    if not finalists:
        return {}
    if s.finalists == 1 or len(finalists) == 1:
        return {"winner": finalists[0].number, "raced": False}
    numbers = [t.number for t in finalists]
    done = _done(plan, study, numbers)
    if done is not None:
        return done
    name = f"{plan.name}:finalists:{'-'.join(map(str, numbers))}:seeds{s.finalist_seeds}"
    taken = take(study._storage, name, s.heartbeat_s, s.grace_s)
    if isinstance(taken, Outcome):
        log.info("the finalists are being raced on %s", taken.holder or "another worker")
        return {"raced": False, "running_on": str(taken.holder)}
    with taken:
        done = _done(plan, study, numbers)
        if done is not None:
            return done
        runs = _race_runs(plan, finalists)
        summary = summarize(plan, finalists, runs, minimize)
        (Path(plan.directory) / FINALISTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        study.set_user_attr(FINALISTS_ATTR, summary)
    return summary


def _done(plan: StudyPlan, study: optuna.Study, numbers: list[int]) -> dict | None:
    """The stored summary, if some worker raced exactly these finalists on these seeds."""
    summary = study._storage.get_study_user_attrs(study._study_id).get(FINALISTS_ATTR)
    if (
        isinstance(summary, dict)
        and [f["trial"] for f in summary.get("finalists", [])] == numbers
        and summary.get("seeds") == finalist_seed_indices(plan)
    ):
        if summary.get("host") != worker_host():
            log.info("the finalists were raced on %s", summary.get("host"))
        return summary
    return None


def _race_runs(plan: StudyPlan, finalists: Sequence[FrozenTrial]) -> dict[int, list[RunFiles]]:
    """Each finalist's runs on the new seeds; only those not completed before are trained."""
    from hubsweep.training.population import blocker, group_key
    from hubsweep.training.run import train_and_evaluate, train_population

    cache = plan_cache(plan)
    compose = TrialComposer(
        plan.compose, ["trainer.evaluate_test=false", "trainer.learning_curve=false"]
    )
    todo: list[DictConfig] = []
    for t in finalists:
        cfg = compose(t.params)
        for k in finalist_seed_indices(plan):
            run_dir = finalist_run_dir(plan.directory, t.number, k)
            run = read_run(run_dir)
            if run.status == RunStatus.COMPLETED:
                continue
            if run.exists:
                log.info("setting aside the unfinished finalist run %s", set_aside(run_dir))
            todo.append(seeded(cfg, k, run_dir))
    log.info(
        "racing %d finalists (trials %s) on %d new seeds each: %d runs",
        len(finalists),
        ", ".join(str(t.number) for t in finalists),
        plan.settings.finalist_seeds,
        len(todo),
    )
    groups: dict[tuple, list[DictConfig]] = defaultdict(list)
    for cfg in todo:
        if blocker(cfg) is None:
            groups[group_key(cfg)].append(cfg)
        else:
            train_and_evaluate(cfg, cache=cache)
    for cfgs in groups.values():
        train_population(cfgs, [None] * len(cfgs), cache)
    return {
        t.number: [
            read_run(finalist_run_dir(plan.directory, t.number, k))
            for k in finalist_seed_indices(plan)
        ]
        for t in finalists
    }


def run_cost(run: RunFiles) -> tuple[float, float]:
    """(wall seconds, a population member's share; training seconds) from final.json."""
    final = run.final or {}
    wall = final.get("wall_share_s", final.get("wall_time_s"))  # older runs: no share
    return float(wall or 0.0), float(final.get("train_time_s") or 0.0)


def _validation(run: RunFiles, metric: str) -> float | None:
    values = (run.final or {}).get("final") if run.status == RunStatus.COMPLETED else None
    return float(values[metric]) if values and metric in values else None


def summarize(
    plan: StudyPlan,
    finalists: Sequence[FrozenTrial],
    runs: dict[int, list[RunFiles]],
    minimize: bool,
) -> dict:
    """The race as plain JSON: each finalist's search score and rank, its re-runs' validation
    scores, and the winner: the best mean among the finalists with the most completed
    re-runs (one good seed of three never beats three)."""
    metric = plan.settings.metric
    rows = []
    for rank, t in enumerate(finalists, start=1):
        values = [_validation(run, metric) for run in runs[t.number]]
        ok = [v for v in values if v is not None]
        rows.append(
            {
                "trial": t.number,
                "params": t.params,
                "search_rank": rank,
                "search_value": float(t.value),
                "values": ok,
                "mean": float(np.mean(ok)) if ok else None,
                "std": float(np.std(ok, ddof=1)) if len(ok) > 1 else 0.0 if ok else None,
                "statuses": [run.status for run in runs[t.number]],
                "wall_s": round(sum(run_cost(run)[0] for run in runs[t.number]), 3),
                "train_s": round(sum(run_cost(run)[1] for run in runs[t.number]), 3),
                "run_dirs": [str(run.directory) for run in runs[t.number]],
            }
        )
    most = max(len(r["values"]) for r in rows)
    scored = [r for r in rows if r["mean"] is not None and len(r["values"]) == most]
    pick = min if minimize else max
    winner = pick(scored, key=lambda r: r["mean"]) if scored else rows[0]
    for r in rows:
        r["winner"] = r is winner
    curse = None
    if winner["mean"] is not None:
        gap = winner["search_value"] - winner["mean"]
        curse = -gap if minimize else gap
    log.info(
        "finalists raced: winner trial %d (search rank %d), re-run %s %s",
        winner["trial"],
        winner["search_rank"],
        metric,
        f"{winner['mean']:.4f}" if winner["mean"] is not None else "n/a",
    )
    return {
        "winner": winner["trial"],
        "raced": True,
        "metric": metric,
        "seeds": finalist_seed_indices(plan),
        "host": worker_host(),
        "ranking_held": winner["search_rank"] == 1,
        # The winner's search score minus its re-run mean, in the better direction: how much
        # of the search's score was luck.
        "winners_curse": curse,
        "finalists": rows,
    }
