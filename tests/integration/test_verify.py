"""Verification on the real cluster: a workload before and after a build, snapshots around each, a verdict."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, IndexingSettings, Settings, ThrottleSettings, VerifySettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.lifecycle.leader import Leadership
from indexd.lifecycle.pause import pause
from indexd.lifecycle.verify import verify_built
from indexd.state import audit
from indexd.state.migrations import migrate
from indexd.workload.capture import take_snapshot
from tests.support.lifecycle import run_lookups

LOOKUP = "SELECT * FROM items WHERE sku = %s"
NORMALISED = "SELECT * FROM items WHERE sku = $1"


def _settings(db_settings: DatabaseSettings, **verify: object) -> DatabaseSettings:
    indexing = IndexingSettings(
        verify=replace(VerifySettings(after=timedelta(0), min_calls=20), **verify),  # type: ignore[arg-type]
        throttle=ThrottleSettings(max_cpu_pct=100.0, cpu_sample=timedelta(seconds=0.1),
                                  max_active_backends_pct=100.0, max_waiting_backends=1000),
    )
    return replace(db_settings, indexing=indexing)


@pytest.fixture
def items(pg_conn) -> None:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id bigint PRIMARY KEY, sku bigint NOT NULL, note text)")
        cur.execute("INSERT INTO items SELECT g, g * 7, md5(g::text) FROM generate_series(1, 100000) g")
        cur.execute("ANALYZE items")


def _workload(cluster: EmbeddedCluster, dbname: str, calls: int) -> None:
    run_lookups(cluster, dbname, LOOKUP, calls)


def _build(database: Database, pg_conn, index_sql: str, name: str) -> int:
    """What an apply leaves behind: a built recommendation and its audited create_index."""
    schema = database.settings.state_schema
    with pg_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO indexd.recommendations (status, fingerprint, table_schema, table_name, columns,"
            " index_name, create_sql, queries) VALUES ('building', %s, 'public', 'items', '[]', %s, %s, %s)"
            " RETURNING id", (name, name, index_sql, json.dumps([{"query": NORMALISED, "calls": 40}])))
        rec_id = cur.fetchone()[0]
    intent = audit.record_intent(pg_conn, schema, action="create_index", target=f"public.{name}", sql=index_sql,
                                 recommendation_id=rec_id)
    with pg_conn.cursor() as cur:
        cur.execute(index_sql)
        cur.execute("UPDATE indexd.recommendations SET status = 'built' WHERE id = %s", (rec_id,))
    audit.record_outcome(pg_conn, schema, intent, outcome="succeeded", duration_s=0.1)
    return rec_id


def _scenario(database: Database, pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn, index_sql: str,
              name: str, calls_after: int = 40) -> int:
    migrate(database)
    take_snapshot(database)
    _workload(pg_cluster, pg_dbname, 40)
    take_snapshot(database)
    rec_id = _build(database, pg_conn, index_sql, name)
    take_snapshot(database)
    _workload(pg_cluster, pg_dbname, calls_after)
    take_snapshot(database)
    return rec_id


def _index_exists(pg_conn, name: str) -> bool:
    with pg_conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"public.{name}",))
        return cur.fetchone()[0] is not None


def _status_and_verdicts(pg_conn, rec_id: int) -> tuple[str, list[tuple[str, dict]]]:
    with pg_conn.cursor() as cur:
        cur.execute("SELECT status FROM indexd.recommendations WHERE id = %s", (rec_id,))
        status = cur.fetchone()[0]
        cur.execute("SELECT verdict, evidence FROM indexd.index_verdicts WHERE recommendation_id = %s ORDER BY id",
                    (rec_id,))
        return status, cur.fetchall()


def test_useful_index_is_kept(database, pg_cluster, pg_dbname, pg_conn, items) -> None:
    name = "indexd_items_sku_0001"
    rec_id = _scenario(database, pg_cluster, pg_dbname, pg_conn, f"CREATE INDEX {name} ON items (sku)", name)
    settings = _settings(database.settings)
    (record,) = verify_built(database, Settings(), settings, now=utcnow() + timedelta(seconds=1))
    assert record.verdict == "kept", record.reasons
    assert record.action == "kept"
    assert record.evidence["index_scans"] >= 40
    assert record.evidence["gain_pct"] > 50
    status, verdicts = _status_and_verdicts(pg_conn, rec_id)
    assert status == "kept"
    assert [v for v, _ in verdicts] == ["kept"]
    assert verdicts[0][1]["statements"][0]["calls_before"] == 40
    assert _index_exists(pg_conn, name)
    assert verify_built(database, Settings(), settings) == []  # a final verdict is not given twice


def test_useless_index_is_reverted_and_dropped_with_audit(database, pg_cluster, pg_dbname, pg_conn, items) -> None:
    name = "indexd_items_note_0002"
    rec_id = _scenario(database, pg_cluster, pg_dbname, pg_conn, f"CREATE INDEX {name} ON items (note)", name)
    (record,) = verify_built(database, Settings(), _settings(database.settings), job_id="job-1")
    assert record.verdict == "reverted" and "unused" in record.reasons[0]
    assert record.action == "dropped"
    assert not _index_exists(pg_conn, name)
    status, verdicts = _status_and_verdicts(pg_conn, rec_id)
    assert status == "reverted"
    assert [v for v, _ in verdicts] == ["reverted"]
    assert verdicts[0][1]["index_scans"] == 0
    with pg_conn.cursor() as cur:
        cur.execute("SELECT phase, outcome, sql, job_id FROM indexd.mutation_log"
                    " WHERE action = 'revert_index' AND recommendation_id = %s ORDER BY id", (rec_id,))
        rows = cur.fetchall()
    assert [(r[0], r[1]) for r in rows] == [("intent", "started"), ("outcome", "succeeded")]
    assert rows[0][2] == f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{name}"'
    assert rows[0][3] == "job-1"


def test_too_few_calls_is_inconclusive_and_judged_again(database, pg_cluster, pg_dbname, pg_conn, items) -> None:
    name = "indexd_items_sku_0003"
    rec_id = _scenario(database, pg_cluster, pg_dbname, pg_conn, f"CREATE INDEX {name} ON items (sku)", name,
                       calls_after=5)
    settings = _settings(database.settings)
    (record,) = verify_built(database, Settings(), settings)
    assert record.verdict == "inconclusive" and record.action == "wait"
    (again,) = verify_built(database, Settings(), settings)
    assert again.verdict == "inconclusive"
    status, verdicts = _status_and_verdicts(pg_conn, rec_id)
    assert status == "built" and [v for v, _ in verdicts] == ["inconclusive", "inconclusive"]
    assert _index_exists(pg_conn, name)


def test_auto_revert_off_keeps_the_index_but_records_the_verdict(database, pg_cluster, pg_dbname, pg_conn,
                                                                items) -> None:
    name = "indexd_items_note_0004"
    rec_id = _scenario(database, pg_cluster, pg_dbname, pg_conn, f"CREATE INDEX {name} ON items (note)", name)
    settings = _settings(database.settings, auto_revert=False)
    (record,) = verify_built(database, Settings(), settings)
    assert record.verdict == "reverted" and record.action == "revert_off"
    assert _index_exists(pg_conn, name)
    status, verdicts = _status_and_verdicts(pg_conn, rec_id)
    assert status == "built" and [v for v, _ in verdicts] == ["reverted"]
    assert verify_built(database, Settings(), settings) == []  # the verdict stands; nothing more to do
    # turning auto_revert on later carries out the standing verdict without judging again
    (later,) = verify_built(database, Settings(), _settings(database.settings))
    assert later.action == "dropped" and not _index_exists(pg_conn, name)
    assert [v for v, _ in _status_and_verdicts(pg_conn, rec_id)[1]] == ["reverted"]


def test_pause_defers_the_revert(database, pg_cluster, pg_dbname, pg_conn, items) -> None:
    name = "indexd_items_note_0005"
    rec_id = _scenario(database, pg_cluster, pg_dbname, pg_conn, f"CREATE INDEX {name} ON items (note)", name)
    pause(database, timedelta(hours=1), "incident")
    (record,) = verify_built(database, Settings(), _settings(database.settings))
    assert record.verdict == "reverted" and record.action == "revert_refused"
    assert _index_exists(pg_conn, name)
    assert _status_and_verdicts(pg_conn, rec_id)[0] == "built"


def test_too_early_for_a_verdict(database, pg_cluster, pg_dbname, pg_conn, items) -> None:
    name = "indexd_items_sku_0006"
    _scenario(database, pg_cluster, pg_dbname, pg_conn, f"CREATE INDEX {name} ON items (sku)", name)
    settings = _settings(database.settings)
    settings = replace(settings, indexing=replace(settings.indexing, verify=VerifySettings(after=timedelta(hours=24))))
    assert verify_built(database, Settings(), settings) == []


def test_statistics_reset_after_the_build_gives_no_evidence_of_disuse(database, pg_cluster, pg_dbname, pg_conn,
                                                                      items) -> None:
    name = "indexd_items_note_0007"
    _scenario(database, pg_cluster, pg_dbname, pg_conn, f"CREATE INDEX {name} ON items (note)", name)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT pg_stat_reset()")  # the scan counter now covers nothing of the workload above
    (record,) = verify_built(database, Settings(), _settings(database.settings))
    assert record.verdict == "inconclusive"
    assert _index_exists(pg_conn, name)


def test_revert_needs_leadership(database, pg_cluster, pg_dbname, pg_conn, items) -> None:
    name = "indexd_items_note_0008"
    rec_id = _scenario(database, pg_cluster, pg_dbname, pg_conn, f"CREATE INDEX {name} ON items (note)", name)
    other = Leadership.for_database(database)
    assert other.acquire()  # another daemon leads this database
    try:
        (record,) = verify_built(database, Settings(), _settings(database.settings))
    finally:
        other.release()
    assert record.verdict == "reverted" and record.action == "revert_refused"
    assert _index_exists(pg_conn, name)
    # once leadership is ours, the standing verdict is carried out
    (later,) = verify_built(database, Settings(), _settings(database.settings))
    assert later.action == "dropped" and _status_and_verdicts(pg_conn, rec_id)[0] == "reverted"


def test_index_dropped_by_someone_else_is_reverted_without_a_drop(database, pg_cluster, pg_dbname, pg_conn,
                                                                  items) -> None:
    name = "indexd_items_sku_0009"
    rec_id = _scenario(database, pg_cluster, pg_dbname, pg_conn, f"CREATE INDEX {name} ON items (sku)", name)
    with pg_conn.cursor() as cur:
        cur.execute(f"DROP INDEX {name}")
    (record,) = verify_built(database, Settings(), _settings(database.settings, auto_revert=False))
    assert record.verdict == "reverted" and record.action == "none"
    assert record.reasons == ("the index no longer exists",)
    assert _status_and_verdicts(pg_conn, rec_id)[0] == "reverted"
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM indexd.mutation_log WHERE action = 'revert_index'")
        assert cur.fetchone()[0] == 0
