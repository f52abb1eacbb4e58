"""Index classes, estimated against built: per class, the estimated vs the real size of the index and the
estimated vs the real benefit to the statement that needs it; and the advisor's time on a 40-shape workload.

    python -m bench.index_classes [--rows 100000] [--runs 3]

For each class, the statement runs on a private cluster: the advisor's candidate (its own generation must
produce it), its size (`measure`: catalog, sampled statistics) and the what-if cost before and after (HypoPG, or
the GIN model) are compared with the index built for real: pg_relation_size, the planner's cost after ANALYZE,
and the median execution time of EXPLAIN ANALYZE before and after. The 40 shapes (the ten class statements and
thirty B-tree ones) run through pg_stat_statements and pg_qualstats, and `advise` is timed on what they recorded.
Targets: every size within 30 % of the build; the advisor within 0.5 s. Writes bench/results/index_classes.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from indexd.advisor.candidates import generate
from indexd.advisor.catalog import load_catalog
from indexd.advisor.measure import measure
from indexd.advisor.model import IndexCandidate, IndexKey
from indexd.advisor.pipeline import advise
from indexd.advisor.whatif import WhatIf
from indexd.config.schema import DatabaseSettings, IndexingSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.statements.statement import Statement, Workload
from indexd.workload.capture import cumulative_workload

RESULTS = Path(__file__).parent / "results"
SETTINGS = IndexingSettings(min_calls=1, max_indexes_per_table=10)

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE users (id bigint PRIMARY KEY, tenant_id int NOT NULL, email text NOT NULL, full_name text NOT NULL,
  status text NOT NULL, meta jsonb NOT NULL, attrs jsonb NOT NULL, tags text[] NOT NULL, bio text NOT NULL,
  created_at timestamptz NOT NULL, deleted_at timestamptz);
INSERT INTO users SELECT n, n % 500, 'user' || (n / 500 % 400) || '@example.com',
  (ARRAY['Jan', 'Petra', 'Anna', 'Karel', 'Eva', 'Tomas'])[1 + n % 6] || ' '
    || (ARRAY['Novak', 'Svoboda', 'Dvorak', 'Cerny', 'Prochazka', 'Kucera', 'Vesely', 'Horak'])[1 + (n / 6) % 8]
    || (n % 997),
  CASE WHEN n % 100 = 7 THEN 'pending' WHEN n % 50 = 3 THEN 'failed' ELSE 'done' END,
  jsonb_build_object('external_id', 'ext-' || n, 'plan', (ARRAY['free', 'pro', 'team'])[1 + n % 3],
                     'limits', jsonb_build_object('seats', n % 50, 'sso', n % 7 = 0)),
  jsonb_build_object('k' || (n % 40), true, 'region', 'r' || (n % 5)),
  ARRAY['t' || (n % 300), 'g' || (n % 9), 'h' || (n % 31)],
  (SELECT string_agg('word' || ((n * 31 + i * 7919) % 5000), ' ') FROM generate_series(1, 12) i),
  timestamptz '2024-01-01' + ((n::bigint * 7919) % {rows}) * interval '1 minute',
  CASE WHEN n % 40 = 0 THEN timestamptz '2024-01-01' + n * interval '1 minute' END
FROM generate_series(1, {rows}) n;
CREATE TABLE events (id bigint NOT NULL, at timestamptz NOT NULL, user_id bigint NOT NULL, kind int NOT NULL,
  payload text NOT NULL);
INSERT INTO events SELECT n, timestamptz '2024-01-01' + n * interval '5 second', (n * 7) % {rows}, n % 20,
  md5(n::text) FROM generate_series(1, {rows} * 4) n;
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, total numeric NOT NULL,
  placed_at timestamptz NOT NULL, state int NOT NULL);
INSERT INTO orders SELECT n, (n::bigint * 7919) % {rows}, n % 997,
  timestamptz '2024-01-01' + ((n::bigint * 104729) % 500000) * interval '1 minute', n % 6
  FROM generate_series(1, {rows}) n;
ANALYZE;
"""


def _gin(key: IndexKey) -> IndexCandidate:
    return IndexCandidate("public", "users", (key,), method="gin")


# (class, statement, the candidate it needs)
CASES: list[tuple[str, str, IndexCandidate]] = [
    ("btree expression", "SELECT id FROM users WHERE meta->>'external_id' = 'ext-4242'",
     IndexCandidate("public", "users", (IndexKey(expression="meta ->> 'external_id'"),))),
    ("btree partial", "SELECT id, created_at FROM users WHERE status = 'pending' ORDER BY created_at LIMIT 20",
     IndexCandidate("public", "users", (IndexKey("created_at"),), where="status = 'pending'")),
    ("btree sparse", "SELECT id FROM users WHERE deleted_at >= '2024-02-01'",
     IndexCandidate("public", "users", (IndexKey("deleted_at"),), where="deleted_at IS NOT NULL")),
    ("btree multi-column", "SELECT id FROM users WHERE tenant_id = 7 AND email = 'user49@example.com'",
     IndexCandidate("public", "users", (IndexKey("tenant_id"), IndexKey("email")))),
    ("brin", "SELECT count(*) FROM events WHERE at >= '2024-01-03' AND at < '2024-01-03 06:00'",
     IndexCandidate("public", "events", (IndexKey("at"),), method="brin")),
    ("gin jsonb_ops", "SELECT id FROM users WHERE attrs ? 'k7'", _gin(IndexKey("attrs"))),
    ("gin jsonb_path_ops", """SELECT id FROM users WHERE meta @> '{"external_id": "ext-77"}'""",
     _gin(IndexKey("meta", opclass="jsonb_path_ops"))),
    ("gin trigram", "SELECT id FROM users WHERE full_name ILIKE '%novak123%'",
     _gin(IndexKey("full_name", opclass="gin_trgm_ops"))),
    ("gin tsvector", "SELECT id FROM users WHERE to_tsvector('simple', bio) @@ plainto_tsquery('simple', 'word17')",
     _gin(IndexKey(expression="to_tsvector('simple', bio)"))),
    ("gin array", "SELECT id FROM users WHERE tags @> ARRAY['t17', 'g3']", _gin(IndexKey("tags"))),
]

# Thirty B-tree shapes around the class statements: lookups, ranges, joins, sorts, groupings.
BTREE_SHAPES = [
    "SELECT * FROM users WHERE id = {i}", "SELECT email FROM users WHERE tenant_id = {i}",
    "SELECT count(*) FROM users WHERE tenant_id = {i} AND status = 'done'",
    "SELECT id FROM users WHERE created_at >= '2024-01-0{d}' ORDER BY created_at LIMIT 50",
    "SELECT * FROM orders WHERE user_id = {i}", "SELECT * FROM orders WHERE id = {i}",
    "SELECT id, total FROM orders WHERE user_id = {i} ORDER BY placed_at DESC LIMIT 10",
    "SELECT count(*) FROM orders WHERE placed_at >= '2024-02-0{d}' AND placed_at < '2024-02-1{d}'",
    "SELECT state, count(*) FROM orders WHERE total > {i} GROUP BY state",
    "SELECT o.id, u.email FROM orders o JOIN users u ON u.id = o.user_id WHERE o.user_id = {i}",
    "SELECT u.id FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.total > {i}) "
    "AND u.tenant_id = {i}",
    "SELECT * FROM events WHERE user_id = {i} ORDER BY at DESC LIMIT 20", "SELECT * FROM events WHERE id = {i}",
    "SELECT kind, count(*) FROM events WHERE user_id = {i} GROUP BY kind",
    "SELECT id FROM users WHERE lower(email) = 'user{i}@example.com'",
    "SELECT id FROM orders WHERE state = {d} AND user_id = {i}", "UPDATE orders SET state = {d} WHERE id = {i}",
    "SELECT max(total) FROM orders WHERE user_id BETWEEN {i} AND {i} + 100",
    "SELECT id FROM users WHERE tenant_id = {i} ORDER BY created_at DESC LIMIT 5",
    "SELECT * FROM events WHERE kind = {d} AND user_id = {i}",
    "SELECT id FROM users WHERE email = 'user{i}@example.com' AND status = 'done'",
    "SELECT count(*) FROM orders o WHERE o.user_id IN (SELECT id FROM users WHERE tenant_id = {i})",
    "SELECT id FROM orders WHERE placed_at > '2024-03-0{d}' ORDER BY placed_at LIMIT 100",
    "SELECT u.tenant_id, sum(o.total) FROM orders o JOIN users u ON u.id = o.user_id WHERE o.state = {d} "
    "GROUP BY u.tenant_id",
    "DELETE FROM events WHERE id = -{i}", "SELECT * FROM users WHERE tenant_id = {i} AND created_at > '2024-01-0{d}'",
    "SELECT id FROM events WHERE user_id = {i} AND kind = {d} ORDER BY at LIMIT 5",
    "SELECT (SELECT count(*) FROM orders o WHERE o.user_id = u.id) FROM users u WHERE u.id = {i}",
    "SELECT total FROM orders WHERE user_id = {i} AND state = {d} ORDER BY total DESC LIMIT 3",
    "SELECT id FROM users WHERE status = 'failed' AND tenant_id = {i}",
]


def _timed(cur: Any, query: str, runs: int) -> float:
    """Median execution time (ms) of EXPLAIN ANALYZE."""
    times = []
    for _ in range(runs):
        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query)
        times.append(float(cur.fetchone()[0][0]["Execution Time"]))
    return statistics.median(times)


def _planned(cur: Any, query: str) -> tuple[float, str]:
    cur.execute("EXPLAIN (FORMAT JSON) " + query)
    plan = cur.fetchone()[0]
    return float(plan[0]["Plan"]["Total Cost"]), json.dumps(plan)


def one_class(db: Database, conn: psycopg2.extensions.connection, name: str, query: str, cand: IndexCandidate,
              runs: int) -> dict[str, Any]:
    with db.connection() as c:
        catalog = load_catalog(c)
    cands = generate([Statement(query)], catalog, SETTINGS)
    generated = cand in cands.all
    cands.all.add(cand)
    with WhatIf(db, catalog=catalog) as whatif:
        measured = measure(whatif, catalog, cands)
        whatif.modeled = measured.gin_scans
        est_before = whatif.cost(0, query, frozenset()) or 0.0
        est_after = whatif.cost(0, query, frozenset([cand])) or 0.0
    with conn.cursor() as cur:
        before_cost, _ = _planned(cur, query)
        before_ms = _timed(cur, query, runs)
        started = time.perf_counter()
        cur.execute(cand.create_sql(concurrently=False))
        build_s = time.perf_counter() - started
        try:
            cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(cand.table)))
            cur.execute("SELECT pg_relation_size(%s)", (cand.name(),))
            real_size = int(cur.fetchone()[0])
            after_cost, plan = _planned(cur, query)
            after_ms = _timed(cur, query, runs)
        finally:
            cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(cand.name())))
    size = measured.sizes.get(cand, 0)
    return {"class": name, "statement": query, "generated": generated, "index": cand.create_sql().as_string(conn),
            "estimated_size_bytes": size, "real_size_bytes": real_size, "size_ratio": round(size / real_size, 3),
            "estimated_cost": [round(est_before, 1), round(est_after, 1)],
            "real_cost": [round(before_cost, 1), round(after_cost, 1)],
            "estimated_benefit_pct": round(100 * (1 - est_after / est_before), 1) if est_before else None,
            "real_cost_benefit_pct": round(100 * (1 - after_cost / before_cost), 1) if before_cost else None,
            "real_time_ms": [round(before_ms, 2), round(after_ms, 2)],
            "real_time_benefit_pct": round(100 * (1 - after_ms / before_ms), 1) if before_ms else None,
            "used_by_the_real_plan": cand.name() in plan, "build_s": round(build_s, 2)}


def advisor_time(db: Database, conn: psycopg2.extensions.connection, runs: int) -> dict[str, Any]:
    """Run the 40 shapes for real (5 times each, varied constants), then time advise() on what was recorded."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_statements_reset(), pg_qualstats_reset()")
        for k in range(5):
            for _, query, _ in CASES:
                cur.execute(query)
            for shape in BTREE_SHAPES:
                cur.execute(shape.format(i=11 + 97 * k, d=1 + k))
    statements = cumulative_workload(db)
    times, advice = [], None
    for _ in range(runs):
        started = time.perf_counter()
        advice = advise(db, SETTINGS, Workload(statements, 3600.0, captured=True))
        times.append(time.perf_counter() - started)
    assert advice is not None
    return {"shapes": len(CASES) + len(BTREE_SHAPES), "statements": len(statements),
            "advisor_s": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
            "recommendations": [advice.create_sql[r.candidate.fingerprint()] for r in advice.recommendations],
            "skipped": len(advice.skipped), "warnings": list(advice.warnings)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with EmbeddedCluster(settings={"shared_buffers": "256MB"}) as cluster:
        dsn = cluster.create_database("classes")
        cluster.execute(SCHEMA.replace("{rows}", str(args.rows)), dbname="classes")
        db = Database(DatabaseSettings(name="classes", dsn=dsn, pool=PoolSettings(size=2)))
        conn = cluster.connect("classes")
        try:
            classes = [one_class(db, conn, *case, runs=args.runs) for case in CASES]
            timing = advisor_time(db, conn, args.runs)
        finally:
            conn.close()
            db.close()
    for row in classes:
        print(f"{row['class']:<20} size est/real {row['estimated_size_bytes'] / 1024:>8.0f} / "
              f"{row['real_size_bytes'] / 1024:>8.0f} kB ({row['size_ratio']:.2f})  benefit est "
              f"{row['estimated_benefit_pct']}% real cost {row['real_cost_benefit_pct']}% time "
              f"{row['real_time_benefit_pct']}%  used {row['used_by_the_real_plan']} generated {row['generated']}")
    print(f"advisor: {timing['median_s']} s on {timing['shapes']} shapes ({timing['statements']} statements), "
          f"{len(timing['recommendations'])} recommendations")
    RESULTS.mkdir(exist_ok=True)
    out = {"rows": args.rows, "classes": classes, "advisor": timing}
    (RESULTS / "index_classes.json").write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
