"""hubsweep-report over fixture results: an experiment with two arms (pruned and failed
trials included), single runs, a grid, and an interrupted study."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hubsweep.results.artifacts import read_final
from hubsweep.study.compose import ComposeSpec
from hubsweep.study.driver import run_sweep
from hubsweep.study.liveness import HEARTBEAT
from hubsweep.study.storage import open_storage

from .conftest import DIM, LABELS, REPO, SMALL_RUN, write_scicite

CONF = str(REPO / "conf")
COMPOSE = ComposeSpec(CONF, (), ())
ARMS = [
    "+arms.frozen=['embedding.trainable=false']",
    "+arms.finetuned=['embedding.trainable=true']",
]
# The multirun grid: (embedding.trainable, trainer.seed) per job, in the sweep's order.
GRID = [(trainable, seed) for trainable in ("false", "true") for seed in (0, 1)]
STUDY = [
    "sweep=lr",
    "sweep.heartbeat_s=1",
    "sweep.population=1",  # 5 trials: pruned ones need trials completed before them
    "sweep.grace_s=4",
    # A grid of learning rates: tiny ones fall behind and are pruned, 1e38 diverges.
    "sweep.sampler=grid",
    "sweep.params.lr.type=categorical",
    "+sweep.params.lr.choices=[0.5,0.3,3e-5,1e-5,1e38]",
    "sweep.pruner=median",
    "sweep.pruner_startup_trials=1",
    "sweep.retrain_best_seeds=3",
]


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from hubsweep.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_module, cache_dir) -> Path:
    """results/<experiment>: a two-arm study, two single runs (same config, two seeds),
    a two-job grid, and a study left with a trial its dead worker was running. Noisy
    labels, so seeds differ."""
    from hubsweep.training.run import train_and_evaluate

    tmp = tmp_path_factory.mktemp("report")
    sizes = {"train": 120, "dev": 60, "test": 60}
    data = write_scicite(tmp / "scicite", sizes, seed=3, label_noise=0.3)
    results = tmp / "results"
    base = [
        f"dataset.source_dir={data}",
        f"dataset.data_dir={tmp / 'tfds'}",
        f"embedding.handle={tiny_module}",
        f"embedding.dim={DIM}",
        "trainer.progress=false",
        f"cache_dir={cache_dir}",
        f"results_dir={results}",
        "experiment_name=exp",
        *SMALL_RUN,
    ]
    args = [*base, *ARMS, *STUDY]
    run_sweep(_compose([*args, "output_dir=unused"]), args, COMPOSE)

    root = results / "exp"
    for seed in (0, 1):
        cfg = _compose([*base, f"output_dir={root}/runs/single{seed}", f"trainer.seed={seed}"])
        cfg.trainer.evaluate_test = True
        train_and_evaluate(cfg)
    for job, (trainable, seed) in enumerate(GRID):
        out = f"output_dir={root}/multirun/grid/{job}"
        cfg = _compose([*base, out, f"embedding.trainable={trainable}", f"trainer.seed={seed}"])
        cfg.trainer.evaluate_test = True
        train_and_evaluate(cfg)

    partial = [*base, "sweep=lr", "sweep.study_name=partial", "sweep.n_trials=2"]
    run_sweep(_compose([*partial, "output_dir=unused"]), partial, COMPOSE)
    info = json.loads((root / "partial" / "study.json").read_text())
    study = optuna.load_study(study_name="partial", storage=open_storage(info["storage"]))
    stuck = study.ask()  # a worker took this trial and was killed: no beat since
    study._storage.set_trial_system_attr(stuck._trial_id, HEARTBEAT, time.time())
    info["sweep"]["n_trials"] = 4
    info["sweep"]["grace_s"] = 1.0
    time.sleep(1.5)
    (root / "partial" / "study.json").write_text(json.dumps(info))
    return root


@pytest.fixture(scope="module")
def report(experiment) -> Path:
    exe = shutil.which("hubsweep-report")
    assert exe, "the console script is installed with the package"
    proc = subprocess.run([exe, str(experiment)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return experiment / "report"


def _study(experiment: Path, arm: str) -> optuna.Study:
    info = json.loads((experiment / "lr" / arm / "study.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=open_storage(info["storage"]))


def test_the_fixture_study_has_complete_pruned_and_failed_trials(experiment):
    for arm in ("frozen", "finetuned"):
        states = {t.state for t in _study(experiment, arm).trials}
        assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= states


def test_arm_numbers_trace_back_to_the_run_files(report, experiment):
    arms = pd.read_csv(report / "tables" / "arms.csv").set_index("arm")
    assert set(arms.index) == {"frozen", "finetuned", "partial"}
    for arm in ("frozen", "finetuned"):
        study = _study(experiment, arm)
        states = [t.state for t in study.trials]
        row = arms.loc[arm]
        assert row.complete == states.count(TrialState.COMPLETE)
        assert row.pruned == states.count(TrialState.PRUNED)
        assert row.failed == states.count(TrialState.FAIL)
        # The row is the winner's: the finalist with the best re-run mean.
        raced = study.user_attrs["finalists"]
        winner = study.trials[raced["winner"]]
        means = {f["trial"]: f["mean"] for f in raced["finalists"]}
        assert raced["winner"] == max(means, key=means.get) and len(means) >= 2
        assert row.best_trial == winner.number
        assert row.test_accuracy_std > 0  # seeds differ: the spread is measured, not zero
        assert row.best_val_macro_f1 == pytest.approx(winner.value)
        assert row.lr == pytest.approx(winner.params["optimizer.learning_rate"])
        best = int(row.best_trial)
        runs = sorted((experiment / "lr" / arm / "retrain").glob(f"trial{best:04d}-*"))
        finals = [read_final(r) for r in runs]
        assert row.seeds == len(finals) == 3
        for metric in ("accuracy", "macro_f1"):
            values = np.array([f["test"][metric] for f in finals])
            assert row[f"test_{metric}_mean"] == pytest.approx(values.mean())
            assert row[f"test_{metric}_std"] == pytest.approx(values.std(ddof=1))
            half = row[f"test_{metric}_ci95_high"] - row[f"test_{metric}_mean"]
            assert half == pytest.approx(4.302653 * values.std(ddof=1) / np.sqrt(3), rel=1e-5)
        for name in LABELS:
            f1 = np.mean([f["test"]["per_class"][name]["f1"] for f in finals])
            assert row[f"test_f1_{name}_mean"] == pytest.approx(f1)
        walls = [
            t.user_attrs["wall_time_s"] - t.user_attrs["cache_build_s"]
            for t in study.trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        ]
        assert row.time_per_trial_s == pytest.approx(np.mean(walls))


def test_markdown_latex_and_top_trials_agree_with_the_csv(report, experiment):
    arms = pd.read_csv(report / "tables" / "arms.csv").set_index("arm")
    markdown = (report / "tables" / "arms.md").read_text()
    latex = (report / "tables" / "arms.tex").read_text()
    for arm in ("frozen", "finetuned"):
        mean, std = arms.loc[arm, "test_accuracy_mean"], arms.loc[arm, "test_accuracy_std"]
        assert f"{mean:.4f} ± {std:.4f}" in markdown
        assert f"{mean:.4f} $\\pm$ {std:.4f}" in latex
    top = pd.read_csv(report / "tables" / "top_trials.csv")
    for arm in ("frozen", "finetuned"):
        study = _study(experiment, arm)
        complete = sorted(
            (t for t in study.trials if t.state == TrialState.COMPLETE),
            key=lambda t: -t.value,
        )
        mine = top[top.arm == arm]
        assert list(mine.trial) == [t.number for t in complete][:10]
        assert list(mine.value) == pytest.approx([t.value for t in complete][:10])
    trials = pd.read_csv(report / "tables" / "trials.csv")
    failed = trials[trials.state == "fail"]
    assert len(failed) and failed.fail_reason.str.startswith("diverged at step").all()


def test_cost_traces_back_to_the_trials_and_the_verdict_states_the_ratio(report, experiment):
    cost = pd.read_csv(report / "tables" / "cost.csv").set_index("arm")
    for arm in ("frozen", "finetuned"):
        study = _study(experiment, arm)
        finished = [
            t
            for t in study.trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and "fail_reason" in t.user_attrs)
        ]
        walls = [t.user_attrs["wall_time_s"] for t in finished]
        assert cost.loc[arm, "trials"] == len(finished) == 5
        assert cost.loc[arm, "search_s"] == pytest.approx(sum(walls))
        builds = [t.user_attrs["cache_build_s"] for t in finished]
        assert cost.loc[arm, "cache_build_s"] == pytest.approx(sum(builds))
        per_trial = np.mean(np.subtract(walls, builds))
        assert cost.loc[arm, "wall_s_per_trial"] == pytest.approx(per_trial)
        trains = [t.user_attrs["train_time_s"] for t in finished]
        assert cost.loc[arm, "train_s_per_trial"] == pytest.approx(np.mean(trains))
        assert 0 < cost.loc[arm, "train_s_per_trial"] < cost.loc[arm, "wall_s_per_trial"]
        raced = study.user_attrs["finalists"]["finalists"]
        assert cost.loc[arm, "finalists_s"] == pytest.approx(sum(f["wall_s"] for f in raced))
        winner = study.user_attrs["finalists"]["winner"]
        reruns = sorted((experiment / "lr" / arm / "retrain").glob(f"trial{winner:04d}-*"))
        retrain = sum(read_final(r)["wall_share_s"] for r in reruns)
        assert retrain == pytest.approx(sum(read_final(r)["wall_time_s"] for r in reruns))
        assert cost.loc[arm, "retrain_s"] == pytest.approx(retrain)
        assert cost.loc[arm, "test_macro_f1_mean"] == pytest.approx(
            np.mean([read_final(r)["test"]["macro_f1"] for r in reruns])
        )
    ratio = cost.loc["finetuned", "wall_s_per_trial"] / cost.loc["frozen", "wall_s_per_trial"]
    text = (report / "report.md").read_text()
    assert f"finetuned at {ratio:.2g}× frozen's compute per trial" in text
    assert "## Quality against compute" in text
    # On the front: the cheaper arm always; the dearer one only if it scores better.
    cheap, dear = ("frozen", "finetuned") if ratio > 1 else ("finetuned", "frozen")
    assert cost.loc[cheap, "pareto"]
    better = cost.loc[dear, "test_macro_f1_mean"] > cost.loc[cheap, "test_macro_f1_mean"]
    assert cost.loc[dear, "pareto"] == better


def test_a_one_arm_report_says_what_its_answer_cost(report, experiment, tmp_path):
    """A study reported alone still gets its cost (no front or plot of one point): the same
    numbers as in the two-arm report, and the total in minutes in a sentence."""
    proc = subprocess.run(
        [
            shutil.which("hubsweep-report"),
            str(experiment / "lr" / "frozen"),
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    alone = pd.read_csv(tmp_path / "tables" / "cost.csv")
    both = pd.read_csv(report / "tables" / "cost.csv").set_index("arm")
    assert list(alone.arm) == ["frozen"] and "pareto" not in alone
    for column in alone.columns.drop("arm"):
        assert alone.loc[0, column] == pytest.approx(both.loc["frozen", column])
    text = (tmp_path / "report.md").read_text()
    assert "## Compute" in text and "Pareto" not in text
    total, search = alone.loc[0, "total_s"] / 60, alone.loc[0, "search_s"] / 60
    assert f"{total:.1f} min in all (the search {search:.1f}," in text


def test_the_report_says_how_the_arms_budgets_differ(report, experiment):
    from hubsweep.reports import cost
    from hubsweep.reports.collect import read_study

    # The fixture's "partial" study searched another space with another budget: said.
    text = (report / "report.md").read_text()
    assert "The arms' budgets differ: partial: 4 trials of the `partial` space" in text
    assert (
        "frozen, finetuned: 5 trials of the `lr` space (optimizer.learning_rate; grid "
        "sampler, median pruner), 3 finalists × 3 seeds, the winner re-run over 3 seeds"
    ) in text
    per_trial = pd.read_csv(report / "tables" / "cost.csv").set_index("arm")["wall_s_per_trial"]
    dear = per_trial.idxmax()
    assert f"s ({dear}), {per_trial.max() / per_trial.min():.3g}× apart" in text
    # The two arms alone had one budget.
    studies = [read_study(experiment / "lr" / arm) for arm in ("frozen", "finetuned")]
    costs = cost.arm_costs(studies)
    same = cost.budget_sentence(studies, costs)
    assert same.startswith("Every arm had the same budget: 5 trials of the `lr` space")
    studies[1].info["sweep"] = {
        **studies[1].sweep,
        "n_trials": 16,
        "study_name": "finetune",
        "pruner": "hyperband",
        "finalists": 1,
    }
    sentence = cost.budget_sentence(studies, costs)
    assert "hyperband pruner), no finalists' race, the winner re-run over 3 seeds" in sentence
    assert sentence.startswith("The arms' budgets differ: frozen: 5 trials of the `lr` space")
    assert "finetuned: 16 trials of the `finetune` space" in sentence
    assert "hyperband pruner" in sentence


def test_runs_and_grids_are_tabulated_with_seeds_pooled(report, experiment):
    runs = pd.read_csv(report / "tables" / "runs.csv")
    single = runs[runs.group == "runs"]
    assert len(single) == 1 and single.iloc[0].runs == 2  # two seeds of one config
    accuracies = [
        read_final(experiment / "runs" / f"single{s}")["test"]["accuracy"] for s in (0, 1)
    ]
    assert single.iloc[0].test_accuracy_mean == pytest.approx(np.mean(accuracies))
    grid = runs[runs.group == "multirun/grid"]
    assert sorted(grid["embedding.trainable"]) == [False, True]
    for trainable in (False, True):
        finals = [
            read_final(experiment / "multirun" / "grid" / str(job))
            for job, (t, _) in enumerate(GRID)
            if t == str(trainable).lower()
        ]
        row = grid[grid["embedding.trainable"] == trainable].iloc[0]
        assert row.runs == 2
        assert row.val_macro_f1_mean == pytest.approx(
            np.mean([f["final"]["macro_f1"] for f in finals])
        )


def test_every_run_is_listed_by_seed_with_the_scores_its_final_json_holds(report, experiment):
    scores = pd.read_csv(report / "tables" / "run_scores.csv")
    grid = scores[scores.group == "multirun/grid"]
    assert len(grid) == len(GRID) and sorted(grid.seed) == sorted(s for _, s in GRID)
    for job, (trainable, seed) in enumerate(GRID):
        final = read_final(experiment / "multirun" / "grid" / str(job))
        row = grid[(grid.seed == seed) & (grid["embedding.trainable"] == (trainable == "true"))]
        assert len(row) == 1
        assert row.iloc[0].test_macro_f1 == pytest.approx(final["test"]["macro_f1"])
        assert row.iloc[0].val_accuracy == pytest.approx(final["final"]["accuracy"])
        assert row.iloc[0].status == final["status"]
        assert row.iloc[0].directory.endswith(f"multirun/grid/{job}")
    single = scores[scores.group == "runs"]
    assert sorted(single.seed) == [0, 1]
    # The runs table's means are these rows'.
    runs = pd.read_csv(report / "tables" / "runs.csv").set_index("group")
    assert runs.loc["runs", "test_accuracy_mean"] == pytest.approx(single.test_accuracy.mean())
    assert "`tables/run_scores.csv`" in (report / "report.md").read_text()


def test_configs_of_several_groups_are_labelled_by_the_settings_that_differ(report, experiment):
    # The single runs (trainable false by default) are the grid's trainable=false config
    # run again: the two share a label and so get their group's name; the grid's other
    # config is told apart by its setting alone, not by its directory.
    from hubsweep.reports.collect import collect
    from hubsweep.reports.document import _config_labels

    groups = collect(experiment).groups
    assert {g.name for g in groups} == {"runs", "multirun/grid"}
    labels = _config_labels(groups)
    assert sorted(labels) == [
        "multirun/grid: trainable=False",
        "runs: trainable=False",
        "trainable=True",
    ]
    assert [r.setting("embedding.trainable") for r in labels["trainable=True"]] == [True] * 2
    runs = pd.read_csv(report / "tables" / "runs.csv")
    assert list(runs.loc[runs.group == "runs", "embedding.trainable"]) == [False]


def test_a_grids_configs_are_compared_paired_by_seed(report, experiment):
    # The grid runs both configs on seeds 0 and 1: the report pairs them by seed, the
    # config ahead first, as a study's arms are paired.
    test_f1 = {
        GRID[job]: read_final(experiment / "multirun" / "grid" / str(job))["test"]["macro_f1"]
        for job in range(len(GRID))
    }
    diff = np.mean([test_f1[("true", seed)] - test_f1[("false", seed)] for seed in (0, 1)])
    ahead, behind = ("True", "False") if diff >= 0 else ("False", "True")
    pairs = pd.read_csv(report / "tables" / "paired_configs.csv")
    assert list(pairs.group) == ["multirun/grid"]  # the single runs share no setting to vary
    row = pairs.iloc[0]
    assert row.comparison == f"trainable={ahead} − trainable={behind}"
    assert row.seeds == 2
    assert float(row["mean difference"]) == pytest.approx(abs(diff), abs=1e-4)
    text = (report / "report.md").read_text()
    assert "### Paired comparison of configs" in text
    assert f"multirun/grid: trainable={ahead} − trainable={behind}: {100 * abs(diff):+.2f}" in text


def test_unfinished_studies_are_reported_as_such(report):
    text = (report / "report.md").read_text()
    assert "crashed: 2 of 4 trials finished, 1 left running by a stopped worker" in text
    assert "finished: 5 of 5 trials" in text  # the grid caps n_trials at its size
    arms = pd.read_csv(report / "tables" / "arms.csv").set_index("arm")
    assert arms.loc["partial", "running"] == 1 and arms.loc["partial", "seeds"] == 0


def test_every_plot_is_written_and_linked(report):
    text = (report / "report.md").read_text()
    expected = [
        "test_scores",
        "learning_curves",
        "history",
        "importances",
        "lr_vs_score",
        "confusion",
        "quality_vs_compute",
    ]
    for name in expected:
        path = report / "plots" / f"{name}.png"
        assert path.stat().st_size > 10_000, name
        assert f"](plots/{name}.png)" in text
    from matplotlib.image import imread

    image = imread(report / "plots" / "confusion.png")
    assert image.std() > 0.05  # not a blank canvas
    assert "optuna-dashboard " in text and "hubsweep-sweep " in text
    assert "experiment=best trainer.seed=" in text


def test_bad_paths_are_one_clear_error(tmp_path):
    exe = shutil.which("hubsweep-report")
    proc = subprocess.run([exe, str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode == 1 and "no such results directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([exe, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "no runs or studies found" in proc.stderr


def test_optuna_dashboard_opens_a_study_journal_as_it_is(experiment):
    import socket
    import urllib.request

    exe = shutil.which("optuna-dashboard")
    assert exe, "optuna-dashboard comes with the dev extra"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    journal = experiment / "lr" / "frozen" / "study.journal"
    server = subprocess.Popen(
        [exe, str(journal), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
                    summaries = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                assert time.time() < deadline, "optuna-dashboard did not answer"
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert [s["study_name"] for s in summaries] == ["lr-frozen"]


def test_long_bar_labels_break_after_a_setting_s_equals_sign():
    from hubsweep.reports.plots import wrap_label

    assert wrap_label("scaffold_keys=[sectionName]") == "scaffold_keys=\n[sectionName]"
    assert wrap_label("trainer.class_weight=balanced").split("\n") == [
        "trainer.class_weight=",
        "balanced",
    ]
    assert wrap_label("minilm top2") == "minilm top2"  # short labels stay on one line
    long = "dataset.prefix_keys=[sectionName,isKeyCitation]"
    assert wrap_label(long).replace("\n", "") == long  # nothing lost


def test_markdown_tables_keep_formatted_text_and_align_numbers_right(tmp_path):
    import pandas as pd

    from hubsweep.reports.markdown import write_table

    text = pd.DataFrame(
        {"comparison": ["a − b"], "mean difference": ["+0.0030"], "runs": [3], "p": [0.5]}
    )
    markdown = write_table(text, text, tmp_path, "t")
    header, rule, row = markdown.splitlines()
    assert "+0.0030" in row  # tabulate would print 0.003: no sign, one digit fewer
    sides = ["left" if cell.startswith(":") else "right" for cell in rule.split("|")[1:-1]]
    assert sides == ["left", "right", "right", "right"]


def test_the_report_shows_the_commands_that_made_its_runs_and_they_make_them_again(
    tmp_path, fixture_overrides
):
    """Runs made by hubsweep-train, a grid (-m) and a single run: the report's Reproduce
    section gives each command line from Hydra's own record, and the grid's line, run
    again elsewhere, makes the same runs."""
    exe = shutil.which("hubsweep-train")
    grid = [*fixture_overrides, *SMALL_RUN, "trainer.evaluate_test=true"]
    grid += ["experiment_name=made", "trainer.seed=0,1", "dataset.prefix_keys=[sectionName],[]"]

    def run(args: list[str], results: Path) -> None:
        proc = subprocess.run(
            [exe, *args, f"results_dir={results}"], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    run(["-m", *grid], tmp_path / "first")
    # An interpolation stays as typed; a run whose Hydra record was cut short shows none.
    single = [*fixture_overrides, *SMALL_RUN, "experiment_name=made"]
    run([*single, "trainer.eval_every=${trainer.steps}"], tmp_path / "first")
    run([*single, "trainer.seed=1"], tmp_path / "first")
    (cut,) = [
        d
        for d in (tmp_path / "first" / "made" / "runs").iterdir()
        if "seed=1" in (d / ".hydra" / "overrides.yaml").read_text()
    ]
    hydra_yaml = cut / ".hydra" / "hydra.yaml"
    hydra_yaml.write_text(hydra_yaml.read_text()[:200] + "\n  - [unclosed")
    report = tmp_path / "first" / "made" / "report"
    proc = subprocess.run(
        [shutil.which("hubsweep-report"), str(report.parent)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (report / "report.md").read_text()
    blocks = re.findall(r"The runs of `([^`]+)`:\n\n```bash\n(.*?)\n```", text, re.S)
    assert [name.split("/")[0] for name, _ in blocks] == ["multirun", "runs"]
    (grid_line,) = blocks[0][1].splitlines()
    assert grid_line.startswith("hubsweep-train -m ")
    assert "'dataset.prefix_keys=[sectionName],[]'" in grid_line and "trainer.seed=0,1" in grid_line
    (single_line,) = blocks[1][1].splitlines()
    assert single_line.startswith("hubsweep-train dataset.source_dir=")
    assert single_line.endswith(
        "'trainer.eval_every=${trainer.steps}' " + f"results_dir={tmp_path / 'first'}"
    )

    args = shlex.split(grid_line)[1:]  # as a user would paste it, with results elsewhere
    assert [a for a in args if a.startswith("results_dir=")] == [
        f"results_dir={tmp_path / 'first'}"
    ]
    run([a for a in args if not a.startswith("results_dir=")], tmp_path / "again")
    scores = {}
    for results in ("first", "again"):
        (made,) = (tmp_path / results / "made" / "multirun").iterdir()
        scores[results] = [read_final(made / str(job))["test"]["macro_f1"] for job in range(4)]
    assert scores["again"] == scores["first"]
