"""The latency probe: how long a fixed, cheap query takes on the database server now, against its own recent
median, the way gh-ost throttles on max-load and aborts on critical-load.

The query is an index lookup of one row in pg_class: no I/O once cached, so its round trip grows with what the
application feels too (CPU run queue, lock manager, WAL and buffer contention), on any host, with any role.
The probe keeps its own connection (no pool checkout in the timing) and its samples:

- before each build, a burst of BURST samples: no build starts while their median is probe_max_ratio times the
  baseline and probe_floor above it (guards.check_probe);
- while a plain build runs, one sample a second (BuildWatch): when the median of the last WATCH_WINDOW samples is
  probe_critical_ratio times the baseline (and probe_floor above it), the build is cancelled with
  pg_cancel_backend and its recommendation given back, to be built by a later run without counting as an attempt:
  CREATE INDEX CONCURRENTLY cannot pause, and what it did so far would not survive a pause anyway;
- between the partitions of a partitioned build (each partition a build of its own), the next one waits while the
  probe is above probe_max_ratio, up to PARTITION_PATIENCE; then the build stops and is given back.

The baseline is the median of the last BASELINE_SAMPLES samples taken while no build of ours ran (the bursts),
no older than BASELINE_MAX_AGE. A burst judged high does not join it, so a lasting load keeps refusing instead of
becoming the new normal; after BASELINE_MAX_AGE without a normal burst there is no baseline, and no verdict,
until normal samples gather again. A daemon keeps one probe per database across its apply runs, so the baseline
spans hours; a one-shot `apply` starts without one: its first burst becomes the baseline, against which its
builds are watched.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import statistics
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg2

from indexd.config.schema import ThrottleSettings
from indexd.db.pool import Database, PgConnection
from indexd.errors import IndexdError, first_line
from indexd.lifecycle.guards import ProbeReading, probe_excess

log = logging.getLogger(__name__)

PROBE_QUERY = "SELECT relpages FROM pg_catalog.pg_class WHERE oid = 'pg_catalog.pg_class'::regclass"
PROBE_TIMEOUT_MS = 5000  # a probe slower than this is no reading (the connection is dropped)
BURST, BURST_GAP_S = 5, 0.05
BASELINE_SAMPLES = 120
BASELINE_MAX_AGE_S = 24 * 3600.0
MIN_BASELINE = BURST  # fewer samples than this make no baseline
WATCH_INTERVAL_S, WATCH_WINDOW = 1.0, 3
PARTITION_PATIENCE = timedelta(minutes=2)
PARTITION_RECHECK_S = 5.0


class LatencyProbe:
    """Samples PROBE_QUERY's round trip on a connection of its own; keeps the baseline between runs."""

    def __init__(self, db: Database, *, timer: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self._timer, self._sleep, self._clock = timer, sleep, clock
        self._conn: PgConnection | None = None
        self._baseline: collections.deque[tuple[float, float]] = collections.deque(maxlen=BASELINE_SAMPLES)
        self._lock = threading.Lock()  # a watch thread and the apply thread never sample at the same time

    def _recent(self) -> list[float]:
        oldest = self._clock() - BASELINE_MAX_AGE_S
        return [ms for at, ms in self._baseline if at >= oldest]

    @property
    def baseline_ms(self) -> float | None:
        recent = self._recent()
        return statistics.median(recent) if len(recent) >= MIN_BASELINE else None

    def _connection(self) -> PgConnection:
        if self._conn is None or self._conn.closed:
            conn = self.db.dedicated_connection(autocommit=True)
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('statement_timeout', %s, false)", (str(PROBE_TIMEOUT_MS),))
            self._conn = conn
        return self._conn

    def sample(self) -> float | None:
        """One round trip in milliseconds; None when the probe fails (the reason is logged)."""
        with self._lock:
            try:
                conn = self._connection()
                started = self._timer()
                with conn.cursor() as cur:
                    cur.execute(PROBE_QUERY)
                    cur.fetchone()
                return (self._timer() - started) * 1000.0
            except (psycopg2.Error, IndexdError) as exc:
                log.warning("latency probe of %s failed: %s", self.db.name, first_line(exc))
                self._drop()
                return None

    def burst(self, throttle: ThrottleSettings | None = None) -> ProbeReading | None:
        """BURST samples now, judged against the baseline as it was before them; then they join the baseline,
        unless they are high by `throttle` (probe_max_ratio and probe_floor)."""
        found = []
        for n in range(BURST):
            if n:
                self._sleep(BURST_GAP_S)
            ms = self.sample()
            if ms is not None:
                found.append(ms)
        if not found:
            return None
        reading = ProbeReading(statistics.median(found), self.baseline_ms, len(self._recent()))
        high = throttle is not None and probe_excess(reading, throttle.probe_max_ratio,
                                                     throttle.probe_floor.total_seconds() * 1000) is not None
        if not high:
            now = self._clock()
            self._baseline.extend((now, ms) for ms in found)
        return reading

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        """Close the connection (at the end of a run); the baseline stays for the next one."""
        with self._lock:
            self._drop()


def critical_reason(probe: LatencyProbe, recent: list[float], throttle: ThrottleSettings) -> str | None:
    """Why a running build must stop: the median of the recent samples is critical against the baseline."""
    if len(recent) < WATCH_WINDOW:
        return None
    now = ProbeReading(statistics.median(recent[-WATCH_WINDOW:]), probe.baseline_ms)
    times = probe_excess(now, throttle.probe_critical_ratio, throttle.probe_floor.total_seconds() * 1000)
    if times is None or now.baseline_ms is None:
        return None
    return (f"cancelled under load: the query latency probe stayed at {now.current_ms:.1f} ms, {times:.1f}x its "
            f"recent median {now.baseline_ms:.1f} ms (limit {throttle.probe_critical_ratio:g}x, "
            "indexing.throttle.probe_critical_ratio); given back, a later run builds it")


class BuildWatch:
    """Samples the probe once a second while one CREATE INDEX runs on backend `pid`, and cancels it when the
    latency stays critical (see the module). `fired` then holds the reason."""

    def __init__(self, probe: LatencyProbe | None, db: Database, pid: int, throttle: ThrottleSettings,
                 index: str, interval_s: float = WATCH_INTERVAL_S) -> None:
        self.probe, self.db, self.pid, self.throttle, self.index = probe, db, pid, throttle, index
        self.interval_s = interval_s
        self.fired: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"latency-watch-{index}", daemon=True)

    def __enter__(self) -> BuildWatch:
        if self.probe is not None and self.throttle.latency_probe and self.probe.baseline_ms is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        assert self.probe is not None
        recent: list[float] = []
        while not self._stop.wait(self.interval_s):
            ms = self.probe.sample()
            if ms is None:
                continue
            recent = (recent + [ms])[-WATCH_WINDOW:]
            reason = critical_reason(self.probe, recent, self.throttle)
            if reason is not None:
                self.fired = reason
                log.warning("building %s: %s", self.index, reason)
                self._cancel()
                return

    def _cancel(self) -> None:
        try:
            with self.db.connection(autocommit=True) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_cancel_backend(%s)", (self.pid,))
        except (psycopg2.Error, IndexdError) as exc:
            log.error("could not cancel the build of %s under load: %s", self.index, first_line(exc))


def partition_gate(probe: LatencyProbe | None, throttle: ThrottleSettings, *,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> Callable[[], str | None]:
    """Between two partitions' builds: wait while the probe is above probe_max_ratio, up to PARTITION_PATIENCE;
    returns a reason to stop, or None to go on."""

    def gate() -> str | None:
        if probe is None or not throttle.latency_probe:
            return None
        deadline = clock() + PARTITION_PATIENCE.total_seconds()
        while True:
            reading = probe.burst(throttle)
            times = probe_excess(reading, throttle.probe_max_ratio, throttle.probe_floor.total_seconds() * 1000)
            if times is None or reading is None:
                return None
            if clock() >= deadline:
                return (f"the query latency probe stayed at {reading.current_ms:.1f} ms, {times:.1f}x its recent "
                        f"median (limit {throttle.probe_max_ratio:g}x) for {PARTITION_PATIENCE}")
            sleep(PARTITION_RECHECK_S)

    return gate
