"""Index builds under application load: does CREATE INDEX CONCURRENTLY through indexd hurt the application?

    python -m bench.build_under_load [--scale 20] [--clients 4] [--duration 150] [--baseline 25]
                                     [--rate-pct 50] [--runs 3] [--guards old,new]

On a private cluster: pgbench -i at --scale, a short unthrottled run to find the machine's top TPS, then one
pgbench run of --duration seconds at --rate-pct of that (0 = unthrottled; indexd's guards only build at
moderate load, so a rate-limited application is the realistic case). After --baseline seconds indexd's `apply`
builds six approved indexes on pgbench_accounts and pgbench_history through every guard, with each of two guard
settings in a run of its own:

- old: the guards as they were: no pause between builds, no latency probe, parallel builds as PostgreSQL's
  default allows (max_parallel_maintenance_workers 2);
- new: the defaults: pause_between_builds 10 s, the latency probe (no build starts while it is 3x its baseline,
  a build is cancelled and retried while it stays 10x), its baseline sampled during the baseline period as a
  daemon's is by its earlier runs, and builds on one core (build_parallel_workers 0).

Both leave out the host CPU guard (indexing.throttle.max_cpu_pct 100): the benchmark's host is the database's,
shared with whatever else runs there, and that guard would refuse every build without saying anything about
indexd's effect on the application. Reported from each run, against the baseline period: TPS (target >= 90 %)
and p95 latency (target <= 3x) over the build period (first build's start to last build's end, the pauses
included) and over the moments a CREATE INDEX statement ran; failed application transactions (target 0); and the
longest lock wait of the application (log_lock_waits with deadlock_timeout 100 ms: every wait of 100 ms or more
is logged; relation-lock waits are the kind a build could cause, row-lock waits are pgbench clients contending
with each other). Writes bench/results/build_under_load-*.json.
"""

from __future__ import annotations

import argparse
import calendar
import json
import logging
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
from indexd.config.schema import (
    DatabaseSettings,
    IndexingSettings,
    PoolSettings,
    RateLimitSettings,
    Settings,
    ThrottleSettings,
    WriteGuardSettings,
)
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.lifecycle.apply import apply
from indexd.lifecycle.latency import LatencyProbe
from indexd.state.migrations import migrate

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


GUARDS = {  # the two settings compared; both without the host CPU guard (see the module)
    "old": ThrottleSettings(max_cpu_pct=100.0, max_active_backends_pct=100.0, max_waiting_backends=1000,
                            latency_probe=False, pause_between_builds=timedelta(0), build_parallel_workers=2),
    "new": ThrottleSettings(max_cpu_pct=100.0, max_active_backends_pct=100.0, max_waiting_backends=1000),
}
PROBE_WARMUP_EVERY_S = 2.0
GUARD_LOGGERS = ("indexd.lifecycle.pacing", "indexd.lifecycle.latency", "indexd.lifecycle.apply")


class GuardEvents(logging.Handler):
    """What the guards did during the apply run (waits, pauses, cancels, refusals), from their log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.created:.1f} {record.getMessage()}")

    def __enter__(self) -> GuardEvents:
        for name in GUARD_LOGGERS:
            logging.getLogger(name).addHandler(self)
            logging.getLogger(name).setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in GUARD_LOGGERS:
            logging.getLogger(name).removeHandler(self)


def warm_probe(probe: LatencyProbe, throttle: ThrottleSettings, until: float) -> None:
    """Bursts of the latency probe during the baseline period: its baseline before the first build."""
    while time.time() < until - PROBE_WARMUP_EVERY_S:
        probe.burst(throttle)
        time.sleep(PROBE_WARMUP_EVERY_S)


def apply_all(db: Database, probe: LatencyProbe | None) -> list[dict[str, Any]]:
    """One apply run through every guard, as `indexd apply --now` or the daemon's apply job does it."""
    settings = Settings(databases=(db.settings,))
    result = apply(db, settings, db.settings, ignore_window=True, probe=probe, job_id="bench")
    done = [{"index": r.qualified, "outcome": r.outcome, "reason": r.reason, "seconds": round(r.duration_s, 2),
             "size_bytes": r.size_bytes} for r in result.built + result.failed + result.skipped]
    done += [{"recommendation": rec_id, "outcome": "refused", "reason": "; ".join(reasons)}
             for rec_id, reasons in result.refused]
    return done


def statement_intervals(db: Database) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of each CREATE INDEX statement, from the audit log's intents and outcomes."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL(
            "SELECT extract(epoch FROM i.at), extract(epoch FROM o.at) FROM {0}.mutation_log i"
            " JOIN {0}.mutation_log o ON o.intent_id = i.id AND o.phase = 'outcome'"
            " WHERE i.action = 'create_index' AND i.phase = 'intent' ORDER BY i.id").format(
            sql.Identifier(db.settings.state_schema)))
        return [(float(a), float(b)) for a, b in cur.fetchall()]


def within(txs: list[tuple[float, float]], spans: list[tuple[float, float]]) -> dict[str, Any]:
    """period_stats over the union of `spans` (the moments a build statement ran)."""
    inside = [(at, ms) for at, ms in txs if any(a <= at < b for a, b in spans)]
    seconds = sum(b - a for a, b in spans)
    stats = period_stats(inside, float("-inf"), float("inf"))
    stats.update(seconds=round(seconds, 1), tps=round(len(inside) / seconds, 1) if seconds > 0 else 0.0)
    return stats


def ratio(during: dict[str, Any], baseline: dict[str, Any], key: str) -> float | None:
    return round(during[key] / baseline[key], 3) if baseline.get(key) and key in during else None


def start_load(cluster: EmbeddedCluster, args: argparse.Namespace, rate: float, folder: str
               ) -> tuple[threading.Thread, dict[str, subprocess.CompletedProcess[str]]]:
    cmd = ["-c", str(args.clients), "-j", "2", "-T", str(args.duration), "-l", "--log-prefix", f"{folder}/pgb"] + \
        (["-R", f"{rate:.0f}"] if rate else [])
    holder: dict[str, subprocess.CompletedProcess[str]] = {}
    runner = threading.Thread(target=lambda: holder.update(p=pgbench(cluster, *cmd)))
    runner.start()
    return runner, holder


def measure(db: Database, args: argparse.Namespace, guards: str, cluster: EmbeddedCluster, rate: float
            ) -> dict[str, Any]:
    """One pgbench run with one apply run in it; the figures of the application around the builds."""
    throttle = GUARDS[guards]
    probe = LatencyProbe(db) if throttle.latency_probe else None
    log_offset = cluster.log_file.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        runner, holder = start_load(cluster, args, rate, tmp)
        started = time.time()
        if probe is not None:
            warm_probe(probe, throttle, started + args.baseline)
        time.sleep(max(0.0, started + args.baseline - time.time()))
        build_start = time.time()
        with GuardEvents() as events:
            builds = apply_all(db, probe)
        build_end = time.time()
        runner.join()
        txs = read_tx_log(Path(tmp))
    spans = statement_intervals(db)
    proc = holder["p"]
    first = txs[0][0] if txs else started
    end = first + args.duration
    failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
    with open(cluster.log_file, encoding="utf-8", errors="replace") as fh:
        fh.seek(log_offset)
        log_text = fh.read()
    baseline = period_stats(txs, first + WARMUP_S, build_start)
    during, statements = period_stats(txs, build_start, min(build_end, end)), within(txs, spans)
    return {
        "guards": guards, "throttle": {k: str(v) for k, v in vars(throttle).items()}, "builds": builds,
        "build_period_s": round(build_end - build_start, 1), "builds_outlasted_load": build_end > end,
        "guard_events": events.lines, "probe_baseline_ms": probe.baseline_ms if probe is not None else None,
        "baseline": baseline, "during_builds": during, "during_statements": statements,
        "after_builds": period_stats(txs, build_end, end),
        "tps_ratio_during_vs_baseline": ratio(during, baseline, "tps"),
        "p95_latency_ratio": ratio(during, baseline, "latency_p95_ms"),
        "tps_ratio_during_statements": ratio(statements, baseline, "tps"),
        "p95_latency_ratio_during_statements": ratio(statements, baseline, "latency_p95_ms"),
        "failed_transactions": int(failed.group(1)) if failed else None,
        "aborted_clients": len(re.findall(r"client \d+ aborted", proc.stderr)),
        "pgbench_exit": proc.returncode, "lock_waits": lock_waits(log_text, build_start, build_end),
        "lock_timeout_ms": LOCK_TIMEOUT.total_seconds() * 1000,
    }


def run_once(args: argparse.Namespace, guards: str) -> dict[str, Any]:
    cluster = EmbeddedCluster(settings=SERVER)
    cluster.start()
    db: Database | None = None
    try:
        dsn = cluster.create_database("bench", extensions=("pg_stat_statements",))  # apply snapshots around builds
        t = time.monotonic()
        init = pgbench(cluster, "-i", "-q", "-s", str(args.scale))
        if init.returncode:
            raise RuntimeError(init.stderr)
        init_s = time.monotonic() - t
        top = tps_of(pgbench(cluster, "-c", str(args.clients), "-j", "2", "-T", "10").stdout)
        rate = top * args.rate_pct / 100 if args.rate_pct else 0
        ix = IndexingSettings(mode="approve", lock_timeout=LOCK_TIMEOUT, throttle=GUARDS[guards], windows=(),
                              rate_limit=RateLimitSettings(per_hour=100, per_day=100),
                              write_guard=WriteGuardSettings(writes_per_second=1e9))
        db = Database(DatabaseSettings(name="bench", dsn=dsn, indexing=ix, pool=PoolSettings(size=3)))
        migrate(db)
        add_recommendations(db)
        figures = measure(db, args, guards, cluster, rate)
        return {"scale": args.scale, "clients": args.clients, "init_s": round(init_s, 1), "top_tps": top,
                "target_rate_tps": round(rate, 1) or None, **figures}
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


SUMMARY = ("tps_ratio_during_vs_baseline", "p95_latency_ratio", "tps_ratio_during_statements",
           "p95_latency_ratio_during_statements", "failed_transactions", "aborted_clients", "baseline.tps",
           "during_builds.tps", "baseline.latency_p95_ms", "during_builds.latency_p95_ms", "build_period_s",
           "lock_waits.app_longest_relation_lock_wait_ms", "lock_waits.app_longest_wait_during_builds_ms")


def _line(i: int, r: dict[str, Any]) -> str:
    built = sum(1 for b in r["builds"] if b["outcome"] == "succeeded")
    return (f"{r['guards']} guards, run {i}: TPS baseline {r['baseline']['tps']} during builds "
            f"{r['during_builds']['tps']} (ratio {r['tps_ratio_during_vs_baseline']}), p95 "
            f"{r['baseline'].get('latency_p95_ms')} -> {r['during_builds'].get('latency_p95_ms')} ms (ratio "
            f"{r['p95_latency_ratio']}; while a statement ran {r['p95_latency_ratio_during_statements']}), failed tx "
            f"{r['failed_transactions']}, {built}/{len(INDEXES)} built in {r['build_period_s']}s, "
            + ", ".join(f"{b.get('index', b.get('recommendation'))} {b['outcome']} {b.get('seconds', '')}".rstrip()
                        for b in r["builds"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--duration", type=int, default=150, help="seconds of pgbench load (must outlast the builds)")
    ap.add_argument("--baseline", type=float, default=25.0, help="seconds of load before the builds start")
    ap.add_argument("--rate-pct", type=float, default=50.0, help="application rate, %% of top TPS (0: unthrottled)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--guards", default="old,new", help="which guard settings to run, comma-separated")
    args = ap.parse_args()
    out: dict[str, Any] = {"args": vars(args)}
    modes = args.guards.split(",")
    runs: dict[str, list[dict[str, Any]]] = {g: [] for g in modes}
    for i in range(args.runs):
        for guards in modes:  # interleaved: the shared machine's load drifts over a benchmark's minutes
            r = run_once(args, guards)
            runs[guards].append(r)
            print(_line(i + 1, r), flush=True)
    for guards in modes:
        summary = {k: median(runs[guards], *k.split(".")) for k in SUMMARY}
        out[guards] = {"median": summary, "runs": runs[guards]}
        print(f"{guards} guards, median over {len(runs[guards])} run(s): {json.dumps(summary)}")
        print(f"  targets: TPS ratio >= 0.90 ({summary['tps_ratio_during_vs_baseline']}), p95 ratio <= 3 "
              f"({summary['p95_latency_ratio']}), failed tx 0 ({summary['failed_transactions']})", flush=True)
    RESULTS.mkdir(exist_ok=True)
    name = f"build_under_load-rate{args.rate_pct:g}.json" if args.rate_pct else "build_under_load-unthrottled.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
