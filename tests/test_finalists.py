"""Finalists raced on new seeds: a constructed study whose single-seed best is a lucky draw.

The search's scores are told by construction (the worse config drew a lucky 0.99); the
finalists' re-runs are real training on the fixture, where a learning rate of 0.5 learns
the classes in 60 steps and 1e-5 does not. The race must pick 0.5."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import create_trial

from hubsweep.reports.document import build_report
from hubsweep.results.layout import FINALISTS_FILE, RETRAIN_FILE
from hubsweep.study.compose import ComposeSpec
from hubsweep.study.driver import finish_study, open_study
from hubsweep.study.finalists import FINALISTS_ATTR, race, top_distinct
from hubsweep.study.plan import build_plans

from .conftest import REPO, SMALL_RUN

CONF = str(REPO / "conf")
LR = "optimizer.learning_rate"
SPACE = [
    "sweep=lr",
    "sweep.params.lr.type=categorical",
    "+sweep.params.lr.choices=[0.5,0.05,1e-5]",
    "sweep.finalists=2",
    "sweep.finalist_seeds=2",
    "sweep.retrain_best_seeds=2",
]
DIST = {LR: CategoricalDistribution([0.5, 0.05, 1e-5])}


@pytest.fixture
def lucky_study(make_cfg, fixture_overrides, tmp_path):
    """A plan and its study: trial 0 (lr 1e-5) told a lucky 0.99, trial 1 (lr 0.5) 0.80,
    trial 2 (lr 1e-5 again, a requeued copy) 0.50, trial 3 (lr 0.05) 0.40."""
    args = [f"results_dir={tmp_path / 'results'}", *SMALL_RUN, *SPACE]
    cfg = make_cfg(*args)
    [plan] = build_plans(cfg, [*fixture_overrides, *args], ComposeSpec(CONF, (), ()))
    study = open_study(plan)
    for lr, value in ((1e-5, 0.99), (0.5, 0.80), (1e-5, 0.50), (0.05, 0.40)):
        study.add_trial(create_trial(params={LR: lr}, distributions=DIST, value=value))
    return plan, study


def test_top_distinct_counts_a_repeated_config_once():
    trials = [
        create_trial(params={LR: lr}, distributions=DIST, value=v)
        for lr, v in ((1e-5, 0.99), (0.5, 0.8), (1e-5, 0.5), (0.05, 0.4))
    ]
    assert [t.params[LR] for t in top_distinct(trials, 3, minimize=False)] == [1e-5, 0.5, 0.05]
    assert [t.params[LR] for t in top_distinct(trials, 2, minimize=True)] == [0.05, 1e-5]


def test_the_finalists_pick_the_truly_better_config_over_a_lucky_draw(lucky_study):
    plan, study = lucky_study
    summary = finish_study(plan, 0.0)
    raced = summary["finalists"]
    assert [f["trial"] for f in raced["finalists"]] == [0, 1]  # two distinct, search order
    assert raced["winner"] == 1 and not raced["ranking_held"]
    lucky, better = raced["finalists"]
    assert better["mean"] > lucky["mean"] + 0.2  # the re-runs tell them apart
    # The search's score of the winner against its re-runs: +0.80 - mean.
    assert raced["winners_curse"] == pytest.approx(0.80 - better["mean"])
    # New seeds (after the search's one), validation only, trained as one population.
    assert raced["seeds"] == [1, 2]
    for f in raced["finalists"]:
        for run_dir in f["run_dirs"]:
            final = json.loads((Path(run_dir) / "final.json").read_text())
            assert final["test"] is None and final["trained_with"] == 4
    assert summary["winner"]["trial"] == 1
    # Only the winner is re-run with test, and its preset is the one written.
    retrain = json.loads((Path(plan.directory) / RETRAIN_FILE).read_text())
    assert retrain["best_trial"] == 1 and retrain["statuses"] == ["completed"] * 2
    # ... on seeds after the search's (0) and the finalists' (1, 2): fresh draws.
    assert [Path(d).name for d in retrain["run_dirs"]] == ["trial0001-seed3", "trial0001-seed4"]
    assert "learning_rate: 0.5" in Path(summary["winner"]["preset"]).read_text()
    assert json.loads((Path(plan.directory) / FINALISTS_FILE).read_text()) == raced

    # The report says the ranking did not hold, with the finalists' table and the curse.
    report = build_report(Path(plan.directory)).read_text()
    assert "The search's ranking did not hold: trial 1 (search rank 2)" in report
    assert "Winner's curse: the winner's search score 0.8000" in report
    assert "winner (finalists' race): trial 1" in report
    [row] = [line for line in report.splitlines() if "**winner**" in line]
    assert row.split("|")[1].strip() == "1"  # trial 1's row of the finalists' table


def test_an_unraced_winner_is_re_run_on_seeds_after_the_searchs(
    make_cfg, fixture_overrides, tmp_path
):
    # sweep.finalists=1: the search's best wins unraced. Its re-runs with test start after
    # the search's seed 0 (before: at it, training the draw that won on its luck again and
    # averaging its test score in). A summary stored with the old seeds is not taken as done.
    from hubsweep.reports.collect import read_study
    from hubsweep.results.artifacts import read_run
    from hubsweep.study.retrain import RETRAIN_ATTR

    args = [f"results_dir={tmp_path / 'results'}", *SMALL_RUN, *SPACE, "sweep.finalists=1"]
    cfg = make_cfg(*args)
    [plan] = build_plans(cfg, [*fixture_overrides, *args], ComposeSpec(CONF, (), ()))
    study = open_study(plan)
    study.add_trial(create_trial(params={LR: 0.5}, distributions=DIST, value=0.8))
    stale = {"best_trial": 0, "seeds": 2, "statuses": ["completed"] * 2}
    study.set_user_attr(RETRAIN_ATTR, stale)
    retrain = finish_study(plan, 0.0)["retrain"]
    assert [Path(d).name for d in retrain["run_dirs"]] == ["trial0000-seed1", "trial0000-seed2"]
    seeds = [read_run(Path(d)).setting("trainer.seed") for d in retrain["run_dirs"]]
    assert seeds == [cfg.trainer.seed + 1, cfg.trainer.seed + 2]
    assert retrain["first_seed"] == 1
    # A re-run of the old seed 0 left in the directory is not one of the study's re-runs.
    shutil.copytree(
        retrain["run_dirs"][0], Path(retrain["run_dirs"][0]).with_name("trial0000-seed0")
    )
    found = read_study(Path(plan.directory))
    assert [r.directory.name for r in found.retrain] == ["trial0000-seed1", "trial0000-seed2"]


def test_a_finished_race_is_not_run_again_and_an_interrupted_one_resumes(lucky_study):
    plan, study = lucky_study
    first = race(plan, study)
    runs = [Path(d) for f in first["finalists"] for d in f["run_dirs"]]
    stamps = {d: (d / "final.json").stat().st_mtime_ns for d in runs}
    assert race(plan, study) == first  # stored: nothing trains
    assert {d: (d / "final.json").stat().st_mtime_ns for d in runs} == stamps
    # Killed mid-race: no summary stored, one run without final.json.
    study.set_user_attr(FINALISTS_ATTR, None)
    (runs[0] / "final.json").unlink()
    again = race(plan, study)
    assert again["winner"] == first["winner"]
    assert list(runs[0].parent.glob(f".{runs[0].name}.attempt1"))  # set aside, kept
    assert all((d / "final.json").stat().st_mtime_ns == stamps[d] for d in runs[1:])


def test_one_finalist_is_todays_behaviour(lucky_study):
    plan, study = lucky_study
    plan = replace(plan, settings=replace(plan.settings, finalists=1, retrain_best_seeds=0))
    summary = finish_study(plan, 0.0)
    assert summary["finalists"] == {"winner": 0, "raced": False}
    assert summary["winner"]["trial"] == 0
    assert not (Path(plan.directory) / "finalists").exists()
    assert (
        optuna.load_study(study_name=plan.name, storage=study._storage).user_attrs.get(
            FINALISTS_ATTR
        )
        is None
    )


def test_a_finalist_whose_re_runs_diverged_cannot_win_on_its_one_good_seed(lucky_study):
    import pandas as pd

    from hubsweep.results.artifacts import RunFiles
    from hubsweep.study.finalists import summarize

    plan, study = lucky_study
    finalists = top_distinct(study.trials, 2, minimize=False)

    def run(status: str, score: float) -> RunFiles:
        final = {"status": status, "final": {"macro_f1": score}}
        return RunFiles(Path("/x"), {}, final, pd.DataFrame())

    runs = {
        finalists[0].number: [run("completed", 0.95), run("diverged", 0.0), run("diverged", 0.0)],
        finalists[1].number: [
            run("completed", 0.70),
            run("completed", 0.72),
            run("completed", 0.7),
        ],
    }
    summary = summarize(plan, finalists, runs, minimize=False)
    assert summary["winner"] == finalists[1].number
    assert summary["finalists"][0]["values"] == [0.95]  # its one completed re-run, shown


def test_the_report_ignores_a_race_of_other_top_configs(lucky_study):
    from hubsweep.reports.collect import read_study

    plan, study = lucky_study
    finish_study(replace(plan, settings=replace(plan.settings, retrain_best_seeds=0)), 0.0)
    assert read_study(Path(plan.directory)).winner.number == 1
    # A resume adds a trial that enters the top two: the stored race is of other configs.
    study.add_trial(create_trial(params={LR: 0.05}, distributions=DIST, value=0.9))
    again = read_study(Path(plan.directory))
    assert again.raced == {} and again.winner.number == 0  # the search's best, until re-raced
