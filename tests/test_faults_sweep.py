"""Fault suite, sweeps: a study refuses a changed question, environment failures do not eat
the budget, search-space mistakes are one error, Hydra's -cd works."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hubsweep.errors import ConfigError
from hubsweep.study.driver import FINGERPRINT_ATTR, QUESTION_ATTR
from hubsweep.study.space import parse_space
from hubsweep.study.storage import open_storage

FAST = [
    "sweep=lr",
    "sweep.heartbeat_s=1",
    "sweep.grace_s=4",
    "sweep.pruner=none",
    "trainer.steps=40",
    "trainer.eval_every=20",
    "trainer.batch_size=8",
]


def _sweep(*args: str, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("hubsweep-sweep"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def _last_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def _study(directory: Path, name: str) -> optuna.Study:
    url = f"journal:{directory / 'study.journal'}"
    return optuna.load_study(study_name=name, storage=open_storage(url, create=False))


@pytest.fixture
def base(fixture_overrides, tmp_path) -> list[str]:
    return [*fixture_overrides, f"results_dir={tmp_path / 'results'}", *FAST]


def test_a_study_name_asked_another_question_is_refused(base, tmp_path):
    first = _sweep(*base, "sweep.study_name=q", "sweep.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    directory = tmp_path / "results" / "default" / "q"
    info_before = (directory / "study.json").read_text()

    line = _last_line(_sweep(*base, "sweep.study_name=q", "sweep.n_trials=2", "sweep.metric=loss"))
    assert "different question" in line and "metric" in line and "direction" in line
    assert "'maximize' → 'minimize'" in line and "new sweep.study_name" in line
    line = _last_line(_sweep(*base, "sweep.study_name=q", "sweep.params.lr.high=0.5"))
    assert "params.lr.high: 1.0 → 0.5" in line
    line = _last_line(_sweep(*base, "sweep.study_name=q", "model=mlp"))
    assert "config.model" in line
    assert (directory / "study.json").read_text() == info_before
    study = _study(directory, "q")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(study.trials) == 2

    # The same question with a bigger budget resumes it.
    again = _sweep(*base, "sweep.study_name=q", "sweep.n_trials=3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_study(directory, "q").trials) == 3


def test_a_study_recorded_before_a_setting_existed_resumes_at_its_default(base, tmp_path):
    first = _sweep(*base, "sweep.study_name=old", "sweep.n_trials=1")
    assert first.returncode == 0, first.stderr[-3000:]
    directory = tmp_path / "results" / "default" / "old"
    # As an earlier release recorded it: no dataset.prefix_keys / text_separator yet.
    study = _study(directory, "old")
    question = study.user_attrs[QUESTION_ATTR]
    for key in ("prefix_keys", "text_separator"):
        del question["config"]["dataset"][key]
    study.set_user_attr(QUESTION_ATTR, question)
    study.set_user_attr(FINGERPRINT_ATTR, "recorded-by-an-earlier-release")

    # With the new setting away from its default, it is another question, named.
    line = _last_line(
        _sweep(
            *base, "sweep.study_name=old", "sweep.n_trials=2", "dataset.prefix_keys=[sectionName]"
        )
    )
    assert "different question" in line and "config.dataset.prefix_keys: '<unset>'" in line
    # At its default it is the same question: resumed, and recorded with the new settings.
    again = _sweep(*base, "sweep.study_name=old", "sweep.n_trials=2")
    assert again.returncode == 0, again.stderr[-3000:]
    study = _study(directory, "old")
    assert len(study.trials) == 2
    assert study.user_attrs[QUESTION_ATTR]["config"]["dataset"]["prefix_keys"] == []
    assert study.user_attrs[FINGERPRINT_ATTR] != "recorded-by-an-earlier-release"


# One trial at a time follows the same rule as a round of three: `-m slow` runs it (CI time).
@pytest.mark.parametrize("population", [pytest.param(1, marks=pytest.mark.slow), 3])
def test_environment_failures_do_not_count_and_stop_the_sweep(base, tmp_path, population):
    """A population round's trials fail together: the sweep stops after the round."""
    directory = tmp_path / "results" / "default" / "env"
    directory.mkdir(parents=True)
    (directory / "trials").write_text("a file where the trial directories should go")
    args = [
        *base,
        "sweep.study_name=env",
        "sweep.n_trials=3",
        "sweep.max_environment_failures=2",
        f"sweep.population={population}",
    ]
    failed = max(2, population)
    line = _last_line(_sweep(*args))
    assert f"{failed} trials in a row failed for a reason outside their sampled values" in line
    assert "cannot write" in line and "run the same command" in line
    study = _study(directory, "env")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * failed
    assert all("environment_failure" in t.user_attrs for t in study.trials)

    (directory / "trials").unlink()  # the fix; the same command now completes the budget
    again = _sweep(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    states = [t.state for t in _study(directory, "env").trials]
    assert states.count(TrialState.COMPLETE) == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"key": "a.b", "type": "float", "low": "abc", "high": 1}, r"p.low: 'abc' is not a number"),
        ({"key": "a.b", "type": "categorical", "choices": [3]}, r"p.choices: \[3\] offers fewer"),
        (
            {"key": "a.b", "type": "categorical", "choices": [3, 3]},
            r"p.choices: \[3, 3\] offers fewer",
        ),
        (
            {"key": "a.b", "type": "int", "low": 1, "high": 9, "step": 0},
            r"p.step: must be positive",
        ),
        (
            {"key": "a.b", "type": "float", "low": 0, "high": 1, "step": -0.1},
            r"p.step: must be posi",
        ),
        ({"key": "a.b", "type": "int", "low": 1.5, "high": 9}, r"p.low: 1.5 is not an integer"),
        ({"key": "a.b", "type": "float", "low": 0, "high": 1, "lgo": True}, r"p: unknown field"),
        ({"key": "a.b", "type": "float", "low": 0, "high": 1, "log": True}, r"p.low: a log-scale"),
    ],
)
def test_search_space_mistakes_name_the_parameter(spec, message):
    with pytest.raises(ConfigError, match=rf"sweep\.params\.{message}"):
        parse_space({"p": spec})


def _user_conf(tmp_path: Path, sweep_yaml: str) -> Path:
    conf = tmp_path / "myconf"
    (conf / "sweep").mkdir(parents=True)
    (conf / "sweep" / "mine.yaml").write_text(sweep_yaml)
    return conf


def test_unknown_keys_in_a_users_own_sweep_file_are_one_error(base, tmp_path):
    conf = _user_conf(
        tmp_path,
        "study_name: mine\nn_trails: 5\nparams:\n  lr: {key: optimizer.learning_rate, "
        "type: float, low: 0.01, high: 1.0, log: true}\n",
    )
    # Without the schema, Hydra itself refuses sweep.* overrides of keys the file lacks.
    args = [a for a in base if not a.startswith("sweep")]
    line = _last_line(_sweep("-cd", str(conf), *args, "sweep=mine"))
    assert "sweep.n_trails" in line and "sweep=mine" in line


def test_hydra_config_dir_option_works_like_hydras_cli(base, tmp_path):
    conf = _user_conf(
        tmp_path,
        "defaults:\n  - /schema/sweep/sweep@_here_\n  - _self_\nstudy_name: mine\n"
        "n_trials: 2\nparams:\n  bs: {key: trainer.batch_size, type: categorical, "
        "choices: [4, 8]}\n",
    )
    (conf / "experiment").mkdir()
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nexperiment_name: from_my_dir\ntrainer:\n  eval_batch_size: 7\n"
    )
    args = [a for a in base if a != "sweep=lr"]
    proc = _sweep("-cd", str(conf), *args, "sweep=mine", "experiment=mine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    directory = tmp_path / "results" / "from_my_dir" / "mine"
    study = _study(directory, "mine")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    run = Path(study.trials[0].user_attrs["run_dirs"][0])
    assert "eval_batch_size: 7" in (run / "config.yaml").read_text()  # the trials' too


def test_the_reproduce_commands_of_a_study_from_a_users_config_dir_run_as_printed(base, tmp_path):
    import json
    import re
    import shlex

    conf = _user_conf(
        tmp_path,
        "defaults:\n  - /schema/sweep/sweep@_here_\n  - _self_\nstudy_name: div\n"
        "n_trials: 2\nretrain_best_seeds: 1\nparams:\n  bs: {key: trainer.batch_size, "
        "type: categorical, choices: [4, 8]}\n",
    )
    args = [a for a in base if a != "sweep=lr"]
    first = _sweep("-cd", str(conf), *args, "sweep=mine", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    directory = tmp_path / "results" / "default" / "div"
    info = json.loads((directory / "study.json").read_text())
    assert info["config_dirs"] == [f"file://{conf}"]
    report = subprocess.run(
        [shutil.which("hubsweep-report"), str(tmp_path / "results" / "default")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "results" / "default" / "report" / "report.md").read_text()
    section = text.split("## Reproduce", 1)[1]
    commands = re.findall(r"^(hubsweep-(?:sweep|train) .*?)(?:   # .*)?$", section, re.M)
    assert {c.split()[0] for c in commands} == {"hubsweep-sweep", "hubsweep-train"}
    assert info["command"] in commands
    for command in commands:
        argv = shlex.split(command)
        done = subprocess.run(
            [shutil.which(argv[0]), *argv[1:]], capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"


def test_a_sweep_without_a_search_space_is_one_error_listing_them(tmp_path):
    """hubsweep-sweep alone: the study directory is named after its space, and there is none."""
    line = _last_line(_sweep(f"results_dir={tmp_path}", cwd=tmp_path))
    assert line.startswith("hubsweep-sweep: error: sweep: no search space chosen")
    assert "finetune, lr, lr_batch_steps" in line
    assert not list(tmp_path.iterdir())  # nothing written
