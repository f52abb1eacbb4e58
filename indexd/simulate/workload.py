"""Drive the shop workload: several client threads, each on its own connection, for a bounded time."""

from __future__ import annotations

import itertools
import logging
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg2
import psycopg2.extensions

from indexd.simulate.scenario import SCHEMA, Scenario, scenario
from indexd.simulate.shapes import SHAPES, Bounds, Shape

log = logging.getLogger(__name__)

Progress = Callable[[float, float, int], None]  # (elapsed_s, duration_s, calls so far)


@dataclass
class ShapeStats:
    name: str
    kind: str
    calls: int = 0
    errors: int = 0
    total_ms: float = 0.0
    samples: list[float] = field(default_factory=list)  # each call's ms, kept by time_alone only

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0

    @property
    def typical_ms(self) -> float:
        """The median call when each call was kept (a burst of load elsewhere moves it less), else the mean."""
        return statistics.median(self.samples) if self.samples else self.mean_ms

    def add(self, other: ShapeStats) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.total_ms += other.total_ms
        self.samples += other.samples


@dataclass
class WorkloadStats:
    """Per-shape client-side timings of one run."""

    duration_s: float = 0.0
    clients: int = 0
    shapes: dict[str, ShapeStats] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.shapes.values())

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.shapes.values())

    def merge(self, other: WorkloadStats) -> None:
        for name, st in other.shapes.items():
            self.shapes.setdefault(name, ShapeStats(name, st.kind)).add(st)
        self.last_error = other.last_error or self.last_error

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration_s, 2),
            "clients": self.clients,
            "calls": self.calls,
            "errors": self.errors,
            "shapes": {
                n: {"kind": s.kind, "calls": s.calls, "errors": s.errors, "mean_ms": round(s.mean_ms, 3)}
                for n, s in sorted(self.shapes.items())
            },
        }


def read_bounds(conn: psycopg2.extensions.connection, schema: str = SCHEMA) -> Bounds:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT (SELECT coalesce(max(id), 1) FROM {schema}.customers), "
            f"(SELECT coalesce(max(id), 1) FROM {schema}.products), "
            f"(SELECT coalesce(max(id), 1) FROM {schema}.orders)"
        )
        c, p, o = cur.fetchone()
    return Bounds(int(c), int(p), int(o))


class _Client(threading.Thread):
    """One simulated application connection issuing weighted random statements until the deadline."""

    def __init__(self, dsn: str, shapes: Sequence[Shape], bounds: Bounds, deadline: float, seed: int,
                 stop: threading.Event, statement_timeout_ms: int) -> None:
        super().__init__(name=f"simulate-client-{seed}", daemon=True)
        self.dsn, self.shapes, self.bounds, self.deadline = dsn, shapes, bounds, deadline
        self.rng = random.Random(seed)
        self.stop_event = stop
        self.timeout_ms = statement_timeout_ms
        self.stats = WorkloadStats(shapes={s.name: ShapeStats(s.name, s.kind) for s in shapes})
        self.cum_weights = list(itertools.accumulate(s.weight for s in shapes))

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn, application_name="indexd-simulate", connect_timeout=10)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('statement_timeout', %s, false)", (str(self.timeout_ms),))
        return conn

    def run(self) -> None:
        conn: psycopg2.extensions.connection | None = None
        try:
            while time.monotonic() < self.deadline and not self.stop_event.is_set():
                if conn is None or conn.closed:
                    conn = self._reconnect()
                    if conn is None:
                        continue
                shape = self.rng.choices(self.shapes, cum_weights=self.cum_weights)[0]
                self._execute(conn, shape)
        finally:
            if conn is not None and not conn.closed:
                conn.close()

    def _reconnect(self) -> psycopg2.extensions.connection | None:
        try:
            return self._connect()
        except psycopg2.Error as exc:
            self.stats.last_error = str(exc).strip()
            self.stop_event.wait(0.5)
            return None

    def _execute(self, conn: psycopg2.extensions.connection, shape: Shape) -> None:
        params = shape.params(self.rng, self.bounds)
        with conn.cursor() as cur:
            _time_one(cur, shape, params, self.stats, counted=True)


def time_alone(dsn: str, rounds: int = 30, seed: int = 1, shapes: Sequence[Shape] = SHAPES) -> WorkloadStats:
    """Each shape's time with nothing else running: one connection, every shape once per round, in turn, after one
    round of warm-up; parameters from a seeded generator, so two passes run the same statements. Each call's time
    is kept (`ShapeStats.typical_ms` is their median).

    A closed-loop run measures a shape's time next to whatever the other clients happen to run: once indexes make
    the lookups fast, the lookups run more often and the CPU-bound reports compete with them for the cores, so
    the reports look slower though their plans did not change. Timed alone, a shape's time is its plan's.
    """
    conn = psycopg2.connect(dsn, application_name="indexd-simulate", connect_timeout=10)
    conn.autocommit = True
    rng = random.Random(seed)
    stats = WorkloadStats(clients=1, shapes={s.name: ShapeStats(s.name, s.kind) for s in shapes})
    started = time.monotonic()
    try:
        bounds = read_bounds(conn)
        with conn.cursor() as cur:
            for round_ in range(rounds + 1):
                for shape in shapes:
                    _time_one(cur, shape, shape.params(rng, bounds), stats, counted=round_ > 0, keep=True)
    finally:
        conn.close()
    stats.duration_s = time.monotonic() - started
    return stats


def _time_one(cur: Any, shape: Shape, params: tuple[Any, ...], stats: WorkloadStats, counted: bool,
              keep: bool = False) -> None:
    st = stats.shapes[shape.name]
    t0 = time.perf_counter()
    try:
        cur.execute(shape.sql, params)
        if cur.description is not None:
            cur.fetchall()
    except psycopg2.Error as exc:
        st.errors += 1
        stats.last_error = f"{shape.name}: {str(exc).strip()}"
        return
    if counted:
        ms = (time.perf_counter() - t0) * 1000.0
        st.calls += 1
        st.total_ms += ms
        if keep:
            st.samples.append(ms)


def drive(
    dsn: str,
    scenario_name: str | Scenario = "small",
    duration: timedelta = timedelta(seconds=60),
    clients: int = 2,
    progress: Progress | None = None,
    seed: int = 1,
    stop: threading.Event | None = None,
    shapes: Sequence[Shape] = SHAPES,
) -> WorkloadStats:
    """Run the mixed workload for `duration` with `clients` threads; returns per-shape calls and mean ms.

    `stop` ends the run early; `progress` is called about once a second from the calling thread.
    """
    scenario(scenario_name)  # validates the name; sizes come from the data actually loaded
    seconds = max(0.0, duration.total_seconds())
    stop = stop or threading.Event()
    conn = psycopg2.connect(dsn, application_name="indexd-simulate", connect_timeout=10)
    try:
        bounds = read_bounds(conn)
    finally:
        conn.close()
    started = time.monotonic()
    deadline = started + seconds
    timeout_ms = int(min(30.0, max(1.0, seconds)) * 1000)
    threads = [_Client(dsn, shapes, bounds, deadline, seed * 1000 + i, stop, timeout_ms) for i in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if progress is not None:
            progress(time.monotonic() - started, seconds, sum(t.stats.calls for t in threads))
        stop.wait(min(1.0, max(0.05, deadline - time.monotonic())))
        if stop.is_set():
            break
    for t in threads:
        t.join(timeout=35)
    total = WorkloadStats(duration_s=time.monotonic() - started, clients=clients)
    for t in threads:
        total.merge(t.stats)
    if total.last_error:
        log.warning("simulate: %d statement(s) failed, last: %s", total.errors, total.last_error)
    log.info("simulate: %d statements in %.1fs with %d clients", total.calls, total.duration_s, clients)
    return total
