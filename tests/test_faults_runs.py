"""Fault suite, runs: a run owns its directory, unwritable directories, offline start-up.

Real processes through the console scripts; each asserts one line on stderr, exit != 0,
and that nothing already written was lost.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hubsweep.results.artifacts import RunDirectoryTaken, claim_run_dir, read_metrics
from hubsweep.results.layout import METRICS_FILE
from hubsweep.training.run import train_and_evaluate

from .conftest import SMALL_RUN


def _cli(command: str, *args: str, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which(command), *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def test_a_run_directory_that_holds_a_run_is_refused_and_kept(make_cfg, tmp_path):
    first = train_and_evaluate(make_cfg(run="same"))
    before = (Path(first.run_dir) / METRICS_FILE).read_bytes()
    with pytest.raises(RunDirectoryTaken, match="already holds a run"):
        train_and_evaluate(make_cfg(run="same"))
    assert (Path(first.run_dir) / METRICS_FILE).read_bytes() == before
    assert len(read_metrics(first.run_dir)) == 3


def _claim(directory: str, barrier, results) -> None:
    barrier.wait(timeout=30)
    try:
        claim_run_dir(Path(directory))
        results.put("won")
    except RunDirectoryTaken:
        results.put("refused")


def test_of_two_runs_racing_for_one_directory_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_claim, args=(str(tmp_path / "run"), barrier, results)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["refused", "refused", "refused", "won"]


def test_reusing_hydra_run_dir_is_one_error_and_the_first_run_is_intact(
    fixture_overrides, tmp_path
):
    args = [*fixture_overrides, *SMALL_RUN, f"hydra.run.dir={tmp_path / 'run'}"]
    assert _cli("hubsweep-train", *args).returncode == 0
    kept = {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    line = _one_line_error(_cli("hubsweep-train", *args))
    assert "already holds a run" in line and "hydra.run.dir" in line
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == kept  # .hydra/ and train.log included


def test_default_run_directories_are_unique_within_a_second(fixture_overrides, tmp_path):
    args = [*fixture_overrides, *SMALL_RUN, f"results_dir={tmp_path}", "experiment_name=twins"]
    procs = [
        subprocess.Popen([shutil.which("hubsweep-train"), *args], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert all(p.wait(timeout=180) == 0 for p in procs)
    runs = list((tmp_path / "twins" / "runs").iterdir())
    assert len(runs) == 2
    assert all(len(read_metrics(r)) == 3 for r in runs)


def test_an_unwritable_results_dir_is_one_error_before_training(fixture_overrides, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    started = time.perf_counter()
    line = _one_line_error(
        _cli("hubsweep-train", *fixture_overrides, *SMALL_RUN, f"results_dir={blocker}/results")
    )
    assert "cannot write" in line and str(blocker) in line
    assert time.perf_counter() - started < 60


def test_an_unwritable_cache_dir_falls_back_to_memory(make_cfg, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = train_and_evaluate(make_cfg(f"cache_dir={blocker}/cache"))
    assert result.status == "completed" and result.training_path.startswith("features")
    assert "the feature cache stays in memory" in caplog.text


def test_the_main_job_offline_is_one_line_within_30_s(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to cut the network")
    # A fresh network namespace has no route anywhere: offline for sure, here or in CI.
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {probe.stderr.decode()[:200]}")
    env_args = [f"results_dir={tmp_path / 'results'}", f"dataset.data_dir={tmp_path / 'tfds'}"]
    started = time.perf_counter()
    proc = subprocess.run(
        ["unshare", "-n", shutil.which("hubsweep-train"), "experiment=tutorial", *env_args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    line = _one_line_error(proc)
    assert elapsed < 30, f"took {elapsed:.0f}s"
    assert "cannot download" in line and "dataset.source_dir" in line


def test_a_remote_module_offline_is_one_line(scicite_dir, tmp_path):
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a network namespace")
    args = [
        "experiment=tutorial",
        f"dataset.source_dir={scicite_dir}",
        f"dataset.data_dir={tmp_path / 'tfds'}",
        f"results_dir={tmp_path / 'results'}",
    ]
    proc = subprocess.run(
        ["unshare", "-n", shutil.which("hubsweep-train"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TFHUB_CACHE_DIR": str(tmp_path / "hub")},  # nothing cached
    )
    line = _one_line_error(proc)
    assert "embedding.handle" in line and "local SavedModel directory" in line
