"""A large `recommend --queries` file on the real cluster: statements of one shape are merged before costing,
their weights summed, and an input above `indexing.queries_max_bytes` is refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2.extensions
import pytest

from indexd.cli import main

STATEMENTS = 20_000


@pytest.fixture
def shop(pg_conn: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL)")
        cur.execute("INSERT INTO customers SELECT g, 'c' || g || '@example.com' FROM generate_series(1, 30000) g")
        cur.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, total numeric)")
        cur.execute("INSERT INTO orders SELECT g, g % 30000, g % 500 FROM generate_series(1, 100000) g")
        cur.execute("ANALYZE")
    return pg_conn


def _workload(path: Path) -> dict[str, int]:
    """20,000 statements of three shapes, constants varying; returns the summed weight per table."""
    calls = {"orders": 0, "customers": 0, "count": 0}
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(STATEMENTS):
            weight = 1 + i % 5 if i % 3 == 0 else 1
            if weight > 1:
                fh.write(f"-- calls: {weight}\n")
            if i % 4 == 3:
                fh.write(f"select id, email from customers where email = 'c{i}@example.com';\n")
                calls["customers"] += weight
            elif i % 100 == 0:
                fh.write("SELECT count(*) FROM orders;\n")
                calls["count"] += weight
            else:
                fh.write(f"SELECT id, total FROM orders WHERE customer_id = {i % 30000} LIMIT 10;\n")
                calls["orders"] += weight
    return calls


def _recommend(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["--config", str(config), "recommend", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_twenty_thousand_statements_are_costed_as_three_shapes(shop: psycopg2.extensions.connection, pg_dsn: str,
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "workload.sql"
    calls = _workload(path)
    config = tmp_path / "indexd.yaml"
    config.write_text("indexing:\n  min_calls: 1\nlogging:\n  file: null\n", encoding="utf-8")
    code, out, err = _recommend(capsys, config, "--dsn", pg_dsn, "--queries", str(path), "--no-save", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["analyzed_statements"] == 3
    by_table = {rec["table"]: rec for rec in doc["recommendations"]}
    assert set(by_table) == {"public.orders", "public.customers"}
    assert by_table["public.orders"]["columns"][0] == "customer_id"
    assert [(q["query"], q["calls"]) for q in by_table["public.orders"]["queries"]] == [
        ("SELECT id, total FROM orders WHERE customer_id = 1 LIMIT 10", calls["orders"])]
    assert [(q["query"], q["calls"]) for q in by_table["public.customers"]["queries"]] == [
        ("select id, email from customers where email = 'c3@example.com'", calls["customers"])]


def test_a_file_above_the_limit_is_refused(pg_dsn: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "workload.sql"
    _workload(path)
    config = tmp_path / "indexd.yaml"
    config.write_text("indexing:\n  queries_max_bytes: 64KB\nlogging:\n  file: null\n", encoding="utf-8")
    code, out, err = _recommend(capsys, config, "--dsn", pg_dsn, "--queries", str(path), "--no-save")
    assert code == 2 and out == ""
    assert f"holds {path.stat().st_size} bytes of statements, more than indexing.queries_max_bytes (65536)" in err
    assert "Traceback" not in err
