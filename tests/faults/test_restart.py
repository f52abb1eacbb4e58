"""The server restarts or kills our backends while indexd works: the retried unit succeeds, nothing leaks."""

from __future__ import annotations

import threading
import time

import pytest

from indexd.db.pool import CHECK_BYPASS
from indexd.db.retry import RetryHooks
from indexd.embedded import EmbeddedCluster
from tests.support.cluster import assert_no_leaked_connections
from tests.support.faults import app_database, make_database


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_run_survives_a_server_restart(own_cluster: EmbeddedCluster, mode: str) -> None:
    dbname = app_database(own_cluster)
    db = make_database(own_cluster, dbname)
    backends: list[int] = []
    restarter: list[threading.Thread] = []

    def work(conn) -> int:
        backends.append(conn.get_backend_pid())
        if len(backends) == 1:  # the first attempt is in the middle of a statement when the server goes down
            restarter.append(threading.Thread(target=own_cluster.restart, args=(mode,)))
            restarter[0].start()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(0.5), 7")
            return cur.fetchone()[1]

    try:
        started = time.monotonic()
        assert db.run(work) == 7
        assert time.monotonic() - started < 10
        restarter[0].join(30)
        assert len(backends) >= 2 and backends[-1] != backends[0]
        stats = db.stats()
        assert stats.retries >= 1 and stats.invalidations >= 1 and stats.giveups == 0
        assert db.breaker.state == "closed"
    finally:
        db.close()
    assert_no_leaked_connections(own_cluster, dbname)


def _terminate_indexd_backends(cluster: EmbeddedCluster, dbname: str) -> int:
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = 'indexd'", (dbname,),
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _backend_pid(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


@pytest.mark.parametrize("pre_ping", [True, False])
def test_killed_pooled_backends_are_replaced(own_cluster: EmbeddedCluster, pre_ping: bool) -> None:
    dbname = app_database(own_cluster)
    db = make_database(own_cluster, dbname, pre_ping=pre_ping)
    try:
        with db.connection(), db.connection():
            pass  # two pooled connections now
        assert db.stats().size == 2
        assert _terminate_indexd_backends(own_cluster, dbname) == 2
        time.sleep(CHECK_BYPASS + 0.1)  # past the window in which a connection that just worked is not checked
        assert db.run(_backend_pid) > 0
        stats = db.stats()
        # With the check on checkout the dead connection is replaced before the work starts: no retry needed.
        # Without it, the work fails once on the dead connection and is retried on a fresh one.
        assert stats.retries == (0 if pre_ping else 1)
        assert stats.invalidations >= 1 and stats.reconnects >= 1
        # The replacement sessions got indexd's timeouts again (a cache of them must not outlive the session).
        assert db.run(_timeouts) == ("5s", "1s")
    finally:
        db.close()
    assert_no_leaked_connections(own_cluster, dbname)


def _timeouts(conn) -> tuple[str, str]:
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
        return tuple(cur.fetchone())


def test_a_connection_killed_right_after_use_is_replaced_without_backoff(own_cluster: EmbeddedCluster) -> None:
    dbname = app_database(own_cluster)
    db = make_database(own_cluster, dbname)
    sleeps: list[float] = []
    db._hooks = RetryHooks(sleep=sleeps.append)
    try:
        first = db.run(_backend_pid)
        assert _terminate_indexd_backends(own_cluster, dbname) == 1
        # Used a moment ago, so not checked on checkout: the unit meets the dead connection, and runs again at
        # once on a new one (no backoff: a connection that died while idle says nothing about the server now).
        second = db.run(_backend_pid)
        assert second != first and sleeps == []
        assert db.stats().retries == 1 and db.stats().invalidations == 1
    finally:
        db.close()
    assert_no_leaked_connections(own_cluster, dbname)
