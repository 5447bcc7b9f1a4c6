"""`trainer.decision=tuned_offsets`: per-class logit offsets fitted on validation to
maximise the selection metric, then used for test and predictions.csv; training, the
probabilities and every evaluation a study selects on stay as with argmax."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hubsweep.errors import ConfigError
from hubsweep.metrics import classification_metrics
from hubsweep.reports.document import build_report
from hubsweep.training.decision import DECISIONS, OFFSET_GRID, fit_offsets
from hubsweep.training.run import train_and_evaluate

from .test_class_weight import imbalanced  # noqa: F401 (the fixture)
from .test_fast_paths import _curve

NAMES = ("method", "background", "result")


def _separable(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels 60/30/10 and logits whose argmax is right for every example."""
    labels = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    logits = rng.normal(scale=0.3, size=(n, 3))
    logits[np.arange(n), labels] += 2.0
    return labels, logits


def test_offsets_undo_a_shift_that_starves_the_rare_class():
    """The rare class's logit lowered by 2.5 (more than its margin of 2) loses most of its
    examples; the fitted offset gives it back at least the margin's worth, and the score
    that the unshifted logits had."""
    labels, logits = _separable(600, np.random.default_rng(0))
    shifted = logits - np.array([0.0, 0.0, 2.5])
    starved = classification_metrics(labels, shifted, NAMES)["macro_f1"]
    assert starved < 0.8
    offsets = fit_offsets(labels, shifted, NAMES, "macro_f1")
    assert offsets[0] == 0.0  # the first class is the reference
    assert 1.0 <= offsets[2] <= 3.0
    assert classification_metrics(labels, shifted, NAMES, offsets)["macro_f1"] == 1.0


def test_logits_already_best_keep_offsets_of_zero():
    labels, logits = _separable(300, np.random.default_rng(1))
    np.testing.assert_array_equal(fit_offsets(labels, logits, NAMES, "macro_f1"), 0.0)
    assert DECISIONS["argmax"](labels, logits, NAMES, "macro_f1") is None


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_the_fitted_score_is_at_least_argmax_and_at_most_the_grid_optimum(metric):
    """Coordinate ascent never loses to argmax, and comes within a point of the best pair
    of offsets on the whole grid (searched exhaustively here, every fourth value)."""
    rng = np.random.default_rng(2)
    labels = rng.choice(3, size=400, p=[0.5, 0.35, 0.15])
    logits = rng.normal(size=(400, 3)) + 1.2 * np.eye(3)[labels] - [0.0, 0.3, 0.9]
    offsets = fit_offsets(labels, logits, NAMES, metric)
    fitted = classification_metrics(labels, logits, NAMES, offsets)[metric]
    grid = OFFSET_GRID[::4]
    exhaustive = max(
        classification_metrics(labels, logits, NAMES, np.array([0.0, a, b]))[metric]
        for a in grid
        for b in grid
    )
    assert fitted >= classification_metrics(labels, logits, NAMES)[metric]
    assert fitted >= exhaustive - 0.01


def test_offsets_move_the_decisions_not_the_loss():
    labels, logits = _separable(200, np.random.default_rng(3))
    plain = classification_metrics(labels, logits, NAMES)
    moved = classification_metrics(labels, logits, NAMES, np.array([0.0, 0.0, 5.0]))
    assert moved["loss"] == plain["loss"]
    assert moved["per_class"]["result"]["recall"] == 1.0
    assert moved["accuracy"] < plain["accuracy"]


def _test_logits(result) -> tuple[np.ndarray, np.ndarray]:
    """The trained model's logits on the run's test sentences, and their labels."""
    from omegaconf import OmegaConf

    from hubsweep.data.datasets import load_dataset

    run_cfg = OmegaConf.load(Path(result.run_dir) / "config.yaml")
    split = load_dataset(run_cfg.dataset, ["test"]).splits["test"]
    return result.model.predict(np.asarray(split.texts), verbose=0), split.labels


@pytest.mark.parametrize("path", ["trainer.compiled_head=true", "trainer.compiled_head=false"])
def test_a_tuned_run_trains_as_argmax_and_decides_test_by_its_validation_offsets(
    make_cfg,
    imbalanced,  # noqa: F811
    path,
    tmp_path,
):
    common = (*imbalanced, path, "trainer.evaluate_test=true")
    argmax = train_and_evaluate(make_cfg(*common, run="results/argmax/run"))
    tuned = train_and_evaluate(
        make_cfg(*common, "trainer.decision=tuned_offsets", run="results/tuned/run")
    )
    np.testing.assert_array_equal(_curve(tuned), _curve(argmax))  # the same training
    assert argmax.decision is None
    d = tuned.decision
    assert d["rule"] == "tuned_offsets" and list(d["offsets"]) == list(NAMES)
    assert d["validation_fitted"] >= d["validation_argmax"] == tuned.final["macro_f1"]
    offsets = np.array(list(d["offsets"].values()))
    assert np.any(offsets != 0)  # the imbalanced fixture's rare class moves

    logits, labels = _test_logits(tuned)
    expected = classification_metrics(labels, logits, NAMES, offsets)
    assert tuned.test["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-6)
    assert tuned.test["confusion_matrix"] == expected["confusion_matrix"]
    assert tuned.test["loss"] == pytest.approx(argmax.test["loss"], rel=1e-5)
    assert d["test_decided"] == tuned.test["macro_f1"]
    assert d["test_argmax"] == pytest.approx(argmax.test["macro_f1"], abs=1e-6)
    assert (
        argmax.test["confusion_matrix"]
        == classification_metrics(labels, logits, NAMES)["confusion_matrix"]
    )

    saved = json.loads((Path(tuned.run_dir) / "final.json").read_text())["decision"]
    assert saved == d
    rows = pd.read_csv(Path(tuned.run_dir) / "predictions.csv")
    probabilities = rows[[f"p_{n}" for n in NAMES]].to_numpy()
    decided = (np.log(np.maximum(probabilities, 1e-12)) + offsets).argmax(axis=1)
    assert rows["prediction"].tolist() == [NAMES[i] for i in decided]

    # The report's runs table: the tuned row says what argmax would have scored on test and
    # the offsets' gain over it; a report of argmax runs alone has no such columns.
    report = build_report(Path(tuned.run_dir).parents[1], tmp_path / "report")
    table = pd.read_csv(report.parent / "tables" / "runs.csv").set_index("group")
    assert table.loc["tuned", "test_macro_f1_mean"] == pytest.approx(d["test_decided"])
    assert table.loc["tuned", "test_argmax_mean"] == pytest.approx(d["test_argmax"])
    gain = d["test_decided"] - d["test_argmax"]
    assert table.loc["tuned", "decision_gain_mean"] == pytest.approx(gain)
    assert np.isnan(table.loc["argmax", "test_argmax_mean"])
    assert "decision − argmax (test)" in report.read_text()
    per_run = pd.read_csv(report.parent / "tables" / "run_scores.csv").set_index("group")
    assert per_run.loc["tuned", "test_argmax"] == pytest.approx(d["test_argmax"])
    assert per_run.loc["tuned", "test_macro_f1"] == pytest.approx(d["test_decided"])
    assert np.isnan(per_run.loc["argmax", "test_argmax"])
    alone = build_report(Path(argmax.run_dir).parent, tmp_path / "alone")
    assert "test_argmax_mean" not in pd.read_csv(alone.parent / "tables" / "runs.csv")
    assert "by argmax" not in alone.read_text()


def test_an_unknown_rule_and_a_loss_to_fit_name_the_key(make_cfg):
    from hubsweep.config.validation import DECISION_RULES, validate

    assert set(DECISION_RULES) == set(DECISIONS)
    with pytest.raises(ConfigError, match=r"trainer.decision.*'median'.*argmax, tuned_offsets"):
        validate(make_cfg("trainer.decision=median"))
    with pytest.raises(ConfigError, match=r"trainer.decision.*'loss' is not one.*macro_f1"):
        validate(make_cfg("trainer.decision=tuned_offsets", "trainer.selection_metric=loss"))
