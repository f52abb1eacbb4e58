"""Leadership on a real server: one holder at a time; a killed session loses it at once."""

from __future__ import annotations

from indexd.db.pool import Database
from indexd.lifecycle.leader import Leadership, leader_key


def test_key_is_deterministic_and_distinct() -> None:
    assert leader_key("indexd", "app") == leader_key("indexd", "app")
    assert leader_key("indexd", "app") != leader_key("indexd", "app2")
    assert leader_key("indexd", "app") != leader_key("other", "app")
    assert -(2**63) <= leader_key("indexd", "app") < 2**63


def test_only_one_holds_it_and_a_killed_holder_loses_it(database: Database, db_settings, pg_conn) -> None:
    other_db = Database(db_settings)
    first, second = Leadership.for_database(database), Leadership.for_database(other_db)
    try:
        assert first.key == second.key
        assert first.acquire() and first.held()
        assert first.acquire()  # re-entrant for its holder
        assert not second.acquire() and not second.held()
        with pg_conn.cursor() as cur:  # kill the holder's backend: its lock goes with it
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND ((classid::bigint << 32) | objid::bigint) = %s", (first.key,))
            assert cur.rowcount == 1
        assert not first.held()
        assert second.acquire() and second.held()
        assert not first.acquire()
        second.release()
        assert not second.held()
        assert first.acquire()
    finally:
        first.release()
        second.release()
        other_db.close()


def test_negative_keys_are_checked_correctly(database: Database) -> None:
    with Leadership(database, -12345678901234) as lead:
        assert lead.acquire() and lead.held()
    with Leadership(database, 2**62 + 5) as lead:
        assert lead.acquire() and lead.held()


def test_threads_sharing_one_leadership_open_one_session(database) -> None:
    import threading

    from indexd.lifecycle.leader import Leadership

    lead = Leadership.for_database(database)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(lead.acquire())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert results == [True] * 8
        with database.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            assert cur.fetchone()[0] == 1
    finally:
        lead.release()
