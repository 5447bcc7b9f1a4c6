"""Assemble a report: tables/*.{md,csv,tex}, plots/*.png and report.md tying them together
with each study's state, resolved configs and the commands that reproduce the numbers."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pandas as pd

from hubsweep.errors import HubsweepError
from hubsweep.metrics import MACRO_RULE
from hubsweep.reports import plots
from hubsweep.reports.collect import Results, Run, RunGroup, Study, best_model, collect
from hubsweep.reports.commands import group_commands, retrain_commands
from hubsweep.reports.comparison_sections import comparison_part, config_pairs, warning_lines
from hubsweep.reports.markdown import figures as _figures
from hubsweep.reports.markdown import shown as _shown
from hubsweep.reports.markdown import write_table
from hubsweep.reports.tables import (
    ADAPTATION_COLUMN,
    LABELS,
    PAIRED_GAINS,
    arms_table,
    run_scores,
    runs_table,
    setting_label,
    top_trials,
    trials_table,
)
from hubsweep.reports.winners import finalists_lines
from hubsweep.results.layout import (
    CONFIG_FILE,
    METRICS_FILE,
    REPORT_DIR,
    REPORT_FILE,
    STUDY_INFO_FILE,
    STUDY_JOURNAL_FILE,
    best_preset_path,
    holds_run,
)
from hubsweep.study.flat import stop_sentence
from hubsweep.study.storage import mask

log = logging.getLogger(__name__)

RUN_SCORES_TITLE = "Test scores of each config, one point per run"
RUN_CURVES_TITLE = "Validation curves of each config: mean ± std over its runs"


def _params_text(params: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _study_section(study: Study, tables: Path) -> list[str]:
    warned = warning_lines(study)
    out = [
        f"### {study.label}",
        "",
        *([*warned, ""] if warned else []),
        f"- study `{study.name}` in `{_shown(study.directory)}`, storage `{mask(study.storage)}`",
        f"- state: **{study.status()}**; {study.retrain_status()}",
    ]
    elsewhere = study.elsewhere()
    if elsewhere:
        where = "; ".join(f"{host}: {', '.join(what)}" for host, what in elsewhere.items())
        out.append(f"- run files on other hosts, reported here from the storage: {where}")
    if study.arm:
        overrides = " ".join(study.info.get("arm_overrides", []))
        out.append(f"- arm overrides: `{overrides}`")
    best, winner = study.best_trial, study.winner
    metric = LABELS.get(study.metric, study.metric)
    if best is not None:
        out.append(
            f"- best trial {best.number}: validation {metric} {best.value:.4f} with "
            f"{_params_text(best.params)}"
        )
    if winner is not None and winner is not best:
        out.append(
            f"- winner (finalists' race): trial {winner.number}, validation {metric} "
            f"{winner.value:.4f} in the search, with {_params_text(winner.params)}"
        )
    if study.stopped_flat:
        out.append(f"- search {stop_sentence(study.stopped_flat)}")
    if study.warm_started:
        out.append(f"- {study.warm_start_text()}")
    out += finalists_lines(study, tables)
    return out


def _reproduce(results: Results, out: Path) -> list[str]:
    lines = ["## Reproduce", ""]
    commands = {s.info["command"] for s in results.studies if s.info.get("command")}
    if commands:
        lines += ["The studies (running a command again resumes its study):", "", "```bash"]
        lines += sorted(mask(c) for c in commands)
        lines += ["```", ""]
    for group in results.groups:
        made = group_commands(group.runs)
        if made:
            lines += [f"The runs of `{group.name}`:", "", "```bash", *map(mask, made), "```", ""]
    for study in results.studies:
        retrain = retrain_commands(study)
        if retrain:
            lines += [
                f"{study.label}: the best config's runs with test, one per seed:",
                "",
                "```bash",
                *retrain,
                "```",
                "",
            ]
    journals = [
        s.directory / STUDY_JOURNAL_FILE
        for s in results.studies
        if (s.directory / STUDY_JOURNAL_FILE).is_file()
    ]
    if journals:
        lines += [
            "Browse a study in Optuna Dashboard (`pip install optuna-dashboard`):",
            "",
            "```bash",
            *[f"optuna-dashboard {_shown(j)}" for j in journals],
            "```",
            "",
        ]
    command = f"hubsweep-report {_shown(results.root)}"
    if out.resolve() != (results.root / REPORT_DIR).resolve():
        command += f" --output {_shown(out)}"
    lines += ["This report:", "", "```bash", command, "```", ""]
    return lines


def _details(summary: str, yaml_text: str) -> list[str]:
    return [
        f"<details><summary>{summary}</summary>",
        "",
        "```yaml",
        yaml_text.rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]


def _configs(results: Results) -> list[str]:
    lines = []
    for study in results.studies:
        preset = best_preset_path(study.directory)
        if preset.is_file():
            summary = f"{study.label}: best config (<code>{_shown(preset)}</code>)"
            lines += _details(summary, preset.read_text())
    for group in results.groups:
        for _, runs in group.configs():
            config = runs[0].directory / CONFIG_FILE
            summary = f"{group.name}: <code>{_shown(config)}</code>"
            lines += _details(summary, config.read_text())
    return ["## Resolved configs", "", *lines] if lines else []


def _macro_note(results: Results) -> list[str]:
    """How macro scores average, and the runs whose splits lack a class (their macro scores
    average over fewer classes than the dataset has)."""
    runs = [r for g in results.groups for r in g.runs]
    runs += [r for s in results.studies for r in s.retrain]
    lacking: dict[str, list[str]] = {}
    for run in runs:
        for role, classes in ((run.final or {}).get("absent_classes") or {}).items():
            lacking.setdefault(f"{role}: {', '.join(classes)}", []).append(_shown(run.directory))
    lines = [f"Macro precision, recall and F1: the {MACRO_RULE}.", ""]
    for what, where in sorted(lacking.items()):
        lines += [
            f"**Warning:** a split without every class ({what}) in {len(where)} run(s), e.g. "
            f"`{where[0]}`: their macro scores average over the classes present.",
            "",
        ]
    return lines


def _problems(results: Results) -> list[str]:
    """Files that could not be read: named, so the rest of the report can still be trusted."""
    lines = [f"- study `{_shown(s.directory)}`: {s.error}" for s in results.studies if s.error]
    runs = [r for g in results.groups for r in g.runs]
    runs += [r for s in results.studies for r in s.retrain]
    lines += [f"- run `{_shown(r.directory)}`: {'; '.join(r.problems)}" for r in runs if r.problems]
    if not lines:
        return []
    intro = "These could not be read; what they hold is missing from the tables above:"
    return ["## Not read", "", intro, "", *lines, ""]


def build_report(
    root: Path, out: Path | None = None, top_k: int = 10, storages: Sequence[str] = ()
) -> Path:
    """`storages`: database URLs the user asked to open (a study.json's own URL is opened
    only in the user's own directories)."""
    root = Path(root)
    if not root.is_dir():
        raise HubsweepError(f"{root}: no such results directory")
    results = collect(root, storages)
    if results.empty:
        raise HubsweepError(
            f"{root}: no runs or studies found (looked for runs with config.yaml and "
            f"{METRICS_FILE}, and studies with {STUDY_INFO_FILE} or {STUDY_JOURNAL_FILE})"
        )
    out = Path(out) if out else root / REPORT_DIR
    tables = out / "tables"
    title = root.resolve().name
    lines = [
        f"# Report: {title}",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from `{_shown(root)}`.",
        "",
    ]
    lines += _macro_note(results)
    studies = results.studies
    if studies:
        lines += _studies_part(results, tables, out, top_k)
    if any(g.runs for g in results.groups):
        lines += _runs_part(results, tables, out, bool(studies))
    lines += _problems(results) + _reproduce(results, out) + _configs(results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    path.write_text("\n".join(lines).rstrip() + "\n")
    log.info("report: %d studies, %d run groups -> %s", len(studies), len(results.groups), path)
    return path


def _studies_part(results: Results, tables: Path, out: Path, top_k: int) -> list[str]:
    studies = results.studies
    lines = ["## Studies", ""]
    for study in studies:
        lines += [*_study_section(study, tables), ""]
    numbers, text = arms_table(studies)
    metric = LABELS.get(studies[0].metric, studies[0].metric)
    lines += [
        "## Results per arm",
        "",
        f"Best val: the study's objective (validation {metric}) of its winner: the best "
        "trial, or where the finalists were raced, the one with the best re-run mean. The "
        "winner is then re-run with new seeds and evaluated on test once per seed: mean ± "
        "sample std over seeds, with the 95% t-interval of the mean. Test never selects.",
        "",
        write_table(numbers, text, tables, "arms"),
        "",
    ]
    retrained = {s.label: s.retrain for s in studies if s.retrain}
    lines += _figures(
        out,
        [
            (
                plots.test_scores,
                retrained,
                "test_scores",
                "Test scores per seed over the arm's mean",
            ),
            (
                plots.learning_curves,
                retrained,
                "learning_curves",
                "Validation curves of each arm's best config, mean ± std over seeds",
            ),
        ],
    )
    lines += comparison_part(studies, tables, out)
    trials = pd.concat([trials_table(s) for s in studies], ignore_index=True)
    top = top_trials(trials, studies, top_k)
    if not top.empty:
        lines += [
            f"## Top {top_k} trials per arm",
            "",
            write_table(top, top, tables, "top_trials"),
            "",
        ]
        trials.to_csv(tables / "trials.csv", index=False)
        lines += ["Every trial, with its state and fail reason: `tables/trials.csv`.", ""]
    lines += ["## Search", ""]
    lines += _figures(
        out,
        [
            (plots.history, studies, "history", "Optimisation history"),
            (plots.importances, studies, "importances", "Parameter importances"),
            (plots.lr_vs_score, studies, "lr_vs_score", "Learning rate vs validation score"),
        ],
    )
    models = _best_models((s.label, s.retrain, s.metric, s.minimize) for s in studies)
    if models:
        lines += ["## Best models", ""]
        lines += [
            f"- {label}: `{_shown(run.directory)}` (the re-run seed with the best validation "
            f"{metric}{'' if holds_run(run.directory) else '; on another host, see Studies'})"
            for label, run in models.items()
        ]
        lines += [""]
        lines += _figures(out, [(plots.confusion, models, "confusion", "Test confusion matrices")])
    return lines


def _runs_part(results: Results, tables: Path, out: Path, with_studies: bool) -> list[str]:
    groups = [g for g in results.groups if g.runs]
    numbers, text = runs_table(groups)
    lines = [
        "## Runs" if with_studies else "## Results",
        "",
        "One row per distinct config in each run directory (single runs, multirun grids), "
        "seeds pooled: mean ± sample std [95% t-interval] over its runs.",
        "",
        write_table(numbers, text, tables, "runs"),
        "",
    ]
    scores = run_scores(groups)
    if not scores.empty:
        scores.to_csv(tables / "run_scores.csv", index=False)
        lines += ["Every run, by seed, with its scores: `tables/run_scores.csv`.", ""]
    if ADAPTATION_COLUMN in text:
        lines += [
            f"{ADAPTATION_COLUMN}: the rows' module was first adapted to the task's training "
            "text (hubsweep-adapt), once for every run on it: not in s / run.",
            "",
        ]
    for g in PAIRED_GAINS:
        if g.column in text:
            lines += [f"{g.column}, {g.gain_column}: {g.note}", ""]
    lines += config_pairs(groups, tables)
    curves = _config_labels(groups)
    tested = {label: runs for label, runs in curves.items() if any(r.test for r in runs)}
    if not with_studies:
        models = _best_models((label, runs, "macro_f1", False) for label, runs in tested.items())
        lines += _figures(
            out,
            [
                (
                    partial(plots.test_scores, title=RUN_SCORES_TITLE, hue="config"),
                    tested,
                    "run_test_scores",
                    "Test scores per run",
                ),
                (
                    partial(plots.learning_curves, title=RUN_CURVES_TITLE, hue="config"),
                    curves,
                    "run_learning_curves",
                    "Validation curves, mean ± std over runs of one config",
                ),
                (
                    plots.confusion,
                    dict(list(models.items())[:4]),
                    "run_confusion",
                    "Test confusion matrices (at most four configs)",
                ),
            ],
        )
    return lines


def _best_models(candidates: Iterable[tuple[str, list[Run], str, bool]]) -> dict[str, Run]:
    """Per label, the run with the best validation score (label, runs, metric, minimize)."""
    picked = {label: best_model(runs, m, minimize) for label, runs, m, minimize in candidates}
    return {label: run for label, run in picked.items() if run is not None}


def _config_labels(groups: list[RunGroup]) -> dict[str, list[Run]]:
    """Each config's runs by label: the settings that set it apart from the report's other
    configs (in any group), else its experiment's name; a label two groups share (the same
    config run twice) gets its group's name in front."""
    configs = []
    for group in groups:
        for settings, runs in group.configs():
            label = ", ".join(setting_label(k, v) for k, v in settings.items())
            fallback = runs[0].setting("experiment_name") or os.path.basename(group.name)
            configs.append((group.name, label or fallback, runs))
    counts = Counter(label for _, label, _ in configs)
    return {
        f"{group}: {label}" if counts[label] > 1 else label: runs for group, label, runs in configs
    }
