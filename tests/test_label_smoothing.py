"""`trainer.label_smoothing`: each step descends the cross-entropy against smoothed targets,
(1 − ε) · one-hot + ε / C, computed here independently in NumPy from the weights before and
after every step; evaluations score the logits against the labels as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from hubsweep.errors import ConfigError
from hubsweep.results.artifacts import _train_loss_terms
from hubsweep.training.build import build_classifier
from hubsweep.training.classifier import _label_loss, batch_order
from hubsweep.training.loop import run_loop
from hubsweep.training.run import train_and_evaluate
from hubsweep.training.trial_cache import TrialCache

from .test_decision import _test_logits
from .test_encoder_path import FINE_TUNE
from .test_fast_paths import _curve
from .test_transformer import _cfg, tiny_bert  # noqa: F401  (fixture)


def _smoothed_loss_and_gradient(x, labels, weights, kernel, bias, eps):
    """The batch's loss, sum_i w_i * sum_k -q_ik log p_ik / B (Keras's reduction), and its
    gradient with respect to the linear head's kernel and bias."""
    logits = x @ kernel + bias
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    classes = kernel.shape[1]
    q = (1 - eps) * np.eye(classes)[labels] + eps / classes
    n = len(labels)
    loss = float((weights * -(q * log_p).sum(axis=1)).sum() / n)
    d_logits = weights[:, None] * (np.exp(log_p) - q) / n
    return loss, x.T @ d_logits, d_logits.sum(axis=0)


@pytest.mark.parametrize("jit", [False, True])
def test_the_loss_is_the_cross_entropy_against_smoothed_targets(jit):
    """Eagerly and XLA-compiled (the compiled token-id path's steps are)."""
    rng = np.random.default_rng(0)
    x, kernel, bias = rng.normal(size=(7, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)
    labels, weights = rng.integers(0, 3, size=7), rng.uniform(0.5, 2.0, size=7).astype(np.float32)
    loss_fn = _label_loss(0.3, 3)
    compute = tf.function(loss_fn, jit_compile=True) if jit else loss_fn
    logits = tf.constant(x @ kernel + bias, tf.float32)
    got = compute(tf.constant(labels, tf.int32), logits, sample_weight=tf.constant(weights))
    expected, _, _ = _smoothed_loss_and_gradient(x, labels, weights, kernel, bias, 0.3)
    assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_each_step_descends_the_smoothed_cross_entropy(make_cfg, class_weight):
    """The Keras feature path with a linear head and plain SGD, evaluated after every
    step: each step's reported loss is the smoothed cross-entropy at the weights before it
    (class-weighted where asked), and the weights move by the learning rate times its
    gradient."""
    eps, steps, lr = 0.2, 5, 0.5
    cfg = make_cfg(
        f"trainer.label_smoothing={eps}",
        f"trainer.class_weight={class_weight}",
        f"trainer.steps={steps}",
        "trainer.eval_every=1",
        f"optimizer.learning_rate={lr}",
    )
    cache = TrialCache.for_config(cfg)
    data = cache.dataset(cfg.dataset, ["train", "validation"])
    classifier = build_classifier(cfg, data, cache.features)
    assert classifier.path == "features"
    kernel, bias = classifier.head.trainable_variables
    seen = [(kernel.numpy(), bias.numpy())]
    losses = []

    def on_evaluation(step, metrics, train_loss):
        seen.append((kernel.numpy(), bias.numpy()))
        losses.append(train_loss)

    t = cfg.trainer
    run_loop(classifier, data, steps, t.batch_size, 1, t.seed, on_evaluation)
    features = classifier.features["train"].numpy()
    labels = np.asarray(data.splits["train"].labels)
    counts = np.bincount(labels, minlength=data.num_classes)
    class_weights = (
        len(labels) / (data.num_classes * counts)
        if class_weight == "balanced"
        else np.ones(data.num_classes)
    )
    order = batch_order(len(labels), t.batch_size, t.seed)
    for step in range(steps):
        idx = next(order)
        w, b = seen[step]
        loss, d_kernel, d_bias = _smoothed_loss_and_gradient(
            features[idx], labels[idx], class_weights[labels[idx]], w, b, eps
        )
        assert losses[step] == pytest.approx(loss, rel=1e-5)
        np.testing.assert_allclose(seen[step + 1][0], w - lr * d_kernel, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(seen[step + 1][1], b - lr * d_bias, rtol=1e-4, atol=1e-6)
        # Not the plain cross-entropy's step: smoothing changed what was descended.
        plain, _, _ = _smoothed_loss_and_gradient(
            features[idx], labels[idx], class_weights[labels[idx]], w, b, 0.0
        )
        assert abs(plain - loss) > 1e-3


def test_a_fine_tuned_encoder_trains_on_smoothed_targets_and_is_scored_on_the_labels(
    tiny_bert,  # noqa: F811
    make_cfg,
):
    """The encoder path: the training losses change with the targets, and validation and
    test losses are the plain cross-entropy of the model's logits."""
    pair = tiny_bert[1]
    plain = train_and_evaluate(_cfg(make_cfg, pair, *FINE_TUNE, run="results/plain/run"))
    smoothed = train_and_evaluate(
        _cfg(make_cfg, pair, *FINE_TUNE, "trainer.label_smoothing=0.1", run="results/ls/run")
    )
    assert smoothed.training_path == plain.training_path == "encoder token ids"
    curve, reference = _curve(smoothed), _curve(plain)
    assert not np.allclose(curve[:, 3], reference[:, 3])  # other training losses
    logits, labels = _test_logits(smoothed)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    plain_ce = -log_p[np.arange(len(labels)), labels].mean()
    assert smoothed.test["loss"] == pytest.approx(plain_ce, rel=1e-4)


def test_smoothing_outside_0_1_names_the_key_and_a_frozen_run_leaves_the_population(make_cfg):
    from hubsweep.config.validation import validate
    from hubsweep.training.population import blocker

    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match=r"trainer.label_smoothing: must be in \[0, 1\)"):
            validate(make_cfg(f"trainer.label_smoothing={bad}"))
    assert "trainer.label_smoothing" in blocker(make_cfg("trainer.label_smoothing=0.1"), True)
    result = train_and_evaluate(make_cfg("trainer.label_smoothing=0.1"))
    assert result.training_path == "features"
    # The learning curve says what its train loss holds.
    assert "label-smoothed (ε=0.1)" in _train_loss_terms(Path(result.run_dir))
