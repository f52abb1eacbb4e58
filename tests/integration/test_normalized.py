"""Statements as pg_stat_statements normalizes them are costed end to end: the pgbench history lookup with
`now() - interval '1 day'` gets its index; skips are counted by reason; a query file that does not parse
recommends nothing; `recommend` right after traffic falls back to the cumulative counters."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg2.extensions
import pytest

from indexd.advisor.pipeline import advise
from indexd.advisor.skips import SkipReason
from indexd.cli import main
from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, IndexingSettings, Settings
from indexd.db.pool import Database
from indexd.service import tasks
from indexd.service.runtime import DatabaseRuntime
from indexd.service.tasks import TaskEnv
from indexd.state.migrations import migrate
from indexd.workload.capture import take_snapshot
from indexd.workload.lookback import capture_workload

CONFIG = "environment: development\nindexing:\n  min_calls: 1\n"

HISTORY = """
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
INSERT INTO pgbench_history SELECT 1 + g % 10, 1, g % 100000, g % 1000 - 500,
       localtimestamp - (g % 43200) * interval '1 minute', NULL FROM generate_series(1, 200000) g;
ANALYZE pgbench_history;
SELECT pg_stat_statements_reset();
"""
LOOKUP = "SELECT * FROM pgbench_history WHERE tid = {tid} AND mtime >= now() - interval '1 day'"


@pytest.fixture(autouse=True)
def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "indexd.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("INDEXD_CONFIG", str(path))


@pytest.fixture
def history(pg_conn: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    with pg_conn.cursor() as cur:
        cur.execute(HISTORY)
    return pg_conn


def _run_traffic(conn: psycopg2.extensions.connection, times: int = 20) -> None:
    with conn.cursor() as cur:
        for i in range(times):
            cur.execute(LOOKUP.format(tid=1 + i % 10))
            cur.execute("SELECT aid, delta FROM pgbench_history WHERE aid BETWEEN %s AND %s + %s",
                        (i, i, 50))
            cur.execute("SELECT count(*) FROM pgbench_history")


def _recommend(capsys: pytest.CaptureFixture[str], dsn: str, *extra: str) -> tuple[int, str, str]:
    code = main(["recommend", "--dsn", dsn, "--no-save", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pgbench_history_lookup_gets_its_index_from_normalized_text(
        history: psycopg2.extensions.connection, database: Database) -> None:
    _run_traffic(history)
    with history.cursor() as cur:
        cur.execute("SELECT query FROM pg_stat_statements WHERE query LIKE '%%mtime >=%%'")
        (stored,) = cur.fetchone()
    assert "interval $" in stored  # the form PostgreSQL itself cannot prepare
    settings = IndexingSettings(min_calls=1)
    advice = advise(database, settings, capture_workload(database, settings, utcnow()))
    keys = [[k.column for k in r.candidate.keys] for r in advice.recommendations
            if r.candidate.table == "pgbench_history"]
    assert any(k[0] == "tid" and "mtime" in k for k in keys), (keys, advice.skipped)
    assert any(k[0] == "aid" for k in keys)  # BETWEEN $1 AND $2 + $3: the sum is typed as aid is
    assert not [s for s in advice.skipped if s.kind in (SkipReason.UNCOSTABLE, SkipReason.INVALID_STATEMENT)]
    assert {s.kind for s in advice.skipped} == {SkipReason.NO_INDEXABLE_PREDICATE}  # the count(*)


def test_query_file_of_statements_that_do_not_parse_recommends_nothing(
        history: psycopg2.extensions.connection, pg_dsn: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.sql"
    path.write_text("SELEC * FROM pgbench_history;\nSELECT * FROM WHERE tid = 1;\n", encoding="utf-8")
    code, out, err = _recommend(capsys, pg_dsn, "--queries", str(path))
    assert code == 0
    assert f"{path}:1: statement 1 'SELEC * FROM pgbench_history': does not parse: syntax error" in err
    assert f"{path}:2: statement 2 'SELECT * FROM WHERE tid = 1': does not parse: syntax error" in err
    assert "skipped 2 statements: 2 parse_error" in out
    assert "no index recommended from 0 statements" in out and "see skipped above" in out
    code, out, err = _recommend(capsys, pg_dsn, "--queries", str(path), "--json")
    assert code == 0 and json.loads(out)["recommendations"] == []


def test_recommend_right_after_traffic_uses_the_cumulative_counters(
        history: psycopg2.extensions.connection, database: Database, pg_dsn: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    migrate(database)
    now = utcnow()
    take_snapshot(database, now - timedelta(minutes=10))  # a daemon that has just started capturing
    take_snapshot(database, now - timedelta(minutes=5))
    _run_traffic(history)
    code, out, _ = _recommend(capsys, pg_dsn)
    assert code == 0
    assert "0 statements" not in out
    assert "the snapshots of the look-back hold no statement yet" in out
    assert "pgbench_history" in out and "index(es) recommended" in out


def test_the_daemon_logs_each_skipped_shape_once(history: psycopg2.extensions.connection,
                                                 db_settings: DatabaseSettings,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    _run_traffic(history, times=3)
    settings = replace(db_settings, indexing=IndexingSettings(min_calls=1))
    db = Database(settings)
    target = DatabaseRuntime(settings, db)
    try:
        with caplog.at_level(logging.INFO, logger="indexd.advisor.skips"):
            results = [tasks.advise(TaskEnv(Settings(databases=(settings,)), target, f"advise-{i}",
                                            threading.Event(), utcnow())) for i in range(2)]  # two rounds
    finally:
        db.close()
    logged = [r.getMessage() for r in caplog.records if r.name == "indexd.advisor.skips"]
    assert logged == ["main: statement skipped (no_indexable_predicate): SELECT count(*) FROM pgbench_history -- "
                      "no usable predicate, join, sort or grouping"]
    assert all(r.message.endswith("; skipped 1: 1 no_indexable_predicate") for r in results), results
