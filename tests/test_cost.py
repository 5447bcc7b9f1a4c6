"""A trial's compute, as reports compare it, leaves out the feature-cache builds it paid
for the trials and arms after it: which arm happened to run first says nothing of its
configs (two arms of one frozen module once read 0.069x apart in compute per trial, where
both cost the same)."""

from __future__ import annotations

import numpy as np
import pytest

from hubsweep.study.liveness import CACHE_BUILD_TIME, WALL_TIME

from .test_sweep import COMPOSE, FAST_SWEEP


def test_feature_cache_builds_are_counted_once_and_left_out_of_compute_per_trial(
    make_cfg, fixture_overrides, tmp_path
):
    from hubsweep.reports.collect import read_study
    from hubsweep.reports.cost import arm_costs
    from hubsweep.study.driver import run_sweep
    from hubsweep.study.liveness import compute_s

    args = [
        f"results_dir={tmp_path / 'results'}",
        f"cache_dir={tmp_path / 'cache'}",  # empty: the first trial embeds the splits
        *FAST_SWEEP,
        "sweep.n_trials=3",
        "+arms.first=['trainer.seed=0']",
        "+arms.second=['trainer.seed=1']",
    ]
    run_sweep(make_cfg(*args), [*fixture_overrides, *args], COMPOSE)
    studies = [
        read_study(tmp_path / "results" / "default" / "lr" / arm) for arm in ("first", "second")
    ]
    first, second = ([t for t in s.trials if t.state.is_finished()] for s in studies)
    builds = [[t.user_attrs[CACHE_BUILD_TIME] for t in trials] for trials in (first, second)]
    # The first arm's first round (its trials train as one population, sharing the
    # build as they share the wall time) loaded the dataset and embedded the splits; the
    # second arm read both from the cache_dir (its only build, if any: that first read).
    assert sum(builds[1]) < sum(builds[0])
    assert all(b < t.user_attrs[WALL_TIME] for b, t in zip(builds[0], first, strict=True))
    costs = arm_costs(studies)
    assert costs["first"].cache_build_s == pytest.approx(sum(builds[0]))
    assert costs["first"].per_trial_s == pytest.approx(
        np.mean([t.user_attrs[WALL_TIME] for t in first]) - sum(builds[0]) / 3
    )
    per_trial = np.mean([compute_s(t.user_attrs) for t in second])
    assert costs["second"].per_trial_s == pytest.approx(per_trial)
    assert costs["first"].search_s == pytest.approx(sum(t.user_attrs[WALL_TIME] for t in first))


def test_elapsed_time_counts_trials_side_by_side_once():
    # Two workers' trials overlapping from 10 to 20 s, then a gap (a study resumed later)
    # and a trial alone; a trial still running has no end yet: 40 s ran, not the 50 s the
    # finished trials took between them, nor the 100 s from the first start to the last end.
    from datetime import datetime, timedelta

    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial, TrialState

    from hubsweep.reports.cost import running_s

    t0 = datetime(2026, 12, 7)

    def trial(number: int, start: float, end: float | None) -> FrozenTrial:
        return FrozenTrial(
            number=number,
            state=TrialState.COMPLETE if end is not None else TrialState.RUNNING,
            value=0.5 if end is not None else None,
            datetime_start=t0 + timedelta(seconds=start),
            datetime_complete=t0 + timedelta(seconds=end) if end is not None else None,
            params={"x": 0.1},
            distributions={"x": FloatDistribution(0, 1)},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=number,
        )

    trials = [trial(0, 0, 20), trial(1, 10, 30), trial(2, 90, 100), trial(3, 95, None)]
    assert running_s(trials) == pytest.approx(40.0)
    assert running_s([trial(0, 0, 20), trial(1, 5, 15)]) == pytest.approx(20.0)
    assert running_s([]) == 0.0
