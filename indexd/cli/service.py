"""Handlers of the service commands: run (the daemon), status, demo and simulate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta

from indexd.cli import common
from indexd.errors import UsageError


def _duration(text: str, flag: str) -> timedelta:
    from indexd.config.convert import to_duration

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
    from indexd.simulate import drive, scenario, setup

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
    stats = drive(dsn, sc, duration, clients=args.clients, progress=_progress_line("workload"))
    sys.stderr.write("\n")
    rows = [
        (s.name, s.kind, s.calls, s.errors, f"{s.mean_ms:.2f}")
        for s in sorted(stats.shapes.values(), key=lambda s: -s.total_ms)
    ]
    if args.json:
        common.print_json(stats.to_dict())
    else:
        common.print_table(["shape", "kind", "calls", "errors", "mean ms"], rows)
        print(f"{stats.calls} statements in {stats.duration_s:.1f}s with {stats.clients} clients")
    return 1 if stats.calls == 0 else 0


def run(args: argparse.Namespace) -> int:
    """The daemon, in the foreground: exit 2 on a bad configuration, 0 after a clean stop."""
    from indexd.log import setup_logging
    from indexd.service.app import IndexdService
    from indexd.service.daemon import Daemon

    settings = common.load(args)
    setup_logging(settings.logging)
    service = IndexdService(settings, args.config)
    return Daemon(service, service.notifier).run()
