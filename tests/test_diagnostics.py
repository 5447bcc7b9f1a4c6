"""Search-space warnings on studies whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hubsweep.reports.diagnostics import edge_warnings, lucky_warning, pruning_warning

PARAMS = {
    "lr": {
        "key": "optimizer.learning_rate",
        "type": "float",
        "low": 1e-3,
        "high": 1.0,
        "log": True,
    },
    "steps": {"key": "trainer.steps", "type": "int", "low": 1000, "high": 8000, "step": 1000},
}
DISTS = {
    "optimizer.learning_rate": FloatDistribution(1e-3, 1.0, log=True),
    "trainer.steps": IntDistribution(1000, 8000, step=1000),
}


def _study(score, n=30, seed=0) -> list:
    """Complete trials on a random sample of the space, scored by `score(lr, steps)`."""
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n):
        lr = float(np.exp(rng.uniform(np.log(1e-3), np.log(1.0))))
        steps = int(rng.integers(1, 9) * 1000)
        params = {"optimizer.learning_rate": lr, "trainer.steps": steps}
        trials.append(create_trial(params=params, distributions=DISTS, value=score(lr, steps)))
    return trials


def test_a_best_value_at_the_upper_edge_is_named_with_its_edge():
    # The score rises with the learning rate all the way to the top of the range.
    trials = _study(lambda lr, steps: float(np.log(lr)) - 1e-6 * abs(steps - 4000))
    warnings = edge_warnings(PARAMS, trials, minimize=False)
    assert len(warnings) == 1
    [w] = warnings
    assert w.startswith("lr (`optimizer.learning_rate`)") and "upper" in w and "toward 1" in w
    assert "(log scale)" in w and "sweep.params.lr.high=31.62" in w  # 1 * sqrt(1 / 1e-3)


def test_a_best_value_inside_the_range_gives_no_warning():
    trials = _study(lambda lr, steps: -((np.log10(lr) + 1.5) ** 2) - ((steps - 4500) / 3000) ** 2)
    assert edge_warnings(PARAMS, trials, minimize=False) == []


def test_the_lower_edge_and_a_minimised_metric():
    # A loss that falls as steps fall toward the bottom of their range.
    trials = _study(lambda lr, steps: steps / 1000 + (np.log10(lr) + 1.5) ** 2)
    [w] = edge_warnings(PARAMS, trials, minimize=True)
    assert w.startswith("steps (`trainer.steps`)") and "lower" in w and "toward 1000" in w
    assert "sweep.params.steps.low=0" in w  # 1000 - 3500, but steps cannot go below 0


def test_most_trials_pruned_at_their_first_evaluations_is_flagged():
    dist = {"x": FloatDistribution(0, 1)}
    pruned = [
        create_trial(
            params={"x": 0.5},
            distributions=dist,
            state=TrialState.PRUNED,
            intermediate_values={200: 0.5},
        )
        for _ in range(6)
    ]
    complete = [
        create_trial(
            params={"x": 0.5},
            distributions=dist,
            value=0.7,
            intermediate_values={200: 0.6, 400: 0.65, 600: 0.7},
        )
        for _ in range(4)
    ]
    w = pruning_warning(pruned + complete, "median")
    assert w.startswith("6 of 10 trials were pruned") and "pruner_warmup_steps" in w
    assert pruning_warning(pruned[:4] + complete, "median") is None


def test_a_best_trial_its_re_runs_do_not_confirm_is_a_lucky_seed():
    w = lucky_warning(0.78, [0.750, 0.752, 0.748, 0.751, 0.749], seeds_per_trial=1, minimize=False)
    assert "lucky seed" in w and "seeds_per_trial=3" in w
    assert lucky_warning(0.752, [0.750, 0.752, 0.748, 0.751, 0.749], 1, False) is None
    assert lucky_warning(0.78, [0.750, 0.752, 0.748], seeds_per_trial=3, minimize=False) is None
    assert lucky_warning(0.40, [0.50, 0.51, 0.49], 1, minimize=True) is not None


def test_the_warnings_read_a_real_study():
    study = optuna.create_study(direction="maximize")
    study.add_trials(_study(lambda lr, steps: float(np.log(lr)), n=20))
    assert edge_warnings(PARAMS, study.trials, minimize=False)
