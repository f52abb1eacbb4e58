"""The backups on disk (manifests are the source of truth), the catalog mirror in the state schema,
pruning by the retention decision, and the readings the metrics export."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors

from indexd.backup.manifest import (
    FOREIGN,
    MANIFEST_SUFFIX,
    PARTIAL_PREFIX,
    PARTIAL_SUFFIX,
    BackupInfo,
    check_name,
)
from indexd.backup.retention import Decision, decide, policy_from_settings
from indexd.backup.trial import last_trial
from indexd.backup.vetting import require_own, vet_manifest
from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.conninfo import connect_kwargs
from indexd.dsn import redact_dsn
from indexd.errors import BackupError, UsageError, first_line
from indexd.private import ensure_private_dir
from indexd.state.backups import CatalogRow, upsert_backup

log = logging.getLogger(__name__)

FAILURES_FILE = ".failures.jsonl"
_FAILURES_KEPT = 100
_DATA_SUFFIXES = (".dump", ".dir")


def backup_folder(db: DatabaseSettings) -> Path:
    """Where the backups of one configured database live: `<backups.dir>/<name>`."""
    return Path(db.backups.dir) / check_name(db.name)


def backup_roots(settings: Settings) -> list[Path]:
    """Every distinct backups.dir of the configuration (the global one and per-database overrides)."""
    roots = [Path(settings.backups.dir)] + [Path(d.backups.dir) for d in settings.databases]
    return list(dict.fromkeys(roots))


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.lstat().st_mtime, UTC)


def scan(folder: Path, *, leftovers: bool = True) -> list[BackupInfo]:
    """The backups in one database's folder: every readable manifest (foreign ones as status 'foreign', see
    `vetting`), and (for retention) partial or orphaned dumps that have none, as status 'partial'."""
    if not folder.is_dir():
        return []
    found: dict[str, BackupInfo] = {}
    manifests = sorted(folder.glob(f"*{MANIFEST_SUFFIX}"))
    # A dump whose manifest exists but cannot be read is damaged, not a leftover: never offer it for deletion.
    named = {p.name[: -len(MANIFEST_SUFFIX)] for p in manifests}
    for path in manifests:
        try:
            info = vet_manifest(folder, path)
        except BackupError as exc:
            log.warning("%s", exc)
            continue
        found[info.id if info.status != FOREIGN else f"{path.name} (foreign)"] = info
    if not leftovers:
        return list(found.values())
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith(PARTIAL_PREFIX) and name.endswith(PARTIAL_SUFFIX):
            bid = name[len(PARTIAL_PREFIX):-len(PARTIAL_SUFFIX)]
        elif path.suffix in _DATA_SUFFIXES and not name.startswith("."):
            bid = name[: -len(path.suffix)]
            if bid in named:
                continue
        else:
            continue
        linked = path.is_symlink()  # a link is never followed, nor removed as if it were our leftover
        found.setdefault(f"{bid} (leftover {name})", BackupInfo(
            id=bid, database=folder.name, started_at=_mtime(path), status=FOREIGN if linked else "partial",
            path=path, error="a leftover that is a symbolic link" if linked else None,
        ))
    return list(found.values())


def list_backups(settings: Settings, database: str | None = None) -> list[BackupInfo]:
    """Completed backups (those with a manifest), from every backups dir; no database connection."""
    result: list[BackupInfo] = []
    for root in backup_roots(settings):
        folders = [root / check_name(database)] if database else (sorted(root.iterdir()) if root.is_dir() else [])
        for folder in folders:
            if folder.is_dir():
                result.extend(scan(folder, leftovers=False))
    unique = {(b.path, b.id): b for b in result}
    return sorted(unique.values(), key=lambda b: (b.database, b.started_at))


def find_backup(settings: Settings, backup_id: str) -> BackupInfo:
    """The backup with this id, from its manifest alone (works when the source database is gone). A foreign
    manifest claiming the id of one of ours never hides ours; alone, it is returned (and refused by its users)."""
    found = sorted((b for b in list_backups(settings) if b.id == backup_id), key=lambda b: b.status == FOREIGN)
    if found:
        return found[0]
    dirs = ", ".join(str(r) for r in backup_roots(settings))
    raise UsageError(f"no backup {backup_id!r} in {dirs} (see 'indexd backup list')")


@contextlib.contextmanager
def backup_lock(folder: Path) -> Iterator[None]:
    """One backup at a time per database folder, across processes (the lock goes when the process dies)."""
    ensure_private_dir(folder)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup of {folder.name!r} is running (lock {folder}/.lock)") from None
        yield
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    """Delete a dump file or directory; one already gone (another prune got there first) is fine."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def delete_backup(info: BackupInfo) -> None:
    """The manifest goes first (the backup stops existing at once), then its data. Never a foreign one."""
    require_own(info, "delete")
    if info.manifest_path is not None:
        with contextlib.suppress(FileNotFoundError):
            info.manifest_path.unlink()
    remove_path(info.path)


def prune(db: DatabaseSettings, *, now: datetime | None = None, dry_run: bool = False) -> list[Decision]:
    """Apply the retention decision to one database's folder; returns every decision (kept and deleted).

    No lock is needed: a running backup's partial dump is younger than the grace period (the backup timeout)
    and is therefore kept, and the backup's manifest does not exist until it is complete."""
    folder = backup_folder(db)
    decisions = decide(scan(folder), now or utcnow(), policy_from_settings(db.backups))
    for d in decisions:
        if d.keep or dry_run or d.backup.status == FOREIGN:
            continue
        log.info("deleting backup %s of %s: %s", d.backup.id, db.name, d.reason)
        delete_backup(d.backup)
        if d.backup.status != "partial":
            record_in_catalog(db, d.backup, status="deleted")
    gone = sum(1 for d in decisions if not d.keep)
    log.info("backup retention of %s: %d kept, %d %s", db.name, len(decisions) - gone, gone,
             "would be deleted" if dry_run else "deleted")
    return decisions


# ---- failures kept on disk (a failed run has no manifest, and its database may be unreachable) ----------
def record_failure(folder: Path, bid: str, at: datetime, error: str) -> None:
    path = folder / FAILURES_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()[-(_FAILURES_KEPT - 1):] if path.exists() else []
        lines.append(json.dumps({"id": bid, "at": at.isoformat(), "error": redact_dsn(error)}))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(path, 0o600)
    except OSError as exc:
        log.warning("cannot record the failure of backup %s in %s: %s", bid, path, exc)


def failures(folder: Path) -> list[dict[str, Any]]:
    path = folder / FAILURES_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


# ---- the catalog mirror in the state schema -------------------------------------------------------------
def record_in_catalog(db: DatabaseSettings, info: BackupInfo, *, status: str | None = None,
                      unreachable_level: int = logging.WARNING) -> bool:
    """Mirror a backup into the database's `backups` table. Best effort: False (and a warning) on failure; an
    unreachable database is logged at `unreachable_level` (a backup that failed for that says so already)."""
    test = last_trial(info.manifest)
    row = CatalogRow(id=info.id, database=info.database, started_at=info.started_at,
                     finished_at=info.finished_at, status=status or info.status, format=info.format,
                     path=str(info.path), size_bytes=info.size_bytes or None, sha256=info.sha256,
                     verified_at=info.verified_at, error=info.error, manifest=info.manifest or None,
                     test_restore_at=test.at if test else None, test_restore_result=test.result if test else None,
                     test_restore_detail=test.detail if test else None)
    kwargs = connect_kwargs(db)
    kwargs["connect_timeout"] = "5"
    try:
        conn = psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        log.log(unreachable_level, "catalog row for backup %s not written: %s unreachable (%s); the manifest on "
                "disk stands", info.id, db.name, redact_dsn(first_line(exc)))
        return False
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL statement_timeout = '10s'; SET LOCAL lock_timeout = '2s'")
            upsert_backup(conn, db.state_schema, row)
        return True
    except psycopg2.errors.ReadOnlySqlTransaction:
        log.info("catalog row for backup %s not written: %s is a standby (read-only); the manifest on disk stands",
                 info.id, db.name)
        return False
    except psycopg2.Error as exc:
        log.warning("catalog row for backup %s not written to %s.%s.backups (%s); the manifest on disk stands",
                    info.id, db.name, db.state_schema, first_line(exc))
        return False
    finally:
        conn.close()


# ---- readings for metrics -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupReadings:
    database: str
    last_success: datetime | None
    last_size_bytes: int | None
    last_duration_s: float | None
    last_verified: datetime | None
    backups: int  # completed backups on disk
    failures: int  # failed runs on record (failure log + failed manifests)
    consecutive_failures: int  # failed runs since the last success


def _readings(db: DatabaseSettings, infos: Sequence[BackupInfo]) -> BackupReadings:
    good = sorted((b for b in infos if b.status in ("completed", "verified")), key=lambda b: b.started_at)
    bad = [b for b in infos if b.status == "failed"]
    runs = failures(backup_folder(db))
    last = good[-1] if good else None
    since = last.started_at if last else None
    failed_times = [b.started_at for b in bad] + [datetime.fromisoformat(r["at"]) for r in runs if "at" in r]
    verified = [b.verified_at for b in infos if b.verified_at]
    return BackupReadings(
        database=db.name,
        last_success=(last.finished_at or last.started_at) if last else None,
        last_size_bytes=last.size_bytes if last else None,
        last_duration_s=float(last.manifest.get("duration_s") or 0) if last else None,
        last_verified=max(verified) if verified else None,
        backups=len(good),
        failures=len(failed_times),
        consecutive_failures=sum(1 for t in failed_times if since is None or t > since),
    )


def backup_readings(settings: Settings) -> dict[str, BackupReadings]:
    """Per configured database: last success, size, duration, failures, from the disk (no connection)."""
    out = {}
    for db in settings.databases:
        try:
            out[db.name] = _readings(db, scan(backup_folder(db), leftovers=False))
        except (OSError, BackupError) as exc:
            log.warning("backup readings for %s unavailable: %s", db.name, exc)
    return out
