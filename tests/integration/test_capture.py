from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from indexd.config.schema import DatabaseSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster, throwaway_cluster
from indexd.state.migrations import migrate
from indexd.workload.capture import WorkloadUnavailable, check_extensions, take_snapshot, workload
from tests.support.cluster import new_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOOKBACK = timedelta(days=1)


def _run(conn, statement: str, times: int) -> None:
    with conn.cursor() as cur:
        for i in range(times):
            cur.execute(statement, (i,))


def _by_query(statements) -> dict[str, tuple[int, float]]:
    return {s.query: (s.calls, s.total_time_ms) for s in statements}


@pytest.fixture
def items(database: Database, pg_conn) -> Database:
    migrate(database)
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id int PRIMARY KEY, kind int)")
        cur.execute("INSERT INTO items SELECT g, g % 10 FROM generate_series(1, 100) g")
    return database


def test_snapshot_deltas_count_only_the_lookback(items: Database, pg_conn) -> None:
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 5)
    first = take_snapshot(items, now=T0)
    assert first.statements >= 1 and first.stats_reset_changed  # the first snapshot has no predecessor
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 7)
    _run(pg_conn, "SELECT * FROM items WHERE kind = %s", 3)
    with pg_conn.cursor() as cur:  # the advisor's own kinds of statements
        cur.execute('SELECT count(*) FROM "indexd".snapshots')
        cur.execute("SELECT * FROM hypopg_create_index('CREATE INDEX ON items (kind)')")
        cur.execute("SELECT hypopg_reset()")
        cur.execute("/* app */ (SELECT kind FROM items WHERE id = 3)")
    second = take_snapshot(items, now=T0 + timedelta(hours=1))
    assert second.id > first.id and not second.stats_reset_changed

    found = _by_query(workload(items, LOOKBACK, now=T0 + timedelta(hours=2)))
    assert found["SELECT * FROM items WHERE id = $1"][0] == 7
    assert found["SELECT * FROM items WHERE kind = $1"][0] == 3  # appeared in between: all of it counts
    assert all(calls > 0 for calls, _ in found.values())
    # indexd's own statements (state schema, pg_stat_statements) and utility statements are not workload
    assert not any("indexd" in q or "pg_stat_statements" in q or "hypopg" in q or q.startswith("CREATE")
                   for q in found)
    assert "/* app */ (SELECT kind FROM items WHERE id = $1)" in found  # comments and parentheses are fine
    assert workload(items, LOOKBACK, now=T0 + timedelta(hours=2), min_calls=5).__len__() == 1


def test_oldest_snapshot_inside_the_lookback_is_the_baseline(items: Database, pg_conn) -> None:
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 2)
    take_snapshot(items, now=T0)
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 3)
    take_snapshot(items, now=T0 + timedelta(days=2))
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 4)
    take_snapshot(items, now=T0 + timedelta(days=2, hours=1))
    found = _by_query(workload(items, LOOKBACK, now=T0 + timedelta(days=2, hours=2)))
    assert found["SELECT * FROM items WHERE id = $1"][0] == 4


def test_reset_between_snapshots_counts_only_since_the_reset(items: Database, pg_conn) -> None:
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 20)
    take_snapshot(items, now=T0)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT pg_stat_statements_reset()")
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 4)
    second = take_snapshot(items, now=T0 + timedelta(hours=1))
    assert second.stats_reset_changed
    found = _by_query(workload(items, LOOKBACK, now=T0 + timedelta(hours=2)))
    assert found["SELECT * FROM items WHERE id = $1"][0] == 4


def test_evicted_entries_drop_out(items: Database, pg_conn) -> None:
    _run(pg_conn, "SELECT * FROM items WHERE kind = %s", 3)
    take_snapshot(items, now=T0)
    with pg_conn.cursor() as cur:  # evict just this entry: its queryid is gone from the newer snapshot
        cur.execute(
            "SELECT pg_stat_statements_reset(0, 0, queryid) FROM pg_stat_statements "
            "WHERE query = 'SELECT * FROM items WHERE kind = $1'"
        )
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 2)
    take_snapshot(items, now=T0 + timedelta(hours=1))
    found = _by_query(workload(items, LOOKBACK, now=T0 + timedelta(hours=2)))
    assert "SELECT * FROM items WHERE kind = $1" not in found
    assert found["SELECT * FROM items WHERE id = $1"][0] == 2


def test_without_two_snapshots_the_live_counters_are_used(items: Database, pg_conn) -> None:
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 6)
    found = _by_query(workload(items, LOOKBACK, now=T0))
    assert found["SELECT * FROM items WHERE id = $1"][0] == 6
    take_snapshot(items, now=T0)
    _run(pg_conn, "SELECT * FROM items WHERE id = %s", 1)
    found = _by_query(workload(items, LOOKBACK, now=T0 + timedelta(hours=1)))
    assert found["SELECT * FROM items WHERE id = $1"][0] == 7  # one snapshot: still cumulative


def test_database_without_the_extension(pg_cluster: EmbeddedCluster) -> None:
    name = "capture_noext"
    pg_cluster.drop_database(name)
    new_database(pg_cluster, name, extensions=())
    db = Database(DatabaseSettings(name="noext", dsn=pg_cluster.dsn(name)))
    try:
        migrate(db)
        with db.connection() as conn:
            problems = check_extensions(conn)
        assert problems == [
            f"the extension is not created in database {name!r}: run CREATE EXTENSION pg_stat_statements"
        ]
        with pytest.raises(WorkloadUnavailable, match="CREATE EXTENSION pg_stat_statements"):
            take_snapshot(db)
        with pytest.raises(WorkloadUnavailable, match="CREATE EXTENSION pg_stat_statements"):
            workload(db, LOOKBACK)
    finally:
        db.close()
        pg_cluster.drop_database(name)


def test_role_without_read_all_stats(pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    pg_cluster.execute("DROP ROLE IF EXISTS capture_weak")
    pg_cluster.execute("CREATE ROLE capture_weak LOGIN PASSWORD 'weak-pw'")
    try:
        conn = psycopg2.connect(pg_cluster.dsn(pg_dbname, user="capture_weak", password="weak-pw"))
        try:
            problems = check_extensions(conn)
        finally:
            conn.close()
        assert problems == [
            "role 'capture_weak' cannot read other roles' statements: GRANT pg_read_all_stats TO capture_weak"
        ]
    finally:
        pg_cluster.execute("DROP ROLE capture_weak")


def test_server_without_the_preload() -> None:
    with throwaway_cluster(settings={"shared_preload_libraries": "''"}) as cluster:
        cluster.execute("CREATE EXTENSION pg_stat_statements")
        db = Database(DatabaseSettings(name="nopreload", dsn=cluster.dsn("postgres")))
        try:
            migrate(db)
            with db.connection() as conn:
                problems = check_extensions(conn)
            assert problems == [
                "pg_stat_statements is not loaded: add shared_preload_libraries = 'pg_stat_statements' "
                "to postgresql.conf and restart the server"
            ]
            with pytest.raises(WorkloadUnavailable, match="shared_preload_libraries"):
                take_snapshot(db)
        finally:
            db.close()


def test_indexd_own_and_internal_statements_are_not_workload(items: Database, pg_conn) -> None:
    """After migrate, leadership, a what-if session and foreign-key checks, only the application's statements remain."""
    from indexd.advisor.model import IndexCandidate, IndexKey
    from indexd.advisor.whatif import WhatIf
    from indexd.lifecycle.leader import Leadership

    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE lines (id int PRIMARY KEY, item int REFERENCES items (id))")
    _run(pg_conn, "INSERT INTO lines VALUES (%s + 1, 1)", 5)  # each insert runs the RI check on items
    _run(pg_conn, "SELECT * FROM items WHERE kind = %s", 3)
    with pg_conn.cursor() as cur:  # extensions' views are no user tables
        cur.execute("SELECT count(*) FROM hypopg_list_indexes")
        cur.execute("SELECT count(*) FROM public.pg_stat_statements")
    migrate(items)
    take_snapshot(items, now=T0)
    leadership = Leadership.for_database(items)
    try:
        assert leadership.acquire() and leadership.held()
    finally:
        leadership.release()
    with WhatIf(items) as wi:
        assert wi.cost(0, "SELECT * FROM items WHERE kind = $1",
                       frozenset([IndexCandidate("public", "items", (IndexKey("kind"),))])) is not None
    found = _by_query(workload(items, LOOKBACK, now=T0 + timedelta(hours=1)))
    assert set(found) == {
        "INSERT INTO items SELECT g, g % $1 FROM generate_series($2, $3) g",
        "INSERT INTO lines VALUES ($1 + $2, $3)",
        "SELECT * FROM items WHERE kind = $1",
    }, found
    with pg_conn.cursor() as cur:  # they were tracked: the filter, not pg_stat_statements, left them out
        cur.execute("SELECT count(*) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database()) AND (query LIKE '%FOR KEY SHARE%'"
                    " OR query LIKE '%pg_try_advisory_lock%' OR query LIKE '%hypopg_list_indexes%')")
        assert cur.fetchone()[0] >= 3


def test_rows_are_captured_as_deltas(items: Database, pg_conn) -> None:
    _run(pg_conn, "UPDATE items SET kind = kind WHERE kind = %s", 2)  # 10 rows each
    take_snapshot(items, now=T0)
    _run(pg_conn, "UPDATE items SET kind = kind WHERE kind = %s", 3)
    take_snapshot(items, now=T0 + timedelta(hours=1))
    found = {s.query: s for s in workload(items, LOOKBACK, now=T0 + timedelta(hours=2))}
    update = found["UPDATE items SET kind = kind WHERE kind = $1"]
    assert (update.calls, update.rows) == (3, 30)
    live = {s.query: s for s in workload(items, LOOKBACK, now=T0 + timedelta(days=3))}  # no snapshot in range
    assert live["UPDATE items SET kind = kind WHERE kind = $1"].rows == 50
