"""`indexd recommend`: one-shot index advice for each selected database. With --json one database prints the
contract's object (`{"database", "analyzed_statements", "elapsed_s", "recommendations"}`), several print a list of
such objects (a database that failed is `{"database", "error"}` there)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexd.advisor import report
from indexd.advisor.model import IMPROVEMENT_MEANS
from indexd.advisor.pipeline import Skipped, advise, check_hypopg
from indexd.advisor.skips import SkipReason
from indexd.advisor.store import save_recommendations
from indexd.cli import common
from indexd.cli.runner import each_database
from indexd.db.standby import STANDBY, WHY, is_standby
from indexd.errors import UsageError
from indexd.state.migrations import migrate
from indexd.state.recommendation_rows import load_recommendations
from indexd.workload.lookback import capture_workload, given_workload, read_workload
from indexd.workload.queries import read_queries

if TYPE_CHECKING:
    from indexd.advisor.pipeline import Advice
    from indexd.db.pool import Database


def recommend(args: argparse.Namespace) -> int:
    settings = common.load(args)
    databases = common.targets(args, settings)
    statements = None
    left_out: tuple[Skipped, ...] = ()
    if args.queries:
        # One reading serves every selected database: it must fit the smallest of their limits.
        limit = min(int(db.indexing.queries_max_bytes) for db in databases)
        loaded = read_queries(Path(args.queries), limit)
        for problem in loaded.problems:
            sys.stderr.write(f"indexd: left out of the workload: {problem}\n")
        statements = loaded.statements
        left_out = tuple(Skipped(p.first_line, str(p), SkipReason.PARSE_ERROR) for p in loaded.problems)
    if args.budget_mb is not None and args.budget_mb < 0:
        raise UsageError(f"--budget-mb must be 0 or more, not {args.budget_mb}")
    budget = None if args.budget_mb is None else args.budget_mb * 1024 * 1024
    several = len(databases) > 1

    def one(db: Database) -> dict[str, Any]:
        target = db.settings
        check_hypopg(db)  # before anything is captured or written
        standby = is_standby(db)
        # Why nothing is written (None: the advice is stored): --no-save, or a standby, which is read-only.
        unsaved = f"{STANDBY} ({WHY})" if standby else ("--no-save" if args.no_save else None)
        if statements is not None:
            work = given_workload(statements, target.indexing)
        elif unsaved is not None:
            work = read_workload(db, target.indexing, snapshots=not standby)
        else:
            work = capture_workload(db, target.indexing)
        advice = advise(db, target.indexing, work, budget)
        advice = dataclasses.replace(advice, skipped=left_out + advice.skipped)
        ids: dict[str, int] = {}
        statuses: dict[int, str] = {}
        if unsaved is None and (advice.recommendations or advice.from_workload):
            migrate(db)  # advice from --queries may be the first thing saved in this database
            ids = save_recommendations(db, advice.recommendations, advice.create_sql,
                                       supersede_missing=advice.from_workload, origin=report.advice_origin(advice))
            statuses = _statuses(db, ids.values())
        prefix = f"indexd: {db.name}: " if several else "indexd: "
        if args.json:
            _notes(args, advice, prefix)
        else:
            _show(args, advice, ids, statuses, heading=f"== {db.name}" if several else None)
        if standby:
            sys.stderr.write(f"{prefix}advice not stored: {unsaved}\n")
        return report.advice_json(advice, ids)

    run = each_database(databases, common.connected(settings, one), act="recommend")
    if args.json and several:
        common.print_json(run.listing(lambda doc: doc))
    elif args.json and run.outcomes[0].value is not None:
        common.print_json(run.outcomes[0].value)
    return run.exit_code


def _notes(args: argparse.Namespace, advice: Advice, prefix: str) -> None:
    """Beside the JSON, on stderr: warnings, why nothing was recommended, the skipped statements."""
    for warning in advice.warnings:
        sys.stderr.write(f"{prefix}{warning}\n")
    if not advice.recommendations:
        sys.stderr.write(f"{prefix}no index recommended: {report.nothing_reason(advice)}\n")
    for line in report.skipped_lines(advice.skipped, verbose=args.verbose) if advice.skipped else ():
        sys.stderr.write(f"{prefix}{line}\n")


def _statuses(db: Database, ids: Iterable[int]) -> dict[int, str]:
    """The stored status of each saved recommendation (pending, or what a person or a build made of it)."""
    with db.connection() as conn:
        return {r.id: str(r.status) for r in load_recommendations(conn, db.settings.state_schema, ids=list(ids))}


def _show(args: argparse.Namespace, advice: Advice, ids: dict[str, int], statuses: dict[int, str],
          heading: str | None) -> None:
    if heading:
        print(heading)
    if advice.recommendations:
        common.print_table(report.HEADERS, report.table_rows(advice, ids, statuses))
        print(IMPROVEMENT_MEANS)
    for line in report.details(advice, verbose=args.verbose):
        print(line)
    print(report.summary(advice))
