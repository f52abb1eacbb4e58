from __future__ import annotations

import threading

from indexd.db.pool import Database
from indexd.state.migrations import current_version, migrate, migrations


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
