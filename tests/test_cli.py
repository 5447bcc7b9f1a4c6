"""`hubsweep-train` end to end in a fresh process, as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import SMALL_RUN


@pytest.fixture
def cli_args(fixture_overrides, tmp_path):
    return [*fixture_overrides, f"results_dir={tmp_path / 'results'}", *SMALL_RUN]


def _run(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("hubsweep-train")
    assert exe, "the console script is installed with the package"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_multirun_grid_writes_one_run_directory_per_job(cli_args, tmp_path):
    proc = _run("-m", *cli_args, "embedding.trainable=false,true", "experiment_name=grid")
    assert proc.returncode == 0, proc.stderr[-2000:]
    finals = sorted((tmp_path / "results" / "grid" / "multirun").glob("*/*/final.json"))
    assert len(finals) == 2
    trainable = set()
    for final in finals:
        run = final.parent
        assert json.loads(final.read_text())["status"] == "completed"
        for name in ("config.yaml", "metrics.jsonl", "predictions.csv", "learning_curve.png"):
            assert (run / name).stat().st_size > 0
        trainable.add("trainable: true" in (run / "config.yaml").read_text())
    assert trainable == {True, False}


def test_a_missing_module_is_one_clear_error(cli_args, tmp_path):
    proc = _run(*cli_args, f"embedding.handle={tmp_path / 'nope'}")
    assert proc.returncode != 0
    assert "embedding.handle: no SavedModel directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_dir_is_found_from_an_unrelated_working_directory(cli_args, tmp_path):
    proc = subprocess.run(
        [shutil.which("hubsweep-train"), "--cfg", "job"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tfds_name: scicite" in proc.stdout
    assert not list(Path(tmp_path).glob("results"))


def test_a_misspelt_experiment_or_broken_preset_is_one_clear_error(cli_args, tmp_path):
    proc = _run(*cli_args, "experiment=tutorail")
    assert proc.returncode != 0
    assert "Could not find 'experiment/tutorail'" in proc.stderr and "tutorial" in proc.stderr
    presets = tmp_path / "presets" / "experiment"
    presets.mkdir(parents=True)
    (presets / "mine.yaml").write_text("# @package _global_\narms:\n  a: [x=[1]\n")
    proc = _run("--config-dir", str(presets.parent), "experiment=mine", *cli_args)
    assert proc.returncode == 1
    assert f"{presets / 'mine.yaml'}:3: invalid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr
