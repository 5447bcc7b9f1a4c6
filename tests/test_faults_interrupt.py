"""Fault suite, Ctrl-C: a sweep stops its workers, fails their running trials at once and
queues them again (as `study.optimize` fails an interrupted trial), prints one line and
exits 130; the same command resumes without waiting for heartbeats to go stale. A resume
that must wait for them says so, and for how long."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState

from hubsweep.study.liveness import INTERRUPTED, RETRY_OF, waiting_note
from hubsweep.study.storage import open_storage

# Slow trials (the string path, fine-tuned): long enough to be interrupted mid-trial. The
# grace period is long, so a resume that waited for stale heartbeats would show.
SLOW = [
    "sweep=lr",
    "sweep.pruner=none",
    "sweep.heartbeat_s=1",
    "sweep.grace_s=120",
    "embedding.trainable=true",
    "trainer.fast_path=false",
    "trainer.steps=8000",
    "trainer.eval_every=500",
    "trainer.batch_size=8",
]


def _study(journal) -> optuna.Study:
    return optuna.load_study(study_name="lr", storage=open_storage(f"journal:{journal}"))


def _start(args: list[str]) -> subprocess.Popen:
    # Its own process group, as a terminal's foreground job: Ctrl-C reaches every worker.
    return subprocess.Popen(
        [shutil.which("hubsweep-sweep"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


# One worker is the two-worker case without children: `-m slow` runs it (CI time).
@pytest.mark.parametrize("workers", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_ctrl_c_requeues_running_trials_exits_130_and_resumes_at_once(
    fixture_overrides, tmp_path, workers
):
    # Spawned workers start seconds after the first (tens of seconds on a loaded machine:
    # in one CI run of 4 trials a worker, all 8 finished before the test saw both
    # workers' trials running at once): enough trials that they overlap.
    n_trials = 6 * workers
    args = [
        *fixture_overrides,
        *SLOW,
        f"sweep.workers={workers}",
        f"sweep.n_trials={n_trials}",
        f"results_dir={tmp_path / 'results'}",
    ]
    journal = tmp_path / "results" / "default" / "lr" / "study.journal"
    proc = _start(args)
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(0.5)
        if journal.exists():
            running = [t for t in _study(journal).trials if t.state == TrialState.RUNNING]
            if len(running) == workers and all(t.intermediate_values for t in running):
                break
            if proc.poll() is not None:
                break
    if proc.poll() is not None or time.time() >= deadline:
        how = f"it exited with {proc.returncode}" if proc.poll() is not None else "240 s passed"
        proc.kill()
        err = proc.communicate()[1]
        pytest.fail(f"the sweep never had its workers' trials running ({how}): {err[-2000:]}")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "interrupted: " in last and "trials of study lr finished" in last, last
    assert "run the same command to resume" in last

    trials = _study(journal).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.user_attrs.get(INTERRUPTED)]
    assert len(stopped) == workers and all(t.state == TrialState.FAIL for t in stopped)
    queued = {t.user_attrs[RETRY_OF]: t for t in trials if t.state == TrialState.WAITING}
    assert sorted(queued) == sorted(t.number for t in stopped)
    assert all(queued[t.number].system_attrs["fixed_params"] == t.params for t in stopped)

    again = subprocess.run(
        [shutil.which("hubsweep-sweep"), *args], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    # It did not wait out the grace period for the interrupted trials: a worker may wait
    # for a trial the other worker is running (its beat ≤ a few heartbeats old), never for
    # a stale one.
    ages = [int(a) for a in re.findall(r"the oldest beat (\d+) s ago", again.stderr)]
    assert all(age <= 3 for age in ages), again.stderr[-3000:]
    trials = _study(journal).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n_trials
    for t in stopped:  # each interrupted trial ran again, with its values
        assert queued[t.number].number in [u.number for u in trials if u.state.is_finished()]


def test_a_resume_that_waits_for_stale_heartbeats_says_for_how_long():
    from datetime import datetime, timedelta

    now = time.time()
    trial = optuna.trial.create_trial(state=TrialState.RUNNING)
    trial.datetime_start = datetime.fromtimestamp(now) - timedelta(seconds=35)
    note = waiting_note([trial], grace_s=120, now=now)
    assert "waiting for 1 running trial(s)" in note
    assert "sweep.grace_s=120 s" in note and "35 s ago: within 85 s" in note


def test_ctrl_c_while_a_trial_is_asked_waits_until_the_round_holds_it():
    """Asking makes a RUNNING trial in the storage; an interrupt that lands inside the ask
    is raised once the round holds the trial (so it fails and requeues it), not before."""
    from hubsweep.study.rounds import _interrupts_deferred

    study = optuna.create_study()
    real_ask = study.ask

    def ask():
        trial = real_ask()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, after the storage made the trial
        time.sleep(0.2)  # where an undeferred KeyboardInterrupt would be raised
        return trial

    study.ask = ask
    held = []
    with pytest.raises(KeyboardInterrupt), _interrupts_deferred():
        held.append(study.ask())
    assert [t.number for t in held] == [0]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_second_ctrl_c_during_the_requeue_waits_for_it(
    make_cfg, fixture_overrides, tmp_path, monkeypatch
):
    """Ctrl-C reaches a spawned worker from the terminal and again from its parent, which
    passes it on: the second lands while the first's trial is being failed and requeued,
    and waits for that to end (it once left the trial RUNNING)."""
    from hubsweep.study.compose import ComposeSpec
    from hubsweep.study.driver import open_study
    from hubsweep.study.plan import build_plans
    from hubsweep.study.rounds import run_round
    from hubsweep.study.trial import Objective, plan_cache

    from .conftest import REPO

    args = [f"results_dir={tmp_path / 'results'}", "sweep=lr", "sweep.n_trials=2"]
    compose = ComposeSpec(str(REPO / "conf"), (), ())
    [plan] = build_plans(make_cfg(*args), [*fixture_overrides, *args], compose)
    study = open_study(plan)
    real_report, real_tell = optuna.Trial.report, study.tell

    def report(self, value, step):  # the terminal's Ctrl-C, while the trial trains
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        return real_report(self, value, step)

    def tell(*a, **k):  # the parent's, while the requeue fails the trial
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        return real_tell(*a, **k)

    monkeypatch.setattr(optuna.Trial, "report", report)
    study.tell = tell
    with pytest.raises(KeyboardInterrupt):
        run_round(study, Objective(plan, plan_cache(plan)), 1, [])
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs[INTERRUPTED] and trials[1].user_attrs[RETRY_OF] == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_further_ctrl_c_in_a_deferred_block_stops_it_at_once():
    """Storage writes that hang must not make a worker unstoppable from the keyboard."""
    from hubsweep.study.rounds import _interrupts_deferred

    reached = []
    with pytest.raises(KeyboardInterrupt), _interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        reached.append("deferred")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        reached.append("not stopped")
    assert reached == ["deferred"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
