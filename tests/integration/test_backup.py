"""Backups on a real server with the real pg_dump / pg_restore: round trips, formats, verification."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from indexd.backup import verify
from indexd.backup.catalog import backup_readings, find_backup, list_backups, prune
from indexd.backup.dump import run_backup
from indexd.backup.manifest import update_manifest
from indexd.backup.restore import restore
from indexd.backup.scratch import test_restore
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.errors import BackupError
from indexd.state.migrations import migrate
from tests.support.cluster import new_database

T0 = datetime(2026, 11, 23, 6, 25, tzinfo=UTC)
HOSTILE_TABLE = 'Ünïcode "quoted" table'


def make_settings(tmp_path: Path, dsn: str, name: str = "main", **backup: Any) -> Settings:
    backups = BackupSettings(dir=str(tmp_path / "backups"), **backup)
    db = DatabaseSettings(name=name, dsn=dsn, backups=backups)
    return Settings(databases=(db,), backups=backups)


def populate(conn: psycopg2.extensions.connection, rows: int = 300) -> None:
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id serial PRIMARY KEY, payload bytea, doc jsonb, note text)")
        cur.execute(
            "INSERT INTO items (payload, doc, note) SELECT decode(md5(i::text) || md5((i * 7)::text), 'hex'), "
            "jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i %% 3), 'nested', jsonb_build_object("
            "'x', i * 1.5)), repeat('n', i %% 50) FROM generate_series(1, %s) i", (rows,))
        cur.execute("CREATE SEQUENCE counter")
        cur.execute("SELECT setval('counter', 4242)")
        cur.execute(sql.SQL("CREATE TABLE {} (k text PRIMARY KEY, v int)").format(sql.Identifier(HOSTILE_TABLE)))
        cur.execute(sql.SQL("INSERT INTO {} VALUES ('ä', 1), ('\"', 2), ('x''y', 3)").format(
            sql.Identifier(HOSTILE_TABLE)))
        cur.execute("CREATE SCHEMA other")
        cur.execute("CREATE TABLE other.empty (a int)")


def snapshot_of(cluster: EmbeddedCluster, dbname: str) -> dict[str, Any]:
    """Every user table's full contents (ordered) and every sequence's value."""
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                        "('pg_catalog', 'information_schema') ORDER BY 1, 2")
            tables = cur.fetchall()
            out: dict[str, Any] = {}
            for schema, table in tables:
                cur.execute(sql.SQL("SELECT * FROM {}.{} ORDER BY 1").format(sql.Identifier(schema),
                                                                            sql.Identifier(table)))
                out[f"{schema}.{table}"] = [tuple(bytes(c) if isinstance(c, memoryview) else c for c in r)
                                            for r in cur.fetchall()]
            cur.execute("SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2")
            out["sequences"] = cur.fetchall()
            return out
    finally:
        conn.close()


@pytest.fixture
def restored(pg_cluster: EmbeddedCluster):  # type: ignore[no-untyped-def]
    """Names of databases a test restores into; dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        pg_cluster.drop_database(name)


def test_round_trip_custom_format(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any, tmp_path: Path,
                                  restored: list[str]) -> None:
    populate(pg_conn)
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname))
    result = run_backup(settings, settings.databases[0], now=T0)
    assert result.id == "main-20261123T062500Z" and result.verified
    assert result.path == tmp_path / "backups" / "main" / "main-20261123T062500Z.dump"
    assert not result.catalog_written  # no state schema here: the backup still succeeds
    assert stat.S_IMODE(result.path.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(result.path.parent.stat().st_mode) == 0o700
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["status"] == "verified" and manifest["format"] == "custom"
    assert manifest["server_version"].startswith("15") and "pg_dump" in manifest["pg_dump_version"]
    assert manifest["sha256"] == result.sha256 and manifest["size_bytes"] == result.path.stat().st_size
    assert ["public", "items", 300] in manifest["row_counts"]
    assert ["public", HOSTILE_TABLE, 3] in manifest["row_counts"]
    assert [p.name for p in result.path.parent.iterdir() if p.name.startswith(".") and p.name != ".lock"] == []

    restored.append("rt_custom")
    outcome = restore(settings, result.id, "rt_custom")
    assert not outcome.replaced_existing
    assert snapshot_of(pg_cluster, "rt_custom") == snapshot_of(pg_cluster, pg_dbname)


def test_directory_format_with_two_jobs(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any,
                                        tmp_path: Path, restored: list[str]) -> None:
    populate(pg_conn)
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname), format="directory", jobs=2)
    result = run_backup(settings, settings.databases[0], now=T0)
    assert result.path.is_dir() and result.path.name.endswith(".dir") and result.verified
    manifest = json.loads(result.manifest_path.read_text())
    names = [f["name"] for f in manifest["files"]]
    assert "toc.dat" in names and names == sorted(names)
    restored.append("rt_dir")
    outcome = restore(settings, result.id, "rt_dir", jobs=2)
    assert outcome.jobs == 2
    assert snapshot_of(pg_cluster, "rt_dir") == snapshot_of(pg_cluster, pg_dbname)


def test_hostile_database_names(pg_cluster: EmbeddedCluster, tmp_path: Path, restored: list[str]) -> None:
    source = 'we"ird db'
    new_database(pg_cluster, source, extensions=())
    restored.append(source)
    conn = pg_cluster.connect(source)
    try:
        populate(conn, rows=20)
    finally:
        conn.close()
    settings = make_settings(tmp_path, pg_cluster.dsn(source.replace('"', "%22").replace(" ", "%20")),
                             name=source)
    result = run_backup(settings, settings.databases[0], now=T0)
    assert result.id == 'we"ird db-20261123T062500Z'
    target = "rë'stored \"x\""
    restored.append(target)
    restore(settings, result.id, target)
    assert snapshot_of(pg_cluster, target) == snapshot_of(pg_cluster, source)


def test_catalog_row_mirrors_the_manifest(pg_cluster: EmbeddedCluster, pg_dbname: str, tmp_path: Path,
                                          database: Database) -> None:
    migrate(database)
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname))
    result = run_backup(settings, settings.databases[0], now=T0)
    assert result.catalog_written
    with database.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT id, status, sha256, size_bytes, manifest->>'format' FROM indexd.backups")
        assert cur.fetchall() == [(result.id, "verified", result.sha256, result.size_bytes, "custom")]


def test_checksum_mismatch_is_found_and_restore_refuses(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                        pg_conn: Any, tmp_path: Path) -> None:
    populate(pg_conn, rows=50)
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname))
    result = run_backup(settings, settings.databases[0], now=T0)
    ok = verify.verify_backup(tmp_path / "backups", result.id)
    assert ok.ok and ok.list_entries and ok.list_entries > 3
    data = bytearray(result.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    result.path.write_bytes(bytes(data))
    bad = verify.verify_backup(tmp_path / "backups", result.id)
    assert not bad.ok and not bad.checksum_ok
    assert any("checksum mismatch" in p for p in bad.problems)
    assert find_backup(settings, result.id).status == "failed"
    with pytest.raises(BackupError, match="refusing to restore"):
        restore(settings, result.id, "never_created")
    assert pg_cluster.fetch("SELECT count(*) FROM pg_database WHERE datname = 'never_created'")[0][0] == 0


def test_directory_backup_with_a_changed_file_is_refused(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                         pg_conn: Any, tmp_path: Path) -> None:
    populate(pg_conn, rows=50)
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname), format="directory")
    result = run_backup(settings, settings.databases[0], now=T0)
    victim = next(p for p in sorted(result.path.iterdir()) if p.name.endswith(".dat.gz"))
    victim.write_bytes(victim.read_bytes() + b"x")
    bad = verify.verify_backup(tmp_path / "backups", result.id)
    assert f"{victim.name}: checksum mismatch" in bad.problems


def test_scheduled_test_restore_compares_row_counts(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any,
                                                    tmp_path: Path) -> None:
    populate(pg_conn)
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname))
    result = run_backup(settings, settings.databases[0], now=T0)
    with pg_conn.cursor() as cur:  # changes after the backup do not disturb the comparison
        cur.execute("DELETE FROM items WHERE id > 10")
    when = T0 + timedelta(hours=1)
    before = find_backup(settings, result.id).verified_at
    test = test_restore(settings, result.id, now=when)
    assert test.ok and test.result == "ok" and test.tables_compared >= 3, test.detail
    info = find_backup(settings, result.id)
    # Two facts: the checksum's time stays the backup's own; the test restore has its own time and result.
    assert info.verified_at == before and info.status == "verified"
    assert info.manifest["restore_test"]["at"] == when.isoformat() and info.manifest["restore_test"]["result"] == "ok"
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'indexd\\_verify\\_%%'")
        assert cur.fetchone()[0] == 0


def test_test_restore_reports_a_mismatch(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any,
                                         tmp_path: Path) -> None:
    populate(pg_conn, rows=30)
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname))
    result = run_backup(settings, settings.databases[0], now=T0)
    info = find_backup(settings, result.id)
    counts = [[s, t, (n + 1 if t == "items" else n)] for s, t, n in info.manifest["row_counts"]]
    update_manifest(info, row_counts=counts)
    test = test_restore(settings, result.id)
    assert not test.ok and test.result == "failed"
    assert test.mismatches == ("public.items: 31 rows at backup time, 30 restored",)
    assert find_backup(settings, result.id).status == "failed"
    # A later checksum check finds the file intact, but the data problem stands until a test restore passes.
    again = verify.verify_backup(tmp_path / "backups", result.id)
    assert again.ok and again.held_failed and find_backup(settings, result.id).status == "failed"


def test_retention_keeps_the_last_verified_when_newer_ones_failed(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                                  tmp_path: Path) -> None:
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname))
    db = settings.databases[0]
    first = run_backup(settings, db, now=T0)
    later = [run_backup(settings, db, now=T0 + timedelta(days=d)) for d in (1, 2, 3)]
    for r in later:  # they all fail verification afterwards (e.g. corrupted on disk)
        update_manifest(find_backup(settings, r.id), status="failed", error="corrupt")
    decisions = prune(db, now=T0 + timedelta(days=60))
    assert {d.backup.id: d.keep for d in decisions} == {first.id: True, **{r.id: False for r in later}}
    assert [b.id for b in list_backups(settings)] == [first.id]
    assert first.path.exists() and not any(r.path.exists() for r in later)


def test_prune_dry_run_deletes_nothing_and_readings(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                    tmp_path: Path) -> None:
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname))
    db = settings.databases[0]
    ids = [run_backup(settings, db, now=T0 + timedelta(days=d)).id for d in range(3)]
    decisions = prune(db, now=T0 + timedelta(days=30), dry_run=True)
    assert [d.keep for d in decisions] == [True, True, True]  # keep_last 7
    readings = backup_readings(settings)["main"]
    assert readings.backups == 3 and readings.failures == 0
    assert readings.last_success is not None and readings.last_success >= T0 + timedelta(days=2)
    assert readings.last_size_bytes and readings.last_size_bytes > 0
    assert [b.id for b in list_backups(settings)] == ids


def test_test_restore_marks_an_unrestorable_backup_failed(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path, pg_cluster.dsn(pg_dbname))
    result = run_backup(settings, settings.databases[0], now=T0)
    stub = tmp_path / "pg_restore"
    stub.write_text("#!/bin/sh\necho 'pg_restore: error: could not read from input file' >&2\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("INDEXD_PG_RESTORE", str(stub))
    test = test_restore(settings, result.id)
    assert test.result == "failed" and "could not read" in test.detail
    info = find_backup(settings, result.id)
    assert info.status == "failed" and not info.manifest["restore_test"]["ok"]
