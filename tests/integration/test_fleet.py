"""Two hundred databases of one server in one daemon, on a server with max_connections = 100.

The daemon must get ready quickly, hold a handful of sessions once its start-up round is over (a connection
budget per server, idle connections closed, every leader lock on one session in the `postgres` database), stop
cleanly, drop every leadership at once when that session dies and take it back; and two daemons whose configs
list different sets of the same databases must never lead one database together.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from indexd.embedded import EmbeddedCluster, free_port
from indexd.lifecycle.leader import leader_key
from tests.support.cluster import new_database
from tests.support.daemon import DaemonProcess, fleet_config

N = 200
TEMPLATE = "fleet_template"
LEADERSHIP_DB = "postgres"
HOUSEKEEPING_S = 5.0  # indexd.service.scheduler.HOUSEKEEPING_SECONDS: how often leadership is looked at
MB = 1024 * 1024

_LOCKS = """
SELECT (classid::bigint << 32) | objid::bigint, pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1
  AND database = (SELECT oid FROM pg_database WHERE datname = %s)
"""


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[EmbeddedCluster, list[str]]]:
    """A server of its own with max_connections = 100 and N databases copied from one template. Its 1.5 GB of
    small files live in memory when it can (/dev/shm): copying and deleting them on a busy disk takes minutes."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="indexd-fleet-", dir=shm if shm.is_dir() else None))
    cluster = EmbeddedCluster(base_dir=base, settings={"max_connections": "100"})
    cluster.start()
    try:
        new_database(cluster, TEMPLATE)  # pg_stat_statements and hypopg, copied into each database
        names = [f"tenant_{i:03d}" for i in range(N)]
        cluster.clone_databases(TEMPLATE, names)
        yield cluster, names
    finally:
        cluster.destroy()


def _sessions(cluster: EmbeddedCluster) -> int:
    return int(cluster.fetch("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'indexd'")[0][0])


def _holders(cluster: EmbeddedCluster) -> dict[int, list[int]]:
    """Leader lock key -> the pids holding it, as the server sees it."""
    out: dict[int, list[int]] = {}
    for key, pid in cluster.fetch(_LOCKS, params=(LEADERSHIP_DB,)):
        out.setdefault(int(key), []).append(int(pid))
    return out


def _keys(names: list[str]) -> dict[int, str]:
    return {leader_key("indexd", name): name for name in names}


def _health(d: DaemonProcess) -> dict[str, Any]:
    code, body = d.get("/health")
    assert code in (200, 503), body
    return dict(body)


def _leaders(d: DaemonProcess, real_name: dict[str, str] | None = None) -> set[str]:
    """The databases (by real name) whose leadership the daemon's /health shows."""
    dbs = _health(d)["databases"]
    return {(real_name or {}).get(name, name) for name, db in dbs.items() if db["leader"]}


def _ready(d: DaemonProcess) -> bool:
    try:
        return d.get("/health/ready")[0] == 200
    except OSError:  # not listening yet
        return False


def _round_done(d: DaemonProcess, names: list[str]) -> bool:
    dbs = _health(d)["databases"]
    return all("prune" in dbs[name]["last_runs"] for name in names)


def _messages(d: DaemonProcess, text: str) -> list[str]:
    return [r["message"] for r in d.log_records() if text in r.get("message", "")]


def test_one_daemon_runs_200_databases_on_a_few_connections(fleet: tuple[EmbeddedCluster, list[str]],
                                                            tmp_path: Path) -> None:
    cluster, names = fleet
    wanted = _keys(names)
    config = fleet_config(tmp_path / "indexd.yaml", [(n, cluster.dsn(n)) for n in names], port=free_port(),
                          backups_dir=tmp_path / "backups")
    started = time.monotonic()
    d = DaemonProcess(config, tmp_path)
    try:
        d.wait_for(lambda: _ready(d), timeout=20, what="/health/ready")
        assert time.monotonic() - started <= 20
        d.wait_for(lambda: _round_done(d, names), timeout=90, what="the start-up round of every database")
        for name in names[:3]:
            runs = _health(d)["databases"][name]["last_runs"]
            assert {job: r["outcome"] for job, r in runs.items()} == dict.fromkeys(
                ("capture", "advise", "apply", "verify", "health", "prune"), "ok"), runs

        sessions = _sessions(cluster)
        assert sessions <= 20, f"{sessions} indexd sessions at idle"
        servers = _health(d)["servers"]
        (server,) = servers.values()
        assert server["connections"]["limit"] == 10 and server["connections"]["peak"] <= 10
        assert server["leadership"][0]["held"] == N
        rss = psutil.Process(d.proc.pid).memory_info().rss
        assert rss <= 300 * MB, f"RSS {rss / MB:.0f} MB"

        held = _holders(cluster)
        assert set(held) == set(wanted) and all(len(pids) == 1 for pids in held.values())
        (pid,) = {pids[0] for pids in held.values()}  # one session holds every lock
        assert server["leadership"][0]["session_pid"] == pid

        # The session dies: every leadership goes at once, and all are taken back on a new session.
        assert cluster.fetch("SELECT pg_terminate_backend(%s)", params=(pid,)) == [(True,)]
        d.wait_for(lambda: _messages(d, f"leadership of {N} database(s) lost at once"), timeout=3 * HOUSEKEEPING_S,
                   what="the loss of every leadership")
        def all_taken_back() -> dict[int, list[int]] | None:
            held = _holders(cluster)
            return held if set(held) == set(wanted) else None

        again = d.wait_for(all_taken_back, timeout=4 * HOUSEKEEPING_S, what="every leadership taken back")
        new_pids = {p for pids in again.values() for p in pids}
        assert len(new_pids) == 1 and pid not in new_pids
        d.wait_for(lambda: _leaders(d) == set(names), timeout=3 * HOUSEKEEPING_S, what="health to show it")
    finally:
        code, seconds = d.stop(timeout=60)
    assert code == 0, d.log()[-3000:]
    assert seconds <= 15, f"stop took {seconds:.1f} s"
    assert _sessions(cluster) == 0
    assert not _holders(cluster)


def test_two_daemons_never_lead_the_same_database(fleet: tuple[EmbeddedCluster, list[str]],
                                                  tmp_path: Path) -> None:
    """B lists half of A's databases, under other names and in another order: the locks are keyed by the real
    database, so they still compete for each one; a lost session of A lets B take some of its half."""
    cluster, names = fleet
    wanted = _keys(names)
    subset = list(reversed(names[N // 2:]))
    b_names = {f"other_{n}": n for n in subset}
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    a_cfg = fleet_config(tmp_path / "a" / "indexd.yaml", [(n, cluster.dsn(n)) for n in names], port=free_port(),
                         backups_dir=tmp_path / "backups")
    b_cfg = fleet_config(tmp_path / "b" / "indexd.yaml", [(o, cluster.dsn(n)) for o, n in b_names.items()],
                         port=free_port(), backups_dir=tmp_path / "backups")
    a = DaemonProcess(a_cfg, tmp_path / "a", run_at_start=False)
    b: DaemonProcess | None = None
    try:
        a.wait_for(lambda: set(_holders(cluster)) == set(wanted), timeout=30, what="A to lead every database")
        (a_pid,) = {p for pids in _holders(cluster).values() for p in pids}
        b = DaemonProcess(b_cfg, tmp_path / "b", run_at_start=False)
        b.wait_for(lambda: _ready(b), timeout=30, what="B ready")
        time.sleep(HOUSEKEEPING_S + 1)  # B's housekeeping has tried every lock of its half
        assert {p for pids in _holders(cluster).values() for p in pids} == {a_pid}
        assert _leaders(b) == set()

        assert cluster.fetch("SELECT pg_terminate_backend(%s)", params=(a_pid,)) == [(True,)]
        deadline = time.monotonic() + 6 * HOUSEKEEPING_S
        while True:
            held = _holders(cluster)
            assert all(len(pids) == 1 for pids in held.values()), held  # never two holders of one lock
            if set(held) == set(wanted) and a_pid not in {p[0] for p in held.values()}:
                break
            assert time.monotonic() < deadline, f"{len(held)} of {N} leader locks taken back"
            time.sleep(0.2)

        def settled() -> tuple[set[str], set[str]] | None:
            led_a, led_b = _leaders(a), _leaders(b, b_names)
            return (led_a, led_b) if led_a | led_b == set(names) and not led_a & led_b else None

        led_a, led_b = a.wait_for(settled, timeout=4 * HOUSEKEEPING_S, what="each database led by exactly one")
        assert led_b <= set(subset)
        by_pid: dict[int, set[str]] = {}
        for key, pids in _holders(cluster).items():
            by_pid.setdefault(pids[0], set()).add(wanted[key])
        assert sorted(map(len, by_pid.values())) == sorted(len(s) for s in (led_a, led_b) if s)
    finally:
        results = [proc.stop(timeout=60) for proc in (b, a) if proc is not None]
    assert all(code == 0 for code, _ in results)
    assert _sessions(cluster) == 0
