"""Pruning indexd's own history in the state schema: statement snapshots, the audit log, job runs.

Rows older than their retention go in small batches, each its own short transaction with a short
lock_timeout, so pruning never holds long locks or bloats one huge transaction. A batch that cannot get its
lock is retried a few times; then that table waits for the next run.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from indexd.clock import utcnow
from indexd.config.schema import RetentionSettings
from indexd.db.pool import Database, PgConnection

log = logging.getLogger(__name__)

LOCK_TIMEOUT = timedelta(seconds=2)
STATEMENT_TIMEOUT = timedelta(seconds=60)
LOCK_RETRIES = 3


@dataclass(frozen=True)
class Target:
    """One kind of history: the rows of `table` whose `column` is older than the retention."""

    key: str
    table: str
    column: str
    delete_sql: str


# statement_snapshots rows go first, in batches, before the snapshots that own them: deleting a snapshot
# would cascade to all of its (possibly thousands of) statement rows in one transaction.
_STATEMENT_ROWS = """
DELETE FROM {s}.statement_snapshots WHERE ctid = ANY (ARRAY(
    SELECT ss.ctid FROM {s}.statement_snapshots ss JOIN {s}.snapshots sn ON sn.id = ss.snapshot_id
    WHERE sn.taken_at < %(cutoff)s LIMIT %(batch)s))
"""
_BY_ID = """
DELETE FROM {s}.{table} WHERE id = ANY (ARRAY(
    SELECT id FROM {s}.{table} WHERE {column} < %(cutoff)s ORDER BY id LIMIT %(batch)s))
"""

TARGETS = (
    Target("statement_snapshots", "statement_snapshots", "taken_at", _STATEMENT_ROWS),
    Target("snapshots", "snapshots", "taken_at", _BY_ID),
    Target("mutation_log", "mutation_log", "at", _BY_ID),
    Target("job_runs", "job_runs", "started_at", _BY_ID),
)


def cutoffs(retention: RetentionSettings, now: datetime) -> dict[str, datetime]:
    """The age limit of each kind of history (pure: the decision apart from the deleting)."""
    return {
        "statement_snapshots": now - retention.statement_snapshots,
        "snapshots": now - retention.statement_snapshots,
        "mutation_log": now - retention.audit_log,
        "job_runs": now - retention.metrics,
    }


def _delete_batch(conn: PgConnection, statement: sql.Composed, cutoff: datetime, batch: int) -> int:
    with conn.cursor() as cur:
        cur.execute(statement, {"cutoff": cutoff, "batch": batch})
        return int(cur.rowcount)


def _prune_target(db: Database, target: Target, cutoff: datetime, batch: int,
                  cancel: threading.Event | None, lock_timeout: timedelta) -> int:
    schema = sql.Identifier(db.settings.state_schema)
    statement = sql.SQL(target.delete_sql).format(s=schema, table=sql.Identifier(target.table),
                                                  column=sql.Identifier(target.column))
    total = 0
    failures = 0
    while not (cancel is not None and cancel.is_set()):
        try:
            with db.connection(lock_timeout=lock_timeout, statement_timeout=STATEMENT_TIMEOUT) as conn:
                deleted = _delete_batch(conn, statement, cutoff, batch)
        except psycopg2.errors.LockNotAvailable:
            failures += 1
            if failures >= LOCK_RETRIES:
                log.warning("pruning %s.%s: lock not available %d times, leaving the rest for the next run",
                            db.name, target.table, failures)
                break
            continue
        total += deleted
        if deleted < batch:
            break
    return total


def _state_exists(db: Database) -> bool:
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, 'job_runs'))", (db.settings.state_schema,))
        row = cur.fetchone()
        return row is not None and row[0] is not None


def prune_history(db: Database, retention: RetentionSettings, now: datetime | None = None, *,
                  cancel: threading.Event | None = None, lock_timeout: timedelta = LOCK_TIMEOUT) -> dict[str, int]:
    """Delete history older than its retention; returns rows deleted per table."""
    if not _state_exists(db):
        log.warning("history of %s not pruned: no state schema %r (run 'indexd migrate')",
                    db.name, db.settings.state_schema)
        return {}
    limits = cutoffs(retention, now or utcnow())
    batch = max(1, retention.batch_size)
    deleted = {t.key: _prune_target(db, t, limits[t.key], batch, cancel, lock_timeout) for t in TARGETS}
    log.info("pruned history of %s: %s", db.name, ", ".join(f"{k} {v}" for k, v in deleted.items()))
    return deleted
