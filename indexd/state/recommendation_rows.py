"""Reading the table `recommendations`: stored rows, what may be built now, what awaits a verdict, the indexes
indexd built. Every write is `indexd.state.recommendations`; the statuses are `indexd.state.statuses`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql

from indexd.db.pool import PgConnection
from indexd.state.statuses import (
    NEVER_BUILT,
    QUEUED,
    Origin,
    S,
    Status,
)


def status_in(column: str, statuses: Iterable[Status]) -> sql.Composed:
    """`column IN ('a', 'b')` in Status order: the same text as the migrations' lists."""
    ordered = [s for s in Status if s in set(statuses)]
    return sql.SQL("{} IN ({})").format(sql.SQL(column), sql.SQL(", ").join(map(sql.Literal, ordered)))


# ---- reading ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRecommendation:
    """One row of the table, as the lifecycle reads it."""

    id: int
    status: Status
    fingerprint: str
    table_schema: str
    table_name: str
    columns: list[Any]
    method: str
    where_clause: str | None
    include: list[Any]
    index_name: str
    create_sql: str
    estimated_size_bytes: int | None
    improvement_pct: float | None
    write_overhead: float | None
    queries: list[Any]
    reason: str | None = None
    origin: Origin = Origin.WORKLOAD
    attempts: int = 0  # interrupted builds so far
    decided_by: str | None = None  # who approved or rejected it last
    benefit_ms_per_s: float | None = None  # read time saved, in write_overhead's unit (None: saved before it was)

    @property
    def table(self) -> str:
        return f"{self.table_schema}.{self.table_name}"


_COLUMNS = ("id", "status", "fingerprint", "table_schema", "table_name", "columns", "method", "where_clause",
            "include", "index_name", "create_sql", "estimated_size_bytes", "improvement_pct", "write_overhead",
            "queries", "reason", "origin", "attempts", "decided_by", "benefit_ms_per_s")
# A person approved it: approved, or queued again after an interrupted run of an approved build (its last
# decision, the only one that leaves decided_at set on a row that can be building or interrupted, was approve).
_APPROVED = sql.SQL("({a} OR ({i} AND {p}decided_at IS NOT NULL))")


def approved_sql(prefix: str = "") -> sql.Composed:
    column = f"{prefix}status"
    return _APPROVED.format(a=status_in(column, [S.APPROVED]), i=status_in(column, [S.INTERRUPTED]),
                            p=sql.SQL(prefix))


def _row(values: tuple[Any, ...]) -> StoredRecommendation:
    fields = dict(zip(_COLUMNS, values, strict=True))
    fields["status"], fields["origin"] = Status(fields["status"]), Origin(fields["origin"])
    return StoredRecommendation(**fields)


def _select(conn: PgConnection, schema: str, where: sql.Composable, params: list[Any]) -> list[StoredRecommendation]:
    statement = sql.SQL("SELECT {} FROM {}.recommendations WHERE {} ORDER BY improvement_pct DESC NULLS LAST, id"
                        ).format(sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), sql.Identifier(schema), where)
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return [_row(row) for row in cur.fetchall()]


def load_recommendations(conn: PgConnection, schema: str, *, statuses: Iterable[Status] | None = None,
                         ids: Iterable[int] | None = None) -> list[StoredRecommendation]:
    """Recommendations by status and/or id, the most beneficial first."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if statuses is not None:
        where.append(sql.SQL("status = ANY(%s)"))
        params.append([str(s) for s in statuses])
    if ids is not None:
        where.append(sql.SQL("id = ANY(%s)"))
        params.append(list(ids))
    return _select(conn, schema, sql.SQL(" AND ").join(where), params)


def load_buildable(conn: PgConnection, schema: str, *, unapproved: bool) -> list[StoredRecommendation]:
    """What a build run may take, the most beneficial first: what a person approved, and with `unapproved`
    (mode auto) also pending or interrupted advice of the real workload (offline advice always waits for a
    person, and so does an index shape indexd built and reverted before)."""
    return _select(conn, schema, _buildable(schema, "recommendations."), [unapproved])


def _buildable(schema: str, prefix: str) -> sql.Composed:
    return sql.SQL("{queued} AND ({approved} OR (%s AND {unapproved}))").format(
        queued=status_in(f"{prefix}status", QUEUED), approved=approved_sql(prefix), unapproved=auto_sql(schema, prefix))


def auto_sql(schema: str, prefix: str) -> sql.Composed:
    """What mode auto builds without a person: workload advice for a shape that was never reverted. A revert (a
    verdict, or an unused drop) says building it again would not help; without this the next advice would
    queue it again, and auto would build and revert it on every cycle."""
    return sql.SQL("{p}origin = {w} AND NOT EXISTS (SELECT 1 FROM {s}.recommendations o"
                   " WHERE o.fingerprint = {p}fingerprint AND {reverted})").format(
        p=sql.SQL(prefix), w=sql.Literal(Origin.WORKLOAD), s=sql.Identifier(schema),
        reverted=status_in("o.status", [S.REVERTED]))


def status_of(conn: PgConnection, schema: str, rec_id: int, *, lock: bool = False) -> Status | None:
    """The row's status now (None: no such row); `lock` keeps it locked until the transaction ends."""
    statement = sql.SQL("SELECT status FROM {}.recommendations WHERE id = %s{}").format(
        sql.Identifier(schema), sql.SQL(" FOR UPDATE") if lock else sql.SQL(""))
    with conn.cursor() as cur:
        cur.execute(statement, (rec_id,))
        row = cur.fetchone()
    return None if row is None else Status(row[0])


@dataclass(frozen=True)
class BuiltIndex:
    """A recommendation indexd built, waiting for (or retrying) its verdict."""

    recommendation_id: int
    schema: str
    table: str
    index_name: str
    queries: Any
    build_started: datetime  # the create_index intent: the "before" window ends here
    built_at: datetime  # its successful outcome: the "after" window starts here
    pending_revert: bool  # judged 'reverted' earlier, the drop has not happened yet


_AWAITING_VERDICT = """
SELECT r.id, r.table_schema, r.table_name, r.index_name, r.queries,
       coalesce(b.started, b.built, r.updated_at), coalesce(b.built, r.updated_at),
       coalesce(v.verdict = 'reverted', false)
  FROM {s}.recommendations r
  LEFT JOIN LATERAL (
       SELECT max(m.at) FILTER (WHERE m.phase = 'intent') AS started,
              max(m.at) FILTER (WHERE m.phase = 'outcome' AND m.outcome = 'succeeded') AS built
         FROM {s}.mutation_log m WHERE m.recommendation_id = r.id AND m.action = 'create_index') b ON true
  LEFT JOIN LATERAL (
       SELECT verdict FROM {s}.index_verdicts WHERE recommendation_id = r.id AND verdict <> 'inconclusive'
        ORDER BY decided_at DESC, id DESC LIMIT 1) v ON true
 WHERE r.status = {built} AND coalesce(b.built, r.updated_at) <= %s
   AND (v.verdict IS NULL OR (v.verdict = 'reverted' AND %s))
 ORDER BY r.id
"""


def awaiting_verdict(conn: PgConnection, schema: str, ready_before: datetime,
                     auto_revert: bool) -> list[BuiltIndex]:
    """Built recommendations old enough for a verdict and without a final one (or with a revert still to do)."""
    statement = sql.SQL(_AWAITING_VERDICT).format(s=sql.Identifier(schema), built=sql.Literal(S.BUILT))
    with conn.cursor() as cur:
        cur.execute(statement, (ready_before, auto_revert))
        return [BuiltIndex(*row) for row in cur.fetchall()]


def own_index_builds(conn: PgConnection, schema: str) -> dict[tuple[str, str], datetime | None]:
    """indexd's indexes by (schema, name) with their build time: recommendations a build was started for."""
    statement = sql.SQL(
        "SELECT r.table_schema, r.index_name, max(m.at) FROM {0}.recommendations r"
        " LEFT JOIN {0}.mutation_log m ON m.recommendation_id = r.id AND m.action = 'create_index'"
        " AND m.phase = 'outcome' AND m.outcome = 'succeeded'"
        " WHERE r.index_name LIKE 'indexd\\_%%' AND NOT {1} GROUP BY 1, 2").format(
        sql.Identifier(schema), status_in("r.status", NEVER_BUILT))
    with conn.cursor() as cur:
        cur.execute(statement)
        return {(r[0], r[1]): r[2] for r in cur.fetchall()}
