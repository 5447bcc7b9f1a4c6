"""The report's comparisons: expected best validation score against budget, paired
comparisons of arms over the seeds their re-runs share, the main effects and interactions
of a factorial experiment, and the search-space warnings of each study. Numbers from
`stats.py` and `diagnostics.py`; sentences never claim more than the intervals allow.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from optuna.trial import TrialState

from hubsweep.reports import diagnostics
from hubsweep.reports.collect import Run, RunGroup, Study
from hubsweep.reports.stats import Curve, Paired, expected_max_curve, paired
from hubsweep.reports.tables import LABELS, setting_label
from hubsweep.results.layout import RunStatus
from hubsweep.study.liveness import compute_s

BUDGETS = (1, 5, 10, 20, 40, 80)
INDEPENDENT = ("random", "grid")  # samplers whose trials are independent draws


def seed_scores(study: Study, metric: str, split: str = "test") -> dict[int, float]:
    """trainer.seed -> the metric of that re-run of the best config."""
    return runs_seed_scores(study.retrain, metric, split)


def runs_seed_scores(runs: Sequence[Run], metric: str, split: str = "test") -> dict[int, float]:
    """trainer.seed -> the metric of that completed run (runs of one config)."""
    key = "test" if split == "test" else "final"
    scores = {}
    for run in runs:
        values = (run.final or {}).get(key)
        if run.status == RunStatus.COMPLETED and values and metric in values:
            scores[int(run.setting("trainer.seed"))] = float(values[metric])
    return scores


def warnings(study: Study) -> list[str]:
    """The study's warnings, most important first."""
    complete = study.by_state(TrialState.COMPLETE)
    found = diagnostics.edge_warnings(study.sweep.get("params", {}), complete, study.minimize)
    pruned = diagnostics.pruning_warning(study.trials, study.sweep.get("pruner", "?"))
    best = study.winner  # the config the re-runs are of
    reruns = list(seed_scores(study, study.metric, "validation").values())
    lucky = raced = None
    if best is not None:
        per_trial = study.sweep.get("seeds_per_trial", 1)
        lucky = diagnostics.lucky_warning(best.value, reruns, per_trial, study.minimize)
        won = [f for f in study.raced.get("finalists", []) if f.get("winner")]
        if won:
            raced = diagnostics.race_warning(won[0]["values"], reruns, study.minimize)
    return [*found, *(w for w in (pruned, lucky, raced) if w)]


# --- budget -------------------------------------------------------------------------------


def budget_curves(studies: Sequence[Study]) -> dict[str, tuple[Curve, float]]:
    """Per arm: the expected-best curve of its completed trials, and seconds per trial
    (without cache builds, as the cost table counts them)."""
    out = {}
    for study in studies:
        complete = study.by_state(TrialState.COMPLETE)
        if len(complete) < 2:
            continue
        times = [s for t in complete if (s := compute_s(t.user_attrs)) is not None]
        seconds = float(np.mean(times or [np.nan]))
        curve = expected_max_curve([t.value for t in complete], study.minimize)
        out[study.label] = (curve, seconds)
    return out


def budget_table(curves: dict[str, tuple[Curve, float]]) -> pd.DataFrame:
    rows = []
    for label, (curve, seconds) in curves.items():
        size = len(curve.mean)
        for n in sorted({*(b for b in BUDGETS if b < size), size}):
            rows.append(
                {
                    "arm": label,
                    "trials": n,
                    "expected best": f"{curve.mean[n - 1]:.4f}",
                    "95% band": f"[{curve.low[n - 1]:.4f}, {curve.high[n - 1]:.4f}]",
                    "compute (min)": round(n * seconds / 60, 1),
                    # From half this budget to it: near 0, more trials of this search
                    # would add little.
                    "gain over n/2": f"{curve.mean[n - 1] - curve.mean[max(n // 2, 1) - 1]:+.4f}",
                }
            )
    return pd.DataFrame(rows)


CLIMBING = 0.005  # expected-best gain from half the trials to all that counts as climbing


def still_climbing(curves: dict[str, tuple[Curve, float]]) -> str:
    """A sentence naming the arms whose curve still rises at the budget used."""
    rising = []
    for label, (curve, _) in curves.items():
        n = len(curve.mean)
        gain = curve.mean[-1] - curve.mean[max(n // 2, 1) - 1]
        if gain >= CLIMBING:
            rising.append(f"{label} (+{gain:.4f} from {max(n // 2, 1)} to {n} trials)")
    if not rising:
        return "Every curve has flattened by the budget used (< +0.005 over its second half)."
    return "Still climbing at the budget used: " + "; ".join(rising) + "; more trials may help."


def budget_caveat(studies: Sequence[Study]) -> str:
    """Which trials feed the curves, and what that means."""
    notes = []
    for study in studies:
        complete = len(study.by_state(TrialState.COMPLETE))
        pruned = len(study.by_state(TrialState.PRUNED))
        sampler = study.sweep.get("sampler", "?")
        notes.append(
            f"{study.label}: {complete} completed trials ({sampler} sampler"
            f"{f', {pruned} pruned and left out' if pruned else ''})"
        )
    dependent = [s for s in studies if s.sweep.get("sampler") not in INDEPENDENT]
    pruned_any = any(s.by_state(TrialState.PRUNED) for s in studies)
    text = "The curves use each arm's completed trials: " + "; ".join(notes) + "."
    warm = [f"{s.label}: {len(s.warm_started)}" for s in studies if s.warm_started]
    if warm:
        text += (
            " Warm-started trials (" + "; ".join(warm) + ") are an earlier study's best "
            "configs, not random draws: they lift the curve's start, so it overstates what "
            "n trials of this search alone would find."
        )
    if dependent or pruned_any:
        text += (
            " Caveat (as in Dodge et al.): the estimator treats trials as independent random "
            "draws. TPE trials are not (each follows from the ones before), and pruned trials "
            "never reached a final score, so these curves describe this search's completed "
            "trials; for the paper's curve, run the arms with `sweep.sampler=random "
            "sweep.pruner=none`."
        )
    return text


# --- paired comparisons -----------------------------------------------------------------


def _points(x: float) -> str:
    return f"{100 * x:+.2f}"


def pair_sentence(a: str, b: str, result: Paired, metric: str, trials: str, cost: str = "") -> str:
    """The paired verdict; `cost`: how a's compute per trial compares to b's."""
    label = LABELS.get(metric, metric)
    verdict = "distinguishable" if result.distinguishable else "not distinguishable"
    n, least = len(result.seeds), result.smallest_p
    if least < 0.05:
        floor = ""
    elif result.distinguishable:
        floor = (
            f" (every seed agrees in sign: with {n} seeds that is as far as the sign-flip "
            f"test goes, p = {least:.4f})"
        )
    else:
        floor = f" (with {n} seeds the sign-flip test cannot go below p = {least:.4f})"
    return (
        f"{a} − {b}: {_points(result.mean)} test {label} points "
        f"[{_points(result.low)}, {_points(result.high)}] (95% t-interval over "
        f"{len(result.seeds)} paired seeds; sign-flip test p = {result.p_value:.3f}; "
        f"P({a} beats {b} on a new seed) ≈ {result.p_a_beats_b:.2f}); {verdict} at "
        f"{trials}{floor}{'; ' + cost if cost else ''}."
    )


def pair_rows(studies: Sequence[Study]) -> list[tuple[str, str, Paired]]:
    scored = [(s.label, seed_scores(s, s.metric)) for s in studies]
    out = []
    for (a, sa), (b, sb) in itertools.combinations(scored, 2):
        result = paired(sb, sa)  # later arm − earlier arm (e.g. fine-tuned − frozen)
        if result is not None:
            out.append((b, a, result))
    return out


@dataclass(frozen=True)
class ConfigPair:
    """Two configs of one run group that differ in one setting, paired by seed: `a` is the
    one ahead (result = a − b, its mean ≥ 0), each labelled by that setting's value."""

    group: str
    a: str
    b: str
    result: Paired
    runs_a: Sequence[Run]
    runs_b: Sequence[Run]


def config_pairs(group: RunGroup, metric: str) -> list[ConfigPair]:
    """The group's configs compared two by two where they differ in exactly one setting (a
    pair differing in two, a grid's diagonal, would confound them) and share two seeds."""
    out = []
    for (sa, ra), (sb, rb) in itertools.combinations(group.configs(), 2):
        differ = [k for k in group.varying if repr(sa.get(k)) != repr(sb.get(k))]
        if len(differ) != 1:
            continue
        key = differ[0]
        scores_a, scores_b = runs_seed_scores(ra, metric), runs_seed_scores(rb, metric)
        result = paired(scores_a, scores_b)
        if result is None:
            continue
        label_a, label_b = setting_label(key, sa.get(key)), setting_label(key, sb.get(key))
        if result.mean < 0:
            result = paired(scores_b, scores_a)
            label_a, label_b, ra, rb = label_b, label_a, rb, ra
        out.append(ConfigPair(group.name, label_a, label_b, result, ra, rb))
    return out


def pair_table(rows: list[tuple[str, str, Paired]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "comparison": f"{a} − {b}",
                "seeds": len(r.seeds),
                "mean difference": f"{r.mean:+.4f}",
                "95% CI": f"[{r.low:+.4f}, {r.high:+.4f}]",
                "sign-flip p": round(r.p_value, 4),
                "P(A beats B, new seed)": round(r.p_a_beats_b, 2),
                "verdict": "distinguishable" if r.distinguishable else "not distinguishable",
            }
            for a, b, r in rows
        ]
    )


# --- factorial experiments --------------------------------------------------------------


def factor_levels(studies: Sequence[Study]) -> dict[str, list[str]]:
    """key -> levels in the experiment's order, when every arm is a factor combination."""
    levels: dict[str, list[str]] = {}
    for study in studies:
        factors = study.info.get("factors") or {}
        if not factors:
            return {}
        for key, level in factors.items():
            levels.setdefault(key, [])
            if level not in levels[key]:
                levels[key].append(level)
    return levels


def _cells(studies: Sequence[Study]) -> tuple[list[dict], list[int]]:
    cells = [(s.info["factors"], seed_scores(s, s.metric)) for s in studies]
    seeds = sorted(set.intersection(*(set(scores) for _, scores in cells))) if cells else []
    return [{**f, "_scores": sc} for f, sc in cells], seeds


def _per_seed(cells: list[dict], seeds: list[int], where: dict[str, str]) -> np.ndarray:
    """Mean score over the cells matching `where`, per seed (other factors averaged)."""
    match = [c for c in cells if all(c[k] == v for k, v in where.items())]
    return np.array([np.mean([c["_scores"][s] for c in match]) for s in seeds])


def effects(studies: Sequence[Study]) -> list[tuple[str, Paired]]:
    """Main effects (each level against the first) and two-factor interactions (first two
    levels of each), each a paired estimate over the seeds every arm shares."""
    levels = factor_levels(studies)
    if not levels:
        return []
    cells, seeds = _cells(studies)
    if len(seeds) < 2:
        return []
    out = []
    for key, values in levels.items():
        base = _per_seed(cells, seeds, {key: values[0]})
        for level in values[1:]:
            diff = _per_seed(cells, seeds, {key: level})
            result = paired(
                dict(zip(seeds, diff, strict=True)), dict(zip(seeds, base, strict=True))
            )
            out.append((f"{key}: {level} − {values[0]}", result))
    for (f, fl), (g, gl) in itertools.combinations(levels.items(), 2):
        y = {(i, j): _per_seed(cells, seeds, {f: fl[i], g: gl[j]}) for i in (0, 1) for j in (0, 1)}
        inter = (y[1, 1] - y[0, 1]) - (y[1, 0] - y[0, 0])
        result = paired(dict(zip(seeds, inter, strict=True)), dict.fromkeys(seeds, 0.0))
        out.append((f"{f} × {g} (interaction)", result))
    return out


def effects_table(rows: list[tuple[str, Paired]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "effect": name,
                "seeds": len(r.seeds),
                "estimate": f"{r.mean:+.4f}",
                "95% CI": f"[{r.low:+.4f}, {r.high:+.4f}]",
                "sign-flip p": round(r.p_value, 4),
                "verdict": "distinguishable" if r.distinguishable else "not distinguishable",
            }
            for name, r in rows
        ]
    )


def factor_means(studies: Sequence[Study]) -> pd.DataFrame:
    """One row per arm and seed: its factor levels and test score (for the plot)."""
    rows = []
    for study in studies:
        for seed, score in seed_scores(study, study.metric).items():
            rows.append({**study.info.get("factors", {}), "seed": seed, "score": score})
    return pd.DataFrame(rows)
