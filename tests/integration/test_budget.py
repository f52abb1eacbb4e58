"""Connections of a fleet on a real server: idle ones are closed, and a server's budget caps them all together."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import timedelta

import pytest

from indexd.config.schema import DatabaseSettings, PoolSettings
from indexd.db.budget import ServerBudget
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.errors import ConnectionFailed
from tests.support.cluster import assert_no_leaked_connections, indexd_connections


@pytest.fixture
def make_db(pg_cluster: EmbeddedCluster, pg_dbname: str) -> Iterator[object]:
    made: list[Database] = []

    def make(name: str, budget: ServerBudget | None = None, **pool: object) -> Database:
        settings = DatabaseSettings(name=name, dsn=pg_cluster.dsn(pg_dbname),
                                    pool=replace(PoolSettings(size=3, max_overflow=2), **pool))
        db = Database(settings, budget=budget)
        made.append(db)
        return db

    try:
        yield make
    finally:
        for db in made:
            db.close()
        assert_no_leaked_connections(pg_cluster, pg_dbname)


def _hold(db: Database, n: int, stack: ExitStack) -> None:
    for _ in range(n):
        conn = stack.enter_context(db.connection())
        with conn.cursor() as cur:
            cur.execute("SELECT 1")


def test_idle_connections_are_closed_after_the_idle_timeout(make_db, pg_cluster: EmbeddedCluster,
                                                            pg_dbname: str) -> None:
    db = make_db("main", idle_timeout=timedelta(milliseconds=300))
    with ExitStack() as stack:
        _hold(db, 3, stack)
    assert indexd_connections(pg_cluster, pg_dbname) == 3
    assert db.close_idle() == 0  # just given back
    time.sleep(0.4)
    assert db.close_idle() == 3
    assert indexd_connections(pg_cluster, pg_dbname) == 0
    stats = db.stats()
    assert (stats.size, stats.checked_out, stats.idle_closes) == (0, 0, 3)
    assert db.run(lambda conn: conn.cursor().execute("SELECT 1") or 1) == 1  # connects again on demand
    assert db.stats().size == 1


def test_only_connections_idle_long_enough_are_closed(make_db, pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    db = make_db("main", idle_timeout=timedelta(milliseconds=300))
    with ExitStack() as stack:
        _hold(db, 2, stack)
    time.sleep(0.4)
    with ExitStack() as stack:  # the most recent one (LIFO) is used again and given back: it is fresh now
        _hold(db, 1, stack)
    assert db.close_idle() == 1
    assert indexd_connections(pg_cluster, pg_dbname) == 1


def test_a_zero_idle_timeout_keeps_connections(make_db, pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    db = make_db("main", idle_timeout=timedelta(0))
    with ExitStack() as stack:
        _hold(db, 2, stack)
    time.sleep(0.1)
    assert db.close_idle() == 0
    assert indexd_connections(pg_cluster, pg_dbname) == 2


def test_the_budget_caps_connections_of_every_database_of_a_server(make_db, pg_cluster: EmbeddedCluster,
                                                                  pg_dbname: str) -> None:
    budget = ServerBudget("test server", limit=2)
    a = make_db("a", budget, timeout=timedelta(milliseconds=500))
    b = make_db("b", budget, timeout=timedelta(milliseconds=500))
    with ExitStack() as stack:
        _hold(a, 2, stack)  # both slots checked out
        t0 = time.monotonic()
        with pytest.raises(ConnectionFailed, match="fleet.max_connections_per_server") as err, b.connection():
            pass
        assert 0.4 < time.monotonic() - t0 < 3
        assert "test server" in str(err.value) and "all 2 connections" in str(err.value)
        assert b.breaker.state == "closed"  # the server is fine; indexd was busy
        assert indexd_connections(pg_cluster, pg_dbname) == 2
    # a's two connections are idle now: b makes room by closing the longest-idle one
    assert b.run(lambda conn: conn.cursor().execute("SELECT 1") or 1) == 1
    assert indexd_connections(pg_cluster, pg_dbname) == 2
    assert (a.stats().size, b.stats().size) == (1, 1)
    stats = budget.stats()
    assert stats["peak"] == 2 and stats["evictions"] == 1 and stats["timeouts"] == 1


def test_a_waiting_checkout_gets_the_slot_a_closed_connection_frees(make_db) -> None:
    budget = ServerBudget("test server", limit=1)
    a = make_db("a", budget, timeout=timedelta(seconds=5))
    conn = a.dedicated_connection()  # dedicated connections take a slot too
    got: list[float] = []

    def use() -> None:
        with a.connection():
            got.append(time.monotonic())

    waiter = threading.Thread(target=use)
    t0 = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    assert not got and budget.in_use() == 1 and budget.stats()["waits"] == 1  # the attempt waits for a slot
    conn.close()  # frees the slot, whoever closes it
    waiter.join(5)
    assert got and 0.3 <= got[0] - t0 < 2
    assert budget.stats()["peak"] == 1
