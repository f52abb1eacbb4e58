"""May this index be built now? One pure decision over every guard, with every refusal's reason.

`decide` reads nothing itself: the readings (load, pause, leadership, recent builds, the table's write rate)
are taken by `readings.take_readings` right before each mutation, and the clock comes in as `now`. The guards:

- pause: an active emergency pause (state table `pause`) refuses everything until it ends or is resumed;
- bypass: `bypass.enabled` in the configuration refuses every change (indexd only observes and advises);
- window: outside every maintenance window, or when the build's estimated duration (table bytes / assumed
  throughput) does not fit before the open window closes. `--now` (request.ignore_window) skips this one only;
- load, read from the database server: active backends as a share of max_connections, backends waiting on
  locks, replica lag, the latency probe (a fixed cheap query against its own recent median, see latency.py),
  and host CPU when this host is the database's (throttle.host_cpu; None otherwise: not measured);
- rate: index builds started in the last hour / day (every create_index intent in the audit log counts,
  whatever its outcome, so restarts and failures do not reset the limit); drops are not builds;
- write: on a write-heavy table (writes/s above `write_guard.writes_per_second`) a new index must earn its
  upkeep: the read time it saves (benefit_ms_per_s) must exceed the write maintenance it adds (write_overhead)
  x `write_guard.min_benefit_ratio`, both in ms of database time per second, as the advisor estimated them for
  the recommendation. Either one unknown on a write-heavy table is a refusal (advice saved before indexd stored
  the benefit gets it at the next advice run). Drops only lower write cost;
- leader: only the process holding the database's leader lock mutates it (the refusal names the holder).

Every refusal says what would let the build proceed; `retry_after` says when that may be, and the caller adds
when indexd asks again (lifecycle/refusal.py). Pacing (throttle.pause_between_builds) is no refusal but a wait
before a build: `pacing_wait`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from indexd.config.schema import BypassSettings, IndexingSettings
from indexd.lifecycle import windows
from indexd.state.pause import Pause
from indexd.units import human_duration, human_rate, human_size

LOAD_BACKOFF = timedelta(minutes=5)  # when the load is too high, look again this much later
PROBE_RECHECK = timedelta(seconds=15)  # a slow probe is often a burst: look again soon
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@dataclass(frozen=True)
class BuildRequest:
    """What is about to be built."""

    recommendation_id: int
    table: str  # schema.table
    index_name: str
    table_bytes: int  # heap size of the table: drives the estimated build duration
    improvement_pct: float | None = None
    write_overhead: float | None = None  # write maintenance the index adds, ms/s
    benefit_ms_per_s: float | None = None  # read time it saves, ms/s
    ignore_window: bool = False  # `apply --now`
    action: str = "create_index"  # or drop_index / revert_index: no rate limit or write guard for those

    @property
    def creates(self) -> bool:
        return self.action == "create_index"


@dataclass(frozen=True)
class ProbeReading:
    """The latency probe now (median of a burst of samples) and its baseline (median of recent samples taken
    while no build of ours ran; None until there are enough)."""

    current_ms: float
    baseline_ms: float | None
    samples: int = 0  # behind the baseline


def probe_excess(reading: ProbeReading | None, ratio: float, floor_ms: float) -> float | None:
    """How many times its baseline the probe is, when that is at least `ratio` times and `floor_ms` above it
    (None otherwise, or without a baseline)."""
    if reading is None or not reading.baseline_ms or reading.baseline_ms <= 0:
        return None
    times = reading.current_ms / reading.baseline_ms
    if times >= ratio and reading.current_ms - reading.baseline_ms >= floor_ms:
        return times
    return None


@dataclass(frozen=True)
class Readings:
    """The state of the world right before a mutation (taken by readings.take_readings)."""

    taken_at: datetime
    is_leader: bool
    pause: Pause | None
    cpu_pct: float | None  # None: not measured (the database runs on another host)
    active_backends: int
    max_connections: int
    waiting_backends: int
    replica_lag_s: float | None  # None: no replica connected
    build_starts: tuple[datetime, ...]  # create_index intents of the last day, any order
    table_writes_per_second: float = 0.0
    probe: ProbeReading | None = None  # None: probe off or unavailable
    leader_holder: str | None = None  # who holds the leader lock, when we do not
    last_build_end: datetime | None = None  # the last create_index outcome, for pacing


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: list[str]
    retry_after: datetime | None  # earliest time worth asking again; None when no end is foreseeable
    guards: tuple[str, ...] = ()  # the guard of each reason: pause, bypass, window, load, rate, write, leader

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class _Refusal:
    reason: str
    retry_after: datetime | None  # None: no foreseeable end (bypass, open-ended pause, not leader)


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def check_pause(readings: Readings) -> list[_Refusal]:
    p = readings.pause
    if p is None:
        return []
    return [_Refusal(p.describe() + ("" if p.until else "; 'indexd resume' ends it"), p.until)]


def check_bypass(bypass: BypassSettings) -> list[_Refusal]:
    if not bypass.enabled:
        return []
    return [_Refusal(f"bypass is enabled in the configuration: {bypass.reason or 'no reason given'} (set "
                     "bypass.enabled to false to allow changes)", None)]


def check_window(request: BuildRequest, settings: IndexingSettings, now: datetime) -> list[_Refusal]:
    if request.ignore_window or not settings.windows:
        return []
    open_now = windows.current_window(settings.windows, now)
    if open_now is None:
        nxt = windows.next_window_start(settings.windows, now)
        names = "; ".join(windows.describe(w) for w in settings.windows)
        opens = f"; the next opens at {_when(nxt)}" if nxt else "; no window ever opens"
        return [_Refusal(f"outside the maintenance window ({names}){opens}", nxt)]
    needed = windows.estimate_build_duration(request.table_bytes, windows.build_throughput(settings))
    left = open_now.end - now
    if needed <= left:
        return []
    nxt = windows.next_window_start(settings.windows, open_now.end)
    return [_Refusal(
        f"the build would take about {human_duration(needed)} ({human_size(request.table_bytes)} of table) but the "
        f"window ({open_now.label}) closes in {human_duration(left)}, at {_when(open_now.end)}", nxt)]


def check_load(settings: IndexingSettings, readings: Readings, now: datetime) -> list[_Refusal]:
    """The database server's load; each refusal names the reading, its limit (the key that sets it) and waits
    for the reading to fall below it."""
    t, r = settings.throttle, readings
    later = now + LOAD_BACKOFF
    out = []
    if r.cpu_pct is not None and r.cpu_pct > t.max_cpu_pct:
        out.append(_Refusal(f"load: database host CPU at {r.cpu_pct:.0f}% > limit {t.max_cpu_pct:g}% "
                            "(indexing.throttle.max_cpu_pct)", later))
    share = 100.0 * r.active_backends / max(1, r.max_connections)
    if share > t.max_active_backends_pct:
        out.append(_Refusal(f"load: {r.active_backends} active backends = {share:.0f}% of max_connections "
                            f"{r.max_connections} > limit {t.max_active_backends_pct:g}% "
                            "(indexing.throttle.max_active_backends_pct)", later))
    if r.waiting_backends > t.max_waiting_backends:
        out.append(_Refusal(f"load: {r.waiting_backends} backends waiting on locks > limit {t.max_waiting_backends} "
                            "(indexing.throttle.max_waiting_backends)", later))
    max_lag = t.max_replica_lag.total_seconds()
    if r.replica_lag_s is not None and r.replica_lag_s > max_lag:
        out.append(_Refusal(f"load: replica lag {human_duration(r.replica_lag_s)} > limit {human_duration(max_lag)} "
                            "(indexing.throttle.max_replica_lag)", later))
    return out + check_probe(settings, readings, now)


def check_probe(settings: IndexingSettings, readings: Readings, now: datetime) -> list[_Refusal]:
    """No build starts while the latency probe is probe_max_ratio times its baseline (and probe_floor above it)."""
    t, reading = settings.throttle, readings.probe
    times = probe_excess(reading, t.probe_max_ratio, t.probe_floor.total_seconds() * 1000)
    if times is None or reading is None or reading.baseline_ms is None:
        return []
    return [_Refusal(f"load: query latency probe {reading.current_ms:.1f} ms = {times:.1f}x its recent median "
                     f"{reading.baseline_ms:.1f} ms > limit {t.probe_max_ratio:g}x "
                     "(indexing.throttle.probe_max_ratio)", now + PROBE_RECHECK)]


def _rate(starts: list[datetime], limit: int, period: timedelta, label: str, now: datetime) -> list[_Refusal]:
    recent = sorted(s for s in starts if s > now - period)
    if len(recent) < limit:
        return []
    # Allowed again once enough of the recent builds have left the period to bring the count under the limit.
    retry = recent[len(recent) - limit] + period if limit > 0 else None
    key = f"indexing.rate_limit.per_{label}"
    then = f"the next may start at {_when(retry)}" if retry else f"no build may start while {key} is 0"
    return [_Refusal(f"rate limit: {len(recent)} index builds started in the last {label} (limit {limit}, {key}); "
                     f"{then}", retry)]


def check_rate(request: BuildRequest, settings: IndexingSettings, readings: Readings,
               now: datetime) -> list[_Refusal]:
    if not request.creates:
        return []
    starts, limits = list(readings.build_starts), settings.rate_limit
    return _rate(starts, limits.per_hour, HOUR, "hour", now) + _rate(starts, limits.per_day, DAY, "day", now)


def check_write(request: BuildRequest, settings: IndexingSettings, readings: Readings,
                now: datetime) -> list[_Refusal]:
    """On a write-heavy table, the index's read saving must exceed its write cost min_benefit_ratio times over
    (both ms of database time per second)."""
    guard, rate = settings.write_guard, readings.table_writes_per_second
    if rate <= guard.writes_per_second or not request.creates:
        return []
    busy = f"{request.table} is write-heavy ({rate:.1f} writes/s > {guard.writes_per_second:g})"
    write, benefit = request.write_overhead, request.benefit_ms_per_s
    if write is None:
        return [_Refusal(f"{busy} and the index's write cost is unknown", None)]
    if benefit is None:
        return [_Refusal(f"{busy} and the recommendation predates indexd's estimate of the read time the index "
                         "saves, so its write cost cannot be weighed; the next advice run ('indexd recommend') "
                         "refreshes it", None)]
    needed = write * guard.min_benefit_ratio
    if benefit > needed:
        return []
    return [_Refusal(f"{busy}: the index saves {human_rate(benefit)} but costs {human_rate(write)} of writes, "
                     f"and must save more than {guard.min_benefit_ratio:g} x that = {human_rate(needed)} "
                     "(indexing.write_guard.min_benefit_ratio)", None)]


def check_leader(readings: Readings) -> list[_Refusal]:
    if readings.is_leader:
        return []
    who = f" ({readings.leader_holder})" if readings.leader_holder else ""
    return [_Refusal(f"not the leader: another indexd process holds this database's leader lock{who}; that process "
                     "builds what is approved at its own apply runs", None)]


def pacing_wait(last_build_end: datetime | None, pause: timedelta, now: datetime) -> timedelta:
    """How long to wait before the next build so that `pause` separates it from the last one: zero if it does,
    never more than `pause` (a clock that went back, or a last build "in the future", waits one pause)."""
    if last_build_end is None or pause <= timedelta(0):
        return timedelta(0)
    return min(pause, max(timedelta(0), last_build_end + pause - now))


def combine(checks: list[tuple[str, list[_Refusal]]]) -> Decision:
    """One decision from each guard's refusals: allowed when none refused; else every reason, and the time when
    all of them may have ended (None when one has no foreseeable end)."""
    found = [(guard, r) for guard, refusals in checks for r in refusals]
    if not found:
        return Decision(True, [], None)
    ends = [r.retry_after for _, r in found]
    retry = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
    return Decision(False, [r.reason for _, r in found], retry, tuple(guard for guard, _ in found))


def decide(request: BuildRequest, settings: IndexingSettings, bypass: BypassSettings, readings: Readings,
           now: datetime) -> Decision:
    """Every guard's verdict on building `request` at `now`; allowed only when none refuses."""
    return combine([
        ("pause", check_pause(readings)), ("bypass", check_bypass(bypass)),
        ("window", check_window(request, settings, now)), ("load", check_load(settings, readings, now)),
        ("rate", check_rate(request, settings, readings, now)),
        ("write", check_write(request, settings, readings, now)), ("leader", check_leader(readings)),
    ])
