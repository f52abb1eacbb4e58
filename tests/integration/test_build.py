"""CREATE / DROP INDEX CONCURRENTLY on a real server: success, lock timeout, hostile names, cleanup."""

from __future__ import annotations

import threading
import time

import pytest

from indexd.db.pool import Database
from indexd.lifecycle.build import build_index
from indexd.lifecycle.cleanup import cleanup_invalid
from indexd.lifecycle.ddl import BuildProgress
from indexd.lifecycle.drop import drop_index_concurrently
from indexd.state.recommendation_rows import load_recommendations
from tests.support.lifecycle import (
    audit_rows,
    candidate,
    index_valid,
    insert_recommendation,
    make_table,
    rec_status,
)


def _rec(db: Database, rec_id: int):
    with db.connection() as conn:
        return load_recommendations(conn, "indexd", ids=(rec_id,))[0]


def test_build_succeeds_audited_analyzed_and_sized(fast_db: Database, pg_conn) -> None:
    make_table(pg_conn, "public", "orders", rows=20000)
    rec_id = insert_recommendation(pg_conn, candidate("public", "orders", "a", "b"))
    seen: list[BuildProgress] = []
    result = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings, job_id="job-1", progress=seen.append)
    assert result.outcome == "succeeded", result.reason
    assert result.size_bytes and result.size_bytes > 0
    assert rec_status(pg_conn, rec_id) == "built"
    assert index_valid(pg_conn, "public", result.index_name) is True
    rows = audit_rows(pg_conn, "create_index")
    assert [(r["phase"], r["outcome"]) for r in rows] == [("intent", "started"), ("outcome", "succeeded")]
    assert rows[1]["intent_id"] == rows[0]["id"] and rows[1]["after"]["size_bytes"] == result.size_bytes
    assert rows[0]["recommendation_id"] == rec_id and " pid " in rows[0]["actor"]
    with pg_conn.cursor() as cur:
        cur.execute("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'orders'")
        assert cur.fetchone()[0]


def test_hostile_names_are_quoted_everywhere(fast_db: Database, pg_conn) -> None:
    make_table(pg_conn, "Order Items", 'se"lect', columns=("select", 'we"ird'), rows=500)
    rec_id = insert_recommendation(pg_conn, candidate("Order Items", 'se"lect', "select", 'we"ird'))
    result = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)
    assert result.outcome == "succeeded", result.reason
    assert index_valid(pg_conn, "Order Items", result.index_name)
    dropped = drop_index_concurrently(fast_db, "Order Items", result.index_name, reason="test revert",
                                      action="revert_index", recommendation_id=rec_id)
    assert dropped.outcome == "succeeded", dropped.reason
    assert index_valid(pg_conn, "Order Items", result.index_name) is None
    revert = audit_rows(pg_conn, "revert_index")
    assert revert[0]["before"]["definition"].startswith("CREATE INDEX")
    assert [r["outcome"] for r in revert] == ["started", "succeeded"]


def test_lock_timeout_gives_up_without_blocking_the_application(fast_db: Database, pg_cluster, pg_dbname,
                                                                 pg_conn) -> None:
    make_table(pg_conn, "public", "busy", rows=2000)
    rec_id = insert_recommendation(pg_conn, candidate("public", "busy", "a"))
    app = pg_cluster.connect(pg_dbname, autocommit=False)
    try:
        with app.cursor() as cur:  # an application transaction that wrote to the table and stays open
            cur.execute("UPDATE busy SET b = b + 1 WHERE id = 1")
        out: dict = {}
        builder = threading.Thread(target=lambda: out.update(r=build_index(fast_db, _rec(fast_db, rec_id),
                                                                            fast_db.settings)))
        builder.start()
        time.sleep(0.3)
        started = time.monotonic()
        with app.cursor() as cur:  # the application's next statements must not wait behind the build
            cur.execute("UPDATE busy SET b = b + 1 WHERE id = 2")
            cur.execute("INSERT INTO busy (a, b) VALUES (1, 1)")
        app_wait = time.monotonic() - started
        builder.join(timeout=20)
        result = out["r"]
        assert app_wait < 0.5
        assert result.outcome == "failed" and result.retry_later
        assert "lock timeout" in (result.reason or "")
        assert rec_status(pg_conn, rec_id) == "approved"  # back in the queue for a later run
        outcomes = [r for r in audit_rows(pg_conn, "create_index") if r["phase"] == "outcome"]
        assert outcomes[0]["outcome"] == "failed" and "lock timeout" in outcomes[0]["reason"]
    finally:
        app.rollback()
        app.close()
    # the INVALID leftover (its drop also timed out while the app held the table) goes at the next cleanup
    if index_valid(pg_conn, "public", result.index_name) is False:
        assert cleanup_invalid(fast_db) == [f"public.{result.index_name}"]
    assert index_valid(pg_conn, "public", result.index_name) is None


def test_bad_create_sql_is_refused_before_anything_runs(fast_db: Database, pg_conn) -> None:
    make_table(pg_conn, "public", "t1", rows=10)
    cand = candidate("public", "t1", "a")
    rec_id = insert_recommendation(pg_conn, cand)
    with pg_conn.cursor() as cur:
        cur.execute("UPDATE indexd.recommendations SET create_sql = %s WHERE id = %s",
                    (cand.create_sql(concurrently=False).as_string(pg_conn), rec_id))
    from indexd.errors import BuildError

    with pytest.raises(BuildError, match="not CONCURRENTLY"):
        build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)
    assert rec_status(pg_conn, rec_id) == "approved" and audit_rows(pg_conn) == []


def test_a_rejected_recommendation_is_not_built(fast_db: Database, pg_conn) -> None:
    make_table(pg_conn, "public", "t2", rows=10)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t2", "a"), status="rejected")
    result = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)
    assert result.outcome == "skipped" and audit_rows(pg_conn) == []


def test_cleanup_drops_only_our_invalid_indexes(fast_db: Database, pg_conn) -> None:
    make_table(pg_conn, "public", "dup", columns=("a",), rows=100)
    with pg_conn.cursor() as cur:
        cur.execute("INSERT INTO dup (a) SELECT 1 FROM generate_series(1, 3)")
        for name in ("indexd_dup_a_deadbeef", "theirs_dup_a"):  # a failed unique build leaves INVALID indexes
            with pytest.raises(Exception, match="could not create unique index"):
                cur.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON dup (a)")
    assert index_valid(pg_conn, "public", "indexd_dup_a_deadbeef") is False
    assert cleanup_invalid(fast_db) == ["public.indexd_dup_a_deadbeef"]
    assert index_valid(pg_conn, "public", "indexd_dup_a_deadbeef") is None
    assert index_valid(pg_conn, "public", "theirs_dup_a") is False  # not ours: left alone
    assert [r["outcome"] for r in audit_rows(pg_conn, "drop_index")] == ["started", "succeeded"]


def test_an_invalid_leftover_of_the_same_name_is_dropped_before_building(fast_db: Database, pg_conn) -> None:
    make_table(pg_conn, "public", "again", columns=("a",), rows=100)
    cand = candidate("public", "again", "a")
    rec_id = insert_recommendation(pg_conn, cand)
    with pg_conn.cursor() as cur:  # an earlier attempt under this very name that failed half-way
        cur.execute("INSERT INTO again (a) VALUES (1), (1)")
        with pytest.raises(Exception, match="could not create unique index"):
            cur.execute(f'CREATE UNIQUE INDEX CONCURRENTLY "{cand.name()}" ON again (a)')
    assert index_valid(pg_conn, "public", cand.name()) is False
    result = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)
    assert result.outcome == "succeeded", result.reason
    assert index_valid(pg_conn, "public", cand.name()) is True
    assert [r["outcome"] for r in audit_rows(pg_conn, "drop_index")] == ["started", "succeeded"]
    again = build_index(fast_db, _rec(fast_db, rec_id), fast_db.settings)  # built: nothing more to do
    assert again.outcome == "skipped" and rec_status(pg_conn, rec_id) == "built"


def test_cleanup_settles_a_build_that_finished_after_its_process_died(fast_db: Database, pg_conn) -> None:
    from indexd.state import audit

    make_table(pg_conn, "public", "done", rows=100)
    cand = candidate("public", "done", "a")
    rec_id = insert_recommendation(pg_conn, cand, status="building")
    with pg_conn.cursor() as cur:  # the server finished the build; its client died before writing the outcome
        cur.execute(cand.create_sql().as_string(pg_conn))
    intent = audit.record_intent(pg_conn, "indexd", action="create_index", target=f"public.{cand.name()}",
                                 recommendation_id=rec_id, before={"action": "create_index", "index_schema": "public",
                                                                   "index_name": cand.name(), "backend_pid": 1})
    assert cleanup_invalid(fast_db) == []
    assert rec_status(pg_conn, rec_id) == "built"
    with fast_db.connection() as conn:
        latest = audit.recent_mutations(conn, "indexd", limit=5)
    assert [(m.id, m.action, m.outcome) for m in latest] == [(intent, "create_index", "succeeded")]
    assert "recorded after an interruption" in (latest[0].reason or "")


def test_create_sql_must_match_the_recommendation() -> None:
    from indexd.errors import BuildError
    from indexd.lifecycle.build import check_create_sql
    from indexd.state.recommendation_rows import StoredRecommendation

    def rec(create_sql: str) -> StoredRecommendation:
        return StoredRecommendation(1, "approved", "f", "public", "t", ["a"], "btree", None, [], "indexd_t_a_1",
                                    create_sql, None, None, None, [])

    check_create_sql(rec('CREATE INDEX CONCURRENTLY "indexd_t_a_1" ON "public"."t" USING btree ("a")'))
    check_create_sql(rec('CREATE INDEX CONCURRENTLY indexd_t_a_1 ON t (a)'))  # unqualified: the row's schema
    for bad, why in [
        ('CREATE INDEX CONCURRENTLY "other" ON "public"."t" ("a")', "names the index 'other'"),
        ('CREATE INDEX CONCURRENTLY "indexd_t_a_1" ON "public"."u" ("a")', "targets public.u"),
        ('CREATE INDEX CONCURRENTLY "indexd_t_a_1" ON t (a); DROP TABLE t', "is not a single CREATE INDEX"),
        ("DROP TABLE t", "is not a single CREATE INDEX"),
        ("CREATE INDEX CONCURRENTLY ON", "does not parse"),
    ]:
        with pytest.raises(BuildError, match=why):
            check_create_sql(rec(bad))
