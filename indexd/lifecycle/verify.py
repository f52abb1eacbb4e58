"""Verification of the indexes indexd built: gather the evidence (snapshots before and after the build, the
index's own scans), ask `verdict.judge`, store the verdict per index, keep the good ones and revert the harmful
ones through the guards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg2 import sql

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, IndexingSettings, Settings, VerifySettings
from indexd.db.pool import Database, PgConnection
from indexd.db.standby import refuse_on_standby
from indexd.lifecycle import announce
from indexd.lifecycle.ddl import OWN_PREFIX
from indexd.lifecycle.drop import drop_index_concurrently
from indexd.lifecycle.leader import Leadership, leading
from indexd.lifecycle.readings import CpuSampler, drop_decision, host_cpu_pct
from indexd.lifecycle.verdict import (
    SnapshotRow,
    Verdict,
    VerdictName,
    cumulative_stats,
    has_baseline,
    judge,
    statement_stats,
    target_keys,
    window_stats,
)
from indexd.state import recommendation_rows, recommendations
from indexd.state.recommendation_rows import BuiltIndex
from indexd.state.verdicts import insert_verdict

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class VerdictRecord:
    """What verification decided and did about one index."""

    recommendation_id: int
    index_schema: str
    index_name: str
    verdict: VerdictName
    reasons: tuple[str, ...]
    action: str  # kept | dropped | revert_refused | revert_failed | revert_off | wait | none
    evidence: dict[str, Any]


_SNAPSHOT_ROWS = """
SELECT s.id, s.taken_at, s.stats_reset, ss.queryid, ss.userid, ss.toplevel, ss.query, ss.calls, ss.total_exec_time
  FROM {s}.snapshots s JOIN {s}.statement_snapshots ss ON ss.snapshot_id = s.id
 WHERE s.taken_at >= %s AND s.taken_at <= %s AND (ss.queryid = ANY(%s) OR ss.query ILIKE %s)
"""


def _like(table: str) -> str:
    """An ILIKE pattern for statements naming the table (a cheap pre-filter; `statement_stats` decides)."""
    return "%" + table.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _window(conn: PgConnection, schema: str, start: datetime, end: datetime, ids: set[int],
            table: str) -> dict[int, tuple[str, int, float]]:
    like = _like(table)
    with conn.cursor() as cur:
        cur.execute(sql.SQL(_SNAPSHOT_ROWS).format(s=sql.Identifier(schema)), (start, end, list(ids), like))
        rows = [SnapshotRow(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), bool(r[5]), r[6], int(r[7]), float(r[8]))
                for r in cur.fetchall()]
        cur.execute(sql.SQL("SELECT id, taken_at, stats_reset FROM {}.snapshots WHERE taken_at >= %s"
                            " AND taken_at <= %s").format(sql.Identifier(schema)), (start, end))
        snapshots = [(int(r[0]), r[1], r[2]) for r in cur.fetchall()]
    return window_stats(rows, snapshots)


def index_scans(conn: PgConnection, schema: str, name: str) -> tuple[bool, bool, int, datetime | None]:
    """(exists, valid, scans, the database's last statistics reset) of an index, from a fresh statistics snapshot.
    A partitioned index is never scanned itself: its scans are those of its partitions' indexes."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT i.indisvalid, CASE WHEN c.relkind = 'I' THEN (SELECT coalesce(sum(pg_stat_get_numscans(t.relid)),"
            " 0) FROM pg_partition_tree(c.oid) t) ELSE coalesce(pg_stat_get_numscans(c.oid), 0) END,"
            " (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE n.nspname = %s AND c.relname = %s", (schema, name))
        row = cur.fetchone()
    return (False, False, 0, None) if row is None else (True, bool(row[0]), int(row[1]), row[2])


def gather(conn: PgConnection, state_schema: str, item: BuiltIndex, lookback: timedelta, now: datetime,
           settings: VerifySettings) -> Verdict:
    """The verdict on one built index, from the snapshots around its build and its own scan counter.

    The "after" window starts at the build, or at a later statistics reset: the scan counter only covers the
    time since then, so statements that ran before it say nothing about the index's use.
    """
    exists, valid, scans, stats_reset = index_scans(conn, item.schema, item.index_name)
    after_start = max(item.built_at, stats_reset) if stats_reset else item.built_at
    window = {"before": [(item.build_started - lookback).isoformat(), item.build_started.isoformat()],
              "after": [after_start.isoformat(), now.isoformat()]}
    if not exists or not valid:
        what = "no longer exists" if not exists else "is invalid"
        return Verdict("reverted", (f"the index {what}",), {"exists": exists, "valid": valid, "windows": window})
    ids, texts = target_keys(item.queries)
    before = statement_stats(_window(conn, state_schema, item.build_started - lookback, item.build_started, ids,
                                     item.table), ids, texts, item.table)
    baseline = "look-back"
    if not has_baseline(before, settings.min_calls):
        since_reset = _since_reset(conn, state_schema, item.build_started, ids, item.table)
        if since_reset is not None:
            before, baseline = statement_stats(since_reset[0], ids, texts, item.table), since_reset[1]
    after = _window(conn, state_schema, after_start, now, ids, item.table)
    verdict = judge(before, statement_stats(after, ids, texts, item.table), scans, settings)
    return Verdict(verdict.verdict, verdict.reasons, {**verdict.evidence, "windows": window, "baseline": baseline})


_LAST_BEFORE = """
SELECT s.id, s.taken_at, s.stats_reset, ss.queryid, ss.userid, ss.toplevel, ss.query, ss.calls, ss.total_exec_time
  FROM {s}.snapshots s JOIN {s}.statement_snapshots ss ON ss.snapshot_id = s.id
 WHERE s.id = (SELECT id FROM {s}.snapshots WHERE taken_at <= %s ORDER BY taken_at DESC, id DESC LIMIT 1)
   AND (ss.queryid = ANY(%s) OR ss.query ILIKE %s)
"""


def _since_reset(conn: PgConnection, schema: str, build_started: datetime, ids: set[int],
                 table: str) -> tuple[dict[int, tuple[str, int, float]], str] | None:
    """The baseline when the look-back before a build holds too few calls (no capture ran before the one `apply`
    takes right before building): the last snapshot before the build, whose cumulative counters cover
    everything since pg_stat_statements was last reset. None when there is no snapshot before the build."""
    like = _like(table)
    with conn.cursor() as cur:
        cur.execute(sql.SQL(_LAST_BEFORE).format(s=sql.Identifier(schema)), (build_started, list(ids), like))
        rows = [SnapshotRow(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), bool(r[5]), r[6], int(r[7]), float(r[8]))
                for r in cur.fetchall()]
    if not rows:
        return None
    first = rows[0]
    since = first.stats_reset.isoformat() if first.stats_reset else "the extension's start"
    return cumulative_stats(rows), f"since the statistics reset at {since} (snapshot {first.snapshot_id})"


# ---- storing and acting -------------------------------------------------------------------------------------


def store_verdict(conn: PgConnection, schema: str, item: BuiltIndex, verdict: Verdict, now: datetime) -> None:
    insert_verdict(conn, schema, decided_at=now, recommendation_id=item.recommendation_id, index_schema=item.schema,
                   index_name=item.index_name, verdict=verdict.verdict,
                   evidence={**verdict.evidence, "reasons": list(verdict.reasons)})


# ---- the verification run -----------------------------------------------------------------------------------


def verify_built(
    db: Database,
    settings: Settings,
    db_settings: DatabaseSettings,
    now: datetime | None = None,
    job_id: str | None = None,
    *,
    leadership: Leadership | None = None,
    cpu: CpuSampler = host_cpu_pct,
) -> list[VerdictRecord]:
    """Judge every index indexd built at least verify.after ago that has no final verdict yet, store each
    verdict with its evidence, keep the good ones and (with auto_revert) drop the harmful ones through the guards.
    """
    refuse_on_standby(db, "verify")
    now = now or utcnow()
    ix, schema = db_settings.indexing, db.settings.state_schema
    with db.connection() as conn:
        items = recommendation_rows.awaiting_verdict(conn, schema, now - ix.verify.after, ix.verify.auto_revert)
    records: list[VerdictRecord] = []
    if not items:
        log.info("verify on %s: nothing to judge", db.name)
        return records
    with leading(db, leadership) as lead:
        for item in items:
            records.append(_verify_one(db, settings, ix, lead, item, now, job_id, cpu))
    counts = {v: sum(1 for r in records if r.verdict == v) for v in ("kept", "reverted", "inconclusive")}
    log.info("verify on %s: %d kept, %d reverted (%d dropped), %d inconclusive", db.name, counts["kept"],
             counts["reverted"], sum(1 for r in records if r.action == "dropped"), counts["inconclusive"])
    return records


def _verify_one(db: Database, settings: Settings, ix: IndexingSettings, lead: Leadership, item: BuiltIndex,
                now: datetime, job_id: str | None, cpu: CpuSampler) -> VerdictRecord:
    schema = db.settings.state_schema
    if item.pending_revert:
        verdict = Verdict("reverted", ("judged earlier; the revert had not happened yet",), {})
    else:
        with db.connection() as conn:
            verdict = gather(conn, schema, item, ix.lookback, now, ix.verify)
            store_verdict(conn, schema, item, verdict, now)
    log.info("verdict on %s.%s: %s (%s)", item.schema, item.index_name, verdict.verdict, "; ".join(verdict.reasons))
    action = "wait"
    if verdict.verdict == "kept":
        action = "kept"
        with db.connection() as conn:
            recommendations.mark_kept(conn, schema, item.recommendation_id, "; ".join(verdict.reasons))
        announce.verdict(db.name, item.recommendation_id, item.schema, item.table, item.index_name, True,
                         verdict.reasons)
    elif verdict.verdict == "reverted":
        action = _revert(db, settings, ix, lead, item, verdict, now, job_id, cpu)
        if action == "dropped" or (action == "none" and verdict.evidence.get("exists") is False):
            announce.verdict(db.name, item.recommendation_id, item.schema, item.table, item.index_name, False,
                             verdict.reasons)
    return VerdictRecord(item.recommendation_id, item.schema, item.index_name, verdict.verdict, verdict.reasons,
                         action, verdict.evidence)


def _revert(db: Database, settings: Settings, ix: IndexingSettings, lead: Leadership, item: BuiltIndex,
            verdict: Verdict, now: datetime, job_id: str | None, cpu: CpuSampler) -> str:
    """Drop a reverted index (ours only) through the guards; the recommendation becomes `reverted` once it is gone."""
    schema, why = db.settings.state_schema, "; ".join(verdict.reasons)
    if verdict.evidence.get("exists") is False:  # gone already: nothing to drop
        with db.connection() as conn:
            recommendations.mark_reverted(conn, schema, item.recommendation_id, why)
        return "none"
    if not ix.verify.auto_revert:
        with db.connection() as conn:
            stays = f"verdict reverted ({why}); verify.auto_revert is off, so the index stays"
            recommendations.note_built_reason(conn, schema, item.recommendation_id, stays)
        return "revert_off"
    if not item.index_name.startswith(OWN_PREFIX):
        log.warning("not reverting %s.%s: not an index indexd names", item.schema, item.index_name)
        return "none"
    decision = drop_decision(db, settings, ix, lead, now, table=f"{item.schema}.{item.table}",
                             index_name=item.index_name, respect_window=False, cpu=cpu)
    if not decision.allowed:
        log.info("revert of %s.%s refused: %s", item.schema, item.index_name, "; ".join(decision.reasons))
        return "revert_refused"
    result = drop_index_concurrently(db, item.schema, item.index_name, reason=f"verification: {why}",
                                     action="revert_index", recommendation_id=item.recommendation_id, job_id=job_id)
    if not result.ok:
        return "revert_failed"
    with db.connection() as conn:
        recommendations.mark_reverted(conn, schema, item.recommendation_id, why)
    return "dropped"
