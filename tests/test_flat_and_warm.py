"""Studies that stop when flat, and studies warm-started from an earlier one: real sweeps on
the fixture, and the stopping rule on curves whose answer is known by construction."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hubsweep.errors import ConfigError
from hubsweep.reports.document import build_report
from hubsweep.results.layout import study_dir
from hubsweep.study import flat
from hubsweep.study.compose import ComposeSpec
from hubsweep.study.driver import run_sweep
from hubsweep.study.liveness import WARM_START
from hubsweep.study.storage import open_storage, resolve

from .conftest import REPO, SMALL_RUN

COMPOSE = ComposeSpec(str(REPO / "conf"), (), ())
FAST = [*SMALL_RUN, "sweep.heartbeat_s=1", "sweep.grace_s=4", "sweep.pruner=none"]
LR = "optimizer.learning_rate"


def _settings(**kw):
    values = dict(n_trials=40, flat_min_trials=10, metric="macro_f1", seeds_per_trial=1)
    return SimpleNamespace(**{**values, "flat_noise": 0.005, **kw})


def _told(values, **attrs) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    dist = {"x": FloatDistribution(0, 1)}
    for i, v in enumerate(values):
        trial = create_trial(params={"x": i / 100}, distributions=dist, value=v, user_attrs=attrs)
        study.add_trial(trial)
    return study


def test_a_flat_curve_stops_and_a_spread_one_does_not():
    rng = np.random.default_rng(0)
    # Every trial within 0.001 of 0.80: the expected best of 6 and of 12 trials barely differ.
    flat_study = _told(0.80 + rng.uniform(0, 0.001, size=12))
    record = flat.check(flat_study, _settings())
    assert record["complete_trials"] == 12 and 0 <= record["gain"] < 0.001
    assert record["noise"] == 0.005 and record["noise_from"] == "sweep.flat_noise"
    assert flat_study.user_attrs[flat.FLAT_ATTR] == record
    # Scores spread over [0.3, 0.9]: E[max of 12] - E[max of 6] is about 0.04, above 0.005.
    spread = _told(rng.uniform(0.3, 0.9, size=12))
    assert flat.check(spread, _settings()) is None
    # ... but flat against a seed noise of 0.1.
    assert flat.check(spread, _settings(flat_noise=0.1)) is not None
    # Too few trials: never judged.
    assert flat.check(_told([0.8] * 9), _settings()) is None


def test_the_noise_is_the_trials_own_seed_spread_where_they_have_one():
    study = _told([0.8, 0.8001, 0.8002, 0.8003], value_std=0.02)
    noise, source = flat.seed_noise(study, "macro_f1", seeds_per_trial=2, default=0.005)
    assert source == "the trials' own seeds" and noise == pytest.approx(0.02 * np.sqrt(2))


def _sweep(tmp_path, make_cfg, fixture_overrides, *overrides):
    args = [f"results_dir={tmp_path / 'results'}", *FAST, *overrides]
    cfg = make_cfg(*args)
    summary = run_sweep(cfg, [*fixture_overrides, *args], COMPOSE)
    directory = study_dir(cfg.results_dir, cfg.experiment_name, cfg.sweep.study_name, None)
    study = optuna.load_study(
        study_name=cfg.sweep.study_name, storage=open_storage(resolve(None, directory))
    )
    return summary, study, directory


# A parameter that does not change the score (the evaluation batch): a flat search.
INERT = [
    "sweep=lr",
    "~sweep.params.lr",
    "+sweep.params.eval={key:trainer.eval_batch_size,type:int,low:8,high:64}",
    "sweep.population=2",
    "sweep.finalists=1",
    "sweep.stop_when_flat=true",
    "sweep.flat_min_trials=4",
]


def test_a_flat_sweep_stops_early_and_a_larger_budget_continues_it(
    tmp_path, make_cfg, fixture_overrides
):
    summary, study, directory = _sweep(
        tmp_path, make_cfg, fixture_overrides, *INERT, "sweep.n_trials=12"
    )
    assert len(study.trials) == 4  # two rounds of two, then flat
    assert summary["stopped_flat"]["complete_trials"] == 4
    assert abs(summary["stopped_flat"]["gain"]) < 1e-6
    report = build_report(directory).read_text()
    assert "stopped when flat: 4 of 12 trials finished" in report
    assert "raise sweep.n_trials above 12 to continue" in report
    # The same command: still stopped, nothing runs.
    _, study, _ = _sweep(tmp_path, make_cfg, fixture_overrides, *INERT, "sweep.n_trials=12")
    assert len(study.trials) == 4
    # A larger budget: at least flat_min_trials more trials before the rule applies again.
    summary, study, _ = _sweep(tmp_path, make_cfg, fixture_overrides, *INERT, "sweep.n_trials=20")
    assert len(study.trials) == 8 and summary["stopped_flat"]["n_trials"] == 20


def test_a_warm_start_queues_the_earlier_studys_configs_that_fit_the_space(
    tmp_path, make_cfg, fixture_overrides
):
    first = ["sweep=lr", "sweep.study_name=first", "sweep.n_trials=4", "sweep.finalists=1"]
    _, before, first_dir = _sweep(tmp_path, make_cfg, fixture_overrides, *first)
    lrs = sorted(t.params[LR] for t in before.trials)
    high = float(np.sqrt(lrs[1] * lrs[2]))  # two of the four configs fit the narrower space
    second = [
        "sweep=lr",
        "sweep.study_name=second",
        "sweep.n_trials=3",
        "sweep.finalists=1",
        f"sweep.params.lr.high={high}",
        f"sweep.warm_start={first_dir}",
    ]
    _, after, second_dir = _sweep(tmp_path, make_cfg, fixture_overrides, *second)
    warm = [t for t in after.trials if t.user_attrs.get(WARM_START)]
    assert sorted(t.params[LR] for t in warm) == lrs[:2]  # exactly, never clipped
    assert [t.number for t in warm] == [0, 1] and all(t.state == TrialState.COMPLETE for t in warm)
    record = after.user_attrs["hubsweep:warm_start"]
    assert len(record["skipped"]) == 2
    assert all("lies outside [0.001, " in s["reason"] for s in record["skipped"])
    # A resume does not queue them again.
    _, after, _ = _sweep(tmp_path, make_cfg, fixture_overrides, *second, "sweep.n_trials=4")
    assert len([t for t in after.trials if t.user_attrs.get(WARM_START)]) == 2
    report = build_report(second_dir).read_text()
    assert "warm start: 2 trial(s) queued from study `first`" in report
    assert "lies outside" in report and "not random draws" in report


def test_a_warm_start_that_cannot_be_read_is_one_error(tmp_path, make_cfg, fixture_overrides):
    with pytest.raises(ConfigError, match=r"sweep.warm_start=.*nowhere: no .*study.json"):
        _sweep(
            tmp_path,
            make_cfg,
            fixture_overrides,
            "sweep=lr",
            "sweep.n_trials=1",
            f"sweep.warm_start={tmp_path / 'nowhere'}",
        )


def test_a_config_with_a_parameter_this_space_lacks_is_refused_with_its_reason(
    tmp_path, make_cfg, fixture_overrides
):
    from hubsweep.study.plan import build_plans
    from hubsweep.study.warm_start import checked

    args = [f"results_dir={tmp_path / 'results'}", "sweep=lr"]
    [plan] = build_plans(make_cfg(*args), [*fixture_overrides, *args], COMPOSE)
    assert checked(plan, {LR: 0.1}) is None
    assert checked(plan, {LR: 0.1, "trainer.steps": 100}) == "trainer.steps is not searched here"
    assert checked(plan, {LR: 2.0}) == f"{LR}: 2 lies outside [0.001, 1]"
