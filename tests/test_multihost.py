"""Several hosts, one study: three network namespaces, each with its own hostname, results
directory, feature cache and TFDS directory (as separate machines would have), run the
same `hubsweep-sweep` command against one PostgreSQL. One host's worker is killed with
SIGKILL in the middle of a trial.

The hosts reach PostgreSQL on their side of a veth pair (10.X.N.1:5432); the server
listens on 127.0.0.1 only, so the test relays those addresses to it, as a router would.
Needs root for `ip netns` (CI runs as root here): skipped otherwise outside CI, failed
with CI=true.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
from optuna.trial import TrialState

from hubsweep.results.layout import FINALISTS_DIR, RETRAIN_DIR, TRIALS_DIR
from hubsweep.study.liveness import FAIL_REASON, HOST, SURPLUS, tally
from hubsweep.study.storage import open_storage

HOSTS = ("a", "b", "c")
N_TRIALS = 6
STUDY = "multihost"


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "needs ip (iproute2) and unshare (util-linux)"
    return None


@pytest.fixture
def namespaces():
    why = _can_make_namespaces()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the multi-host test must run in CI: {why}")
        pytest.skip(why)
    tag = uuid.uuid4().hex[:4]
    # A subnet of its own: a run killed before its clean-up leaves its addresses behind.
    subnet = f"10.{100 + int(tag, 16) % 150}"
    made = []

    def ip(*args: str, ns: str | None = None) -> None:
        prefix = ["ip", "netns", "exec", ns] if ns else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)

    try:
        for i, host in enumerate(HOSTS, start=1):
            ns, outer, inner = f"hs{tag}{host}", f"hs{tag}{host}h", f"hs{tag}{host}n"
            ip("netns", "add", ns)
            made.append(ns)
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", inner, "netns", ns)
            ip("addr", "add", f"{subnet}.{i}.1/24", "dev", outer)
            ip("link", "set", outer, "up")
            ip("addr", "add", f"{subnet}.{i}.2/24", "dev", inner, ns=ns)
            ip("link", "set", inner, "up", ns=ns)
            ip("link", "set", "lo", "up", ns=ns)
        routes = zip(HOSTS, made, strict=True)
        yield {host: (ns, f"{subnet}.{i}.1") for i, (host, ns) in enumerate(routes, start=1)}
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair, and the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Relay:
    """TCP relay from `listen` to `target`: the hosts' route to the database server."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.settimeout(0.5)
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopped.set()
        self.server.close()


@pytest.fixture
def database_routes(namespaces, postgres_db):
    """Each host's URL of the test database: its side of the veth pair, relayed."""
    server = urlsplit(postgres_db)
    relays, urls = [], {}
    for host, (_, addr) in namespaces.items():
        relays.append(Relay((addr, server.port), (server.hostname, server.port)))
        urls[host] = f"{server.scheme}://{addr}:{server.port}{server.path}"
    yield urls
    for relay in relays:
        relay.close()


def _in_host(ns: str, host: str, cwd: Path, *command: str, **kw) -> subprocess.Popen:
    """Run `command` as host `host`: in its network namespace, with its own hostname."""
    script = f'hostname host-{host} && exec "$@"'
    args = ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", script, "sh", *command]
    return subprocess.Popen(args, cwd=cwd, text=True, **kw)


def _trial_dirs(root: Path) -> list[str]:
    return [p.parent.name for p in root.glob(f"results/*/*/{TRIALS_DIR}/*/seed0")]


def test_three_hosts_one_study_one_killed_mid_trial(
    namespaces, database_routes, postgres_db, fixture_overrides, tmp_path
):
    procs: dict[str, subprocess.Popen] = {}
    try:
        common = [
            *[
                o
                for o in fixture_overrides
                if not o.startswith(("cache_dir=", "dataset.data_dir="))
            ],
            "results_dir=results",
            "cache_dir=cache",
            "dataset.data_dir=tfds",
            "sweep=lr",
            f"sweep.study_name={STUDY}",
            f"sweep.n_trials={N_TRIALS}",
            "sweep.pruner=none",
            # One trial a round, so every host takes trials (a population round would take
            # a host's fair share, here all of them: one worker per host).
            "sweep.population=1",
            "sweep.heartbeat_s=1",
            "sweep.grace_s=5",
            "sweep.retrain_best_seeds=2",
            "trainer.steps=600",
            "trainer.eval_every=100",
            "trainer.batch_size=8",
        ]
        for host, (ns, _) in namespaces.items():
            home = tmp_path / f"host-{host}"
            home.mkdir()
            procs[host] = _in_host(
                ns,
                host,
                home,
                shutil.which("hubsweep-sweep"),
                *common,
                f"sweep.storage={database_routes[host]}",
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        storage = open_storage(postgres_db, create=False)

        # Kill host b's worker while one of its trials runs. Which trial died is read from
        # the storage afterwards: the one seen running may finish between the read and the
        # signal, and then the kill lands in the trial host b took next.
        signalled = False
        deadline = time.time() + 240
        while not signalled and time.time() < deadline:
            try:
                study = optuna.load_study(study_name=STUDY, storage=storage)
            except KeyError:
                time.sleep(0.5)
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get(HOST) == "host-b" and t.intermediate_values:
                    procs["b"].send_signal(signal.SIGKILL)
                    signalled = True
                    break
            time.sleep(0.2)
        assert signalled, "host b never ran a trial"
        outputs = {}
        for host, proc in procs.items():
            outputs[host] = proc.communicate(timeout=300)[0]
        assert procs["b"].returncode == -signal.SIGKILL
        for host in ("a", "c"):
            assert procs[host].returncode == 0, outputs[host][-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()

    study = optuna.load_study(study_name=STUDY, storage=open_storage(postgres_db, create=False))
    trials = study.get_trials(deepcopy=False)

    # Exactly n_trials finished, each trial number once.
    assert tally(trials) == (N_TRIALS, 0)
    assert len({t.number for t in trials}) == len(trials)
    # The killed trial (host b's one trial that died: failed without a reason of its own,
    # not a surplus one) was retried once, to the end.
    died = [
        t
        for t in trials
        if t.user_attrs.get(HOST) == "host-b"
        and t.state == TrialState.FAIL
        and FAIL_REASON not in t.user_attrs
        and not t.user_attrs.get(SURPLUS)
    ]
    assert len(died) == 1, [(t.number, t.state, t.user_attrs) for t in trials]
    killed = died[0]
    killed_number = killed.number
    retries = [t for t in trials if killed_number in t.system_attrs.get("retry_history", [])]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs[HOST] in ("host-a", "host-c")
    # Besides it, only surplus trials failed (asked for by two hosts at once beyond the
    # budget; marked, not counted, not run).
    failed = [t for t in trials if t.state == TrialState.FAIL and t.number != killed_number]
    assert all(t.user_attrs.get(SURPLUS) and not t.intermediate_values for t in failed)
    # Every host ran trials, in its own results directory; no trial directory twice.
    dirs = {h: _trial_dirs(tmp_path / f"host-{h}") for h in HOSTS}
    assert all(dirs.values()), dirs
    every = [d for found in dirs.values() for d in found]
    assert len(every) == len(set(every))
    ran = [t for t in trials if not t.user_attrs.get(SURPLUS)]  # surplus: told, never run
    assert {t.user_attrs[HOST] for t in ran} == {f"host-{h}" for h in HOSTS}

    # The finalists were raced once, on one host; its winner is the config re-run.
    raced = {
        h: sorted((tmp_path / f"host-{h}").glob(f"results/*/*/{FINALISTS_DIR}/*")) for h in HOSTS
    }
    raced = {h: runs for h, runs in raced.items() if runs}
    assert len(raced) == 1 and len(next(iter(raced.values()))) == 9, raced  # 3 configs x 3
    winner = study.user_attrs["finalists"]["winner"]

    # Exactly one retrain of the best config, on one host.
    retrained = {
        h: sorted((tmp_path / f"host-{h}").glob(f"results/*/*/{RETRAIN_DIR}/*")) for h in HOSTS
    }
    retrained = {h: runs for h, runs in retrained.items() if runs}
    assert len(retrained) == 1, retrained
    ((retrain_host, runs),) = retrained.items()
    assert [r.name for r in runs] == [
        f"trial{winner:04d}-seed{k}"
        for k in (4, 5)  # after the search's and finalists' seeds
    ]
    summary = study.user_attrs["retrain"]
    assert summary["host"] == f"host-{retrain_host}" and summary["statuses"] == ["completed"] * 2
    other = "c" if retrain_host == "a" else "a"
    said = ("is being re-run on host-", "was re-run on host-", "finalists are being raced on host-")
    assert any(s in outputs[other] for s in said), outputs[other][-3000:]

    # The report on the host that did not retrain: from the storage plus its own files, it
    # names the trials (and the re-runs) whose files are elsewhere, and still has the numbers.
    ns, _ = namespaces[other]
    home = tmp_path / f"host-{other}"
    study_dir = next(home.glob(f"results/*/{STUDY}"))
    report = _in_host(
        ns,
        other,
        home,
        shutil.which("hubsweep-report"),
        str(study_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    text_out = report.communicate(timeout=120)[0]
    assert report.returncode == 0, text_out[-3000:]
    markdown = (study_dir / "report" / "report.md").read_text()
    line = next(x for x in markdown.splitlines() if "run files on other hosts" in x)
    for h in HOSTS:
        if h == other:
            assert f"host-{h}:" not in line
            continue
        ran_there = [t.number for t in trials if t.user_attrs.get(HOST) == f"host-{h}"]
        assert all(f"trial {n}" in line for n in ran_there), (h, line)
    assert f"host-{retrain_host}:" in line and "re-runs" in line
    by_host = {
        h: sorted(t.number for t in trials if t.user_attrs.get(HOST) == f"host-{h}") for h in HOSTS
    }
    print(
        f"\nmulti-host: trials by host {by_host}; trial {killed_number} killed on host-b, "
        f"retried as trial {retry.number} on {retry.user_attrs[HOST]}; "
        f"{tally(trials)[0]} finished of {N_TRIALS}; {len(failed)} surplus; "
        f"retrained once, on host-{retrain_host}"
    )
    assert "re-run with 2 of 2 seeds" in markdown
    test_mean = summary["test"]["accuracy"]["mean"]
    assert f"{test_mean:.4f}" in markdown
    assert json.loads((study_dir / "study.json").read_text())["study_name"] == STUDY
