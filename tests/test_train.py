"""`train_and_evaluate` on the fixture dataset and real (tiny) modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tf_keras as keras

from hubsweep.results.artifacts import read_final, read_metrics
from hubsweep.training.run import train_and_evaluate

from .conftest import LABELS, VOCAB


def _module_table(result) -> np.ndarray:
    return result.model.layers[0].weights[0].numpy()


def test_frozen_run_leaves_module_weights_unchanged(make_cfg, module_vectors):
    result = train_and_evaluate(make_cfg())
    assert result.status == "completed"
    np.testing.assert_array_equal(_module_table(result)[: len(VOCAB)], module_vectors)


def test_trainable_run_changes_module_weights(make_cfg, module_vectors):
    result = train_and_evaluate(make_cfg("embedding.trainable=true"))
    changed = np.abs(_module_table(result)[: len(VOCAB)] - module_vectors).max(axis=1) > 1e-6
    assert changed.sum() >= len(VOCAB) // 2


def test_run_learns_and_writes_every_output(make_cfg):
    result = train_and_evaluate(make_cfg("trainer.evaluate_test=true"))
    run = result.run_dir
    lines = read_metrics(run)
    validation = [m for m in lines if m["split"] == "validation"]
    assert [m["step"] for m in validation] == [20, 40, 60]
    assert [m["split"] for m in lines].count("test") == 1
    for m in lines:
        assert set(m["per_class"]) == set(LABELS)
        assert {
            "loss",
            "accuracy",
            "macro_precision",
            "macro_recall",
            "macro_f1",
            "wall_time",
        } <= set(m)
    final = read_final(run)
    assert final["status"] == "completed" and final["steps_done"] == 60
    assert final["final"]["accuracy"] == validation[-1]["accuracy"]
    assert final["best"]["macro_f1"] == max(m["macro_f1"] for m in validation)
    assert final["test"]["accuracy"] == lines[-1]["accuracy"]
    # The cue words separate the classes: a real head on a real module learns them.
    assert final["final"]["accuracy"] > 0.8
    predictions = pd.read_csv(f"{run}/predictions.csv")
    assert list(predictions.columns) == ["text", "label", "prediction", *(f"p_{c}" for c in LABELS)]
    assert len(predictions) == result.examples["validation"]
    np.testing.assert_allclose(predictions.filter(like="p_").sum(axis=1), 1.0, atol=1e-5)
    accuracy = (predictions.label == predictions.prediction).mean()
    assert accuracy == pytest.approx(final["final"]["accuracy"])
    assert (Path(run) / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "steps: 60" in (Path(run) / "config.yaml").read_text()


def test_test_split_is_only_evaluated_when_asked(make_cfg):
    result = train_and_evaluate(make_cfg())
    assert result.test is None
    assert {m["split"] for m in read_metrics(result.run_dir)} == {"validation"}


def test_same_seed_same_metrics_other_seed_other_metrics(make_cfg):
    def curve(run, seed):
        result = train_and_evaluate(make_cfg("model=mlp", f"trainer.seed={seed}", run=run))
        return [(m["step"], m["loss"], m["accuracy"]) for m in read_metrics(result.run_dir)]

    first = curve("a", 3)
    assert curve("b", 3) == first
    assert curve("c", 4) != first


def test_reporter_can_stop_a_run_cleanly(make_cfg):
    seen = []

    def reporter(step, metrics):
        seen.append((step, metrics["macro_f1"]))
        return step >= 40

    result = train_and_evaluate(make_cfg("trainer.evaluate_test=true"), reporter=reporter)
    assert [s for s, _ in seen] == [20, 40]
    assert result.status == "stopped" and result.steps_done == 40
    assert result.test is None  # a stopped run is not tested
    final = read_final(result.run_dir)
    assert final["status"] == "stopped" and final["final"]["step"] == 40
    assert len(read_metrics(result.run_dir)) == 2


def _reject(token: str):
    raise ValueError(f"non-standard JSON token {token}")


def test_divergence_ends_the_run_with_a_status_not_a_crash(make_cfg):
    result = train_and_evaluate(make_cfg("optimizer.learning_rate=1e38"))
    assert result.status == "diverged"
    assert result.diverged_at_step is not None and result.steps_done == result.diverged_at_step
    text = (Path(result.run_dir) / "final.json").read_text()
    final = json.loads(text, parse_constant=_reject)  # strict JSON: no NaN tokens
    assert final["status"] == "diverged"


@pytest.mark.parametrize("optimizer", ["momentum", "adam", "adagrad", "rmsprop"])
def test_every_optimizer_trains(make_cfg, optimizer):
    lr = "0.5" if optimizer == "momentum" else "0.05"
    result = train_and_evaluate(
        make_cfg(f"optimizer={optimizer}", f"optimizer.learning_rate={lr}", "schedule=cosine")
    )
    assert result.status == "completed"
    assert result.final["accuracy"] > 0.6


@pytest.fixture(scope="module")
def foreign_module(tmp_path_factory):
    """A TF2 SavedModel hubsweep did not make: a Keras TextVectorization → Embedding model."""
    vectorize = keras.layers.TextVectorization(output_mode="int", vocabulary=VOCAB)
    inputs = keras.Input(shape=(), dtype=tf.string)
    tokens = vectorize(tf.strings.lower(inputs))
    pooled = keras.layers.GlobalAveragePooling1D()(
        keras.layers.Embedding(len(VOCAB) + 2, 6)(tokens)
    )
    path = tmp_path_factory.mktemp("foreign") / "keras_text_model"
    tf.saved_model.save(keras.Model(inputs, pooled), str(path))
    return path


@pytest.mark.parametrize("trainable", [False, True])
def test_a_module_hubsweep_did_not_make_works(make_cfg, foreign_module, trainable):
    result = train_and_evaluate(
        make_cfg(
            f"embedding.handle={foreign_module}",
            "embedding.dim=6",
            f"embedding.trainable={str(trainable).lower()}",
        )
    )
    assert result.status == "completed"
    tables = [w for w in result.model.layers[0].trainable_weights]
    assert bool(tables) == trainable


def test_the_loop_alone_returns_the_recorded_history_and_writes_nothing(make_cfg, tmp_path):
    """The training loop is a function of a classifier; train_and_evaluate records it."""
    from hubsweep.training.build import build_classifier
    from hubsweep.training.loop import run_loop
    from hubsweep.training.run import _seed
    from hubsweep.training.trial_cache import TrialCache

    cfg = make_cfg("trainer.seed=5", run="recorded")
    recorded = train_and_evaluate(cfg)

    loop_dir = tmp_path / "loop-only"
    cfg = make_cfg("trainer.seed=5", run="loop-only")
    cache = TrialCache.for_config(cfg)
    data = cache.dataset(cfg.dataset, ["train", "validation"])
    _seed(cfg)
    classifier = build_classifier(cfg, data, cache.features)
    seen = []
    t = cfg.trainer
    loop = run_loop(
        classifier,
        data,
        t.steps,
        t.batch_size,
        t.eval_every,
        t.seed,
        lambda step, metrics, loss: seen.append(step),
    )
    assert not loop_dir.exists()  # the loop writes nothing
    assert loop.status == "completed" and loop.steps_done == t.steps
    assert seen == [h["step"] for h in loop.history] == [20, 40, 60]
    on_disk = read_metrics(recorded.run_dir)
    for mine, theirs in zip(loop.history, on_disk, strict=True):
        assert mine["step"] == theirs["step"]
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-6)
        assert mine["macro_f1"] == pytest.approx(theirs["macro_f1"], rel=1e-6)


def test_a_frozen_module_is_loaded_once_per_process_with_the_same_results(make_cfg):
    from hubsweep.training.trial_cache import TrialCache

    cache = TrialCache.for_config(make_cfg())
    first = train_and_evaluate(make_cfg("trainer.seed=1", run="one"), cache=cache)
    second = train_and_evaluate(make_cfg("trainer.seed=2", run="two"), cache=cache)
    assert first.model.layers[0] is second.model.layers[0]  # loaded once
    alone = train_and_evaluate(make_cfg("trainer.seed=2", run="alone"))  # a fresh process's way
    assert alone.model.layers[0] is not second.model.layers[0]
    assert alone.final == second.final
    tuned = [
        train_and_evaluate(make_cfg("embedding.trainable=true", run=f"t{i}"), cache=cache)
        for i in range(2)
    ]
    assert tuned[0].model.layers[0] is not tuned[1].model.layers[0]  # training changes it
