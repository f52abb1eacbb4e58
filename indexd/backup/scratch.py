"""Test restores: a backup restored into a scratch database (indexd_verify_...) on its server, or on the server
--target-dsn names, its row counts compared with the source's (backup/counts.py), the scratch database dropped
again. The verdict (backup/trial.py) is recorded in the manifest and the catalog as a fact of its own, beside
the checksum's: `restore_test` {at, result, detail, ...}.

A least-privilege role that may create databases (CREATEDB) is enough: what it cannot create (extensions only
a superuser may create, event triggers, subscriptions) is left out of the restore's list (backup/toc.py) and
named in the result. When the test cannot run (no CREATEDB, the server unreachable, the disk full) the result
says why and the backup keeps its status: only a data problem marks a backup failed.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import psycopg2
import psycopg2.extensions

from indexd import events
from indexd.backup import counts, toc, trial
from indexd.backup.catalog import find_backup, record_in_catalog
from indexd.backup.command import CommandFailed, CommandResult, find_binary, libpq_connection, run_command
from indexd.backup.manifest import BackupInfo, checksum_problems, update_manifest
from indexd.backup.restore import (
    admin_connection,
    configured_database,
    create_database,
    drop_database,
    scratch_name,
    server_for,
    server_kwargs,
)
from indexd.backup.vetting import require_own
from indexd.clock import monotonic, utcnow
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.conninfo import connect_kwargs
from indexd.errors import BackupError, first_line
from indexd.units import human_duration

log = logging.getLogger(__name__)

STDERR_KEPT = 200_000  # pg_restore --verbose writes a line per entry: keep them all to find each error's entry
PgConn: TypeAlias = psycopg2.extensions.connection


@dataclass(frozen=True)
class RestoreTestResult:
    backup_id: str
    ok: bool  # result ok or incomplete: the data that could be restored here is sound
    scratch_db: str
    tables_compared: int
    mismatches: tuple[str, ...] = field(default_factory=tuple)
    duration_s: float = 0.0
    result: str = trial.Result.OK
    detail: str = ""
    left_out: tuple[str, ...] = ()
    not_restored: tuple[str, ...] = ()
    not_compared: tuple[str, ...] = ()
    status: str = "verified"  # the backup's status afterwards


class _NotRun(Exception):
    """The place the test runs in failed it (never the backup)."""


@dataclass
class _Run:
    scratch: str
    left_out: list[toc.LeftOut]
    assessment: trial.Assessment
    check: counts.CountCheck


_SERVER = """
SELECT r.rolsuper, current_user, r.rolsuper OR r.rolcreatedb,
       coalesce((SELECT json_object_agg(name, ok) FROM (
                   SELECT name, bool_or(trusted OR NOT superuser) AS ok FROM pg_available_extension_versions
                    GROUP BY name) x), '{}')
  FROM pg_roles r WHERE r.rolname = current_user
"""


def restore_server(admin: PgConn) -> tuple[toc.RestoreServer, str, bool]:
    """What the connected role may create on this server, its name, and whether it may create databases."""
    with admin.cursor() as cur:
        cur.execute(_SERVER)
        superuser, role, createdb, available = cur.fetchone()

    def creatable(name: str) -> str | None:
        if name not in available:
            return "not installed on the restore server"
        return None if superuser or available[name] else "only a superuser may create it"

    return toc.RestoreServer(bool(superuser), creatable), str(role), bool(createdb)


def _no_createdb(role: str) -> str:
    return (f"role {role!r} may not create databases (CREATEDB), and a test restore needs a scratch database: "
            f"ALTER ROLE {role} CREATEDB, or pass --target-dsn naming a server where the role may")


@contextlib.contextmanager
def _scratch_database(dsn: str, db: DatabaseSettings | None) -> Iterator[tuple[PgConn, toc.RestoreServer, str]]:
    """A fresh scratch database on the server of `dsn`, always dropped afterwards; _NotRun when it cannot be."""
    stack = contextlib.ExitStack()
    try:
        admin = stack.enter_context(admin_connection(dsn, db))
    except BackupError as exc:
        raise _NotRun(str(exc)) from exc
    with stack:
        server, role, createdb = restore_server(admin)
        if not createdb:
            raise _NotRun(_no_createdb(role))
        scratch = scratch_name("indexd_verify")
        try:
            create_database(admin, scratch)
        except (psycopg2.Error, BackupError) as exc:
            raise _NotRun(f"cannot create the scratch database {scratch}: {first_line(exc)}") from exc
        try:
            yield admin, server, scratch
        finally:
            with contextlib.suppress(psycopg2.Error):
                drop_database(admin, scratch)


def _pg_restore(info: BackupInfo, dsn: str, db: DatabaseSettings | None, scratch: str, entries: list[toc.TocEntry],
                cancel: threading.Event | None) -> CommandResult:
    """pg_restore --verbose of exactly `entries` into `scratch`, without owners, privileges or tablespaces."""
    with libpq_connection(dsn, db, dbname=scratch, app="indexd-verify") as conn, \
            tempfile.TemporaryDirectory(prefix="indexd-verify-") as tmp:
        listing = Path(tmp) / "restore.list"
        listing.write_text(toc.list_text(entries), encoding="utf-8")
        jobs = max(1, int(info.manifest.get("jobs") or 1))
        argv = [find_binary("pg_restore"), "--no-password", "--verbose", "--no-owner", "--no-privileges",
                "--no-tablespaces", f"--jobs={jobs}", f"--use-list={listing}", "--dbname", conn.conninfo,
                str(info.path)]
        timeout = db.backups.timeout.total_seconds() if db is not None else None
        result = run_command(argv, env=conn.env, drop_env=conn.drop_env, cancel=cancel, timeout=timeout,
                             check=False, stderr_keep=STDERR_KEPT, stderr_level=logging.DEBUG)
    if result.cancelled:
        raise CommandFailed(f"test restore of {info.id} cancelled", result)
    if result.timed_out:
        raise _NotRun(f"pg_restore timed out after {human_duration(result.duration_s)} (backups.timeout)")
    return result


def _compare(settings: Settings, info: BackupInfo, dsn: str, db: DatabaseSettings | None, scratch: str,
             run: _Run, when: datetime) -> None:
    """Row counts of the restored tables against the recorded ones, and the rest within the source's counters."""
    per_db = (db.backups if db is not None else settings.backups).verify
    if not per_db.compare_row_counts:
        return
    failed = [e.label for e in run.assessment.failed_entries]
    left = [lo.entry for lo in run.left_out]

    def excuse(schema: str, table: str) -> str | None:
        if any(toc.is_table_entry(label, schema, table) for label in failed):
            return "could not be created here"
        return "left out of the restore" if any(toc.is_table_entry(label, schema, table) for label in left) else None

    expected = info.manifest.get("row_counts") or []
    conn = psycopg2.connect(**server_kwargs(dsn, db, scratch, app="indexd-verify"))
    try:
        tables = counts.restored_tables(conn)
        present = {(s, t) for s, t, _ in tables}
        counts.compare_exact(expected, conn, present, excuse, run.check)
        recorded = {(str(r[0]), str(r[1])) for r in expected}
        others = [t for t in tables if (t[0], t[1]) not in recorded]
        with _source_connection(configured_database(settings, info)) as source:
            counts.compare_bounded(conn, source, others, info.manifest.get("table_counters") or {},
                                   (when - info.started_at).total_seconds(), run.check)
    finally:
        conn.close()


@contextlib.contextmanager
def _source_connection(db: DatabaseSettings | None) -> Iterator[PgConn | None]:
    """The backup's own database, to count against; None when it is not configured or not reachable."""
    if db is None:
        yield None
        return
    try:
        conn = psycopg2.connect(**connect_kwargs(db))
    except psycopg2.Error as exc:
        log.info("source %s not reachable for the bounded row counts: %s", db.name, first_line(exc))
        yield None
        return
    try:
        conn.set_session(readonly=True)
        yield conn
    finally:
        conn.close()


def _run(settings: Settings, info: BackupInfo, dsn: str, db: DatabaseSettings | None,
         cancel: threading.Event | None, when: datetime) -> _Run:
    with _scratch_database(dsn, db) as (_admin, server, scratch):
        listing = run_command([find_binary("pg_restore"), "--list", str(info.path)], capture_stdout=True,
                              timeout=600, check=False)
        if listing.returncode != 0:  # the checksum matched: the dump was written unreadable
            problem = "; ".join(listing.stderr_tail[-3:]) or f"exit code {listing.returncode}"
            return _Run(scratch, [], trial.Assessment(data=(f"pg_restore --list failed: {problem}",)),
                        counts.CountCheck())
        entries = toc.parse_list(listing.stdout)
        kept, left = toc.select_entries(entries, server)
        restored = _pg_restore(info, dsn, db, scratch, kept, cancel)
        errors, _ignored = trial.parse_errors(restored.stderr_tail)
        if restored.returncode != 0 and not errors:
            raise _NotRun(f"pg_restore exited with code {restored.returncode} without naming an error")
        run = _Run(scratch, left, trial.assess(errors, entries), counts.CountCheck())
        if not run.assessment.environment and not run.assessment.data:
            try:
                _compare(settings, info, dsn, db, scratch, run, when)
            except psycopg2.Error as exc:
                raise _NotRun(f"cannot count the restored rows: {first_line(exc)}") from exc
        return run


def _verdict(run: _Run | None, not_run: str | None) -> trial.Verdict:
    if run is None:
        return trial.Verdict(trial.Result.ERROR, f"the test restore could not run: {not_run}", (str(not_run),))
    check = run.check
    return trial.judge(run.assessment, check.mismatches, check.compared, [str(lo) for lo in run.left_out],
                       check.not_compared)


def _report(when: datetime, duration: float, verdict: trial.Verdict, run: _Run | None) -> dict[str, Any]:
    check = run.check if run is not None else counts.CountCheck()
    return {"at": when.isoformat(), "result": str(verdict.result), "ok": verdict.result in trial.SOUND,
            "detail": verdict.detail, "tables_compared": check.compared, "mismatches": check.mismatches,
            "left_out": [str(lo) for lo in run.left_out] if run is not None else [],
            "not_restored": list(verdict.not_restored), "not_compared": check.not_compared,
            "duration_s": round(duration, 3)}


def _record(settings: Settings, info: BackupInfo, report: dict[str, Any], verdict: trial.Verdict) -> str:
    """Write the test's outcome into the manifest (and the catalog); returns the backup's status now."""
    status = trial.status_after(info.status, checksum_ok=True, test=verdict.result)
    error = verdict.detail if status == "failed" else (info.error if status == info.status else None)
    update_manifest(info, restore_test=report, status=status, error=error)
    configured = configured_database(settings, info)
    if configured is not None:
        record_in_catalog(configured, find_backup(settings, info.id))
    return status


def _announce(info: BackupInfo, verdict: trial.Verdict, status: str) -> None:
    if verdict.result is trial.Result.FAILED:
        log.error("test restore of %s failed: %s", info.id, verdict.detail)
        events.publish(events.TEST_RESTORE_FAILED, info.database, f"test restore of {info.id} failed: "
                       + verdict.detail, backup_id=info.id, stage="data", mismatches=list(verdict.problems))
    elif verdict.result is trial.Result.ERROR:
        log.error("test restore of %s could not run (the backup stays %s): %s", info.id, status, verdict.detail)
        events.publish(events.TEST_RESTORE_FAILED, info.database, f"test restore of {info.id} could not run "
                       f"(the backup itself is not in question, it stays {status}): {verdict.detail}",
                       backup_id=info.id, stage="environment")
    else:
        log.info("test restore of %s %s: %s", info.id, verdict.result, verdict.detail)


def test_restore(settings: Settings, backup_id: str, *, target_dsn: str | None = None, now: datetime | None = None,
                 cancel: threading.Event | None = None) -> RestoreTestResult:
    """Restore a backup into a scratch database, compare row counts, drop it; record and return the verdict.

    A checksum mismatch marks the backup failed and raises BackupError; a cancelled run records nothing and
    raises CommandFailed; everything else is a result (see backup/trial.py)."""
    info = require_own(find_backup(settings, backup_id), "test-restore")
    started, when = monotonic(), now or utcnow()
    problems = checksum_problems(info)
    if problems:
        update_manifest(info, status="failed", error="; ".join(problems))
        message = f"backup {backup_id} cannot be test-restored: " + "; ".join(problems)
        events.publish(events.TEST_RESTORE_FAILED, info.database, message, backup_id=backup_id, stage="checksum")
        raise BackupError(message)
    dsn, db = server_for(settings, info, target_dsn)
    run: _Run | None = None
    not_run = None
    try:
        run = _run(settings, info, dsn, db, cancel, when)
    except _NotRun as exc:
        not_run = str(exc)
    verdict, duration = _verdict(run, not_run), monotonic() - started
    report = _report(when, duration, verdict, run)
    status = _record(settings, info, report, verdict)
    _announce(info, verdict, status)
    return RestoreTestResult(
        backup_id, verdict.result in trial.SOUND, run.scratch if run else "", report["tables_compared"],
        verdict.problems if verdict.result is trial.Result.FAILED else (), duration, str(verdict.result),
        verdict.detail, tuple(report["left_out"]), verdict.not_restored, tuple(report["not_compared"]), status)


test_restore.__test__ = False  # type: ignore[attr-defined]  # a verification step, not a pytest test
