"""Handlers of the service commands: run (the daemon), status, demo and simulate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from indexd.advisor.model import IMPROVEMENT
from indexd.cli import common
from indexd.cli.runner import each_database
from indexd.clock import utcnow
from indexd.config.convert import to_duration
from indexd.config.schema import LoggingSettings
from indexd.errors import UsageError
from indexd.log import setup_logging
from indexd.simulate import drive, scenario, setup
from indexd.units import human_duration, human_size


def _duration(text: str, flag: str) -> timedelta:
    try:
        return to_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _progress_line(label: str) -> Callable[[float, float, int], None]:
    def show(elapsed: float, total: float, calls: int) -> None:
        sys.stderr.write(f"\r{label}: {elapsed:5.1f}s / {total:.0f}s, {calls} statements ")
        sys.stderr.flush()

    return show


def simulate(args: argparse.Namespace) -> int:
    """Create the synthetic shop schema and/or drive its workload against one database."""
    if args.setup_only and args.no_setup:
        raise UsageError("--setup-only and --no-setup exclude each other")
    duration = _duration(args.duration, "--duration")
    sc = scenario(args.scenario)
    if args.dsn:
        dsn = args.dsn
    else:
        settings = common.load(args)
        dsn = common.single_target(args, settings).dsn
    if not args.no_setup:
        sys.stderr.write(f"loading scenario {sc.name} (~{sc.approx_rows:,} rows) into schema shop ...\n")
        setup(dsn, sc)
    if args.setup_only:
        return 0
    # A live progress line on a terminal only: in a log or a pipe its carriage returns pile up into one line.
    tty = sys.stderr.isatty()
    stats = drive(dsn, sc, duration, clients=args.clients, progress=_progress_line("workload") if tty else None)
    if tty:
        sys.stderr.write("\n")
    rows = [
        (s.name, s.kind, s.calls, s.errors, f"{s.mean_ms:.2f}")
        for s in sorted(stats.shapes.values(), key=lambda s: -s.total_ms)
    ]
    if args.json:
        common.print_json(stats.to_dict())
    else:
        common.print_table(["shape", "kind", "calls", "errors", "mean ms"], rows)
        print(f"{stats.calls} statements in {human_duration(stats.duration_s)} with {stats.clients} clients")
    return 1 if stats.calls == 0 else 0


def run(args: argparse.Namespace) -> int:
    """The daemon, in the foreground: exit 2 on a bad configuration, 0 after a clean stop."""
    # heavy: the daemon's modules (APScheduler, prometheus_client, every job's domain code), only for `run`
    from indexd.service.app import IndexdService
    from indexd.service.daemon import Daemon

    settings = common.load(args)
    setup_logging(settings.logging)
    service = IndexdService(settings, args.config)
    return Daemon(service, service.notifier).run()


def _show_step(name: str, outcome: str, seconds: float) -> None:
    sys.stderr.write(f"  {seconds:6.1f}s  {name:<55} {outcome}\n")
    sys.stderr.flush()


def demo(args: argparse.Namespace) -> int:
    """The main job on a throw-away PostgreSQL: workload, advice, build, re-run, verify, backup, compare."""
    from indexd.demo import run_demo  # heavy: the whole cycle's modules (advisor, lifecycle, backup), only for `demo`

    setup_logging(LoggingSettings(level=getattr(args, "log_level", None) or "WARNING", file=None, format="text"))
    workload = _duration(args.duration, "--duration")
    sys.stderr.write(f"indexd demo: scenario {args.scenario}, {workload.total_seconds():.0f}s of workload per run\n")
    result = run_demo(args.scenario, keep=args.keep, workload=workload, report=_show_step)
    if args.json:
        common.print_json(_demo_json(result))
        return 0
    _print_demo(result)
    return 0


def _demo_json(result: Any) -> dict[str, Any]:
    return {
        "scenario": result.scenario, "elapsed_s": round(result.elapsed_s, 1),
        "recommendations": result.recommendations, "built": result.built, "verdicts": result.verdicts,
        "backup": result.backup, "comparison": result.comparison(), "dsn": result.dsn, "config": result.config,
    }


def _print_demo(result: Any) -> None:
    print("\nRecommended indexes")
    common.print_table(
        ["index", "table", "columns", "where", IMPROVEMENT, "est. size"],
        [(r["index"], r["table"], ", ".join(r["columns"]), r["where"], f"{r['improvement_pct']:.1f}%",
          human_size(r["estimated_size_bytes"])) for r in result.recommendations],
    )
    print("\nBuilt")
    common.print_table(
        ["index", "size", "build", "verdict"],
        [(b["index"], human_size(b["size_bytes"]), f"{b['build_s']:.2f}s", result.verdicts.get(b["index"], "-"))
         for b in result.built],
    )
    print("\nStatement shapes, median time per call, each shape timed alone (one connection, the same statements "
          "before and after)")
    common.print_table(
        ["shape", "kind", "before ms", "after ms", "speed-up"],
        [(c["shape"], c["kind"], f"{c['ms_before']:.3f}", f"{c['ms_after']:.3f}",
          f"{c['speedup']:.1f}x" if c["speedup"] else "-") for c in result.comparison()],
    )
    rates = result.throughput()
    if rates:
        print(f"\nthroughput: {rates[0]:,.0f} -> {rates[1]:,.0f} statements/s ({rates[1] / rates[0]:.2f}x)")
    if result.backup:
        b = result.backup
        restored = "test restore ok" if b.get("restore_verified") else "test restore FAILED"
        print(f"backup: {b['id']}, {human_size(b['size_bytes'])}, {b['status']} (checksum), {restored}")
    print(f"total: {human_duration(result.elapsed_s)}")
    if result.dsn:
        print(f"\nthe cluster is still running: psql '{result.dsn}'")
        if result.config:
            print(f"indexd on it (mode approve, no window, its backups): export INDEXD_CONFIG={result.config}")
            print("  then e.g.: indexd status; indexd recommend; indexd approve ID; indexd apply --now --yes; "
                  "indexd backup list")
        print(f"stop and remove it with: {result.stop_command}")


def status(args: argparse.Namespace) -> int:
    """Per database: leader, breaker, pool, pause, jobs, advice, recent changes, backups. A database that cannot
    be read still shows what needs no connection (next runs, backups on disk), with its error. The daemon asked
    for pool and breaker is the one holding the database's leader lock, never whatever answers on a port."""
    # heavy: status reads the state, lifecycle and backup modules (SQLAlchemy through the pool), only for `status`
    from indexd.status.report import DaemonFinder, database_state, local_state

    settings = common.load(args)
    databases = common.targets(args, settings)
    now, finder = utcnow(), DaemonFinder.for_settings(settings)
    run = each_database(databases, lambda dbs: database_state(settings, dbs, now), act="status")
    entries = []
    for db, state in zip(databases, run.listing(dict), strict=True):
        leading = finder.leader_of(state)  # takes the lock holder's address out of the state
        entries.append({"database": db.name, **local_state(settings, db, leading, now), **state})
    if args.json:
        common.print_json(entries)
    else:
        _print_status(finder.daemons(), entries)
    return run.exit_code


TABLE_INDENT = "     "  # status tables sit under their heading


def _when(value: Any) -> str:
    return "-" if value is None else (value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else str(value))


def _print_status(daemons: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    if not daemons:
        print("daemon: not reachable (not running, not on this host, or its http endpoint is off); the readings "
              "below come from the database alone")
    for d in daemons:
        print(f"daemon: pid {d.get('pid')}, {d.get('status')}, up {human_duration(d.get('uptime_s') or 0)}, "
              f"config {d.get('config')}")
    for db in entries:
        print(f"\n== {db['database']}  ({db['dsn']})")
        if "error" in db:
            print(f"   unreachable: {db['error']}")
        live = db["daemon"]
        if isinstance(live, dict) and "breaker" in live:
            pool = live.get("pool") or {}
            print(f"   breaker {live.get('breaker')}, pool {pool.get('checked_out', 0)} in use of "
                  f"{pool.get('size', 0)} open, {pool.get('waits', 0)} waits, {pool.get('retries', 0)} retries")
        elif isinstance(live, str):
            print("   breaker/pool: unknown without the daemon")
            if db.get("leader"):  # who holds the lock and why its daemon was not asked; else `leader:` says it
                print(f"   daemon: {live.split(': ', 1)[-1]}")
        else:
            print("   breaker/pool: not in the leading daemon's /health for this database")
        if "error" not in db:
            _print_db_state(db)
        _print_jobs(db)
        _print_backups(db["backups"])


def _print_db_state(db: dict[str, Any]) -> None:
    server = db.get("server") or {}
    if server.get("role") == "standby":
        print(f"   server: {server['read_only']} (the state below is the primary's, replicated)")
    lead = db["leader"]
    print("   leader: " + (f"pid {lead['pid']} ({lead['application_name']}, {lead['client']}) since "
                           f"{_when(lead['since'])}" if lead else "none (no daemon holds the leader lock)"))
    pause = db["pause"]
    print("   pause: " + (f"PAUSED since {_when(pause['since'])} until {_when(pause['until'])} by {pause['by']}: "
                          f"{pause['reason'] or 'no reason given'}" if pause else "not paused"))
    recs = db["recommendations"]
    counts = ", ".join(f"{n} {s}" for s, n in recs["counts"].items()) or "none"
    print(f"   recommendations: {counts}")
    if recs["open"]:
        common.print_table(["id", "status", "origin", "attempts", "index", "table", IMPROVEMENT],
                           [(r["id"], r["status"], r["origin"], r["attempts"], r["index"], r["table"],
                             f"{r['improvement_pct']:.1f}%" if r["improvement_pct"] is not None else None)
                            for r in recs["open"]], indent=TABLE_INDENT)
    if db["recent_changes"]:
        print("   recent changes:")
        common.print_table(["at", "action", "target", "outcome", "reason"],
                           [(_when(c["at"]), c["action"], c["target"], c["outcome"], (c["reason"] or "")[:60])
                            for c in db["recent_changes"]], indent=TABLE_INDENT)


def _print_jobs(db: dict[str, Any]) -> None:
    runs = db.get("jobs", {})
    rows = [(job, _when(runs.get(job, {}).get("started_at")), runs.get(job, {}).get("outcome"),
             (runs.get(job, {}).get("message") or "")[:70], _when(nxt)) for job, nxt in db["next_runs"].items()]
    print("   jobs:")
    common.print_table(["job", "last run", "outcome", "decision", "next run"], rows, indent=TABLE_INDENT)


def _print_backups(b: dict[str, Any]) -> None:
    if not b.get("enabled"):
        print("   backups: disabled")
        return
    if "error" in b:
        print(f"   backups: {b['error']}")
        return
    print(f"   backups: {b['count']} on disk")
    if b["latest"]:
        common.print_table(["id", "status", "started", "size", "checksum ok", "test restore"],
                           [(x["id"], x["status"], _when(x["started_at"]), human_size(x["size_bytes"]),
                             _when(x["verified_at"]), _test(x)) for x in b["latest"]], indent=TABLE_INDENT)
        newest = b["latest"][0]
        if newest.get("test_restore_result") not in (None, "ok"):
            print(f"{TABLE_INDENT}test restore of {newest['id']}: {newest['test_restore_result']}: "
                  f"{newest['test_restore_detail']}")


def _test(backup: dict[str, Any]) -> str | None:
    result = backup.get("test_restore_result")
    return None if result is None else f"{result} {_when(backup.get('test_restore_at'))}"
