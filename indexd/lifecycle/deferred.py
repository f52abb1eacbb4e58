"""Drops deferred after a build gave up at lock_timeout.

When CREATE INDEX CONCURRENTLY gives up waiting for a lock, dropping its INVALID leftover right behind it would
wait for the very same locks a second time: the application could queue behind indexd's DDL for twice
lock_timeout in one run. The drop is deferred instead, written to the audit log as a `drop_index` with outcome
`skipped` and a reason starting "deferred", and done by `cleanup_invalid` in a later run (every apply round runs
it first, the daemon at start-up too), when the lock may be free.
"""

from __future__ import annotations

import logging

from indexd.db.pool import Database
from indexd.lifecycle.ddl import audit_write
from indexd.state import audit

log = logging.getLogger(__name__)

DEFERRED = "deferred"


def defer_drop(db: Database, schema: str, name: str, *, why: str, recommendation_id: int | None = None,
               job_id: str | None = None) -> None:
    """Record (audited) that the leftover `schema.name` is not dropped now but by the next run's cleanup."""
    state = db.settings.state_schema
    reason = (f"{DEFERRED}: {why}; not dropped right behind the build, which would wait for the same locks a "
              "second time: the next run's cleanup drops it")
    audit_write(db, lambda c: audit.record_event(
        c, state, action="drop_index", target=f"{schema}.{name}", outcome="skipped", reason=reason,
        before={"action": "drop_index", "index_schema": schema, "index_name": name, DEFERRED: True},
        recommendation_id=recommendation_id, job_id=job_id), patient=True)
    log.info("drop of %s.%s deferred to the next run's cleanup: %s", schema, name, why)
