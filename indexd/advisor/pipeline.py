"""One advisor run: a given workload -> catalog -> candidates -> what-if costs -> selection -> recommendations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from pglast import parse_sql
from pglast.parser import ParseError

from indexd.advisor.candidates import generate
from indexd.advisor.catalog import load_catalog
from indexd.advisor.model import Catalog, IndexCandidate, QueryEffect, Recommendation, Table
from indexd.advisor.select import Selection, select
from indexd.advisor.size import estimate_btree_size
from indexd.advisor.skips import SkipReason
from indexd.advisor.whatif import WhatIf, require_hypopg
from indexd.config.schema import IndexingSettings
from indexd.db.pool import Database
from indexd.statements.statement import Statement, Workload

log = logging.getLogger(__name__)

SKEWED_KEY_ROWS = 1000  # a key with this many rows makes "key = $1 ORDER BY x LIMIT n" sort for real
_DML = {"InsertStmt", "UpdateStmt"}  # statements that add index entries (a DELETE adds none)


@dataclass(frozen=True)
class Skipped:
    """A statement the advisor could not use, and why."""

    query: str
    reason: str
    kind: SkipReason | None = None  # the named reason (None for a declined candidate index)
    queryid: int | None = None


@dataclass(frozen=True)
class Advice:
    database: str
    analyzed_statements: int
    elapsed_s: float
    recommendations: tuple[Recommendation, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = ()
    create_sql: dict[str, str] = field(default_factory=dict)  # candidate fingerprint -> runnable CREATE INDEX
    from_workload: bool = True  # pg_stat_statements (True) or a given list of statements
    declined: tuple[Skipped, ...] = ()  # candidate indexes not recommended ("table (cols)", why)
    budget_bytes: int | None = None  # the storage budget the selection had
    smallest_candidate_bytes: int | None = None  # the estimated size of the smallest candidate index
    lookback_s: float = 0.0  # the look-back of a captured workload
    min_improvement_pct: float = 0.0


def check_hypopg(db: Database) -> None:
    """HypoPGMissing (saying how to install it) unless HypoPG is created in this database. Callers run it before
    they capture a workload, so nothing is captured or written for advice that cannot be given."""
    with db.connection() as conn:
        require_hypopg(conn, db.name)


def advise(
    db: Database,
    settings: IndexingSettings,
    work: Workload,
    budget_bytes: int | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Advice:
    """Index advice for this workload (captured by the caller, or given). Reads the catalog and costs plans
    with HypoPG; it captures, migrates and writes nothing."""
    started = clock()
    check_hypopg(db)
    statements, period_s = work.statements, work.period_s
    with db.connection() as conn:
        catalog = load_catalog(conn, db.settings.state_schema)
    cands = generate(statements, catalog, settings, db.settings.state_schema)
    skipped = [Skipped(s.query, s.reason, s.kind, statements[s.statement_index].queryid) for s in cands.skipped]
    budget = settings.storage_budget if budget_bytes is None else budget_bytes
    with WhatIf(db, statement_timeout=db.settings.timeouts.statement,
                through_view=cands.through_view, catalog=catalog) as whatif:
        sizes = _sizes(whatif, catalog, cands.all)
        writes = write_rates(statements, catalog, whatif.rows_written, period_s)
        selection = select(cands, WorkloadCosts(whatif, statements), budget, writes, settings,
                           statements=statements, sizes=sizes, existing=catalog.indexes, period_s=period_s,
                           skewed=skewed_columns(catalog))
        skipped += [Skipped(statements[i].query, f"cannot be costed: {err}", whatif.stats.reasons[i],
                            statements[i].queryid) for i, err in sorted(whatif.stats.errors.items())]
        create_sql = {c.candidate.fingerprint(): c.candidate.create_sql().as_string(whatif.conn)
                      for c in selection.chosen}
        log.info("%s: %d statements, %d candidates, %d EXPLAINs (%d cached), %d recommended",
                 db.name, len(statements), len(cands.all), whatif.stats.explains, whatif.stats.cache_hits,
                 len(selection.chosen))
    declined = tuple(Skipped(f"{c.schema}.{c.table} ({', '.join(k.label() for k in c.keys)})"
                             + (f" WHERE {c.where}" if c.where else ""), why)
                     for c, why in sorted(selection.rejected.items(), key=lambda kv: kv[0].fingerprint()))
    return Advice(db.name, len(statements), round(clock() - started, 3), _recommendations(selection, statements),
                  tuple(skipped), work.warnings, create_sql, work.captured, declined, budget,
                  min(sizes.values(), default=None), settings.lookback.total_seconds(), settings.min_improvement_pct)


class WorkloadCosts:
    """The selection's cost function over a what-if session.

    An index its statement's plan does not use on its own is left out of larger sets for that statement: it
    would almost never be used next to others either, and leaving it out lets costs be shared between sets.
    """

    def __init__(self, whatif: WhatIf, statements: list[Statement]) -> None:
        self.whatif = whatif
        self.statements = statements

    def __call__(self, s: int, indexes: frozenset[IndexCandidate]) -> float | None:
        query = self.statements[s].query
        if len(indexes) > 1:
            alone = {c: self.whatif.plan(s, query, frozenset([c])) for c in indexes}
            indexes = frozenset(c for c, plan in alone.items() if plan is not None and c in plan.used)
        return self.whatif.cost(s, query, indexes)


def dml_targets(query: str, catalog: Catalog) -> list[Table]:
    """The tables an INSERT or UPDATE writes, data-modifying WITH queries included (empty for anything else)."""
    try:
        stmts = parse_sql(query)
    except ParseError:
        return []
    if len(stmts) != 1:
        return []
    found: list[Table] = []
    pending: list[Any] = [stmts[0].stmt]
    while pending:
        node = pending.pop()
        with_clause = getattr(node, "withClause", None)
        if with_clause is not None:
            pending.extend(cte.ctequery for cte in with_clause.ctes or ())
        if type(node).__name__ in _DML:
            rel = node.relation
            table = catalog.resolve(rel.relname, rel.schemaname)
            if table is not None:
                found.append(table)
    return found


def write_rates(statements: list[Statement], catalog: Catalog, planner_rows: Callable[[int, str], float | None],
                period_s: float) -> dict[str, float]:
    """Rows written per second to each table by the workload's own INSERT and UPDATE statements.

    Measured over the same span as the read weights (a bulk load before the look-back does not count). Rows
    per execution are the real ones pg_stat_statements counted when known, else the planner's estimate
    (`planner_rows(i, query)`, e.g. WhatIf.rows_written), else 1.
    """
    rates: dict[str, float] = {}
    for i, stmt in enumerate(statements):
        tables = dml_targets(stmt.query, catalog)
        if not tables:
            continue
        rows = rows_per_call(stmt) or planner_rows(i, stmt.query) or 1.0
        for table in tables:
            key = table.parent or table.qualified
            rates[key] = rates.get(key, 0.0) + max(stmt.calls, 1) * max(rows, 1.0) / max(period_s, 1.0)
    return rates


def rows_per_call(stmt: Statement) -> float | None:
    """The rows one execution really wrote (pg_stat_statements' rows / calls); None when not measured."""
    if stmt.rows > 0 and stmt.calls > 0:
        return stmt.rows / stmt.calls
    return None


def skewed_columns(catalog: Catalog) -> frozenset[tuple[str, str, str]]:
    """Columns whose most common value alone has SKEWED_KEY_ROWS rows or more (pg_stats most_common_freqs)."""
    found = set()
    for table in catalog.tables.values():
        for col in table.columns:
            if col.most_common_freqs and max(col.most_common_freqs) * table.rows >= SKEWED_KEY_ROWS:
                found.add((table.schema, table.name, col.name))
    return frozenset(found)


def _sizes(whatif: WhatIf, catalog: Catalog, cands: set[IndexCandidate]) -> dict[IndexCandidate, int]:
    sizes: dict[IndexCandidate, int] = {}
    for cand in sorted(cands, key=IndexCandidate.fingerprint):
        table = catalog.tables.get(f"{cand.schema}.{cand.table}")
        if table is None:
            continue
        fraction = 1.0
        if cand.where:
            try:
                fraction = whatif.row_fraction(cand.schema, cand.table, cand.where)
            except psycopg2.Error as err:
                log.warning("cannot estimate the rows of %s WHERE %s: %s", table.qualified, cand.where, err)
        sizes[cand] = estimate_btree_size(table, cand, fraction, fillfactor=90)
    return sizes


def _recommendations(selection: Selection, statements: list[Statement]) -> tuple[Recommendation, ...]:
    recs = []
    for choice in selection.chosen:
        effects = tuple(
            QueryEffect(statements[h.statement].query, statements[h.statement].calls, round(h.cost_before, 2),
                        round(h.cost_after, 2), statements[h.statement].queryid)
            for h in sorted(choice.helped, key=lambda h: -statements[h.statement].total_time_ms)
        )
        recs.append(Recommendation(choice.candidate, choice.size_bytes, round(choice.improvement_pct, 2),
                                   round(choice.write_ms_per_s, 4), effects))
    return tuple(recs)
