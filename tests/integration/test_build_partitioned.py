"""Indexes on partitioned tables on a real server: ON ONLY, each partition CONCURRENTLY, ATTACH; failure, pause,
crash leftovers, revert, hostile names."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from psycopg2 import sql

from indexd.db.pool import Database
from indexd.lifecycle import health
from indexd.lifecycle.build import build_index
from indexd.lifecycle.cleanup import cleanup_invalid
from indexd.lifecycle.drop import drop_index_concurrently
from indexd.lifecycle.partitioned import PARTITION_PREFIX, partition_index_name
from indexd.lifecycle.pause import pause
from indexd.lifecycle.readings import table_facts
from indexd.lifecycle.verify import index_scans as verify_index_scans
from indexd.state.recommendation_rows import load_recommendations
from tests.support.lifecycle import (
    audit_rows,
    candidate,
    index_valid,
    insert_recommendation,
    rec_status,
)

ROWS = 50_000


def make_partitioned(conn, schema: str, table: str, column: str = "a", rows: int = ROWS) -> dict[str, str]:
    """`table` partitioned by region: <table> eu, <table> us (leaves) and <table> asia, itself partitioned by
    id in two leaves. Returns the partitions' names by role."""
    names = {k: f"{table} {k}" for k in ("eu", "us", "asia", "asia 1", "asia 2")}
    q = sql.Identifier
    statements = [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(q(schema)),
        sql.SQL("CREATE TABLE {}.{} (id bigint NOT NULL, {} integer, b integer, region text NOT NULL)"
                " PARTITION BY LIST (region)").format(q(schema), q(table), q(column)),
        sql.SQL("CREATE TABLE {}.{} PARTITION OF {}.{} FOR VALUES IN ('eu')").format(
            q(schema), q(names["eu"]), q(schema), q(table)),
        sql.SQL("CREATE TABLE {}.{} PARTITION OF {}.{} FOR VALUES IN ('us')").format(
            q(schema), q(names["us"]), q(schema), q(table)),
        sql.SQL("CREATE TABLE {}.{} PARTITION OF {}.{} FOR VALUES IN ('asia') PARTITION BY RANGE (id)").format(
            q(schema), q(names["asia"]), q(schema), q(table)),
        sql.SQL("CREATE TABLE {}.{} PARTITION OF {}.{} FOR VALUES FROM (MINVALUE) TO ({})").format(
            q(schema), q(names["asia 1"]), q(schema), q(names["asia"]), sql.Literal(rows // 2)),
        sql.SQL("CREATE TABLE {}.{} PARTITION OF {}.{} FOR VALUES FROM ({}) TO (MAXVALUE)").format(
            q(schema), q(names["asia 2"]), q(schema), q(names["asia"]), sql.Literal(rows // 2)),
        sql.SQL("INSERT INTO {}.{} (id, {}, b, region) SELECT g, g %% 1000, g %% 7,"
                " (ARRAY['eu', 'us', 'asia'])[1 + g %% 3] FROM generate_series(1, %s) g").format(
            q(schema), q(table), q(column)),
        sql.SQL("ANALYZE {}.{}").format(q(schema), q(table)),
    ]
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, (rows,) if "generate_series" in statement.as_string(conn) else None)
    return names


def _rec(db: Database, rec_id: int):
    with db.connection() as conn:
        return load_recommendations(conn, "indexd", ids=(rec_id,))[0]


def tree_indexes(conn, schema: str, index: str) -> list[tuple[str, str, bool, bool]]:
    """(table, index, valid, leaf) for every index in the partition tree of `index`, the index itself first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT t.relname, c.relname, i.indisvalid, p.isleaf"
            " FROM pg_partition_tree(%s::regclass) p JOIN pg_class c ON c.oid = p.relid"
            " JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_class t ON t.oid = i.indrelid ORDER BY p.level, 1",
            (sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(index)).as_string(conn),))
        return [(r[0], r[1], bool(r[2]), bool(r[3])) for r in cur.fetchall()]


def own_indexes(conn) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT relname FROM pg_class WHERE relkind IN ('i', 'I') AND relname LIKE 'indexd\\_%'"
                    " ORDER BY 1")
        return [r[0] for r in cur.fetchall()]


def test_build_on_a_partitioned_table_attaches_an_index_to_every_partition(fast_db: Database, pg_conn) -> None:
    names = make_partitioned(pg_conn, "public", "payments")
    rec_id = insert_recommendation(pg_conn, candidate("public", "payments", "a"))
    started = time.monotonic()
    result = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)
    print(f"partitioned build of {ROWS} rows over 4 leaf partitions: {time.monotonic() - started:.2f}s")
    assert result.outcome == "succeeded", result.reason
    assert rec_status(pg_conn, rec_id) == "built"
    tree = tree_indexes(pg_conn, "public", result.index_name)
    assert tree[0][1] == result.index_name and all(valid for _t, _i, valid, _leaf in tree)
    leaves = {t for t, _i, _v, leaf in tree if leaf}
    assert leaves == {names["eu"], names["us"], names["asia 1"], names["asia 2"]}
    assert {t for t, _i, _v, leaf in tree if not leaf} == {"payments", names["asia"]}
    assert all(i.startswith(PARTITION_PREFIX) and len(i.encode()) <= 63 for _t, i, _v, _l in tree[1:])
    with pg_conn.cursor() as cur:
        cur.execute("EXPLAIN SELECT * FROM payments WHERE a = 5")
        plan = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree(%s::regclass)", (result.index_name,))
        total = int(cur.fetchone()[0])
    assert PARTITION_PREFIX in plan and "Seq Scan" not in plan, plan
    assert result.size_bytes == total > 0
    rows = audit_rows(pg_conn, "create_index")
    assert [(r["phase"], r["outcome"]) for r in rows] == [("intent", "started"), ("outcome", "succeeded")]
    steps = rows[1]["after"]["steps"]
    assert [s["step"] for s in steps].count("create_concurrently") == 4
    assert [s["step"] for s in steps].count("attach") == 5 and steps[0]["step"] == "create_only"
    assert rows[0]["before"]["partitioned"] is True and len(rows[0]["before"]["partition_indexes"]) == 5
    report = health.report(fast_db, None, fast_db.settings)  # type: ignore[arg-type]
    listed = {f.index: f for f in report.unused}
    assert listed[result.index_name].size_bytes == total
    assert listed[result.index_name].sql.startswith("DROP INDEX \"public\"")


def test_a_lock_timeout_on_one_partition_drops_everything_and_retries_later(fast_db: Database, pg_cluster,
                                                                            pg_dbname, pg_conn) -> None:
    names = make_partitioned(pg_conn, "public", "payments", rows=6000)
    rec_id = insert_recommendation(pg_conn, candidate("public", "payments", "a"))
    app = pg_cluster.connect(pg_dbname, autocommit=False)
    try:
        with app.cursor() as cur:  # the last partition built is held: its CREATE INDEX CONCURRENTLY cannot start
            cur.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(sql.Identifier(names["us"])))
        result = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)
    finally:
        app.rollback()
        app.close()
    assert result.outcome == "failed" and result.retry_later, result.reason
    assert "lock timeout" in (result.reason or "")
    assert rec_status(pg_conn, rec_id) == "approved"
    outcome = [r for r in audit_rows(pg_conn, "create_index") if r["phase"] == "outcome"][0]
    assert outcome["outcome"] == "failed" and "lock timeout" in outcome["reason"]
    # dropping the parent's index locks every partition, so it timed out too while the application held one:
    # the INVALID parent index (with the attached partition indexes) is left for the cleanup of the next run
    assert outcome["after"]["left_for_cleanup"] == [f"public.{result.index_name}"]
    assert index_valid(pg_conn, "public", result.index_name) is False
    assert cleanup_invalid(fast_db) == [f"public.{result.index_name}"]
    assert own_indexes(pg_conn) == []
    assert [s["step"] for s in outcome["after"]["steps"]].count("create_concurrently") == 3
    # no DROP right behind the lock timeout (it would wait for the same locks again): deferred, then cleanup
    drops = audit_rows(pg_conn, "drop_index")
    assert [(r["phase"], r["outcome"]) for r in drops] == [
        ("intent", "started"), ("outcome", "skipped"), ("intent", "started"), ("outcome", "succeeded")]
    assert drops[1]["reason"].startswith("deferred: ") and "plain DROP INDEX" in drops[2]["reason"]


def test_a_pause_between_partitions_stops_the_build_and_drops_what_it_made(fast_db: Database, pg_cluster,
                                                                           pg_dbname, pg_conn) -> None:
    names = make_partitioned(pg_conn, "public", "payments", rows=6000)
    rec_id = insert_recommendation(pg_conn, candidate("public", "payments", "a"))
    app = pg_cluster.connect(pg_dbname, autocommit=False)
    out: dict = {}
    try:
        with app.cursor() as cur:
            cur.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(sql.Identifier(names["us"])))
        builder = threading.Thread(target=lambda: out.update(r=build_index(fast_db, _rec(fast_db, rec_id),
                                                                            fast_db.settings)))
        builder.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the build waits for the last partition: pause, then let it go
            with pg_conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
                            (sql.Identifier(names["us"]).as_string(pg_conn),))
                if cur.fetchone()[0]:
                    break
            time.sleep(0.02)
        pause(fast_db, timedelta(hours=1), "incident")
        app.rollback()
        builder.join(timeout=30)
    finally:
        app.rollback()
        app.close()
    result = out["r"]
    assert result.outcome == "failed" and result.retry_later, result.reason
    assert "stopped between partitions" in (result.reason or "") and "incident" in (result.reason or "")
    assert own_indexes(pg_conn) == []
    assert rec_status(pg_conn, rec_id) == "approved"
    outcome = [r for r in audit_rows(pg_conn, "create_index") if r["phase"] == "outcome"][0]
    assert outcome["outcome"] == "refused"
    assert [s["step"] for s in outcome["after"]["steps"]].count("create_concurrently") == 4


def test_cleanup_removes_what_a_crashed_partitioned_build_left(fast_db: Database, pg_conn) -> None:
    names = make_partitioned(pg_conn, "public", "payments", rows=3000)
    cand = candidate("public", "payments", "a")
    parent = cand.name()
    eu, us = (partition_index_name(parent, "public", names[k]) for k in ("eu", "us"))
    q = sql.Identifier
    with pg_conn.cursor() as cur:  # what a build killed after two partitions leaves behind
        cur.execute(sql.SQL("CREATE INDEX {} ON ONLY payments (a)").format(q(parent)))
        cur.execute(sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} (a)").format(q(eu), q(names["eu"])))
        cur.execute(sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(q(parent), q(eu)))
        cur.execute(sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} (a)").format(q(us), q(names["us"])))
        cur.execute("CREATE INDEX someone_elses ON payments (b)")
    assert index_valid(pg_conn, "public", parent) is False
    dropped = cleanup_invalid(fast_db)
    assert sorted(dropped) == sorted([f"public.{parent}", f"public.{us}"])
    assert own_indexes(pg_conn) == []
    assert index_valid(pg_conn, "public", "someone_elses") is True


def test_revert_of_a_partitioned_index_uses_a_plain_drop(fast_db: Database, pg_conn) -> None:
    make_partitioned(pg_conn, "public", "payments", rows=3000)
    rec_id = insert_recommendation(pg_conn, candidate("public", "payments", "a"))
    built = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)
    assert built.outcome == "succeeded", built.reason
    dropped = drop_index_concurrently(fast_db, "public", built.index_name, reason="verification: no gain",
                                      action="revert_index", recommendation_id=rec_id)
    assert dropped.outcome == "succeeded", dropped.reason
    assert own_indexes(pg_conn) == []
    intent = [r for r in audit_rows(pg_conn, "revert_index") if r["phase"] == "intent"][0]
    assert "DROP INDEX CONCURRENTLY is not supported" in intent["reason"]
    assert intent["before"]["partitioned"] is True and intent["before"]["size_bytes"] > 0
    with pg_conn.cursor() as cur:
        cur.execute("SELECT sql FROM indexd.mutation_log WHERE id = %s", (intent["id"],))
        assert cur.fetchone()[0].startswith("DROP INDEX IF EXISTS")


def test_hostile_names_on_a_partitioned_table(fast_db: Database, pg_conn) -> None:
    schema, table = 'Pay "Schema', 'pay"ments; drop'
    make_partitioned(pg_conn, schema, table, column='we"ird col', rows=3000)
    rec_id = insert_recommendation(pg_conn, candidate(schema, table, 'we"ird col'))
    result = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)
    assert result.outcome == "succeeded", result.reason
    tree = tree_indexes(pg_conn, schema, result.index_name)
    assert len(tree) == 6 and all(valid for _t, _i, valid, _l in tree)
    dropped = drop_index_concurrently(fast_db, schema, result.index_name, reason="test")
    assert dropped.outcome == "succeeded", dropped.reason
    assert own_indexes(pg_conn) == []


def test_readings_sum_a_partitioned_tables_partitions(fast_db: Database, pg_conn) -> None:
    make_partitioned(pg_conn, "public", "payments", rows=6000)
    with pg_conn.cursor() as cur:  # the inserts' counters reach the shared statistics now, not within a second
        cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute("SELECT 1")
    with fast_db.connection() as conn:
        size, writes = table_facts(conn, "public", "payments")
        leaf_size, _ = table_facts(conn, "public", "payments eu")
    assert size > leaf_size > 0 and writes > 0


def test_a_partitioned_index_is_scanned_through_its_partitions(fast_db: Database, pg_conn) -> None:
    make_partitioned(pg_conn, "public", "payments", rows=6000)
    rec_id = insert_recommendation(pg_conn, candidate("public", "payments", "a"))
    built = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)
    assert built.outcome == "succeeded", built.reason
    with pg_conn.cursor() as cur:
        for value in (5, 6, 7):
            cur.execute("SELECT count(*) FROM payments WHERE a = %s", (value,))
        cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute("SELECT 1")
    with fast_db.connection() as conn:
        exists, valid, scans, _reset = verify_index_scans(conn, "public", built.index_name)
    assert exists and valid and scans >= 3
    report = health.report(fast_db, None, fast_db.settings)  # type: ignore[arg-type]
    assert built.index_name not in {f.index for f in report.unused}
