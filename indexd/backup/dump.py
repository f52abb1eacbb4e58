"""Taking a backup: pg_dump into a temporary name, fsync, rename, checksum, verify, manifest last.

The manifest is the commit marker: until it is written the backup does not exist for listing, retention or
restore, and leftovers of an interrupted run are removed by the next one. Row counts of small tables are taken
in the very snapshot pg_dump dumps (an exported snapshot), so a test restore can compare them exactly.
"""

from __future__ import annotations

import contextvars
import errno
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from indexd import __version__, events
from indexd.backup.catalog import (
    backup_folder,
    backup_lock,
    record_failure,
    record_in_catalog,
    remove_path,
    scan,
)
from indexd.backup.command import binary_version, find_binary, libpq_connection, run_command
from indexd.backup.manifest import (
    MANIFEST_VERSION,
    BackupInfo,
    backup_id,
    checksum_files,
    data_path,
    fsync_path,
    info_from_manifest,
    manifest_path,
    manifest_time,
    partial_path,
    redact_config_text,
    write_json_atomic,
)
from indexd.backup.restore import pg_restore_list
from indexd.backup.snapshot import RowCounter, SourceSnapshot, open_snapshot
from indexd.clock import monotonic, utcnow
from indexd.config.schema import DatabaseSettings, Settings
from indexd.dsn import redact_dsn
from indexd.errors import BackupError, IndexdError, first_line
from indexd.private import DIR_MODE, FILE_MODE, ensure_private_dir
from indexd.units import human_duration, human_size

log = logging.getLogger(__name__)

# A compressed custom dump is usually well under half the database size (indexes are not dumped).
COMPRESSED_RATIO = 0.5


@dataclass(frozen=True)
class BackupResult:
    id: str
    database: str
    status: str  # verified, or completed when verification after backup is off
    path: Path
    manifest_path: Path
    size_bytes: int
    duration_s: float
    sha256: str
    catalog_written: bool

    @property
    def verified(self) -> bool:
        return self.status == "verified"


def required_space(database_size: int, db: DatabaseSettings) -> int:
    ratio = 1.0 if db.backups.compression == 0 else COMPRESSED_RATIO
    return int(database_size * ratio * db.backups.free_space_factor)


def check_free_space(folder: Path, database_size: int, db: DatabaseSettings) -> None:
    needed = required_space(database_size, db)
    free = shutil.disk_usage(folder).free
    if free < needed:
        ratio = 1.0 if db.backups.compression == 0 else COMPRESSED_RATIO
        raise BackupError(
            f"not enough free space in {folder} for a backup of {db.name}: need about {human_size(needed)} "
            f"(database {human_size(database_size)} x {ratio} compression estimate x free_space_factor "
            f"{db.backups.free_space_factor}), free {human_size(free)}; "
            "free some space or lower backups.free_space_factor"
        )


def _clean_leftovers(folder: Path) -> None:
    """Remove partial dumps and manifest-less data of interrupted runs (we hold the folder's lock)."""
    for info in scan(folder):
        if info.status == "partial":
            log.info("removing leftover %s of an interrupted backup", info.path.name)
            remove_path(info.path)


def _pg_dump_argv(db: DatabaseSettings, conninfo: str, target: Path, snapshot: str | None) -> list[str]:
    b = db.backups
    argv = [find_binary("pg_dump"), "--no-password", f"--format={b.format}", f"--compress={b.compression}",
            f"--file={target}"]
    if b.format == "directory" and b.jobs > 1:
        argv.append(f"--jobs={b.jobs}")
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    return [*argv, "--dbname", conninfo]


def _seal(path: Path) -> None:
    """Make the dump private (0600 files, 0700 directory) and durable (fsync every file, then the directory)."""
    if path.is_dir():
        for child in path.iterdir():
            if child.is_file():
                os.chmod(child, FILE_MODE)
                fsync_path(child)
    os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)
    fsync_path(path)


def _dump(db: DatabaseSettings, target: Path, snap: SourceSnapshot, cancel: threading.Event | None) -> float:
    """Run pg_dump into `target`; returns how long pg_dump itself took."""
    with libpq_connection(db.dsn, db) as conn:
        return run_command(
            _pg_dump_argv(db, conn.conninfo, target, snap.snapshot_id), env=conn.env, drop_env=conn.drop_env,
            timeout=db.backups.timeout.total_seconds(), cancel=cancel,
        ).duration_s


def _manifest(settings: Settings, db: DatabaseSettings, bid: str, started: datetime, snap: SourceSnapshot,
              digest: str, files: list[dict[str, Any]], duration: float, job_id: str | None) -> dict[str, Any]:
    config_text = None
    if settings.source:
        try:
            config_text = redact_config_text(Path(settings.source).read_text(encoding="utf-8"))
        except OSError as exc:
            log.warning("config file %s not copied into the manifest: %s", settings.source, exc.strerror)
    return {
        "manifest_version": MANIFEST_VERSION, "id": bid, "database": db.name, "status": "completed",
        "format": db.backups.format, "compression": db.backups.compression,
        "jobs": db.backups.jobs if db.backups.format == "directory" else 1,
        "started_at": manifest_time(started), "duration_s": duration,
        "finished_at": manifest_time(started + timedelta(seconds=duration)),
        "size_bytes": sum(int(f["size"]) for f in files), "sha256": digest, "files": files,
        "server_version": snap.server_version, "database_size_bytes": snap.database_size,
        "dbname": snap.dbname, "pg_dump_version": binary_version("pg_dump"), "indexd_version": __version__,
        "dsn": redact_dsn(db.dsn), "config_file": settings.source, "config": config_text,
        "job_id": job_id,
    }


def _take(settings: Settings, db: DatabaseSettings, folder: Path, bid: str, started: datetime,
          cancel: threading.Event | None, job_id: str | None) -> BackupInfo:
    partial = partial_path(folder, bid)
    final = data_path(folder, bid, db.backups.format)
    t0 = monotonic()
    with open_snapshot(db) as snap:
        check_free_space(folder, snap.database_size, db)
        counter = RowCounter(snap)
        counter.start()
        try:
            pg_dump_s = _dump(db, partial, snap, cancel)
        except BaseException:
            counter.stop()
            raise
        counter.join()
    _seal(partial)
    os.replace(partial, final)
    fsync_path(folder)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # pg_restore --list reads the table of contents while we checksum the data: both only read the dump.
        listing = (pool.submit(contextvars.copy_context().run, pg_restore_list, final)  # keeps the job id
                   if db.backups.verify.list_after_backup else None)
        digest, files = checksum_files(final)
        data = _manifest(settings, db, bid, started, snap, digest, files, monotonic() - t0, job_id)
        data.update(row_counts=counter.counts, table_counters=snap.counters, pg_dump_s=round(pg_dump_s, 3))
        if listing is not None:
            try:
                data["list_entries"] = listing.result()
                data.update(status="verified",
                            verified_at=manifest_time(started + timedelta(seconds=monotonic() - t0)))
            except BackupError as exc:
                data.update(status="failed", error=f"pg_restore --list failed: {exc}")
    data["duration_s"] = round(monotonic() - t0, 3)
    write_json_atomic(manifest_path(folder, bid), data)
    return info_from_manifest(manifest_path(folder, bid), data)


def _explain(exc: BaseException, folder: Path) -> str:
    """One line: libpq's message without the hint lines it adds (`Is the server running ...`)."""
    text = first_line(exc) if isinstance(exc, psycopg2.Error) else str(exc)
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in text
    if full:
        free = shutil.disk_usage(folder).free
        return f"disk full in {folder} ({human_size(free)} free): {text}"
    return text


def _failed_run(db: DatabaseSettings, folder: Path, bid: str, started: datetime, exc: BaseException) -> str:
    """Remove what the failed run wrote and record the failure (on disk, and in the catalog if reachable)."""
    for leftover in (partial_path(folder, bid), data_path(folder, bid, db.backups.format)):
        remove_path(leftover)
    message = f"backup {bid} of {db.name} failed: {redact_dsn(_explain(exc, folder))}"
    record_failure(folder, bid, started, message)
    record_in_catalog(db, BackupInfo(id=bid, database=db.name, started_at=started, status="failed",
                                     path=data_path(folder, bid, db.backups.format), format=db.backups.format,
                                     finished_at=utcnow(), error=message), unreachable_level=logging.INFO)
    return message


def run_backup(settings: Settings, db_settings: DatabaseSettings, *, now: datetime | None = None,
               cancel: threading.Event | None = None, job_id: str | None = None) -> BackupResult:
    """Take, checksum and verify one backup of `db_settings`; raise BackupError (nothing listed) on failure."""
    db = db_settings
    if not db.backups.enabled:
        raise BackupError(f"backups are disabled for {db.name} (backups.enabled: false)")
    try:
        folder = ensure_private_dir(backup_folder(db))
    except OSError as exc:
        message = (f"cannot use the backup folder {backup_folder(db)} of {db.name}: {exc.strerror}; "
                   "check backups.dir and its permissions")
        events.publish(events.BACKUP_FAILED, db.name, message, stage="folder")
        raise BackupError(message) from exc
    started = now or utcnow()
    bid = backup_id(db.name, started)
    extra = {"job_id": job_id, "database": db.name}
    with backup_lock(folder):
        _clean_leftovers(folder)
        if manifest_path(folder, bid).exists():
            raise BackupError(f"backup {bid} already exists; wait a second and run again")
        try:
            info = _take(settings, db, folder, bid, started, cancel, job_id)
        except (IndexdError, OSError, psycopg2.Error) as exc:
            message = _failed_run(db, folder, bid, started, exc)
            log.info("%s", message, extra=extra)  # the caller reports it: the job's ERROR line, the CLI's one line
            events.publish(events.BACKUP_FAILED, db.name, message, backup_id=bid, stage="dump")
            raise BackupError(message) from exc
    written = record_in_catalog(db, info)
    if info.status == "failed":  # written and listed as failed: retention removes it after the grace period
        log.error("backup %s of %s failed verification: %s", bid, db.name, info.error, extra=extra)
        events.publish(events.BACKUP_FAILED, db.name, f"backup {bid} failed verification: {info.error}",
                       backup_id=bid, stage="verify")
        raise BackupError(f"backup {bid} of {db.name} was written but failed verification: {info.error}")
    duration = float(info.manifest.get("duration_s") or 0)
    log.info("backup %s of %s %s, %s in %s", bid, db.name, info.status, human_size(info.size_bytes),
             human_duration(duration), extra=extra)
    return BackupResult(bid, db.name, info.status, info.path, manifest_path(folder, bid), info.size_bytes,
                        duration, info.sha256 or "", written)

