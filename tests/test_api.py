"""The Python API (`hubsweep.compose / run / sweep / report / analyze`): the CLI's
composition and errors, callable many times in one process, DataFrames and figures back;
and examples/tutorial.ipynb executed with nbclient on the fixture data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import hubsweep
from hubsweep.errors import ConfigError
from hubsweep.results.layout import FINAL_FILE, RunStatus

from .conftest import DIM, REPO, SMALL_RUN

NOTEBOOK = REPO / "examples" / "tutorial.ipynb"


def test_compose_is_the_clis_composition_with_the_same_one_line_errors(fixture_overrides):
    cfg = hubsweep.compose("experiment=tutorial", *fixture_overrides, "trainer.steps=40")
    assert cfg.experiment_name == "tutorial" and cfg.trainer.steps == 40
    assert "hydra" not in cfg and "/tutorial/runs/" in cfg.output_dir
    with pytest.raises(ConfigError, match=r"^trainer.steps: must be a positive integer"):
        hubsweep.compose(*fixture_overrides, "trainer.steps=0")
    with pytest.raises(ConfigError, match="Could not override 'trainer.stepz'"):
        hubsweep.compose("trainer.stepz=3")
    with pytest.raises(ConfigError, match="Could not find 'experiment/nope'"):
        hubsweep.compose("experiment=nope")


def test_run_returns_curves_as_dataframes_and_a_second_run_reuses_what_the_first_loaded(
    fixture_overrides, tmp_path
):
    common = [
        *fixture_overrides,
        *SMALL_RUN,
        f"results_dir={tmp_path}",
        "trainer.evaluate_test=true",
    ]
    first = hubsweep.run(*common)
    assert first.status == RunStatus.COMPLETED
    assert isinstance(first.history, pd.DataFrame) and list(first.history.step) == [20, 40, 60]
    assert set(first.metrics.split) == {"validation", "test"}
    assert {"text", "label", "prediction"} <= set(first.predictions.columns)
    assert first.model is not None and "<table>" in first._repr_html_()
    final = json.loads((Path(first.run_dir) / FINAL_FILE).read_text())
    assert final["final"]["accuracy"] == first.history.accuracy.iloc[-1]

    second = hubsweep.run(hubsweep.compose(*common, "trainer.seed=1"))
    assert second.run_dir != first.run_dir and second.status == RunStatus.COMPLETED
    from hubsweep.api import _CACHES

    (cache,) = [c for key, c in _CACHES.items() if key == str(second.cfg.cache_dir)]
    assert len(cache.datasets) == 1 and len(cache.layers) == 1  # loaded once, used twice


def test_sweep_and_report_return_the_study_tables_and_plots(fixture_overrides, tmp_path):
    args = [
        *fixture_overrides,
        *SMALL_RUN,
        "sweep=lr",
        "sweep.n_trials=3",
        "sweep.retrain_best_seeds=2",
        "sweep.pruner=none",
        f"results_dir={tmp_path}",
        "experiment_name=api",
    ]
    done = hubsweep.sweep(*args)
    assert done.summary["trials"] == {"complete": 3}
    assert len(done.study.trials) == 3 and len(done.trials) == 3
    again = hubsweep.sweep(*args)  # resumes: nothing left to run
    assert len(again.study.trials) == 3
    report = hubsweep.report(done.directory.parent)
    assert report.path.is_file() and "## Reproduce" in report.markdown
    assert report.tables["arms"].loc[0, "complete"] == 3
    assert "test_scores" in report.plots and report.plots["test_scores"].stat().st_size > 0
    assert "<img" in report._repr_html_()


def test_analyze_returns_the_heatmap_figure_and_neighbours(tiny_module, tmp_path):
    from matplotlib.figure import Figure

    result = hubsweep.analyze(
        f"embedding.handle={tiny_module}",
        f"embedding.dim={DIM}",
        "groups=[[virus,cells],[patients,data]]",
        "neighbours=[virus]",
        f"results_dir={tmp_path}",
    )
    assert isinstance(result.figure, Figure)
    assert list(result.similarity.index) == ["virus", "cells", "patients", "data"]
    assert set(result.neighbours.term) == {"virus"}
    assert (result.directory / "similarity.png").is_file()


def test_the_committed_notebook_has_no_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    with_outputs = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert with_outputs == [], (
        "clear the outputs before committing (jupyter nbconvert --clear-output)"
    )


def test_the_tutorial_notebook_runs_end_to_end(
    fixture_overrides, tiny_module, scicite_dir, tmp_path
):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    extra = [
        o for o in fixture_overrides if not o.startswith(("dataset.source_dir", "embedding.handle"))
    ]
    env = {
        "HUBSWEEP_SCICITE": str(scicite_dir),
        "HUBSWEEP_MODULE": str(tiny_module),
        "HUBSWEEP_RESULTS": str(tmp_path / "results"),
        "HUBSWEEP_STEPS": "100",
        "HUBSWEEP_TRIALS": "2",
        "HUBSWEEP_OVERRIDES": " ".join([*extra, "trainer.eval_every=25"]),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(
            nb, timeout=600, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        ).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # heatmap, curves, test scores, learning curves
    assert any(
        "text/html" in o.get("data", {}) and "<table>" in o.data["text/html"] for o in outputs
    )
    assert list((tmp_path / "results" / "frozen_vs_finetuned").rglob("report/report.md"))


def test_sweep_validates_each_arm_not_the_base_as_the_cli_does(fixture_overrides, tmp_path):
    """A scaffold on a frozen base is fine where every arm fine-tunes; the frozen arm is the
    one error, named; no sweep chosen is the CLI's error too."""
    args = [*fixture_overrides, f"results_dir={tmp_path}", "dataset.scaffold_keys=[sectionName]"]
    arms = [
        "+arms.tuned=['embedding.trainable=true']",
        "+arms.frozen=['embedding.trainable=false']",
    ]
    with pytest.raises(ConfigError, match=r"^arms\.frozen: dataset\.scaffold_keys: needs"):
        hubsweep.sweep(*args, *arms, "sweep=lr")
    with pytest.raises(ConfigError, match="no search space chosen; give sweep=<a space: finetune"):
        hubsweep.sweep(*args, *arms)
    assert not list(tmp_path.rglob("*.journal"))
