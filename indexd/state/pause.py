"""The emergency switch's table (`pause`): every write to it and the one reading every guard makes.

A pause is active while it has not been resumed and its `until` (if any) is still ahead: it ends by itself.
Auditing and logging a pause or a resume belong to the caller (`lifecycle/pause.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg2 import sql

from indexd.db.pool import PgConnection


@dataclass(frozen=True)
class Pause:
    id: int
    paused_at: datetime
    until: datetime | None  # None: until someone resumes
    reason: str
    paused_by: str

    def describe(self) -> str:
        ends = f"until {self.until:%Y-%m-%d %H:%M:%S %Z}" if self.until else "until resumed"
        why = self.reason or "no reason given"
        return f"paused by {self.paused_by} at {self.paused_at:%Y-%m-%d %H:%M:%S %Z} ({ends}): {why}"


_COLUMNS = sql.SQL("id, paused_at, until, reason, paused_by")


def active_pause(conn: PgConnection, schema: str, now: datetime) -> Pause | None:
    """The active pause at `now` (the longest-lasting one if several), or None."""
    statement = sql.SQL(
        "SELECT {} FROM {}.pause WHERE resumed_at IS NULL AND paused_at <= %s AND (until IS NULL OR until > %s)"
        " ORDER BY until IS NOT NULL, until DESC, id DESC LIMIT 1"
    ).format(_COLUMNS, sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (now, now))
        row = cur.fetchone()
    return None if row is None else Pause(*row)


def ran_out(conn: PgConnection, schema: str, after: datetime, now: datetime) -> list[Pause]:
    """The pauses nobody resumed whose duration ran out in (after, now], oldest end first."""
    statement = sql.SQL(
        "SELECT {} FROM {}.pause WHERE resumed_at IS NULL AND until > %s AND until <= %s ORDER BY until, id"
    ).format(_COLUMNS, sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (after, now))
        return [Pause(*row) for row in cur.fetchall()]


def insert_pause(conn: PgConnection, schema: str, *, paused_at: datetime, until: datetime | None, reason: str,
                 paused_by: str) -> Pause:
    """A new pause row (not committed: the caller audits it in the same transaction)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {}.pause (paused_at, until, reason, paused_by) VALUES (%s, %s, %s, %s)"
                    " RETURNING {}").format(sql.Identifier(schema), _COLUMNS),
            (paused_at, until, reason, paused_by),
        )
        return Pause(*cur.fetchone())


def end_active_pauses(conn: PgConnection, schema: str, *, at: datetime, by: str) -> list[Pause]:
    """Mark every pause still active at `at` as resumed by `by`; returns them (empty when none was active)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {}.pause SET resumed_at = %s, resumed_by = %s WHERE resumed_at IS NULL"
                    " AND (until IS NULL OR until > %s) RETURNING {}").format(sql.Identifier(schema), _COLUMNS),
            (at, by, at),
        )
        return [Pause(*row) for row in cur.fetchall()]
