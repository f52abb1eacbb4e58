"""pgbench with custom read scripts: TPS with no index, indexd's set and each platform algorithm's set.

The database is pgbench's own (`pgbench -i`, primary keys included) plus a filled pgbench_history (pgbench leaves
it empty: scale × 20,000 rows over 30 days). The scripts read by non-key columns: recent history of a teller,
the latest movements of a branch, time windows computed from a parameter, ranges, top-N by branch.
indexd learns the workload the daemon's way: the scripts run through pg_stat_statements, which normalizes them,
and `indexd recommend --dsn DSN --no-save --json` reads it there. The platform's algorithms are given one literal
instance of each statement, as a query file would give them.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.public import advisor, analytic, indexes
from bench.public import platform as ise
from indexd.embedded import EmbeddedCluster

DBNAME = "bench_pgbench"
HISTORY_PER_SCALE = 20_000
CAPTURE_CALLS = 8  # each script runs this often before indexd reads pg_stat_statements (min_calls is 5)
WARMUP_S = 5
CLIENTS = 2


@dataclass(frozen=True)
class Script:
    name: str
    params: tuple[tuple[str, int, int, bool], ...]  # (variable, low, high, high is per scale unit)
    sql: str

    def bounds(self, scale: int) -> list[tuple[str, int, int]]:
        return [(v, lo, hi * scale if per_scale else hi) for v, lo, hi, per_scale in self.params]

    def text(self, scale: int) -> str:
        """The pgbench script file."""
        sets = "".join(f"\\set {v} random({lo}, {hi})\n" for v, lo, hi in self.bounds(scale))
        return f"{sets}{self.sql};\n"

    def literal(self, scale: int, rng: random.Random) -> str:
        """One instance with its parameters written in, as an application's log would show it."""
        values = {v: rng.randint(lo, hi) for v, lo, hi in self.bounds(scale)}
        return re.sub(r":(\w+)", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), self.sql)


SCRIPTS = (
    Script("teller_recent", (("tid", 1, 10, True),),
           "SELECT aid, delta, mtime FROM pgbench_history WHERE tid = :tid AND mtime >= now() - interval '1 day' "
           "ORDER BY mtime DESC"),
    Script("branch_latest", (("bid", 1, 1, True),),
           "SELECT aid, delta, mtime FROM pgbench_history WHERE bid = :bid ORDER BY mtime DESC LIMIT 10"),
    Script("account_history", (("aid", 1, 100_000, True),),
           "SELECT count(*), sum(delta) FROM pgbench_history WHERE aid = :aid"),
    Script("time_window", (("hours", 1, 700, False),),
           "SELECT count(*), sum(delta) FROM pgbench_history "
           "WHERE mtime BETWEEN now() - (:hours + 2) * interval '1 hour' AND now() - :hours * interval '1 hour'"),
    Script("delta_range", (("d", -5000, 4990, False),),
           "SELECT tid, count(*) FROM pgbench_history WHERE delta BETWEEN :d AND :d + 10 GROUP BY tid"),
    Script("branch_top_accounts", (("bid", 1, 1, True),),
           "SELECT aid, abalance FROM pgbench_accounts WHERE bid = :bid ORDER BY abalance DESC LIMIT 10"),
    Script("account_range", (("aid", 1, 100_000, True),),
           "SELECT sum(abalance) FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 100"),
)


def _client(cluster: EmbeddedCluster) -> list[str]:
    return [str(cluster.bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", cluster.superuser]


def setup(cluster: EmbeddedCluster, scale: int) -> float:
    """pgbench's tables with their keys, a filled history, VACUUM ANALYZE; seconds taken."""
    t0 = time.perf_counter()
    cluster.create_database(DBNAME)
    subprocess.run([*_client(cluster), "-i", "-q", "-s", str(scale), "-I", "dtGvp", DBNAME], check=True,
                   capture_output=True, timeout=3600)
    conn = cluster.connect(DBNAME)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT setseed(0.42)")
            cur.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                        "SELECT 1 + floor(random() * %(s)s * 10), 1 + floor(random() * %(s)s), "
                        "1 + floor(random() * %(s)s * 100000), floor(random() * 10001) - 5000, "
                        "now() - random() * interval '30 days' FROM generate_series(1, %(n)s)",
                        {"s": scale, "n": scale * HISTORY_PER_SCALE})
            cur.execute("VACUUM ANALYZE")
    finally:
        conn.close()
    return time.perf_counter() - t0


def pgbench(cluster: EmbeddedCluster, files: list[Path], extra: list[str]) -> float:
    """Run pgbench on the script files (equal weights); its TPS."""
    args = [*_client(cluster), "-n", "-j", "1", *extra]
    for f in files:
        args += ["-f", f"{f}@1"]
    proc = subprocess.run([*args, DBNAME], capture_output=True, text=True, timeout=3600, check=False)
    match = re.search(r"^tps = ([\d.]+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}")
    return float(match.group(1))


def capture(cluster: EmbeddedCluster, files: list[Path]) -> None:
    """Each script CAPTURE_CALLS times after a reset, so pg_stat_statements holds the workload."""
    cluster.execute("SELECT pg_stat_statements_reset()", dbname=DBNAME)
    for f in files:
        pgbench(cluster, [f], ["-c", "1", "-t", str(CAPTURE_CALLS)])


def timed(cluster: EmbeddedCluster, files: list[Path], chosen: list[indexes.IndexDef], args: argparse.Namespace
          ) -> dict[str, Any]:
    """Build the set, warm up, median TPS of --runs runs, drop the set."""
    admin = cluster.connect(DBNAME)
    try:
        built = indexes.build(admin, chosen)
        try:
            pgbench(cluster, files, ["-c", str(CLIENTS), "-T", str(WARMUP_S)])
            tps = [pgbench(cluster, files, ["-c", str(CLIENTS), "-T", str(args.pgbench_seconds)])
                   for _ in range(max(args.runs, 1))]
        finally:
            indexes.drop(admin, built.names)
    finally:
        admin.close()
    return {"tps": statistics.median(tps), "all_tps": tps, "index_mb": round(built.bytes / 2**20, 1),
            "build_s": round(built.build_s, 1)}


def proposals(args: argparse.Namespace, cluster: EmbeddedCluster, budget: int) -> dict[str, analytic.Proposal]:
    dsn = cluster.dsn(DBNAME)
    out: dict[str, analytic.Proposal] = {"none": analytic.Proposal([], 0.0)}
    try:
        got = advisor.recommend(dsn, budget)
        out["indexd"] = analytic.Proposal(got.indexes, got.advise_s, sum(
            r.get("estimated_size_bytes") or 0 for r in got.raw), {"budget_mb": budget // 2**20}, got.notes)
    except Exception as exc:  # reported; the platform's algorithms still run
        out["indexd"] = analytic.Proposal([], 0.0, error=str(exc))
    rng = random.Random(7)
    literal = [(s.name, s.literal(args.pgbench_scale, rng)) for s in SCRIPTS]
    with ise.unpacked(args.platform, "127.0.0.1", cluster.port, cluster.superuser, args.algorithm_limit) as found:
        workload = found.workload(DBNAME, literal)
        for name in args.algorithms:
            try:
                choice = found.choose(name, DBNAME, dsn, workload, budget)
                out[name] = analytic.Proposal(indexes.dedupe(choice.indexes), choice.advise_s,
                                              choice.estimated_bytes, choice.parameters)
            except Exception as exc:  # the platform's code is not ours: reported, the others still run
                out[name] = analytic.Proposal([], 0.0, error=f"{type(exc).__name__}: {str(exc).strip()}")
    return out


def run(args: argparse.Namespace, cluster: EmbeddedCluster) -> dict[str, Any]:
    print(f"pgbench scale {args.pgbench_scale}: initializing", flush=True)
    setup_s = setup(cluster, args.pgbench_scale)
    conn = cluster.connect(DBNAME)
    try:
        tables, _ = analytic.table_bytes(conn)
    finally:
        conn.close()
    budget = int(tables * args.pgbench_budget / 100)
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
        files = []
        for s in SCRIPTS:
            files.append(Path(tmp) / f"{s.name}.sql")
            files[-1].write_text(s.text(args.pgbench_scale), encoding="utf-8")
        capture(cluster, files)
        chosen = proposals(args, cluster, budget)
        measured: dict[Any, dict[str, Any]] = {}
        tools: dict[str, dict[str, Any]] = {}
        for name, prop in chosen.items():
            entry: dict[str, Any] = {"indexes": [i.label() for i in prop.indexes], "advise_s": round(prop.advise_s, 2),
                                     "parameters": prop.parameters, "notes": prop.notes}
            if prop.error:
                tools[name] = {**entry, "error": prop.error}
                continue
            sig = indexes.signature(prop.indexes)
            if sig not in measured:
                measured[sig] = timed(cluster, files, prop.indexes, args)
                print(f"  {name}: {measured[sig]['tps']:.2f} TPS, {measured[sig]['index_mb']} MB", flush=True)
            tools[name] = {**entry, **measured[sig]}
    base = tools["none"]["tps"]
    for entry in tools.values():
        if "tps" in entry:
            entry["ratio"] = round(entry["tps"] / base, 2) if base else None
    return {"scale": args.pgbench_scale, "setup_s": round(setup_s, 1), "table_mb": round(tables / 2**20, 1),
            "budget_pct": args.pgbench_budget, "budget_mb": round(budget / 2**20, 1), "clients": CLIENTS,
            "seconds": args.pgbench_seconds, "runs": args.runs,
            "scripts": {s.name: s.sql for s in SCRIPTS}, "tools": tools}
