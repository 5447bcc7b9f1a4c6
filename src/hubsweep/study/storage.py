"""Where a study lives: the journal-file default, any SQLAlchemy URL, and no password on disk.

A password never reaches a file or a log: `sweep.storage` given with one is rewritten
before Hydra sees it (Hydra saves its overrides and config in the run directory), and the
password travels in this process's environment (`HUBSWEEP_STORAGE_PASSWORD`, inherited by
worker processes) until the storage is opened. `HUBSWEEP_STORAGE` supplies the URL when
`sweep.storage` is unset; PostgreSQL's own `PGPASSWORD` and `~/.pgpass` work as usual,
since a URL without a password leaves the choice to libpq.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hubsweep.errors import ConfigError, HubsweepError, SetupError
from hubsweep.results.layout import STUDY_JOURNAL_FILE

log = logging.getLogger(__name__)

URL_ENV = "HUBSWEEP_STORAGE"
PASSWORD_ENV = "HUBSWEEP_STORAGE_PASSWORD"
JOURNAL = "journal:"
_OVERRIDE = re.compile(r"^(\+{0,2}sweep\.storage=)(.*)$")
_CREDENTIAL = re.compile(r"([A-Za-z][\w+.-]*://[^:/@\s]*):[^@\s]*@")


def mask(text: str) -> str:
    """`scheme://user:secret@host` → `scheme://user:***@host` anywhere in `text`."""
    return _CREDENTIAL.sub(r"\1:***@", text)


def _split_password(url: str) -> tuple[str, str | None]:
    if "://" not in url or "@" not in url:
        return url, None
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception as e:  # ArgumentError: not a URL SQLAlchemy understands
        raise ConfigError(f"sweep.storage: {mask(url)!r} is not a database URL: {e}") from None
    if parsed.password is None:
        return url, None
    # URL.set(password=None) keeps the password; the named tuple's _replace drops it.
    return parsed._replace(password=None).render_as_string(hide_password=False), parsed.password


def _stash(url: str) -> str:
    bare, password = _split_password(url)
    if password is not None:
        os.environ[PASSWORD_ENV] = password
    return bare


def scrub_argv(argv: list[str]) -> list[str]:
    """Command-line arguments with the password taken out of `sweep.storage=...`."""
    out = []
    for arg in argv:
        match = _OVERRIDE.match(arg)
        out.append(match.group(1) + _stash(match.group(2)) if match else arg)
    return out


def configured(value: str | None) -> str | None:
    """`sweep.storage`, else $HUBSWEEP_STORAGE, without its password (kept in the env)."""
    url = value or os.environ.get(URL_ENV) or None
    return _stash(url) if url else None


def resolve(value: str | None, study_dir: Path) -> str:
    """The storage URL a study uses: a journal file in its directory unless one is given."""
    url = configured(value)
    if not url:
        return f"{JOURNAL}{study_dir / STUDY_JOURNAL_FILE}"
    if url.startswith("postgresql://"):
        # SQLAlchemy's default PostgreSQL driver is psycopg2; hubsweep installs psycopg 3.
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def is_journal(url: str) -> bool:
    return url.startswith(JOURNAL)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def journal_path(url: str) -> Path:
    return Path(url.removeprefix(JOURNAL))


def _with_password(url: str) -> str:
    password = os.environ.get(PASSWORD_ENV)
    if not password or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.password is not None:
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


class StorageWriteError(SetupError):
    """The study's storage could not be written: nothing more can be recorded, so the sweep
    stops (a trial cannot be told its outcome either)."""


@contextmanager
def _locked(lock: optuna.storages.journal.BaseJournalFileLock) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class SafeJournalBackend(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file that survives a crash or a full disk at any byte.

    Optuna reads a journal line by line and skips a last line without its newline, but its
    next append lands on that torn line, and from then on the file cannot be read. Here, on
    opening and before every append (under the journal's lock, so no writer is mid-record),
    a torn last record is set aside in `<journal>.torn-<time>` and cut from the file; a
    complete one that only lacks its newline gets it. An append that fails (ENOSPC) takes
    back what it wrote and is one SetupError naming the file.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._journal_lock = optuna.storages.journal.JournalFileOpenLock(str(path))
        super().__init__(str(path), lock_obj=self._journal_lock)
        # Only a torn journal takes the lock and opens the file for writing: a report
        # reads a study in a directory it may not write to.
        if self._torn():
            with _locked(self._journal_lock):
                self._repair()

    def _torn(self) -> bool:
        """The last record lacks its newline (read-only: no lock, no write access needed)."""
        with self._path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return False
            f.seek(size - 1)
            return f.read(1) != b"\n"

    def _repair(self) -> None:
        with self._path.open("rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # Read back far enough to find the last whole line.
            start = max(size - (1 << 20), 0)
            while True:
                f.seek(start)
                chunk = f.read(size - start)
                cut = chunk.rfind(b"\n")
                if cut >= 0 or start == 0:
                    break
                start = max(start - (1 << 20), 0)
            keep = start + cut + 1 if cut >= 0 else 0
            tail = chunk[cut + 1 :] if cut >= 0 else chunk
            try:
                json.loads(tail)
            except ValueError:
                aside = self._path.with_name(f"{self._path.name}.torn-{time.time():.0f}")
                aside.write_bytes(tail)
                f.truncate(keep)
                log.warning(
                    "%s: its last record was cut (a crash or a full disk); its %d bytes are "
                    "kept in %s and the study resumes from the records before it",
                    self._path,
                    len(tail),
                    aside,
                )
            else:
                f.seek(size)
                f.write(b"\n")

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs)
        with _locked(self._journal_lock):
            try:
                self._repair()
                with self._path.open("ab") as f:
                    end = f.tell()
                    try:
                        f.write(data.encode("utf-8"))
                        f.flush()
                        os.fsync(f.fileno())
                    except OSError:
                        f.truncate(end)
                        raise
            except OSError as e:
                raise StorageWriteError(
                    f"{self._path}: cannot write the study journal: {e.strerror or e}; free "
                    "space there and run the same command to resume the study"
                ) from None


@dataclass(frozen=True)
class Heartbeat:
    """Optuna's own heartbeat (RDB storages): interval, grace period, stale-trial callback."""

    interval_s: float
    grace_s: float
    on_stale: Callable


def open_storage(
    url: str, *, create: bool = True, heartbeat: Heartbeat | None = None
) -> optuna.storages.BaseStorage:
    """Open `url`. With create=False nothing is made: a missing journal or SQLite file is an
    error (the report reads studies; it never creates one)."""
    if is_journal(url):
        path = journal_path(url)
        if not create and not path.is_file():
            raise HubsweepError(f"no study storage at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = SafeJournalBackend(path)
        except OSError as e:
            raise SetupError(f"{path}: cannot open the study journal: {e.strerror or e}") from None
        return optuna.storages.JournalStorage(backend)
    if not create and is_sqlite(url):
        path = Path(url.split(":///", 1)[-1])
        if not path.is_file():
            raise HubsweepError(f"no SQLite storage at {path}")
    kwargs = {}
    if heartbeat is not None:
        kwargs = {
            "heartbeat_interval": max(1, round(heartbeat.interval_s)),
            "grace_period": max(2, round(heartbeat.grace_s)),
            "heartbeat_stale_trial_callback": heartbeat.on_stale,
        }
    try:
        return optuna.storages.RDBStorage(_with_password(url), **kwargs)
    except Exception as e:
        raise HubsweepError(f"sweep.storage: cannot open {mask(url)!r}: {mask(str(e))}") from None
