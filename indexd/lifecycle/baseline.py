"""Workload snapshots around index builds, so that verification has its two windows.

Verification compares an index's statements before and after its build from snapshots of pg_stat_statements
(lifecycle/verify.py). The daemon's capture job takes them on a schedule, but a build started by `apply` right
after a workload ran (or by a daemon whose capture has not run yet) would have no snapshot on one side of it.
So every apply round takes one right before its first build and one right after each build: the "before"
window then ends at a snapshot, and the "after" window starts at one.
"""

from __future__ import annotations

import logging

import psycopg2

from indexd.db.pool import Database
from indexd.errors import IndexdError, first_line
from indexd.workload.capture import SnapshotInfo, take_snapshot

log = logging.getLogger(__name__)


def snapshot_around_build(db: Database, moment: str) -> SnapshotInfo | None:
    """Take a workload snapshot `moment` ("before building", "after building x"); a failure costs only the
    verdict's evidence, never the build: it is logged and None is returned."""
    try:
        snap = take_snapshot(db)
    except (IndexdError, psycopg2.Error) as exc:
        log.warning("no workload snapshot %s on %s (%s): verification may lack a baseline for it", moment, db.name,
                    first_line(exc))
        return None
    log.info("workload snapshot %s %s on %s: %d statements", snap.id, moment, db.name, snap.statements)
    return snap
