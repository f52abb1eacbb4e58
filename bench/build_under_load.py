"""Index builds under application load: does CREATE INDEX CONCURRENTLY through indexd hurt the application?

    python -m bench.build_under_load [--scale 20] [--clients 4] [--duration 60] [--baseline 25]
                                     [--rate-pct 50] [--runs 3]

On a private cluster: pgbench -i at --scale, a short unthrottled run to find the machine's top TPS, then one
pgbench run of --duration seconds at --rate-pct of that (0 = unthrottled; indexd's guards only build at
moderate load, so a rate-limited application is the realistic case). After --baseline seconds indexd builds
indexes on pgbench_accounts and pgbench_history with `build_index` (lock_timeout, progress, audit) one after
the other. Reported from the same run: TPS and latency while building vs the baseline period, failed
application transactions, and the longest lock wait of the application (log_lock_waits with deadlock_timeout
100 ms: every wait of 100 ms or more is logged; relation-lock waits are the kind a build could cause, row-lock
waits are pgbench clients contending with each other). Writes bench/results/build_under_load-*.json.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from psycopg2 import sql

from indexd.advisor.model import IndexCandidate, IndexKey
from indexd.config.schema import DatabaseSettings, IndexingSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.lifecycle.build import build_index
from indexd.lifecycle.ddl import BuildProgress
from indexd.state.migrations import migrate
from indexd.state.recommendations import load_recommendations

RESULTS = Path(__file__).parent / "results"
WARMUP_S = 5.0
LOCK_TIMEOUT = timedelta(seconds=5)
INDEXES = [("pgbench_accounts", ("bid",)), ("pgbench_accounts", ("abalance",)),
           ("pgbench_accounts", ("bid", "abalance")), ("pgbench_accounts", ("abalance", "aid")),
           ("pgbench_history", ("aid",)), ("pgbench_history", ("tid", "delta"))]
SERVER = {"log_lock_waits": "on", "deadlock_timeout": "'100ms'", "log_line_prefix": "'%m [%p] %a '"}
LOCK_LINE = re.compile(r"^(\S+ \S+) \S+ \[\d+\] (\S*) LOG:\s+process \d+ (acquired|still waiting for) (\w+) on "
                       r"(relation|transaction|tuple|virtual transaction)\b.*? after ([\d.]+) ms")


def pgbench(cluster: EmbeddedCluster, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(cluster.port), PGUSER=cluster.superuser)
    return subprocess.run(["pgbench", *args, "bench"], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)


def tps_of(output: str) -> float:
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    if not m:
        raise RuntimeError(f"no tps in pgbench output:\n{output}")
    return float(m.group(1))


def add_recommendations(db: Database) -> list[int]:
    ids = []
    with db.connection() as conn, conn.cursor() as cur:
        for table, cols in INDEXES:
            cand = IndexCandidate("public", table, tuple(IndexKey(column=c) for c in cols))
            cur.execute(sql.SQL(
                "INSERT INTO {}.recommendations (status, fingerprint, table_schema, table_name, columns, index_name,"
                " create_sql, improvement_pct, write_overhead) VALUES ('approved', %s, %s, %s, %s, %s, %s, 50, 1)"
                " RETURNING id").format(sql.Identifier(db.settings.state_schema)),
                (cand.fingerprint(), cand.schema, cand.table, json.dumps(list(cols)), cand.name(),
                 cand.create_sql().as_string(conn)))
            ids.append(int(cur.fetchone()[0]))
    return ids


def read_tx_log(folder: Path) -> list[tuple[float, float]]:
    """(completion epoch seconds, latency ms) of every successful transaction in pgbench's --log files."""
    out = []
    for path in folder.glob("pgb*"):
        for line in path.read_text().splitlines():
            f = line.split()
            if len(f) >= 6 and f[2].isdigit():
                out.append((int(f[4]) + int(f[5]) / 1e6, int(f[2]) / 1000.0))
    return sorted(out)


def period_stats(txs: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    lat = sorted(ms for at, ms in txs if start <= at < end)
    span = max(1e-9, end - start)
    if not lat:
        return {"seconds": round(span, 1), "tps": 0.0, "transactions": 0}
    return {"seconds": round(span, 1), "transactions": len(lat), "tps": round(len(lat) / span, 1),
            "latency_p50_ms": round(lat[len(lat) // 2], 2), "latency_p95_ms": round(lat[int(len(lat) * 0.95)], 2),
            "latency_max_ms": round(lat[-1], 2)}


def lock_waits(log_text: str, build_start: float, build_end: float) -> dict[str, Any]:
    """The longest lock waits (>= deadlock_timeout) of the application, from the server log."""
    app_rel, app_row, indexd_max, in_builds = 0.0, 0.0, 0.0, 0.0
    for line in log_text.splitlines():
        m = LOCK_LINE.match(line)
        if not m:
            continue
        stamp, app, _, _, kind, ms = m.groups()
        wait = float(ms)
        at = calendar.timegm(time.strptime(stamp.split(".")[0], "%Y-%m-%d %H:%M:%S"))  # the cluster logs in UTC
        if app == "indexd":
            indexd_max = max(indexd_max, wait)
        elif app == "pgbench":
            if kind == "relation":
                app_rel = max(app_rel, wait)
            else:
                app_row = max(app_row, wait)
            if build_start <= at <= build_end + 1:
                in_builds = max(in_builds, wait)
    return {"app_longest_relation_lock_wait_ms": app_rel, "app_longest_row_lock_wait_ms": app_row,
            "app_longest_wait_during_builds_ms": in_builds, "indexd_longest_wait_ms": indexd_max,
            "logged_from_ms": 100}


def build_all(db: Database, ids: list[int]) -> list[dict[str, Any]]:
    with db.connection() as conn:
        recs = load_recommendations(conn, db.settings.state_schema, ids=tuple(ids))
    done = []
    phases: list[BuildProgress] = []
    for rec in recs:
        r = build_index(db, rec, db.settings, job_id="bench", progress=phases.append)
        done.append({"index": r.qualified, "outcome": r.outcome, "reason": r.reason,
                     "seconds": round(r.duration_s, 2), "size_bytes": r.size_bytes})
    return done


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    cluster = EmbeddedCluster(settings=SERVER)
    cluster.start()
    db: Database | None = None
    try:
        dsn = cluster.create_database("bench", extensions=())
        t = time.monotonic()
        init = pgbench(cluster, "-i", "-q", "-s", str(args.scale))
        if init.returncode:
            raise RuntimeError(init.stderr)
        init_s = time.monotonic() - t
        top = tps_of(pgbench(cluster, "-c", str(args.clients), "-j", "2", "-T", "10").stdout)
        rate = top * args.rate_pct / 100 if args.rate_pct else 0
        ix = IndexingSettings(lock_timeout=LOCK_TIMEOUT)
        db = Database(DatabaseSettings(name="bench", dsn=dsn, indexing=ix, pool=PoolSettings(size=3)))
        migrate(db)
        ids = add_recommendations(db)
        log_offset = cluster.log_file.stat().st_size
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o777)
            cmd = ["-c", str(args.clients), "-j", "2", "-T", str(args.duration), "-l", "--log-prefix",
                   f"{tmp}/pgb"] + (["-R", f"{rate:.0f}"] if rate else [])
            holder: dict[str, subprocess.CompletedProcess[str]] = {}
            runner = threading.Thread(target=lambda: holder.update(p=pgbench(cluster, *cmd)))
            started = time.time()
            runner.start()
            time.sleep(args.baseline)
            build_start = time.time()
            builds = build_all(db, ids)
            build_end = time.time()
            runner.join()
            txs = read_tx_log(Path(tmp))
        proc = holder["p"]
        first = txs[0][0] if txs else started
        end = first + args.duration
        failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
        with open(cluster.log_file, encoding="utf-8", errors="replace") as fh:
            fh.seek(log_offset)
            log_text = fh.read()
        baseline = period_stats(txs, first + WARMUP_S, build_start)
        during = period_stats(txs, build_start, min(build_end, end))
        return {
            "scale": args.scale, "clients": args.clients, "init_s": round(init_s, 1), "top_tps": top,
            "target_rate_tps": round(rate, 1) or None, "builds": builds,
            "build_period_s": round(build_end - build_start, 1),
            "baseline": baseline, "during_builds": during, "after_builds": period_stats(txs, build_end, end),
            "tps_ratio_during_vs_baseline": round(during["tps"] / baseline["tps"], 3) if baseline["tps"] else None,
            "p95_latency_ratio": round(during.get("latency_p95_ms", 0) / baseline["latency_p95_ms"], 2)
            if baseline.get("latency_p95_ms") else None,
            "failed_transactions": int(failed.group(1)) if failed else None,
            "aborted_clients": len(re.findall(r"client \d+ aborted", proc.stderr)),
            "pgbench_exit": proc.returncode, "lock_waits": lock_waits(log_text, build_start, build_end),
            "lock_timeout_ms": LOCK_TIMEOUT.total_seconds() * 1000,
        }
    finally:
        if db is not None:
            db.close()
        cluster.destroy()


def median(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for r in runs:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, int | float):
            values.append(float(v))
    return statistics.median(values) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--baseline", type=float, default=25.0, help="seconds of load before the builds start")
    ap.add_argument("--rate-pct", type=float, default=50.0, help="application rate, %% of top TPS (0: unthrottled)")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        r = run_once(args)
        runs.append(r)
        lw = r["lock_waits"]
        print(f"run {i + 1}: TPS baseline {r['baseline']['tps']} during builds {r['during_builds']['tps']} "
              f"(ratio {r['tps_ratio_during_vs_baseline']}), p95 {r['baseline'].get('latency_p95_ms')} -> "
              f"{r['during_builds'].get('latency_p95_ms')} ms, failed tx {r['failed_transactions']}, "
              f"aborted clients {r['aborted_clients']}, app relation-lock wait max "
              f"{lw['app_longest_relation_lock_wait_ms']} ms, builds "
              + ", ".join(f"{b['index']} {b['outcome']} {b['seconds']}s" for b in r["builds"]))
    summary = {k: median(runs, *k.split(".")) for k in (
        "tps_ratio_during_vs_baseline", "p95_latency_ratio", "failed_transactions", "aborted_clients",
        "baseline.tps", "during_builds.tps", "build_period_s", "lock_waits.app_longest_relation_lock_wait_ms",
        "lock_waits.app_longest_wait_during_builds_ms", "lock_waits.app_longest_row_lock_wait_ms")}
    print("median over", len(runs), "run(s):", json.dumps(summary))
    print(f"targets: TPS ratio >= 0.90 ({summary['tps_ratio_during_vs_baseline']}), failed tx 0 "
          f"({summary['failed_transactions']}), app relation-lock wait <= lock_timeout "
          f"{LOCK_TIMEOUT.total_seconds() * 1000:.0f} ms ({summary['lock_waits.app_longest_relation_lock_wait_ms']})")
    RESULTS.mkdir(exist_ok=True)
    out = {"args": vars(args), "median": summary, "runs": runs}
    name = f"build_under_load-rate{args.rate_pct:g}.json" if args.rate_pct else "build_under_load-unthrottled.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
