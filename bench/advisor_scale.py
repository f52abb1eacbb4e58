"""The advisor's own runtime and peak memory for many distinct statements over many tables.

    python -m bench.advisor_scale [--runs 3]

Targets: 5,000 statements over 200 tables in <= 60 s and <= 300 MB peak RSS, growth close to linear. Each
measurement runs `advise()` in a child process (so peak RSS is its own). Writes bench/results/advisor_scale.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from indexd.embedded import EmbeddedCluster

RESULTS = Path(__file__).parent / "results"
GRID = [(100, 10), (1000, 10), (5000, 10), (100, 200), (1000, 200), (5000, 200)]


def one(dsn: str, n: int, tables: int) -> None:
    """Child: advise on n statements; print elapsed seconds, peak RSS MB and counts as JSON."""
    from bench.workloads.scale import statements
    from indexd.advisor.pipeline import advise
    from indexd.config.schema import DatabaseSettings, IndexingSettings, PoolSettings
    from indexd.db.pool import Database
    from indexd.workload.lookback import given_workload

    stmts = statements(n, tables)
    db = Database(DatabaseSettings(name="scale", dsn=dsn, pool=PoolSettings(size=2)))
    try:
        t0 = time.perf_counter()
        settings = IndexingSettings(min_calls=1, max_indexes_per_table=3)
        advice = advise(db, settings, given_workload(stmts, settings))
        elapsed = time.perf_counter() - t0
    finally:
        db.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"elapsed_s": elapsed, "peak_rss_mb": peak_mb, "recommendations": len(advice.recommendations),
                      "skipped": len(advice.skipped)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("DSN", "N", "TABLES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        one(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    from bench.workloads.scale import schema_sql

    results = []
    with EmbeddedCluster(settings={"shared_buffers": "256MB"}) as cluster:
        dsns = {}
        for tables in sorted({t for _, t in GRID}):
            name = f"scale_{tables}"
            cluster.create_database(name)
            conn = cluster.connect(name)
            with conn.cursor() as cur:
                cur.execute("CREATE SCHEMA scale")
                for stmt in schema_sql(tables):
                    cur.execute(stmt)
                cur.execute("ANALYZE")
            conn.close()
            dsns[tables] = cluster.dsn(name)
        for n, tables in GRID:
            runs = []
            for _ in range(args.runs if n < 5000 else max(1, min(args.runs, 3))):
                out = subprocess.run([sys.executable, "-m", "bench.advisor_scale", "--child", dsns[tables], str(n),
                                      str(tables)], capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            row = {"statements": n, "tables": tables,
                   "elapsed_s": round(statistics.median(r["elapsed_s"] for r in runs), 2),
                   "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs), 1),
                   "recommendations": runs[0]["recommendations"], "skipped": runs[0]["skipped"], "runs": len(runs)}
            results.append(row)
            print(f"{n:>6} statements / {tables:>3} tables: {row['elapsed_s']:>7.2f} s  {row['peak_rss_mb']:>6.1f} MB"
                  f"  {row['recommendations']} recommended, {row['skipped']} skipped", flush=True)
    base = results[0]
    for row in results:
        row["time_per_statement_ms"] = round(1000 * row["elapsed_s"] / row["statements"], 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "advisor_scale.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"per-statement time: {base['time_per_statement_ms']} ms at {base['statements']} statements, "
          + ", ".join(f"{r['time_per_statement_ms']} ms at {r['statements']}/{r['tables']}" for r in results[1:]))


if __name__ == "__main__":
    main()
