"""`trainer.class_weight=balanced`: each training example's loss weighed by n / (C * n_c),
the same on every training path, and the weighted loss is Keras's `class_weight` one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hubsweep.errors import ConfigError
from hubsweep.training.classifier import CLASS_WEIGHTS
from hubsweep.training.run import train_and_evaluate

from .conftest import write_scicite
from .test_fast_paths import TOLERANCE, _curve


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory) -> list[str]:
    """The fixture release with three in four `result` sentences dropped from train."""
    tmp = tmp_path_factory.mktemp("imbalanced")
    release = write_scicite(tmp / "scicite", {"train": 160, "dev": 45, "test": 45}, seed=5)
    path = release / "train.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    results = iter(range(len(records)))
    kept = [r for r in records if r["label"] != "result" or next(results) % 4 == 0]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return [f"dataset.source_dir={release}", f"dataset.data_dir={tmp / 'tfds'}"]


def test_balanced_weights_are_n_over_classes_times_count_and_average_one():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = CLASS_WEIGHTS["balanced"](labels, 3)
    np.testing.assert_allclose(weights, [10 / 18, 10 / 9, 10 / 3], rtol=1e-6)
    assert weights[labels].mean() == pytest.approx(1.0)
    assert CLASS_WEIGHTS["none"](labels, 3) is None
    from hubsweep.config.validation import CLASS_WEIGHTINGS  # what validation allows

    assert set(CLASS_WEIGHTINGS) == set(CLASS_WEIGHTS)


def test_the_weighted_loss_is_the_class_weighted_mean_over_the_batch(make_cfg, imbalanced):
    """Keras's `class_weight`: sum of w[y] * cross-entropy over the batch, divided by the
    batch size (not by the weights' sum), against a NumPy computation."""
    import tensorflow as tf

    from hubsweep.data.datasets import load_dataset
    from hubsweep.training.build import build_classifier

    cfg = make_cfg(*imbalanced, "trainer.class_weight=balanced")
    data = load_dataset(cfg.dataset, ["train", "validation"])
    labels = data.splits["train"].labels
    classifier = build_classifier(cfg, data)
    idx = np.arange(0, len(labels), 3, dtype=np.int32)
    logits = np.random.default_rng(0).normal(size=(len(idx), data.num_classes))
    loss = classifier.loss(tf.constant(idx), tf.constant(logits, tf.float32)).numpy()

    counts = np.bincount(labels, minlength=data.num_classes)
    weights = len(labels) / (data.num_classes * counts)
    assert weights.max() / weights.min() > 2  # the fixture is imbalanced
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    y = labels[idx]
    expected = np.sum(weights[y] * -log_p[np.arange(len(idx)), y]) / len(idx)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_every_path_trains_the_same_weighted_model_and_the_weights_matter(make_cfg, imbalanced):
    weighted = (*imbalanced, "trainer.class_weight=balanced")
    compiled = train_and_evaluate(make_cfg(*weighted, run="compiled"))
    keras_path = train_and_evaluate(make_cfg(*weighted, "trainer.compiled_head=false", run="keras"))
    strings = train_and_evaluate(make_cfg(*weighted, "trainer.feature_cache=false", run="strings"))
    assert [r.training_path for r in (compiled, keras_path, strings)] == [
        "features (compiled)",
        "features",
        "strings",
    ]
    np.testing.assert_allclose(_curve(compiled), _curve(keras_path), atol=TOLERANCE)
    np.testing.assert_allclose(_curve(keras_path), _curve(strings), atol=TOLERANCE)

    plain = train_and_evaluate(make_cfg(*imbalanced, run="plain"))
    val_loss = 0  # the curve's columns: loss, accuracy, macro-F1, train loss (the weighted)
    assert np.abs(_curve(plain)[:, val_loss] - _curve(compiled)[:, val_loss]).max() > 1e-3


def test_the_token_id_path_fine_tunes_the_same_weighted_model_as_the_string_path(
    make_cfg, imbalanced
):
    weighted = (*imbalanced, "trainer.class_weight=balanced", "embedding.trainable=true")
    fast = train_and_evaluate(make_cfg(*weighted, "trainer.xla=true", run="fast"))
    plain = train_and_evaluate(make_cfg(*weighted, "trainer.fast_path=false", run="plain"))
    assert (fast.training_path, plain.training_path) == ("token ids (compiled)", "strings")
    np.testing.assert_allclose(_curve(fast), _curve(plain), atol=TOLERANCE)


def test_a_population_of_weighted_and_unweighted_members_trains_each_as_alone(
    make_cfg, imbalanced, cache_dir
):
    """A study that searches trainer.class_weight puts both kinds in one population; each
    member trains as its run alone on the Keras feature path (the reference) does."""
    from hubsweep.embeddings.features import FeatureCache
    from hubsweep.training.population import blocker
    from hubsweep.training.run import train_population
    from hubsweep.training.trial_cache import TrialCache

    members = [("trainer.class_weight=balanced",), ("trainer.class_weight=none",)]
    alone = [
        train_and_evaluate(make_cfg(*imbalanced, *m, "trainer.compiled_head=false", run=f"a{i}"))
        for i, m in enumerate(members)
    ]
    cfgs = [make_cfg(*imbalanced, *m, run=f"pop{i}") for i, m in enumerate(members)]
    assert all(blocker(c) is None for c in cfgs)
    together = train_population(cfgs, [None] * 2, TrialCache(FeatureCache(cache_dir)))
    for a, p in zip(alone, together, strict=True):
        assert p.training_path == "features (population)"
        np.testing.assert_allclose(_curve(p), _curve(a), atol=TOLERANCE)


def test_an_unknown_class_weighting_names_the_key_and_the_allowed_values(make_cfg):
    from hubsweep.config.validation import validate

    with pytest.raises(ConfigError, match=r"trainer.class_weight.*'inverse'.*none, balanced"):
        validate(make_cfg("trainer.class_weight=inverse"))
