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


# --- the trend rule: a score rising toward an edge, the best not at the edge itself -------

LR_ONLY = {"lr": PARAMS["lr"]}


def _lr_study(positions, score) -> list:
    """Trials at the given positions of the log lr range [1e-3, 1], scored by score(pos)."""
    dist = {"optimizer.learning_rate": DISTS["optimizer.learning_rate"]}
    return [
        create_trial(
            params={"optimizer.learning_rate": float(10 ** (-3 + 3 * p))},
            distributions=dist,
            value=float(score(p)),
        )
        for p in positions
    ]


def _rising_with_noise(n: int, top: float) -> list:
    """n trials evenly up to `top`, the score rising with the value but three neighbouring
    pairs swapped (a real study's noise): Spearman's rho = 1 - 6*6/(8*63) = 0.93 for 8."""
    positions = np.linspace(0.0, top, n)
    wobble = [0.08 * (-1) ** (i + 1) for i in range(n)]
    return _lr_study(positions, lambda p: p + wobble[int(round(p / top * (n - 1)))])


def test_a_score_still_rising_toward_the_upper_edge_is_warned_by_its_trend():
    # The case: 8 trials, the best at 3/4 of the range (outside the outer 5%, the
    # top five not within 20% of the edge), the score rising with the rate.
    trials = _rising_with_noise(8, 0.75)
    [w] = edge_warnings(LR_ONLY, trials, minimize=False)
    assert "rises toward the upper edge over the 8 completed trials" in w
    assert "Spearman ρ = +0.93" in w and "(log)" in w
    assert "sweep.params.lr.high=31.62" in w


def test_a_score_falling_toward_the_lower_edge_is_warned_and_a_loss_too():
    positions = np.linspace(0.25, 1.0, 10)
    trials = _lr_study(positions, lambda p: -p)
    [w] = edge_warnings(LR_ONLY, trials, minimize=False)
    assert "rises toward the lower edge" in w and "sweep.params.lr.low=3.162e-05" in w
    # A loss that grows with the value: minimised, its best lies toward the lower edge too.
    [w] = edge_warnings(LR_ONLY, _lr_study(positions, lambda p: p), minimize=True)
    assert "rises toward the lower edge" in w


def test_an_interior_optimum_and_flat_noise_give_no_trend_warning():
    positions = np.linspace(0.0, 1.0, 12)
    assert edge_warnings(LR_ONLY, _lr_study(positions, lambda p: -((p - 0.5) ** 2)), False) == []
    rng = np.random.default_rng(3)
    noise = rng.normal(0.7, 0.01, size=30)
    flat = _lr_study(np.linspace(0.2, 0.8, 30), lambda p: noise[int(round((p - 0.2) / 0.6 * 29))])
    assert edge_warnings(LR_ONLY, flat, False) == []


def test_the_trend_rule_needs_six_trials_and_the_best_in_the_outer_third():
    rising = lambda p: p  # noqa: E731
    assert edge_warnings(LR_ONLY, _lr_study(np.linspace(0.0, 0.75, 5), rising), False) == []
    # Rising overall but the best in the middle third: no trend warning.
    positions = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    peaked = _lr_study(positions, lambda p: p if p < 0.55 else 0.3)
    assert edge_warnings(LR_ONLY, peaked, False) == []


def test_a_winner_whose_test_re_runs_fall_below_its_race_is_flagged():
    from hubsweep.reports.diagnostics import race_warning

    # The reference's fine-tuned Word2Vec winner: three lucky race seeds, five fresh ones.
    race, reruns = [0.7453, 0.7353, 0.7551], [0.7438, 0.6726, 0.6647, 0.7031, 0.6955]
    w = race_warning(race, reruns, minimize=False)
    assert w and "below its 0.7452" in w and "one-sided p = 0.0" in w
    assert race_warning(race, [0.74, 0.75, 0.745, 0.752, 0.741], minimize=False) is None
    assert race_warning(race, reruns[:1], minimize=False) is None  # one re-run: no test
    # A loss: re-runs with a higher loss than the race are the worse ones.
    assert race_warning([0.5, 0.51, 0.49], [0.6, 0.62, 0.61], minimize=True)
    assert race_warning([0.6, 0.62, 0.61], [0.5, 0.51, 0.49], minimize=True) is None
