"""A build that gives up at lock_timeout does not drop its INVALID leftover right behind it (that drop would wait
for the same locks a second time): the drop is recorded as deferred and done by the next run's cleanup."""

from __future__ import annotations

import functools
import time
from datetime import timedelta

from indexd.config.schema import Settings
from indexd.db.pool import Database
from indexd.lifecycle.apply import ApplyResult, apply
from indexd.lifecycle.readings import take_readings
from tests.support.lifecycle import audit_rows, candidate, index_valid, insert_recommendation, make_table, rec_status

CALM_CPU = functools.partial(take_readings, cpu=lambda sample_s: 1.0)  # host CPU injected; the rest is real
LOCK_S = 1.0


def _run(db: Database) -> tuple[ApplyResult, float]:
    started = time.monotonic()
    result = apply(db, Settings(databases=(db.settings,)), db.settings, readings_fn=CALM_CPU)
    return result, time.monotonic() - started


def _drops(conn) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(r["phase"], r["outcome"]) for r in audit_rows(conn, "drop_index")]


def test_the_leftover_of_a_lock_timeout_is_dropped_by_the_next_run(lifecycle_db, pg_cluster, pg_dbname,
                                                                   pg_conn) -> None:
    db = lifecycle_db(mode="approve", windows=(), lock_timeout=timedelta(seconds=LOCK_S))
    make_table(pg_conn, "public", "busy", rows=2000)
    rec_id = insert_recommendation(pg_conn, candidate("public", "busy", "a"))
    name = candidate("public", "busy", "a").name()
    app = pg_cluster.connect(pg_dbname, autocommit=False)
    try:
        with app.cursor() as cur:  # an application transaction that wrote to the table and stays open
            cur.execute("UPDATE busy SET b = b + 1 WHERE id = 1")
        first, took = _run(db)
        # The build waited for the application once (after creating its catalog entry) and gave up ...
        assert [f.recommendation_id for f in first.failed] == [rec_id] and first.failed[0].retry_later
        assert "lock timeout" in (first.failed[0].reason or "")
        assert index_valid(pg_conn, "public", name) is False
        # ... and no DROP was attempted in this run: the drop is on record as deferred, nothing else.
        assert _drops(pg_conn) == [("intent", "started"), ("outcome", "skipped")]
        deferred = audit_rows(pg_conn, "drop_index")[1]
        assert deferred["reason"].startswith("deferred: ") and "next run's cleanup" in deferred["reason"]
        assert deferred["target"] == f"public.{name}" and deferred["recommendation_id"] == rec_id
        assert took < 2 * LOCK_S + 5  # generous: only one lock wait (of LOCK_S) happened, not two
    finally:
        app.rollback()
        app.close()
    assert rec_status(pg_conn, rec_id) == "approved"
    second, _ = _run(db)  # the next run: cleanup first (the leftover goes), then the build succeeds
    assert [b.recommendation_id for b in second.built] == [rec_id]
    assert _drops(pg_conn)[2:] == [("intent", "started"), ("outcome", "succeeded")]
    assert "leftover" in audit_rows(pg_conn, "drop_index")[2]["reason"]
    assert index_valid(pg_conn, "public", name) is True and rec_status(pg_conn, rec_id) == "built"


def test_a_build_that_fails_for_another_reason_still_drops_its_leftover_at_once(lifecycle_db, pg_conn) -> None:
    db = lifecycle_db(mode="approve", windows=(), lock_timeout=timedelta(seconds=LOCK_S))
    make_table(pg_conn, "public", "dups", rows=200)
    with pg_conn.cursor() as cur:
        cur.execute("UPDATE dups SET a = 1")  # a unique index on a cannot be built
    cand = candidate("public", "dups", "a")
    rec_id = insert_recommendation(pg_conn, cand)
    with pg_conn.cursor() as cur:
        cur.execute("UPDATE indexd.recommendations SET create_sql = replace(create_sql, 'CREATE INDEX', "
                    "'CREATE UNIQUE INDEX') WHERE id = %s", (rec_id,))
    result, _ = _run(db)
    assert result.failed and not result.failed[0].retry_later
    assert _drops(pg_conn) == [("intent", "started"), ("outcome", "succeeded")]
    assert index_valid(pg_conn, "public", cand.name()) is None
