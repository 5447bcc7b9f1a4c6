"""Optuna sweeps: real training on the fixture, real Optuna, real storages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hubsweep.results.layout import study_dir as layout_study_dir
from hubsweep.study.algorithms import make_sampler
from hubsweep.study.compose import ComposeSpec
from hubsweep.study.driver import run_sweep
from hubsweep.study.liveness import (
    DIED_TWICE,
    FAIL_REASON,
    SURPLUS,
    recover_stale_trials,
    retry_once,
    tally,
    usable_cores,
)
from hubsweep.study.storage import Heartbeat, open_storage, resolve
from hubsweep.study.workers import sampler_seed

from .conftest import REPO

CONF = str(REPO / "conf")
COMPOSE = ComposeSpec(CONF, (), ())
# One finalist: these tests are about the search (tests/test_finalists.py races finalists).
FAST_SWEEP = [
    "sweep=lr",
    "sweep.heartbeat_s=1",
    "sweep.grace_s=4",
    "sweep.pruner=none",
    "sweep.finalists=1",
]


def study_dir(cfg):
    return layout_study_dir(cfg.results_dir, cfg.experiment_name, cfg.sweep.study_name, None)


@pytest.fixture
def sweep(make_cfg, fixture_overrides, tmp_path):
    """Run a study in this process: (overrides...) -> (cfg, summary, study)."""

    def run(*overrides: str):
        args = [f"results_dir={tmp_path / 'results'}", *FAST_SWEEP, *overrides]
        cfg = make_cfg(*args)
        summary = run_sweep(cfg, [*fixture_overrides, *args], COMPOSE)
        study = optuna.load_study(
            study_name=cfg.sweep.study_name,
            storage=open_storage(resolve(cfg.sweep.storage, study_dir(cfg))),
        )
        return cfg, summary, study

    return run


def _states(study) -> dict[TrialState, int]:
    counts: dict[TrialState, int] = {}
    for t in study.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    return counts


# Random rates from tiny to diverging, pruned by the median rule after two trials.
PRUNING = [
    "sweep.sampler=random",
    "sweep.pruner=median",
    "sweep.pruner_startup_trials=2",
    "sweep.params.lr.low=1e-4",
    "sweep.params.lr.high=3.0",
    "trainer.steps=200",
    "trainer.eval_every=20",
]


def test_pruning_stops_bad_trials_early(sweep):
    cfg, summary, study = sweep(
        "sweep.study_name=prune",
        "sweep.population=1",  # the pruner compares with trials completed before
        "sweep.n_trials=10",
        *PRUNING,
    )
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned and complete
    assert len(pruned) + len(complete) == 10
    assert all(t.user_attrs["steps_done"] < 200 for t in pruned)
    assert all(t.user_attrs["steps_done"] == 200 for t in complete)
    for t in complete:  # per-trial records: metrics and the run directory
        assert t.value == pytest.approx(t.user_attrs["val_macro_f1"])
        (run_dir,) = t.user_attrs["run_dirs"]
        final = json.loads((Path(run_dir) / "final.json").read_text())
        assert final["final"]["accuracy"] == pytest.approx(t.user_attrs["val_accuracy"])
    assert summary["best"]["trial"] == study.best_trial.number
    preset = Path(summary["winner"]["preset"])
    assert "optimizer.learning_rate" not in preset.read_text()
    assert f"learning_rate: {study.best_params['optimizer.learning_rate']}" in preset.read_text()


def test_a_population_round_is_pruned_against_the_rounds_before_it(sweep):
    cfg, summary, study = sweep(
        "sweep.study_name=prune_population",
        "sweep.n_trials=12",
        "sweep.population=4",
        *PRUNING,
    )
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(study.trials) == 12 and pruned
    assert all(t.number >= 4 for t in pruned)  # the first round has nothing to compare with
    assert all(t.user_attrs["steps_done"] < 200 for t in pruned)
    assert {t.user_attrs["status"] for t in pruned} == {"stopped"}
    # A member's compute is its share of its population program's wall time.
    for t in study.trials:
        final = json.loads((Path(t.user_attrs["run_dirs"][0]) / "final.json").read_text())
        assert final["trained_with"] == 4
        assert t.user_attrs["wall_time_s"] == final["wall_share_s"]
        assert t.user_attrs["train_time_s"] == final["train_time_s"]
        # Its own training time plus a quarter of the rest: never above the program's.
        assert final["train_time_s"] < final["wall_share_s"] < final["wall_time_s"]
    shares = [
        json.loads((Path(t.user_attrs["run_dirs"][0]) / "final.json").read_text())
        for t in study.trials[:4]
    ]
    # Together the shares are the program's time up to its last final.json (each share is
    # rounded to the millisecond).
    total, wall = sum(f["wall_share_s"] for f in shares), max(f["wall_time_s"] for f in shares)
    assert 0.5 * wall < total <= wall + 4 * 0.0005


def test_the_best_preset_runs_with_hubsweep_train(sweep):
    cfg, summary, study = sweep("sweep.study_name=preset", "sweep.n_trials=2")
    proc = subprocess.run(
        [
            shutil.which("hubsweep-train"),
            "--config-dir",
            str(study_dir(cfg).resolve()),
            "experiment=best",
            "--cfg",
            "job",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lr = study.best_params["optimizer.learning_rate"]
    assert f"learning_rate: {lr}" in proc.stdout


def test_failed_and_diverged_trials_keep_their_reason_and_the_sweep_finishes(sweep):
    cfg, summary, study = sweep(
        "sweep.study_name=failures",
        "sweep.sampler=grid",
        "sweep.n_trials=10",
        "sweep.params.lr.type=categorical",
        "+sweep.params.lr.choices=[0.5,1e38]",
        "+sweep.params.batch={key:trainer.batch_size,type:categorical,choices:[8,0]}",
    )
    assert len(study.trials) == 4  # the grid's size caps n_trials
    reasons = sorted(
        t.user_attrs.get("fail_reason", "") for t in study.trials if t.state == TrialState.FAIL
    )
    assert len(reasons) == 3
    assert sum("trainer.batch_size: must be a positive integer" in r for r in reasons) == 2
    assert sum(r.startswith("diverged at step") for r in reasons) == 1
    assert summary["trials"] == {"complete": 1, "fail": 3}


def test_seeds_per_trial_and_a_seeded_sampler_reproduce(sweep):
    common = [
        "sweep.n_trials=3",
        "sweep.sampler=random",
        "sweep.sampler_seed=7",
        "sweep.seeds_per_trial=2",
        "sweep.retrain_best_seeds=2",
    ]
    _, summary, first = sweep("sweep.study_name=repro_a", *common)
    _, _, second = sweep("sweep.study_name=repro_b", *common)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    for t in first.trials:
        seeds = t.user_attrs["seed_values"]
        assert len(seeds) == 2 and len(t.user_attrs["run_dirs"]) == 2
        assert t.value == pytest.approx(sum(seeds) / 2)
        assert t.user_attrs["value_std"] == pytest.approx(abs(seeds[0] - seeds[1]) / 2)
    retrain = summary["retrain"]
    assert retrain["best_trial"] == first.best_trial.number and retrain["seeds"] == 2
    accuracies = []
    for run_dir in retrain["run_dirs"]:
        final = json.loads((Path(run_dir) / "final.json").read_text())
        accuracies.append(final["test"]["accuracy"])
    assert retrain["test"]["accuracy"]["values"] == pytest.approx(accuracies)
    assert retrain["test"]["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)


def _first_draw(seed: int) -> tuple[float, float]:
    """The first config a TPE sampler seeded so draws for two unit-range parameters (a
    learning rate and a warm-up fraction, say): its startup trials are random draws."""
    study = optuna.create_study(sampler=make_sampler("tpe", (), seed, pending=False))
    trial = study.ask()
    return trial.suggest_float("lr", 0, 1), trial.suggest_float("warmup", 0, 1)


def test_a_resumed_study_or_a_second_worker_does_not_redraw_the_first_config():
    """Seeds 0 and 3 once gave a resumed study a near-copy of its trial 0 (lr and warm-up
    within 1%): MT19937 seeded with nearby integers starts with nearly equal draws."""
    assert sampler_seed(7, 0, 0) == 7  # a fresh single-worker study: the seed as given
    first = _first_draw(sampler_seed(0, 0, 0))
    others = [(0, existing) for existing in range(1, 11)] + [(i, 0) for i in (1, 2, 3)]
    seeds = {sampler_seed(0, index, existing) for index, existing in others}
    assert len(seeds) == len(others) and 0 not in seeds
    near = [
        (index, existing)
        for index, existing in others
        if all(
            abs(a - b) < 0.01
            for a, b in zip(_first_draw(sampler_seed(0, index, existing)), first, strict=True)
        )
    ]
    assert near == []


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_a_retried_trial_whose_worker_dies_again_counts_as_failed(kind, tmp_path, request):
    """A dead worker's trial is retried once; when the retry's worker dies too, it fails
    with its reason and counts, and the sweep goes on (the reason, once written after the
    trial was failed, raised UpdateFinishedTrialError and stopped a real study)."""
    if kind == "journal":
        url, heartbeat = f"journal:{tmp_path / 'study.journal'}", None
    else:
        url = request.getfixturevalue("postgres_db")
        heartbeat = Heartbeat(interval_s=1, grace_s=1, on_stale=retry_once)
    backend = open_storage(url, heartbeat=heartbeat)
    study = optuna.create_study(study_name="dies", storage=backend)

    def dies() -> optuna.trial.FrozenTrial:
        trial = study.ask()
        trial.suggest_float("lr", 0, 1)
        if heartbeat is not None:  # Optuna's beat, as hubsweep's asked trials record it
            backend.record_heartbeat(trial._trial_id)
            time.sleep(2.5)
        recover_stale_trials(study, grace_s=-1)
        return study._storage.get_trial(trial._trial_id)

    first = dies()
    assert first.state == TrialState.FAIL and FAIL_REASON not in first.user_attrs
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    second = dies()
    assert second.number == waiting.number and second.params == first.params
    assert second.state == TrialState.FAIL
    assert second.user_attrs[FAIL_REASON] == DIED_TWICE
    assert study.get_trials(states=(TrialState.WAITING,)) == []
    assert tally(study.get_trials()) == (1, 0)


@pytest.mark.parametrize("storage", ["postgresql", "journal"])
def test_three_workers_finish_exactly_n_trials(sweep, storage, request):
    extra = []
    if storage == "postgresql":
        extra.append(f"sweep.storage={request.getfixturevalue('postgres_db')}")
    cfg, summary, study = sweep(
        f"sweep.study_name=workers_{storage}",
        "sweep.workers=3",
        "sweep.n_trials=7",
        "trainer.steps=100",
        *extra,
    )
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 7
    assert tally(study.trials)[0] == 7
    assert len({t.number for t in complete}) == 7
    run_dirs = [t.user_attrs["run_dirs"][0] for t in complete]
    assert len(set(run_dirs)) == 7
    # Each worker a process of its own with its share of the cores (at least one).
    assert {t.user_attrs["threads"] for t in complete} == {max(1, usable_cores() // 3)}
    assert all((Path(d) / "final.json").is_file() for d in run_dirs)


def test_worker_threads_set_the_threads_of_each_worker(sweep):
    from hubsweep.errors import ConfigError

    cfg, _, study = sweep("sweep.study_name=threads", "sweep.workers=2", "sweep.worker_threads=1")
    # Two workers may each ask for the last trial: the later one is surplus, failed before
    # it ran, so it has no worker to describe.
    ran = [t for t in study.trials if not t.user_attrs.get(SURPLUS)]
    assert len(ran) == cfg.sweep.n_trials
    assert {t.user_attrs["threads"] for t in ran} == {1}
    with pytest.raises(ConfigError, match=r"sweep\.worker_threads: must be >= 0"):
        sweep("sweep.worker_threads=-1")


def test_one_worker_runs_in_this_process_on_every_core(sweep):
    _, _, study = sweep("sweep.study_name=one_worker")
    assert {t.user_attrs["threads"] for t in study.trials} == {usable_cores()}


def test_sqlite_with_several_workers_is_refused(sweep, tmp_path):
    from hubsweep.errors import ConfigError

    with pytest.raises(ConfigError, match="SQLite is not safe for several worker processes"):
        sweep(f"sweep.storage=sqlite:///{tmp_path}/s.db", "sweep.workers=2")


def _sweep_process(args: list[str], log: Path) -> subprocess.Popen:
    """The sweep, its stderr into `log`: a pipe nobody reads while polling the journal
    fills (64 KiB of log lines) and blocks the sweep."""
    with open(log, "w") as err:
        return subprocess.Popen(
            [shutil.which("hubsweep-sweep"), *args], stdout=subprocess.DEVNULL, stderr=err
        )


def test_a_killed_sweep_resumes_to_exactly_n_trials(fixture_overrides, tmp_path):
    args = [
        *fixture_overrides,
        f"results_dir={tmp_path / 'results'}",
        *FAST_SWEEP,
        "sweep.study_name=resume",
        "sweep.n_trials=3",
        # The string path is the slow one: long enough to be killed in the middle (with
        # 1500 steps, CI finished all 3 trials before a poll of the journal saw one running).
        "embedding.trainable=true",
        "trainer.fast_path=false",
        "trainer.steps=6000",
        "trainer.eval_every=100",
        "trainer.batch_size=8",
    ]
    journal = tmp_path / "results" / "default" / "resume" / "study.journal"
    proc = _sweep_process(args, tmp_path / "first.log")
    deadline = time.time() + 240
    killed = None
    while time.time() < deadline and killed is None and proc.poll() is None:
        time.sleep(0.5)
        if not journal.exists():
            continue
        study = optuna.load_study(study_name="resume", storage=open_storage(f"journal:{journal}"))
        states = [t.state for t in study.trials]
        running = [t for t in study.trials if t.state == TrialState.RUNNING]
        if TrialState.COMPLETE in states and running and running[0].intermediate_values:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = running[0].number
            completed_before = {
                t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE
            }
    if killed is None:
        how = f"it exited with {proc.returncode}" if proc.poll() is not None else "240 s passed"
        proc.kill()
        proc.wait()
        err = (tmp_path / "first.log").read_text()[-2000:]
        pytest.fail(f"the sweep never had a running trial after a complete one ({how}): {err}")

    again = _sweep_process(args, tmp_path / "again.log")
    again.wait(timeout=300)
    assert again.returncode == 0, (tmp_path / "again.log").read_text()[-3000:]
    study = optuna.load_study(study_name="resume", storage=open_storage(f"journal:{journal}"))
    complete = {t.number: t for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(complete) == 3
    for number, value in completed_before.items():  # nothing completed was lost or re-run
        assert complete[number].value == value
    failed = study.trials[killed]
    assert failed.state == TrialState.FAIL and "fail_reason" not in failed.user_attrs
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert retry.state == TrialState.COMPLETE and retry.params == failed.params
    assert not os.path.exists(journal.parent / "trials" / f"{retry.number:04d}" / "seed1")


def test_an_experiment_with_arms_runs_one_study_per_arm_with_the_same_budget(
    make_cfg, fixture_overrides, tmp_path
):
    args = [
        f"results_dir={tmp_path / 'results'}",
        "experiment_name=arms",
        "+arms.linear=['model=linear']",
        "+arms.mlp=['model=mlp','model.hidden_sizes=[4]']",
        *FAST_SWEEP,
        "sweep.n_trials=3",
        "sweep.sampler=random",
        "sweep.retrain_best_seeds=2",
    ]
    cfg = make_cfg(*args)
    summary = run_sweep(cfg, [*fixture_overrides, *args], COMPOSE)
    assert set(summary["arms"]) == {"linear", "mlp"}
    sampled = {}
    for arm in ("linear", "mlp"):
        directory = tmp_path / "results" / "arms" / "lr" / arm
        info = json.loads((directory / "study.json").read_text())
        assert info["arm"] == arm and info["study_name"] == f"lr-{arm}"
        assert info["command"].startswith("hubsweep-sweep ")
        study = optuna.load_study(study_name=f"lr-{arm}", storage=open_storage(info["storage"]))
        assert _states(study) == {TrialState.COMPLETE: 3}
        sampled[arm] = [t.params for t in study.trials]
        for t in study.trials:
            config = (Path(t.user_attrs["run_dirs"][0]) / "config.yaml").read_text()
            assert f"name: {arm}" in config
        assert "name: mlp" in (directory / "experiment" / "best.yaml").read_text() or arm != "mlp"
        retrain = json.loads((directory / "retrain.json").read_text())
        assert retrain["seeds"] == 2 and "test" in retrain
    assert sampled["linear"] == sampled["mlp"]  # same sampler seed: paired configs

    retrained = sorted((tmp_path / "results" / "arms" / "lr").glob("*/retrain/*/final.json"))
    stamps = [f.stat().st_mtime_ns for f in retrained]
    again = run_sweep(cfg, [*fixture_overrides, *args], COMPOSE)  # running it again resumes
    for arm in ("linear", "mlp"):
        assert again["arms"][arm]["trials"] == {"complete": 3}
    assert [f.stat().st_mtime_ns for f in retrained] == stamps  # nothing re-trained


def test_a_bad_arm_is_refused_before_any_study_starts(make_cfg, fixture_overrides, tmp_path):
    from hubsweep.errors import ConfigError

    args = [
        f"results_dir={tmp_path / 'results'}",
        "+arms.ok=['model=linear']",
        "+arms.bad=['model=transformer']",
        *FAST_SWEEP,
    ]
    cfg = make_cfg(*args)
    with pytest.raises(ConfigError, match="arms.bad: .*transformer"):
        run_sweep(cfg, [*fixture_overrides, *args], COMPOSE)
    assert not (tmp_path / "results").exists() or not list(
        (tmp_path / "results").rglob("*.journal")
    )


def test_arms_validate_their_own_configs_not_the_base(fixture_overrides, tmp_path):
    """hubsweep-sweep: a scaffold needs a trained embedding. The base config is frozen, so on
    its own it is invalid, but no trial runs it: the arm that trains passes, and the frozen
    arm is the one error, named."""
    done = subprocess.run(
        [
            shutil.which("hubsweep-sweep"),
            *fixture_overrides,
            f"results_dir={tmp_path / 'results'}",
            "dataset.scaffold_keys=[sectionName]",
            "+arms.tuned=['embedding.trainable=true']",
            "+arms.frozen=['embedding.trainable=false']",
            *FAST_SWEEP,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    (line,) = [x for x in done.stderr.splitlines() if "scaffold_keys" in x]
    assert "arms.frozen: dataset.scaffold_keys: needs embedding.trainable=true" in line
    assert not list((tmp_path / "results").rglob("*.journal"))


def test_a_tracking_callback_by_name_logs_every_trial(sweep):
    """sweep.callbacks=[mlflow]: Optuna's own MLflowCallback; one MLflow run per trial with
    its parameters and objective, read back with MLflow's client."""
    from mlflow.tracking import MlflowClient

    cfg, _, study = sweep(
        "sweep.study_name=tracked", "sweep.n_trials=3", "sweep.callbacks=[mlflow]"
    )
    client = MlflowClient(f"sqlite:///{study_dir(cfg) / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3
    logged = sorted(
        (float(r.data.params["optimizer.learning_rate"]), r.data.metrics["macro_f1"]) for r in runs
    )
    expected = sorted((t.params["optimizer.learning_rate"], t.value) for t in study.trials)
    for (lr, f1), (want_lr, want_f1) in zip(logged, expected, strict=True):
        assert lr == pytest.approx(want_lr) and f1 == pytest.approx(want_f1)


def test_an_unknown_tracking_callback_is_one_error(sweep):
    from hubsweep.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sweep.callbacks: 'neptune': one of mlflow"):
        sweep("sweep.study_name=t2", "sweep.callbacks=[neptune]")


def test_trials_leave_learning_curve_pngs_to_the_end_of_the_study(sweep):
    """A fixed cost per trial: only the best trial's PNG is drawn, when the study ends."""
    cfg, summary, study = sweep("sweep.study_name=pngs", "sweep.n_trials=3", "sweep.pruner=none")
    best = summary["winner"]["trial"]
    drawn = {
        t.number
        for t in study.trials
        if (Path(t.user_attrs["run_dirs"][0]) / "learning_curve.png").is_file()
    }
    assert drawn == {best}
    png = Path(study.trials[best].user_attrs["run_dirs"][0]) / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _judged_at_first_evaluation(pruner) -> list[bool]:
    """Trials after a finished one of 250 steps, each worse than the last at step 125."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    first = study.ask()
    first.report(0.8, 125)
    first.report(0.8, 250)
    study.tell(first, 0.8)
    pruned = []
    for i in range(12):
        trial = study.ask()
        trial.report(0.79 - 0.01 * i, 125)
        pruned.append(trial.should_prune())
        study.tell(trial, state=TrialState.PRUNED if pruned[-1] else TrialState.FAIL)
    return pruned


def test_hyperband_counts_to_the_most_steps_a_trial_can_train(make_cfg, fixture_overrides):
    # trainer.steps searched up to 500, and the first trial to finish drew 250. Left to
    # Optuna's "auto", Hyperband takes 250 as every trial's budget: one bracket, and each
    # later trial is judged at its first evaluation. Given the range's top, a second bracket
    # first judges its trials at step 300.
    from hubsweep.study.algorithms import make_pruner
    from hubsweep.study.plan import build_plans

    auto = _judged_at_first_evaluation(optuna.pruners.HyperbandPruner(min_resource=100))
    assert auto == [False] + [True] * 11
    ours = _judged_at_first_evaluation(make_pruner("hyperband", 0, 100, 25.0, 500))
    assert 3 <= ours.count(False) < 12

    for args, most in (
        (["sweep=lr_batch_steps", "sweep.params.steps.high=5000"], 5000),
        (["sweep=lr", "trainer.steps=300"], 300),
    ):
        [plan] = build_plans(make_cfg(*args), [*fixture_overrides, *args], COMPOSE)
        assert plan.max_steps == most
