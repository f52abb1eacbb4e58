"""The synthetic shop: schema and skewed data load fast, the workload runs parameterised shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

from indexd.simulate import SHAPES, drive, setup, table_counts, time_alone


def _one(conn, query: str, params: tuple = ()) -> object:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def test_setup_loads_skewed_data_with_primary_keys_only(pg_dsn: str, pg_conn) -> None:
    setup(pg_dsn, "small")
    counts = table_counts(pg_dsn)
    assert 100_000 <= sum(counts.values()) <= 200_000
    assert counts["order_items"] > counts["orders"] > counts["customers"]
    # No index beyond primary keys: the advisor has work to do.
    non_pk = _one(pg_conn, "SELECT count(*) FROM pg_indexes i WHERE schemaname = 'shop' "
                  "AND indexname NOT LIKE '%%_pkey'")
    assert non_pk == 0
    # A rare status and a skewed customer activity.
    pending = _one(pg_conn, "SELECT avg((status = 'pending')::int) FROM shop.orders")
    assert 0 < pending < 0.02
    top_share = _one(pg_conn, "SELECT avg((customer_id <= 1000)::int) FROM shop.orders")
    assert top_share > 0.3  # the first 10 % of customers place far more than 10 % of orders
    # Recent-heavy timestamps, statistics gathered, a partitioned table and a view.
    recent = _one(pg_conn, "SELECT avg((created_at > now() - interval '90 days')::int) FROM shop.orders")
    assert recent > 0.4
    assert _one(pg_conn, "SELECT count(*) FROM pg_stats WHERE schemaname = 'shop' AND tablename = 'orders'") > 0
    assert _one(pg_conn, "SELECT relkind FROM pg_class WHERE oid = 'shop.payments'::regclass") == "p"
    assert _one(pg_conn, "SELECT count(*) FROM shop.customer_order_totals") > 0
    # Loading again replaces the schema with the same (seeded) data.
    setup(pg_dsn, "small")
    assert table_counts(pg_dsn) == counts


def test_drive_runs_every_kind_of_shape_as_normalised_statements(pg_dsn: str, pg_conn) -> None:
    setup(pg_dsn, "small")
    _one(pg_conn, "SELECT pg_stat_statements_reset() IS NULL")
    seen: list[int] = []
    stats = drive(pg_dsn, "small", timedelta(seconds=3), clients=2, progress=lambda e, t, n: seen.append(n))
    assert stats.errors == 0, stats.last_error
    assert stats.calls > 200
    assert 2.5 < stats.duration_s < 6
    assert seen, "progress was never reported"
    kinds = {s.kind for s in stats.shapes.values() if s.calls}
    assert kinds == {"read", "write", "report"}
    assert len(SHAPES) >= 25
    shapes = _one(pg_conn, "SELECT count(*) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                  "WHERE d.datname = current_database() AND s.query LIKE '%%shop.%%' AND s.query LIKE '%%$1%%'")
    assert shapes >= 15
    new_orders = _one(pg_conn, "SELECT count(*) FROM shop.orders WHERE created_at > now() - interval '1 minute'")
    assert new_orders > 0


def test_cli_setup_then_drive(pg_dsn: str) -> None:
    cmd = [sys.executable, "-m", "indexd", "simulate", "--dsn", pg_dsn, "--scenario", "small"]
    done = subprocess.run(cmd + ["--setup-only"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(cmd + ["--no-setup", "--duration", "2s", "--json"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["calls"] > 0 and out["errors"] == 0
    assert out["shapes"]["customer_by_email"]["calls"] > 0
    assert "\r" not in done.stderr  # no live progress line when stderr is not a terminal


def test_cli_rejects_a_bad_duration(pg_dsn: str) -> None:
    done = subprocess.run([sys.executable, "-m", "indexd", "simulate", "--dsn", pg_dsn, "--duration", "soon"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--duration" in done.stderr


def test_setup_never_drops_a_schema_it_did_not_create(pg_dsn: str, pg_conn) -> None:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE SCHEMA shop; CREATE TABLE shop.precious (id int); INSERT INTO shop.precious VALUES (1)")
    pg_conn.commit()
    done = subprocess.run([sys.executable, "-m", "indexd", "simulate", "--dsn", pg_dsn, "--setup-only"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "schema shop already exists" in done.stderr, done.stderr
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM shop.precious")
        assert cur.fetchone() == (1,)


def test_cli_on_a_database_that_does_not_exist_is_one_line(pg_dsn: str) -> None:
    missing = pg_dsn.rsplit("/", 1)[0] + "/no_such_database"
    for extra in ([], ["--no-setup", "--duration", "1s"]):  # the load, then the workload's own connections
        done = subprocess.run([sys.executable, "-m", "indexd", "simulate", "--dsn", missing, *extra],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert 'indexd: simulate failed: connection to server at' in done.stderr
        assert 'database "no_such_database" does not exist' in done.stderr


def test_time_alone_runs_every_shape_the_same_number_of_times(pg_dsn: str, pg_conn) -> None:
    setup(pg_dsn, "small")
    _one(pg_conn, "SELECT pg_stat_statements_reset() IS NULL")
    stats = time_alone(pg_dsn, rounds=3, seed=7)
    assert stats.errors == 0, stats.last_error
    assert {s.name: s.calls for s in stats.shapes.values()} == {s.name: 3 for s in SHAPES}
    assert all(s.mean_ms > 0 and len(s.samples) == 3 for s in stats.shapes.values())
    assert stats.clients == 1
    # one warm-up round that is run but not counted
    calls = _one(pg_conn, "SELECT sum(calls) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                 "WHERE d.datname = current_database() AND s.query LIKE '%%shop.%%'")
    assert calls >= 4 * len(SHAPES)
