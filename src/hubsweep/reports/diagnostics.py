"""What a study's own trials say about the search itself, said at the top of its section:
a best value at the edge of its range (or a score still rising toward one), a pruner that
judged most trials at their first evaluations, a best trial its own re-runs do not
confirm. No sweep tool we know of reports these; each has fooled a comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

EDGE = 0.05  # the outer share of a range that counts as its edge
NEAR = 0.20  # ... and as near it, for "still rising"
TOP_K = 5
# The trend rule: the score rising monotonically toward an edge over the completed trials
# (Spearman's rho between the value, on its scale, and the score), the best in its third.
TREND_RHO = 0.6
TREND_MIN_TRIALS = 6
TREND_OUTER = 1 / 3
EARLY_REPORTS = 2  # pruned at or before its second evaluation: judged early
LUCKY_SDS = 2.0


def _position(value: float, low: float, high: float, log: bool) -> float:
    """Where `value` lies in [low, high], 0..1, on the parameter's own scale."""
    if log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def _widened(low: float, high: float, log: bool, upper: bool, integer: bool) -> float:
    """The edge moved out by half the range's width (on its scale)."""
    if log:
        factor = math.sqrt(high / low)
        edge = high * factor if upper else low / factor
    else:
        half = (high - low) / 2
        edge = high + half if upper else low - half
        if low >= 0 and edge < 0:  # a count or rate that cannot go negative
            edge = 0.0
    return float(round(edge)) if integer else edge


def _numeric(spec: dict) -> bool:
    return spec.get("type") in ("float", "int") and "low" in spec and "high" in spec


def _advice(name: str, key: str, spec: dict, upper: bool, why: str) -> str:
    low, high, log = float(spec["low"]), float(spec["high"]), bool(spec.get("log"))
    new = _widened(low, high, log, upper, spec.get("type") == "int")
    return (
        f"{name} (`{key}`): {why} the range [{low:g}, {high:g}]"
        f"{' (log scale)' if log else ''}: the score may still be rising toward "
        f"{high if upper else low:g}; widen it, e.g. `sweep.params.{name}."
        f"{'high' if upper else 'low'}={new:.4g}`"
    )


def trend(
    spec: dict, key: str, complete: Sequence[FrozenTrial], minimize: bool
) -> tuple[float, int] | None:
    """(Spearman's rho between the parameter, on its scale, and the score oriented so that
    higher is better; trials) over the completed trials that set it; None below
    TREND_MIN_TRIALS or when either side does not vary."""
    low, high, log = float(spec["low"]), float(spec["high"]), bool(spec.get("log"))
    pairs = [
        (_position(t.params[key], low, high, log), t.value) for t in complete if key in t.params
    ]
    if len(pairs) < TREND_MIN_TRIALS:
        return None
    x, y = np.array(pairs).T
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    rho = float(stats.spearmanr(x, -y if minimize else y).statistic)
    return (rho, len(pairs)) if math.isfinite(rho) else None


def edge_warnings(
    params: dict[str, dict], complete: Sequence[FrozenTrial], minimize: bool
) -> list[str]:
    """For each numeric parameter: the best trial in the outer 5% of its range, most of the
    top trials crowding toward one edge, or the score rising monotonically toward one (a
    Spearman rho of at least 0.6 over 6 or more trials, the best trial in the outer third):
    each says the score may still be rising beyond the edge."""
    if not complete:
        return []
    ranked = sorted(complete, key=lambda t: t.value, reverse=not minimize)
    best, top = ranked[0], ranked[:TOP_K]
    out = []
    for name, spec in params.items():
        key = spec.get("key")
        if not _numeric(spec) or key not in best.params:
            continue
        low, high, log = float(spec["low"]), float(spec["high"]), bool(spec.get("log"))
        where = _position(best.params[key], low, high, log)
        near = [_position(t.params[key], low, high, log) for t in top if key in t.params]
        rising = trend(spec, key, complete, minimize)
        for upper in (True, False):
            side = "upper" if upper else "lower"
            at_edge = where >= 1 - EDGE if upper else where <= EDGE
            crowd = sum(p >= 1 - NEAR if upper else p <= NEAR for p in near)
            crowding = len(near) >= 3 and crowd >= math.ceil(0.6 * len(near))
            toward = rising is not None and (rising[0] if upper else -rising[0]) >= TREND_RHO
            outer = where >= 1 - TREND_OUTER if upper else where <= TREND_OUTER
            if at_edge:
                why = f"the best trial's value {best.params[key]:.4g} lies in the {side} 5% of"
            elif crowding and (where >= 0.5) == upper:
                why = f"{crowd} of the top {len(near)} trials lie near the {side} edge of"
            elif toward and outer:
                why = (
                    f"the score rises toward the {side} edge over the {rising[1]} completed "
                    f"trials (Spearman ρ = {rising[0]:+.2f} between the value"
                    f"{' (log)' if log else ''} and the score; the best trial, "
                    f"{best.params[key]:.4g}, in the {side} third) of"
                )
            else:
                continue
            out.append(_advice(name, key, spec, upper, why))
    return out


def pruning_warning(trials: Sequence[FrozenTrial], pruner: str) -> str | None:
    """Most trials pruned at their first evaluations: the pruner judged them on noise."""
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    early = [
        t
        for t in finished
        if t.state == TrialState.PRUNED and len(t.intermediate_values) <= EARLY_REPORTS
    ]
    if not finished or len(early) <= len(finished) / 2:
        return None
    return (
        f"{len(early)} of {len(finished)} trials were pruned at their first or second "
        f"evaluation (pruner `{pruner}`): they were judged before they learned much; raise "
        "`sweep.pruner_warmup_steps` or `sweep.pruner_startup_trials`, or use "
        "`sweep.pruner=none` for a comparison"
    )


def lucky_warning(
    best_value: float, rerun_values: Sequence[float], seeds_per_trial: int, minimize: bool
) -> str | None:
    """The best trial well above its own re-runs on validation: a lucky seed won it."""
    if seeds_per_trial > 1 or len(rerun_values) < 2:
        return None
    mean, sd = float(np.mean(rerun_values)), float(np.std(rerun_values, ddof=1))
    better_by = mean - best_value if minimize else best_value - mean
    if sd == 0 or better_by <= LUCKY_SDS * sd:
        return None
    return (
        f"the best trial's validation score {best_value:.4f} is {better_by / sd:.1f} "
        f"standard deviations better than its own re-runs ({mean:.4f} ± {sd:.4f}, "
        f"{len(rerun_values)} seeds): a lucky seed picked it; `sweep.seeds_per_trial=3` "
        "scores each config over seeds"
    )


RACE_P = 0.05


def race_warning(
    race_values: Sequence[float], rerun_values: Sequence[float], minimize: bool
) -> str | None:
    """The winner's re-runs with test score worse on validation than its own finalist
    re-runs did (Welch's t-test, one-sided, p < 0.05): the race's seeds flattered it."""
    if len(race_values) < 2 or len(rerun_values) < 2:
        return None
    race, rerun = np.asarray(race_values, float), np.asarray(rerun_values, float)
    worse = rerun.mean() - race.mean() if minimize else race.mean() - rerun.mean()
    if worse <= 0 or (race.std() == 0 and rerun.std() == 0):
        return None
    p = float(stats.ttest_ind(race, rerun, equal_var=False).pvalue) / 2
    if p >= RACE_P:
        return None
    return (
        f"the winner's re-runs with test score {rerun.mean():.4f} ± {rerun.std(ddof=1):.4f} on "
        f"validation ({len(rerun)} seeds), below its {race.mean():.4f} ± "
        f"{race.std(ddof=1):.4f} in the finalists' race ({len(race)} seeds; Welch's t-test, "
        f"one-sided p = {p:.3f}): the race's seeds flattered it, so its test scores may "
        "understate the arm; `sweep.finalist_seeds=5` races on more seeds"
    )
