"""The state table `recommendations` as the lifecycle reads and moves it: load, claim for a build, finish.

The advisor writes the rows; the lifecycle only changes their status (pending/approved -> building -> built or
failed or back, built -> kept / reverted), each change in one statement so two processes cannot both claim a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from indexd.db.pool import PgConnection


@dataclass(frozen=True)
class StoredRecommendation:
    """One row of the state table `recommendations`, as the lifecycle reads it."""

    id: int
    status: str
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

    @property
    def table(self) -> str:
        return f"{self.table_schema}.{self.table_name}"


REC_COLUMNS = ("id", "status", "fingerprint", "table_schema", "table_name", "columns", "method", "where_clause",
               "include", "index_name", "create_sql", "estimated_size_bytes", "improvement_pct", "write_overhead",
               "queries", "reason")


def load_recommendations(conn: PgConnection, schema: str, *, statuses: tuple[str, ...] | None = None,
                         ids: tuple[int, ...] | None = None) -> list[StoredRecommendation]:
    """Recommendations by status and/or id, the most beneficial first."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if statuses is not None:
        where.append(sql.SQL("status = ANY(%s)"))
        params.append(list(statuses))
    if ids is not None:
        where.append(sql.SQL("id = ANY(%s)"))
        params.append(list(ids))
    statement = sql.SQL("SELECT {} FROM {}.recommendations WHERE {}"
                        " ORDER BY improvement_pct DESC NULLS LAST, id").format(
        sql.SQL(", ").join(map(sql.Identifier, REC_COLUMNS)), sql.Identifier(schema), sql.SQL(" AND ").join(where))
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return [StoredRecommendation(*row) for row in cur.fetchall()]


def claim_for_build(conn: PgConnection, schema: str, rec_id: int) -> str | None:
    """Move a pending/approved recommendation to `building`; its previous status, or None if it was not
    buildable any more (another process claimed it first, or a person rejected it meanwhile)."""
    statement = sql.SQL(
        "UPDATE {0}.recommendations r SET status = 'building', updated_at = now() FROM"
        " (SELECT id, status FROM {0}.recommendations WHERE id = %s FOR UPDATE) p"
        " WHERE r.id = p.id AND p.status IN ('pending', 'approved') RETURNING p.status"
    ).format(sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (rec_id,))
        row = cur.fetchone()
    return None if row is None else str(row[0])


def finish_build(conn: PgConnection, schema: str, rec_id: int, status: str, *, reason: str | None = None) -> None:
    """Leave `building` for built, failed, or back to where it was (a harmless failure, retried later)."""
    statement = sql.SQL(
        "UPDATE {}.recommendations SET status = %s, reason = coalesce(%s, reason), updated_at = now()"
        " WHERE id = %s AND status = 'building'"
    ).format(sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (status, reason, rec_id))


def set_status(conn: PgConnection, schema: str, recommendation_id: int, status: str, reason: str) -> None:
    """Move a built recommendation to its final status (kept / reverted), or only record why it stays built."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL(
            "UPDATE {}.recommendations SET status = %s, reason = %s, updated_at = now()"
            " WHERE id = %s AND status = 'built'").format(sql.Identifier(schema)),
            (status, reason[:1000], recommendation_id))
