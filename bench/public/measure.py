"""Real execution of a query workload under one index set: build, time, drop.

Every query runs with a statement_timeout; a query that times out counts at the timeout value. With one run the
timed pass follows a warm-up pass; with several, each query's median over the runs is taken (the first, colder
pass is the one a median discards). A query stops being run once it has timed out in a majority of the timed
passes (its median is the timeout whatever the other passes give), so a query that never finishes costs the
shared machine no more timeouts than its median needs; with one timed pass, a timeout in the warm-up counts as
its answer.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg2
from psycopg2 import errors

from bench.public.indexes import IndexDef, build, drop


@dataclass
class Pass:
    seconds: dict[str, float] = field(default_factory=dict)  # query -> seconds (the timeout value if it timed out)
    timeouts: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class Measurement:
    index_bytes: int
    build_s: float
    per_query_s: dict[str, float]  # median over the timed passes
    timeouts: list[str]
    errors: dict[str, str]
    passes: list[float]  # each timed pass's total
    load_average: float  # the host's 1-minute load when the set was measured: the noise on a shared machine

    @property
    def total_s(self) -> float:
        return sum(self.per_query_s.values())


def run_pass(dsn: str, queries: list[tuple[str, str]], timeout_s: float, skip: set[str] | None = None) -> Pass:
    """Each query once, in order, on one connection; `skip` counts as timed out without running."""
    out = Pass()
    conn = psycopg2.connect(dsn, application_name="bench-public")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = %s", (int(timeout_s * 1000),))
            for name, text in queries:
                if skip and name in skip:
                    out.seconds[name] = timeout_s
                    out.timeouts.add(name)
                    continue
                t0 = time.perf_counter()
                try:
                    cur.execute(text)
                    if cur.description is not None:
                        cur.fetchall()
                    out.seconds[name] = time.perf_counter() - t0
                except errors.QueryCanceled:
                    out.seconds[name] = timeout_s
                    out.timeouts.add(name)
                except psycopg2.Error as exc:
                    out.seconds[name] = time.perf_counter() - t0
                    out.errors[name] = str(exc).splitlines()[0]
    finally:
        conn.close()
    return out


def measure(admin: psycopg2.extensions.connection, dsn: str, indexes: list[IndexDef],
            queries: list[tuple[str, str]], timeout_s: float, runs: int) -> Measurement:
    """Build the set, time the workload (see the module's docstring), drop the set."""
    built = build(admin, indexes)
    load = os.getloadavg()[0]
    majority = max(runs, 1) // 2 + 1
    try:
        warm = run_pass(dsn, queries, timeout_s) if runs <= 1 else Pass()
        counts = Counter(warm.timeouts)
        passes = []
        for _ in range(max(runs, 1)):
            settled = {q for q, n in counts.items() if n >= majority}
            passes.append(run_pass(dsn, queries, timeout_s, skip=settled))
            counts.update(passes[-1].timeouts - settled)
    finally:
        drop(admin, built.names)
    per_query = {name: statistics.median(p.seconds[name] for p in passes) for name, _ in queries}
    timeouts = sorted((q for q in counts if per_query[q] >= timeout_s), key=_order)
    errs = {**warm.errors, **{k: v for p in passes for k, v in p.errors.items()}}
    return Measurement(built.bytes, built.build_s, per_query, timeouts, errs, [sum(p.seconds.values()) for p in passes],
                       round(load, 2))


def _order(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 0, name)
