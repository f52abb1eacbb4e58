"""`indexd recommend`: one-shot index advice for one database."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from indexd.advisor import report
from indexd.advisor.pipeline import Skipped, advise
from indexd.advisor.skips import SkipReason
from indexd.advisor.store import save_recommendations
from indexd.cli import common
from indexd.errors import UsageError
from indexd.workload.queries import read_queries


def recommend(args: argparse.Namespace) -> int:
    settings = common.load(args)
    target = common.single_target(args, settings)
    statements = None
    left_out: tuple[Skipped, ...] = ()
    if args.queries:
        loaded = read_queries(Path(args.queries))
        for problem in loaded.problems:
            sys.stderr.write(f"indexd: left out of the workload: {problem}\n")
        statements = loaded.statements
        left_out = tuple(Skipped(p.first_line, str(p), SkipReason.PARSE_ERROR) for p in loaded.problems)
    if args.budget_mb is not None and args.budget_mb < 0:
        raise UsageError(f"--budget-mb must be 0 or more, not {args.budget_mb}")
    budget = None if args.budget_mb is None else args.budget_mb * 1024 * 1024
    with common.open_database(settings, target) as db:
        advice = advise(db, target.indexing, statements, budget)
        advice = dataclasses.replace(advice, skipped=left_out + advice.skipped)
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
        if advice.skipped:  # on stderr: the JSON object keeps exactly the contract's keys
            for line in report.skipped_lines(advice.skipped, verbose=args.verbose):
                sys.stderr.write(f"indexd: {line}\n")
        return 0
    if advice.recommendations:
        common.print_table(report.HEADERS, report.table_rows(advice, ids))
    for line in report.details(advice, verbose=args.verbose):
        print(line)
    print(report.summary(advice))
    return 0
