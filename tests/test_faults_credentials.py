"""Fault suite, credentials: a PostgreSQL password given to hubsweep is written nowhere.

The server trusts local connections, so any password is accepted and the sweep runs for
real; afterwards the password must not appear in any file under the results directory
(Hydra's .hydra/ and sweep.log included), in the report, or in anything printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubsweep.study.storage import mask, scrub_argv

PASSWORD = "Xyzzy-s3cret-pw"
FAST = [
    "sweep=lr",
    "sweep.n_trials=2",
    "sweep.pruner=none",
    "sweep.retrain_best_seeds=1",
    "trainer.steps=40",
    "trainer.eval_every=20",
    "trainer.batch_size=8",
]


def _files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _run(command: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [shutil.which(command), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, mask(proc.stderr[-3000:])
    return proc


@pytest.mark.parametrize("how", ["command_line", "environment"])
def test_a_storage_password_reaches_no_file_and_no_log(
    postgres_db, fixture_overrides, tmp_path, how
):
    user_url = postgres_db.replace("postgresql://", f"postgresql://postgres:{PASSWORD}@")
    results = tmp_path / "results"
    args = [*fixture_overrides, f"results_dir={results}", *FAST, "sweep.study_name=secret"]
    if how == "command_line":
        sweep = _run("hubsweep-sweep", *args, f"sweep.storage={user_url}")
    else:
        sweep = _run("hubsweep-sweep", *args, env={"HUBSWEEP_STORAGE": user_url})
    report = _run("hubsweep-report", str(results / "default"), "--storage", user_url)
    printed = sweep.stdout + sweep.stderr + report.stdout + report.stderr
    assert PASSWORD not in printed
    assert _files_holding(results, PASSWORD) == []
    study = results / "default" / "secret"
    assert (study / ".hydra" / "overrides.yaml").is_file() and (study / "sweep.log").is_file()
    assert (study / "retrain.json").is_file()  # the sweep really ran against the database
    assert "postgresql+psycopg://postgres@127.0.0.1" in (study / "study.json").read_text()
    text = (results / "default" / "report" / "report.md").read_text()
    assert "finished: 2 of 2 trials" in text


def test_scrubbing_keeps_the_password_for_this_process_only(monkeypatch):
    monkeypatch.delenv("HUBSWEEP_STORAGE_PASSWORD", raising=False)
    args = scrub_argv(["sweep.storage=postgresql://me:p%40ss@db.example/x", "trainer.steps=5"])
    assert args == ["sweep.storage=postgresql://me@db.example/x", "trainer.steps=5"]
    assert os.environ["HUBSWEEP_STORAGE_PASSWORD"] == "p@ss"
    assert mask("cannot open postgresql://me:p@db/x") == "cannot open postgresql://me:***@db/x"


PG_TEST = """
def test_needs_postgres(postgres_db):
    pass
"""


@pytest.mark.parametrize(("ci", "outcome", "rc"), [("true", "1 error", 1), ("", "1 skipped", 0)])
def test_a_missing_postgres_fails_in_ci_and_skips_elsewhere(tmp_path, ci, outcome, rc):
    (tmp_path / "test_pg_rule.py").write_text(
        "from tests.pg import postgres_db  # noqa\n" + PG_TEST
    )
    env = {**os.environ, "CI": ci, "HUBSWEEP_TEST_PG": "postgresql://127.0.0.1:1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert outcome in proc.stdout and proc.returncode == rc, proc.stdout[-2000:]
    assert "no PostgreSQL server answers at postgresql://127.0.0.1:1" in proc.stdout
