"""apply / approve / reject on a real server: modes, guards re-checked per build, leadership, rate limits."""

from __future__ import annotations

import contextlib
import functools
import threading
from datetime import timedelta

import pytest

from indexd.advisor.pipeline import advise
from indexd.advisor.store import save_recommendations
from indexd.clock import utcnow
from indexd.config.schema import RateLimitSettings, Settings, ThrottleSettings
from indexd.db.pool import Database
from indexd.errors import UsageError
from indexd.lifecycle.apply import apply, approve, reject
from indexd.lifecycle.readings import take_readings
from indexd.statements.statement import Statement
from indexd.workload.lookback import given_workload
from tests.support.lifecycle import (
    audit_rows,
    candidate,
    index_valid,
    insert_recommendation,
    make_table,
    rec_status,
)

CALM_CPU = functools.partial(take_readings, cpu=lambda sample_s: 1.0)  # host CPU injected; the rest is real


@pytest.fixture
def make_db(lifecycle_db):
    """Database objects for the test database with indexing settings of the test's choosing (any time window)."""

    def make(mode: str = "approve", **indexing: object) -> Database:
        indexing.setdefault("throttle", ThrottleSettings(pause_between_builds=timedelta(0)))
        return lifecycle_db(mode=mode, windows=(), lock_timeout=timedelta(seconds=2), **indexing)

    return make


def run(db: Database, **kwargs: object):
    return apply(db, Settings(databases=(db.settings,)), db.settings, readings_fn=CALM_CPU, **kwargs)


def test_advise_mode_builds_nothing_and_says_so(make_db, pg_conn) -> None:
    db = make_db("advise")
    make_table(pg_conn, "public", "t", rows=100)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a"))
    result = run(db)
    assert result.built == [] and "mode is advise" in (result.message or "")
    assert rec_status(pg_conn, rec_id) == "approved" and audit_rows(pg_conn) == []


def test_approve_mode_builds_only_approved(make_db, pg_conn) -> None:
    db = make_db("approve")
    make_table(pg_conn, "public", "t", rows=100)
    approved = insert_recommendation(pg_conn, candidate("public", "t", "a"))
    pending = insert_recommendation(pg_conn, candidate("public", "t", "b"), status="pending")
    result = run(db, job_id="j1")
    assert [b.recommendation_id for b in result.built] == [approved]
    assert rec_status(pg_conn, approved) == "built" and rec_status(pg_conn, pending) == "pending"
    assert {r["recommendation_id"] for r in audit_rows(pg_conn, "create_index")} == {approved}
    assert index_valid(pg_conn, "public", candidate("public", "t", "b").name()) is None


def test_auto_mode_builds_pending_too(make_db, pg_conn) -> None:
    db = make_db("auto")
    make_table(pg_conn, "public", "t", rows=100)
    ids = [insert_recommendation(pg_conn, candidate("public", "t", c), status="pending") for c in ("a", "b")]
    result = run(db)
    assert sorted(b.recommendation_id for b in result.built) == sorted(ids)
    assert [rec_status(pg_conn, i) for i in ids] == ["built", "built"]


def test_approve_and_reject_are_audited_and_checked(make_db, pg_conn) -> None:
    db = make_db("approve")
    make_table(pg_conn, "public", "t", rows=10)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a"), status="pending")
    assert approve(db, rec_id, reason="looks right", actor="ann@ops pid 1").status == "approved"
    with pytest.raises(UsageError, match=r"#\d+ is approved: only pending, rejected, failed, interrupted "
                                         "recommendations can be approved"):
        approve(db, rec_id)
    assert reject(db, rec_id, reason="not now").status == "rejected"
    with pytest.raises(UsageError, match="no recommendation #999999"):
        reject(db, 999999)
    rows = audit_rows(pg_conn)
    assert [(r["action"], r["phase"], r["outcome"]) for r in rows] == [
        ("approve", "intent", "started"), ("approve", "outcome", "succeeded"),
        ("reject", "intent", "started"), ("reject", "outcome", "succeeded")]
    assert rows[0]["actor"] == "ann@ops pid 1" and rows[0]["reason"] == "looks right"
    assert rows[2]["before"] == {"status": "approved"} and rows[3]["after"] == {"status": "rejected"}
    assert run(db).built == []  # rejected is never built


def test_rate_limit_persists_across_restarts(make_db, pg_conn) -> None:
    limits = {"rate_limit": RateLimitSettings(per_hour=1, per_day=10)}
    db = make_db("approve", **limits)
    make_table(pg_conn, "public", "t", rows=100)
    first = insert_recommendation(pg_conn, candidate("public", "t", "a"))
    second = insert_recommendation(pg_conn, candidate("public", "t", "b"), improvement_pct=10.0)
    result = run(db)
    assert [b.recommendation_id for b in result.built] == [first]
    ((refused_id, reasons),) = result.refused
    assert refused_id == second and reasons[0].startswith("rate limit: 1 index builds started in the last hour "
                                                          "(limit 1, indexing.rate_limit.per_hour); the next may")
    assert reasons[-1].startswith("the daemon retries at its next apply run from then on, ")
    again = run(make_db("approve", **limits))  # a "restarted" process: new Database objects, same audit log
    assert again.built == [] and again.refused[0][0] == second and again.all_refused
    assert rec_status(pg_conn, second) == "approved"


def test_dry_run_shows_each_guard_and_builds_nothing(make_db, pg_conn) -> None:
    db = make_db("approve", rate_limit=RateLimitSettings(per_hour=0, per_day=0))
    make_table(pg_conn, "public", "t", rows=100)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a"))
    result = run(db, dry_run=True)
    assert len(result.plans) == 1 and result.plans[0].recommendation.id == rec_id
    reasons = result.plans[0].decision.reasons
    assert any("last hour" in r for r in reasons) and any("last day" in r for r in reasons)
    assert result.all_refused and audit_rows(pg_conn) == [] and rec_status(pg_conn, rec_id) == "approved"


def test_two_processes_build_the_same_recommendation_once(make_db, pg_conn) -> None:
    dbs = [make_db("approve"), make_db("approve")]
    make_table(pg_conn, "public", "t", rows=50000)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a", "b"))
    results: list = []
    barrier = threading.Barrier(2)

    def go(db: Database) -> None:
        barrier.wait()
        results.append(run(db))

    threads = [threading.Thread(target=go, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    built = [b for r in results for b in r.built]
    assert len(built) == 1 and built[0].recommendation_id == rec_id
    others = [r for r in results if not r.built]
    assert len(others) == 1
    loser = others[0]  # refused as not the leader, found it taken, or found nothing left to build
    assert loser.refused or loser.skipped or loser.message
    for _, reasons in loser.refused:
        assert any("not the leader" in r for r in reasons)
    assert len([r for r in audit_rows(pg_conn, "create_index") if r["phase"] == "intent"]) == 1
    assert rec_status(pg_conn, rec_id) == "built"


def test_another_leader_means_every_build_is_refused(make_db, pg_conn) -> None:
    from indexd.lifecycle.leader import Leadership

    db, other = make_db("approve"), make_db("approve")
    make_table(pg_conn, "public", "t", rows=10)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a"))
    with Leadership.for_database(other) as lead:
        assert lead.acquire()
        result = run(db)
        assert result.all_refused and result.refused[0][0] == rec_id
        reasons = result.refused[0][1]
        # the refusal names the holder's session and says when that process builds
        assert any("not the leader" in r and "its session: backend pid" in r for r in reasons)
        assert reasons[-1].startswith("the leading process builds it at its own apply runs (with this "
                                      "configuration's schedule, next at ")
        # the daemon holding the leadership passes it in and builds
        assert [b.recommendation_id for b in run(other, leadership=lead).built] == [rec_id]
        assert lead.held()  # still held: it belongs to the caller


def test_readings_come_from_the_server(make_db, pg_conn, pg_cluster, pg_dbname) -> None:
    from indexd.lifecycle.pause import pause
    from indexd.lifecycle.readings import gather_readings

    db = make_db("approve")
    make_table(pg_conn, "public", "t", rows=5000)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT pg_stat_force_next_flush()")
    holder, waiter = pg_cluster.connect(pg_dbname, autocommit=False), pg_cluster.connect(pg_dbname)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        waiter.cursor().execute("SET lock_timeout = '5s'")
        blocked = threading.Thread(target=lambda: _try(waiter, "SELECT count(*) FROM t"))
        blocked.start()
        _until(lambda: gather_readings(db, "public", "t", db.settings.indexing, None, utcnow(),
                                       cpu=lambda s: 42.0)[1].waiting_backends >= 1)
        pause(db, timedelta(minutes=5), "checking", None)
        size, readings = gather_readings(db, "public", "t", db.settings.indexing, None, utcnow(), cpu=lambda s: 42.0)
    finally:
        holder.rollback()
        blocked.join(timeout=10)
        holder.close()
        waiter.close()
    # the table is locked exclusively: its size comes from the catalog (ANALYZEd by make_table)
    assert size > 8192 * 10 and readings.cpu_pct == 42.0 and readings.max_connections == 100
    assert readings.waiting_backends >= 1 and readings.active_backends >= 1
    assert readings.replica_lag_s is None and readings.is_leader is False
    assert readings.pause is not None and readings.pause.reason == "checking"
    assert readings.table_writes_per_second > 0  # 5000 rows inserted since the server started


def _try(conn, statement: str) -> None:
    with contextlib.suppress(Exception):
        conn.cursor().execute(statement)


def _until(predicate, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_builds_are_paced(make_db, pg_conn) -> None:
    """pause_between_builds separates the end of one build from the start of the next, within a run."""
    db = make_db("approve", throttle=ThrottleSettings(pause_between_builds=timedelta(seconds=2)))
    make_table(pg_conn, "public", "t", rows=100)
    for cols in (("a",), ("b",)):
        insert_recommendation(pg_conn, candidate("public", "t", *cols))
    result = run(db)
    assert len(result.built) == 2
    create = audit_rows(pg_conn, "create_index")
    with pg_conn.cursor() as cur:
        cur.execute("SELECT at FROM indexd.mutation_log WHERE id = ANY(%s) ORDER BY id",
                    ([r["id"] for r in create],))
        first_start, first_end, second_start, _second_end = (row[0] for row in cur.fetchall())
    assert second_start - first_end >= timedelta(seconds=2)


def test_an_equivalent_index_built_after_the_advice_supersedes_the_build(make_db, pg_conn) -> None:
    """Advice for (a), then someone builds (a, b) before apply: (a) is redundant now; it is not built but
    superseded, with the existing index named, in the audit log too. An unrelated index does not stop a build."""
    db = make_db("auto")
    make_table(pg_conn, "public", "t", columns=("a", "b", "c"), rows=50_000)
    work = given_workload([Statement("SELECT id FROM t WHERE a = $1", calls=500),
                           Statement("SELECT id FROM t WHERE c = $1", calls=500)], db.settings.indexing)
    advice = advise(db, db.settings.indexing, work)
    ids = save_recommendations(db, advice.recommendations, advice.create_sql)
    by_column = {r.candidate.keys[0].column: ids[r.candidate.fingerprint()] for r in advice.recommendations}
    assert set(by_column) == {"a", "c"}
    with pg_conn.cursor() as cur:
        cur.execute("CREATE INDEX dba_t_a_b ON t (a, b)")
        cur.execute("CREATE INDEX dba_t_b ON t (b)")
    result = run(db, job_id="j1")
    assert [b.recommendation_id for b in result.built] == [by_column["c"]]
    (skipped,) = result.skipped
    assert skipped.recommendation_id == by_column["a"] and "public.dba_t_a_b" in (skipped.reason or "")
    assert rec_status(pg_conn, by_column["a"]) == "superseded"
    assert index_valid(pg_conn, "public", skipped.index_name) is None  # never built
    (row,) = [r for r in audit_rows(pg_conn, "supersede") if r["phase"] == "outcome"]
    assert row["outcome"] == "skipped" and "dba_t_a_b" in row["reason"]
    assert row["recommendation_id"] == by_column["a"] and row["after"]["status"] == "superseded"
    assert len([r for r in audit_rows(pg_conn, "create_index") if r["phase"] == "intent"]) == 1
    assert run(db).built == []  # superseded is never built again
