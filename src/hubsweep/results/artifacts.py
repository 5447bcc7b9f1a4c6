"""A run's files: resolved config, metrics.jsonl, final.json, predictions.csv, learning curve;
the writer, and the one tolerant reader that the sweep and the report both use.

A run owns its directory: the writer claims it by creating metrics.jsonl exclusively and
refuses a directory that already holds a run, so two runs can never interleave or
truncate each other's files. Metrics lines are appended and flushed as they come, so a
crashed or killed run still leaves everything it evaluated. Every other file is written
to a temporary name and renamed, so a full disk leaves no half-written file; a write that
fails (or a metrics line cut short, which is taken back) is one `RunWriteError` naming the
file.
"""

from __future__ import annotations

import io
import json
import math
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from hubsweep.errors import HubsweepError, SetupError
from hubsweep.metrics import METRICS, SCORES
from hubsweep.results.layout import (
    CONFIG_FILE,
    CURVE_FILE,
    FINAL_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RUN_MARKERS,
    RunStatus,
    holds_run,
)

CURVE_COLUMNS = ("step", *METRICS)


def _jsonable(value):
    """json.dumps writes NaN/inf as bare tokens that strict parsers reject; store null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class RunDirectoryTaken(SetupError):
    pass


class RunWriteError(SetupError):
    """A run's file could not be written (a full disk, a directory made read-only)."""


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to a temporary name beside `path`, then rename it into place: `path` is
    whole or absent, never cut. A failure is a RunWriteError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RunWriteError(f"{path}: cannot write: {e.strerror or e}") from None


def claim_run_dir(run_dir: Path) -> None:
    """Make `run_dir` this run's, or refuse: one that already holds a run is never reused."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        taken = [name for name in RUN_MARKERS if (run_dir / name).exists()]
        if not taken:
            # Exclusive creation: of two runs racing for one directory, exactly one wins.
            with (run_dir / METRICS_FILE).open("x"):
                return
    except FileExistsError:
        taken = [METRICS_FILE]
    except OSError as e:
        raise SetupError(f"output_dir: cannot write to {run_dir}: {e.strerror or e}") from None
    raise RunDirectoryTaken(
        f"output_dir: {run_dir} already holds a run ({', '.join(taken)}); a run owns its "
        "directory: give another hydra.run.dir (or output_dir), or move the old run away"
    )


class RunWriter:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        claim_run_dir(run_dir)

    def write_config(self, cfg: DictConfig) -> None:
        write_atomic(self.run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))

    def append_metrics(self, record: dict) -> None:
        path = self.run_dir / METRICS_FILE
        line = (json.dumps(_jsonable(record)) + "\n").encode()
        with path.open("ab") as f:
            end = f.tell()
            try:
                f.write(line)
                f.flush()
            except OSError as e:
                # A line cut short by a full disk is taken back: the file stays whole lines.
                f.truncate(end)
                raise RunWriteError(f"{path}: cannot write: {e.strerror or e}") from None

    def write_final(self, final: dict) -> None:
        write_atomic(self.run_dir / FINAL_FILE, json.dumps(_jsonable(final), indent=2) + "\n")

    def write_predictions(
        self,
        texts: np.ndarray,
        labels: np.ndarray,
        probabilities: np.ndarray,
        label_names: tuple[str, ...],
        predictions: np.ndarray,
    ) -> None:
        """One row per example: its text, label, the decided class (the run's decision
        rule: not always the most probable one) and each class's probability."""
        names = np.array(label_names)
        frame = pd.DataFrame(
            {"text": texts, "label": names[labels], "prediction": names[predictions]}
        )
        for i, name in enumerate(label_names):
            frame[f"p_{name}"] = probabilities[:, i].round(6)
        write_atomic(self.run_dir / PREDICTIONS_FILE, frame.to_csv(index=False))

    def write_learning_curve(self, history: list[dict], title: str) -> None:
        draw_learning_curve(self.run_dir, history, title)


def _train_loss_terms(run_dir: Path) -> str:
    """What the run's training loss holds that the validation loss does not, from its
    config.yaml: class weights (trainer.class_weight), smoothed targets
    (trainer.label_smoothing: its floor is then their entropy, not 0), scaffold losses
    (dataset.scaffold_keys); "" where none or unreadable."""
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return ""
    config = config if isinstance(config, dict) else {}
    trainer, dataset = config.get("trainer"), config.get("dataset")
    terms = ""
    if isinstance(trainer, dict) and trainer.get("class_weight") not in (None, "none"):
        terms += ", class-weighted"
    if isinstance(trainer, dict) and trainer.get("label_smoothing"):
        terms += f", label-smoothed (ε={trainer['label_smoothing']:g})"
    if isinstance(dataset, dict) and dataset.get("scaffold_keys"):
        terms += ", + scaffolds"
    return terms


def draw_learning_curve(run_dir: Path, history: list[dict], title: str) -> None:
    """learning_curve.png: validation scores and losses per evaluation."""
    # A bare Figure (no pyplot): no global figure registry, and cheaper per trial.
    from matplotlib.figure import Figure

    if not history:
        return
    # Class weights, smoothed targets and scaffolds change the training loss, not the
    # validation one.
    terms = _train_loss_terms(Path(run_dir))
    steps = [h["step"] for h in history]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_scores, ax_loss = fig.subplots(1, 2)
    for key in SCORES:
        ax_scores.plot(steps, [h[key] for h in history], label=key.replace("_", " "))
    ax_scores.set(xlabel="global step", ylabel="validation score", title="scores")
    ax_scores.legend(loc="lower right")
    ax_scores.grid(alpha=0.3)
    ax_loss.plot(steps, [h["loss"] for h in history], color="tab:red", label="validation")
    if all("train_loss" in h for h in history):
        train = [h["train_loss"] for h in history]
        label = f"train (mean since last eval{terms})"
        ax_loss.plot(steps, train, color="tab:gray", label=label)
    ax_loss.set(xlabel="global step", ylabel="cross-entropy", title="loss")
    ax_loss.legend(loc="upper right")
    ax_loss.grid(alpha=0.3)
    fig.suptitle(title)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    write_atomic(Path(run_dir) / CURVE_FILE, png.getvalue())


def set_aside(run_dir: Path) -> Path:
    """Move an unfinished run out of the way (kept, hidden from readers) before a re-run."""
    run_dir = Path(run_dir)
    for n in range(1, 10_000):
        target = run_dir.with_name(f".{run_dir.name}.attempt{n}")
        if not target.exists():
            run_dir.rename(target)
            return target
    raise HubsweepError(f"{run_dir}: too many earlier attempts set aside")


@dataclass
class RunFiles:
    """A run directory as it is: whatever could be read, and what could not."""

    directory: Path
    config: dict
    final: dict | None  # None: not finished (running or killed), or unreadable
    history: pd.DataFrame  # one row per validation evaluation
    problems: list[str] = field(default_factory=list)  # unreadable files, by name

    @property
    def exists(self) -> bool:
        return holds_run(self.directory)

    @property
    def status(self) -> str:
        if self.final is None:
            return RunStatus.INCOMPLETE
        return self.final.get("status", RunStatus.INCOMPLETE)

    @property
    def test(self) -> dict | None:
        return self.final.get("test") if self.final else None

    @cached_property
    def flat(self) -> dict[str, Any]:
        """The config as dotted key -> value."""
        return flat_config(self.config)

    def setting(self, key: str) -> Any:
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def _read(path: Path, parse, problems: list[str]):
    if not path.is_file():
        return None
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as e:
        problems.append(f"{path.name} unreadable ({type(e).__name__})")
        return None


def read_metrics(run_dir: Path, split: str | None = None) -> list[dict]:
    """metrics.jsonl's records; a torn last line (a run killed mid-write) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and (split is None or record.get("split") == split):
                records.append(record)
    return records


def read_final(run_dir: Path) -> dict | None:
    return read_run(run_dir).final


def read_run(run_dir: Path) -> RunFiles:
    """Never raises for a run's own files: what cannot be read is listed in `problems`."""
    run_dir, problems = Path(run_dir), []
    config = _read(run_dir / CONFIG_FILE, yaml.safe_load, problems)
    final = _read(run_dir / FINAL_FILE, json.loads, problems)
    if final is not None and not isinstance(final, dict):
        problems.append(f"{FINAL_FILE} unreadable (not an object)")
        final = None
    rows = [{k: r.get(k) for k in CURVE_COLUMNS} for r in read_metrics(run_dir, "validation")]
    history = pd.DataFrame(rows, columns=list(CURVE_COLUMNS), dtype=float)
    config = config if isinstance(config, dict) else {}
    return RunFiles(run_dir, config, final, history, problems)


def run_record(run: RunFiles) -> dict:
    """A finished run as plain JSON (for a study's storage, so hosts without its files can
    still report it): where it is, its config, final.json and validation curve."""
    return {
        "run_dir": str(run.directory),
        "config": run.config,
        "final": run.final,
        "history": run.history.to_dict(orient="records"),
    }


def run_from_record(record: dict) -> RunFiles:
    history = pd.DataFrame(record.get("history", []), columns=list(CURVE_COLUMNS), dtype=float)
    return RunFiles(
        Path(record["run_dir"]), record.get("config") or {}, record.get("final"), history
    )
