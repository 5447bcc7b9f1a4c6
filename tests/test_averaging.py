"""`trainer.ema_decay`: every evaluation sees the bias-corrected exponential moving average
of the trained weights, computed here independently from the weights after each step;
training itself is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from hubsweep.errors import ConfigError
from hubsweep.metrics import classification_metrics
from hubsweep.reports.document import build_report
from hubsweep.training.averaging import WeightAverage
from hubsweep.training.build import build_classifier
from hubsweep.training.loop import run_loop
from hubsweep.training.run import train_and_evaluate
from hubsweep.training.trial_cache import TrialCache

from .test_decision import _test_logits
from .test_encoder_path import FINE_TUNE
from .test_fast_paths import _curve
from .test_transformer import _cfg, tiny_bert  # noqa: F401  (fixture)


def _reference(weights: list[np.ndarray], decay: float) -> np.ndarray:
    """sum_s decay^(t - s) (1 - decay) w_s / (1 - decay^t) over the weights after steps 1..t."""
    t = len(weights)
    coefficients = [(1 - decay) * decay ** (t - s) for s in range(1, t + 1)]
    return sum(c * w for c, w in zip(coefficients, weights, strict=True)) / (1 - decay**t)


@pytest.mark.parametrize("compiled", [False, True])
def test_the_average_is_bias_corrected_and_swapping_it_in_keeps_the_trained_values(compiled):
    """Separate ops and the XLA-compiled pass (`trainer.xla`) alike."""
    var = tf.Variable([1.0, -2.0])
    average = WeightAverage([var], 0.9, compiled=compiled)
    np.testing.assert_array_equal(average.averaged()[0], [1.0, -2.0])  # before any step
    seen = []
    for value in ([2.0, 0.0], [4.0, 1.0], [3.0, 5.0]):
        var.assign(value)
        average.update()
        seen.append(np.array(value))
    expected = _reference(seen, 0.9)
    np.testing.assert_allclose(average.averaged()[0], expected, rtol=1e-6)
    with average.swapped_in():
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(var.numpy(), [3.0, 5.0])
    average.assign_average()
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("xla", [False, True])
def test_each_evaluation_scores_the_average_of_the_weights_after_every_step(make_cfg, xla):
    """The Keras feature path with a linear head, evaluated after every step: each
    evaluation equals the head's logits with the reference average of the raw weights seen
    so far, and when training ends the model holds the last average; the average folded
    in by separate ops and by one XLA-compiled pass alike (`trainer.xla`)."""
    decay, steps = 0.8, 12
    cfg = make_cfg(
        f"trainer.ema_decay={decay}",
        f"trainer.steps={steps}",
        "trainer.eval_every=1",
        f"trainer.xla={xla}",
    )
    cache = TrialCache.for_config(cfg)
    data = cache.dataset(cfg.dataset, ["train", "validation"])
    classifier = build_classifier(cfg, data, cache.features)
    assert classifier.path == "features"
    variables = classifier.head.trainable_variables  # the linear head's kernel and bias
    raw, scores = [], []

    def on_evaluation(step, metrics, train_loss):
        raw.append([v.numpy() for v in variables])  # the trained values, swapped back
        scores.append(metrics)

    run_loop(classifier, data, steps, cfg.trainer.batch_size, 1, cfg.trainer.seed, on_evaluation)
    assert len(raw) == steps
    features = classifier.features["validation"].numpy()
    split = data.splits["validation"]
    for t in range(1, steps + 1):
        kernel = _reference([w[0] for w in raw[:t]], decay)
        bias = _reference([w[1] for w in raw[:t]], decay)
        expected = classification_metrics(split.labels, features @ kernel + bias, data.label_names)
        assert scores[t - 1]["loss"] == pytest.approx(expected["loss"], rel=1e-4)
        assert scores[t - 1]["confusion_matrix"] == expected["confusion_matrix"]
    assert not np.allclose(kernel, raw[-1][0])  # the average is not the last weights
    classifier.use_average()
    np.testing.assert_allclose(variables[0].numpy(), kernel, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(variables[1].numpy(), bias, rtol=1e-5, atol=1e-7)


def test_a_fine_tuned_encoder_trains_as_without_and_is_tested_with_its_average(
    tiny_bert,  # noqa: F811
    make_cfg,
    tmp_path,
):
    pair = tiny_bert[1]
    plain = train_and_evaluate(_cfg(make_cfg, pair, *FINE_TUNE, run="results/plain/run"))
    averaged = train_and_evaluate(
        _cfg(make_cfg, pair, *FINE_TUNE, "trainer.ema_decay=0.9", run="results/ema/run")
    )
    assert averaged.training_path == plain.training_path == "encoder token ids"
    curve, reference = _curve(averaged), _curve(plain)
    np.testing.assert_array_equal(curve[:, 3], reference[:, 3])  # the same training losses
    assert not np.allclose(curve[:, 0], reference[:, 0])  # other weights evaluated
    # The model handed back holds the average, and test was scored with it.
    logits, labels = _test_logits(averaged)
    expected = classification_metrics(labels, logits, list(averaged.test["per_class"]))
    assert averaged.test["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert averaged.test["confusion_matrix"] == expected["confusion_matrix"]

    # final.json pairs the average with the weights as trained, which are the plain run's.
    block = json.loads((Path(averaged.run_dir) / "final.json").read_text())["averaging"]
    assert block["decay"] == 0.9 and plain.averaging is None
    assert block["validation_averaged"] == averaged.final["macro_f1"]
    assert block["validation_trained"] == pytest.approx(plain.final["macro_f1"], abs=1e-6)
    assert block["test_averaged"] == averaged.test["macro_f1"]
    assert block["test_trained"] == pytest.approx(plain.test["macro_f1"], abs=1e-6)
    # The report's runs table shows the pair for the averaged runs only.
    report = build_report(Path(averaged.run_dir).parents[1], tmp_path / "report")
    table = pd.read_csv(report.parent / "tables" / "runs.csv").set_index("group")
    assert table.loc["ema", "test_trained_mean"] == pytest.approx(block["test_trained"])
    gain = block["test_averaged"] - block["test_trained"]
    assert table.loc["ema", "averaging_gain_mean"] == pytest.approx(gain)
    assert np.isnan(table.loc["plain", "averaging_gain_mean"])
    assert "average − trained (test)" in report.read_text()
    assert "decision − argmax" not in report.read_text()


def test_a_decay_outside_0_1_names_the_key_and_a_frozen_run_leaves_the_population(make_cfg):
    from hubsweep.config.validation import validate
    from hubsweep.training.population import blocker

    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match=r"trainer.ema_decay: must be in \[0, 1\)"):
            validate(make_cfg(f"trainer.ema_decay={bad}"))
    assert blocker(make_cfg(), alone=True) is None
    assert "trainer.ema_decay" in blocker(make_cfg("trainer.ema_decay=0.9"), alone=True)
    result = train_and_evaluate(make_cfg("trainer.ema_decay=0.9"))
    assert result.training_path == "features"
