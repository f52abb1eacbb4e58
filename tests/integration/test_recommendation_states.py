"""The recommendation state machine on a real server: the schema's lists are Python's, the database refuses a
move from a status the row is not in, one of two concurrent claims wins, an interrupted build is queued again
up to indexing.build_attempts, and offline advice is built only once a person approves it."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg2.errors
import pytest
from psycopg2 import sql

from indexd.config.schema import Settings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.lifecycle.apply import apply, approve
from indexd.lifecycle.readings import take_readings
from indexd.state import recommendation_rows
from indexd.state import recommendations as recs
from indexd.state.recommendations import NewRecommendation
from indexd.state.statuses import LIVE, IllegalTransition, Origin, Status

STATE = "indexd"
CALM_CPU = functools.partial(take_readings, cpu=lambda sample_s: 1.0)


@pytest.fixture
def make_db(lifecycle_db: Callable[..., Database]) -> Callable[..., Database]:
    def make(mode: str = "auto", **indexing: object) -> Database:
        return lifecycle_db(mode=mode, windows=(), lock_timeout=timedelta(seconds=2), **indexing)

    return make


def _table(conn, name: str) -> None:
    with conn.cursor() as cur:
        table = sql.Identifier(name)
        cur.execute(sql.SQL("CREATE TABLE public.{} (id bigserial PRIMARY KEY, a integer)").format(table))
        cur.execute(sql.SQL("INSERT INTO public.{} (a) SELECT mod(g, 97) FROM generate_series(1, 2000) g")
                    .format(table))
        cur.execute(sql.SQL("ANALYZE public.{}").format(table))


def _advice(table: str, origin: Origin = Origin.WORKLOAD) -> NewRecommendation:
    name = f"indexd_{table}_a_0001"
    return NewRecommendation(
        fingerprint=f"public.{table}(a)", table_schema="public", table_name=table, columns=["a"], method="btree",
        where_clause=None, include=[], index_name=name,
        create_sql=f'CREATE INDEX CONCURRENTLY "{name}" ON "public"."{table}" USING btree ("a")',
        estimated_size_bytes=100_000, improvement_pct=50.0, write_overhead=1.0, queries=[], origin=origin,
        benefit_ms_per_s=10.0)


def _save(db: Database, *advice: NewRecommendation) -> list[int]:
    with db.connection() as conn:
        ids = recs.upsert(conn, STATE, advice)
    return [ids[a.fingerprint] for a in advice]


def _row(db: Database, rec_id: int) -> recommendation_rows.StoredRecommendation:
    with db.connection() as conn:
        (row,) = recommendation_rows.load_recommendations(conn, STATE, ids=[rec_id])
    return row


def _do(db: Database, write: Callable[..., object], *args: object, **kwargs: object) -> object:
    with db.connection() as conn:
        return write(conn, STATE, *args, **kwargs)


def _run(db: Database):
    return apply(db, Settings(databases=(db.settings,)), db.settings, readings_fn=CALM_CPU)


# ---- the schema says what Python says ---------------------------------------------------------------------


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def test_the_constraints_and_the_live_index_hold_the_python_lists(make_db, pg_conn) -> None:
    make_db()  # migrated: the effective constraint is the newest migration's
    with pg_conn.cursor() as cur:
        cur.execute("SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
                    " WHERE c.conrelid = 'indexd.recommendations'::regclass AND c.contype = 'c'")
        checks = dict(cur.fetchall())
        cur.execute("SELECT pg_get_indexdef('indexd.recommendations_live_fingerprint'::regclass)")
        live_index = cur.fetchone()[0]
    status = [d for d in checks.values() if "status" in d]
    origin = [d for d in checks.values() if "origin" in d]
    assert len(status) == 1 and len(origin) == 1, checks
    assert _quoted(status[0]) == [s.value for s in Status]
    assert _quoted(origin[0]) == [o.value for o in Origin]
    where = live_index.split(" WHERE ", 1)[1]
    assert set(_quoted(where)) == {s.value for s in LIVE} and len(_quoted(where)) == len(LIVE)


# ---- the database's own guard ---------------------------------------------------------------------------------


def test_a_move_from_a_status_the_row_is_not_in_is_refused_and_changes_nothing(make_db, pg_conn) -> None:
    db = make_db()
    (rec_id,) = _save(db, _advice("t1"))
    before = _row(db, rec_id)
    # building -> built is a legal move, so Python lets the UPDATE run; the row is pending, so the UPDATE's
    # WHERE moves nothing, and pending -> built is no move at all: a bug in the caller.
    with pytest.raises(IllegalTransition, match=f"#{rec_id} cannot go from pending to built") as info:
        _do(db, recs.mark_built, rec_id)
    assert (info.value.source, info.value.target) == (Status.PENDING, Status.BUILT)
    assert _row(db, rec_id) == before
    with pytest.raises(IllegalTransition, match="from pending to kept"):
        _do(db, recs.mark_kept, rec_id, "good")
    # a claim given back to `approved` although the row was never claimed: pending -> approved is a legal move,
    # but not this one's (it leaves `building` only): nothing moves
    _do(db, recs.release, rec_id, Status.APPROVED, "lock timeout")
    assert _row(db, rec_id).status == Status.PENDING
    assert _do(db, recs.claim, rec_id, unapproved=True) == Status.PENDING
    _do(db, recs.mark_built, rec_id)
    with pytest.raises(IllegalTransition, match="from built to failed"):
        _do(db, recs.mark_failed, rec_id, "too late")
    _do(db, recs.mark_built, rec_id)  # already there (another process settled it): left alone
    assert _row(db, rec_id).status == Status.BUILT


def test_two_concurrent_claims_have_one_winner(make_db, pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    db = make_db()
    (rec_id,) = _save(db, _advice("t2"))
    first = pg_cluster.connect(pg_dbname, autocommit=False)
    second = pg_cluster.connect(pg_dbname, autocommit=False)
    try:
        assert recs.claim(first, STATE, rec_id, unapproved=True) == Status.PENDING  # holds the row, uncommitted
        out: dict[str, object] = {}
        waiter = threading.Thread(target=lambda: out.update(r=recs.claim(second, STATE, rec_id, unapproved=True)))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # waits on the row lock, does not read a stale `pending`
        first.commit()
        waiter.join(timeout=10)
        second.commit()
        assert out == {"r": None}
    finally:
        first.close()
        second.close()
    assert _row(db, rec_id).status == Status.BUILDING


def test_many_claims_at_once_have_one_winner(make_db, pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    db = make_db()
    (rec_id,) = _save(db, _advice("t3"))
    conns = [pg_cluster.connect(pg_dbname) for _ in range(6)]
    start, results = threading.Barrier(len(conns)), []

    def claim(conn) -> None:
        start.wait()
        results.append(recs.claim(conn, STATE, rec_id, unapproved=True))

    threads = [threading.Thread(target=claim, args=(c,)) for c in conns]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    finally:
        for c in conns:
            c.close()
    assert sorted(results, key=str) == [None] * 5 + [Status.PENDING]


# ---- interrupted: queued again, up to indexing.build_attempts ---------------------------------------------------


def test_an_interrupted_build_is_queued_again_until_the_attempts_bound(make_db, pg_conn) -> None:
    db = make_db(build_attempts=3)
    _table(pg_conn, "t4")
    (rec_id,) = _save(db, _advice("t4"))
    approve(db, rec_id, actor="ann")
    for attempt in (1, 2):
        assert _do(db, recs.claim, rec_id, unapproved=False) == (Status.APPROVED if attempt == 1
                                                                 else Status.INTERRUPTED)
        now = _do(db, recs.mark_interrupted, rec_id, "connection lost during the build", max_attempts=3)
        row = _row(db, rec_id)
        assert now == row.status == Status.INTERRUPTED and row.attempts == attempt
        with db.connection() as conn:  # approved before: buildable again even in mode approve
            assert [r.id for r in recommendation_rows.load_buildable(conn, STATE, unapproved=False)] == [rec_id]
    _do(db, recs.claim, rec_id, unapproved=False)
    assert _do(db, recs.mark_interrupted, rec_id, "server restarted", max_attempts=3) == Status.FAILED
    row = _row(db, rec_id)
    assert row.attempts == 3 and row.reason is not None
    assert "interrupted 3 time(s)" in row.reason and "indexing.build_attempts" in row.reason
    assert "server restarted" in row.reason
    assert _do(db, recs.claim, rec_id, unapproved=True) is None  # failed waits for a person
    assert approve(db, rec_id, actor="ann").attempts == 0  # a person looked at it: attempts start afresh
    result = _run(db)
    assert [b.recommendation_id for b in result.built] == [rec_id] and _row(db, rec_id).status == Status.BUILT


def test_unapproved_interrupted_advice_waits_for_mode_auto(make_db, pg_conn) -> None:
    db = make_db("approve")
    _table(pg_conn, "t5")
    (rec_id,) = _save(db, _advice("t5"))
    assert _do(db, recs.claim, rec_id, unapproved=True) == Status.PENDING  # as mode auto would
    _do(db, recs.mark_interrupted, rec_id, "cancelled", max_attempts=3)
    assert _run(db).built == []  # mode approve: nobody approved it
    assert _do(db, recs.claim, rec_id, unapproved=False) is None
    auto = make_db("auto")
    assert [b.recommendation_id for b in _run(auto).built] == [rec_id]


# ---- offline advice ------------------------------------------------------------------------------------------


def test_offline_advice_is_never_built_automatically_and_is_after_approve(make_db, pg_conn) -> None:
    db = make_db("auto")
    _table(pg_conn, "t6")
    (rec_id,) = _save(db, _advice("t6", Origin.QUERIES))
    result = _run(db)
    assert result.built == [] and "nothing to build" in (result.message or "")
    assert "1 pending wait for a person's approval: advice from a query file" in (result.message or "")
    assert _do(db, recs.claim, rec_id, unapproved=True) is None  # the database refuses the claim as well
    assert _row(db, rec_id).status == Status.PENDING and _row(db, rec_id).origin == Origin.QUERIES
    approve(db, rec_id, actor="ann")
    result = _run(db)
    assert [b.recommendation_id for b in result.built] == [rec_id] and _row(db, rec_id).status == Status.BUILT


def test_the_workload_outranks_a_query_file_and_never_supersedes_it(make_db) -> None:
    db = make_db()
    offline, other = _advice("t7", Origin.QUERIES), _advice("t8")
    offline_id, other_id = _save(db, offline, other)
    with db.connection() as conn:  # a full workload run that supports only `other`
        assert recs.supersede_unsupported(conn, STATE, [other.fingerprint]) == 0
    assert _row(db, offline_id).status == Status.PENDING
    assert _save(db, _advice("t8", Origin.QUERIES)) == [other_id]  # same shape: refreshed in place ...
    assert _row(db, other_id).origin == Origin.WORKLOAD  # ... and still the workload's
    assert _save(db, _advice("t7")) == [offline_id]
    assert _row(db, offline_id).origin == Origin.WORKLOAD  # now the workload supports it too
    with db.connection() as conn:
        assert recs.supersede_unsupported(conn, STATE, [other.fingerprint]) == 1
    assert _row(db, offline_id).status == Status.SUPERSEDED


def test_a_person_cannot_decide_on_a_row_a_build_holds(make_db) -> None:
    db = make_db()
    (rec_id,) = _save(db, _advice("t9"))
    _do(db, recs.claim, rec_id, unapproved=True)
    with db.connection() as conn:
        done = recs.decide(conn, STATE, rec_id, Status.REJECTED, actor="ann", reason=None)
    assert done.previous == Status.BUILDING and done.row is None
    with db.connection() as conn:
        assert recs.decide(conn, STATE, 999_999, Status.APPROVED, actor="ann", reason=None).previous is None
    with pytest.raises(psycopg2.errors.CheckViolation), db.connection() as conn, conn.cursor() as cur:
        cur.execute("UPDATE indexd.recommendations SET status = 'unheard-of' WHERE id = %s", (rec_id,))


def test_verification_and_unused_drops_settle_built_rows(make_db) -> None:
    db = make_db()
    kept_id, dropped_id = _save(db, _advice("t10"), _advice("t11"))
    for rec_id in (kept_id, dropped_id):
        _do(db, recs.claim, rec_id, unapproved=True)
        _do(db, recs.mark_built, rec_id)
    _do(db, recs.note_built_reason, kept_id, "verdict reverted; verify.auto_revert is off")
    assert _row(db, kept_id).status == Status.BUILT and "auto_revert" in (_row(db, kept_id).reason or "")
    _do(db, recs.mark_kept, kept_id, "x" * 5000)
    assert _row(db, kept_id).status == Status.KEPT and len(_row(db, kept_id).reason or "") == recs.REASON_CHARS
    assert _do(db, recs.revert_index, "public", "indexd_t10_a_0001", "unused: 0 scans") == 1  # kept -> reverted
    assert _do(db, recs.revert_index, "public", "indexd_t10_a_0001", "unused: 0 scans") == 0
    _do(db, recs.mark_reverted, dropped_id, "slower")
    assert [_row(db, i).status for i in (kept_id, dropped_id)] == [Status.REVERTED, Status.REVERTED]


# ---- decisions and verdicts stand against new advice -----------------------------------------------------------


def test_a_rejected_shape_is_not_queued_again_by_new_advice(make_db, pg_conn) -> None:
    db = make_db("auto")
    _table(pg_conn, "t12")
    (rec_id,) = _save(db, _advice("t12"))
    with db.connection() as conn:
        assert recs.decide(conn, STATE, rec_id, Status.REJECTED, actor="ann", reason="not here").row is not None
    assert _save(db, _advice("t12")) == [rec_id]  # the next advice of the same shape finds the rejection
    with db.connection() as conn:
        assert [r.id for r in recommendation_rows.load_recommendations(conn, STATE)] == [rec_id]
        assert recs.supersede_unsupported(conn, STATE, [_advice("t12").fingerprint]) == 0
    assert _row(db, rec_id).status == Status.REJECTED
    assert _run(db).built == []  # mode auto builds nothing a person rejected
    approve(db, rec_id, actor="bob")  # a person may change their mind: the same row, approved
    assert [b.recommendation_id for b in _run(db).built] == [rec_id]


def test_a_reverted_shape_waits_for_a_person_even_in_mode_auto(make_db, pg_conn) -> None:
    db = make_db("auto")
    _table(pg_conn, "t13")
    (first,) = _save(db, _advice("t13"))
    assert _do(db, recs.claim, first, unapproved=True) == Status.PENDING
    _do(db, recs.mark_built, first)
    _do(db, recs.mark_reverted, first, "no gain")
    (again,) = _save(db, _advice("t13"))  # the workload still asks for it: advice again, visible ...
    row = _row(db, again)
    assert again != first and row.status == Status.PENDING
    assert f"reverted before (recommendation #{first})" in (row.reason or "")
    result = _run(db)
    assert result.built == []  # ... but auto does not build it again and again, and says why
    assert "1 pending wait for a person's approval" in (result.message or "") and "reverted before" in result.message
    assert _do(db, recs.claim, again, unapproved=True) is None  # the database refuses the claim as well
    approve(db, again, actor="ann")
    assert [b.recommendation_id for b in _run(db).built] == [again]
