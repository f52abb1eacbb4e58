from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import psycopg2
import pytest

from indexd.config.schema import DatabaseSettings, PoolSettings, RetrySettings
from indexd.db.lifetime import DEADLINE
from indexd.db.pool import Database
from indexd.db.retry import RetryHooks
from indexd.embedded import EmbeddedCluster
from indexd.errors import ConnectionFailed
from tests.support.cluster import assert_no_leaked_connections

FAST = RetrySettings(attempts=4, initial_delay=timedelta(seconds=0.05), max_delay=timedelta(seconds=0.2),
                     max_elapsed=timedelta(seconds=3))


def timeouts(conn) -> tuple[str, str]:
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
        return cur.fetchone()


def test_connection_commits_and_applies_timeouts(database: Database, pg_conn) -> None:
    with database.connection() as conn:
        assert timeouts(conn) == ("1min", "5s")
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id int)")
    with database.connection(statement_timeout=timedelta(seconds=2), lock_timeout=timedelta(seconds=1)) as conn:
        assert timeouts(conn) == ("2s", "1s")
    with database.connection() as conn:
        assert timeouts(conn) == ("1min", "5s")
        assert conn.autocommit is False
    with pg_conn.cursor() as cur:
        cur.execute("SELECT to_regclass('t') IS NOT NULL")
        assert cur.fetchone()[0]


def test_error_rolls_back_and_connection_is_reused(database: Database) -> None:
    with pytest.raises(psycopg2.errors.UndefinedTable), database.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM missing")
    assert database.run(lambda c: c.get_transaction_status()) == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    s = database.stats()
    assert s.invalidations == 0 and s.connects == 1 and s.checkouts == 2 and s.checked_out == 0


def test_unchanged_timeouts_are_not_sent_again(database: Database, pg_conn) -> None:
    database.run(lambda c: None)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT pg_stat_statements_reset()")
    for _ in range(5):
        database.run(lambda c: None)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%set_config%'")
        assert cur.fetchone()[0] == 0
        # Nor anything else: units that ran no statement cost no round trip at all (no check on a connection
        # that just worked, no BEGIN/COMMIT, and the reset on return is a no-op in autocommit).
        cur.execute("SELECT query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                    "WHERE d.datname = current_database() AND query NOT LIKE '%pg_stat_statements%'")
        assert cur.fetchall() == []


def test_run_retries_on_a_fresh_connection_after_terminate(database: Database, pg_conn) -> None:
    database = Database(database.settings, FAST)
    try:
        pids: list[int] = []

        def work(conn) -> int:
            pids.append(conn.get_backend_pid())
            if len(pids) == 1:
                with pg_conn.cursor() as cur:
                    cur.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
            with conn.cursor() as cur:
                cur.execute("SELECT 42")
                return cur.fetchone()[0]

        assert database.run(work) == 42
        assert len(pids) == 2 and pids[0] != pids[1]
        s = database.stats()
        assert s.retries == 1 and s.invalidations >= 1 and s.reconnects >= 1
    finally:
        database.close()


def test_syntax_errors_are_not_retried(database: Database) -> None:
    calls = []

    def work(conn) -> None:
        calls.append(1)
        with conn.cursor() as cur:
            cur.execute("SELEC 1")

    with pytest.raises(psycopg2.errors.SyntaxError):
        database.run(work)
    assert calls == [1] and database.stats().retries == 0 and database.breaker.state == "closed"


def test_pool_timeout_is_a_clear_connection_failure(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                   database: Database) -> None:
    # (the `database` fixture checks after the test that no indexd connection to pg_dbname is left open)
    settings = DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname),
                                pool=PoolSettings(size=1, max_overflow=0, timeout=timedelta(seconds=0.3)))
    db = Database(settings, FAST)
    try:
        with db.connection():
            started = time.monotonic()
            with pytest.raises(ConnectionFailed, match="database main: no free pooled connection within 0.3 s"):
                db.run(lambda c: None)
            assert time.monotonic() - started < 1.5
        s = db.stats()
        assert s.timeouts == 1 and s.waits == 1 and s.retries == 0
    finally:
        db.close()


def test_wrong_password_fails_at_once(pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    pg_cluster.execute("DROP ROLE IF EXISTS pool_user")
    pg_cluster.execute("CREATE ROLE pool_user LOGIN PASSWORD 'right-one'")
    try:
        dsn = pg_cluster.dsn(pg_dbname, user="pool_user", password="Wr0ng-s3cret")
        db = Database(DatabaseSettings(name="main", dsn=dsn), RetrySettings(attempts=5))
        attempts: list[int] = []
        db._hooks = RetryHooks(on_retry=lambda n, e, d: attempts.append(n))
        started = time.monotonic()
        with pytest.raises(ConnectionFailed) as err:
            db.run(lambda c: None)
        assert time.monotonic() - started < 2.0 and attempts == []
        msg = str(err.value)
        assert msg.startswith("authentication failed for database main as user pool_user (SQLSTATE 28P01)")
        assert "password_file / PGPASSWORD / .pgpass" in msg and "Wr0ng" not in msg
        assert db.stats().connect_failures == 1 and db.breaker.state == "closed"

        nopw = Database(DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname, user="pool_user")))
        with pytest.raises(ConnectionFailed, match="no password for database main as user pool_user"):
            nopw.run(lambda c: None)

        good = Database(replace(db.settings, dsn=pg_cluster.dsn(pg_dbname, "pool_user", "right-one")))
        assert good.run(lambda c: 1) == 1
        for d in (db, nopw, good):
            d.close()
    finally:
        pg_cluster.execute("DROP ROLE IF EXISTS pool_user")


def test_unknown_database_fails_at_once(pg_cluster: EmbeddedCluster) -> None:
    db = Database(DatabaseSettings(name="ghost", dsn=pg_cluster.dsn("no_such_db")), RetrySettings(attempts=5))
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="database ghost: the server has no such database"):
        db.dedicated_connection()
    assert time.monotonic() - started < 2.0
    db.close()


def test_dedicated_connection_is_outside_the_pool(database: Database) -> None:
    conn = database.dedicated_connection()
    try:
        assert conn.autocommit is True
        assert database.stats().size == 0
    finally:
        conn.close()


def test_give_up_hook_runs_once(pg_cluster: EmbeddedCluster) -> None:
    port = pg_cluster.port + 1
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    seen = []
    db = Database(DatabaseSettings(name="nowhere", dsn=dsn), FAST, on_giveup=lambda d, e: seen.append((d.name, e)))
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="database nowhere: unit of work failed; gave up retrying"):
        db.run(lambda c: None)
    assert time.monotonic() - started < 5
    assert [name for name, _ in seen] == ["nowhere"]
    s = db.stats()
    assert s.giveups == 1 and s.connect_failures == 4 and s.retries == 3
    db.close()


def test_statement_and_lock_timeouts_fire_and_are_not_retried(database: Database, pg_conn) -> None:
    calls: list[str] = []

    def sleepy(conn) -> None:
        calls.append("sleep")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(5)")

    started = time.monotonic()
    with pytest.raises(psycopg2.errors.QueryCanceled):
        database.run(sleepy, statement_timeout=timedelta(seconds=0.3))
    assert time.monotonic() - started < 2 and calls == ["sleep"]

    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE locked (id int)")
    pg_conn.autocommit = False
    with pg_conn.cursor() as cur:
        cur.execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")

    def lock(conn) -> None:
        calls.append("lock")
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE locked IN SHARE MODE")

    try:
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            database.run(lock, lock_timeout=timedelta(seconds=0.2))
    finally:
        pg_conn.rollback()
        pg_conn.autocommit = True
    assert calls == ["sleep", "lock"] and database.stats().retries == 0 and database.stats().invalidations == 0


def _backend_pid(db: Database) -> int:
    with db.connection(autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def test_each_pooled_connection_gets_its_own_jittered_lifetime(pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    recycle, jitter, size = 600.0, 0.5, 6
    settings = DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname), pool=PoolSettings(
        size=size, max_overflow=0, recycle=timedelta(seconds=recycle), recycle_jitter=jitter))
    db = Database(settings)
    try:
        before = time.monotonic()
        proxies = [db.engine.raw_connection() for _ in range(size)]  # all made in the same instant
        after = time.monotonic()
        deadlines = sorted(p.info[DEADLINE] for p in proxies)
        for proxy in proxies:
            proxy.close()
        assert len(set(deadlines)) == size  # not one expiry for the whole pool
        assert before + recycle * (1 - jitter) <= deadlines[0] and deadlines[-1] <= after + recycle * (1 + jitter)
        assert deadlines[-1] - deadlines[0] > 0.05 * recycle  # spread over the window (6 draws; fails ~1e-6 of runs)
    finally:
        db.close()
    assert_no_leaked_connections(pg_cluster, pg_dbname)


def test_an_expired_connection_is_replaced_at_checkout(pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    now = [1000.0]
    settings = DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname), pool=PoolSettings(
        size=1, max_overflow=0, recycle=timedelta(seconds=60), recycle_jitter=0.1))
    db = Database(settings, hooks=RetryHooks(clock=lambda: now[0], rand=lambda: 1.0))  # lifetime 60 s x 1.1
    try:
        first = _backend_pid(db)
        now[0] += 65
        assert _backend_pid(db) == first  # 65 s < 66 s: still within its own lifetime
        now[0] += 2
        second = _backend_pid(db)
        assert second != first
        alive = {int(r[0]) for r in pg_cluster.fetch("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                                     params=(pg_dbname,))}
        assert first not in alive and second in alive  # the old backend was closed, not leaked
        s = db.stats()
        assert (s.recycles, s.invalidations, s.reconnects, s.connects, s.checkouts) == (1, 0, 0, 2, 3)
    finally:
        db.close()
    assert_no_leaked_connections(pg_cluster, pg_dbname)
