"""`train_and_evaluate`: the one entry point every run, grid job and sweep trial goes through.

It builds the run (the data, the embedding layer, the classifier: `build_classifier`
picks the training path), drives the training loop (`loop.py`) and hands every
evaluation to the run's recorder (`recorder.py`), which claims the run directory and
writes final.json whatever happens, loading data included. `train_population` does the
same for the runs of one population, trained at once (`population.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras
from omegaconf import DictConfig
from tqdm.contrib.logging import logging_redirect_tqdm

from hubsweep.config.validation import validate
from hubsweep.data.datasets import TextDataset
from hubsweep.embeddings.export import export_finetuned
from hubsweep.errors import FULL_OR_READ_ONLY
from hubsweep.results.artifacts import RunWriteError
from hubsweep.results.layout import EXPORTED_MODULE_DIR, RunStatus
from hubsweep.training.build import build_classifier, frozen_features
from hubsweep.training.classifier import Classifier
from hubsweep.training.head import build_head
from hubsweep.training.loop import LoopResult, run_loop
from hubsweep.training.population import (
    Member,
    blocker,
    eval_logits,
    program_for,
    run_population,
)
from hubsweep.training.recorder import Reporter, RunRecorder, RunResult
from hubsweep.training.trial_cache import TrialCache

log = logging.getLogger(__name__)

__all__ = ["Reporter", "RunResult", "train_and_evaluate", "train_population"]


def _seed(cfg: DictConfig) -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.trainer.seed)
    if cfg.trainer.deterministic:
        tf.config.experimental.enable_op_determinism()


def _failed(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _named(e: BaseException, recorder: RunRecorder) -> BaseException:
    """A disk that filled up (or went read-only) under any writer of the run is one error
    naming the file, not a traceback from deep inside it."""
    if isinstance(e, OSError) and e.errno in FULL_OR_READ_ONLY:
        return RunWriteError(f"{e.filename or recorder.writer.run_dir}: cannot write: {e.strerror}")
    return e


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
    recorder = RunRecorder(cfg, reporter)
    cache = cache or TrialCache.for_config(cfg)
    recorder.watch(cache)
    try:
        recorder.writer.write_config(cfg)
        _seed(cfg)
        # Keep log lines from tearing the progress bar.
        with logging_redirect_tqdm(loggers=[logging.getLogger()]):
            return _train(cfg, recorder, cache)
    except BaseException as e:
        recorder.finish(RunStatus.FAILED, error=_failed(e))
        if (named := _named(e, recorder)) is e:
            raise
        raise named from None


def _train(cfg: DictConfig, recorder: RunRecorder, cache: TrialCache) -> RunResult:
    t = cfg.trainer
    roles = ["train", "validation", *(["test"] if t.evaluate_test else [])]
    data = cache.dataset(cfg.dataset, roles)
    layer = cache.embedding_layer(cfg.embedding)
    if t.compiled_head and blocker(cfg, alone=True) is None:
        return _train_compiled(cfg, recorder, cache, data, layer)
    classifier = build_classifier(cfg, data, cache.features, layer)
    recorder.begin(
        data,
        classifier.path,
        lambda step: float(classifier.optimizer._decayed_lr(tf.float32)),
        classifier.model,
    )
    loop = run_loop(
        classifier,
        data,
        t.steps,
        t.batch_size,
        t.eval_every,
        t.seed,
        recorder.on_evaluation,
        progress=t.progress,
        buckets=t.length_buckets,
    )
    tested = t.evaluate_test and loop.status == RunStatus.COMPLETED
    trained = _trained_logits(classifier, loop, tested)  # before the average replaces them
    classifier.use_average()
    recorder.trained(loop)
    if loop.status != RunStatus.DIVERGED:
        if t.export_module:
            _export_module(cfg, classifier, Path(recorder.writer.run_dir))
        final = {"validation": loop.last_logits}
        if tested:
            final["test"] = classifier.logits("test")
            recorder.record_test(final["test"])
        if trained:
            recorder.compare_average(trained, final)
    return recorder.finish(loop.status)


def _trained_logits(
    classifier: Classifier, loop: LoopResult, tested: bool
) -> dict[str, np.ndarray]:
    """With trainer.ema_decay, the logits of the weights as trained on validation (and test
    when tested), to pair with their average's; none otherwise or when the run diverged."""
    if classifier.average is None or loop.status == RunStatus.DIVERGED:
        return {}
    roles = ["validation", *(["test"] if tested else [])]
    return {role: classifier.trained_logits(role) for role in roles}


def _train_compiled(
    cfg: DictConfig, recorder: RunRecorder, cache: TrialCache, data: TextDataset, layer
) -> RunResult:
    """A frozen-feature run as a one-member population: the process's compiled program
    (reused by every later run and trial), then test, and the Keras model handed back."""
    t = cfg.trainer
    features = frozen_features(cfg, data, cache.features, layer)
    member = Member.of(
        cfg, data.splits["train"].labels, int(features["train"].shape[1]), data.num_classes
    )
    program = program_for(cfg, member, 1)
    recorder.begin(data, "features (compiled)", lambda step: float(member.rates[step]))
    (loop,) = run_population(
        program,
        [member],
        features,
        {role: split.labels for role, split in data.splits.items()},
        data.label_names,
        t.eval_every,
        t.eval_batch_size,
        [recorder.on_evaluation],
    )
    recorder.trained(loop)
    if loop.status != RunStatus.DIVERGED:
        recorder.model = _trained_model(cfg, program, layer, data.num_classes)
        if t.evaluate_test and loop.status == RunStatus.COMPLETED:
            recorder.record_test(eval_logits(program, features["test"], t.eval_batch_size)[0])
    return recorder.finish(loop.status)


def _trained_model(cfg: DictConfig, program, layer, num_classes: int) -> keras.Model:
    """The embedding layer and the head with member 0's trained weights: strings in,
    logits out, as the Keras paths hand back."""
    head = keras.Sequential(build_head(cfg.model, num_classes, cfg.trainer.seed), name="head")
    model = keras.Sequential([layer, head])
    model(tf.constant(["build"]))
    head.set_weights([var.numpy()[0] for var in program.vars])
    return model


def _export_module(cfg: DictConfig, classifier: Classifier, run_dir: Path) -> None:
    table = classifier.model.layers[0].trainable_weights[0].numpy()
    out = export_finetuned(cfg.embedding.handle, table, run_dir / EXPORTED_MODULE_DIR)
    log.info("fine-tuned module exported to %s", out)


def train_population(
    cfgs: Sequence[DictConfig], reporters: Sequence[Reporter | None], cache: TrialCache
) -> list[RunResult]:
    """Train frozen-path runs of one population group (`population.group_key`) at once;
    each run's directory gets what `train_and_evaluate` would write. An error fails every
    run of the population (all are recorded as failed)."""
    recorders = []
    for cfg, reporter in zip(cfgs, reporters, strict=True):
        validate(cfg)
        recorders.append(RunRecorder(cfg, reporter))
        recorders[-1].trained_with = len(cfgs)  # its share of the cache builds, even on error
        recorders[-1].watch(cache)
    try:
        for recorder in recorders:
            recorder.writer.write_config(recorder.cfg)
        _seed(cfgs[0])
        first = cfgs[0]
        data = cache.dataset(first.dataset, ["train", "validation"])
        layer = cache.embedding_layer(first.embedding)
        features = frozen_features(first, data, cache.features, layer)
        dim, labels = int(features["train"].shape[1]), data.splits["train"].labels
        members = [Member.of(cfg, labels, dim, data.num_classes) for cfg in cfgs]
        for recorder, member in zip(recorders, members, strict=True):
            recorder.begin(data, "features (population)", lambda s, m=member: float(m.rates[s]))
        loops = run_population(
            program_for(first, members[0], len(members)),
            members,
            features,
            {role: split.labels for role, split in data.splits.items()},
            data.label_names,
            first.trainer.eval_every,
            first.trainer.eval_batch_size,
            [recorder.on_evaluation for recorder in recorders],
        )
        for recorder, loop in zip(recorders, loops, strict=True):
            recorder.trained(loop)
        _share_time(recorders, loops)
        return [
            recorder.finish(loop.status) for recorder, loop in zip(recorders, loops, strict=True)
        ]
    except BaseException as e:
        for recorder in recorders:
            if recorder.result is None:  # a run already concluded keeps its record
                recorder.finish(RunStatus.FAILED, error=_failed(e))
        if (named := _named(e, recorders[0])) is e:
            raise
        raise named from None


def _share_time(recorders: Sequence[RunRecorder], loops: Sequence) -> None:
    """Each member's share of the population's wall time: its own training time (the
    program's chunks, split among the members they stepped) plus an equal part of the
    rest (loading, embedding, evaluations, predictions; final.json follows)."""
    wall = time.perf_counter() - min(r.started for r in recorders)
    rest = max(wall - sum(loop.train_time_s for loop in loops), 0.0) / len(recorders)
    for recorder, loop in zip(recorders, loops, strict=True):
        recorder.trained_with = len(recorders)
        recorder.wall_share_s = round(loop.train_time_s + rest, 3)
