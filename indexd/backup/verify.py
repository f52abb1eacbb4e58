"""Verifying a backup's checksum(s) and table of contents (`pg_restore --list`) again.

This is one fact about a backup (`verified_at`: when its checksum last matched); the test restore into a
scratch database is another (backup/scratch.py, `restore_test` in the manifest). A matching checksum never
clears a data problem the last test restore found."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from indexd.backup.catalog import scan
from indexd.backup.manifest import FOREIGN, BackupInfo, checksum_problems, update_manifest
from indexd.backup.restore import pg_restore_list
from indexd.backup.trial import last_trial, status_after
from indexd.backup.vetting import require_own
from indexd.clock import monotonic, utcnow
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
    status: str = ""  # the backup's status afterwards (failed while its last test restore found a data problem)

    @property
    def held_failed(self) -> bool:
        """The checksum matched, yet the backup stays failed: its last test restore found a data problem."""
        return self.ok and self.status == "failed"


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
    ok, status = not problems, "failed"
    if ok:
        trial = last_trial(info.manifest)
        status = status_after(info.status, checksum_ok=True, last_test=trial.result if trial else None)
        # A data problem the last test restore found stands until a test restore passes again.
        update_manifest(info, status=status, verified_at=now or utcnow(), error=info.error if status == "failed"
                        else None)
        log.info("backup %s: checksum matches, %d entries readable%s", backup_id, entries,
                 "" if status == "verified" else f"; it stays failed: {info.error}")
    else:
        update_manifest(info, status="failed", error="; ".join(problems))
        log.error("backup %s failed verification: %s", backup_id, "; ".join(problems))
    return VerifyResult(backup_id, ok, checksum_ok, entries, tuple(problems), monotonic() - started, status)
