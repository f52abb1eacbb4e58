"""Verifying backups: the checksum and `pg_restore --list` again, and the full test restore into a scratch
database whose row counts are compared with those recorded (in the dump's own snapshot) at backup time."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from indexd import events
from indexd.backup.catalog import find_backup, record_in_catalog, scan
from indexd.backup.command import CommandFailed
from indexd.backup.manifest import FOREIGN, BackupInfo, checksum_problems, update_manifest
from indexd.backup.restore import (
    admin_connection,
    configured_database,
    create_database,
    drop_database,
    pg_restore_into,
    pg_restore_list,
    scratch_name,
    server_for,
    server_kwargs,
    superuser_only_extensions,
)
from indexd.backup.vetting import require_own
from indexd.clock import monotonic, utcnow
from indexd.config.schema import DatabaseSettings, Settings
from indexd.errors import BackupError, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyResult:
    backup_id: str
    ok: bool
    checksum_ok: bool
    list_entries: int | None
    problems: tuple[str, ...] = ()
    duration_s: float = 0.0


@dataclass(frozen=True)
class RestoreTestResult:
    backup_id: str
    ok: bool
    scratch_db: str
    tables_compared: int
    mismatches: tuple[str, ...] = field(default_factory=tuple)
    duration_s: float = 0.0


def find_in_dir(backups_dir: Path | str, backup_id: str) -> BackupInfo:
    """The backup with this id among the vetted manifests under `backups_dir` (no path is built from the id)."""
    root = Path(backups_dir)
    found = [info for folder in (sorted(root.iterdir()) if root.is_dir() else []) if folder.is_dir()
             for info in scan(folder, leftovers=False) if info.id == backup_id]
    if found:
        return min(found, key=lambda b: b.status == FOREIGN)  # ours first: a foreign claim never hides it
    raise UsageError(f"no backup {backup_id!r} under {backups_dir}")


def verify_backup(backups_dir: Path | str, backup_id: str, *, now: datetime | None = None) -> VerifyResult:
    """Re-check a backup's checksum(s) and table of contents; record the outcome in its manifest."""
    info = require_own(find_in_dir(backups_dir, backup_id), "verify")
    started = monotonic()
    problems = checksum_problems(info)
    checksum_ok = not problems
    entries = None
    if checksum_ok:
        try:
            entries = pg_restore_list(info.path)
        except BackupError as exc:
            problems.append(f"pg_restore --list failed: {exc}")
    ok = not problems
    if ok:
        update_manifest(info, status="verified", verified_at=now or utcnow(), error=None)
        log.info("backup %s verified: checksum matches, %d entries", backup_id, entries)
    else:
        update_manifest(info, status="failed", error="; ".join(problems))
        log.error("backup %s failed verification: %s", backup_id, "; ".join(problems))
    return VerifyResult(backup_id, ok, checksum_ok, entries, tuple(problems), monotonic() - started)


def compare_counts(expected: list[list[object]], conn: psycopg2.extensions.connection) -> tuple[int, list[str]]:
    """Compare recorded [schema, table, count] rows with exact counts in the restored database."""
    mismatches = []
    with conn.cursor() as cur:
        for schema, table, count in expected:
            cur.execute("SAVEPOINT compare")
            try:
                cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(str(schema)),
                                                                        sql.Identifier(str(table))))
                got: object = int(cur.fetchone()[0])
            except psycopg2.Error:
                cur.execute("ROLLBACK TO SAVEPOINT compare")
                got = "missing"
            if got != count:
                mismatches.append(f"{schema}.{table}: {count} rows at backup time, {got} restored")
    return len(expected), mismatches


def _compare_counts(settings: Settings, db: DatabaseSettings | None) -> bool:
    return (db.backups if db is not None else settings.backups).verify.compare_row_counts


def _restore_and_count(info: BackupInfo, dsn: str, db: DatabaseSettings | None, expected: list[list[object]],
                       cancel: threading.Event | None) -> tuple[str, int, list[str]]:
    """pg_restore into a fresh scratch database, count, and always drop the scratch database again."""
    scratch = scratch_name("indexd_verify")
    with admin_connection(dsn, db) as admin:
        # A role without superuser (sql/roles.sql) cannot create HypoPG or pg_stat_statements: indexd's own tools,
        # no application data, so the test restore leaves out such extensions (an object needing one still fails).
        superuser_only = superuser_only_extensions(admin)
        create_database(admin, scratch)
        try:
            left_out = pg_restore_into(info, dsn, db, scratch, jobs=int(info.manifest.get("jobs") or 1),
                                       no_owner=True, cancel=cancel, leave_out=superuser_only)
            if left_out:
                log.info("test restore of %s: left out the extension(s) only a superuser may create: %s", info.id,
                         ", ".join(left_out))
            conn = psycopg2.connect(**server_kwargs(dsn, db, scratch, app="indexd-verify"))
            try:
                return (scratch, *compare_counts(expected, conn))
            finally:
                conn.close()
        finally:
            with contextlib.suppress(psycopg2.Error):
                drop_database(admin, scratch)


def _record_test(info: BackupInfo, when: datetime, duration: float, compared: int, mismatches: list[str]) -> None:
    ok = not mismatches
    report = {"at": when.isoformat(), "ok": ok, "tables_compared": compared, "mismatches": mismatches,
              "duration_s": round(duration, 3)}
    if ok:
        update_manifest(info, restore_test=report, status="verified", verified_at=when)
        log.info("test restore of %s ok: %d tables match, %.1fs", info.id, compared, duration)
    else:
        update_manifest(info, restore_test=report, status="failed", error="; ".join(mismatches))
        log.error("test restore of %s failed: %s", info.id, "; ".join(mismatches))


def test_restore(settings: Settings, backup_id: str, *, target_dsn: str | None = None, now: datetime | None = None,
                 cancel: threading.Event | None = None) -> RestoreTestResult:
    """Restore a backup into a scratch database (indexd_verify_...) on its server, compare row counts, drop it.

    The manifest records the outcome (`restore_test`, and verified_at or status failed). A backup that
    pg_restore cannot restore is marked failed too; a cancelled run or an unreachable server marks nothing."""
    info = require_own(find_backup(settings, backup_id), "test-restore")
    started = monotonic()
    problems = checksum_problems(info)
    if problems:
        update_manifest(info, status="failed", error="; ".join(problems))
        message = f"backup {backup_id} cannot be test-restored: " + "; ".join(problems)
        events.publish(events.TEST_RESTORE_FAILED, info.database, message, backup_id=backup_id, stage="checksum")
        raise BackupError(message)
    dsn, db = server_for(settings, info, target_dsn)
    expected = (info.manifest.get("row_counts") or []) if _compare_counts(settings, db) else []
    when = now or utcnow()
    try:
        scratch, compared, mismatches = _restore_and_count(info, dsn, db, expected, cancel)
    except CommandFailed as exc:
        if exc.result is not None and not (exc.result.cancelled or exc.result.timed_out):
            _record_test(info, when, monotonic() - started, 0, [f"pg_restore failed: {exc}"])
        if exc.result is None or not exc.result.cancelled:
            events.publish(events.TEST_RESTORE_FAILED, info.database, f"test restore of {backup_id} failed: "
                           f"pg_restore: {exc}", backup_id=backup_id, stage="pg_restore")
        raise
    duration = monotonic() - started
    _record_test(info, when, duration, compared, mismatches)
    if mismatches:
        events.publish(events.TEST_RESTORE_FAILED, info.database, f"test restore of {backup_id} failed: "
                       + "; ".join(mismatches), backup_id=backup_id, stage="row_counts", mismatches=mismatches)
    configured = configured_database(settings, info)
    if configured is not None:
        record_in_catalog(configured, find_backup(settings, backup_id))
    return RestoreTestResult(backup_id, not mismatches, scratch, compared, tuple(mismatches), duration)


test_restore.__test__ = False  # type: ignore[attr-defined]  # a verification step, not a pytest test
