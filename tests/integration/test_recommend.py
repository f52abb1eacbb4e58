"""`indexd recommend` end to end on the real cluster: JSON contract, table, --queries, budget, write cost,
saving without duplicates, and clear failures when HypoPG or pg_stat_statements is missing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import psycopg2.extensions
import pytest

from indexd.advisor.model import IMPROVEMENT_MEANS
from indexd.cli import main
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.lifecycle.verdict import target_keys

CONFIG = "environment: development\nindexing:\n  min_calls: 1\n"
KEYS = {"table", "columns", "method", "where", "include", "create_sql", "estimated_size_bytes", "improvement_pct",
        "write_overhead", "benefit_ms_per_s", "queries", "index_name"}


@pytest.fixture(autouse=True)
def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "indexpilot_config.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("INDEXD_CONFIG", str(path))


@pytest.fixture
def shop(pg_conn: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, country text)")
        cur.execute("INSERT INTO customers SELECT g, 'c' || g || '@example.com', "
                    "(ARRAY['de','fr','us','jp'])[1 + g % 4] FROM generate_series(1, 50000) g")
        cur.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, status text, "
                    "created_at timestamptz, total numeric)")
        cur.execute("INSERT INTO orders SELECT g, g % 50000, CASE WHEN g % 100 = 0 THEN 'new' ELSE 'done' END, "
                    "now() - g * interval '1 minute', g % 500 FROM generate_series(1, 200000) g")
        cur.execute("CREATE TABLE events (id bigserial PRIMARY KEY, kind int, payload text)")
        cur.execute("INSERT INTO events (kind, payload) SELECT g % 20, md5(g::text) FROM generate_series(1, 100000) g")
        cur.execute("ANALYZE")
        cur.execute("SELECT pg_stat_statements_reset(), pg_stat_reset()")
    return pg_conn


def _queries(tmp_path: Path, text: str) -> str:
    path = tmp_path / "workload.sql"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _recommend(capsys: pytest.CaptureFixture[str], dsn: str, *extra: str) -> tuple[int, str, str]:
    code = main(["recommend", "--dsn", dsn, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


WORKLOAD = """
-- calls: 500
SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20;
-- calls: 200
SELECT id, email FROM customers WHERE email = $1;
-- calls: 3
SELECT count(*) FROM orders;
"""


def test_json_contract_runnable_sql_and_saved_once(shop: psycopg2.extensions.connection, pg_dsn: str,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _queries(tmp_path, WORKLOAD)
    code, out, _ = _recommend(capsys, pg_dsn, "--queries", path, "--json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"database", "analyzed_statements", "elapsed_s", "recommendations"}
    assert doc["analyzed_statements"] == 3 and doc["elapsed_s"] >= 0
    recs = doc["recommendations"]
    assert {r["table"] for r in recs} == {"public.orders", "public.customers"}
    for rec in recs:
        assert set(rec) == KEYS | {"id", "origin"} and rec["origin"] == "queries"
        assert rec["create_sql"].startswith("CREATE INDEX CONCURRENTLY")
        assert rec["estimated_size_bytes"] > 0 and rec["improvement_pct"] > 0
        assert rec["queries"] and rec["queries"][0]["cost_after"] < rec["queries"][0]["cost_before"]
        # both in ms of database time per second: the selection takes an index only when it saves more than it costs
        assert rec["benefit_ms_per_s"] > rec["write_overhead"] >= 0
    by_table = {r["table"]: r for r in recs}
    assert by_table["public.orders"]["columns"][0] == "customer_id"
    assert by_table["public.customers"]["columns"] == ["email"]
    with shop.cursor() as cur:
        for rec in recs:
            cur.execute(rec["create_sql"])
            cur.execute("SELECT pg_relation_size(%s::regclass)", (rec["index_name"],))
            built = cur.fetchone()[0]
            assert 0.5 * built <= rec["estimated_size_bytes"] <= 2 * built
        cur.execute("SELECT count(*), count(*) FILTER (WHERE status = 'pending' AND origin = 'queries')"
                    " FROM indexd.recommendations")
        assert cur.fetchone() == (2, 2)  # offline advice: saved, never built before a person approves it
        cur.execute("SELECT id, benefit_ms_per_s, write_overhead FROM indexd.recommendations")
        assert {r[0]: r[1:] for r in cur.fetchall()} == {
            r["id"]: (r["benefit_ms_per_s"], r["write_overhead"]) for r in recs}
        for rec in recs:
            cur.execute(f'DROP INDEX "{rec["index_name"]}"')
    # a second run refreshes the same rows instead of adding new ones
    _, out2, _ = _recommend(capsys, pg_dsn, "--queries", path, "--json")
    assert sorted(r["id"] for r in json.loads(out2)["recommendations"]) == sorted(r["id"] for r in recs)
    with shop.cursor() as cur:
        cur.execute("SELECT count(*) FROM indexd.recommendations")
        assert cur.fetchone()[0] == 2


def test_table_output_and_no_save(shop: psycopg2.extensions.connection, pg_dsn: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _recommend(capsys, pg_dsn, "--queries", _queries(tmp_path, WORKLOAD), "--no-save")
    assert code == 0
    assert "improvement" in out and "public.orders" in out and "(customer_id" in out
    assert "CREATE INDEX CONCURRENTLY" in out and "2 index(es) recommended" in out
    with shop.cursor() as cur:
        cur.execute("SELECT to_regclass('indexd.recommendations')")
        assert cur.fetchone()[0] is None


def test_workload_from_pg_stat_statements(shop: psycopg2.extensions.connection, pg_dsn: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with shop.cursor() as cur:
        for i in range(30):
            cur.execute("SELECT * FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT 20", (i,))
    code, out, _ = _recommend(capsys, pg_dsn, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["analyzed_statements"] >= 1
    assert [r["columns"][0] for r in doc["recommendations"]] == ["customer_id"]
    assert doc["recommendations"][0]["queries"][0]["calls"] == 30
    # the queryid lets verification find the statement in pg_stat_statements without comparing texts
    queryid = doc["recommendations"][0]["queries"][0]["queryid"]
    with shop.cursor() as cur:
        cur.execute("SELECT query FROM pg_stat_statements WHERE queryid = %s", (queryid,))
        assert "customer_id = $1" in cur.fetchone()[0]
        cur.execute("SELECT queries FROM indexd.recommendations")
        stored = cur.fetchone()[0]
    assert stored[0]["queryid"] == queryid
    assert target_keys(stored)[0] == {queryid}
    # Running it again on the same workload keeps the recommendation, and its id, as it was.
    first_id = doc["recommendations"][0]["id"]
    code, out, _ = _recommend(capsys, pg_dsn, "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)["recommendations"]] == [first_id]
    code, out, _ = _recommend(capsys, pg_dsn)
    assert code == 0 and IMPROVEMENT_MEANS in out
    with shop.cursor() as cur:
        cur.execute("SELECT id, status FROM indexd.recommendations")
        assert cur.fetchall() == [(first_id, "pending")]
    assert _row_of(out, first_id)[1] == "pending"
    # A person rejects it: the same workload's next advice finds the rejection, and the table says so.
    assert main(["reject", str(first_id), "--dsn", pg_dsn, "--reason", "not now"]) == 0
    code, out, _ = _recommend(capsys, pg_dsn)
    assert code == 0 and _row_of(out, first_id)[1] == "rejected"
    with shop.cursor() as cur:
        cur.execute("SELECT id, status FROM indexd.recommendations")
        assert cur.fetchall() == [(first_id, "rejected")]


def _row_of(table: str, rec_id: int) -> list[str]:
    """The cells of the recommend table's row for this id."""
    (row,) = [line.split() for line in table.splitlines() if line.split()[:1] == [str(rec_id)]]
    return row


def test_no_save_on_the_captured_workload_writes_nothing(shop: psycopg2.extensions.connection, pg_dsn: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with shop.cursor() as cur:
        for i in range(30):
            cur.execute("SELECT * FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT 20", (i,))
    code, out, err = _recommend(capsys, pg_dsn, "--json", "--no-save")
    assert code == 0, err
    assert [r["columns"][0] for r in json.loads(out)["recommendations"]] == ["customer_id"]
    assert "id" not in json.loads(out)["recommendations"][0]
    with shop.cursor() as cur:
        cur.execute("SELECT to_regnamespace('indexd')")  # no migration, no snapshot
        assert cur.fetchone()[0] is None


def test_budget_limits_and_says_why(shop: psycopg2.extensions.connection, pg_dsn: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = _queries(tmp_path, WORKLOAD)
    code, out, _ = _recommend(capsys, pg_dsn, "--queries", path, "--budget-mb", "0", "--no-save")
    assert code == 0 and "no index recommended" in out
    assert "the storage budget (0 B) is smaller than the smallest candidate index (" in out
    assert "none saves enough" not in out
    _, out, _ = _recommend(capsys, pg_dsn, "--queries", path, "--budget-mb", "3", "--json", "--no-save")
    recs = json.loads(out)["recommendations"]
    assert len(recs) == 1 and sum(r["estimated_size_bytes"] for r in recs) <= 3 * 1024 * 1024
    code, _, err = _recommend(capsys, pg_dsn, "--queries", path, "--budget-mb", "-1")
    assert code == 2 and "--budget-mb" in err


def test_write_heavy_table_gets_nothing_marginal(shop: psycopg2.extensions.connection, pg_dsn: str,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # events takes a flood of inserts; the one read that filters it is rare, so an index there cannot pay
    workload = """
-- calls: 20000000
INSERT INTO events (kind, payload) VALUES ($1, $2);
-- calls: 50
SELECT count(*) FROM events WHERE kind = $1;
-- calls: 500
SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20;
"""
    code, out, _ = _recommend(capsys, pg_dsn, "--queries", _queries(tmp_path, workload), "--json", "--no-save")
    assert code == 0
    recs = json.loads(out)["recommendations"]
    assert [r["table"] for r in recs] == ["public.orders"]
    # without the inserts the same read earns its index
    workload_no_writes = workload.replace("INSERT INTO events (kind, payload) VALUES ($1, $2);", "SELECT 1;")
    _, out, _ = _recommend(capsys, pg_dsn, "--queries", _queries(tmp_path, workload_no_writes), "--json",
                           "--no-save")
    assert "public.events" in {r["table"] for r in json.loads(out)["recommendations"]}


def test_missing_hypopg_fails_clearly(shop: psycopg2.extensions.connection, pg_dsn: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with shop.cursor() as cur:
        cur.execute("DROP EXTENSION hypopg")
    code, out, err = _recommend(capsys, pg_dsn, "--queries", _queries(tmp_path, WORKLOAD))
    assert code == 1 and out == ""
    assert "HypoPG is not installed" in err and "CREATE EXTENSION hypopg" in err
    code, out, err = _recommend(capsys, pg_dsn, "--json")
    assert code == 1 and out == "" and "apt-get install postgresql-15-hypopg" in err
    with shop.cursor() as cur:  # refused before anything was captured or written
        cur.execute("SELECT to_regclass('indexd.snapshots')")
        assert cur.fetchone()[0] is None


def test_missing_pg_stat_statements_fails_clearly(pg_cluster: EmbeddedCluster,
                                                  shop: psycopg2.extensions.connection, pg_dsn: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with shop.cursor() as cur:
        cur.execute("DROP EXTENSION pg_stat_statements")
    code, out, err = _recommend(capsys, pg_dsn)
    assert code == 1 and out == ""
    assert "CREATE EXTENSION pg_stat_statements" in err


def test_store_refreshes_live_rows_and_supersedes_stale_pending(database: Database) -> None:
    from indexd.advisor.model import IndexCandidate, IndexKey, QueryEffect, Recommendation
    from indexd.advisor.store import save_recommendations
    from indexd.lifecycle.readings import build_request
    from indexd.state.migrations import migrate
    from indexd.state.recommendation_rows import load_recommendations

    migrate(database)
    a = IndexCandidate("public", "t", (IndexKey("a"),))
    b = IndexCandidate("public", "t", (IndexKey("b"),))
    recs = [Recommendation(c, 8192, 12.5, 0.1, (QueryEffect("SELECT 1", 3, 10.0, 1.0),), benefit_ms_per_s=0.75)
            for c in (a, b)]
    sql_text = {c.fingerprint(): f"CREATE INDEX CONCURRENTLY {c.name()} ON t (x)" for c in (a, b)}
    ids = save_recommendations(database, recs, sql_text)
    with database.connection() as conn, conn.cursor() as cur:
        cur.execute("UPDATE indexd.recommendations SET status = 'approved' WHERE id = %s", (ids[b.fingerprint()],))
    again = save_recommendations(database, [replace(recs[1], benefit_ms_per_s=0.9)], sql_text,
                                 supersede_missing=True)
    assert again == {b.fingerprint(): ids[b.fingerprint()]}
    with database.connection() as conn:
        rows = load_recommendations(conn, "indexd", statuses=("pending", "approved", "superseded"))
    stored = {r.fingerprint: r for r in rows}
    assert stored[a.fingerprint()].status == "superseded"
    assert stored[b.fingerprint()].status == "approved"  # a decision is never undone by new advice
    assert stored[b.fingerprint()].queries == [{"query": "SELECT 1", "calls": 3, "cost_before": 10.0,
                                                "cost_after": 1.0}]
    # the benefit is saved beside the write cost, refreshed with new advice, and carried into the build's guard
    assert (stored[a.fingerprint()].benefit_ms_per_s, stored[a.fingerprint()].write_overhead) == (0.75, 0.1)
    assert stored[b.fingerprint()].benefit_ms_per_s == 0.9
    request = build_request(stored[b.fingerprint()], table_bytes=8192)
    assert (request.benefit_ms_per_s, request.write_overhead) == (0.9, 0.1)


def test_skipped_statements_summarised_and_listed_with_verbose(shop: psycopg2.extensions.connection, pg_dsn: str,
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Twelve shapes (the alias differs): statements that differ only in constants would be merged into one.
    queries = "\n".join(f"SELECT count(*) FROM orders o{i} WHERE {i} = {i};" for i in range(12))
    path = _queries(tmp_path, WORKLOAD + queries + "\nVACUUM orders;\n")
    code, out, _ = _recommend(capsys, pg_dsn, "--queries", path, "--no-save")
    assert code == 0
    assert "skipped 14 statements: 13 no_indexable_predicate, 1 utility (--verbose lists them)" in out
    assert "WHERE 3 = 3" not in out and "see --json" not in out
    _, verbose, _ = _recommend(capsys, pg_dsn, "--queries", path, "--no-save", "--verbose")
    assert all(f"WHERE {i} = {i}" in verbose for i in range(12))
    assert "[utility] VACUUM orders: utility statement (VacuumStmt)" in verbose
    _, out, err = _recommend(capsys, pg_dsn, "--queries", path, "--no-save", "--json")
    assert set(json.loads(out)) == {"database", "analyzed_statements", "elapsed_s", "recommendations"}
    assert "skipped 14 statements" in err and "see the table output" not in err and "WHERE 3 = 3" not in err
    _, out, err = _recommend(capsys, pg_dsn, "--queries", path, "--no-save", "--json", "--verbose")
    assert all(f"WHERE {i} = {i}" in err for i in range(12))


def test_empty_captured_workload_says_to_wait_or_use_queries(shop: psycopg2.extensions.connection, pg_dsn: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _recommend(capsys, pg_dsn, "--no-save")
    assert code == 0
    assert "no index recommended from 0 statements" in out
    assert "no statements captured yet" in out and "look-back is 7d" in out and "--queries" in out
    _, out, err = _recommend(capsys, pg_dsn, "--no-save", "--json")
    assert json.loads(out)["recommendations"] == [] and "no statements captured yet" in err


def test_statements_below_the_threshold_say_so(shop: psycopg2.extensions.connection, pg_dsn: str,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "strict.yaml"
    config.write_text(CONFIG + "  min_improvement_pct: 99.99\n", encoding="utf-8")
    code = main(["--config", str(config), "recommend", "--dsn", pg_dsn, "--no-save", "--queries",
                 _queries(tmp_path, "SELECT * FROM orders WHERE total < $1;")])
    out = capsys.readouterr().out
    assert code == 0
    assert "save less than min_improvement_pct (99.99%) of the cost of the statements they help" in out, out
