"""`train_and_evaluate`: the one entry point every run, grid job and sweep trial goes through.

It is the recorder around the training loop (`loop.py`): it claims the run directory,
writes each evaluation as it arrives and final.json whatever happens, loading data
included."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import tensorflow as tf
import tf_keras as keras
from omegaconf import DictConfig
from tqdm.contrib.logging import logging_redirect_tqdm

from hubsweep.config.schema import validate
from hubsweep.data.datasets import TextDataset
from hubsweep.embeddings.export import export_finetuned
from hubsweep.metrics import softmax
from hubsweep.results.artifacts import RunWriter
from hubsweep.results.events import EventLog
from hubsweep.results.layout import EXPORTED_MODULE_DIR, RunStatus
from hubsweep.training.classifier import Classifier, build_classifier, frozen_features
from hubsweep.training.loop import LoopResult, evaluate, run_loop
from hubsweep.training.population import Member, program_for, run_population
from hubsweep.training.trial_cache import TrialCache

log = logging.getLogger(__name__)

# Called after each validation evaluation with (step, metrics); a truthy return stops the run.
Reporter = Callable[[int, dict], bool | None]

COMPLETED, STOPPED, DIVERGED, FAILED = (
    RunStatus.COMPLETED,
    RunStatus.STOPPED,
    RunStatus.DIVERGED,
    RunStatus.FAILED,
)


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
    training_path: str | None = None  # strings, features or token ids (see classifier.py)
    diverged_at_step: int | None = None
    error: str | None = None
    history: list[dict] = field(default_factory=list, repr=False)
    # The trained classifier (embedding layer first), for programmatic use; not serialised.
    model: keras.Model | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict:
        skip = ("history", "model")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def _is_better(metric: str, value: float, best: dict | None) -> bool:
    if best is None:
        return True
    return value < best[metric] if metric == "loss" else value > best[metric]


def _seed(cfg: DictConfig) -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.trainer.seed)
    if cfg.trainer.deterministic:
        tf.config.experimental.enable_op_determinism()


def train_and_evaluate(
    cfg: DictConfig, reporter: Reporter | None = None, cache: TrialCache | None = None
) -> RunResult:
    """Train `cfg` for trainer.steps steps, evaluating on validation every trainer.eval_every.

    Claims the run directory (cfg.output_dir; one that holds a run is refused) and writes
    it as it goes; any error after that, loading data included, is recorded as failed in
    final.json before it propagates. Pass one `cache` to the trials of a process so
    datasets are loaded, and frozen features embedded, once.
    """
    validate(cfg)
    started = time.perf_counter()
    writer = RunWriter(Path(cfg.output_dir))
    run = _Run(cfg, writer, reporter, started, cache or TrialCache.for_config(cfg))
    try:
        writer.write_config(cfg)
        _seed(cfg)
        return run.execute()
    except BaseException as e:
        run.finish(FAILED, error=f"{type(e).__name__}: {e}")
        raise


def train_population(
    cfgs: Sequence[DictConfig], reporters: Sequence[Reporter | None], cache: TrialCache
) -> list[RunResult]:
    """Train frozen-path runs of one population group (`population.group_key`) at once;
    each run's directory gets what `train_and_evaluate` would write. An error fails every
    run of the population (all are recorded as failed)."""
    runs = []
    for cfg, reporter in zip(cfgs, reporters, strict=True):
        validate(cfg)
        writer = RunWriter(Path(cfg.output_dir))
        runs.append(_Run(cfg, writer, reporter, time.perf_counter(), cache))
    try:
        for run in runs:
            run.writer.write_config(run.cfg)
        _seed(cfgs[0])
        first = cfgs[0]
        data = cache.dataset(first.dataset, ["train", "validation"])
        layer = cache.embedding_layer(first.embedding)
        features = frozen_features(first, data, cache.features, layer)
        dim, n_train = int(features["train"].shape[1]), len(data.splits["train"])
        members = [Member.of(cfg, n_train, dim, data.num_classes) for cfg in cfgs]
        for run, member in zip(runs, members, strict=True):
            run.data, run.path = data, "features (population)"
            run.rate_at = lambda step, m=member: float(m.rates[step])
            run.begin()
        loops = run_population(
            program_for(first, members[0], len(members)),
            members,
            features,
            {role: split.labels for role, split in data.splits.items()},
            data.label_names,
            first.trainer.eval_every,
            first.trainer.eval_batch_size,
            [run.on_evaluation for run in runs],
        )
        return [run.conclude(loop, None) for run, loop in zip(runs, loops, strict=True)]
    except BaseException as e:
        for run in runs:
            if run.result is None:  # a run already concluded keeps its record
                run.finish(FAILED, error=f"{type(e).__name__}: {e}")
        raise


def _session_name(cfg: DictConfig) -> str:
    """The run as TensorBoard names it under `--logdir results/<experiment>`: unique there
    (the HParams dashboard merges sessions that share a name)."""
    run_dir = Path(cfg.output_dir).resolve()
    experiment = (Path(cfg.results_dir) / cfg.experiment_name).resolve()
    return (
        str(run_dir.relative_to(experiment)) if run_dir.is_relative_to(experiment) else str(run_dir)
    )


class _Run:
    """The recorder around the loop: loads data, builds the classifier, runs the loop while
    writing each evaluation, then writes the final model's outputs and final.json."""

    def __init__(
        self,
        cfg: DictConfig,
        writer: RunWriter,
        reporter: Reporter | None,
        started: float,
        cache: TrialCache,
    ) -> None:
        self.cfg, self.writer, self.reporter = cfg, writer, reporter
        self.started, self.cache = started, cache
        self.metric = cfg.trainer.selection_metric
        self.data: TextDataset | None = None
        self.classifier: Classifier | None = None
        self.loop: LoopResult | None = None
        self.best: dict | None = None
        self.test: dict | None = None
        self.events: EventLog | None = None
        self.result: RunResult | None = None
        self.path: str | None = None  # the training path (see classifier.py)
        self.rate_at: Callable[[int], float] = lambda step: float("nan")

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
        roles = ["train", "validation", *(["test"] if t.evaluate_test else [])]
        self.data = self.cache.dataset(self.cfg.dataset, roles)
        layer = self.cache.embedding_layer(self.cfg.embedding)
        classifier = build_classifier(self.cfg, self.data, self.cache.features, layer)
        self.classifier, self.path = classifier, classifier.path
        self.rate_at = lambda step: float(classifier.optimizer._decayed_lr(tf.float32))
        self.begin()
        loop = run_loop(
            classifier,
            self.data,
            t.steps,
            t.batch_size,
            t.eval_every,
            t.seed,
            self.on_evaluation,
            progress=t.progress,
        )
        return self.conclude(loop, classifier)

    def begin(self) -> None:
        t = self.cfg.trainer
        if t.tensorboard:
            self.events = EventLog(Path(self.writer.run_dir), self.cfg, _session_name(self.cfg))
        log.info(
            "training %s on %s (%s path): %d steps, batch %d (%d train / %d validation)",
            self.cfg.embedding.handle,
            self.data.name,
            self.path,
            t.steps,
            t.batch_size,
            len(self.data.splits["train"]),
            len(self.data.splits["validation"]),
        )

    def conclude(self, loop: LoopResult, classifier: Classifier | None) -> RunResult:
        self.loop = loop
        if loop.status != DIVERGED:
            self.write_final_model_outputs(classifier, loop.status)
        return self.finish(loop.status)

    def on_evaluation(self, step: int, metrics: dict, train_loss: float) -> bool:
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

    def write_final_model_outputs(self, classifier: Classifier | None, status: str) -> None:
        # Training always ends right after a validation evaluation (the last step, or the
        # one the reporter stopped at), so its logits are the final model's.
        split = self.data.splits["validation"]
        self.writer.write_predictions(
            split.texts, split.labels, softmax(self.loop.last_logits), self.data.label_names
        )
        if self.cfg.trainer.export_module:
            table = classifier.model.layers[0].trainable_weights[0].numpy()
            out = export_finetuned(
                self.cfg.embedding.handle, table, Path(self.writer.run_dir) / EXPORTED_MODULE_DIR
            )
            log.info("fine-tuned module exported to %s", out)
        if self.cfg.trainer.evaluate_test and status == COMPLETED:
            self.test, _ = evaluate(classifier, self.data, "test")
            self.record(self.loop.steps_done, "test", self.test, None)
            if self.events is not None:
                self.events.test(self.loop.steps_done, self.test)
            log.info(
                "test (final model): acc %.4f  macro-F1 %.4f",
                self.test["accuracy"],
                self.test["macro_f1"],
            )

    def finish(self, status: str, error: str | None = None) -> RunResult:
        if self.events is not None:
            self.events.close()
        loop = self.loop or LoopResult(status=FAILED, steps_done=0)
        history = loop.history
        if history and self.cfg.trainer.learning_curve:
            self.writer.write_learning_curve(
                history, f"{self.cfg.experiment_name}: {Path(self.writer.run_dir).name}"
            )
        train_time = loop.train_time_s
        result = RunResult(
            status=status,
            run_dir=str(self.writer.run_dir),
            steps_done=loop.steps_done,
            steps_planned=self.cfg.trainer.steps,
            selection_metric=self.metric,
            best=self.best,
            final=history[-1] if history else None,
            test=self.test,
            wall_time_s=round(time.perf_counter() - self.started, 3),
            train_time_s=round(train_time, 3),
            steps_per_s=round(loop.steps_done / train_time, 2) if train_time else 0.0,
            examples={role: len(s) for role, s in self.data.splits.items()} if self.data else {},
            training_path=self.path,
            diverged_at_step=loop.diverged_at_step,
            error=error,
            history=history,
            model=self.classifier.model if self.classifier else None,
        )
        self.writer.write_final(result.summary())
        self.result = result
        return result
