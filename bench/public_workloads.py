"""indexd's advisor against published index selection algorithms, at equal storage budgets, on real execution
times of public workloads (TPC-H, TPC-DS, pgbench).

    python -m bench.public_workloads [--sf 0.2] [--runs 3] [--budgets 5,10,25,50] [--pgbench-scale 50]
                                     [--platform PATH] [--workloads tpch,pgbench] [--algorithm-limit 900]

TPC-H: data and the 22 query texts from DuckDB's TPC-H extension (PyPI, offline), loaded without keys or
indexes as the evaluation platform of Kossmann et al. (PVLDB 2020) loads them. For each budget (a share of the
tables' size) indexd (`indexd recommend --queries FILE --budget-mb N --no-save --json`) and the platform's
algorithms (Extend, DB2Advis, Relaxation, AutoAdmin, Drop; run from an unpacked copy of --platform) propose
indexes; each set is built for real and the 22 queries run with a statement_timeout (timeouts count at its value).
TPC-DS (`--workloads tpcds`, 99 queries from DuckDB's TPC-DS extension) runs the same way.
pgbench: custom read scripts through pg_stat_statements, so indexd sees normalized statements (the daemon's
path: `indexd recommend --dsn DSN --no-save --json`); the platform's algorithms get the literal statements; TPS
with no index, indexd's set and each algorithm's set at one budget.

Prints ratios against the no-index baseline of the same run; writes bench/results/public_workloads.json.
Everything runs on a private throw-away cluster on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import time
from pathlib import Path
from typing import Any

from bench.public import analytic, pgbench, report
from bench.public import platform as ise
from indexd.embedded import EmbeddedCluster

RESULTS = Path(__file__).resolve().parent / "results" / "public_workloads.json"
SERVER = {"shared_buffers": "1GB", "work_mem": "16MB", "maintenance_work_mem": "256MB", "max_wal_size": "4GB",
          "checkpoint_timeout": "30min"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.public_workloads", description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="tpch,pgbench", help="comma-separated: tpch, tpcds, pgbench")
    ap.add_argument("--sf", type=float, default=0.2, help="TPC-H / TPC-DS scale factor (default 0.2)")
    ap.add_argument("--runs", type=int, default=3, help="timed passes after one warm-up; medians are reported")
    ap.add_argument("--budgets", default="5,10,25,50", help="storage budgets, percent of the tables' size")
    ap.add_argument("--timeout", type=float, default=None,
                    help="per-query statement_timeout in seconds (default 60 s × SF, at least 5 s)")
    ap.add_argument("--platform", type=Path, default=ise.DEFAULT_PATH,
                    help="the index selection evaluation platform: a bare git repository or a checkout")
    ap.add_argument("--algorithms", default=",".join(ise.ALGORITHMS),
                    help=f"platform algorithms to run (default {','.join(ise.ALGORITHMS)})")
    ap.add_argument("--algorithm-limit", type=float, default=900.0,
                    help="seconds an algorithm may take to choose one index set; past it, it is reported as not "
                         "finished (default 900)")
    ap.add_argument("--pgbench-scale", type=int, default=50)
    ap.add_argument("--pgbench-budget", type=float, default=25.0, help="percent of the pgbench tables' size")
    ap.add_argument("--pgbench-seconds", type=int, default=30, help="length of each timed pgbench run")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    args.algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = [a for a in args.algorithms if a not in ise.ALGORITHMS] + [
        w for w in args.workloads if w not in (*report.ANALYTIC, "pgbench")]
    if unknown:
        ap.error(f"unknown algorithm or workload: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "platform": {"path": str(args.platform), "commit": ise.revision(args.platform),
                     "patches": [why for _, _, _, why in ise.PATCHES]},
        "server_settings": SERVER, "cpus": os.cpu_count(), "load_average_at_start": round(os.getloadavg()[0], 2),
        "python": host.python_version(),
    }
    with EmbeddedCluster(settings=SERVER) as cluster:
        for benchmark in report.ANALYTIC:
            if benchmark in args.workloads:
                result[benchmark] = analytic.run(args, cluster, benchmark)
        if "pgbench" in args.workloads:
            result["pgbench"] = pgbench.run(args, cluster)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    report.show(result)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
