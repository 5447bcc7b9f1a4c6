"""A run's files: resolved config, metrics.jsonl, final.json, predictions.csv, learning curve.

Metrics lines are appended and flushed as they come, so a crashed or killed run still
leaves everything it evaluated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
FINAL_FILE = "final.json"
PREDICTIONS_FILE = "predictions.csv"
CURVE_FILE = "learning_curve.png"

CURVE_METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "loss")


def _jsonable(value):
    """json.dumps writes NaN/inf as bare tokens that strict parsers reject; store null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class RunWriter:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / METRICS_FILE).write_text("")

    def write_config(self, cfg: DictConfig) -> None:
        (self.run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))

    def append_metrics(self, record: dict) -> None:
        with (self.run_dir / METRICS_FILE).open("a") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")

    def write_final(self, final: dict) -> None:
        path = self.run_dir / FINAL_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_jsonable(final), indent=2) + "\n")
        tmp.replace(path)

    def write_predictions(
        self,
        texts: np.ndarray,
        labels: np.ndarray,
        probabilities: np.ndarray,
        label_names: tuple[str, ...],
    ) -> None:
        names = np.array(label_names)
        frame = pd.DataFrame(
            {
                "text": texts,
                "label": names[labels],
                "prediction": names[probabilities.argmax(axis=1)],
            }
        )
        for i, name in enumerate(label_names):
            frame[f"p_{name}"] = probabilities[:, i].round(6)
        frame.to_csv(self.run_dir / PREDICTIONS_FILE, index=False)

    def write_learning_curve(self, history: list[dict], title: str) -> None:
        # A bare Figure (no pyplot): no global figure registry, and cheaper per trial.
        from matplotlib.figure import Figure

        if not history:
            return
        steps = [h["step"] for h in history]
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        ax_scores, ax_loss = fig.subplots(1, 2)
        for key in CURVE_METRICS[:-1]:
            ax_scores.plot(steps, [h[key] for h in history], label=key.replace("_", " "))
        ax_scores.set(xlabel="global step", ylabel="validation score", title="scores")
        ax_scores.legend(loc="lower right")
        ax_scores.grid(alpha=0.3)
        ax_loss.plot(steps, [h["loss"] for h in history], color="tab:red", label="validation")
        if all("train_loss" in h for h in history):
            train = [h["train_loss"] for h in history]
            ax_loss.plot(steps, train, color="tab:gray", label="train (mean since last eval)")
        ax_loss.set(xlabel="global step", ylabel="cross-entropy", title="loss")
        ax_loss.legend(loc="upper right")
        ax_loss.grid(alpha=0.3)
        fig.suptitle(title)
        fig.savefig(self.run_dir / CURVE_FILE, dpi=100)


def read_metrics(run_dir: Path) -> list[dict]:
    text = (Path(run_dir) / METRICS_FILE).read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def read_final(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / FINAL_FILE).read_text())
