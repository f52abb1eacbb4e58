"""Each index class from a live workload: statements run for real, so pg_stat_statements normalizes them ($n)
and pg_qualstats sees their constants, as the daemon sees them; the advisor proposes the class, and the index,
built for real, is what PostgreSQL's own plan uses. A schema where a plain B-tree is the answer gets nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg2.extensions
import pytest
from psycopg2 import sql

from indexd.advisor.candidates import generate
from indexd.advisor.catalog import load_catalog
from indexd.advisor.model import IndexCandidate, IndexKey, Recommendation
from indexd.advisor.pipeline import Advice, advise
from indexd.advisor.whatif import WhatIf
from indexd.config.schema import DatabaseSettings, IndexingSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.state.migrations import migrate
from indexd.statements.statement import Statement, Workload
from indexd.workload.capture import cumulative_workload
from indexd.workload.lookback import given_workload
from tests.support.cluster import DEFAULT_EXTENSIONS, new_database

SCHEMA = """
CREATE EXTENSION pg_trgm;
CREATE TABLE tenants (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO tenants SELECT n, 'tenant ' || n FROM generate_series(0, 299) n;
CREATE TABLE users (
  id bigint PRIMARY KEY, tenant_id int NOT NULL, email text NOT NULL, full_name text NOT NULL, status text NOT NULL,
  meta jsonb NOT NULL, attrs jsonb NOT NULL, tags text[] NOT NULL, created_at timestamptz NOT NULL,
  deleted_at timestamptz);
INSERT INTO users SELECT n, n % 300, 'user' || (n / 300 % 200) || '@example.com',
  (ARRAY['Jan', 'Petra', 'Anna', 'Karel', 'Eva', 'Tomas'])[1 + n % 6] || ' '
    || (ARRAY['Novak', 'Svoboda', 'Dvorak', 'Cerny', 'Prochazka', 'Kucera', 'Vesely', 'Horak'])[1 + (n / 6) % 8]
    || (n % 997),
  CASE WHEN n % 100 = 7 THEN 'pending' WHEN n % 50 = 3 THEN 'failed' ELSE 'done' END,
  jsonb_build_object('external_id', 'ext-' || n, 'plan', (ARRAY['free', 'pro', 'team'])[1 + n % 3]),
  jsonb_build_object('k' || (n % 40), true, 'region', 'r' || (n % 5)),
  ARRAY['t' || (n % 200), 'g' || (n % 9)],
  timestamptz '2024-01-01' + (n * 7919 % 60000) * interval '1 minute',
  CASE WHEN n % 40 = 0 THEN timestamptz '2024-01-01' + n * interval '1 minute' END
FROM generate_series(1, 60000) n;
CREATE TABLE events (id bigint NOT NULL, at timestamptz NOT NULL, kind int NOT NULL, payload text NOT NULL);
INSERT INTO events SELECT n, timestamptz '2024-01-01' + n * interval '10 second', n % 20, md5(n::text)
  FROM generate_series(1, 150000) n;
CREATE TABLE readings (id bigint NOT NULL, taken date NOT NULL, sensor int NOT NULL, value float8)
  PARTITION BY RANGE (taken);
CREATE TABLE readings_2024 PARTITION OF readings FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE readings_2025 PARTITION OF readings FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO readings SELECT n, date '2024-01-01' + (n % 700), n % 500, n FROM generate_series(1, 100000) n;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, total numeric NOT NULL,
  placed_at timestamptz NOT NULL, note text);
INSERT INTO orders SELECT n, (n * 7919) % 20000, n % 997, now() - ((n::bigint * 104729) % 100000) * interval '1 minute',
  'order ' || n FROM generate_series(1, 80000) n;
ANALYZE;
"""
SETTINGS = IndexingSettings(min_calls=1, max_indexes_per_table=10)
SIZE_TOLERANCE = 0.30  # estimated vs built size, every class
Run = Sequence[tuple[str, Sequence[Any]]]


@pytest.fixture(scope="module")
def classes_db(pg_cluster: EmbeddedCluster) -> Iterator[tuple[Database, psycopg2.extensions.connection]]:
    name = f"classes_{int(time.time() * 1000) % 100000}"
    dsn = new_database(pg_cluster, name, (*DEFAULT_EXTENSIONS, "pg_qualstats"))
    pg_cluster.execute(SCHEMA, dbname=name)
    db = Database(DatabaseSettings(name="classes", dsn=dsn, pool=PoolSettings(size=2)))
    migrate(db)
    conn = pg_cluster.connect(name)
    try:
        yield db, conn
    finally:
        conn.close()
        db.close()
        pg_cluster.drop_database(name)


def live_advice(db: Database, conn: psycopg2.extensions.connection, run: Run,
                budget_bytes: int | None = None, qualstats: bool = True) -> Advice:
    """Run the statements for real (fresh pg_stat_statements and pg_qualstats), then advise on what they
    recorded, as the daemon does."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_statements_reset()" + (", pg_qualstats_reset()" if qualstats else ""))
        for query, params in run:
            cur.execute(query, params)
            if cur.description is not None:
                cur.fetchall()
    work = Workload(cumulative_workload(db), period_s=3600.0, captured=True)
    return advise(db, SETTINGS, work, budget_bytes)


def plan_with(conn: psycopg2.extensions.connection, advice: Advice, rec: Recommendation, query: str,
              params: Sequence[Any]) -> str:
    """Build the recommended index for real (its create_sql, as given), analyse, and EXPLAIN the statement.
    The estimated size must be within SIZE_TOLERANCE of the built one."""
    cand = rec.candidate
    with conn.cursor() as cur:
        cur.execute(advice.create_sql[cand.fingerprint()])
        try:
            cur.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(cand.schema), sql.Identifier(cand.table)))
            cur.execute("SELECT pg_relation_size(%s)", (f'"{cand.schema}"."{cand.name()}"',))
            real = cur.fetchone()[0]
            cur.execute("EXPLAIN " + query, params)
            plan = "\n".join(row[0] for row in cur.fetchall())
        finally:
            cur.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(cand.schema), sql.Identifier(cand.name())))
    if rec.estimated_size_bytes:
        assert abs(rec.estimated_size_bytes / real - 1) <= SIZE_TOLERANCE, (cand, rec.estimated_size_bytes, real)
    return plan


def only(advice: Advice, method: str, table: str | None = None) -> Recommendation:
    found = [r for r in advice.recommendations
             if r.candidate.method == method and (table is None or r.candidate.table == table)]
    assert found, ([advice.create_sql[r.candidate.fingerprint()] for r in advice.recommendations],
                   advice.declined, advice.skipped, advice.warnings)
    return found[0]


def test_btree_on_a_jsonb_key(classes_db) -> None:
    """`meta ->> 'external_id'`: pg_stat_statements stores `meta->>$1`; the example query gives the key back."""
    db, conn = classes_db
    query = "SELECT id FROM users WHERE meta->>'external_id' = %s"
    advice = live_advice(db, conn, [(query, (f"ext-{i * 37}",)) for i in range(40)])
    rec = next(r for r in advice.recommendations if r.candidate.keys[0].expression == "meta ->> 'external_id'")
    assert "((meta ->> 'external_id'))" in advice.create_sql[rec.candidate.fingerprint()]
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, ("ext-1234",))


def test_partial_index_on_the_rare_value_a_queue_reads(classes_db) -> None:
    """pg_qualstats shows that `status = $1` is always 'pending' (1 % of the rows): the partial index is a
    candidate, costed on the real constant, and recommended over `(status, created_at)`, which the planner
    prices lower (the correlation of the skewed leading column) but which is 60 times larger for the same rows."""
    db, conn = classes_db
    query = "SELECT id, created_at FROM users WHERE status = %s ORDER BY created_at LIMIT 20"
    advice = live_advice(db, conn, [(query, ("pending",))] * 40)
    rec = next(r for r in advice.recommendations if r.candidate.table == "users")
    assert rec.candidate.where == "status = 'pending'" and [k.column for k in rec.candidate.keys] == ["created_at"]
    assert any(d.query == "public.users (status, created_at)" and "smaller index" in d.reason
               for d in advice.declined), advice.declined
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, ("pending",))


def test_a_lookup_by_tenant_and_email_gets_both_keys(classes_db) -> None:
    """`(tenant_id)` alone leaves 200 rows of the tenant to filter by email; `(tenant_id, email)` finds the one:
    the narrow index saves clearly less than the best one, so the two-key index is the statement's choice."""
    db, conn = classes_db
    query = "SELECT id FROM users WHERE tenant_id = %s AND email = %s"
    advice = live_advice(db, conn, [(query, (i % 300, f"user{i % 200}@example.com")) for i in range(40)])
    rec = next(r for r in advice.recommendations if r.candidate.table == "users")
    assert [k.column for k in rec.candidate.keys] in (["tenant_id", "email"], ["email", "tenant_id"])
    assert any(d.query == "public.users (tenant_id)" and "clearly better" in d.reason for d in advice.declined), \
        advice.declined
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, (7, "user7@example.com"))


def test_without_pg_qualstats_the_advice_says_once_what_it_would_add(classes_db) -> None:
    db, conn = classes_db
    query = "SELECT id, created_at FROM users WHERE status = %s ORDER BY created_at LIMIT 20"
    with conn.cursor() as cur:
        cur.execute("DROP EXTENSION pg_qualstats")
    try:
        advice = live_advice(db, conn, [(query, ("pending",))] * 20
                             + [("SELECT id FROM users WHERE meta->>'plan' = %s", ("pro",))] * 20, qualstats=False)
    finally:
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION pg_qualstats")
    notes = [w for w in advice.warnings if "pg_qualstats" in w]
    assert len(notes) == 1 and "CREATE EXTENSION pg_qualstats" in notes[0], advice.warnings
    assert "1 statement(s) comparing a column of few values" in notes[0] and "of 1 whose index expression" in notes[0]
    assert not any(r.candidate.where for r in advice.recommendations)  # the constant is not known


def test_sparse_column_gets_a_not_null_partial_index(classes_db) -> None:
    db, conn = classes_db
    query = "SELECT id FROM users WHERE deleted_at >= %s"
    advice = live_advice(db, conn, [(query, (f"2024-01-{10 + i % 10} 00:00+00",)) for i in range(40)])
    rec = next(r for r in advice.recommendations if r.candidate.table == "users")
    assert rec.candidate.where == "deleted_at IS NOT NULL", advice.recommendations
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, ("2024-01-30 00:00+00",))


def test_brin_on_an_append_only_time_column_under_a_budget(classes_db) -> None:
    db, conn = classes_db
    query = "SELECT count(*), max(kind) FROM events WHERE at >= %s AND at < %s"
    run = [(query, (f"2024-01-{1 + i % 20} 00:00+00", f"2024-01-{1 + i % 20} 06:00+00")) for i in range(40)]
    advice = live_advice(db, conn, run, budget_bytes=512 * 1024)  # a B-tree on at needs ~4 MB
    rec = only(advice, "brin", "events")
    assert "USING brin (\"at\")" in advice.create_sql[rec.candidate.fingerprint()]
    assert rec.estimated_size_bytes <= 64 * 1024
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, ("2024-01-05 00:00+00", "2024-01-05 06:00+00"))


def test_gin_jsonb_path_ops_when_only_containment_is_used(classes_db) -> None:
    db, conn = classes_db
    query = "SELECT id FROM users WHERE meta @> %s::jsonb"
    advice = live_advice(db, conn, [(query, (f'{{"external_id": "ext-{i * 91}"}}',)) for i in range(40)])
    rec = only(advice, "gin", "users")
    assert rec.candidate.keys[0].opclass == "jsonb_path_ops"
    assert 'USING gin ("meta" "jsonb_path_ops")' in advice.create_sql[rec.candidate.fingerprint()]
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, ('{"external_id": "ext-77"}',))


def test_gin_jsonb_ops_for_key_existence(classes_db) -> None:
    db, conn = classes_db
    query = "SELECT id FROM users WHERE attrs ? %s"
    advice = live_advice(db, conn, [(query, (f"k{i % 40}",)) for i in range(40)])
    rec = only(advice, "gin", "users")
    assert rec.candidate.keys[0].column == "attrs" and rec.candidate.keys[0].opclass is None
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, ("k7",))


def test_gin_trigram_for_a_substring_search(classes_db) -> None:
    db, conn = classes_db
    query = "SELECT id, full_name FROM users WHERE full_name ILIKE %s"
    advice = live_advice(db, conn, [(query, (f"%novak{100 + i}%",)) for i in range(40)])
    rec = only(advice, "gin", "users")
    assert rec.candidate.keys[0].opclass == "gin_trgm_ops"
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, ("%novak123%",))


def test_gin_on_the_text_search_expression(classes_db) -> None:
    db, conn = classes_db
    query = "SELECT id FROM users WHERE to_tsvector('simple', full_name) @@ plainto_tsquery('simple', %s)"
    advice = live_advice(db, conn, [(query, (f"horak{100 + i}",)) for i in range(12)])
    rec = only(advice, "gin", "users")
    assert rec.candidate.keys[0].expression == "to_tsvector('simple', full_name)"
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, ("horak123",))


def test_gin_on_an_array(classes_db) -> None:
    db, conn = classes_db
    query = "SELECT id FROM users WHERE tags @> %s"
    advice = live_advice(db, conn, [(query, ([f"t{i * 3}"],)) for i in range(40)])
    rec = only(advice, "gin", "users")
    assert rec.candidate.keys[0].column == "tags"
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, (["t17"],))


def test_tenant_scoped_lookups_get_the_two_column_candidate_that_serves_them_all(classes_db) -> None:
    """`tenant_id = $1 AND email = $2` (each email in every tenant) and `tenant_id = $1`: the candidate leading
    with the shared column, (tenant_id, email), is the cheapest plan for the lookup and, built, serves both.

    (Which set the selection then keeps is its own decision: greedy by benefit per byte may still prefer two
    single-column indexes PostgreSQL combines with a BitmapAnd.)"""
    db, conn = classes_db
    lookup = "SELECT id FROM users WHERE tenant_id = %s AND email = %s"
    count = "SELECT count(*) FROM users WHERE tenant_id = %s"
    live_advice(db, conn, [(lookup, (i, f"user{i * 7 % 200}@example.com")) for i in range(30)]
                + [(count, (i,)) for i in range(30)])
    statements = cumulative_workload(db)
    with db.connection() as c:
        catalog = load_catalog(c)
    cands = generate(statements, catalog, SETTINGS)
    index = next(i for i, s in enumerate(statements) if "tenant_id = $1 AND email = $2" in s.query)
    two = IndexCandidate("public", "users", (IndexKey("tenant_id"), IndexKey("email")))
    assert two in cands.by_statement[index]
    with WhatIf(db, catalog=catalog) as whatif:
        costs = {c: whatif.cost(index, statements[index].query, frozenset([c])) for c in cands.by_statement[index]}
    assert min(costs, key=lambda c: costs[c] or float("inf")) == two, costs
    advice = Advice("classes", 2, 0.0, create_sql={two.fingerprint(): two.create_sql().as_string(conn)})
    rec = Recommendation(two, 0, 0.0, 0.0)
    assert two.name() in plan_with(conn, advice, rec, lookup, (7, "user49@example.com"))
    assert two.name() in plan_with(conn, advice, rec, count, (7,))


def test_correlated_subquery_gets_its_own_index(classes_db) -> None:
    """The scalar subquery runs once per tenant: its `u.tenant_id = t.id` is the inner scan's key."""
    db, conn = classes_db
    query = ("SELECT t.id, (SELECT count(*) FROM users u WHERE u.tenant_id = t.id AND u.full_name = %s) "
             "FROM tenants t WHERE t.id < %s")
    advice = live_advice(db, conn, [(query, (f"Jan Novak{i}", 5)) for i in range(10)])
    rec = next(r for r in advice.recommendations if r.candidate.table == "users")
    assert {k.column for k in rec.candidate.keys} & {"tenant_id", "full_name"}
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, ("Jan Novak5", 5))


def test_a_query_on_one_partition_gets_the_index_on_that_partition(classes_db) -> None:
    db, conn = classes_db
    query = "SELECT id, value FROM readings_2025 WHERE sensor = %s"
    advice = live_advice(db, conn, [(query, (i,)) for i in range(40)])
    tables = {r.candidate.table for r in advice.recommendations}
    assert "readings_2025" in tables, (advice.recommendations, advice.declined)
    rec = next(r for r in advice.recommendations if r.candidate.table == "readings_2025")
    assert rec.candidate.name() in plan_with(conn, advice, rec, query, (42,))


def test_a_statement_pruned_to_one_partition_gets_the_index_on_that_partition(classes_db) -> None:
    """The plan reads readings_2025 only (its dates): the index there serves it, at a fraction of the parent's."""
    db, _ = classes_db
    query = "SELECT id, value FROM readings WHERE taken >= '2025-03-01' AND taken < '2025-05-01' AND sensor = 5"
    advice = advise(db, SETTINGS, given_workload([Statement(query, calls=500)], SETTINGS))
    assert [r.candidate.table for r in advice.recommendations] == ["readings_2025"], advice.declined


def test_plain_btree_schema_gets_nothing_else(classes_db) -> None:
    """Point lookups, a join and a top-N on uncorrelated, dense columns: B-tree on columns only."""
    db, conn = classes_db
    run = []
    for i in range(30):
        run += [("SELECT * FROM orders WHERE customer_id = %s", (i,)),
                ("SELECT id, total FROM orders WHERE customer_id = %s ORDER BY placed_at DESC LIMIT 10", (i,)),
                ("SELECT o.id, t.name FROM orders o JOIN tenants t ON t.id = o.customer_id WHERE o.placed_at > %s",
                 ("2999-01-01",)),
                ("SELECT count(*) FROM orders WHERE total BETWEEN %s AND %s", (i, i + 2))]
    advice = live_advice(db, conn, run)
    assert advice.recommendations
    for rec in advice.recommendations:
        cand = rec.candidate
        assert cand.method == "btree" and cand.where is None and all(k.column for k in cand.keys), cand
    assert not any("USING" in d.query or "WHERE" in d.query for d in advice.declined)
