"""Fault suite, reports: unreadable files are named and skipped, symlinks cannot inflate or
escape the tree, and a study.json cannot make the report create files or open databases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hubsweep.reports.collect import collect
from hubsweep.reports.document import build_report
from hubsweep.training.run import train_and_evaluate


@pytest.fixture
def experiment(make_cfg, tmp_path) -> Path:
    """results/exp with two finished single runs."""
    root = tmp_path / "results" / "exp"
    for seed in (0, 1):
        cfg = make_cfg(f"trainer.seed={seed}", f"output_dir={root / 'runs' / f's{seed}'}")
        train_and_evaluate(cfg)
    return root


def test_a_corrupt_final_json_is_named_and_the_rest_is_reported(experiment):
    (experiment / "runs" / "s1" / "final.json").write_text('{"status": "compl')
    path = build_report(experiment)
    text = path.read_text()
    assert "## Not read" in text and "s1" in text and "final.json unreadable" in text
    runs = {r.directory.name: r for g in collect(experiment).groups for r in g.runs}
    assert runs["s0"].final is not None and runs["s1"].final is None


def test_a_corrupt_study_json_is_reported_as_unreadable(experiment):
    study = experiment / "broken_study"
    study.mkdir()
    (study / "study.json").write_bytes(b"\x00\xff not json")
    text = build_report(experiment).read_text()
    assert "study.json unreadable" in text
    assert "s0" in (experiment / "report" / "tables" / "runs.md").read_text() or "runs" in text


def test_symlink_loops_and_links_out_of_the_tree_are_not_followed(experiment, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(experiment / "runs", outside)
    (experiment / "linked").symlink_to(outside)  # out of the tree
    (experiment / "runs" / "loop").symlink_to(experiment)  # a loop back to the top
    runs = [r for g in collect(experiment).groups for r in g.runs]
    assert sorted(r.directory.name for r in runs) == ["s0", "s1"]


def test_a_study_json_cannot_make_the_report_create_files(experiment, tmp_path):
    study = experiment / "ghost"
    study.mkdir()
    missing_db = tmp_path / "nowhere" / "study.db"
    (study / "study.json").write_text(
        json.dumps({"study_name": "ghost", "storage": f"sqlite:///{missing_db}"})
    )
    text = build_report(experiment).read_text()
    assert not missing_db.exists() and not missing_db.parent.exists()
    assert not (study / "study.journal").exists()
    assert "no SQLite storage" in text


def test_a_database_named_by_someone_elses_study_json_is_not_opened(experiment, postgres_db):
    study = experiment / "theirs"
    study.mkdir()
    url = postgres_db.replace("postgresql://", "postgresql+psycopg://")
    (study / "study.json").write_text(json.dumps({"study_name": "x", "storage": url}))
    os.chown(study / "study.json", 12345, 12345)  # another user's file
    text = build_report(experiment).read_text()
    assert "not opened" in text and "--storage" in text
    # Asked for explicitly, it is opened (and has no such study).
    asked = build_report(experiment, storages=[url]).read_text()
    assert "not opened" not in asked and "unreadable" in asked


def test_report_cli_on_a_corrupt_tree_exits_zero_with_the_problem_named(experiment):
    (experiment / "runs" / "s0" / "config.yaml").write_text("a: [unclosed")
    proc = subprocess.run(
        [shutil.which("hubsweep-report"), str(experiment)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "config.yaml unreadable" in Path(proc.stdout.strip()).read_text()
