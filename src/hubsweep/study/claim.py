"""A once-per-study step (the retrain of the best config) done by exactly one worker.

Every host that finishes a study reaches its end; only one should retrain. The claim is a
marker study in the same storage, named after the step: creating a study is atomic in
every Optuna storage (a unique name in RDB, a locked append in the journal), so of the
hosts that try, one creates it and the others get `DuplicatedStudyError`. The holder
beats into the marker while it works and deletes it when done (the step's own result, in
the real study, says it is done: the caller checks that before and after taking the
claim). A marker whose holder stopped beating (or whose process is gone, on this host) is
taken over by the next command that reaches the step, so a killed retrain is finished by
running the same command again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import suppress
from dataclasses import dataclass

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.study import StudyDirection

from hubsweep.study.liveness import worker_host

log = logging.getLogger(__name__)

HOLDER, BEAT = "holder", "beat"


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int

    def __str__(self) -> str:
        return f"{self.host} (pid {self.pid})"

    def gone(self) -> bool:
        """Known dead: a process of this host that no longer exists."""
        if self.host != worker_host():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


@dataclass(frozen=True)
class Outcome:
    """Another process holds the claim (`holder`, when known: None if it just left)."""

    holder: Holder | None = None


def _attrs(storage: optuna.storages.BaseStorage, name: str) -> dict | None:
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    except KeyError:
        return None


def _create(storage: optuna.storages.BaseStorage, name: str) -> int | None:
    try:
        return storage.create_new_study([StudyDirection.MINIMIZE], name)
    except DuplicatedStudyError:
        return None


def _take(storage: optuna.storages.BaseStorage, name: str, grace_s: float) -> Outcome | int:
    """The marker's id if this process now holds it, else who does."""
    study_id = _create(storage, name)
    if study_id is not None:
        return study_id
    attrs = _attrs(storage, name)
    if attrs is not None and HOLDER not in attrs:
        time.sleep(1.0)  # created a moment ago; its holder is writing its name
        attrs = _attrs(storage, name)
    if attrs is None:  # deleted by a takeover between our two reads
        return Outcome()
    holder = Holder(**attrs[HOLDER]) if HOLDER in attrs else None
    stale = time.time() - attrs.get(BEAT, 0.0) > grace_s
    if holder is not None and not stale and not holder.gone():
        return Outcome(holder)
    log.warning("taking over %s from %s, which stopped", name, holder or "a stopped worker")
    # Another process may take it over first; the create below decides.
    with suppress(KeyError):
        storage.delete_study(storage.get_study_id_from_name(name))
    study_id = _create(storage, name)
    return study_id if study_id is not None else Outcome()


class Claim:
    """Held by this process: beats while entered, released (the marker deleted) on leaving,
    whether the step succeeded (its result says so) or failed (the next try may take it)."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_id: int, every_s: float) -> None:
        self.storage, self.study_id, self.every_s = storage, study_id, every_s
        self.holder = Holder(worker_host(), os.getpid())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        # The beat first: a holder without one would look stale to a reader in between.
        storage.set_study_user_attr(study_id, BEAT, time.time())
        storage.set_study_user_attr(study_id, HOLDER, vars(self.holder))

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            self.storage.set_study_user_attr(self.study_id, BEAT, time.time())

    def __enter__(self) -> Claim:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.storage.delete_study(self.study_id)


def take(
    storage: optuna.storages.BaseStorage, name: str, every_s: float, grace_s: float
) -> Claim | Outcome:
    """The claim `name` if this process gets it, else who holds it."""
    taken = _take(storage, name, grace_s)
    return taken if isinstance(taken, Outcome) else Claim(storage, taken, every_s)
