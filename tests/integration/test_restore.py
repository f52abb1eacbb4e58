"""Restore: from the manifest alone, never over an existing database without confirmation, atomic swap."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from indexd.backup.dump import BackupResult, run_backup
from indexd.backup.restore import ConfirmationRequired, restore
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.errors import BackupError, UsageError
from indexd.state.migrations import migrate
from tests.support.cluster import new_database

T0 = datetime(2026, 11, 23, 6, 25, tzinfo=UTC)


def _settings(tmp_path: Path, dsn: str) -> Settings:
    backups = BackupSettings(dir=str(tmp_path / "backups"))
    return Settings(databases=(DatabaseSettings(name="main", dsn=dsn, backups=backups),), backups=backups)


def _rows(cluster: EmbeddedCluster, dbname: str) -> list[tuple[Any, ...]]:
    return cluster.fetch("SELECT * FROM t ORDER BY 1", dbname)


@pytest.fixture
def backed_up(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'backed up'), (2, 'x')")
    settings = _settings(tmp_path, pg_cluster.dsn(pg_dbname))
    result = run_backup(settings, settings.databases[0], now=T0)
    existing = f"{pg_dbname}_existing"
    new_database(pg_cluster, existing, extensions=())
    pg_cluster.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (9, 'precious')",
                       dbname=existing)
    yield settings, result, existing
    pg_cluster.drop_database(existing)


def test_existing_database_without_tty_or_yes_is_refused(pg_cluster: EmbeddedCluster, backed_up: Any) -> None:
    settings, result, existing = backed_up
    with pytest.raises(ConfirmationRequired, match="--yes") as info:
        restore(settings, result.id, existing)
    assert info.value.exit_code == 2
    assert _rows(pg_cluster, existing) == [(9, "precious")]


def test_declined_confirmation_changes_nothing(pg_cluster: EmbeddedCluster, backed_up: Any) -> None:
    settings, result, existing = backed_up
    asked: list[str] = []

    def no(question: str) -> bool:
        asked.append(question)
        return False

    with pytest.raises(ConfirmationRequired, match="declined"):
        restore(settings, result.id, existing, confirm=no)
    assert existing in asked[0] and result.id in asked[0]
    assert _rows(pg_cluster, existing) == [(9, "precious")]


def test_confirmed_restore_replaces_the_database(pg_cluster: EmbeddedCluster, backed_up: Any) -> None:
    settings, result, existing = backed_up
    outcome = restore(settings, result.id, existing, confirm=lambda q: True)
    assert outcome.replaced_existing and outcome.duration_s > 0
    assert _rows(pg_cluster, existing) == [(1, "backed up"), (2, "x")]
    scratch = "SELECT count(*) FROM pg_database WHERE datname LIKE 'indexd\\_restore\\_%%'"
    assert pg_cluster.fetch(scratch)[0][0] == 0


def test_yes_skips_the_question(pg_cluster: EmbeddedCluster, backed_up: Any) -> None:
    settings, result, existing = backed_up

    def never(question: str) -> bool:
        raise AssertionError("asked despite --yes")

    assert restore(settings, result.id, existing, assume_yes=True, confirm=never).replaced_existing


def test_failed_restore_leaves_the_existing_database_untouched(pg_cluster: EmbeddedCluster, backed_up: Any,
                                                               tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    settings, result, existing = backed_up
    stub = tmp_path / "pg_restore"
    stub.write_text("#!/bin/sh\necho 'pg_restore: error: simulated failure' >&2\nexit 1\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("INDEXD_PG_RESTORE", str(stub))
    with pytest.raises(BackupError, match="simulated failure"):
        restore(settings, result.id, existing, assume_yes=True)
    assert _rows(pg_cluster, existing) == [(9, "precious")]


def test_restore_works_from_manifests_when_the_source_is_gone(pg_cluster: EmbeddedCluster, tmp_path: Path) -> None:
    source = "rs_vanishing"
    new_database(pg_cluster, source, extensions=())
    pg_cluster.execute("CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, 'kept')", dbname=source)
    settings = _settings(tmp_path, pg_cluster.dsn(source))
    result: BackupResult = run_backup(settings, settings.databases[0], now=T0)
    pg_cluster.drop_database(source)
    # A configuration that no longer knows the database: the manifests and --target-dsn are enough.
    bare = Settings(backups=settings.backups)
    with pytest.raises(UsageError, match="--target-dsn"):
        restore(bare, result.id, "rs_back")
    try:
        restore(bare, result.id, "rs_back", target_dsn=pg_cluster.dsn("postgres"))
        assert _rows(pg_cluster, "rs_back") == [(1, "kept")]
    finally:
        pg_cluster.drop_database("rs_back")


def test_unknown_backup_id(tmp_path: Path) -> None:
    settings = Settings(backups=BackupSettings(dir=str(tmp_path)))
    os.makedirs(tmp_path / "main")
    with pytest.raises(UsageError, match="no backup 'main-1'"):
        restore(settings, "main-1", "x")


def _audit_rows(cluster: EmbeddedCluster, dbname: str) -> list[tuple[Any, ...]]:
    return cluster.fetch("SELECT action, phase, target, outcome FROM indexd.mutation_log ORDER BY id", dbname)


def test_restore_is_audited(pg_cluster: EmbeddedCluster, pg_dbname: str, backed_up: Any,
                            database: Database) -> None:
    settings, result, existing = backed_up
    migrate(database)
    restore(settings, result.id, existing, assume_yes=True)
    assert _audit_rows(pg_cluster, pg_dbname) == [
        ("restore", "intent", existing, "started"), ("restore", "outcome", existing, "succeeded")]


def test_restore_over_the_source_itself(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any,
                                        database: Database, tmp_path: Path) -> None:
    migrate(database)
    database.close()
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    settings = _settings(tmp_path, pg_cluster.dsn(pg_dbname))
    result = run_backup(settings, settings.databases[0], now=T0)
    with pg_conn.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (2)")
    pg_conn.close()
    restore(settings, result.id, pg_dbname, assume_yes=True)
    assert _rows(pg_cluster, pg_dbname) == [(1,)]
    # The intent was written into the database that the restore replaced; the outcome stands on its own.
    assert _audit_rows(pg_cluster, pg_dbname) == [
        ("restore", "intent", pg_dbname, "started"), ("restore", "outcome", pg_dbname, "succeeded")]
