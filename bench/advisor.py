"""Advisor quality: real workload time before and after building each contender's indexes.

    python -m bench.advisor [--scenario medium] [--executions 3000] [--runs 3]

On a private cluster: load the synthetic shop (skewed data, write-heavy tables, 28 statement shapes), run a fixed,
seeded sequence of executions once so pg_stat_statements sees the workload, then let each contender pick indexes:
indexd (`advise`), Dexter's rule, supabase index_advisor's rule (bench/advisor_baselines.py) and a DBA's
hand-picked set. Each contender's indexes are built on a fresh copy of the loaded database and the same sequence
is replayed and timed (median of --runs). Prints ratios against no new index; writes bench/results/advisor.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from bench.advisor_baselines import dexter, supabase_index_advisor
from indexd.advisor.catalog import load_catalog
from indexd.advisor.model import IndexCandidate, IndexKey
from indexd.advisor.pipeline import advise
from indexd.advisor.whatif import WhatIf
from indexd.config.schema import DatabaseSettings, IndexingSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.simulate.data import setup
from indexd.simulate.shapes import SHAPES, Shape
from indexd.simulate.workload import read_bounds
from indexd.workload.capture import workload
from indexd.workload.lookback import capture_workload

RESULTS = Path(__file__).parent / "results"
TEMPLATE = "bench_shop"
SLOWER = 1.10  # a shape whose median time grew by more than this counts as slower

DBA = [
    IndexCandidate("shop", "customers", (IndexKey(expression="lower(email)"),)),
    IndexCandidate("shop", "orders", (IndexKey("customer_id"), IndexKey("created_at"))),
    IndexCandidate("shop", "orders", (IndexKey("created_at"),)),
    IndexCandidate("shop", "orders", (IndexKey("created_at"),), where="status = 'pending'"),
    IndexCandidate("shop", "order_items", (IndexKey("product_id"),)),
    IndexCandidate("shop", "payments", (IndexKey("order_id"),)),
    IndexCandidate("shop", "products", (IndexKey("sku"),)),
    IndexCandidate("shop", "products", (IndexKey("category"), IndexKey("price"))),
]


@dataclass
class Run:
    build_s: float
    index_bytes: int
    shape_ms: dict[str, float] = field(default_factory=dict)
    errors: int = 0


def executions(n: int, seed: int, bounds: Any) -> list[tuple[Shape, tuple[Any, ...]]]:
    rng = random.Random(seed)
    shapes = rng.choices(SHAPES, weights=[s.weight for s in SHAPES], k=n)
    return [(s, s.params(rng, bounds)) for s in shapes]


def replay(conn: psycopg2.extensions.connection,
           plan: list[tuple[Shape, tuple[Any, ...]]]) -> tuple[dict[str, float], int]:
    """Run every execution once, in order; per-shape total ms."""
    totals: dict[str, float] = {s.name: 0.0 for s in SHAPES}
    errors = 0
    with conn.cursor() as cur:
        for shape, params in plan:
            t0 = time.perf_counter()
            try:
                cur.execute(shape.sql, params)
                if cur.description is not None:
                    cur.fetchall()
            except psycopg2.Error:
                errors += 1
            totals[shape.name] += (time.perf_counter() - t0) * 1000.0
    return totals, errors


def fresh_copy(cluster: EmbeddedCluster, name: str) -> None:
    cluster.drop_database(name)
    cluster.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))


def build(conn: psycopg2.extensions.connection, indexes: list[IndexCandidate]) -> tuple[float, int]:
    t0 = time.perf_counter()
    size = 0
    with conn.cursor() as cur:
        for cand in indexes:
            cur.execute(cand.create_sql(concurrently=False))
            cur.execute("SELECT pg_relation_size(%s::regclass)",
                        (sql.Identifier(cand.schema, cand.name()).as_string(conn),))
            size += int(cur.fetchone()[0])
        cur.execute("ANALYZE")
    return time.perf_counter() - t0, size


def measure(cluster: EmbeddedCluster, indexes: list[IndexCandidate], plan: list[Any], warm: list[Any]) -> Run:
    fresh_copy(cluster, "bench_run")
    conn = cluster.connect("bench_run")
    try:
        build_s, size = build(conn, indexes)
        replay(conn, warm)
        shape_ms, errors = replay(conn, plan)
    finally:
        conn.close()
    return Run(build_s, size, shape_ms, errors)


def observe(cluster: EmbeddedCluster, plan: list[Any]) -> Database:
    """Replay once on a copy with pg_stat_statements reset, so the contenders see the workload."""
    fresh_copy(cluster, "bench_observe")
    conn = cluster.connect("bench_observe")
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
            cur.execute("SELECT pg_stat_statements_reset(), pg_stat_reset()")
        replay(conn, plan)
    finally:
        conn.close()
    return Database(DatabaseSettings(name="bench", dsn=cluster.dsn("bench_observe"), pool=PoolSettings(size=2)))


def contenders(db: Database) -> dict[str, tuple[list[IndexCandidate], float]]:
    """Each contender's index set and the seconds it took to choose it."""
    settings = IndexingSettings()
    out: dict[str, tuple[list[IndexCandidate], float]] = {"none": ([], 0.0), "dba": (DBA, 0.0)}
    t0 = time.perf_counter()
    advice = advise(db, settings, capture_workload(db, settings))
    out["indexd"] = ([r.candidate for r in advice.recommendations], time.perf_counter() - t0)
    statements = workload(db, settings.lookback, min_calls=1)
    with db.connection() as conn:
        catalog = load_catalog(conn)
    rules: dict[str, Callable[..., list[IndexCandidate]]] = {
        "dexter": dexter, "supabase_index_advisor": supabase_index_advisor}
    for name, rule in rules.items():
        t0 = time.perf_counter()
        with WhatIf(db, max_hypothetical=100_000) as wi:
            out[name] = (rule(wi, statements, catalog), time.perf_counter() - t0)
    return out


def summarize(runs: dict[str, list[Run]], chosen: dict[str, tuple[list[IndexCandidate], float]]) -> dict[str, Any]:
    kinds = {s.name: s.kind for s in SHAPES}
    median = {name: {shape: statistics.median(r.shape_ms[shape] for r in rs) for shape in kinds}
              for name, rs in runs.items()}
    base = median["none"]
    out: dict[str, Any] = {}
    for name, per_shape in median.items():
        total = sum(per_shape.values())
        writes = sum(v for k, v in per_shape.items() if kinds[k] == "write")
        # slower in every run, not only in the median: one noisy run on a busy host is not a regression
        slower = sorted(k for k in per_shape if all(
            r.shape_ms[k] > base[k] * SLOWER and r.shape_ms[k] - base[k] > 5.0 for r in runs[name]))
        out[name] = {
            "indexes": [f"{c.schema}.{c.table} ({', '.join(k.label() for k in c.keys)})"
                        + (f" WHERE {c.where}" if c.where else "") for c in chosen[name][0]],
            "advise_s": round(chosen[name][1], 2),
            "index_mb": round(statistics.median(r.index_bytes for r in runs[name]) / 2**20, 1),
            "build_s": round(statistics.median(r.build_s for r in runs[name]), 2),
            "workload_ms": round(total, 1),
            "speedup": round(sum(base.values()) / total, 2) if total else None,
            "write_ms": round(writes, 1),
            "write_change_pct": round(100.0 * (writes / max(sum(
                v for k, v in base.items() if kinds[k] == "write"), 1e-9) - 1), 1),
            "slower_shapes": slower,
            "errors": max(r.errors for r in runs[name]),
            "per_shape_ms": {k: round(v, 1) for k, v in per_shape.items()},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="medium")
    ap.add_argument("--executions", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    with EmbeddedCluster(settings={"shared_buffers": "512MB", "work_mem": "16MB"}) as cluster:
        cluster.create_database(TEMPLATE)
        t0 = time.perf_counter()
        setup(cluster.dsn(TEMPLATE), args.scenario)
        load_s = time.perf_counter() - t0
        conn = cluster.connect(TEMPLATE)
        bounds = read_bounds(conn)
        conn.close()
        plan = executions(args.executions, args.seed, bounds)
        warm = executions(max(100, args.executions // 10), args.seed + 1, bounds)
        db = observe(cluster, plan)
        try:
            chosen = contenders(db)
        finally:
            db.close()
        runs: dict[str, list[Run]] = {name: [] for name in chosen}
        for r in range(args.runs):
            for name, (indexes, _) in chosen.items():
                runs[name].append(measure(cluster, indexes, plan, warm))
                print(f"run {r + 1}/{args.runs} {name:<24} {sum(runs[name][-1].shape_ms.values()):>10.0f} ms",
                      flush=True)
    result = {"scenario": args.scenario, "executions": args.executions, "runs": args.runs, "load_s": round(load_s, 1),
              "contenders": summarize(runs, chosen)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "advisor.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"\n{'contender':<24}{'speed-up':>9}{'index MB':>10}{'#idx':>6}{'writes':>9}  slower shapes")
    for name, c in result["contenders"].items():
        print(f"{name:<24}{c['speedup']:>8}x{c['index_mb']:>10}{len(c['indexes']):>6}"
              f"{c['write_change_pct']:>+8}%  {', '.join(c['slower_shapes']) or '-'}")
    for name, c in result["contenders"].items():
        print(f"\n{name}: " + ("; ".join(c["indexes"]) or "no index"))


if __name__ == "__main__":
    main()
