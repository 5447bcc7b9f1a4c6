"""Fault suite, full disks: a run, a study journal and the caches on a tmpfs the test mounts.

A full disk never loses a study and never leaves a half-written file: the journal is
repaired when a torn last record is found, a failed write is one error naming the path,
and a cache that cannot be written stays in memory. Mounting needs root (CI runs as root
here): skipped otherwise outside CI, failed with CI=true.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import optuna
import pytest

from hubsweep.results.layout import (
    CURVE_FILE,
    FINAL_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RunStatus,
)

from .conftest import SMALL_RUN


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a few MB; `fill(path, keep)` fills it but for `keep` bytes."""
    mount = tmp_path / "disk"
    mount.mkdir()
    why = None
    if os.geteuid() != 0:
        why = "mounting a tmpfs needs root"
    else:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        why = done.stderr.strip() if done.returncode else None
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the full-disk tests must run in CI: {why}")
        pytest.skip(why)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, keep: int = 0) -> Path:
    """Take all of the disk's free space but `keep` bytes; returns the filler file."""
    filler = disk / f"filler-{uuid.uuid4().hex[:6]}"
    st = os.statvfs(disk)
    size = max(st.f_bavail * st.f_frsize - keep, 0)
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        f.write(b"\0" * size)
    return filler


def _cli(command: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which(command), *args], capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


# --- a run -------------------------------------------------------------------------------


def _run_args(fixture_overrides, run_dir: Path) -> list[str]:
    return [
        *fixture_overrides,
        *SMALL_RUN,
        "trainer.tensorboard=false",
        f"hydra.run.dir={run_dir}",
    ]


def test_a_run_on_a_full_disk_is_one_error_and_leaves_no_half_written_file(
    fixture_overrides, small_disk
):
    run_dir = small_disk / "run"
    # Room for Hydra's files, the config, metrics and predictions (~40 KB in pages), not
    # for the learning curve (~56 KB): the run fails at its end.
    fill(small_disk, keep=48 * 1024)
    line = _one_line_error(_cli("hubsweep-train", *_run_args(fixture_overrides, run_dir)))
    assert line.endswith(f"{run_dir / CURVE_FILE}: cannot write: No space left on device"), line
    assert not (run_dir / CURVE_FILE).exists()  # absent, not 0 bytes
    rows = (run_dir / PREDICTIONS_FILE).read_text().splitlines()
    assert rows[0].startswith("text,label,prediction") and all(r.count(",") >= 5 for r in rows)
    lines = (run_dir / METRICS_FILE).read_text().splitlines(keepends=True)
    assert len(lines) == 3 and all(line.endswith("\n") and json.loads(line) for line in lines)
    final = json.loads((run_dir / FINAL_FILE).read_text())
    assert final["status"] == RunStatus.FAILED and "cannot write" in final["error"]
    assert not list(run_dir.glob(".*.tmp"))


def test_a_disk_full_before_hydra_writes_is_one_error_naming_the_run_directory(
    fixture_overrides, small_disk
):
    run_dir = small_disk / "run"
    fill(small_disk)
    line = _one_line_error(_cli("hubsweep-train", *_run_args(fixture_overrides, run_dir)))
    assert line == f"hubsweep-train: error: {run_dir}: cannot write: No space left on device"


def test_a_disk_that_fills_mid_run_leaves_whole_files_only(make_cfg, small_disk):
    from hubsweep.results.artifacts import RunWriteError
    from hubsweep.training.run import train_and_evaluate

    run_dir = small_disk / "run"
    cfg = make_cfg(f"output_dir={run_dir}", "trainer.tensorboard=false")

    def fill_at_first_evaluation(step, metrics):
        if step == 20:
            fill(small_disk)

    with pytest.raises(RunWriteError, match=f"{run_dir}/.*: cannot write"):
        train_and_evaluate(cfg, fill_at_first_evaluation)
    lines = (run_dir / METRICS_FILE).read_text().splitlines(keepends=True)
    assert all(line.endswith("\n") and json.loads(line) for line in lines)
    assert not (run_dir / PREDICTIONS_FILE).exists()  # absent, never cut mid-row
    assert not list(run_dir.glob(".*.tmp"))


def test_a_metrics_line_cut_by_a_full_disk_is_taken_back(small_disk):
    from hubsweep.results.artifacts import RunWriteError, RunWriter

    writer = RunWriter(small_disk / "run")
    writer.append_metrics({"step": 1})
    before = (small_disk / "run" / METRICS_FILE).read_bytes()
    fill(small_disk)
    with pytest.raises(RunWriteError, match=f"{METRICS_FILE}: cannot write"):
        writer.append_metrics({"step": 2, "blob": "x" * 200_000})
    assert (small_disk / "run" / METRICS_FILE).read_bytes() == before


def test_atomic_files_are_whole_or_absent_when_the_disk_fills(small_disk):
    from hubsweep.results.artifacts import RunWriteError, write_atomic

    (small_disk / "f.csv").write_text("old,whole\n")
    fill(small_disk, keep=1000)
    with pytest.raises(RunWriteError, match="f.csv: cannot write: No space left on device"):
        write_atomic(small_disk / "f.csv", "x" * 200_000)
    assert (small_disk / "f.csv").read_text() == "old,whole\n"
    assert [p.name for p in small_disk.iterdir() if p.name.startswith(".")] == []


# --- a study journal ---------------------------------------------------------------------


def _journal_study(path: Path) -> optuna.Study:
    from hubsweep.study.storage import open_storage

    return optuna.create_study(
        study_name="s", storage=open_storage(f"journal:{path}"), load_if_exists=True
    )


def test_a_torn_last_record_is_set_aside_and_the_study_resumes(tmp_path, caplog):
    path = tmp_path / "study.journal"
    study = _journal_study(path)
    for x in (1.0, 2.0):
        study.tell(study.ask(), x)
    whole = path.read_bytes()
    # What a crash mid-append leaves: a record cut with no newline.
    path.write_bytes(whole + b'{"op_code":8,"worker_id":"w","environment_failure":"OSError: ')
    study = _journal_study(path)
    assert "cut" in caplog.text and ".torn" in caplog.text
    assert [t.value for t in study.trials] == [1.0, 2.0]
    study.tell(study.ask(), 3.0)  # appends onto a whole line, not the torn one
    assert [t.value for t in _journal_study(path).trials] == [1.0, 2.0, 3.0]
    torn = list(tmp_path.glob("study.journal.torn-*"))
    assert len(torn) == 1 and torn[0].read_bytes().startswith(b'{"op_code":8')


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "study.journal"
    study = _journal_study(path)
    study.tell(study.ask(), 1.0)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert [t.value for t in _journal_study(path).trials] == [1.0]
    assert not list(tmp_path.glob("*.torn-*"))


def test_a_journal_write_on_a_full_disk_is_one_error_and_leaves_no_torn_record(small_disk):
    from hubsweep.errors import SetupError

    path = small_disk / "study.journal"
    study = _journal_study(path)
    study.tell(study.ask(), 1.0)
    before = path.read_bytes()
    filler = fill(small_disk, keep=0)
    with pytest.raises(SetupError, match=rf"{path}: cannot write the study journal"):
        study.set_user_attr("big", "x" * 100_000)
    assert path.read_bytes() == before  # the cut record was taken back
    filler.unlink()
    study = _journal_study(path)
    study.tell(study.ask(), 2.0)
    assert [t.value for t in study.trials] == [1.0, 2.0]


def test_a_sweep_on_a_full_disk_stops_with_one_error_and_resumes_after(
    fixture_overrides, small_disk
):
    results = small_disk / "results"
    args = [
        *fixture_overrides,
        *SMALL_RUN,
        "sweep=lr",
        "sweep.n_trials=8",
        "sweep.population=8",
        "sweep.pruner=none",
        "sweep.heartbeat_s=1",
        "sweep.grace_s=3",
        "trainer.tensorboard=false",
        f"results_dir={results}",
        "experiment_name=disk",
    ]
    first = _cli("hubsweep-sweep", *args, "sweep.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    filler = fill(small_disk, keep=20_000)
    line = _one_line_error(_cli("hubsweep-sweep", *args))
    assert "cannot write" in line, line
    print(line)
    filler.unlink()
    done = _cli("hubsweep-sweep", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    journal = results / "disk" / "lr" / "study.journal"
    study = optuna.load_study(study_name="lr", storage=_journal_study(journal)._storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 8
    report = _cli("hubsweep-report", str(results / "disk"))
    assert report.returncode == 0, report.stderr[-2000:]


# --- the caches --------------------------------------------------------------------------


def test_a_full_cache_dir_degrades_to_memory_with_one_warning(make_cfg, small_disk, caplog):
    import logging

    from hubsweep.training.run import train_and_evaluate

    fill(small_disk)
    cfg = make_cfg(f"cache_dir={small_disk / 'cache'}")
    with caplog.at_level(logging.WARNING):
        result = train_and_evaluate(cfg)
    assert result.status == RunStatus.COMPLETED
    warned = [r.getMessage() for r in caplog.records if "cache_dir: cannot write" in r.getMessage()]
    assert len(warned) == 1 and "stay in memory" in warned[0]


@pytest.mark.slow  # the run-level test above takes the same code path; this is the CLI's
def test_a_sweep_with_a_full_cache_dir_completes_its_trials(
    fixture_overrides, small_disk, tmp_path
):
    fill(small_disk)
    proc = _cli(
        "hubsweep-sweep",
        *fixture_overrides,
        *SMALL_RUN,
        "sweep=lr",
        "sweep.n_trials=2",
        "sweep.pruner=none",
        f"results_dir={tmp_path / 'results'}",
        f"cache_dir={small_disk / 'cache'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    journal = tmp_path / "results" / "default" / "lr" / "study.journal"
    study = optuna.load_study(study_name="lr", storage=_journal_study(journal)._storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
