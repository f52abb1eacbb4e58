"""Building the workload the advisor is given (`statements.statement.Workload`): statements with their weights,
and the seconds those weights cover.

Callers (the recommend command, the daemon's advise job, the demo) build it here and hand it to the advisor, so
advice flows one way: capture first, then advise, then save. `capture_workload` takes it from
pg_stat_statements over the configured look-back; `given_workload` wraps statements read from query files.
"""

from __future__ import annotations

from datetime import datetime

from psycopg2 import sql

from indexd.clock import utcnow
from indexd.config.schema import IndexingSettings
from indexd.db.pool import Database
from indexd.state.migrations import migrate
from indexd.statements.statement import Statement, Workload
from indexd.workload.capture import cumulative_workload, take_snapshot, workload

NO_EARLIER_SNAPSHOT = "no earlier snapshot: the workload is every statement since pg_stat_statements was reset"
NOTHING_IN_SNAPSHOTS = ("the snapshots of the look-back hold no statement yet (capture started recently): the "
                        "workload is every statement since pg_stat_statements was reset")
NOT_FROM_SNAPSHOTS = ("read-only: the workload is every statement since pg_stat_statements was reset (no snapshot "
                      "taken or read)")


def given_workload(statements: list[Statement], settings: IndexingSettings) -> Workload:
    """Statements from query files (or a test): their calls count as if made over one look-back."""
    return Workload(list(statements), settings.lookback.total_seconds(), captured=False)


def capture_workload(db: Database, settings: IndexingSettings, now: datetime | None = None) -> Workload:
    """The look-back's workload from pg_stat_statements, and the seconds it spans.

    The state schema is created or upgraded first (snapshots live there). With no snapshot in the look-back one
    is taken now, and the workload is every statement since pg_stat_statements was last reset (with a warning);
    so it is too when the look-back's snapshots hold no statement yet (a daemon that has just started capturing).
    """
    migrate(db)
    now = now or utcnow()
    warnings: list[str] = []
    if _snapshot_span(db, now - settings.lookback, now) is None:
        take_snapshot(db, now)
        warnings.append(NO_EARLIER_SNAPSHOT)
    statements = workload(db, settings.lookback, now=now, min_calls=settings.min_calls)
    span = _snapshot_span(db, now - settings.lookback, now) or 0.0
    if not statements and span > 0:
        statements = cumulative_workload(db, min_calls=settings.min_calls)
        span = 0.0
        if statements:
            warnings.append(NOTHING_IN_SNAPSHOTS)
    if span <= 0:
        span = _since_stats_reset(db, now)
    return Workload(statements, max(span, 1.0), captured=True, warnings=tuple(warnings))


def read_workload(db: Database, settings: IndexingSettings, now: datetime | None = None, *,
                  snapshots: bool = True) -> Workload:
    """The workload, writing nothing (recommend --no-save, a standby): the look-back's snapshots when `snapshots`
    and the state schema holds two or more of them, else every statement since pg_stat_statements was reset.

    A standby passes snapshots=False: its state schema is the primary's, with the primary's snapshots, while its
    own pg_stat_statements counts the statements run on the standby."""
    now = now or utcnow()
    why = NOT_FROM_SNAPSHOTS
    if snapshots and _snapshots_readable(db):
        span = _snapshot_span(db, now - settings.lookback, now) or 0.0
        if span > 0:
            statements = workload(db, settings.lookback, now=now, min_calls=settings.min_calls)
            if statements:
                return Workload(statements, span, captured=True)
            why = NOTHING_IN_SNAPSHOTS
    statements = cumulative_workload(db, min_calls=settings.min_calls)
    span = _since_stats_reset(db, now)
    return Workload(statements, max(span, 1.0), captured=True, warnings=(why,))


def _snapshots_readable(db: Database) -> bool:
    """Whether the state schema has a snapshots table this role may read (no migration is run to make one)."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(format('%%I.snapshots', %s::text))", (db.settings.state_schema,))
        found = cur.fetchone()[0]
        if found is None:
            return False
        cur.execute("SELECT has_table_privilege(%s::regclass, 'SELECT') AND has_table_privilege("
                    "to_regclass(format('%%I.statement_snapshots', %s::text)), 'SELECT')",
                    (found, db.settings.state_schema))
        return bool(cur.fetchone()[0])


def _snapshot_span(db: Database, start: datetime, end: datetime) -> float | None:
    """Seconds between the oldest and newest snapshot in [start, end] (None when there is none)."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT extract(epoch FROM max(taken_at) - min(taken_at)) FROM {}.snapshots "
                    "WHERE taken_at BETWEEN %s AND %s").format(sql.Identifier(db.settings.state_schema)),
            (start, end),
        )
        row = cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _since_stats_reset(db: Database, now: datetime) -> float:
    """Seconds the cumulative pg_stat_statements counters cover."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                    "WHERE e.extname = 'pg_stat_statements'")
        schema = cur.fetchone()[0]
        cur.execute(sql.SQL("SELECT extract(epoch FROM %s - stats_reset) FROM {}.pg_stat_statements_info").format(
            sql.Identifier(schema)), (now,))
        return float(cur.fetchone()[0] or 0.0)
