"""Dropping unused indexes (indexing.drop_unused): indexd's own only unless told otherwise, never one that
enforces something, each re-read right before, through the guards (window included) and audited."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.pool import Database
from indexd.db.standby import refuse_on_standby
from indexd.errors import StateMissing
from indexd.lifecycle.drop import drop_index_concurrently
from indexd.lifecycle.findings import Finding, HealthReport
from indexd.lifecycle.leader import Leadership, leading
from indexd.lifecycle.readings import CpuSampler, drop_decision, host_cpu_pct
from indexd.lifecycle.replica_scans import read_replicas
from indexd.state import recommendations
from indexd.state.migrations import current_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DropOutcome:
    schema: str
    index: str
    outcome: str  # dropped | refused | failed | skipped
    reason: str


_STILL_UNUSED = """
SELECT CASE WHEN c.relkind = 'I' THEN (SELECT coalesce(sum(pg_stat_get_numscans(t.relid)), 0)
                                       FROM pg_partition_tree(c.oid) t)
            ELSE coalesce(pg_stat_get_numscans(c.oid), 0) END = 0
       AND i.indisvalid AND NOT i.indisunique AND NOT i.indisprimary
       AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = c.oid AND con.contype IN ('p', 'u', 'x'))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid
 WHERE n.nspname = %s AND c.relname = %s
"""


def _still_unused(db: Database, schema: str, name: str) -> bool:
    """Re-read right before dropping: the index is still there, still unscanned (on every configured replica
    too, each of which must answer), still enforcing nothing."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(_STILL_UNUSED, (schema, name))
        row = cur.fetchone()
    if not (row and row[0]):
        return False
    for replica in read_replicas(db.settings):
        if replica.error is not None or replica.scans.get((schema, name), 0):
            return False
    return True


def _mark_reverted(db: Database, schema: str, name: str, reason: str) -> None:
    with db.connection() as conn:
        recommendations.revert_index(conn, db.settings.state_schema, schema, name, reason)


def drop_candidates(report: HealthReport, only_own: bool) -> list[Finding]:
    """Unused findings indexd may drop: old enough, enforcing nothing, and its own unless only_own is off."""
    return [f for f in report.unused if f.droppable and (f.own or not only_own)]


def drop_unused(
    db: Database,
    settings: Settings,
    db_settings: DatabaseSettings,
    report: HealthReport,
    now: datetime | None = None,
    job_id: str | None = None,
    *,
    leadership: Leadership | None = None,
    cpu: CpuSampler = host_cpu_pct,
) -> list[DropOutcome]:
    """Drop the report's unused indexes when drop_unused is enabled: indexd's own only (unless only_own is false),
    never one that backs a constraint or is unique, each through the guards (window included) and audited."""
    opts = db_settings.indexing.drop_unused
    if not opts.enabled:
        log.info("drop of unused indexes on %s: disabled (indexing.drop_unused.enabled)", db.name)
        return []
    refuse_on_standby(db, "drop of unused indexes")
    if current_version(db) is None:
        raise StateMissing(f"database {db.name} has no indexd state schema yet (the audit log): run 'indexd migrate'")
    outcomes: list[DropOutcome] = []
    with leading(db, leadership) as lead:
        for f in drop_candidates(report, opts.only_own):
            outcomes.append(_drop_one(db, settings, db_settings, lead, f, now or utcnow(), job_id, cpu))
    log.info("drop of unused indexes on %s: %d dropped, %d refused, %d failed", db.name,
             *(sum(1 for o in outcomes if o.outcome == k) for k in ("dropped", "refused", "failed")))
    return outcomes


def _drop_one(db: Database, settings: Settings, db_settings: DatabaseSettings, lead: Leadership, f: Finding,
              now: datetime, job_id: str | None, cpu: CpuSampler) -> DropOutcome:
    decision = drop_decision(db, settings, db_settings.indexing, lead, now, table=f"{f.schema}.{f.table}",
                             index_name=f.index, respect_window=True, cpu=cpu)
    if not decision.allowed:
        why = "; ".join(decision.reasons)
        log.info("not dropping unused %s.%s: %s", f.schema, f.index, why)
        return DropOutcome(f.schema, f.index, "refused", why)
    if not _still_unused(db, f.schema, f.index):
        return DropOutcome(f.schema, f.index, "skipped", "scanned, changed or gone since the report")
    reason = f"unused: 0 scans in {f.evidence['covered_days']} days of statistics"
    result = drop_index_concurrently(db, f.schema, f.index, reason=reason, action="drop_index", job_id=job_id)
    if not result.ok:
        return DropOutcome(f.schema, f.index, "failed", result.reason or "drop failed")
    if f.own:
        _mark_reverted(db, f.schema, f.index, reason)
    return DropOutcome(f.schema, f.index, "dropped", reason)

