"""The verdict on an index indexd built, as pure functions of the statement statistics around its build.

`judge` decides keep / revert / wait from the statements' times before and after the build and the index's own
scans; `window_stats` turns cumulative snapshots of pg_stat_statements into per-window deltas; the rest picks
the statements that matter for one index (its targets, and the others that name its table).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from indexd.config.schema import VerifySettings

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
        return Verdict("reverted", (f"no gain: target statements {_faster(gain)}, below the "
                                    f"{settings.min_gain_pct:g}% faster required",), evidence)
    tail = "no regression" if not regressions else f"related slowdowns outweighed ({lost_ms:.1f} ms lost)"
    return Verdict("kept", (f"target statements {_faster(gain)} over {len(targets)} statement(s), "
                            f"saved {saved_ms:.1f} ms, {index_scans} index scans, {tail}",) + described, evidence)


def _faster(gain_pct: float) -> str:
    """A weighted gain in words: `12.5% faster`, or `3.0% slower` for a loss (never `-3.0% faster`)."""
    return f"{gain_pct:.1f}% faster" if gain_pct >= 0 else f"{-gain_pct:.1f}% slower"


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


def window_stats(
    rows: Iterable[SnapshotRow],
    snapshots_in_window: Iterable[tuple[int, datetime, datetime | None]] = (),
) -> dict[int, tuple[str, int, float]]:
    """Calls and time per queryid between the first and the last snapshot of a window.

    Deltas are taken between consecutive snapshots and summed. Across a stats reset (the snapshot's
    stats_reset changed, or a statement's calls went down: reset or eviction) the later counters are the delta.
    A statement missing from the previous snapshot counts from zero. The first snapshot is only a baseline.
    `snapshots_in_window` (id, taken_at, stats_reset) names every snapshot of the window, including those in
    which no statement of interest had run yet (one taken right after a reset): they count as baselines too.
    """
    snapshots: dict[int, tuple[datetime, datetime | None]] = {}
    by_snapshot: dict[int, dict[tuple[int, int, bool], SnapshotRow]] = {}
    for sid, taken_at, stats_reset in snapshots_in_window:
        snapshots[sid] = (taken_at, stats_reset)
        by_snapshot.setdefault(sid, {})
    for r in rows:
        snapshots[r.snapshot_id] = (r.taken_at, r.stats_reset)
        by_snapshot.setdefault(r.snapshot_id, {})[(r.queryid, r.userid, r.toplevel)] = r
    order = sorted(snapshots, key=lambda sid: (snapshots[sid][0], sid))
    totals: dict[int, tuple[str, int, float]] = {}
    for prev_id, cur_id in zip(order, order[1:], strict=False):
        reset = snapshots[prev_id][1] != snapshots[cur_id][1]
        prev = by_snapshot.get(prev_id, {})
        for key, cur in by_snapshot.get(cur_id, {}).items():
            old = None if reset else prev.get(key)
            if old is not None and cur.calls >= old.calls:
                calls, time_ms = cur.calls - old.calls, max(cur.total_time_ms - old.total_time_ms, 0.0)
            else:
                calls, time_ms = cur.calls, cur.total_time_ms
            _query, c0, t0 = totals.get(cur.queryid, (cur.query, 0, 0.0))
            totals[cur.queryid] = (cur.query, c0 + calls, t0 + time_ms)
    return totals


def has_baseline(stats: Iterable[StatementStats], min_calls: int) -> bool:
    """Whether some target statement ran at least min_calls times in a window (what `judge` compares)."""
    return any(s.target and s.calls >= max(1, min_calls) for s in stats)


def cumulative_stats(rows: Iterable[SnapshotRow]) -> dict[int, tuple[str, int, float]]:
    """Calls and time per queryid in one snapshot's cumulative counters: everything since pg_stat_statements
    was last reset (the window from that reset to the snapshot)."""
    totals: dict[int, tuple[str, int, float]] = {}
    for r in rows:
        _query, calls, time_ms = totals.get(r.queryid, (r.query, 0, 0.0))
        totals[r.queryid] = (r.query, calls + r.calls, time_ms + r.total_time_ms)
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

