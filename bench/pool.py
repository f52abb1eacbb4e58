"""Pool overhead and recovery time: `python -m bench.pool [--rounds N] [--units N] [--restarts N]`.

Overhead: a job's unit of work (one checkout, 20 short statements: SELECT 1 and an indexed lookup, in one
transaction) through indexd's Database, against the same statements on one persistent psycopg2 connection.
Components: the check on checkout (pre_ping; by default skipped for a connection that worked less than 0.5 s
ago, so a variant checks on every checkout), the reset on return, and `connection()` instead of `run()`.
Rounds interleave the variants; medians of the rounds are reported.

Recovery: after a server restart, seconds from `pg_ctl start -w` returning (the server accepts connections) to
indexd's first successful `Database.run`: (a) with an idle pool whose connections died in the restart, and
(b) with a `run` that was already retrying (default retry settings) while the server was down.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg2

from indexd.config.schema import DatabaseSettings, PoolSettings, RetrySettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.errors import ConnectionFailed

RESULTS = Path(__file__).resolve().parent / "results" / "pool.json"
STATEMENTS = 20


def unit(conn: Any) -> int:
    total = 0
    with conn.cursor() as cur:
        for i in range(STATEMENTS):
            if i % 2:
                cur.execute("SELECT v FROM items WHERE id = %s", (i * 37 % 10_000 + 1,))
            else:
                cur.execute("SELECT 1")
            total += len(cur.fetchone())
    return total


def prepare(cluster: EmbeddedCluster) -> str:
    cluster.create_database("bench", extensions=())
    cluster.execute("CREATE TABLE items (id int PRIMARY KEY, v text)", dbname="bench")
    cluster.execute("INSERT INTO items SELECT i, md5(i::text) FROM generate_series(1, 10000) i", dbname="bench")
    cluster.execute("VACUUM ANALYZE items", dbname="bench")
    return cluster.dsn("bench")


def variants(dsn: str) -> tuple[dict[str, Callable[[], object]], list[Callable[[], None]]]:
    raw = psycopg2.connect(dsn)

    def raw_unit() -> None:
        unit(raw)
        raw.commit()

    base = DatabaseSettings(name="bench", dsn=dsn, pool=PoolSettings(size=2, max_overflow=0))
    no_ping = replace(base, pool=replace(base.pool, pre_ping=False))
    dbs = {
        "indexd": Database(base),
        "indexd_check_every_checkout": Database(base, check_bypass=0.0),
        "indexd_no_pre_ping": Database(no_ping),
        "indexd_no_reset": Database(base, reset_on_return=None),
        "indexd_check_every_checkout_no_reset": Database(base, check_bypass=0.0, reset_on_return=None),
    }
    runs: dict[str, Callable[[], object]] = {"raw_psycopg2": raw_unit}
    for name, db in dbs.items():
        runs[name] = functools.partial(db.run, unit)

    def via_connection(db: Database = dbs["indexd"]) -> None:
        with db.connection() as conn:
            unit(conn)

    runs["indexd_connection_no_retry_wrapper"] = via_connection
    closers = [raw.close] + [db.close for db in dbs.values()]
    return runs, closers


def overhead(dsn: str, rounds: int, units: int) -> dict[str, Any]:
    runs, closers = variants(dsn)
    names = list(runs)
    per_unit: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    try:
        for fn in runs.values():  # warm up: connections made, plans cached
            for _ in range(50):
                fn()
        for r in range(rounds):
            # Interleave unit by unit, rotating the order, so a burst of load on a shared machine hits every
            # variant alike; each round yields the median unit time per variant.
            order = names[r % len(names):] + names[: r % len(names)]
            times: dict[str, list[float]] = {name: [] for name in names}
            cpus: dict[str, list[float]] = {name: [] for name in names}
            for _ in range(units):
                for name in order:
                    fn = runs[name]
                    started, cpu_started = time.perf_counter(), time.process_time()
                    fn()
                    times[name].append(time.perf_counter() - started)
                    cpus[name].append(time.process_time() - cpu_started)
            for name in names:
                per_unit[name].append(statistics.median(times[name]))
                cpu[name].append(statistics.mean(cpus[name]))
    finally:
        for close in closers:
            close()
    medians = {name: statistics.median(values) for name, values in per_unit.items()}
    base = medians["raw_psycopg2"]
    return {
        "unit_statements": STATEMENTS,
        "rounds": rounds,
        "units_per_round": units,
        "median_unit_us": {name: round(v * 1e6, 1) for name, v in medians.items()},
        "ratio_to_raw": {name: round(v / base, 3) for name, v in medians.items()},
        # Time this client process spent on the CPU per unit: our Python overhead, little affected by load.
        "median_client_cpu_us": {name: round(statistics.median(v) * 1e6, 1) for name, v in cpu.items()},
    }


def empty_unit_cost(dsn: str, n: int = 2000) -> dict[str, float]:
    """What one checkout + return costs on its own (µs), with and without the check on checkout."""
    base = DatabaseSettings(name="bench", dsn=dsn, pool=PoolSettings(size=2, max_overflow=0))
    out = {}
    no_ping = replace(base, pool=replace(base.pool, pre_ping=False))
    for name, settings, bypass in (("check_every_checkout", base, 0.0), ("check_bypassed_when_just_used", base, 0.5),
                                   ("no_pre_ping", no_ping, 0.5)):
        db = Database(settings, check_bypass=bypass)
        try:
            for _ in range(100):
                db.run(lambda c: None)
            samples = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(n // 5):
                    db.run(lambda c: None)
                samples.append((time.perf_counter() - started) / (n // 5))
            out[name] = round(statistics.median(samples) * 1e6, 1)
        finally:
            db.close()
    return out


def recovery_idle_pool(cluster: EmbeddedCluster, dsn: str, restarts: int) -> list[float]:
    db = Database(DatabaseSettings(name="bench", dsn=dsn))
    times = []
    try:
        for _ in range(restarts):
            db.run(unit)
            cluster.stop("fast")
            cluster.start()
            ready = time.monotonic()
            db.run(unit)
            times.append(time.monotonic() - ready)
    finally:
        db.close()
    return times


def recovery_while_retrying(cluster: EmbeddedCluster, dsn: str, restarts: int, down: float) -> dict[str, Any]:
    """Default retry settings; a fresh Database per trial so one trial's breaker does not decide the next."""
    times, gave_up = [], 0
    for _ in range(restarts):
        db = Database(DatabaseSettings(name="bench", dsn=dsn), RetrySettings())
        try:
            db.run(unit)
            cluster.stop("fast")
            done: dict[str, float] = {}

            def job(db: Database = db, done: dict[str, float] = done) -> None:
                try:
                    db.run(unit)
                    done["at"] = time.monotonic()
                except ConnectionFailed:
                    done["gave_up"] = time.monotonic()

            worker = threading.Thread(target=job)
            worker.start()
            time.sleep(down)
            cluster.start()
            ready = time.monotonic()
            worker.join(180)
            if "at" in done:
                times.append(done["at"] - ready)
            else:
                gave_up += 1
        finally:
            db.close()
    return {
        "server_down_s": down,
        "median": round(statistics.median(times), 3) if times else None,
        "all": [round(t, 3) for t in times],
        "gave_up": gave_up,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--down", type=float, default=2.0, help="seconds the server stays down while retrying")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    load = os.getloadavg()[0]
    with EmbeddedCluster() as cluster:
        dsn = prepare(cluster)
        result = overhead(dsn, args.rounds, args.units)
        result["empty_unit_us"] = empty_unit_cost(dsn)
        idle = recovery_idle_pool(cluster, dsn, args.restarts)
        retrying = recovery_while_retrying(cluster, dsn, args.restarts, args.down)
    result["load_average_at_start"] = round(load, 2)
    result["recovery_idle_pool_s"] = {"median": round(statistics.median(idle), 4), "all": [round(t, 4) for t in idle]}
    result["recovery_while_retrying_s"] = retrying
    print(f"load average at start: {load:.2f} on {os.cpu_count()} CPUs (wall-clock ratios are noisy when high)")
    print(f"unit of work: {STATEMENTS} statements, median of {args.rounds} rounds of {args.units} interleaved units")
    for name, us in result["median_unit_us"].items():
        print(f"  {name:38s} {us:8.1f} us   x{result['ratio_to_raw'][name]:.3f} of raw psycopg2"
              f"   (client CPU {result['median_client_cpu_us'][name]:.1f} us)")
    print(f"checkout + return alone: {result['empty_unit_us']} us")
    print(f"target: indexd <= x1.15 of raw; measured x{result['ratio_to_raw']['indexd']:.3f}")
    print(f"recovery, idle pool (target <= 1 s): median {result['recovery_idle_pool_s']['median']:.4f} s")
    print(f"recovery, run retrying during {args.down:g} s down (default retry settings): median "
          f"{retrying['median']} s over {len(retrying['all'])} runs; {retrying['gave_up']} gave up during the outage")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
