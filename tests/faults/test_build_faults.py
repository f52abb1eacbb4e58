"""Index builds interrupted the hard way: the indexd process SIGKILLed mid-build, the server restarted mid-build.
Either way the failure ends up in the audit log and the INVALID leftover is removed afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from indexd.advisor.model import IndexCandidate, IndexKey
from indexd.config.schema import DatabaseSettings, IndexingSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.lifecycle.build import build_index
from indexd.lifecycle.cleanup import INTERRUPTED, cleanup_invalid
from indexd.state.migrations import migrate
from indexd.state.recommendation_rows import load_recommendations
from tests.support.cluster import new_database
from tests.support.lifecycle import (
    audit_rows,
    index_valid,
    insert_recommendation,
    make_table,
    rec_status,
)

ROOT = Path(__file__).resolve().parents[2]
# An index whose key is computed slowly (2 ms a row): a build that lasts seconds on a small table.
SLOW_FN = """CREATE FUNCTION slow_key(v integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS
$$ BEGIN PERFORM pg_sleep(0.002); RETURN v; END $$"""
SLOW = IndexCandidate(schema="public", table="t", keys=(IndexKey(expression="slow_key(a)"),))
BUILD_SCRIPT = """
import sys
from indexd.config.schema import DatabaseSettings
from indexd.db.pool import Database
from indexd.lifecycle.build import build_index
from indexd.state.recommendation_rows import load_recommendations
db = Database(DatabaseSettings(name="main", dsn=sys.argv[1]))
with db.connection() as conn:
    rec = load_recommendations(conn, "indexd", ids=(int(sys.argv[2]),))[0]
print(build_index(db, rec, db.settings))
"""


def _slow_table(conn, rows: int = 3000) -> int:
    make_table(conn, "public", "t", rows=rows)
    with conn.cursor() as cur:
        cur.execute(SLOW_FN)
    return insert_recommendation(conn, SLOW)


def _wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _attempts(conn, rec_id: int) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT attempts FROM indexd.recommendations WHERE id = %s", (rec_id,))
        return int(cur.fetchone()[0])


def _building(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_progress_create_index")
        return cur.fetchone()[0] > 0


def test_process_killed_mid_build_leaves_an_invalid_index_that_cleanup_removes(database: Database, pg_conn,
                                                                                pg_dsn: str) -> None:
    migrate(database)
    rec_id = _slow_table(pg_conn)
    proc = subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, pg_dsn, str(rec_id)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _building(pg_conn), what="the build to start")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    # the server notices its client is gone (client_connection_check_interval) and stops the build
    _wait_for(lambda: not _building(pg_conn), what="the orphaned build to stop")
    assert index_valid(pg_conn, "public", SLOW.name()) is False
    assert rec_status(pg_conn, rec_id) == "building"
    assert [r["phase"] for r in audit_rows(pg_conn, "create_index")] == ["intent"]  # no outcome: it died

    assert cleanup_invalid(database) == [f"public.{SLOW.name()}"]
    assert index_valid(pg_conn, "public", SLOW.name()) is None
    # the run was cut off, not the index: queued again, one attempt counted
    assert rec_status(pg_conn, rec_id) == "interrupted" and _attempts(pg_conn, rec_id) == 1
    create = audit_rows(pg_conn, "create_index")
    assert [(r["phase"], r["outcome"]) for r in create] == [("intent", "started"), ("outcome", "failed")]
    assert create[1]["reason"] == INTERRUPTED
    assert [r["outcome"] for r in audit_rows(pg_conn, "drop_index")] == ["started", "succeeded"]
    assert cleanup_invalid(database) == []  # settled: nothing left to do


@pytest.fixture
def own_db(own_cluster: EmbeddedCluster):
    dsn = new_database(own_cluster, "app", extensions=())
    ix = replace(IndexingSettings(), lock_timeout=timedelta(seconds=2))
    db = Database(DatabaseSettings(name="app", dsn=dsn, pool=PoolSettings(size=2, max_overflow=2), indexing=ix))
    migrate(db)
    try:
        yield db
    finally:
        db.close()


def test_server_restart_mid_build_is_recorded_and_the_leftover_removed(own_cluster: EmbeddedCluster,
                                                                        own_db: Database) -> None:
    conn = own_cluster.connect("app")
    rec_id = _slow_table(conn)
    with own_db.connection() as c:
        rec = load_recommendations(c, "indexd", ids=(rec_id,))[0]
    out: dict = {}
    builder = threading.Thread(target=lambda: out.update(result=build_index(own_db, rec, own_db.settings)))
    builder.start()
    try:
        _wait_for(lambda: _building(conn), what="the build to start")
    finally:
        conn.close()
    own_cluster.restart("fast")
    builder.join(timeout=60)
    result = out["result"]
    assert result.outcome == "failed" and "connection lost" in (result.reason or "") and result.retry_later
    conn = own_cluster.connect("app")
    try:
        create = audit_rows(conn, "create_index")
        assert [(r["phase"], r["outcome"]) for r in create] == [("intent", "started"), ("outcome", "failed")]
        assert rec_status(conn, rec_id) == "interrupted" and _attempts(conn, rec_id) == 1
        assert index_valid(conn, "public", SLOW.name()) is False  # the build's own drop could not run
        assert cleanup_invalid(own_db) == [f"public.{SLOW.name()}"]
        assert index_valid(conn, "public", SLOW.name()) is None
    finally:
        conn.close()
