"""The recorder of one run: what a run writes while it trains, and what it returns.

It owns the run's files and events, never the model: `run.py` builds the data and the
classifier and drives the loop, handing each evaluation here. The recorder claims the run
directory when it is made (a directory that holds a run is refused), appends each
evaluation to metrics.jsonl as it arrives, keeps the best one, and writes predictions,
the learning curve and final.json, which `finish` writes whatever happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import tf_keras as keras
from omegaconf import DictConfig

from hubsweep.data.datasets import TextDataset
from hubsweep.embeddings.transformer.adapted import adaptation_summary
from hubsweep.metrics import MACRO_RULE, classification_metrics, lower_is_better, softmax
from hubsweep.results.artifacts import RunWriteError, RunWriter
from hubsweep.results.events import EventLog
from hubsweep.results.layout import RunStatus
from hubsweep.training.decision import DECISIONS
from hubsweep.training.loop import LoopResult

log = logging.getLogger(__name__)

# Called after each validation evaluation with (step, metrics); a truthy return stops the run.
Reporter = Callable[[int, dict], bool | None]


@dataclass
class RunResult:
    status: str
    run_dir: str
    steps_done: int
    steps_planned: int
    selection_metric: str
    best: dict | None  # validation metrics at the best evaluation, with its "step"
    final: dict | None  # validation metrics at the last evaluation
    test: dict | None  # test metrics of the final model, when trainer.evaluate_test
    wall_time_s: float
    train_time_s: float  # stepping only; a population member's share of its program's
    steps_per_s: float
    examples: dict[str, int]
    training_path: str | None = None  # strings, features, token ids, encoder ... (classifier.py)
    diverged_at_step: int | None = None
    error: str | None = None
    # How macro scores average (metrics.MACRO_RULE), and the classes a split lacks.
    macro_rule: str = MACRO_RULE
    absent_classes: dict[str, list[str]] = field(default_factory=dict)
    # Runs trained together in one program (a population): wall_time_s is theirs together,
    # wall_share_s this run's share (its own training time plus an equal part of the rest).
    trained_with: int = 1
    wall_share_s: float = 0.0
    # Of wall_share_s: cache builds (missing feature-cache entries, a dataset's first load)
    # that the runs after it reuse; a trial's compute is counted without them.
    cache_build_s: float = 0.0
    # The embedding is a pair `hubsweep-adapt` wrote: its adaptation_summary (once per
    # module, not in this run's seconds).
    module_adaptation: dict | None = None
    # trainer.decision other than argmax: its rule, each class's offset, and the selection
    # metric with argmax and with the offsets, on validation (fitted there: optimistic)
    # and, when tested, on test.
    decision: dict | None = None
    # trainer.ema_decay: the decay, and the selection metric by argmax with the weights as
    # trained and with their average (what the run reports), on validation and, when
    # tested, on test: the average's gain, paired within the run.
    averaging: dict | None = None
    history: list[dict] = field(default_factory=list, repr=False)
    # The trained classifier (embedding layer first), for programmatic use; not serialised.
    model: keras.Model | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict:
        skip = ("history", "model")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def _is_better(metric: str, value: float, best: dict | None) -> bool:
    if best is None:
        return True
    return value < best[metric] if lower_is_better(metric) else value > best[metric]


def _session_name(cfg: DictConfig) -> str:
    """The run as TensorBoard names it under `--logdir results/<experiment>`: unique there
    (the HParams dashboard merges sessions that share a name)."""
    run_dir = Path(cfg.output_dir).resolve()
    experiment = (Path(cfg.results_dir) / cfg.experiment_name).resolve()
    return (
        str(run_dir.relative_to(experiment)) if run_dir.is_relative_to(experiment) else str(run_dir)
    )


class RunRecorder:
    """Records one run into cfg.output_dir; see the module docstring."""

    def __init__(self, cfg: DictConfig, reporter: Reporter | None) -> None:
        self.started = time.perf_counter()
        self.cfg, self.reporter = cfg, reporter
        self.writer = RunWriter(Path(cfg.output_dir))
        self.metric = cfg.trainer.selection_metric
        self.data: TextDataset | None = None
        self.path: str | None = None  # the training path (see classifier.py)
        self.model: keras.Model | None = None
        self.rate_at: Callable[[int], float] = lambda step: float("nan")
        self.loop: LoopResult | None = None
        self.best: dict | None = None
        self.test: dict | None = None
        self.offsets: np.ndarray | None = None  # the decision rule's (training/decision.py)
        self.decision: dict | None = None
        self.averaging: dict | None = None
        self.events: EventLog | None = None
        self.result: RunResult | None = None
        self.trained_with = 1  # set by a population to its size, with the run's share
        self.wall_share_s: float | None = None
        self._cache: tuple | None = None  # (the trial cache, its build_s when watched)

    def watch(self, cache) -> None:
        """Count the trial cache's builds from now on as this run's (see cache_build_s)."""
        self._cache = (cache, cache.build_s)

    def begin(
        self,
        data: TextDataset,
        path: str,
        rate_at: Callable[[int], float],
        model: keras.Model | None = None,
    ) -> None:
        """The run is built: open its events and say what trains on what."""
        self.data, self.path, self.rate_at, self.model = data, path, rate_at, model
        t = self.cfg.trainer
        if t.tensorboard:
            self.events = EventLog(Path(self.writer.run_dir), self.cfg, _session_name(self.cfg))
        log.info(
            "training %s on %s (%s path): %d steps, batch %d (%d train / %d validation)",
            self.cfg.embedding.handle,
            data.name,
            path,
            t.steps,
            t.batch_size,
            len(data.splits["train"]),
            len(data.splits["validation"]),
        )

    def record(self, step: int, role: str, metrics: dict, train_loss: float | None) -> None:
        line = {"step": step, "split": role, **metrics}
        if train_loss is not None:
            line["train_loss"] = train_loss
        line["wall_time"] = round(time.perf_counter() - self.started, 3)
        self.writer.append_metrics(line)

    def on_evaluation(self, step: int, metrics: dict, train_loss: float) -> bool:
        """One validation evaluation: recorded, and passed to the reporter (True: stop)."""
        self.record(step, "validation", metrics, train_loss)
        if self.events is not None:
            self.events.evaluation(step, metrics, train_loss, self.rate_at(step))
        if _is_better(self.metric, metrics[self.metric], self.best):
            self.best = {"step": step, **metrics, "train_loss": train_loss}
        log.info(
            "step %d/%d  train loss %.4f  val loss %.4f  acc %.4f  macro-F1 %.4f",
            step,
            self.cfg.trainer.steps,
            train_loss,
            metrics["loss"],
            metrics["accuracy"],
            metrics["macro_f1"],
        )
        return bool(self.reporter is not None and self.reporter(step, metrics))

    def trained(self, loop: LoopResult) -> None:
        """The loop has ended. Training always ends right after a validation evaluation (the
        last step, or the one the reporter stopped at), so its logits are the final
        model's: the decision rule's offsets are fitted on them, and they become
        predictions.csv, unless the run diverged."""
        self.loop = loop
        if loop.status != RunStatus.DIVERGED:
            split, names = self.data.splits["validation"], self.data.label_names
            rule = self.cfg.trainer.decision
            self.offsets = DECISIONS[rule](split.labels, loop.last_logits, names, self.metric)
            decided = loop.last_logits
            if self.offsets is not None:
                decided = loop.last_logits + self.offsets
                # The last evaluation scored these logits by argmax.
                before = loop.history[-1][self.metric]
                fitted = classification_metrics(split.labels, loop.last_logits, names, self.offsets)
                after = fitted[self.metric]
                self.decision = {
                    "rule": rule,
                    "offsets": dict(zip(names, self.offsets.round(4).tolist(), strict=True)),
                    "validation_argmax": before,
                    "validation_fitted": after,
                }
                log.info(
                    "decision %s: offsets %s; validation %s %.4f -> %.4f (fitted there)",
                    rule,
                    self.decision["offsets"],
                    self.metric,
                    before,
                    after,
                )
            self.writer.write_predictions(
                split.texts, split.labels, softmax(loop.last_logits), names, decided.argmax(1)
            )

    def record_test(self, logits: np.ndarray) -> None:
        """The final model's test logits, decided by the run's rule (and, beside the rule's
        figures in `decision`, the selection metric argmax would have scored)."""
        split, names = self.data.splits["test"], self.data.label_names
        metrics = classification_metrics(split.labels, logits, names, self.offsets)
        if self.decision is not None:
            argmax = classification_metrics(split.labels, logits, names)[self.metric]
            self.decision.update(test_argmax=argmax, test_decided=metrics[self.metric])
        step = self.loop.steps_done
        self.test = metrics
        self.record(step, "test", metrics, None)
        if self.events is not None:
            self.events.test(step, metrics)
        log.info(
            "test (final model): acc %.4f  macro-F1 %.4f", metrics["accuracy"], metrics["macro_f1"]
        )

    def compare_average(
        self, trained: dict[str, np.ndarray], averaged: dict[str, np.ndarray]
    ) -> None:
        """With trainer.ema_decay: each split's logits with the weights as trained and with
        their average (the model's); their selection metrics, by argmax, in `averaging`."""
        names = self.data.label_names
        self.averaging = {"decay": self.cfg.trainer.ema_decay}
        for role in trained:
            labels = self.data.splits[role].labels
            for kind, logits in (("trained", trained[role]), ("averaged", averaged[role])):
                score = classification_metrics(labels, logits, names)[self.metric]
                self.averaging[f"{role}_{kind}"] = score
        log.info("weight average: %s", self.averaging)

    def finish(self, status: str, error: str | None = None) -> RunResult:
        """Close the events, draw the learning curve, write final.json; the run's result.

        A failed run's files are written where they still can be: a write error then is
        logged, and the error that failed the run is the one that propagates."""
        try:
            self._close_and_draw()
        except (OSError, RunWriteError) as e:
            if status != RunStatus.FAILED:
                raise
            log.warning("%s: %s", self.writer.run_dir, e)
        result = self._result(status, error)
        try:
            self.writer.write_final(result.summary())
        except RunWriteError as e:
            if status != RunStatus.FAILED:
                raise
            log.warning("final.json not written either: %s", e)
        self.result = result
        return result

    def _close_and_draw(self) -> None:
        events, self.events = self.events, None
        if events is not None:
            events.close()
        history = self.loop.history if self.loop else []
        if history and self.cfg.trainer.learning_curve:
            self.writer.write_learning_curve(
                history, f"{self.cfg.experiment_name}: {Path(self.writer.run_dir).name}"
            )

    def _cache_build_s(self) -> float:
        if self._cache is None:
            return 0.0
        cache, before = self._cache
        return round((cache.build_s - before) / self.trained_with, 3)  # a population's share

    def _result(self, status: str, error: str | None) -> RunResult:
        loop = self.loop or LoopResult(status=RunStatus.FAILED, steps_done=0)
        history = loop.history
        train_time = loop.train_time_s
        wall = round(time.perf_counter() - self.started, 3)
        return RunResult(
            status=status,
            run_dir=str(self.writer.run_dir),
            steps_done=loop.steps_done,
            steps_planned=self.cfg.trainer.steps,
            selection_metric=self.metric,
            best=self.best,
            final=history[-1] if history else None,
            test=self.test,
            wall_time_s=wall,
            train_time_s=round(train_time, 3),
            steps_per_s=round(loop.steps_done / train_time, 2) if train_time else 0.0,
            examples={role: len(s) for role, s in self.data.splits.items()} if self.data else {},
            training_path=self.path,
            diverged_at_step=loop.diverged_at_step,
            error=error,
            absent_classes=self.data.absent_classes() if self.data else {},
            trained_with=self.trained_with,
            wall_share_s=wall if self.wall_share_s is None else self.wall_share_s,
            cache_build_s=self._cache_build_s(),
            module_adaptation=adaptation_summary(self.cfg.embedding.handle),
            decision=self.decision,
            averaging=self.averaging,
            history=history,
            model=self.model,
        )
