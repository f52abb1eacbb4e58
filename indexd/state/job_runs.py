"""The table `job_runs`: one row per scheduled job run, written when it starts and completed when it ends.

Pruned by age (retention.metrics) in `state/history.py`.
"""

from __future__ import annotations

from datetime import datetime

from psycopg2 import sql

from indexd.db.pool import PgConnection

MESSAGE_CHARS = 2000  # a run's message is its one-line decision; a longer one is cut here


def start_run(conn: PgConnection, schema: str, *, job: str, job_id: str, started_at: datetime) -> int:
    """A row for a run that has just started (no outcome yet: `status` shows it running); returns its id."""
    statement = sql.SQL("INSERT INTO {}.job_runs (job, job_id, started_at) VALUES (%s, %s, %s) RETURNING id").format(
        sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (job, job_id, started_at))
        return int(cur.fetchone()[0])


def finish_run(conn: PgConnection, schema: str, run_id: int, *, outcome: str, message: str) -> None:
    """Complete the row of a run: its outcome (ok, failed, skipped) and its decision."""
    statement = sql.SQL("UPDATE {}.job_runs SET finished_at = now(), outcome = %s, message = %s WHERE id = %s").format(
        sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (outcome, message[:MESSAGE_CHARS], run_id))


def record_run(conn: PgConnection, schema: str, *, job: str, job_id: str, started_at: datetime, outcome: str,
               message: str) -> None:
    """The whole row of a finished run at once (its start could not be written)."""
    statement = sql.SQL("INSERT INTO {}.job_runs (job, job_id, started_at, finished_at, outcome, message)"
                        " VALUES (%s, %s, %s, now(), %s, %s)").format(sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (job, job_id, started_at, outcome, message[:MESSAGE_CHARS]))


def last_started(conn: PgConnection, schema: str, job: str) -> datetime | None:
    """When the last run of `job` (by any process) started; None when it never ran."""
    statement = sql.SQL("SELECT max(started_at) FROM {}.job_runs WHERE job = %s").format(sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (job,))
        row = cur.fetchone()
    return None if row is None else row[0]
