"""Comparison statistics on answers known by construction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hubsweep.reports.stats import expected_max, expected_max_curve, paired, sign_flip_p


def _exact(values, n):
    """The mean of the max over every n-subset: what expected_max estimates."""
    return np.mean([max(c) for c in itertools.combinations(values, n)])


@pytest.mark.parametrize("values", [[0.3, 0.9, 0.5, 0.7, 0.1], [1, 1, 2, 5, 5, 3, 0.5]])
def test_expected_max_is_the_exact_mean_over_subsets(values):
    curve = expected_max(values)
    assert curve == pytest.approx([_exact(values, n) for n in range(1, len(values) + 1)])
    assert curve[0] == pytest.approx(np.mean(values)) and curve[-1] == max(values)


def test_expected_min_for_a_minimised_metric_and_a_band_around_it():
    values = [0.52, 0.61, 0.49, 0.70, 0.55, 0.58]
    curve = expected_max_curve(values, minimize=True, boot=200)
    assert curve.mean == pytest.approx([-x for x in expected_max([-v for v in values])])
    assert curve.mean[-1] == min(values)
    assert np.all(np.diff(curve.mean) <= 1e-12)  # more trials: a lower expected minimum
    assert np.all(curve.low <= curve.mean + 1e-12) and np.all(curve.mean <= curve.high + 1e-12)


def test_a_known_shift_on_shared_seeds_is_found():
    rng = np.random.default_rng(1)
    base = rng.normal(0.75, 0.01, size=8)  # seed-to-seed spread larger than the shift
    noise = rng.normal(0, 0.001, size=8)
    a = {s: float(x + 0.005 + e) for s, (x, e) in enumerate(zip(base, noise, strict=True))}
    b = {s: float(x) for s, x in enumerate(base)}
    result = paired(a, b)
    assert result.low < 0.005 < result.high
    assert result.low > 0 and result.distinguishable
    assert result.p_value == pytest.approx(2 / 2**8)  # every difference positive
    assert result.p_a_beats_b > 0.95
    # Unpaired, the shift would be lost in the seed spread.
    assert np.std(base) > 0.005


def test_equal_arms_are_not_distinguishable():
    rng = np.random.default_rng(2)
    base = rng.normal(0.75, 0.01, size=5)
    a = {s: float(x + rng.normal(0, 0.003)) for s, x in enumerate(base)}
    b = {s: float(x + rng.normal(0, 0.003)) for s, x in enumerate(base)}
    result = paired(a, b)
    assert result.low < 0 < result.high and not result.distinguishable
    assert result.smallest_p == pytest.approx(0.0625)  # 5 seeds cannot reach p < 0.05


def test_only_shared_seeds_are_paired_and_the_test_is_exact():
    assert paired({0: 1.0, 1: 2.0}, {1: 1.0, 2: 0.0}) is None
    result = paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 2.5, 2: 2.0, 9: 1.0})
    assert result.seeds == (0, 1, 2) and result.diffs == (1.0, -0.5, 1.0)
    # signs of (1, -0.5, 1): |mean| >= 0.5 for (+,+,+), (+,-,+)... enumerate by hand
    flips = [
        abs(np.mean(np.array(s) * [1.0, -0.5, 1.0])) for s in itertools.product((1, -1), repeat=3)
    ]
    assert sign_flip_p([1.0, -0.5, 1.0]) == pytest.approx(np.mean(np.array(flips) >= 0.5 - 1e-12))
