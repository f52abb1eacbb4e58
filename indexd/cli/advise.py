"""`indexd recommend`: one-shot index advice for one database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from indexd.advisor import report
from indexd.advisor.pipeline import advise
from indexd.advisor.store import save_recommendations
from indexd.cli import common
from indexd.errors import UsageError
from indexd.workload.queries import read_queries


def recommend(args: argparse.Namespace) -> int:
    settings = common.load(args)
    target = common.single_target(args, settings)
    statements = None
    if args.queries:
        loaded = read_queries(Path(args.queries), int(target.indexing.queries_max_bytes))
        for problem in loaded.problems:
            sys.stderr.write(f"indexd: left out of the workload: {problem}\n")
        statements = loaded.statements
    if args.budget_mb is not None and args.budget_mb < 0:
        raise UsageError(f"--budget-mb must be 0 or more, not {args.budget_mb}")
    budget = None if args.budget_mb is None else args.budget_mb * 1024 * 1024
    with common.open_database(settings, target) as db:
        advice = advise(db, target.indexing, statements, budget)
        ids: dict[str, int] = {}
        if not args.no_save and (advice.recommendations or advice.from_workload):
            ids = save_recommendations(db, advice.recommendations, advice.create_sql,
                                       supersede_missing=advice.from_workload)
    if args.json:
        common.print_json(report.advice_json(advice, ids))
        for warning in advice.warnings:
            sys.stderr.write(f"indexd: {warning}\n")
        if not advice.recommendations:
            sys.stderr.write(f"indexd: no index recommended: {report.nothing_reason(advice)}\n")
        if advice.skipped:
            lines = report.skipped_lines(advice.skipped, verbose=True)
            if not args.verbose:  # the counts only; the JSON object keeps exactly the contract's keys
                lines = [lines[0] + " (--verbose lists each one here)"]
            for line in lines:
                sys.stderr.write(f"indexd: {line}\n")
        return 0
    if advice.recommendations:
        common.print_table(report.HEADERS, report.table_rows(advice, ids))
    for line in report.details(advice, verbose=args.verbose):
        print(line)
    print(report.summary(advice))
    return 0
