"""TPC-H (or TPC-DS) at equal storage budgets: indexd's advice against the platform's algorithms, on real
execution times.

For each budget (a share of the tables' size) every tool proposes an index set on the loaded database without
any index; then each distinct set is built for real, the 22 queries are run, and the set is dropped
(bench/public/measure.py says how passes and timeouts count). The no-index baseline is measured the same way in
the same run.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from bench.public import advisor, measure, tpch
from bench.public import platform as ise
from bench.public.indexes import IndexDef, dedupe, signature
from indexd.embedded import EmbeddedCluster

log = logging.getLogger(__name__)
TITLES = {"tpch": "TPC-H", "tpcds": "TPC-DS"}


@dataclass
class Proposal:
    """One tool's index set for one budget, and how it got it."""

    indexes: list[IndexDef]
    advise_s: float
    estimated_bytes: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def table_bytes(conn: psycopg2.extensions.connection) -> tuple[int, int]:
    """The user tables' size (heap and TOAST, no index) and the whole database's."""
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(pg_table_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'")
        tables = int(cur.fetchone()[0])
        cur.execute("SELECT pg_database_size(current_database())")
        return tables, int(cur.fetchone()[0])


def propose_indexd(dsn: str, budget: int, query_file: Path) -> Proposal:
    try:
        got = advisor.recommend(dsn, budget, query_file)
    except Exception as exc:  # one failing tool is reported, the others still run
        return Proposal([], 0.0, error=str(exc))
    estimated = sum(r.get("estimated_size_bytes") or 0 for r in got.raw)
    return Proposal(got.indexes, got.advise_s, estimated,
                    {"budget_mb": budget // 2**20, "reported_s": got.reported_s}, got.notes)


def propose_platform(found: ise.Platform, name: str, dbname: str, dsn: str, workload: Any, budget: int) -> Proposal:
    try:
        choice = found.choose(name, dbname, dsn, workload, budget)
    except Exception as exc:  # the platform's code is not ours: a crash is reported, the others still run
        log.debug("%s failed: %s", name, traceback.format_exc())
        return Proposal([], 0.0, error=f"{type(exc).__name__}: {str(exc).strip()}")
    return Proposal(dedupe(choice.indexes), choice.advise_s, choice.estimated_bytes, choice.parameters)


def proposals(args: argparse.Namespace, cluster: EmbeddedCluster, dbname: str, queries: list[tuple[str, str]],
              budgets: dict[int, int]) -> dict[int, dict[str, Proposal]]:
    """Every tool's index set for every budget, all on the database without indexes."""
    dsn = cluster.dsn(dbname)
    out: dict[int, dict[str, Proposal]] = {pct: {} for pct in budgets}
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as tmp:
        query_file = Path(tmp) / "workload.sql"
        advisor.write_queries(query_file, [text for _, text in queries])
        for pct, budget in budgets.items():
            out[pct]["indexd"] = propose_indexd(dsn, budget, query_file)
            print(f"  {pct:>3}% indexd: {len(out[pct]['indexd'].indexes)} indexes "
                  f"in {out[pct]['indexd'].advise_s:.1f} s", flush=True)
    with ise.unpacked(args.platform, "127.0.0.1", cluster.port, cluster.superuser, args.algorithm_limit) as found:
        workload = found.workload(dbname, [(int(name[1:]), text) for name, text in queries])
        for pct, budget in budgets.items():
            for name in args.algorithms:
                out[pct][name] = propose_platform(found, name, dbname, dsn, workload, budget)
                got = out[pct][name]
                print(f"  {pct:>3}% {name}: " + (f"failed: {got.error}" if got.error else
                      f"{len(got.indexes)} indexes in {got.advise_s:.1f} s"), flush=True)
    return out


def measure_all(cluster: EmbeddedCluster, dbname: str, queries: list[tuple[str, str]],
                chosen: dict[int, dict[str, Proposal]], timeout_s: float,
                runs: int) -> tuple[measure.Measurement, dict[Any, measure.Measurement]]:
    """The baseline, then each distinct index set once (equal sets proposed by several tools share one run)."""
    admin = cluster.connect(dbname)
    dsn = cluster.dsn(dbname)
    try:
        base = measure.measure(admin, dsn, [], queries, timeout_s, runs)
        print(f"  no index: {base.total_s:.1f} s, timeouts {base.timeouts or '-'}", flush=True)
        done: dict[Any, measure.Measurement] = {signature([]): base}
        for pct, tools in chosen.items():
            for name, prop in tools.items():
                sig = signature(prop.indexes)
                if prop.error or sig in done:
                    continue
                done[sig] = measure.measure(admin, dsn, prop.indexes, queries, timeout_s, runs)
                print(f"  {pct:>3}% {name}: {done[sig].total_s:.1f} s, "
                      f"{done[sig].index_bytes / 2**20:.1f} MB, timeouts {done[sig].timeouts or '-'}", flush=True)
    finally:
        admin.close()
    return base, done


def row(prop: Proposal, got: measure.Measurement | None, base: measure.Measurement) -> dict[str, Any]:
    out: dict[str, Any] = {"indexes": [i.label() for i in prop.indexes], "advise_s": round(prop.advise_s, 2),
                           "parameters": prop.parameters}
    if prop.estimated_bytes is not None:
        out["estimated_mb"] = round(prop.estimated_bytes / 2**20, 1)
    if prop.notes:
        out["notes"] = prop.notes
    if prop.error or got is None:
        out["error"] = prop.error
        return out
    out.update({
        "workload_s": round(got.total_s, 2),
        "speedup": round(base.total_s / got.total_s, 2) if got.total_s else None,
        "index_mb": round(got.index_bytes / 2**20, 1),
        "build_s": round(got.build_s, 1),
        "timeouts": got.timeouts,
        "errors": got.errors,
        "pass_totals_s": [round(p, 2) for p in got.passes],
        "load_average": got.load_average,
        "per_query_s": {k: round(v, 3) for k, v in got.per_query_s.items()},
    })
    return out


def run(args: argparse.Namespace, cluster: EmbeddedCluster, benchmark: str = "tpch") -> dict[str, Any]:
    dbname = f"bench_{benchmark}"
    cluster.create_database(dbname)
    admin = cluster.connect(dbname)
    try:
        print(f"{TITLES[benchmark]} SF {args.sf}: generating and loading", flush=True)
        data = tpch.build(admin, benchmark, args.sf)
        tables, database = table_bytes(admin)
    finally:
        admin.close()
    queries = [(f"q{q.nr}", q.text) for q in data.queries]
    timeout_s = args.timeout or max(5.0, 60.0 * args.sf)
    budgets = {pct: int(tables * pct / 100) for pct in args.budgets}
    print(f"tables {tables / 2**20:.0f} MB, database {database / 2**20:.0f} MB, statement_timeout {timeout_s:g} s; "
          "proposals:", flush=True)
    chosen = proposals(args, cluster, dbname, queries, budgets)
    how = "one timed pass after a warm-up" if args.runs <= 1 else f"median of {args.runs} passes"
    print(f"real execution ({how}):", flush=True)
    base, done = measure_all(cluster, dbname, queries, chosen, timeout_s, args.runs)
    return {
        "benchmark": benchmark, "title": TITLES[benchmark], "scale_factor": args.sf, "queries": len(queries),
        "generate_s": data.generate_s,
        "load_s": data.load_s, "table_mb": round(tables / 2**20, 1), "database_mb": round(database / 2**20, 1),
        "statement_timeout_s": timeout_s, "runs": args.runs,
        "no_index": row(Proposal([], 0.0), base, base),
        "budgets": {
            f"{pct}%": {"budget_mb": round(budgets[pct] / 2**20, 1),
                        "tools": {name: row(prop, done.get(signature(prop.indexes)), base)
                                  for name, prop in tools.items()}}
            for pct, tools in chosen.items()
        },
    }
