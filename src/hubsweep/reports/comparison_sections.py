"""The report's comparison sections in Markdown: warnings atop each study, the budget
curves, the paired comparisons of arms (with their cost), quality against compute and the
effects of a factorial experiment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from optuna.trial import TrialState

from hubsweep.reports import comparison, cost, plots
from hubsweep.reports.collect import RunGroup, Study
from hubsweep.reports.markdown import figures, write_table
from hubsweep.reports.tables import LABELS, seconds_per_run


def warning_lines(study: Study) -> list[str]:
    return [f"> **Warning:** {w}" for w in comparison.warnings(study)]


def _budget(studies: Sequence[Study], tables: Path, out: Path) -> list[str]:
    curves = comparison.budget_curves(studies)
    if not curves:
        return []
    table = comparison.budget_table(curves)
    return [
        "## Expected best score against budget",
        "",
        "The expected best validation score of n trials drawn from each arm's trials "
        "(Dodge et al. 2019; the unbiased estimator of Tang et al. 2020), with a 95% "
        "bootstrap band: where a curve is still climbing at the budget used, more trials "
        "would likely find a better config; where two arms' bands overlap, the budget does "
        "not separate them. " + comparison.budget_caveat(studies),
        "",
        comparison.still_climbing(curves),
        "",
        write_table(table, table, tables, "budget"),
        "",
        *figures(out, [(plots.budget, curves, "budget", "Expected best score against budget")]),
    ]


def _trials_phrase(studies: Sequence[Study]) -> str:
    finished = {
        len(s.by_state(TrialState.COMPLETE)) + len(s.by_state(TrialState.PRUNED)) for s in studies
    }
    seeds = {s.sweep.get("retrain_best_seeds", 0) for s in studies}
    trials = "/".join(str(n) for n in sorted(finished))
    return f"{trials} trials × {'/'.join(str(n) for n in sorted(seeds))} seeds"


def _paired(studies: Sequence[Study], tables: Path) -> list[str]:
    rows = comparison.pair_rows(studies)
    if not rows:
        return []
    metric = studies[0].metric
    phrase = _trials_phrase(studies)
    costs = cost.arm_costs(studies)
    sentences = [
        f"- {comparison.pair_sentence(a, b, r, metric, phrase, _ratio(costs, a, b))}"
        for a, b, r in rows
    ]
    table = comparison.pair_table(rows)
    return [
        "## Paired comparison of arms",
        "",
        "Each arm's best config is re-run with the same seeds, so the comparison is on the "
        "per-seed differences of the test "
        f"{LABELS.get(metric, metric)}: their mean with a 95% t-interval, an exact sign-flip "
        "permutation test, and the chance that one arm beats the other on one new seed.",
        "",
        *sentences,
        "",
        write_table(table, table, tables, "paired"),
        "",
    ]


def config_pairs(groups: Sequence[RunGroup], tables: Path) -> list[str]:
    """The paired comparison of the configs within each run group (a multirun grid over
    seeds) that differ in one setting, on the test macro-F1 of the seeds they share."""
    metric = "macro_f1"
    pairs = [pair for group in groups for pair in comparison.config_pairs(group, metric)]
    if not pairs:
        return []
    sentences = []
    for p in pairs:
        seconds_a, seconds_b = seconds_per_run(p.runs_a), seconds_per_run(p.runs_b)
        cost_text = cost.ratio_phrase(p.a, seconds_a, p.b, seconds_b, "time per run")
        phrase = f"one config each × {len(p.result.seeds)} seeds"
        where = f"{p.group}: " if len(groups) > 1 else ""
        sentence = comparison.pair_sentence(p.a, p.b, p.result, metric, phrase, cost_text)
        sentences.append(f"- {where}{sentence}")
    table = comparison.pair_table([(p.a, p.b, p.result) for p in pairs])
    if len(groups) > 1:
        table.insert(0, "group", [p.group for p in pairs])
    return [
        "### Paired comparison of configs",
        "",
        "The configs of a run directory that differ in one setting and share seeds, compared "
        f"on the per-seed differences of the test {LABELS[metric]}, the one ahead first: their "
        "mean with a 95% t-interval, an exact sign-flip permutation test, and the chance that "
        "one config beats the other on one new seed.",
        "",
        *sentences,
        "",
        write_table(table, table, tables, "paired_configs"),
        "",
    ]


def _ratio(costs: dict[str, cost.ArmCost], a: str, b: str) -> str:
    if a not in costs or b not in costs:
        return ""
    return cost.ratio_phrase(a, costs[a].per_trial_s, b, costs[b].per_trial_s)


_WHAT_IT_COST = (
    "What each arm's answer cost: its finished trials' wall seconds (a population "
    "member's share of its program's), training seconds (stepping only), and the "
    "finalists' and test re-runs' on top. Per trial, the wall seconds leave out the cache "
    "builds (embedding a module's splits, loading the datasets: once per cache_dir, so "
    "the first arm to need them pays for every arm after it; the totals keep them), and "
    "so does a module's adaptation (hubsweep-adapt, once per adapted pair, before any "
    "trial: in the first arm's total on it). Elapsed: the same by the clock, where trials "
    "side by side (several workers or hosts) count once."
)


def _cost(studies: Sequence[Study], tables: Path, out: Path) -> list[str]:
    by_arm = cost.arm_costs(studies)
    costs = list(by_arm.values())
    if not costs:
        return []
    metric, minimize = studies[0].metric, studies[0].minimize
    numbers, text = cost.cost_table(costs, metric, minimize)
    label = LABELS.get(metric, metric)
    if len(costs) == 1:  # what the one answer cost; no front or plot of one point
        numbers, text = numbers.drop(columns="pareto"), text.drop(columns="Pareto front")
        return [
            "## Compute",
            "",
            _WHAT_IT_COST,
            "",
            cost.budget_sentence(studies, by_arm),
            "",
            write_table(numbers, text, tables, "cost"),
            "",
        ]
    front = cost.pareto(costs, minimize)
    return [
        "## Quality against compute",
        "",
        f"{_WHAT_IT_COST} An arm is on the Pareto front when no other "
        f"arm scores at least as well for no more compute per trial. Quality: test {label} "
        "over the re-run seeds (where an arm was not re-run with test: its winner's "
        "validation score over the finalists' re-runs, else in the search). "
        f"Pareto front: {', '.join(sorted(front))}.",
        "",
        cost.budget_sentence(studies, by_arm),
        "",
        write_table(numbers, text, tables, "cost"),
        "",
        *figures(
            out,
            [
                (
                    plots.quality_vs_compute,
                    (costs, front, label),
                    "quality_vs_compute",
                    "Quality against compute per trial",
                )
            ],
        ),
    ]


def _factors(studies: Sequence[Study], tables: Path, out: Path) -> list[str]:
    levels = comparison.factor_levels(studies)
    rows = comparison.effects(studies)
    if not levels or not rows:
        return []
    metric = studies[0].metric
    table = comparison.effects_table(rows)
    data = (comparison.factor_means(studies), list(levels), metric)
    described = "; ".join(f"`{k}`: {', '.join(v)}" for k, v in levels.items())
    return [
        "## Factor effects",
        "",
        f"Factors {described}. A main effect is the change in test "
        f"{LABELS.get(metric, metric)} from a factor's first level to another, averaged over "
        "the other factors' levels; an interaction is how much one factor's effect changes "
        "with the other's level (a 2 × 2 difference of differences). Both are estimated per "
        "seed (every arm re-runs its best config with the same seeds) with a 95% t-interval "
        "and a sign-flip test.",
        "",
        write_table(table, table, tables, "effects"),
        "",
        *figures(out, [(plots.interaction, data, "effects", "Factor effects on the test score")]),
    ]


def comparison_part(studies: Sequence[Study], tables: Path, out: Path) -> list[str]:
    return [
        *_factors(studies, tables, out),
        *_paired(studies, tables),
        *_cost(studies, tables, out),
        *_budget(studies, tables, out),
    ]
