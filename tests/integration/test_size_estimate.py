"""The B-tree size model against real indexes built on real tables (a few hundred thousand rows each)."""

from __future__ import annotations

import psycopg2.extensions
import pytest
from psycopg2 import sql

from indexd.advisor.model import Column, IndexCandidate, IndexKey, Table
from indexd.advisor.size import estimate_btree_size

ROWS = 300_000


def _table(conn: psycopg2.extensions.connection, name: str) -> Table:
    """The catalog facts the size model reads: reltuples and pg_stats of each column."""
    with conn.cursor() as cur:
        cur.execute("SELECT reltuples, relpages FROM pg_class WHERE oid = %s::regclass", (name,))
        rows, pages = cur.fetchone()
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), s.avg_width, s.n_distinct, s.null_frac "
            "FROM pg_attribute a LEFT JOIN pg_stats s ON s.tablename = %s AND s.attname = a.attname "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 ORDER BY a.attnum",
            (name, name),
        )
        cols = tuple(Column(n, t, w, d, f) for n, t, w, d, f in cur.fetchall())
    return Table("public", name, "r", float(rows), int(pages), cols)


def _fraction(conn: psycopg2.extensions.connection, name: str, where: str) -> float:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*)::float / (SELECT count(*) FROM {0}) FROM {0} WHERE ").format(
            sql.Identifier(name)) + sql.SQL(where))
        return float(cur.fetchone()[0])


SHAPES = [
    ("unique int", "CREATE TABLE s (id int)", "INSERT INTO s SELECT g FROM generate_series(1, {n}) g",
     (IndexKey("id"),), None),
    ("skewed int", "CREATE TABLE s (a int)",
     "INSERT INTO s SELECT (random() ^ 3 * 5000)::int FROM generate_series(1, {n}) g", (IndexKey("a"),), None),
    ("bigint + timestamp", "CREATE TABLE s (account bigint, at timestamptz)",
     "INSERT INTO s SELECT g % 2000, now() - g * interval '1 second' FROM generate_series(1, {n}) g",
     (IndexKey("account"), IndexKey("at")), None),
    ("text", "CREATE TABLE s (email text)",
     "INSERT INTO s SELECT 'user' || g || '@example.com' FROM generate_series(1, {n}) g", (IndexKey("email"),),
     None),
    ("low-cardinality text", "CREATE TABLE s (status text)",
     "INSERT INTO s SELECT (ARRAY['new','paid','shipped','cancelled'])[1 + g % 4] FROM generate_series(1, {n}) g",
     (IndexKey("status"),), None),
    ("partial", "CREATE TABLE s (id bigint, status text)",
     "INSERT INTO s SELECT g, CASE WHEN g % 20 = 0 THEN 'pending' ELSE 'done' END FROM generate_series(1, {n}) g",
     (IndexKey("id"),), "status = 'pending'"),
    ("multi-column text + timestamp", "CREATE TABLE s (status text, at timestamptz)",
     "INSERT INTO s SELECT (ARRAY['new','paid','shipped','cancelled'])[1 + g % 4], now() - g * interval '1 minute' "
     "FROM generate_series(1, {n}) g", (IndexKey("status"), IndexKey("at")), None),
    ("multi-column skewed + low-cardinality", "CREATE TABLE s (customer bigint, kind text, n int)",
     "INSERT INTO s SELECT (random() ^ 3 * 20000)::bigint, (ARRAY['a','b','c'])[1 + g % 3], g "
     "FROM generate_series(1, {n}) g", (IndexKey("customer"), IndexKey("kind")), None),
    ("mostly NULL", "CREATE TABLE s (parent bigint)",
     "INSERT INTO s SELECT CASE WHEN g % 10 = 0 THEN g END FROM generate_series(1, {n}) g", (IndexKey("parent"),),
     None),
    ("expression", "CREATE TABLE s (email text)",
     "INSERT INTO s SELECT 'User' || g || '@Example.com' FROM generate_series(1, {n}) g",
     (IndexKey(expression="lower(email)"),), None),
    ("expression, few values", "CREATE TABLE s (at timestamptz)",
     "INSERT INTO s SELECT now() - (g % 1000) * interval '1 hour' FROM generate_series(1, {n}) g",
     (IndexKey(expression="date_part('year', at AT TIME ZONE 'UTC')"),), None),
    ("partial multi-column", "CREATE TABLE s (customer bigint, at timestamptz, status text)",
     "INSERT INTO s SELECT g % 5000, now() - g * interval '1 second', "
     "CASE WHEN g % 50 = 0 THEN 'pending' ELSE 'done' END FROM generate_series(1, {n}) g",
     (IndexKey("customer"), IndexKey("at")), "status = 'pending'"),
]

INCLUDES = [
    ("int key, INCLUDE int", "CREATE TABLE s (balance int, id int)",
     "INSERT INTO s SELECT (random() * 100)::int, g FROM generate_series(1, {n}) g", (IndexKey("balance"),),
     ("id",)),
    ("unique key, INCLUDE numeric and text", "CREATE TABLE s (id bigint, amount numeric(12,2), note text)",
     "INSERT INTO s SELECT g, g % 1000 + 0.5, 'n' || (g % 50) FROM generate_series(1, {n}) g", (IndexKey("id"),),
     ("amount", "note")),
    ("two keys, INCLUDE timestamp", "CREATE TABLE s (account int, kind text, at timestamptz)",
     "INSERT INTO s SELECT g % 3000, (ARRAY['x','y'])[1 + g % 2], now() - g * interval '1 second' "
     "FROM generate_series(1, {n}) g", (IndexKey("account"), IndexKey("kind")), ("at",)),
]


@pytest.mark.parametrize(("label", "ddl", "fill", "keys", "where"), SHAPES, ids=[s[0] for s in SHAPES])
def test_estimate_within_30_percent(pg_conn: psycopg2.extensions.connection, label: str, ddl: str, fill: str,
                                     keys: tuple[IndexKey, ...], where: str | None) -> None:
    with pg_conn.cursor() as cur:
        cur.execute(ddl)
        cur.execute(fill.format(n=ROWS))
        cur.execute("ANALYZE s")
    table = _table(pg_conn, "s")
    cand = IndexCandidate("public", "s", keys, where=where)
    fraction = _fraction(pg_conn, "s", where) if where else 1.0
    estimate = estimate_btree_size(table, cand, row_fraction=fraction)
    with pg_conn.cursor() as cur:
        cur.execute(cand.create_sql(concurrently=False))
        cur.execute("SELECT pg_relation_size(%s::regclass)", (cand.name(),))
        actual = cur.fetchone()[0]
    assert 0.7 * actual <= estimate <= 1.3 * actual, f"{label}: estimated {estimate}, built {actual}"


@pytest.mark.parametrize(("label", "ddl", "fill", "keys", "include"), INCLUDES, ids=[s[0] for s in INCLUDES])
def test_estimate_with_include_within_30_percent(pg_conn: psycopg2.extensions.connection, label: str, ddl: str,
                                                 fill: str, keys: tuple[IndexKey, ...],
                                                 include: tuple[str, ...]) -> None:
    with pg_conn.cursor() as cur:
        cur.execute(ddl)
        cur.execute(fill.format(n=ROWS))
        cur.execute("ANALYZE s")
    cand = IndexCandidate("public", "s", keys, include=include)
    estimate = estimate_btree_size(_table(pg_conn, "s"), cand)
    with pg_conn.cursor() as cur:
        cur.execute(cand.create_sql(concurrently=False))
        cur.execute("SELECT pg_relation_size(%s::regclass)", (cand.name(),))
        actual = cur.fetchone()[0]
    assert 0.7 * actual <= estimate <= 1.3 * actual, f"{label}: estimated {estimate}, built {actual}"
