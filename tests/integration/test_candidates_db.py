"""Candidates from a real catalog: resolution against what PostgreSQL reports, and every candidate builds."""

from __future__ import annotations

import time
from typing import Any

import pytest
from psycopg2 import sql

from indexd.advisor.candidates import generate
from indexd.advisor.catalog import load_catalog
from indexd.advisor.model import IndexCandidate
from indexd.config.schema import IndexingSettings
from indexd.db.pool import Database
from indexd.state.migrations import migrate
from indexd.statements.statement import Statement
from indexd.workload.capture import take_snapshot, workload

SCHEMA = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id bigint PRIMARY KEY, email text NOT NULL, org_id int NOT NULL,
                             status text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO shop.customers SELECT g, 'c' || g || '@x.org', g % 40,
    CASE WHEN g % 200 = 0 THEN 'pending' ELSE 'active' END, now() - g * interval '1 minute'
  FROM generate_series(1, 20000) g;
CREATE TABLE orders (id bigint, customer_id bigint, total numeric, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO orders SELECT g, g % 20000, g % 997, date '2025-03-01' + (g % 500) FROM generate_series(1, 30000) g;
CREATE VIEW pending_customers AS SELECT id, email, created_at FROM shop.customers WHERE status = 'pending';
CREATE MATERIALIZED VIEW totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY customer_id;
CREATE TABLE "Odd Names" ("Key" int, "Title" text COLLATE "und-x-icu");
INSERT INTO "Odd Names" SELECT g, 'title ' || g FROM generate_series(1, 5000) g;
CREATE TABLE small (a int);
"""

QUERIES = [
    "SELECT id, created_at FROM shop.customers WHERE org_id = $1 ORDER BY created_at DESC LIMIT 20",
    "SELECT * FROM shop.customers WHERE lower(email) = $1",
    "SELECT id FROM shop.customers WHERE status = 'pending' ORDER BY created_at",
    "SELECT c.email, o.total FROM shop.customers c JOIN orders o ON o.customer_id = c.id WHERE c.org_id = $1",
    "SELECT * FROM orders_2026 WHERE at BETWEEN $1 AND $2",
    "SELECT email FROM pending_customers WHERE created_at > $1",
    "SELECT * FROM totals WHERE customer_id = $1",
    'SELECT "Key" FROM "Odd Names" WHERE "Title" LIKE \'title 12%\'',
    "SELECT * FROM small WHERE a = $1",
    "SELECT * FROM pg_class WHERE relname = $1",
]


@pytest.fixture
def catalog(database: Database, pg_conn):
    migrate(database)
    with pg_conn.cursor() as cur:
        cur.execute(SCHEMA)
        all_visible(cur)
    with database.connection() as conn:
        return load_catalog(conn, database.settings.state_schema)


def all_visible(cur: Any) -> None:
    """VACUUM until every page of the tables is all-visible, so index-only scans are real and covering shapes
    are made (an autovacuum ANALYZE that started before the load holds back the first VACUUM)."""
    deadline = time.monotonic() + 30
    while True:
        cur.execute("VACUUM ANALYZE")
        cur.execute("SELECT bool_and(relallvisible >= relpages) FROM pg_class WHERE relkind = 'r' "
                    "AND relnamespace::regnamespace::text IN ('public', 'shop')")
        if cur.fetchone()[0] or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _labels(cands: list[IndexCandidate]) -> set[str]:
    return {f"{c.table}({', '.join(k.label() for k in c.keys)})" + (f" WHERE {c.where}" if c.where else "")
            + (f" INCLUDE ({', '.join(c.include)})" if c.include else "") for c in cands}


def test_candidates_from_a_real_catalog(catalog) -> None:
    result = generate([Statement(q) for q in QUERIES], catalog, IndexingSettings(min_table_rows=1000))
    by = [_labels(c) for c in result.by_statement]
    assert "customers(org_id, created_at DESC)" in by[0]
    assert "customers(org_id, created_at DESC) INCLUDE (id)" in by[0]
    assert by[1] == {"customers((lower(email)))"}
    assert "customers(created_at) WHERE status = 'pending'" in by[2]  # 0.5 % of the rows, per pg_stats
    assert {"orders(customer_id)", "customers(org_id)"} <= by[3]
    assert by[4] == {"orders(at)"}  # the parent, never the partition
    assert "customers(status, created_at)" in by[5] and all("WHERE" not in c for c in by[5])
    assert result.through_view == {5}
    assert by[6] == {"totals(customer_id)"}
    # an ICU collation: LIKE 'prefix%' needs the pattern operator class
    assert by[7] == {"Odd Names(Title text_pattern_ops)", "Odd Names(Title text_pattern_ops) INCLUDE (Key)"}
    assert [(s.statement_index, s.reason) for s in result.skipped] == [
        (8, "public.small has 0 rows, fewer than min_table_rows (1000)"),
        (9, "pg_class is a system catalog"),
    ]


def test_every_candidate_builds_and_serves_its_statement(catalog, pg_conn) -> None:
    result = generate([Statement(q) for q in QUERIES], catalog, IndexingSettings(min_table_rows=1000))
    with pg_conn.cursor() as cur:
        for cand in sorted(result.all, key=IndexCandidate.fingerprint):
            cur.execute(cand.create_sql(concurrently=False))  # quoting, expressions, opclasses, predicates
        cur.execute("ANALYZE")
        cur.execute("SET enable_seqscan = off")
        cur.execute("EXPLAIN SELECT * FROM \"Odd Names\" WHERE \"Title\" LIKE 'title 12%'")
        assert "Index" in " ".join(r[0] for r in cur.fetchall())
        cur.execute("EXPLAIN SELECT * FROM shop.customers WHERE lower(email) = 'c1@x.org'")
        plan = " ".join(r[0] for r in cur.fetchall())
        assert "Index" in plan and "lower(email)" in plan
        cur.execute(sql.SQL("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'indexd\\_%'"))
        assert cur.fetchone()[0] == len(result.all)


def test_captured_workload_to_candidates(database: Database, catalog, pg_conn) -> None:
    """pg_stat_statements' normalised text ($n for every constant) parses and yields the same shapes."""
    take_snapshot(database)
    with pg_conn.cursor() as cur:
        for i in range(5):
            cur.execute("SELECT id FROM shop.customers WHERE org_id = %s ORDER BY created_at DESC LIMIT 5", (i,))
            cur.execute("SELECT email FROM pending_customers WHERE created_at > now() - %s::interval", ("1 day",))
    take_snapshot(database)
    statements = workload(database, IndexingSettings().lookback, min_calls=5)
    result = generate(statements, catalog, IndexingSettings(min_table_rows=1000))
    found = set().union(*(_labels(c) for c in result.by_statement))
    assert "customers(org_id, created_at DESC)" in found
    assert "customers(status, created_at)" in found
    view_statement = next(i for i, s in enumerate(statements) if "pending_customers" in s.query)
    assert view_statement in result.through_view
