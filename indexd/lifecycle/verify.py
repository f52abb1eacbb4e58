"""Verification of the indexes indexd built: real statement times before vs after the build, and the index's own
scans, decide whether an index is kept or reverted.

The decision (`judge`) and the arithmetic on snapshots (`window_stats`) are pure; `verify_built` gathers the
evidence from the state schema and the statistics views, stores a verdict per index and reverts harmful ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from psycopg2 import sql

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, IndexingSettings, Settings, VerifySettings
from indexd.db.pool import Database, PgConnection
from indexd.lifecycle import guards
from indexd.lifecycle.build import OWN_PREFIX, drop_index_concurrently
from indexd.lifecycle.guards import BuildRequest, Decision, Readings
from indexd.lifecycle.leader import Leadership
from indexd.lifecycle.pause import active_pause
from indexd.lifecycle.readings import CpuSampler, host_cpu_pct, server_load

log = logging.getLogger(__name__)

VerdictName = Literal["kept", "reverted", "inconclusive"]

# A statement whose mean time rose by less than this many milliseconds per call has not "regressed", whatever the
# percentage: sub-0.05 ms differences are timer and cache noise, not the work an index adds.
NOISE_FLOOR_MS = 0.05


@dataclass(frozen=True)
class StatementStats:
    """One statement's calls and execution time within a window (a delta of pg_stat_statements counters)."""

    key: str  # the queryid as text, or the normalised statement text when no queryid is known
    query: str
    calls: int
    total_time_ms: float
    target: bool = True  # a statement the index was built for; others only count for regressions

    @property
    def mean_ms(self) -> float:
        return self.total_time_ms / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictName
    reasons: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Comparison:
    key: str
    query: str
    target: bool
    calls_before: int
    calls_after: int
    mean_before_ms: float
    mean_after_ms: float

    @property
    def change_pct(self) -> float | None:
        """Positive = slower after the build; None without a baseline time."""
        if self.mean_before_ms <= 0:
            return None
        return (self.mean_after_ms - self.mean_before_ms) / self.mean_before_ms * 100.0

    def regressed(self, max_regression_pct: float) -> bool:
        change = self.change_pct
        return (
            change is not None
            and change > max_regression_pct
            and self.mean_after_ms - self.mean_before_ms > NOISE_FLOOR_MS
        )

    def as_dict(self) -> dict[str, Any]:
        change = self.change_pct
        return {
            "key": self.key,
            "query": self.query[:500],
            "target": self.target,
            "calls_before": self.calls_before,
            "calls_after": self.calls_after,
            "mean_before_ms": round(self.mean_before_ms, 4),
            "mean_after_ms": round(self.mean_after_ms, 4),
            "change_pct": None if change is None else round(change, 2),
        }


def _by_key(stats: Iterable[StatementStats]) -> dict[str, StatementStats]:
    merged: dict[str, StatementStats] = {}
    for s in stats:
        old = merged.get(s.key)
        if old is None:
            merged[s.key] = s
        else:
            merged[s.key] = StatementStats(s.key, old.query, old.calls + s.calls,
                                           old.total_time_ms + s.total_time_ms, old.target or s.target)
    return merged


def _comparisons(before: dict[str, StatementStats], after: dict[str, StatementStats],
                 min_calls: int) -> list[_Comparison]:
    """Statements seen at least min_calls times in both windows."""
    found = []
    for key, a in after.items():
        b = before.get(key)
        if b is None or b.calls < min_calls or a.calls < min_calls:
            continue
        found.append(_Comparison(key, a.query, a.target or b.target, b.calls, a.calls, b.mean_ms, a.mean_ms))
    return found


def _weighted_gain_pct(targets: Sequence[_Comparison]) -> float:
    """Time the target statements saved, weighted by how often they ran after the build."""
    before = sum(c.calls_after * c.mean_before_ms for c in targets)
    after = sum(c.calls_after * c.mean_after_ms for c in targets)
    return (1.0 - after / before) * 100.0 if before > 0 else 0.0


def judge(
    before: list[StatementStats],
    after: list[StatementStats],
    index_scans: int,
    settings: VerifySettings,
) -> Verdict:
    """Keep, revert, or wait: the verdict on one built index from the windows before and after its build.

    - inconclusive: no target statement ran min_calls times since the build, or none has a baseline;
    - reverted: the index was never scanned while its statements ran, a target statement regressed by more
      than max_regression_pct (and NOISE_FLOOR_MS), related statements on the table lost more time than the
      targets saved, or the target statements gained less than min_gain_pct;
    - kept: otherwise.
    """
    b, a = _by_key(before), _by_key(after)
    target_calls_after = sum(s.calls for s in a.values() if s.target)
    busy_targets = [s for s in a.values() if s.target and s.calls >= settings.min_calls]
    comparisons = _comparisons(b, a, settings.min_calls)
    targets = [c for c in comparisons if c.target]
    evidence: dict[str, Any] = {
        "index_scans": index_scans,
        "target_calls_after": target_calls_after,
        "statements": [c.as_dict() for c in comparisons],
        "settings": {"min_calls": settings.min_calls, "min_gain_pct": settings.min_gain_pct,
                     "max_regression_pct": settings.max_regression_pct},
    }
    if not busy_targets:
        return Verdict("inconclusive", (
            f"too few calls: no target statement ran {settings.min_calls} times since the build "
            f"({target_calls_after} calls in all)",), evidence)
    if index_scans == 0:
        return Verdict("reverted", (
            f"unused: 0 index scans while its statements ran {target_calls_after} times",), evidence)
    if not targets:
        return Verdict("inconclusive", (
            f"no baseline: no target statement ran {settings.min_calls} times before the build",), evidence)
    gain = _weighted_gain_pct(targets)
    evidence["gain_pct"] = round(gain, 2)
    regressions = [c for c in comparisons if c.regressed(settings.max_regression_pct)]
    saved_ms = sum(c.calls_after * (c.mean_before_ms - c.mean_after_ms) for c in targets)
    lost_ms = sum(c.calls_after * (c.mean_after_ms - c.mean_before_ms) for c in regressions if not c.target)
    evidence["saved_ms"], evidence["lost_ms"] = round(saved_ms, 3), round(lost_ms, 3)
    described = tuple(
        f"regression: {'target' if c.target else 'related'} statement {c.key} slower by "
        f"{c.change_pct:.1f}% ({c.mean_before_ms:.3f} -> {c.mean_after_ms:.3f} ms)"
        for c in regressions
    )
    # A target statement that got slower condemns the index outright. A related statement (same table, not a
    # target) may be slower for reasons of its own (load, cache, noise): it condemns the index only when the
    # time it lost exceeds the time the targets saved, so one noisy report query cannot undo a 10x win.
    if any(c.target for c in regressions) or (regressions and lost_ms >= saved_ms):
        return Verdict("reverted", described + (f"net effect: saved {saved_ms:.1f} ms, lost {lost_ms:.1f} ms",),
                       evidence)
    if gain < settings.min_gain_pct:
        return Verdict("reverted", (f"no gain: target statements {gain:.1f}% faster, below the "
                                    f"{settings.min_gain_pct:g}% required",), evidence)
    tail = "no regression" if not regressions else f"related slowdowns outweighed ({lost_ms:.1f} ms lost)"
    return Verdict("kept", (f"target statements {gain:.1f}% faster over {len(targets)} statement(s), "
                            f"saved {saved_ms:.1f} ms, {index_scans} index scans, {tail}",) + described, evidence)


# ---- windows of snapshots ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotRow:
    """One statement's cumulative counters in one snapshot (a row of statement_snapshots joined to snapshots)."""

    snapshot_id: int
    taken_at: datetime
    stats_reset: datetime | None
    queryid: int
    userid: int
    toplevel: bool
    query: str
    calls: int
    total_time_ms: float


def window_stats(rows: Iterable[SnapshotRow]) -> dict[int, tuple[str, int, float]]:
    """Calls and time per queryid between the first and the last snapshot of a window.

    Deltas are taken between consecutive snapshots and summed. Across a stats reset (the snapshot's
    stats_reset changed, or a statement's calls went down: reset or eviction) the later counters are the delta.
    A statement missing from the previous snapshot counts from zero. The first snapshot is only a baseline.
    """
    snapshots: dict[int, tuple[datetime, datetime | None]] = {}
    by_snapshot: dict[int, dict[tuple[int, int, bool], SnapshotRow]] = {}
    for r in rows:
        snapshots[r.snapshot_id] = (r.taken_at, r.stats_reset)
        by_snapshot.setdefault(r.snapshot_id, {})[(r.queryid, r.userid, r.toplevel)] = r
    order = sorted(snapshots, key=lambda sid: (snapshots[sid][0], sid))
    totals: dict[int, tuple[str, int, float]] = {}
    for prev_id, cur_id in zip(order, order[1:], strict=False):
        reset = snapshots[prev_id][1] != snapshots[cur_id][1]
        prev = by_snapshot[prev_id]
        for key, cur in by_snapshot[cur_id].items():
            old = None if reset else prev.get(key)
            if old is not None and cur.calls >= old.calls:
                calls, time_ms = cur.calls - old.calls, max(cur.total_time_ms - old.total_time_ms, 0.0)
            else:
                calls, time_ms = cur.calls, cur.total_time_ms
            _query, c0, t0 = totals.get(cur.queryid, (cur.query, 0, 0.0))
            totals[cur.queryid] = (cur.query, c0 + calls, t0 + time_ms)
    return totals


def normalise_query(text: str) -> str:
    """Statement text as a matching key: whitespace collapsed, trailing semicolons dropped, lower case."""
    return re.sub(r"\s+", " ", text).strip().rstrip(";").strip().lower()


def target_keys(queries: Any) -> tuple[set[int], set[str]]:
    """The queryids and normalised texts of a recommendation's `queries` (dicts with queryid/query, or texts)."""
    ids: set[int] = set()
    texts: set[str] = set()
    for q in queries or []:
        if isinstance(q, str):
            texts.add(normalise_query(q))
            continue
        if not isinstance(q, dict):
            continue
        if q.get("queryid") is not None:
            with contextlib.suppress(TypeError, ValueError):
                ids.add(int(q["queryid"]))
        if q.get("query"):
            texts.add(normalise_query(str(q["query"])))
    return ids, texts


def mentions_table(query: str, table: str) -> bool:
    """Whether a statement's text names the table (quoted or not, schema-qualified or not): a related statement."""
    name = re.escape(table)
    pattern = rf'(?<![\w$])("{name}"|{name})(?![\w$])' if table == table.lower() else rf'"{name}"'
    flags = re.IGNORECASE if table == table.lower() else 0
    return re.search(pattern, query, flags) is not None


def statement_stats(
    totals: dict[int, tuple[str, int, float]],
    ids: set[int],
    texts: set[str],
    table: str,
) -> list[StatementStats]:
    """The window's statements that matter for one index: its targets, and the others naming its table."""
    found = []
    for queryid, (query, calls, time_ms) in totals.items():
        target = queryid in ids or normalise_query(query) in texts
        if target or mentions_table(query, table):
            found.append(StatementStats(str(queryid), query, calls, time_ms, target))
    return found


# ---- evidence from the database ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltIndex:
    """A recommendation indexd built, waiting for (or retrying) its verdict."""

    recommendation_id: int
    schema: str
    table: str
    index_name: str
    queries: Any
    build_started: datetime  # the create_index intent: the "before" window ends here
    built_at: datetime  # its successful outcome: the "after" window starts here
    pending_revert: bool  # judged 'reverted' earlier, the drop has not happened yet


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


_BUILT = """
SELECT r.id, r.table_schema, r.table_name, r.index_name, r.queries,
       coalesce(b.started, b.built, r.updated_at), coalesce(b.built, r.updated_at),
       coalesce(v.verdict = 'reverted', false)
  FROM {s}.recommendations r
  LEFT JOIN LATERAL (
       SELECT max(m.at) FILTER (WHERE m.phase = 'intent') AS started,
              max(m.at) FILTER (WHERE m.phase = 'outcome' AND m.outcome = 'succeeded') AS built
         FROM {s}.mutation_log m WHERE m.recommendation_id = r.id AND m.action = 'create_index') b ON true
  LEFT JOIN LATERAL (
       SELECT verdict FROM {s}.index_verdicts WHERE recommendation_id = r.id AND verdict <> 'inconclusive'
        ORDER BY decided_at DESC, id DESC LIMIT 1) v ON true
 WHERE r.status = 'built' AND coalesce(b.built, r.updated_at) <= %s
   AND (v.verdict IS NULL OR (v.verdict = 'reverted' AND %s))
 ORDER BY r.id
"""

_SNAPSHOT_ROWS = """
SELECT s.id, s.taken_at, s.stats_reset, ss.queryid, ss.userid, ss.toplevel, ss.query, ss.calls, ss.total_exec_time
  FROM {s}.snapshots s JOIN {s}.statement_snapshots ss ON ss.snapshot_id = s.id
 WHERE s.taken_at >= %s AND s.taken_at <= %s AND (ss.queryid = ANY(%s) OR ss.query ILIKE %s)
"""


def built_indexes(conn: PgConnection, schema: str, ready_before: datetime, auto_revert: bool) -> list[BuiltIndex]:
    """Built recommendations old enough for a verdict and without a final one (or with a revert still to do)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL(_BUILT).format(s=sql.Identifier(schema)), (ready_before, auto_revert))
        return [BuiltIndex(*row) for row in cur.fetchall()]


def _window(conn: PgConnection, schema: str, start: datetime, end: datetime, ids: set[int],
            table: str) -> dict[int, tuple[str, int, float]]:
    like = "%" + table.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with conn.cursor() as cur:
        cur.execute(sql.SQL(_SNAPSHOT_ROWS).format(s=sql.Identifier(schema)), (start, end, list(ids), like))
        rows = [SnapshotRow(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), bool(r[5]), r[6], int(r[7]), float(r[8]))
                for r in cur.fetchall()]
    return window_stats(rows)


def _index_scans(conn: PgConnection, schema: str, name: str) -> tuple[bool, bool, int, datetime | None]:
    """(exists, valid, scans, the database's last statistics reset) of an index, from a fresh statistics snapshot."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT i.indisvalid, coalesce(pg_stat_get_numscans(c.oid), 0),"
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
    exists, valid, scans, stats_reset = _index_scans(conn, item.schema, item.index_name)
    after_start = max(item.built_at, stats_reset) if stats_reset else item.built_at
    window = {"before": [(item.build_started - lookback).isoformat(), item.build_started.isoformat()],
              "after": [after_start.isoformat(), now.isoformat()]}
    if not exists or not valid:
        what = "no longer exists" if not exists else "is invalid"
        return Verdict("reverted", (f"the index {what}",), {"exists": exists, "valid": valid, "windows": window})
    ids, texts = target_keys(item.queries)
    before = _window(conn, state_schema, item.build_started - lookback, item.build_started, ids, item.table)
    after = _window(conn, state_schema, after_start, now, ids, item.table)
    verdict = judge(statement_stats(before, ids, texts, item.table), statement_stats(after, ids, texts, item.table),
                    scans, settings)
    return Verdict(verdict.verdict, verdict.reasons, {**verdict.evidence, "windows": window})


# ---- storing and acting -------------------------------------------------------------------------------------


def store_verdict(conn: PgConnection, schema: str, item: BuiltIndex, verdict: Verdict, now: datetime) -> None:
    evidence = {**verdict.evidence, "reasons": list(verdict.reasons)}
    with conn.cursor() as cur:
        cur.execute(sql.SQL(
            "INSERT INTO {}.index_verdicts (decided_at, recommendation_id, index_schema, index_name, verdict, evidence)"
            " VALUES (%s, %s, %s, %s, %s, %s)").format(sql.Identifier(schema)),
            (now, item.recommendation_id, item.schema, item.index_name, verdict.verdict,
             json.dumps(evidence, default=str, sort_keys=True)))


def set_status(conn: PgConnection, schema: str, recommendation_id: int, status: str, reason: str) -> None:
    """Move a built recommendation to its final status (kept / reverted), or only record why it stays built."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL(
            "UPDATE {}.recommendations SET status = %s, reason = %s, updated_at = now()"
            " WHERE id = %s AND status = 'built'").format(sql.Identifier(schema)),
            (status, reason[:1000], recommendation_id))


# ---- the guards of a drop ----------------------------------------------------------------------------------


def drop_decision(
    db: Database,
    settings: Settings,
    indexing: IndexingSettings,
    leadership: Leadership | None,
    now: datetime,
    *,
    table: str,
    index_name: str,
    respect_window: bool,
    cpu: CpuSampler = host_cpu_pct,
) -> Decision:
    """May indexd drop an index now? Read right before the drop.

    A drop always respects the emergency pause, `bypass`, leadership and the load guard (a DROP INDEX
    CONCURRENTLY waits for every transaction touching the table: not while the server is struggling). The
    maintenance window applies only when `respect_window`: dropping an unused index can wait for it, reverting
    one that made things worse should not. The rate limit never applies: it counts builds, and a revert undoes one.
    """
    cpu_pct = cpu(indexing.throttle.cpu_sample.total_seconds())
    with db.connection() as conn:
        load = server_load(conn)
        paused = active_pause(conn, db.settings.state_schema, now)
    found = Readings(taken_at=now, is_leader=leadership is not None and leadership.held(), pause=paused,
                     cpu_pct=cpu_pct, active_backends=load.active_backends, max_connections=load.max_connections,
                     waiting_backends=load.waiting_backends, replica_lag_s=load.replica_lag_s, build_starts=())
    refusals = (guards.check_pause(found) + guards.check_bypass(settings.bypass)
                + guards.check_load(indexing, found, now) + guards.check_leader(found))
    if respect_window:
        refusals += guards.check_window(BuildRequest(0, table, index_name, table_bytes=0), indexing, now)
    if not refusals:
        return Decision(True, [], None)
    ends = [r.retry_after for r in refusals]
    retry = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
    return Decision(False, [r.reason for r in refusals], retry)


@contextlib.contextmanager
def leading(db: Database, leadership: Leadership | None) -> Iterator[Leadership]:
    """The caller's leadership, or one taken (without waiting) for this run and given back after it."""
    if leadership is not None:
        yield leadership
        return
    own = Leadership.for_database(db)
    try:
        own.acquire()  # if another process leads, the leader guard refuses each drop
        yield own
    finally:
        own.release()


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
    now = now or utcnow()
    ix, schema = db_settings.indexing, db.settings.state_schema
    with db.connection() as conn:
        items = built_indexes(conn, schema, now - ix.verify.after, ix.verify.auto_revert)
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
            set_status(conn, schema, item.recommendation_id, "kept", "; ".join(verdict.reasons))
    elif verdict.verdict == "reverted":
        action = _revert(db, settings, ix, lead, item, verdict, now, job_id, cpu)
    return VerdictRecord(item.recommendation_id, item.schema, item.index_name, verdict.verdict, verdict.reasons,
                         action, verdict.evidence)


def _revert(db: Database, settings: Settings, ix: IndexingSettings, lead: Leadership, item: BuiltIndex,
            verdict: Verdict, now: datetime, job_id: str | None, cpu: CpuSampler) -> str:
    """Drop a reverted index (ours only) through the guards; the recommendation becomes `reverted` once it is gone."""
    schema, why = db.settings.state_schema, "; ".join(verdict.reasons)
    if verdict.evidence.get("exists") is False:  # gone already: nothing to drop
        with db.connection() as conn:
            set_status(conn, schema, item.recommendation_id, "reverted", why)
        return "none"
    if not ix.verify.auto_revert:
        with db.connection() as conn:
            set_status(conn, schema, item.recommendation_id, "built",
                       f"verdict reverted ({why}); verify.auto_revert is off, so the index stays")
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
        set_status(conn, schema, item.recommendation_id, "reverted", why)
    return "dropped"
