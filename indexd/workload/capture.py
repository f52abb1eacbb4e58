"""Workload capture: snapshots of pg_stat_statements counters, and the workload of a look-back as their deltas.

pg_stat_statements keeps cumulative counters since its last reset. A snapshot copies this database's counters
into the state tables; the workload of a look-back is the difference between the newest snapshot and the oldest
one inside the look-back, so a statement weighs what it really cost in that period.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg2.errors
from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from psycopg2 import sql

from indexd.clock import utcnow
from indexd.db.pool import Database, PgConnection
from indexd.errors import IndexdError
from indexd.state.snapshots import insert_snapshot
from indexd.statements.statement import Statement
from indexd.statements.tree import walk

log = logging.getLogger(__name__)

EXTENSION = "pg_stat_statements"
STATS_ROLE = "pg_read_all_stats"

# Statements that plan through the executor; everything else pg_stat_statements tracks is a utility statement.
_PLANNABLE = re.compile(r"^\s*(?:\(\s*)*(select|insert|update|delete|with|merge|values|table)\b", re.IGNORECASE)
_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)


class WorkloadUnavailable(IndexdError):
    """pg_stat_statements cannot be read here; the message says what to change."""


@dataclass(frozen=True)
class SnapshotInfo:
    id: int
    taken_at: datetime
    statements: int
    stats_reset: datetime | None
    stats_reset_changed: bool  # the counters were reset since the previous snapshot (or there was none)


@dataclass(frozen=True)
class _Counters:
    query: str
    calls: int
    total_exec_time: float
    rows: int = 0


_Key = tuple[int, int, bool]  # queryid, userid, toplevel


# ---- preconditions ----------------------------------------------------------------------------------------
def check_extensions(conn: PgConnection) -> list[str]:
    """Every reason pg_stat_statements cannot be used on this connection's database (empty when it can)."""
    problems: list[str] = []
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s",
            (EXTENSION,),
        )
        row = cur.fetchone()
        if not _preloaded(conn, row[0] if row else None):
            problems.append(
                f"{EXTENSION} is not loaded: add shared_preload_libraries = '{EXTENSION}' to postgresql.conf "
                "and restart the server"
            )
        if row is None:
            problems.append(
                f"the extension is not created in database {conn.info.dbname!r}: run CREATE EXTENSION {EXTENSION}"
            )
        cur.execute(
            "SELECT r.rolsuper OR pg_has_role(current_user, %s, 'USAGE') FROM pg_roles r"
            " WHERE r.rolname = current_user",
            (STATS_ROLE,),
        )
        if not cur.fetchone()[0]:
            problems.append(
                f"role {conn.info.user!r} cannot read other roles' statements: GRANT {STATS_ROLE} TO {conn.info.user}"
            )
    return problems


def _preloaded(conn: PgConnection, ext_schema: str | None) -> bool:
    """Whether the library is in shared_preload_libraries.

    The setting is visible to privileged roles only; otherwise, with the extension created, reading its info
    view tells (it fails with "must be loaded via shared_preload_libraries"). Unknowable otherwise: assume yes,
    the missing extension is reported anyway.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'")
        row = cur.fetchone()
        if row is not None:
            return EXTENSION in [lib.strip().strip('"') for lib in row[0].split(",")]
        if ext_schema is None:
            return True
        probe = sql.SQL("SELECT 1 FROM {}.pg_stat_statements_info").format(sql.Identifier(ext_schema))
        if not conn.autocommit:
            cur.execute("SAVEPOINT indexd_probe")
        try:
            cur.execute(probe)
        except psycopg2.errors.ObjectNotInPrerequisiteState:
            if not conn.autocommit:
                cur.execute("ROLLBACK TO SAVEPOINT indexd_probe")
            return False
        if not conn.autocommit:
            cur.execute("RELEASE SAVEPOINT indexd_probe")
        return True


def _require_extension(conn: PgConnection) -> sql.Identifier:
    """The schema pg_stat_statements lives in; WorkloadUnavailable naming every problem otherwise."""
    problems = check_extensions(conn)
    if problems:
        raise WorkloadUnavailable(f"cannot read {EXTENSION}: " + "; ".join(problems))
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s",
            (EXTENSION,),
        )
        return sql.Identifier(cur.fetchone()[0])


# ---- filtering --------------------------------------------------------------------------------------------
_PLANNABLE_NODES = (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema"})


def is_workload_statement(query: str, state_schema: str, not_user: frozenset[str] = frozenset()) -> bool:
    """Whether a tracked statement belongs to the workload, decided on its parse tree.

    Left out: anything but one SELECT/INSERT/UPDATE/DELETE/MERGE; statements that touch no user table (they
    only call functions or read catalogs: set_config, advisory locks, to_regclass, hypopg_*, pg_stat_*);
    PostgreSQL's own foreign-key checks (SELECT ... FROM ONLY t ... FOR KEY SHARE); statements on the state
    schema. `not_user` names relations that are no user table either ("name" unqualified, "schema.name"), such
    as the state tables and extensions' views: see non_user_relations().
    """
    try:
        stmts = parse_sql(query)
    except ParseError:
        body = _LEADING_COMMENTS.sub("", query, count=1)
        return bool(_PLANNABLE.match(body)) and state_schema not in query and EXTENSION not in query
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, _PLANNABLE_NODES):
        return False
    nodes = list(walk(stmts[0].stmt))
    ctes = {n.ctename for n in nodes if isinstance(n, ast.CommonTableExpr)}
    relations = [n for n in nodes if isinstance(n, ast.RangeVar)]
    if any(n.schemaname == state_schema for n in relations) or _is_foreign_key_check(nodes, relations):
        return False
    return any(not _is_catalog(n) and not (not n.schemaname and n.relname in ctes)
               and (f"{n.schemaname}.{n.relname}" if n.schemaname else n.relname) not in not_user
               for n in relations)


def _is_catalog(rel: ast.RangeVar) -> bool:
    return rel.schemaname in _CATALOG_SCHEMAS or (rel.relname or "").startswith("pg_")


def _is_foreign_key_check(nodes: list[Any], relations: list[ast.RangeVar]) -> bool:
    """The shape PostgreSQL's referential-integrity triggers run: FROM ONLY one table ... FOR KEY SHARE."""
    key_share = any(isinstance(n, ast.LockingClause) and n.strength == enums.LockClauseStrength.LCS_FORKEYSHARE
                    for n in nodes)
    return key_share and any(not rel.inh for rel in relations)


_NOT_USER = """
WITH own AS (
    SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND (n.nspname = %s OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                     AND d.objid = c.oid AND d.deptype = 'e'))
)
SELECT nspname || '.' || relname FROM own
UNION
SELECT relname FROM own o WHERE NOT EXISTS (
    SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = o.relname AND c.oid NOT IN (SELECT oid FROM own) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema'))
"""


def non_user_relations(conn: PgConnection, state_schema: str) -> frozenset[str]:
    """The state schema's tables and extensions' relations (hypopg_list_indexes, pg_stat_statements ...), as
    "schema.name", and as "name" when no user relation has the same name."""
    with conn.cursor() as cur:
        cur.execute(_NOT_USER, (state_schema,))
        return frozenset(row[0] for row in cur.fetchall())


def _live_rows(conn: PgConnection, ext_schema: sql.Identifier, state_schema: str) -> list[tuple[Any, ...]]:
    query = sql.SQL(
        "SELECT queryid, userid, toplevel, query, calls, total_exec_time, mean_exec_time, rows,"
        " shared_blks_hit, shared_blks_read FROM {}.pg_stat_statements(true)"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND queryid IS NOT NULL"
    ).format(ext_schema)
    with conn.cursor() as cur:
        cur.execute(query)
        rows = cur.fetchall()
    not_user = non_user_relations(conn, state_schema)
    return [row for row in rows if is_workload_statement(row[3], state_schema, not_user)]


# ---- snapshots --------------------------------------------------------------------------------------------
def take_snapshot(db: Database, now: datetime | None = None) -> SnapshotInfo:
    """Copy this database's pg_stat_statements counters into the state tables, in one transaction."""
    taken_at = now or utcnow()
    state = sql.Identifier(db.settings.state_schema)
    with db.connection() as conn, conn.cursor() as cur:
        ext = _require_extension(conn)
        cur.execute(sql.SQL("SELECT stats_reset, dealloc FROM {}.pg_stat_statements_info").format(ext))
        stats_reset, dealloc = cur.fetchone()
        cur.execute(
            sql.SQL("SELECT stats_reset FROM {}.snapshots ORDER BY taken_at DESC, id DESC LIMIT 1").format(state)
        )
        previous = cur.fetchone()
        rows = _live_rows(conn, ext, db.settings.state_schema)
        snapshot_id = insert_snapshot(conn, db.settings.state_schema, taken_at=taken_at, stats_reset=stats_reset,
                                      dealloc=dealloc, statements=rows)
    changed = previous is None or previous[0] != stats_reset
    log.info("snapshot %s of %s: %d statements%s", snapshot_id, db.name, len(rows),
             ", counters were reset" if changed and previous is not None else "")
    return SnapshotInfo(snapshot_id, taken_at, len(rows), stats_reset, changed)


# ---- the workload of a look-back ----------------------------------------------------------------------------
def workload_deltas(
    old: dict[_Key, _Counters], new: dict[_Key, _Counters], reset_between: bool
) -> dict[_Key, _Counters]:
    """What each statement ran between two snapshots.

    After a reset between them only the counters since the reset count (the newest values); an entry that
    restarted on its own (evicted and re-added, or reset singly) shows fewer calls and also counts from zero;
    an entry missing from the newer snapshot was evicted and drops out.
    """
    deltas: dict[_Key, _Counters] = {}
    for key, cur in new.items():
        before = None if reset_between else old.get(key)
        if before is None or cur.calls < before.calls:
            deltas[key] = cur
        else:
            deltas[key] = _Counters(cur.query, cur.calls - before.calls,
                                    max(0.0, cur.total_exec_time - before.total_exec_time),
                                    max(0, cur.rows - before.rows))
    return deltas


def _statements(counters: dict[_Key, _Counters], min_calls: int) -> list[Statement]:
    """Sum the counters of each queryid over roles and nesting levels; heaviest first."""
    merged: dict[int, tuple[str, int, float, int]] = {}
    for (queryid, _user, _top), c in counters.items():
        query, calls, total, rows = merged.get(queryid, (c.query, 0, 0.0, 0))
        merged[queryid] = (query, calls + c.calls, total + c.total_exec_time, rows + c.rows)
    result = [
        Statement(query=q, calls=calls, total_time_ms=total, queryid=qid, rows=rows)
        for qid, (q, calls, total, rows) in merged.items()
        if calls >= max(1, min_calls)
    ]
    return sorted(result, key=lambda s: (-s.total_time_ms, -s.calls, s.queryid or 0))


def _counters(rows: Iterable[tuple[Any, ...]]) -> dict[_Key, _Counters]:
    return {(int(r[0]), int(r[1]), bool(r[2])): _Counters(r[3], int(r[4]), float(r[5]), int(r[6] or 0))
            for r in rows}


def _snapshot_counters(conn: PgConnection, state: sql.Identifier, snapshot_id: int) -> dict[_Key, _Counters]:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT queryid, userid, toplevel, query, calls, total_exec_time, rows FROM {}.statement_snapshots"
                " WHERE snapshot_id = %s"
            ).format(state),
            (snapshot_id,),
        )
        return _counters(cur.fetchall())


def cumulative_workload(db: Database, min_calls: int = 1) -> list[Statement]:
    """Every statement since pg_stat_statements' last reset, weighted by its cumulative counters."""
    with db.connection() as conn:
        return _cumulative(conn, db.settings.state_schema, min_calls)


def _cumulative(conn: PgConnection, state_schema: str, min_calls: int) -> list[Statement]:
    ext = _require_extension(conn)
    counters = _counters((r[0], r[1], r[2], r[3], r[4], r[5], r[7]) for r in _live_rows(conn, ext, state_schema))
    return _statements(counters, min_calls)


def workload(
    db: Database, lookback: timedelta, now: datetime | None = None, min_calls: int = 1
) -> list[Statement]:
    """The statements of the look-back, weighted by their calls and execution time in it.

    Uses the deltas between the oldest and the newest snapshot inside the look-back. With fewer than two
    snapshots there is nothing to subtract, so it falls back to the live cumulative counters of
    pg_stat_statements (everything since its last reset), and logs that it did.
    """
    now = now or utcnow()
    state = sql.Identifier(db.settings.state_schema)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, stats_reset FROM {}.snapshots WHERE taken_at >= %s AND taken_at <= %s"
                " ORDER BY taken_at, id"
            ).format(state),
            (now - lookback, now),
        )
        snaps = cur.fetchall()
        if len(snaps) < 2:
            log.info("%s: %d snapshot(s) in the last %s; using the cumulative counters since the last reset",
                     db.name, len(snaps), lookback)
            return _cumulative(conn, db.settings.state_schema, min_calls)
        (old_id, old_reset), (new_id, new_reset) = snaps[0], snaps[-1]
        old = _snapshot_counters(conn, state, old_id)
        new = _snapshot_counters(conn, state, new_id)
    reset_between = old_reset != new_reset
    if reset_between:
        log.info("%s: pg_stat_statements was reset in the look-back; counting only since %s", db.name, new_reset)
    return _statements(workload_deltas(old, new, reset_between), min_calls)
