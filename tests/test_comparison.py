"""Factor effects and paired comparisons as the report computes them, on arms whose
answers are known by construction, and a factorial experiment end to end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hubsweep.reports.collect import RunGroup, Study, _varying_keys, _walk
from hubsweep.reports.comparison import config_pairs, effects, pair_rows
from hubsweep.results.artifacts import RunFiles
from hubsweep.study.compose import ComposeSpec
from hubsweep.study.driver import run_sweep

from .conftest import REPO

SEEDS = (0, 1, 2, 3, 4)
BASE = {0: 0.750, 1: 0.742, 2: 0.761, 3: 0.748, 4: 0.755}  # seed-to-seed spread


def _study(label: str, factors: dict, score) -> Study:
    runs = [
        RunFiles(
            Path(f"/x/{label}/retrain/trial0000-seed{s}"),
            {"trainer": {"seed": s}},
            {"status": "completed", "test": {"macro_f1": score(s)}, "final": {"macro_f1": 0.7}},
            pd.DataFrame(),
        )
        for s in SEEDS
    ]
    info = {"arm": label, "factors": factors, "sweep": {"metric": "macro_f1"}}
    return Study(Path(f"/x/{label}"), label, label, info, "journal:x", [], retrain=runs)


def test_main_effects_and_the_interaction_are_recovered():
    # y = seed base + 0.02 f + 0.01 g + 0.005 f g
    studies = [
        _study(
            f"f{f}_g{g}",
            {"emb": ["a", "b"][f], "trainable": ["false", "true"][g]},
            lambda s, f=f, g=g: BASE[s] + 0.02 * f + 0.01 * g + 0.005 * f * g,
        )
        for f in (0, 1)
        for g in (0, 1)
    ]
    found = dict(effects(studies))
    assert set(found) == {"emb: b − a", "trainable: true − false", "emb × trainable (interaction)"}
    assert found["emb: b − a"].mean == pytest.approx(0.02 + 0.005 / 2)
    assert found["trainable: true − false"].mean == pytest.approx(0.01 + 0.005 / 2)
    assert found["emb × trainable (interaction)"].mean == pytest.approx(0.005)
    assert all(r.distinguishable for r in found.values())


def test_arms_without_an_effect_are_called_not_distinguishable():
    import numpy as np

    noise = np.random.default_rng(3).normal(0, 0.004, size=(4, 5))
    studies = [
        _study(
            f"a{i}",
            {"emb": "ab"[i // 2], "trainable": ["false", "true"][i % 2]},
            lambda s, i=i: BASE[s] + noise[i, s],
        )
        for i in range(4)
    ]
    found = dict(effects(studies))
    assert not found["emb: b − a"].distinguishable
    assert found["emb: b − a"].low < 0 < found["emb: b − a"].high


def test_pairs_are_later_minus_earlier_on_shared_seeds():
    frozen = _study("frozen", {}, lambda s: BASE[s])
    tuned = _study("finetuned", {}, lambda s: BASE[s] + 0.003)
    [(a, b, result)] = pair_rows([frozen, tuned])
    assert (a, b) == ("finetuned", "frozen") and result.mean == pytest.approx(0.003)


@pytest.mark.slow  # ~100 s on 2 cores; run with -m slow
def test_a_factorial_experiment_runs_every_combination_and_reports_its_effects(
    make_cfg, fixture_overrides, tmp_path
):
    from hubsweep.reports.document import build_report

    args = [
        f"results_dir={tmp_path / 'results'}",
        "experiment_name=factorial",
        "sweep=lr",
        "sweep.n_trials=2",
        "sweep.pruner=none",
        "sweep.retrain_best_seeds=3",
        "+factors={model:[linear,mlp],embedding.trainable:[false,true]}",
    ]
    cfg = make_cfg(*args)
    summary = run_sweep(cfg, [*fixture_overrides, *args], ComposeSpec(str(REPO / "conf"), (), ()))
    assert set(summary["arms"]) == {
        "model_linear__trainable_false",
        "model_linear__trainable_true",
        "model_mlp__trainable_false",
        "model_mlp__trainable_true",
    }
    report = build_report(tmp_path / "results" / "factorial").read_text()
    assert "## Factor effects" in report
    assert "| model: mlp − linear" in report
    assert "| embedding.trainable: true − false" in report
    assert "model × embedding.trainable (interaction)" in report
    assert report.count(" − ") >= 6  # the six pairs of the paired comparison
    assert (tmp_path / "results" / "factorial" / "report" / "plots" / "effects.png").is_file()


def _grid_run(job: int, weight: str, prefix: list, seed: int, score: float) -> RunFiles:
    config = {
        "trainer": {"seed": seed, "class_weight": weight},
        "dataset": {"prefix_keys": prefix},
        "output_dir": f"/x/multirun/{job}",
    }
    final = {"status": "completed", "test": {"macro_f1": score}, "final": {"macro_f1": 0.7}}
    return RunFiles(Path(f"/x/multirun/{job}"), config, final, pd.DataFrame())


def test_a_grids_configs_are_paired_where_they_differ_in_one_setting():
    # class_weight x prefix_keys x seeds: the section prefix adds 0.02, weights cost 0.01.
    runs, job = [], 0
    for weight in ("none", "balanced"):
        for prefix in (["sectionName"], []):
            for seed in SEEDS:
                score = BASE[seed] + 0.02 * bool(prefix) - 0.01 * (weight == "balanced")
                runs.append(_grid_run(job, weight, prefix, seed, score))
                job += 1
    group = RunGroup("multirun", runs, _varying_keys(runs))
    # Four pairs differ in one setting; the two diagonals (both settings) are left out. The
    # config ahead comes first, its list written as the command line writes it.
    found = [(p.a, p.b, round(p.result.mean, 6)) for p in config_pairs(group, "macro_f1")]
    assert sorted(found) == [
        ("class_weight=none", "class_weight=balanced", 0.01),
        ("class_weight=none", "class_weight=balanced", 0.01),
        ("prefix_keys=[sectionName]", "prefix_keys=[]", 0.02),
        ("prefix_keys=[sectionName]", "prefix_keys=[]", 0.02),
    ]


def test_a_multiruns_job_folders_are_read_in_job_order(tmp_path):
    for job in range(12):
        (tmp_path / str(job)).mkdir()
    (tmp_path / "multirun.yaml").write_text("")
    names = [p.name for p in _walk(tmp_path, tmp_path, {tmp_path})]
    assert names == [str(job) for job in range(12)]
