"""Every path, file name and status of the results tree, in one place.

```
results/<experiment>/
  runs/<time>/                 one hubsweep-train run (a run directory, below)
  multirun/<time>/<job>/       one job of a hubsweep-train -m grid
  <study>/[<arm>/]             one Optuna study (an experiment with arms: one per arm)
    study.json                 what defines the study, where its storage is, the command
    study.journal              the embedded Optuna storage (unless sweep.storage is set)
    trials/<number>/seed<k>/   each trial's run directories
    finalists/trial<n>-seed<k>/  the top configs re-run on new seeds, validation only
    retrain/trial<n>-seed<k>/  the winning config re-run with test
    finalists.json, retrain.json, summary.json, experiment/best.yaml, sweep.log
    mlflow.db                  sweep.callbacks=[mlflow], without MLFLOW_TRACKING_URI
  report/                      hubsweep-report's output
a run directory: config.yaml, metrics.jsonl, final.json, predictions.csv,
  learning_curve.png, train.log, events.out.tfevents.*, .hydra/
```
Writers and readers import these names; nothing else spells them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path


class RunStatus(StrEnum):
    """How a run ended (final.json's `status`); INCOMPLETE: no final.json (running or killed)."""

    COMPLETED = "completed"
    STOPPED = "stopped"  # the reporter (a pruner) asked it to stop
    DIVERGED = "diverged"
    FAILED = "failed"
    INCOMPLETE = "incomplete"


# --- a run directory ---------------------------------------------------------------------
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
FINAL_FILE = "final.json"
PREDICTIONS_FILE = "predictions.csv"
CURVE_FILE = "learning_curve.png"
EXPORTED_MODULE_DIR = "module"
# Hydra's own record of a command: each run's overrides, and a grid's command line.
HYDRA_RECORD_DIR = ".hydra"
HYDRA_OVERRIDES_FILE = "overrides.yaml"
HYDRA_CONFIG_FILE = "hydra.yaml"
MULTIRUN_FILE = "multirun.yaml"
# Files whose presence means a directory already belongs to a run.
RUN_MARKERS = (METRICS_FILE, FINAL_FILE, CONFIG_FILE)

# --- a study directory -------------------------------------------------------------------
STUDY_INFO_FILE = "study.json"
STUDY_JOURNAL_FILE = "study.journal"
SUMMARY_FILE = "summary.json"
RETRAIN_FILE = "retrain.json"
FINALISTS_FILE = "finalists.json"
FINALISTS_DIR = "finalists"
TRIALS_DIR = "trials"
RETRAIN_DIR = "retrain"
# sweep.callbacks=[mlflow]'s store when MLFLOW_TRACKING_URI is unset (study/tracking.py).
MLFLOW_DB = "mlflow.db"
PRESET_DIR = "experiment"
PRESET_NAME = "best"
_RETRAIN_RUN = "trial{trial:04d}-seed{seed}"

# --- the experiment directory (runs/ and multirun/ are Hydra's, set in conf/config.yaml) ---
REPORT_DIR = "report"
REPORT_FILE = "report.md"


def study_dir(results_dir: str | Path, experiment: str, study: str, arm: str | None) -> Path:
    base = Path(results_dir) / experiment / study
    return base / arm if arm else base


def trial_run_dir(study: str | Path, number: int, seed_index: int) -> Path:
    return Path(study) / TRIALS_DIR / f"{number:04d}" / f"seed{seed_index}"


def retrain_run_dir(study: str | Path, trial: int, seed_index: int) -> Path:
    return Path(study) / RETRAIN_DIR / _RETRAIN_RUN.format(trial=trial, seed=seed_index)


def finalist_run_dir(study: str | Path, trial: int, seed_index: int) -> Path:
    return Path(study) / FINALISTS_DIR / _RETRAIN_RUN.format(trial=trial, seed=seed_index)


def retrain_run_dirs(study: str | Path, trial: int) -> list[Path]:
    """The existing retrain run directories of `trial`, by seed index."""
    found = (Path(study) / RETRAIN_DIR).glob(_RETRAIN_RUN.format(trial=trial, seed="*"))
    return sorted((d for d in found if d.is_dir()), key=seed_index)


def seed_index(run_dir: Path) -> int:
    match = re.search(r"seed(\d+)$", Path(run_dir).name)
    return int(match.group(1)) if match else 0


def best_preset_path(study: str | Path) -> Path:
    """<study>/experiment/best.yaml: `hubsweep-train --config-dir <study> experiment=best`."""
    return Path(study) / PRESET_DIR / f"{PRESET_NAME}.yaml"


def is_study_dir(directory: Path) -> bool:
    return (directory / STUDY_INFO_FILE).is_file() or (directory / STUDY_JOURNAL_FILE).is_file()


def holds_run(directory: Path) -> bool:
    return any((Path(directory) / name).exists() for name in RUN_MARKERS)
