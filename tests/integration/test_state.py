from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

from indexd.config.schema import IndexingSettings
from indexd.db.pool import Database
from indexd.lifecycle.guards import Readings, check_write
from indexd.lifecycle.readings import build_request
from indexd.state.migrations import current_version, migrate, migrations
from indexd.state.recommendation_rows import load_recommendations
from indexd.state.recommendations import NewRecommendation, upsert

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
WRITE_HEAVY = Readings(taken_at=NOW, is_leader=True, pause=None, cpu_pct=None, active_backends=1, max_connections=100,
                       waiting_backends=0, replica_lag_s=None, build_starts=(), table_writes_per_second=500.0)


def test_migrate_creates_every_table_once(database: Database, pg_conn) -> None:
    applied = migrate(database)
    assert applied == [m.version for m in migrations()]
    assert migrate(database) == []  # idempotent
    assert current_version(database) == max(applied)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'indexd'")
        tables = {r[0] for r in cur.fetchall()}
    assert {"schema_version", "statement_snapshots", "recommendations", "mutation_log", "index_verdicts",
            "backups", "pause"} <= tables


def test_concurrent_migrations_apply_each_step_once(database: Database, db_settings) -> None:
    results: list[list[int]] = []
    others = [Database(db_settings) for _ in range(3)]
    threads = [threading.Thread(target=lambda d=d: results.append(migrate(d))) for d in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in others:
        d.close()
    assert sorted(len(r) for r in results) == [0, 0, len(migrations())]


def test_a_mixed_case_state_schema_is_found_again(db_settings) -> None:
    from dataclasses import replace

    db = Database(replace(db_settings, state_schema="IdxState"))
    try:
        assert migrate(db) == [m.version for m in migrations()]
        assert migrate(db) == []  # found as "IdxState", not looked up as idxstate and created twice
        assert current_version(db) == max(m.version for m in migrations())
        from indexd.state.history import _state_exists

        assert _state_exists(db)  # history pruning looks for its tables the same way
    finally:
        db.close()


def test_the_benefit_column_reaches_advice_saved_before_it(database: Database, pg_conn, tmp_path: Path) -> None:
    """An install at migration 050 with a saved recommendation: 060 adds benefit_ms_per_s (NULL for the old
    row), the row reads back without it, and the write guard refuses it on a write-heavy table until the next
    advice run refreshes it."""
    older = [m for m in migrations() if m.version < 60]
    for m in older:
        shutil.copy(m.path, tmp_path / m.path.name)
    assert migrate(database, tmp_path) == [m.version for m in older]
    with pg_conn.cursor() as cur:
        cur.execute("INSERT INTO indexd.recommendations (fingerprint, table_schema, table_name, columns, index_name,"
                    " create_sql, improvement_pct, write_overhead) VALUES ('fp', 'public', 't', '[\"a\"]',"
                    " 'indexd_t_a_1', 'CREATE INDEX CONCURRENTLY indexd_t_a_1 ON public.t (a)', 40, 2)"
                    " RETURNING id")
        rec_id = cur.fetchone()[0]
    assert migrate(database) == [60]
    with pg_conn.cursor() as cur:
        cur.execute("SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
                    " WHERE attrelid = 'indexd.recommendations'::regclass AND attname = 'benefit_ms_per_s'")
        assert cur.fetchone() == ("double precision", False)
    with database.connection() as conn:
        (row,) = load_recommendations(conn, "indexd", ids=[rec_id])
    assert (row.write_overhead, row.benefit_ms_per_s) == (2.0, None)
    request = build_request(row, table_bytes=8192)
    assert (request.write_overhead, request.benefit_ms_per_s) == (2.0, None)
    (reason,) = check_write(request, IndexingSettings(), WRITE_HEAVY, NOW)
    assert "predates" in reason.reason and "indexd recommend" in reason.reason
    # New advice for the same shape refreshes the live row, benefit included; then the guard weighs it.
    with database.connection() as conn:
        upsert(conn, "indexd", [NewRecommendation(
            fingerprint="fp", table_schema="public", table_name="t", columns=["a"], method="btree",
            where_clause=None, include=[], index_name="indexd_t_a_1", create_sql=row.create_sql,
            estimated_size_bytes=8192, improvement_pct=40.0, write_overhead=2.0, queries=[],
            benefit_ms_per_s=12.5)])
        (fresh,) = load_recommendations(conn, "indexd", ids=[rec_id])
    assert fresh.benefit_ms_per_s == 12.5
    assert check_write(build_request(fresh, table_bytes=8192), IndexingSettings(), WRITE_HEAVY, NOW) == []
