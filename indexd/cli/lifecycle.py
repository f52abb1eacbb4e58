"""Commands of the index lifecycle, one section per command: approve / reject, apply, pause / resume."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple

from indexd.advisor.model import IMPROVEMENT
from indexd.cli.common import (
    connected,
    load,
    notifying,
    open_database,
    print_json,
    print_table,
    single_target,
    targets,
)
from indexd.cli.runner import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, each_database
from indexd.config.convert import to_duration
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.pool import Database
from indexd.db.standby import refuse_on_standby
from indexd.errors import GuardRefusal, StateMissing, UsageError
from indexd.lifecycle import apply as lifecycle_apply
from indexd.lifecycle import health
from indexd.lifecycle import pause as lifecycle_pause
from indexd.lifecycle.ddl import BuildProgress
from indexd.lifecycle.health_text import render_text
from indexd.lifecycle.latency import LatencyProbe
from indexd.lifecycle.readings import host_cpu_pct, take_readings
from indexd.lifecycle.unused import DropOutcome, drop_unused
from indexd.state.migrations import current_version
from indexd.units import human_duration, human_size

if TYPE_CHECKING:
    from indexd.lifecycle.findings import HealthReport

log = logging.getLogger(__name__)


def _require_state(db: Database, action: str) -> None:
    """The state schema must be there, and writable: a standby refuses ("standby: read-only")."""
    refuse_on_standby(db, action)
    if current_version(db) is None:
        raise StateMissing(f"database {db.name} has no indexd state schema {db.settings.state_schema!r} yet: "
                         "run 'indexd migrate' first")


# ---- approve / reject ----------------------------------------------------------------------------------


def _decide(args: argparse.Namespace, verdict: str) -> int:
    settings = load(args)
    target = single_target(args, settings)
    with open_database(settings, target) as db:
        _require_state(db, verdict)
        fn = lifecycle_apply.approve if verdict == "approve" else lifecycle_apply.reject
        rec = fn(db, args.id, reason=args.reason)
    print(f"recommendation #{rec.id} {rec.status}: {rec.index_name} on {rec.table}")
    if verdict == "approve" and target.indexing.mode == "advise":
        print(f"note: indexing.mode is advise for {target.name}: 'indexd apply' builds nothing until it is "
              "approve or auto")
    return EXIT_OK


def approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def reject(args: argparse.Namespace) -> int:
    return _decide(args, "reject")


# ---- apply ---------------------------------------------------------------------------------------------


def _show_plans(result: lifecycle_apply.ApplyResult) -> None:
    rows = []
    for plan in result.plans:
        rec = plan.recommendation
        if plan.decision.allowed:
            verdict = "would build" + (f" after a {human_duration(plan.pause_s)} pause between builds"
                                       if plan.pause_s else "")
        else:
            verdict = "refused: " + "; ".join(plan.decision.reasons + ([plan.when] if plan.when else []))
        improvement = "-" if rec.improvement_pct is None else f"{rec.improvement_pct:.1f}%"
        size = human_size(plan.request.table_bytes)
        rows.append([rec.id, rec.status, rec.table, rec.index_name, size, improvement, verdict])
    print_table(["id", "status", "table", "index", "table size", IMPROVEMENT, "verdict"], rows)


def _show_result(result: lifecycle_apply.ApplyResult) -> None:
    for b in result.built:
        print(f"  built    {b.qualified} in {human_duration(b.duration_s)} ({human_size(b.size_bytes)})")
    for b in result.skipped:
        print(f"  skipped  {b.qualified}: {b.reason}")
    for b in result.failed:
        print(f"  FAILED   {b.qualified}: {b.reason}")
    for rec_id, reasons in result.refused:
        print(f"  refused  #{rec_id}: " + "; ".join(reasons))


def _show_progress(p: BuildProgress) -> None:
    pct = f" {p.pct:.0f}%" if p.pct is not None else ""
    print(f"  building {p.index}: {p.phase}{pct}", flush=True)


class _SampleOnce:
    """A CPU sampler that measures on its first call and repeats that figure afterwards."""

    def __init__(self) -> None:
        self._value: float | None = None

    def __call__(self, sample_s: float) -> float:
        if self._value is None:
            self._value = host_cpu_pct(sample_s)
        return self._value


def _confirm(target: DatabaseSettings, result: lifecycle_apply.ApplyResult) -> bool:
    allowed = [p for p in result.plans if p.decision.allowed]
    answer = input(f"Build {len(allowed)} index(es) on {target.name} now with CREATE INDEX CONCURRENTLY? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _apply_one(args: argparse.Namespace, settings: Settings, target: DatabaseSettings) -> lifecycle_apply.ApplyResult:
    with open_database(settings, target) as db:
        _require_state(db, "apply")
        if not args.dry_run:  # what an interrupted run left is settled first, so its recommendations are planned
            lifecycle_apply.settle_records(db)
        # A plan is a snapshot: one host CPU sample serves every recommendation in it (the real run samples
        # again before each build).
        snapshot = functools.partial(take_readings, cpu=_SampleOnce())
        # One latency probe for the plan and the run: the plan's samples are the run's first baseline.
        probe = LatencyProbe(db) if target.indexing.throttle.latency_probe else None
        plan = lifecycle_apply.apply(db, settings, target, dry_run=True, ignore_window=args.now,
                                     readings_fn=snapshot, probe=probe)
        print(f"{target.name} (mode {target.indexing.mode}):")
        if plan.message:
            print(f"  {plan.message}")
            return plan
        _show_plans(plan)
        if args.dry_run or plan.all_refused:
            return plan
        if not args.yes and not _confirm(target, plan):
            print("  not confirmed: nothing built")
            return lifecycle_apply.ApplyResult(db.name, target.indexing.mode, message="not confirmed")
        result = lifecycle_apply.apply(db, settings, target, ignore_window=args.now, progress=_show_progress,
                                       probe=probe)
        _show_result(result)
        return result


def _apply_verdict(result: lifecycle_apply.ApplyResult) -> int:
    """A build that failed is a failure; a database where a guard refused every candidate is a refusal."""
    if result.failed:
        return EXIT_FAILED
    considered = result.plans or result.refused or result.built or result.skipped
    return EXIT_REFUSED if considered and result.all_refused else EXIT_OK


def apply(args: argparse.Namespace) -> int:
    if not args.dry_run and not args.yes and not sys.stdin.isatty():
        print("indexd: apply builds indexes and needs a confirmation: pass --yes (or --dry-run to only look)",
              file=sys.stderr)
        return EXIT_USAGE
    settings = load(args)
    with notifying(settings):
        run = each_database(targets(args, settings), functools.partial(_apply_one, args, settings), act="apply",
                            verdict=_apply_verdict)
    return run.exit_code


# ---- pause / resume ------------------------------------------------------------------------------------


def parse_duration(text: str | None) -> timedelta | None:
    if not text:
        return None
    try:
        value = to_duration(text)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    if value <= timedelta(0):
        raise UsageError(f"--for: a pause must last a positive time, not {text!r}")
    return value


def _switch(args: argparse.Namespace, act: str, work: Callable[[Database], str]) -> int:
    """Pause or resume on each target database: a database that is down does not stop the switch reaching the
    others."""
    settings = load(args)

    def one(db: Database) -> None:
        _require_state(db, act)
        print(work(db))

    with notifying(settings):
        return each_database(targets(args, settings), connected(settings, one), act=act).exit_code


def pause(args: argparse.Namespace) -> int:
    duration = parse_duration(args.duration)

    def work(db: Database) -> str:
        made = lifecycle_pause.pause(db, duration, args.reason)
        return f"{db.name}: {made.describe()}"

    return _switch(args, "pause", work)


def resume(args: argparse.Namespace) -> int:
    def work(db: Database) -> str:
        ended = lifecycle_pause.resume(db)
        return f"{db.name}: resumed ({len(ended)} pause(s) ended)" if ended else f"{db.name}: was not paused"

    return _switch(args, "resume", work)


# ---- indexes: the health report ------------------------------------------------------------------------


class _Health(NamedTuple):
    report: HealthReport
    drops: list[DropOutcome]
    code: int  # refused when drops are disabled or a guard refused one, failed when a drop failed


def _health(args: argparse.Namespace, settings: Settings, db: Database) -> _Health:
    target = db.settings
    report = health.report(db, settings, target)
    drops: list[DropOutcome] = []
    refused = False
    try:
        drops = drop_unused(db, settings, target, report) if args.drop_unused else []
    except GuardRefusal as exc:  # a standby: the report stands, nothing is dropped
        print(f"indexd: {target.name}: nothing dropped: {exc}", file=sys.stderr)
        refused = True
    refused = refused or any(d.outcome == "refused" for d in drops)
    if args.drop_unused and not target.indexing.drop_unused.enabled:
        print(f"indexd: {target.name}: indexing.drop_unused.enabled is false: nothing dropped "
              "(set it to true in the config to allow drops)", file=sys.stderr)
        refused = True
    if not args.json:
        sys.stdout.write(render_text(report))
        for d in drops:
            print(f"  {d.outcome}: {d.schema}.{d.index}: {d.reason}")
    failed = any(d.outcome == "failed" for d in drops)
    return _Health(report, drops, EXIT_FAILED if failed else EXIT_REFUSED if refused else EXIT_OK)


def indexes(args: argparse.Namespace) -> int:
    """Unused, duplicate, invalid and bloated indexes of each database, with the evidence and the statement that
    fixes each; --drop-unused also drops what indexing.drop_unused allows, through every guard."""
    settings = load(args)
    work = connected(settings, functools.partial(_health, args, settings))
    run = each_database(targets(args, settings), work, act="indexes", verdict=lambda h: h.code)
    if args.json:
        print_json(run.listing(lambda h: {**h.report.as_dict(),
                                          **({"drops": [asdict(d) for d in h.drops]} if args.drop_unused else {})}))
    return run.exit_code
