"""`train_and_evaluate`: the one entry point every run, grid job and sweep trial goes through."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras
from omegaconf import DictConfig
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hubsweep.artifacts import RunWriter
from hubsweep.config import validate
from hubsweep.data import TextDataset, TextSplit, load_dataset
from hubsweep.embedding import load_embedding_layer
from hubsweep.metrics import classification_metrics, softmax
from hubsweep.model import build_classifier
from hubsweep.optimization import build_optimizer

log = logging.getLogger(__name__)

# Called after each validation evaluation with (step, metrics); a truthy return stops the run.
Reporter = Callable[[int, dict], bool | None]

COMPLETED, STOPPED, DIVERGED, FAILED = "completed", "stopped", "diverged", "failed"


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
    train_time_s: float
    steps_per_s: float
    examples: dict[str, int]
    diverged_at_step: int | None = None
    error: str | None = None
    history: list[dict] = field(default_factory=list, repr=False)
    # The trained classifier (embedding layer first), for programmatic use; not serialised.
    model: keras.Model | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict:
        skip = ("history", "model")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


class _Classifier:
    """Keras model plus compiled train / predict steps."""

    def __init__(self, cfg: DictConfig, num_classes: int) -> None:
        self.model = build_classifier(load_embedding_layer(cfg.embedding), cfg.model, num_classes)
        self.optimizer = build_optimizer(cfg.optimizer, cfg.schedule, cfg.trainer.steps)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.eval_batch_size = cfg.trainer.eval_batch_size

    @tf.function
    def train_step(self, texts: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = self.model(texts, training=True)
            loss = self.loss_fn(labels, logits) + tf.add_n([0.0, *self.model.losses])
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def _logits(self, texts: tf.Tensor) -> tf.Tensor:
        return self.model(texts, training=False)

    def logits(self, texts: tf.Tensor) -> np.ndarray:
        n, bs = int(texts.shape[0]), self.eval_batch_size
        return np.concatenate([self._logits(texts[i : i + bs]).numpy() for i in range(0, n, bs)])


def _train_batches(split: TextSplit, cfg: DictConfig) -> tf.data.Dataset:
    t = cfg.trainer
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(list(split.texts)), split.labels))
    ds = ds.shuffle(min(t.shuffle_buffer, len(split)), seed=t.seed, reshuffle_each_iteration=True)
    return ds.repeat().batch(t.batch_size).prefetch(tf.data.AUTOTUNE)


def _is_better(metric: str, value: float, best: dict | None) -> bool:
    if best is None:
        return True
    return value < best[metric] if metric == "loss" else value > best[metric]


def _seed(cfg: DictConfig) -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.trainer.seed)
    if cfg.trainer.deterministic:
        tf.config.experimental.enable_op_determinism()


def train_and_evaluate(cfg: DictConfig, reporter: Reporter | None = None) -> RunResult:
    """Train `cfg` for trainer.steps steps, evaluating on validation every trainer.eval_every.

    Writes the run directory (cfg.output_dir) as it goes; on an unexpected error the run is
    recorded as failed in final.json before the error propagates.
    """
    validate(cfg)
    started = time.perf_counter()
    writer = RunWriter(Path(cfg.output_dir))
    writer.write_config(cfg)
    _seed(cfg)
    roles = ["train", "validation", *(["test"] if cfg.trainer.evaluate_test else [])]
    data = load_dataset(cfg.dataset, roles)
    run = _Run(cfg, data, writer, reporter, started)
    try:
        return run.execute()
    except Exception as e:
        run.finish(FAILED, error=f"{type(e).__name__}: {e}")
        raise


class _Run:
    def __init__(
        self,
        cfg: DictConfig,
        data: TextDataset,
        writer: RunWriter,
        reporter: Reporter | None,
        started: float,
    ) -> None:
        self.cfg, self.data, self.writer, self.reporter = cfg, data, writer, reporter
        self.started = started
        self.metric = cfg.trainer.selection_metric
        self.history: list[dict] = []
        self.best: dict | None = None
        self.steps_done = 0
        self.train_time = 0.0
        self.test: dict | None = None
        self.diverged_at: int | None = None
        self.classifier: _Classifier | None = None
        self.texts = {role: tf.constant(list(s.texts)) for role, s in data.splits.items()}

    def evaluate(self, classifier: _Classifier, role: str) -> tuple[dict, np.ndarray]:
        split = self.data.splits[role]
        logits = classifier.logits(self.texts[role])
        return classification_metrics(split.labels, logits, self.data.label_names), logits

    def record(self, step: int, role: str, metrics: dict, train_loss: float | None) -> None:
        line = {"step": step, "split": role, **metrics}
        if train_loss is not None:
            line["train_loss"] = train_loss
        line["wall_time"] = round(time.perf_counter() - self.started, 3)
        self.writer.append_metrics(line)

    def execute(self) -> RunResult:
        # Keep log lines from tearing the progress bar.
        with logging_redirect_tqdm(loggers=[logging.getLogger()]):
            return self._execute()

    def _execute(self) -> RunResult:
        t = self.cfg.trainer
        classifier = self.classifier = _Classifier(self.cfg, self.data.num_classes)
        batches = iter(_train_batches(self.data.splits["train"], self.cfg))
        status, losses = COMPLETED, []
        log.info(
            "training %s on %s: %d steps, batch %d (%d train / %d validation examples)",
            self.cfg.embedding.handle,
            self.data.name,
            t.steps,
            t.batch_size,
            len(self.data.splits["train"]),
            len(self.data.splits["validation"]),
        )
        loop_started, eval_time = time.perf_counter(), 0.0
        bar = tqdm(total=t.steps, desc="train", unit="step", disable=not t.progress, leave=False)
        for step in range(1, t.steps + 1):
            loss = float(classifier.train_step(*next(batches)))
            self.steps_done = step
            bar.update()
            if not math.isfinite(loss):
                self.diverged_at, status = step, DIVERGED
                log.warning("loss became %s at step %d: run diverged", loss, step)
                break
            losses.append(loss)
            if step % t.eval_every and step != t.steps:
                continue
            eval_started = time.perf_counter()
            metrics, _ = self.evaluate(classifier, "validation")
            self.on_validation(step, metrics, train_loss=float(np.mean(losses)))
            losses = []
            eval_time += time.perf_counter() - eval_started
            bar.set_postfix(acc=f"{metrics['accuracy']:.3f}", f1=f"{metrics['macro_f1']:.3f}")
            if self.reporter is not None and self.reporter(step, metrics):
                status = STOPPED
                log.info("reporter asked to stop at step %d", step)
                break
        self.train_time = time.perf_counter() - loop_started - eval_time
        bar.close()
        if status != DIVERGED:
            self.write_final_model_outputs(classifier, status)
        return self.finish(status)

    def on_validation(self, step: int, metrics: dict, train_loss: float) -> None:
        self.record(step, "validation", metrics, train_loss)
        self.history.append({"step": step, **metrics, "train_loss": train_loss})
        if _is_better(self.metric, metrics[self.metric], self.best):
            self.best = self.history[-1]
        log.info(
            "step %d/%d  train loss %.4f  val loss %.4f  acc %.4f  macro-F1 %.4f",
            step,
            self.cfg.trainer.steps,
            train_loss,
            metrics["loss"],
            metrics["accuracy"],
            metrics["macro_f1"],
        )

    def write_final_model_outputs(self, classifier: _Classifier, status: str) -> None:
        _, logits = self.evaluate(classifier, "validation")
        split = self.data.splits["validation"]
        self.writer.write_predictions(
            split.texts, split.labels, softmax(logits), self.data.label_names
        )
        if self.cfg.trainer.evaluate_test and status == COMPLETED:
            self.test, _ = self.evaluate(classifier, "test")
            self.record(self.steps_done, "test", self.test, None)
            log.info(
                "test (final model): acc %.4f  macro-F1 %.4f",
                self.test["accuracy"],
                self.test["macro_f1"],
            )

    def finish(self, status: str, error: str | None = None) -> RunResult:
        if self.history:
            self.writer.write_learning_curve(
                self.history, f"{self.cfg.experiment_name}: {Path(self.writer.run_dir).name}"
            )
        result = RunResult(
            status=status,
            run_dir=str(self.writer.run_dir),
            steps_done=self.steps_done,
            steps_planned=self.cfg.trainer.steps,
            selection_metric=self.metric,
            best=self.best,
            final=self.history[-1] if self.history else None,
            test=self.test,
            wall_time_s=round(time.perf_counter() - self.started, 3),
            train_time_s=round(self.train_time, 3),
            steps_per_s=round(self.steps_done / self.train_time, 2) if self.train_time else 0.0,
            examples={role: len(s) for role, s in self.data.splits.items()},
            diverged_at_step=self.diverged_at,
            error=error,
            history=self.history,
            model=self.classifier.model if self.classifier else None,
        )
        self.writer.write_final(result.summary())
        return result
