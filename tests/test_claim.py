"""The once-per-study claim: one taker at a time, released when its holder leaves, taken
over when its holder died or went silent."""

from __future__ import annotations

import subprocess
import sys

from hubsweep.study.claim import Claim, Outcome, take
from hubsweep.study.storage import open_storage


def _storage(tmp_path):
    return open_storage(f"journal:{tmp_path / 'study.journal'}")


def test_one_taker_at_a_time_and_released_on_leaving(tmp_path):
    storage, other = _storage(tmp_path), _storage(tmp_path)  # two processes' views
    first = take(storage, "s:retrain", every_s=0.1, grace_s=30)
    assert isinstance(first, Claim)
    with first:
        second = take(other, "s:retrain", every_s=0.1, grace_s=30)
        assert isinstance(second, Outcome) and second.holder == first.holder
    assert storage.get_all_studies() == []  # no marker left for optuna-dashboard to list
    assert isinstance(take(other, "s:retrain", every_s=0.1, grace_s=30), Claim)


def test_a_dead_holders_claim_is_taken_over(tmp_path):
    # Another process takes the claim and dies without releasing it.
    code = (
        "import os, sys; from hubsweep.study.claim import take; "
        "from hubsweep.study.storage import open_storage; "
        f"c = take(open_storage('journal:{tmp_path / 'study.journal'}'), 's:retrain', 0.1, 30); "
        "c.__enter__(); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    storage = _storage(tmp_path)
    # Its process is gone (same host): taken over at once, without waiting for grace_s.
    assert isinstance(take(storage, "s:retrain", every_s=0.1, grace_s=30), Claim)


def test_a_silent_holder_elsewhere_is_taken_over_after_the_grace_period(tmp_path):
    storage = _storage(tmp_path)
    held = take(storage, "s:retrain", every_s=60, grace_s=0.5)
    assert isinstance(held, Claim)
    # Pretend the holder is on another machine that stopped beating.
    study_id = storage.get_study_id_from_name("s:retrain")
    storage.set_study_user_attr(study_id, "holder", {"host": "elsewhere", "pid": 1})
    assert isinstance(take(storage, "s:retrain", every_s=60, grace_s=30), Outcome)
    storage.set_study_user_attr(study_id, "beat", 0.0)
    assert isinstance(take(storage, "s:retrain", every_s=60, grace_s=30), Claim)
