"""Pruning indexd's own history: old rows go in small batches, young rows stay, locks are never held long."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from indexd.config.schema import RetentionSettings
from indexd.db.pool import Database
from indexd.state.history import cutoffs, prune_history
from indexd.state.migrations import migrate

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


def _seed(database: Database) -> None:
    """Snapshots with statements, audit rows and job runs at ages on both sides of each default limit."""
    with database.connection() as conn, conn.cursor() as cur:
        cur.execute("SET search_path TO indexd")
        for days in (1, 89, 91, 200):
            cur.execute("INSERT INTO snapshots (taken_at, statements) VALUES (%s, 3) RETURNING id",
                        (NOW - timedelta(days=days),))
            snap = cur.fetchone()[0]
            cur.execute("INSERT INTO statement_snapshots (snapshot_id, queryid, userid, query, calls, "
                        "total_exec_time, mean_exec_time, rows, shared_blks_hit, shared_blks_read) "
                        "SELECT %s, q, 10, 'select ' || q, 1, 1, 1, 1, 0, 0 FROM generate_series(1, 3) q", (snap,))
        intent_ids = []
        for days in (10, 364, 366, 400, 400):
            cur.execute("INSERT INTO mutation_log (at, actor, action, phase, outcome) "
                        "VALUES (%s, 'test', 'create_index', 'intent', 'started') RETURNING id",
                        (NOW - timedelta(days=days),))
            intent_ids.append(cur.fetchone()[0])
        # a young outcome pointing at an old intent: the intent may go, the outcome stays (intent_id -> NULL)
        cur.execute("INSERT INTO mutation_log (at, actor, action, phase, intent_id, outcome) "
                    "VALUES (%s, 'test', 'create_index', 'outcome', %s, 'succeeded')",
                    (NOW - timedelta(days=5), intent_ids[-1]))
        for days in (1, 179, 181, 181, 181, 181, 181):
            cur.execute("INSERT INTO job_runs (job, job_id, started_at, outcome) VALUES ('capture', 'x', %s, 'ok')",
                        (NOW - timedelta(days=days),))


def _count(database: Database, table: str) -> int:
    with database.connection() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM indexd.{table}")  # noqa: S608 - a fixed table name
        return int(cur.fetchone()[0])


def test_cutoffs_follow_the_settings() -> None:
    limits = cutoffs(RetentionSettings(), NOW)
    assert limits["statement_snapshots"] == NOW - timedelta(days=90)
    assert limits["mutation_log"] == NOW - timedelta(days=365)
    assert limits["job_runs"] == NOW - timedelta(days=180)


def test_prunes_old_rows_in_batches(database: Database) -> None:
    migrate(database)
    _seed(database)
    deleted = prune_history(database, RetentionSettings(batch_size=2), now=NOW)
    assert deleted == {"statement_snapshots": 6, "snapshots": 2, "mutation_log": 3, "job_runs": 5}
    assert _count(database, "snapshots") == 2 and _count(database, "statement_snapshots") == 6
    assert _count(database, "mutation_log") == 3 and _count(database, "job_runs") == 2
    with database.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT intent_id FROM indexd.mutation_log WHERE phase = 'outcome'")
        assert cur.fetchall() == [(None,)]
    assert prune_history(database, RetentionSettings(), now=NOW) == {
        "statement_snapshots": 0, "snapshots": 0, "mutation_log": 0, "job_runs": 0}


def test_a_locked_table_is_skipped_not_waited_on(database: Database, pg_cluster, pg_dbname: str) -> None:  # type: ignore[no-untyped-def]
    migrate(database)
    _seed(database)
    blocker = pg_cluster.connect(pg_dbname, autocommit=False)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE indexd.job_runs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        deleted = prune_history(database, RetentionSettings(batch_size=100), now=NOW,
                                lock_timeout=timedelta(milliseconds=200))
        elapsed = time.monotonic() - started
    finally:
        blocker.rollback()
        blocker.close()
    assert deleted["job_runs"] == 0 and deleted["mutation_log"] == 3
    assert elapsed < 5
    assert _count(database, "job_runs") == 7


def test_cancel_stops_between_batches(database: Database) -> None:
    migrate(database)
    _seed(database)
    cancel = threading.Event()
    cancel.set()
    assert set(prune_history(database, RetentionSettings(), now=NOW, cancel=cancel).values()) == {0}


def test_without_state_schema_nothing_happens(database: Database) -> None:
    assert prune_history(database, RetentionSettings(), now=NOW) == {}
