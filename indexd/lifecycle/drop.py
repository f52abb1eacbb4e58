"""Dropping an index without blocking the application: DROP INDEX CONCURRENTLY, audited before and after.

An index on a partitioned table is the exception: PostgreSQL cannot drop it CONCURRENTLY. It is dropped with a
plain DROP INDEX under the short lock_timeout instead, which takes an ACCESS EXCLUSIVE lock on the parent table
and on each partition for the moment the catalog changes (the audit reason says so). That drop also removes
every partition index attached to it.

This function does not check the guards: its callers (verification, drop_unused, cleanup) do.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg2
from psycopg2 import sql

from indexd.db.pool import Database
from indexd.lifecycle.ddl import (
    BuildResult,
    audit_write,
    describe_failure,
    index_size,
    index_state,
    prepare_session,
)
from indexd.state import audit

log = logging.getLogger(__name__)

PARTITIONED_DROP_NOTE = ("partitioned index: DROP INDEX CONCURRENTLY is not supported, plain DROP INDEX under "
                         "lock_timeout locks the table and its partitions briefly")


def drop_index_concurrently(
    db: Database,
    schema: str,
    index_name: str,
    *,
    reason: str,
    action: str = "drop_index",
    recommendation_id: int | None = None,
    job_id: str | None = None,
    if_exists: bool = True,
) -> BuildResult:
    """DROP INDEX CONCURRENTLY IF EXISTS (a plain DROP INDEX for a partitioned index), audited; its definition
    is kept in `before`, so it can be rebuilt.

    Uses the database's indexing.lock_timeout; never raises for a failed drop (see the result).
    """
    state, ix = db.settings.state_schema, db.settings.indexing
    lock_s = ix.lock_timeout.total_seconds()
    conn = db.dedicated_connection(autocommit=True)
    try:
        pid = prepare_session(conn, lock_timeout_s=lock_s, statement_timeout_s=ix.build_timeout.total_seconds())
        found = index_state(conn, schema, index_name)
        partitioned = found is not None and found.partitioned
        statement = sql.SQL("DROP INDEX {}{}{}.{}").format(
            sql.SQL("") if partitioned else sql.SQL("CONCURRENTLY "),
            sql.SQL("IF EXISTS ") if if_exists else sql.SQL(""), sql.Identifier(schema), sql.Identifier(index_name))
        text = statement.as_string(conn)
        before: dict[str, Any] = {"action": action, "index_schema": schema, "index_name": index_name,
                                  "existed": found is not None, "backend_pid": pid}
        if found is not None:
            before.update(definition=found.definition, valid=found.valid, partitioned=partitioned,
                          size_bytes=index_size(conn, schema, index_name))
        why = f"{reason} ({PARTITIONED_DROP_NOTE})" if partitioned else reason
        intent = audit_write(db, lambda c: audit.record_intent(
            c, state, action=action, target=f"{schema}.{index_name}", sql=text, reason=why, before=before,
            recommendation_id=recommendation_id, job_id=job_id))
        started = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        except psycopg2.Error as exc:
            failure, retry = describe_failure(exc, lock_s)
            log.warning("dropping %s.%s failed: %s", schema, index_name, failure)
            audit_write(db, lambda c: audit.record_outcome(c, state, intent, outcome="failed", reason=failure,
                                                           duration_s=time.monotonic() - started), patient=True)
            return BuildResult(schema, index_name, "failed", failure, time.monotonic() - started,
                               recommendation_id=recommendation_id, intent_id=intent, retry_later=retry)
        duration = time.monotonic() - started
        audit_write(db, lambda c: audit.record_outcome(c, state, intent, outcome="succeeded", duration_s=duration,
                                                       after={"existed": found is not None}), patient=True)
        log.info("dropped %s.%s (%s)", schema, index_name, why)
        return BuildResult(schema, index_name, "succeeded", reason, duration, recommendation_id=recommendation_id,
                           intent_id=intent)
    finally:
        conn.close()
