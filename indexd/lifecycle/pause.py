"""The emergency switch, stored in the state table `pause` so that every daemon sees it at once.

A pause is active while it has not been resumed and its `until` (if any) is still ahead: it ends by itself.
Pausing and resuming are audited. Guards refuse every mutation while a pause is active.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg2 import sql

from indexd.clock import utcnow
from indexd.db.pool import Database, PgConnection
from indexd.lifecycle import announce, audit

log = logging.getLogger(__name__)


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


def pause(db: Database, duration: timedelta | None, reason: str, actor: str | None = None, *,
          now: datetime | None = None) -> Pause:
    """Pause every change to `db` (for `duration`, or until resumed); audited. Returns the new pause."""
    schema, who, since = db.settings.state_schema, actor or audit.actor(), now or utcnow()
    if duration is not None and duration <= timedelta(0):
        raise ValueError(f"a pause must last a positive time, not {duration}")
    until = since + duration if duration is not None else None
    with db.connection() as conn:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("INSERT INTO {}.pause (paused_at, until, reason, paused_by) VALUES (%s, %s, %s, %s)"
                        " RETURNING {}").format(sql.Identifier(schema), _COLUMNS),
                (since, until, reason, who),
            )
            made = Pause(*cur.fetchone())
        audit.record_event(conn, schema, action="pause", target=db.name, reason=reason or None,
                           after={"pause_id": made.id, "until": until, "by": who}, actor=who)
    log.warning("indexing on %s %s", db.name, made.describe())
    announce.pause_started(db.name, made.id, made.describe(), made.until, made.reason, who)
    return made


def resume(db: Database, actor: str | None = None, *, now: datetime | None = None) -> list[Pause]:
    """End every active pause of `db`; audited. Returns the pauses ended (empty when none was active)."""
    schema, who, at = db.settings.state_schema, actor or audit.actor(), now or utcnow()
    with db.connection() as conn:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("UPDATE {}.pause SET resumed_at = %s, resumed_by = %s WHERE resumed_at IS NULL"
                        " AND (until IS NULL OR until > %s) RETURNING {}").format(sql.Identifier(schema), _COLUMNS),
                (at, who, at),
            )
            ended = [Pause(*row) for row in cur.fetchall()]
        if ended:
            audit.record_event(conn, schema, action="resume", target=db.name,
                               before={"pause_ids": [p.id for p in ended]}, after={"by": who}, actor=who)
    if ended:
        log.warning("indexing on %s resumed by %s", db.name, who)
        announce.pause_ended(db.name, [p.id for p in ended], who)
    return ended
