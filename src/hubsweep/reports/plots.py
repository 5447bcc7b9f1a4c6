"""The report's figures (seaborn on bare matplotlib Figures: no pyplot state). Each
returns the PNG it wrote, or None when the results hold nothing to draw."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from optuna.trial import TrialState

from hubsweep.reports.collect import Run, Study, last_reported
from hubsweep.reports.tables import LABELS, SCORES

log = logging.getLogger(__name__)

LR_KEY = "optimizer.learning_rate"


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def learning_curves(
    curves: dict[str, list[Run]],
    path: Path,
    title: str = "Best config of each arm: mean ± std over seeds",
    hue: str = "arm",
) -> Path | None:
    """Validation macro-F1 and loss against the step: mean ± std band over the runs of
    each label (an arm's seeds, or a config's runs)."""
    frames = [
        run.history.assign(**{hue: label}, seed=i)
        for label, runs in curves.items()
        for i, run in enumerate(runs)
        if not run.history.empty
    ]
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("macro_f1", "loss"), strict=True):
        sns.lineplot(data=data, x="step", y=metric, hue=hue, errorbar="sd", ax=ax)
        ax.set(xlabel="step", ylabel=f"validation {LABELS[metric]}")
        ax.grid(alpha=0.3)
    runs = data.groupby(hue, sort=False).seed.nunique()
    fig.suptitle(f"{title} (" + ", ".join(f"{a}: {n}" for a, n in runs.items()) + ")")
    return _save(fig, path)


def wrap_label(label: str, width: int = 18) -> str:
    """`label` on lines of about `width` characters, broken after a space, "=", "," or "/"
    (a setting's label has no spaces: "scaffold_keys=[sectionName]"), so the labels of
    neighbouring bars do not run into each other."""
    lines = [""]
    for piece in re.split(r"(?<=[ =,/])", label):
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.rstrip() for line in lines)


def test_scores(
    scores: dict[str, list[Run]],
    path: Path,
    title: str = "Test scores of each arm's best config, one point per seed",
    hue: str = "arm",
) -> Path | None:
    """Test accuracy and macro-F1 per run (points) over each label's mean (bar)."""
    rows = [
        {hue: wrap_label(label), "metric": LABELS[m], "score": run.test[m]}
        for label, runs in scores.items()
        for run in runs
        if run.test
        for m in SCORES
    ]
    if not rows:
        return None
    data = pd.DataFrame(rows)
    fig = Figure(figsize=(4 + 1.6 * data[hue].nunique(), 4.2), layout="constrained")
    axes = fig.subplots(1, len(SCORES), sharey=True)
    for ax, metric in zip(axes, data.metric.unique(), strict=True):
        part = data[data.metric == metric]
        sns.barplot(
            data=part, x=hue, y="score", hue=hue, errorbar=None, alpha=0.35, legend=False, ax=ax
        )
        # A swarm, not a jittered strip: no overlaps, and the same picture every time.
        sns.swarmplot(data=part, x=hue, y="score", hue=hue, size=7, legend=False, ax=ax)
        low = part.score.min()
        ax.set(title=f"test {metric}", xlabel="", ylabel="score", ylim=(max(0, low - 0.05), None))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def history(studies: Sequence[Study], path: Path) -> Path | None:
    """Objective per trial, best so far, and where pruned trials stopped."""
    studies = [s for s in studies if s.trials]
    if not studies:
        return None
    fig = Figure(figsize=(5.5 * len(studies), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(studies), sharey=True))
    for ax, study in zip(axes, studies, strict=True):
        complete = study.by_state(TrialState.COMPLETE)
        pruned = [(t.number, last_reported(t)) for t in study.by_state(TrialState.PRUNED)]
        pruned = [(n, v) for n, v in pruned if v is not None]
        if complete:
            numbers = [t.number for t in complete]
            values = [t.value for t in complete]
            ax.scatter(numbers, values, s=22, color="tab:blue", label="complete")
            best = (
                np.minimum.accumulate(values) if study.minimize else np.maximum.accumulate(values)
            )
            ax.step(numbers, best, where="post", color="tab:red", label="best so far")
        if pruned:
            ax.scatter(
                *zip(*pruned, strict=True),
                marker="x",
                color="tab:gray",
                label="pruned (last report)",
            )
        failed = len(study.failed)
        ax.set(
            title=f"{study.label}: {len(complete)} complete, {len(pruned)} pruned, {failed} failed",
            xlabel="trial",
            ylabel=f"validation {LABELS.get(study.metric, study.metric)}",
        )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("Optuna optimisation history")
    return _save(fig, path)


def importances(studies: Sequence[Study], path: Path) -> Path | None:
    """Importance of each searched parameter for reaching the best trials, per arm."""
    rows = []
    for study in studies:
        if study.optuna_study is None or len(study.by_state(TrialState.COMPLETE)) < 3:
            continue
        names = study.param_names()
        try:
            # PED-ANOVA, Optuna's default: needs no scikit-learn, and is deterministic.
            found = optuna.importance.get_param_importances(study.optuna_study)
        except (RuntimeError, ValueError) as e:  # e.g. a parameter never varied
            log.warning("%s: no parameter importances: %s", study.label, e)
            continue
        rows += [
            {"arm": study.label, "parameter": names.get(k, k), "importance": v}
            for k, v in found.items()
        ]
    if not rows:
        return None
    data = pd.DataFrame(rows)
    fig = Figure(
        figsize=(7, 1.5 + 0.5 * data.parameter.nunique() * data.arm.nunique()), layout="constrained"
    )
    ax = fig.subplots()
    sns.barplot(data=data, x="importance", y="parameter", hue="arm", ax=ax)
    ax.set(
        title="Parameter importance (PED-ANOVA over complete trials)",
        xlabel="importance (normalised to sum 1)",
        ylabel="",
    )
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def lr_vs_score(studies: Sequence[Study], path: Path) -> Path | None:
    """Learning rate against the objective, every arm on one axis; pruned trials at their
    last reported value."""
    rows = []
    log_scale = False
    for study in studies:
        for t in study.trials:
            if LR_KEY not in t.params:
                continue
            dist = t.distributions[LR_KEY]
            log_scale |= bool(getattr(dist, "log", False))
            if t.state == TrialState.COMPLETE:
                score = t.value
            elif t.state == TrialState.PRUNED:
                score = last_reported(t)
            else:
                continue
            if score is not None:
                kind = t.state.name.lower()
                rows.append(
                    {"arm": study.label, "lr": t.params[LR_KEY], "score": score, "trial": kind}
                )
    if not rows:
        return None
    data = pd.DataFrame(rows)
    metric = LABELS.get(studies[0].metric, studies[0].metric)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    sns.scatterplot(
        data=data,
        x="lr",
        y="score",
        hue="arm",
        style="trial",
        style_order=["complete", "pruned"],
        markers={"complete": "o", "pruned": "X"},
        s=45,
        ax=ax,
    )
    if log_scale:
        ax.set_xscale("log")
    ax.set(
        title="Learning rate vs validation score",
        xlabel="learning rate",
        ylabel=f"validation {metric}",
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


def confusion(models: dict[str, Run], path: Path) -> Path | None:
    """Test confusion matrix of each arm's best model, row-normalised, counts annotated."""
    if not models:
        return None
    fig = Figure(figsize=(max(6.0, 4.6 * len(models)), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(models)))
    for ax, (label, run) in zip(axes, models.items(), strict=True):
        counts = np.asarray(run.test["confusion_matrix"])
        names = list(run.test["per_class"])
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        notes = np.array(
            [
                [f"{r:.2f}\n({c})" for r, c in zip(rr, cc, strict=True)]
                for rr, cc in zip(rates, counts, strict=True)
            ]
        )
        sns.heatmap(
            rates,
            annot=notes,
            fmt="",
            vmin=0,
            vmax=1,
            cmap="Blues",
            cbar=False,
            xticklabels=names,
            yticklabels=names,
            square=True,
            ax=ax,
        )
        seed = run.setting("trainer.seed")
        ax.set(
            title=f"{label} (seed {seed}): test acc {run.test['accuracy']:.3f}",
            xlabel="predicted",
            ylabel="true",
        )
    fig.suptitle("Test confusion matrices of the best models\n(rows: true class; share, count)")
    return _save(fig, path)


def budget(curves: dict, path: Path) -> Path | None:
    """Expected best validation score against trials and against compute time, per arm,
    with the bootstrap band (curves: label -> (Curve, seconds per trial))."""
    if not curves:
        return None
    # Studies without recorded trial times (older ones) have no compute panel.
    timed = any(np.isfinite(seconds) and seconds > 0 for _, seconds in curves.values())
    fig = Figure(figsize=(11 if timed else 6, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if timed else 1, sharey=True, squeeze=False)[0]
    by_trials, by_time = axes[0], (axes[1] if timed else None)
    palette = sns.color_palette(n_colors=len(curves))
    for color, (label, (curve, seconds)) in zip(palette, curves.items(), strict=True):
        panels = [(by_trials, curve.budgets)]
        if by_time is not None and np.isfinite(seconds) and seconds > 0:
            panels.append((by_time, curve.budgets * seconds / 60))
        for ax, x in panels:
            ax.plot(x, curve.mean, color=color, label=label)
            ax.fill_between(x, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
    by_trials.set(xlabel="trials (n)", ylabel="expected best validation score", xscale="log")
    if by_time is not None:
        by_time.set(
            xlabel="compute (minutes: n × mean time per completed trial, cache builds aside)",
            xscale="log",
        )
    for ax in axes:
        ax.grid(alpha=0.3)
    by_trials.legend(title="arm")
    fig.suptitle("Expected best validation score of n trials (95% bootstrap band)")
    return _save(fig, path)


def quality_vs_compute(data: tuple[Sequence, set[str], str], path: Path) -> Path | None:
    """Each arm's score (± std over seeds) against its compute per trial; the Pareto front
    joined (data: ArmCosts, the front's arm names, the score's label)."""
    costs, front, label = data
    if len(costs) < 2:
        return None
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    ax = fig.subplots()
    palette = sns.color_palette(n_colors=len(costs))
    mixed = len({c.quality_from for c in costs}) > 1  # then say which score each point is
    for color, c in zip(palette, costs, strict=True):
        ax.errorbar(
            c.per_trial_s,
            c.quality,
            yerr=c.quality_std,
            fmt="o",
            color=color,
            capsize=4,
            markersize=8 if c.arm in front else 6,
            label=f"{c.arm} ({c.quality_from})" if mixed else c.arm,
        )
    on = sorted((c for c in costs if c.arm in front), key=lambda c: c.per_trial_s)
    if len(on) > 1:
        ax.plot(
            [c.per_trial_s for c in on],
            [c.quality for c in on],
            "--",
            color="0.4",
            linewidth=1,
            label="Pareto front",
        )
    sources = {c.quality_from for c in costs}
    ax.set(
        xscale="log",
        xlabel="compute per trial (wall seconds, cache builds aside; log scale)",
        ylabel=f"{'/'.join(sorted(sources))} {label}",
    )
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Quality against compute per trial (mean ± std over re-run seeds)")
    return _save(fig, path)


def interaction(data: tuple[pd.DataFrame, list[str], str], path: Path) -> Path | None:
    """Mean test score per level of the first factor, one line per level of the second
    (parallel lines: no interaction), ± std over seeds."""
    frame, factors, metric = data
    if frame.empty or not factors:
        return None
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    hue = factors[1] if len(factors) > 1 else None
    sns.pointplot(
        data=frame,
        x=factors[0],
        y="score",
        hue=hue,
        errorbar="sd",
        dodge=0.15,
        ax=ax,
        markers="o",
        capsize=0.08,
    )
    ax.set(ylabel=f"test {LABELS.get(metric, metric)} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    fig.suptitle("Factor effects: parallel lines mean no interaction")
    return _save(fig, path)
