"""Population training (training/population.py, study/rounds.py) against training each member
on its own: the same curves, the same files, the same trial outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hubsweep.embeddings.features import FeatureCache
from hubsweep.results.layout import FINAL_FILE, METRICS_FILE, PREDICTIONS_FILE
from hubsweep.study.driver import run_sweep
from hubsweep.study.storage import open_storage, resolve
from hubsweep.training import population
from hubsweep.training.classifier import batch_order
from hubsweep.training.population import batch_indices, blocker
from hubsweep.training.run import train_and_evaluate, train_population
from hubsweep.training.trial_cache import TrialCache

from .test_sweep import COMPOSE, FAST_SWEEP, study_dir

# Runs alone take the Keras feature path, the reference (a frozen run alone would otherwise
# train in a one-member population program itself).
KERAS = ("trainer.compiled_head=false",)

# Members that differ in every way a population allows: rate, batch size, step count,
# schedule, seed.
MEMBERS = [
    ("optimizer.learning_rate=0.3", "trainer.batch_size=8", "trainer.steps=120"),
    ("optimizer.learning_rate=0.05", "trainer.batch_size=3", "trainer.steps=80"),
    (
        "optimizer.learning_rate=0.1",
        "trainer.batch_size=16",
        "trainer.steps=100",
        "schedule=cosine",
        "trainer.seed=3",
    ),
]
BASE = ("trainer.eval_every=20", "trainer.learning_curve=false")
EXTRA = (*BASE, "trainer.xla=true")  # the fixture runs without XLA (conftest); here with it


def test_batch_indices_match_the_stream_of_batch_order():
    stream = batch_order(23, 5, seed=4)
    expected = np.stack([next(stream) for _ in range(40)])
    assert np.array_equal(batch_indices(23, 5, 4, 40), expected)


def assert_same_curves(alone, together):
    assert together.status == alone.status
    assert together.steps_done == alone.steps_done
    assert [h["step"] for h in together.history] == [h["step"] for h in alone.history]
    for a, p in zip(alone.history, together.history, strict=True):
        assert p["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5)
        assert p["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-5)
        assert p["confusion_matrix"] == a["confusion_matrix"]


@pytest.mark.parametrize(
    ("optimizer", "xla"), [("sgd", True), ("momentum", True), ("adam", True), ("sgd", False)]
)
def test_population_trains_each_member_as_its_own_run_would(make_cfg, cache_dir, optimizer, xla):
    extra = (f"optimizer={optimizer}", f"trainer.xla={str(xla).lower()}", *BASE)
    if optimizer == "adam":
        extra += ("optimizer.beta_1=0.8",)
    if optimizer == "momentum":
        extra += ("optimizer.nesterov=true",)
    alone = [
        train_and_evaluate(make_cfg(*m, *extra, *KERAS, run=f"alone{i}"))
        for i, m in enumerate(MEMBERS)
    ]
    cfgs = [make_cfg(*m, *extra, run=f"pop{i}") for i, m in enumerate(MEMBERS)]
    assert all(blocker(c) is None for c in cfgs)
    together = train_population(cfgs, [None] * 3, TrialCache(FeatureCache(cache_dir)))
    for a, p in zip(alone, together, strict=True):
        assert p.status == "completed"
        assert_same_curves(a, p)
        # The run directory holds what a run on its own writes.
        for name in (FINAL_FILE, METRICS_FILE, PREDICTIONS_FILE):
            assert (Path(p.run_dir) / name).is_file()
        final = json.loads((Path(p.run_dir) / FINAL_FILE).read_text())
        assert final["status"] == "completed" and final["training_path"].startswith("features")
        lines = (Path(p.run_dir) / METRICS_FILE).read_text().splitlines()
        assert len(lines) == len(a.history)


def test_a_diverged_and_a_pruned_member_leave_the_others_alone(make_cfg, cache_dir):
    diverging = ("optimizer.learning_rate=1e38", "trainer.batch_size=4", "trainer.steps=100")
    specs = [MEMBERS[0], diverging, MEMBERS[2]]
    prune_at_40 = lambda step, metrics: step >= 40  # noqa: E731
    reporters = [None, None, prune_at_40]
    alone = [
        train_and_evaluate(make_cfg(*m, *EXTRA, *KERAS, run=f"alone{i}"), reporter=r)
        for i, (m, r) in enumerate(zip(specs, reporters, strict=True))
    ]
    assert [a.status for a in alone] == ["completed", "diverged", "stopped"]
    cfgs = [make_cfg(*m, *EXTRA, run=f"pop{i}") for i, m in enumerate(specs)]
    together = train_population(cfgs, reporters, TrialCache(FeatureCache(cache_dir)))
    for a, p in zip(alone, together, strict=True):
        assert_same_curves(a, p)
    assert together[1].diverged_at_step == alone[1].diverged_at_step


def test_a_reused_program_trains_as_a_fresh_one(make_cfg, cache_dir, monkeypatch):
    cache = TrialCache(FeatureCache(cache_dir))
    monkeypatch.setattr(population, "_PROGRAMS", {})
    first = [make_cfg(*m, *EXTRA, run=f"a{i}") for i, m in enumerate(MEMBERS)]
    train_population(first, [None] * 3, cache)
    (program,) = population._PROGRAMS.values()
    traced = program.train_chunk.experimental_get_tracing_count()

    def second(run: str):
        return [
            make_cfg(*m, *EXTRA, "optimizer.learning_rate=0.2", run=f"{run}{i}")
            for i, m in enumerate(MEMBERS)
        ]

    reused = train_population(second("b"), [None] * 3, cache)
    assert list(population._PROGRAMS.values()) == [program]
    assert program.train_chunk.experimental_get_tracing_count() == traced  # not traced again
    monkeypatch.setattr(population, "_PROGRAMS", {})
    fresh = train_population(second("c"), [None] * 3, cache)
    assert population._PROGRAMS and program not in population._PROGRAMS.values()
    for r, f in zip(reused, fresh, strict=True):
        assert [h["loss"] for h in r.history] == [h["loss"] for h in f.history]


def test_a_population_study_finishes_n_trials_with_the_values_of_trials_run_alone(
    make_cfg, fixture_overrides, tmp_path
):
    args = [
        f"results_dir={tmp_path / 'results'}",
        *FAST_SWEEP,
        "sweep.study_name=pop",
        "sweep.n_trials=6",
        "sweep.population=4",
        "trainer.xla=true",
        "+sweep.params.batch={key:trainer.batch_size,type:categorical,choices:[4,8,16]}",
        "+sweep.params.steps={key:trainer.steps,type:int,low:20,high:60,step:20}",
    ]
    cfg = make_cfg(*args)
    summary = run_sweep(cfg, [*fixture_overrides, *args], COMPOSE)
    study = optuna.load_study(study_name="pop", storage=open_storage(resolve(None, study_dir(cfg))))
    assert summary["trials"] == {"complete": 6}
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 6  # no copies
    for t in study.trials[:2]:
        overrides = [f"{k}={v}" for k, v in t.params.items()]
        alone = train_and_evaluate(make_cfg(*overrides, *KERAS, run=f"alone{t.number}"))
        assert t.value == pytest.approx(alone.final["macro_f1"], abs=1e-6)
        assert t.user_attrs["steps_done"] == alone.steps_done
        assert t.state == TrialState.COMPLETE
