"""Tables, recommendation rows, audit rows and index validity for the lifecycle's integration and fault tests."""

from __future__ import annotations

import json
from typing import Any

from psycopg2 import sql

from indexd.advisor.model import IndexCandidate, IndexKey
from indexd.embedded import EmbeddedCluster

STATE = "indexd"


def make_table(conn: Any, schema: str, table: str, columns: tuple[str, ...] = ("a", "b"), rows: int = 1000) -> None:
    """A table with an id and integer columns, filled with `rows` rows (any names, quoted)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("CREATE TABLE {}.{} (id bigserial PRIMARY KEY, {})").format(
            sql.Identifier(schema), sql.Identifier(table),
            sql.SQL(", ").join(sql.SQL("{} integer").format(sql.Identifier(c)) for c in columns)))
        cur.execute(sql.SQL("INSERT INTO {}.{} ({}) SELECT {} FROM generate_series(1, %s) g").format(
            sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.SQL("(g * {}) %% 1000").format(sql.Literal(i + 7)) for i in range(len(columns)))),
            (rows,))
        cur.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))


def candidate(schema: str, table: str, *columns: str) -> IndexCandidate:
    return IndexCandidate(schema=schema, table=table, keys=tuple(IndexKey(column=c) for c in columns))


def insert_recommendation(conn: Any, cand: IndexCandidate, *, status: str = "approved", state: str = STATE,
                          improvement_pct: float = 50.0, write_overhead: float = 1.0,
                          benefit_ms_per_s: float | None = 10.0, estimated_size_bytes: int = 100_000) -> int:
    """A row in the state table `recommendations` for this candidate, as the advisor writes it."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.recommendations (status, fingerprint, table_schema, table_name, columns, method,"
                " where_clause, include, index_name, create_sql, estimated_size_bytes, improvement_pct,"
                " write_overhead, benefit_ms_per_s) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id"
            ).format(sql.Identifier(state)),
            (status, cand.fingerprint(), cand.schema, cand.table, json.dumps([k.label() for k in cand.keys]),
             cand.method, cand.where, json.dumps(list(cand.include)), cand.name(), cand.create_sql().as_string(conn),
             estimated_size_bytes, improvement_pct, write_overhead, benefit_ms_per_s),
        )
        return int(cur.fetchone()[0])


def rec_status(conn: Any, rec_id: int, state: str = STATE) -> str:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT status FROM {}.recommendations WHERE id = %s").format(sql.Identifier(state)),
                    (rec_id,))
        return str(cur.fetchone()[0])


def audit_rows(conn: Any, action: str | None = None, state: str = STATE) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT id, action, phase, intent_id, target, outcome, reason, recommendation_id, before,"
                            " after, actor FROM {}.mutation_log WHERE %s::text IS NULL OR action = %s ORDER BY id"
                            ).format(sql.Identifier(state)), (action, action))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def index_valid(conn: Any, schema: str, name: str) -> bool | None:
    """True valid, False INVALID, None absent."""
    with conn.cursor() as cur:
        cur.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                    (schema, name))
        row = cur.fetchone()
        return None if row is None else bool(row[0])



def run_lookups(cluster: EmbeddedCluster, dbname: str, query: str, calls: int) -> None:
    """Run `query` (one parameter: a key of the items) `calls` times on a connection of its own, then make its index
    scans visible in the statistics before returning."""
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            for i in range(calls):
                cur.execute(query, (i * 7 * 13 + 7,))
                cur.fetchall()
            cur.execute("SELECT pg_stat_force_next_flush()")
    finally:
        conn.close()
