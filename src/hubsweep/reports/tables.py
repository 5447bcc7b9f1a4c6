"""The report's tables as pandas frames: numbers for CSV, `mean ± std` text for Markdown
and LaTeX. Every number comes from the run files and the study storage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from optuna.trial import TrialState
from scipy import stats

from hubsweep.reports.collect import Run, RunGroup, Study, last_reported
from hubsweep.reports.markdown import shown
from hubsweep.results.layout import RunStatus
from hubsweep.study.liveness import (
    CACHE_BUILD_TIME,
    SURPLUS,
    TRAIN_TIME,
    WALL_TIME,
    WARM_START,
    compute_s,
)

SCORES = ("accuracy", "macro_f1")
LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "loss": "loss"}
# A module adapted by hubsweep-adapt: its one-time cost, beside the runs' or arms' seconds.
ADAPTATION_COLUMN = "module adaptation (min)"


@dataclass(frozen=True)
class PairedGain:
    """A run setting measured against its own run without it: final.json's `block` holds
    the run's test selection metric without the setting (`without`) and with it (`with_`);
    the runs table then shows the first and the gain, paired by run, in points. The CSV
    columns are named after `without` and `gain_prefix`: {without}_mean, ..."""

    block: str
    without: str
    with_: str
    gain_prefix: str
    column: str  # the Markdown columns
    gain_column: str
    note: str  # the line under the table

    def spreads(self, tested: Sequence[Run]) -> tuple[Spread, Spread]:
        """Over the tested runs with the block: the score without, and with minus without."""
        pairs = [
            (b[self.without], b[self.with_])
            for r in tested
            if (b := (r.final or {}).get(self.block)) and self.without in b
        ]
        return Spread.of([a for a, _ in pairs]), Spread.of([w - a for a, w in pairs])

    def columns(self, tested: Sequence[Run]) -> tuple[dict, dict]:
        """The runs table's columns for these runs: (numbers, formatted)."""
        without, gain = self.spreads(tested)
        numbers = {**without.columns(self.without), **gain.columns(self.gain_prefix)}
        return numbers, {self.column: without.text(True), self.gain_column: _signed(gain)}


PAIRED_GAINS = (
    PairedGain(
        "decision",
        "test_argmax",
        "test_decided",
        "decision_gain",
        "test by argmax",
        "decision − argmax (test)",
        "the rows decide by per-class offsets fitted on validation (`trainer.decision`); the "
        "first is their test selection metric had they decided by argmax, the second the "
        "offsets' gain over it, paired by run, in points. Validation columns are argmax's.",
    ),
    PairedGain(
        "averaging",
        "test_trained",
        "test_averaged",
        "averaging_gain",
        "test, trained weights",
        "average − trained (test)",
        "the rows evaluate the moving average of their weights (`trainer.ema_decay`); the "
        "first is their test selection metric with the weights as trained (by argmax), the "
        "second the average's gain over them, paired by run, in points.",
    ),
)


@dataclass(frozen=True)
class Spread:
    """Mean, sample std and the 95% t-interval of the mean over n seeds."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        arr = np.asarray([v for v in values if v is not None], dtype=float)
        if arr.size == 0:
            return cls(0, np.nan, np.nan, np.nan, np.nan)
        if arr.size == 1:
            return cls(1, float(arr[0]), np.nan, np.nan, np.nan)
        std = float(arr.std(ddof=1))
        half = float(stats.t.ppf(0.975, arr.size - 1)) * std / np.sqrt(arr.size)
        mean = float(arr.mean())
        return cls(int(arr.size), mean, std, mean - half, mean + half)

    def columns(self, name: str) -> dict[str, float]:
        return {
            f"{name}_mean": self.mean,
            f"{name}_std": self.std,
            f"{name}_ci95_low": self.low,
            f"{name}_ci95_high": self.high,
        }

    def text(self, with_interval: bool = False) -> str:
        if self.n == 0:
            return "–"
        if self.n == 1:
            return f"{self.mean:.4f}"
        text = f"{self.mean:.4f} ± {self.std:.4f}"
        return f"{text} [{self.low:.4f}, {self.high:.4f}]" if with_interval else text


def _columns(spreads: dict[str, Spread], prefix: str) -> dict[str, float]:
    """{prefix}_{metric}_{mean,std,ci95_low,ci95_high} for each metric's spread."""
    return {
        k: v for m, spread in spreads.items() for k, v in spread.columns(f"{prefix}_{m}").items()
    }


def _mean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else np.nan


def class_names(studies: Sequence[Study]) -> list[str]:
    for study in studies:
        for run in study.retrain:
            if run.test:
                return list(run.test["per_class"])
    return []


def arms_table(studies: Sequence[Study]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per study (arm): (numbers for CSV, formatted for Markdown/LaTeX)."""
    classes = class_names(studies)
    rows = [_arm_rows(study, classes) for study in studies]
    return pd.DataFrame([r[0] for r in rows]), pd.DataFrame([r[1] for r in rows])


def _arm_rows(study: Study, classes: list[str]) -> tuple[dict, dict]:
    best = study.winner
    tested = [r for r in study.retrain if r.status == RunStatus.COMPLETED and r.test]
    spreads = {m: Spread.of([r.test[m] for r in tested]) for m in SCORES}
    per_class = {c: Spread.of([r.test["per_class"][c]["f1"] for r in tested]) for c in classes}
    val = Spread.of([r.final["final"][study.metric] for r in tested if r.final.get("final")])
    timed = [
        t
        for t in study.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and WALL_TIME in t.user_attrs
    ]
    names = study.param_names()
    params = {names[k]: v for k, v in best.params.items()} if best else {}
    if "trainer.steps" not in names:  # not searched: the steps the best config ran
        params["steps"] = tested[0].setting("trainer.steps") if tested else _base_steps(study)
    row = {
        "arm": study.label,
        "complete": len(study.by_state(TrialState.COMPLETE)),
        "pruned": len(study.by_state(TrialState.PRUNED)),
        RunStatus.FAILED: len(study.failed),
        "running": len(study.by_state(TrialState.RUNNING)),
        "best_trial": best.number if best else None,
        f"best_val_{study.metric}": best.value if best else np.nan,
        **params,
        "seeds": len(tested),
        **_columns(spreads, "test"),
        **{f"test_f1_{c}_mean": s.mean for c, s in per_class.items()},
        **{f"test_f1_{c}_std": s.std for c, s in per_class.items()},
        f"retrain_val_{study.metric}_mean": val.mean,
        "time_per_trial_s": _mean([compute_s(t.user_attrs) for t in timed]),
        "steps_per_trial": _mean([t.user_attrs.get("steps_done") for t in timed]),
    }
    metric = LABELS.get(study.metric, study.metric)
    return row, (
        {
            "arm": study.label,
            "trials (complete / pruned / failed)": f"{row['complete']} / {row['pruned']} / "
            f"{row[RunStatus.FAILED]}"
            + (f" (+{row['running']} running)" if row["running"] else ""),
            f"best val {metric}": f"{best.value:.4f}" if best else "–",
            **{k: short_value(v) for k, v in params.items()},
            "seeds": f"{len(tested)}",
            "test accuracy": spreads["accuracy"].text(),
            "accuracy 95% CI": _interval(spreads["accuracy"]),
            "test macro-F1": spreads["macro_f1"].text(),
            "macro-F1 95% CI": _interval(spreads["macro_f1"]),
            **{f"F1 {c}": s.text() for c, s in per_class.items()},
            "s / trial": f"{row['time_per_trial_s']:.1f}" if timed else "–",
        }
    )


def _interval(spread: Spread) -> str:
    return f"[{spread.low:.4f}, {spread.high:.4f}]" if spread.n > 1 else "–"


def _base_steps(study: Study) -> int | None:
    """The steps every trial of the study runs, from the question it recorded (a study with
    no re-run, say every trial diverged, still ran a known number of steps)."""
    config = study.info.get("question", {}).get("config", {})
    steps = config.get("trainer", {}).get("steps")
    return steps if isinstance(steps, int) else None


def short_value(value) -> str:
    """A setting or parameter as a table shows it; a list as the command line writes it."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(short_value(v) for v in value) + "]"
    return str(value)


def setting_label(key: str, value) -> str:
    """`leaf=value` of a dotted config key, as run labels and paired sentences name it."""
    return f"{key.split('.')[-1]}={short_value(value)}"


def seconds_per_run(runs: Sequence[Run]) -> float:
    """The mean compute seconds of the runs that finished (NaN where none did)."""
    return _mean([compute_s(r.final) for r in runs if r.final and r.final.get("final")])


def trials_table(study: Study) -> pd.DataFrame:
    """Every trial of a study with its state, value, parameters and records."""
    names = study.param_names()
    rows = []
    for t in study.trials:
        if t.user_attrs.get(SURPLUS):
            continue
        rows.append(
            {
                "arm": study.label,
                "trial": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                # A spread only exists with sweep.seeds_per_trial > 1.
                "value_std": t.user_attrs.get("value_std")
                if len(t.user_attrs.get("seed_values", [])) > 1
                else None,
                **{names[k]: v for k, v in t.params.items()},
                "steps_done": t.user_attrs.get("steps_done"),
                "last_reported": last_reported(t),
                "val_accuracy": t.user_attrs.get("val_accuracy"),
                "wall_time_s": t.user_attrs.get(WALL_TIME),
                "train_time_s": t.user_attrs.get(TRAIN_TIME),
                "cache_build_s": t.user_attrs.get(CACHE_BUILD_TIME),
                "warm_start": t.user_attrs.get(WARM_START),
                "fail_reason": t.user_attrs.get("fail_reason"),
            }
        )
    return pd.DataFrame(rows)


def top_trials(trials: pd.DataFrame, studies: Sequence[Study], k: int) -> pd.DataFrame:
    """The k best complete trials of each study, from `trials` (trials_table rows)."""
    frames = []
    for study in studies:
        if trials.empty:
            continue
        done = trials[(trials.arm == study.label) & (trials.state == "complete")]
        done = done.sort_values("value", ascending=study.minimize).head(k)
        keep = [c for c in done.columns if c not in ("state", "last_reported", "fail_reason")]
        frames.append(done[keep].dropna(axis=1, how="all"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _signed(spread: Spread) -> str:
    """A paired gain in points: +0.41 ± 0.52 [-0.02, +0.85]; "–" with no pairs."""
    if spread.n == 0:
        return "–"
    mean, std, low, high = (100 * v for v in (spread.mean, spread.std, spread.low, spread.high))
    if spread.n == 1:
        return f"{mean:+.2f}"
    return f"{mean:+.2f} ± {std:.2f} [{low:+.2f}, {high:+.2f}]"


def runs_table(groups: Sequence[RunGroup]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per distinct config in each run group, seeds pooled: (numbers, formatted)."""
    numbers, text = [], []
    for group in groups:
        for settings, runs in group.configs():
            done = [r for r in runs if r.final and r.final.get("final")]
            tested = [r for r in done if r.test]
            val = {m: Spread.of([r.final["final"][m] for r in done]) for m in SCORES}
            test = {m: Spread.of([r.test[m] for r in tested]) for m in SCORES}
            counts = pd.Series([r.status for r in runs]).value_counts().to_dict()
            statuses = ", ".join(f"{n} {s}" for s, n in counts.items())
            wall = seconds_per_run(runs)
            recorded = [(r.final or {}).get("module_adaptation") for r in runs]
            adapted = next((a for a in recorded if a), None)
            paired_numbers, paired_text = {}, {}
            for g in PAIRED_GAINS:
                numbers_of, text_of = g.columns(tested)
                paired_numbers, paired_text = paired_numbers | numbers_of, paired_text | text_of
            row = {"group": group.name, **settings, "runs": len(runs)}
            numbers.append(
                {
                    **row,
                    **_columns(val, "val"),
                    **_columns(test, "test"),
                    "wall_time_s": wall,
                    "module_adaptation_s": adapted["seconds"] if adapted else 0.0,
                    **paired_numbers,
                    "statuses": statuses,
                }
            )
            text.append(
                {
                    **{k: short_value(v) for k, v in row.items()},
                    "status": statuses,
                    "val accuracy": val["accuracy"].text(),
                    "val macro-F1": val["macro_f1"].text(),
                    "test accuracy": test["accuracy"].text(True),
                    "test macro-F1": test["macro_f1"].text(True),
                    "s / run": f"{wall:.1f}" if done else "–",
                    ADAPTATION_COLUMN: f"{adapted['seconds'] / 60:.1f}" if adapted else "–",
                    **paired_text,
                }
            )
    numbers, text = pd.DataFrame(numbers), pd.DataFrame(text)
    if not numbers.empty and not numbers["module_adaptation_s"].any():
        numbers = numbers.drop(columns="module_adaptation_s")
        text = text.drop(columns=ADAPTATION_COLUMN)
    for g in PAIRED_GAINS:  # columns only where some run has the setting
        if not numbers.empty and numbers[f"{g.without}_mean"].isna().all():
            unused = [c for c in numbers if c.startswith((f"{g.without}_", f"{g.gain_prefix}_"))]
            numbers = numbers.drop(columns=unused)
            text = text.drop(columns=[g.column, g.gain_column])
    # A setting that varies in one group only is blank in the others' rows.
    return numbers, text.fillna("")


def run_scores(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """One row per run: its group, the config's varying settings, its seed and status, the
    final validation and the test scores, its seconds (as the runs table's), each paired
    setting's test score without the setting, and its directory. The numbers behind the runs
    table's means, so that runs of another report on the same seeds pair with these, seed by
    seed."""
    rows = []
    for group in groups:
        for settings, runs in group.configs():
            for r in runs:
                final = r.final or {}
                validation, test = final.get("final") or {}, r.test or {}
                paired = {
                    g.without: block[g.without]
                    for g in PAIRED_GAINS
                    if g.without in (block := final.get(g.block) or {})
                }
                rows.append(
                    {
                        "group": group.name,
                        **settings,
                        "seed": r.setting("trainer.seed"),
                        "status": r.status,
                        **{f"val_{m}": validation.get(m) for m in SCORES},
                        **{f"test_{m}": test.get(m) for m in SCORES},
                        "wall_time_s": compute_s(final) if validation else None,
                        **paired,
                        "directory": shown(r.directory),
                    }
                )
    return pd.DataFrame(rows)
