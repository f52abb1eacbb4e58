"""Building a recommended index without blocking the application: CREATE INDEX CONCURRENTLY.

The statement runs on a dedicated autocommit connection with lock_timeout (so the build gives up rather than
queue the application behind it), statement_timeout and maintenance_work_mem set, and is audited before and
after on a separate connection, so the audit survives a crash in the middle. A failed build leaves an INVALID
index behind: it is dropped at once, except after a lock timeout (the drop would wait for the same locks a
second time: see `deferred`), and else by `cleanup_invalid` in the next run. An index on a partitioned table
cannot be built CONCURRENTLY: `partitioned.py` builds it partition by partition.

These functions check the guards only between the steps of a partitioned build: `apply` asks every guard
right before it calls them.
"""

from __future__ import annotations

import contextlib
import logging
import time

import psycopg2
from pglast import ast, parse_sql
from pglast.parser import ParseError
from psycopg2 import sql

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, IndexingSettings, ThrottleSettings
from indexd.db.pool import Database, PgConnection
from indexd.errors import BuildError
from indexd.lifecycle.ddl import (
    BuildFailure,
    BuildResult,
    ProgressCallback,
    ProgressPoller,
    Settle,
    audit_write,
    classify_build_failure,
    index_size,
    index_state,
    prepare_session,
    settle_failure,
)
from indexd.lifecycle.deferred import defer_drop
from indexd.lifecycle.drop import drop_index_concurrently
from indexd.lifecycle.latency import BuildWatch, LatencyProbe, partition_gate
from indexd.lifecycle.leader import Leadership
from indexd.lifecycle.partitioned import Checkpoint, build_partitioned, is_partitioned
from indexd.state import audit, recommendations
from indexd.state.pause import active_pause
from indexd.state.recommendation_rows import StoredRecommendation
from indexd.state.statuses import Status

log = logging.getLogger(__name__)


def check_create_sql(rec: StoredRecommendation) -> None:
    """Refuse anything but one CREATE INDEX CONCURRENTLY of the recommended name on the recommended table."""
    try:
        stmts = parse_sql(rec.create_sql)
    except ParseError as exc:
        raise BuildError(f"recommendation #{rec.id}: create_sql does not parse: {exc}") from exc
    stmt = stmts[0].stmt if len(stmts) == 1 else None
    problems = []
    if not isinstance(stmt, ast.IndexStmt):
        problems.append("is not a single CREATE INDEX")
    else:
        if not stmt.concurrent:
            problems.append("is not CONCURRENTLY (it would block writes)")
        if stmt.idxname != rec.index_name:
            problems.append(f"names the index {stmt.idxname!r}, not {rec.index_name!r}")
        rel = stmt.relation
        target = (None, None) if rel is None else (rel.schemaname or rec.table_schema, rel.relname)
        if target != (rec.table_schema, rec.table_name):
            problems.append(f"targets {target[0]}.{target[1]}, not {rec.table}")
    if problems:
        raise BuildError(f"recommendation #{rec.id}: create_sql {'; '.join(problems)}: {rec.create_sql}")



def still_allowed(db: Database, leadership: Leadership | None, probe: LatencyProbe | None = None,
                  throttle: ThrottleSettings | None = None) -> Checkpoint:
    """The check between two steps of a partitioned build: an emergency pause, or leadership lost (when the
    build runs under one), stops it; a slow latency probe holds the next step back, for a while (latency.py)."""
    under_load = partition_gate(probe, throttle or db.settings.indexing.throttle)

    def check() -> str | None:
        with db.connection(autocommit=True) as conn:
            paused = active_pause(conn, db.settings.state_schema, utcnow())
        if paused is not None:
            return paused.describe()
        if leadership is not None and not leadership.held():
            return "not the leader any more: another indexd process holds this database's leader lock"
        return under_load()

    return check


def build_index(
    db: Database,
    rec: StoredRecommendation,
    settings: DatabaseSettings,
    *,
    job_id: str | None = None,
    progress: ProgressCallback | None = None,
    leadership: Leadership | None = None,
    unapproved: bool = False,
    probe: LatencyProbe | None = None,
) -> BuildResult:
    """Build one recommended index with CREATE INDEX CONCURRENTLY; never raises for a failed build.

    The recommendation is claimed first (approved, or with `unapproved` (mode auto) workload advice nobody
    decided on). On success: ANALYZE the table, record the size, status `built`. On lock timeout: status back
    to what it was (retried on a later run); a run cut off (connection lost, server restart, cancel) leaves it
    `interrupted`, queued again until indexing.build_attempts; any other failure is the index's own: `failed`.
    The INVALID leftover of a failure is dropped (audited), after a lock timeout by the next run's cleanup
    (see `deferred`). On a partitioned table the build goes partition by
    partition (see partitioned.py), stopping when a pause begins or the `leadership` it runs under is lost.
    With a latency `probe`, a plain build is cancelled (and given back) when the latency stays critical, and a
    partitioned one holds back between partitions while it is high (latency.py).
    """
    check_create_sql(rec)
    schema, ix = db.settings.state_schema, settings.indexing
    previous = audit_write(db, lambda c: recommendations.claim(c, schema, rec.id, unapproved=unapproved))
    if previous is None:
        return BuildResult(rec.table_schema, rec.index_name, "skipped", "another build or decision took it first",
                           recommendation_id=rec.id)
    try:
        conn = db.dedicated_connection(autocommit=True)
        try:
            return _build_on(db, conn, rec, settings, previous, job_id, progress, leadership, probe)
        finally:
            conn.close()
    except psycopg2.Error as exc:  # before the build started (connecting, preparing): nothing of the index ran
        failure = classify_build_failure(exc, lock_timeout_s=ix.lock_timeout.total_seconds(),
                                         build_timeout_s=ix.build_timeout.total_seconds(), duration_s=0.0)
        if failure.settle is Settle.FAIL:  # not the index's fault: it was never tried
            failure = BuildFailure(failure.reason, Settle.RELEASE)
        log.warning("could not start building %s: %s", rec.index_name, failure.reason)
        again = True
        with contextlib.suppress(psycopg2.Error):
            again = settle_failure(db, rec.id, previous, failure, ix.build_attempts)
        return BuildResult(rec.table_schema, rec.index_name, "failed", failure.reason, recommendation_id=rec.id,
                           retry_later=again)


def _build_on(db: Database, conn: PgConnection, rec: StoredRecommendation, settings: DatabaseSettings,
              previous: Status, job_id: str | None, progress: ProgressCallback | None,
              leadership: Leadership | None, probe: LatencyProbe | None) -> BuildResult:
    schema, ix = db.settings.state_schema, settings.indexing
    lock_s = ix.lock_timeout.total_seconds()
    pid = prepare_session(conn, lock_timeout_s=lock_s, statement_timeout_s=ix.build_timeout.total_seconds(),
                          maintenance_work_mem=int(ix.maintenance_work_mem),
                          parallel_workers=ix.throttle.build_parallel_workers)
    settled = _settle_existing(db, conn, rec, previous, job_id)
    if settled is not None:
        return settled
    if is_partitioned(conn, rec.table_schema, rec.table_name):
        return build_partitioned(db, conn, rec, pid=pid, settings=ix, previous=previous, job_id=job_id,
                                 progress=progress, checkpoint=still_allowed(db, leadership, probe, ix.throttle))
    before = {"action": "create_index", "index_schema": rec.table_schema, "index_name": rec.index_name,
              "backend_pid": pid,
              "table": f"{rec.table_schema}.{rec.table_name}", "status": previous,
              "estimated_size_bytes": rec.estimated_size_bytes, "improvement_pct": rec.improvement_pct}
    intent = audit_write(db, lambda c: audit.record_intent(
        c, schema, action="create_index", target=f"{rec.table_schema}.{rec.index_name}", sql=rec.create_sql,
        reason=f"recommendation #{rec.id}", before=before, recommendation_id=rec.id, job_id=job_id))
    started = time.monotonic()
    watch = BuildWatch(probe, db, pid, ix.throttle, rec.index_name)
    try:
        with ProgressPoller(db, pid, rec.index_name, progress), watch, conn.cursor() as cur:
            cur.execute(rec.create_sql)
    except psycopg2.Error as exc:
        failure = classify_build_failure(exc, lock_timeout_s=lock_s, build_timeout_s=ix.build_timeout.total_seconds(),
                                         duration_s=time.monotonic() - started)
        if watch.fired:  # our own cancel under load: not the index's fault, not an interrupted run
            failure = BuildFailure(watch.fired, Settle.RELEASE)
        return _build_failed(db, conn, rec, failure, previous, intent, time.monotonic() - started, ix, job_id)
    duration = time.monotonic() - started
    _analyze(conn, rec)
    size = index_size(conn, rec.table_schema, rec.index_name)
    audit_write(db, lambda c: recommendations.mark_built(c, schema, rec.id), patient=True)
    audit_write(db, lambda c: audit.record_outcome(c, schema, intent, outcome="succeeded", duration_s=duration,
                                              after={"size_bytes": size, "valid": True}),
                patient=True)
    log.info("built %s.%s in %.1fs (%s bytes)", rec.table_schema, rec.index_name, duration, size)
    return BuildResult(rec.table_schema, rec.index_name, "succeeded", None, duration, size, rec.id, intent)


def _settle_existing(db: Database, conn: PgConnection, rec: StoredRecommendation, previous: Status,
                     job_id: str | None) -> BuildResult | None:
    """An index of the recommended name already there: valid, the work is done; INVALID (an earlier build's
    leftover), it is dropped first. None: go on building."""
    schema = db.settings.state_schema
    existing = index_state(conn, rec.table_schema, rec.index_name)
    if existing is not None and existing.valid:
        audit_write(db, lambda c: recommendations.mark_built(c, schema, rec.id))
        return BuildResult(rec.table_schema, rec.index_name, "skipped", "the index already exists and is valid",
                           size_bytes=index_size(conn, rec.table_schema, rec.index_name), recommendation_id=rec.id)
    if existing is not None:
        dropped = drop_index_concurrently(db, rec.table_schema, rec.index_name, job_id=job_id,
                                          reason="INVALID leftover of an earlier build", recommendation_id=rec.id)
        if not dropped.ok:
            reason = f"an INVALID leftover of an earlier build could not be dropped: {dropped.reason}"
            audit_write(db, lambda c: recommendations.release(c, schema, rec.id, previous, reason))
            return BuildResult(rec.table_schema, rec.index_name, "failed", reason, recommendation_id=rec.id,
                               retry_later=True)
    return None


def _leftover_after_failure(db: Database, conn: PgConnection, rec: StoredRecommendation, failure: BuildFailure,
                            job_id: str | None) -> None:
    """Drop the INVALID leftover of a failed build now, or, when the build gave up at lock_timeout, leave it
    (audited as deferred) to the next run's cleanup instead of waiting for the same locks again."""
    if not failure.lock_timeout:
        drop_index_concurrently(db, rec.table_schema, rec.index_name, reason=f"INVALID leftover: {failure.reason}",
                                recommendation_id=rec.id, job_id=job_id, if_exists=True)
    elif index_state(conn, rec.table_schema, rec.index_name) is not None:
        defer_drop(db, rec.table_schema, rec.index_name,
                   why=f"INVALID leftover of a build that gave up: {failure.reason}", recommendation_id=rec.id,
                   job_id=job_id)


def _analyze(conn: PgConnection, rec: StoredRecommendation) -> None:
    """Fresh statistics for the planner (expression indexes get their own); a failure costs only freshness."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(rec.table_schema),
                                                        sql.Identifier(rec.table_name)))
    except psycopg2.Error as exc:
        log.warning("ANALYZE of %s after building %s failed (autovacuum will do it): %s", rec.table,
                    rec.index_name, str(exc).strip())


def _build_failed(db: Database, conn: PgConnection, rec: StoredRecommendation, failure: BuildFailure,
                  previous: Status, intent: int, duration: float, ix: IndexingSettings,
                  job_id: str | None) -> BuildResult:
    schema, reason, retry = db.settings.state_schema, failure.reason, failure.settle is not Settle.FAIL
    log.warning("building %s.%s failed: %s", rec.table_schema, rec.index_name, reason)
    try:
        audit_write(db, lambda c: audit.record_outcome(c, schema, intent, outcome="failed", duration_s=duration,
                                                  reason=reason), patient=True)
        retry = settle_failure(db, rec.id, previous, failure, ix.build_attempts)
    except psycopg2.Error:
        log.error("could not record the failed build of %s; start-up cleanup will", rec.index_name, exc_info=True)
    if not conn.closed:
        _leftover_after_failure(db, conn, rec, failure, job_id)
    return BuildResult(rec.table_schema, rec.index_name, "failed", reason, duration, None, rec.id, intent, retry)

