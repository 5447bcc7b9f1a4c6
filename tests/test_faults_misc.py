"""Fault suite, the small ones: held-out texts that are also training texts, Optuna's
heartbeat warning on every PostgreSQL trial, an error printed twice, `None` in a table,
and Hydra's `--cfg job` on hubsweep-sweep."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess

from hubsweep.training.run import train_and_evaluate

from .conftest import SMALL_RUN, write_scicite

FAST = ["sweep.heartbeat_s=1", "sweep.grace_s=4", "sweep.pruner=none"]


def _cli(command: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which(command), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_test_texts_that_also_appear_in_train_are_counted_in_a_warning(make_cfg, tmp_path, caplog):
    release = write_scicite(tmp_path / "release", {"train": 90, "dev": 30, "test": 30})
    train = [json.loads(line) for line in (release / "train.jsonl").read_text().splitlines()]
    test = (release / "test.jsonl").read_text().splitlines()
    copies = [json.dumps({**train[i], "unique_id": f"copy{i}"}) for i in range(3)]
    (release / "test.jsonl").write_text("\n".join([*test, *copies]) + "\n")
    strings = {r["string"] for r in train}
    shared = sum(json.loads(line)["string"] in strings for line in [*test, *copies])
    assert shared >= 3
    cfg = make_cfg(
        f"dataset.source_dir={release}",
        f"dataset.data_dir={tmp_path / 'tfds'}",
        "trainer.evaluate_test=true",
    )
    with caplog.at_level(logging.WARNING):
        train_and_evaluate(cfg)
    (line,) = [r.getMessage() for r in caplog.records if "also appear" in r.getMessage()]
    assert f"{shared} of {len(test) + 3} test texts also appear in the training split" in line


def test_postgresql_sweeps_print_no_heartbeat_warning_per_trial(
    fixture_overrides, postgres_db, tmp_path
):
    proc = _cli(
        "hubsweep-sweep",
        *fixture_overrides,
        *SMALL_RUN,
        *FAST,
        "sweep=lr",
        "sweep.n_trials=2",
        f"sweep.storage={postgres_db}",
        f"results_dir={tmp_path / 'results'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Heartbeat of storage" not in proc.stderr + proc.stdout


def test_a_report_error_is_printed_once(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli("hubsweep-report", str(empty))
    assert proc.returncode != 0
    assert proc.stderr.count("no runs or studies found") == 1, proc.stderr


def test_a_study_whose_trials_all_diverged_shows_its_steps_not_none(fixture_overrides, tmp_path):
    conf = tmp_path / "conf" / "sweep"
    conf.mkdir(parents=True)
    (conf / "huge.yaml").write_text(
        "defaults:\n  - /schema/sweep/sweep@_here_\n  - _self_\nstudy_name: huge\n"
        "n_trials: 2\nsampler: grid\nparams:\n  lr: {key: optimizer.learning_rate, "
        "type: categorical, choices: [1.0e+38, 3.0e+38]}\n"
    )
    results = tmp_path / "results"
    args = [*fixture_overrides, *SMALL_RUN, *FAST, "sweep=huge", f"results_dir={results}"]
    proc = _cli("hubsweep-sweep", "-cd", str(tmp_path / "conf"), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _cli("hubsweep-report", str(results / "default")).returncode == 0
    arms = (results / "default" / "report" / "tables" / "arms.md").read_text()
    header, _, row = arms.splitlines()
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    assert cells[next(h for h in cells if h.strip() == "steps")].strip() == "60", arms
    assert "None" not in arms and "0 / 0 / 2" in arms, arms


def test_hydras_cfg_job_prints_the_sweeps_composed_config(fixture_overrides, tmp_path):
    proc = _cli("hubsweep-sweep", *fixture_overrides, "sweep=lr", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "study_name: lr" in proc.stdout and "trainer:" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # printed, nothing run
