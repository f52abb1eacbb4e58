"""One advisor run: a given workload -> catalog -> candidates -> what-if costs -> selection -> recommendations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from indexd.advisor.candidates import generate
from indexd.advisor.catalog import load_catalog
from indexd.advisor.classes import extension_notes
from indexd.advisor.measure import measure, on_the_one_partition
from indexd.advisor.model import Catalog, IndexCandidate, QueryEffect, Recommendation
from indexd.advisor.qualstats import with_real_constants
from indexd.advisor.select import Selection, select
from indexd.advisor.skips import SkipReason
from indexd.advisor.whatif import WhatIf, require_hypopg
from indexd.advisor.writes import from_workload
from indexd.config.schema import IndexingSettings
from indexd.db.pool import Database
from indexd.statements.statement import Statement, Workload

log = logging.getLogger(__name__)

SKEWED_KEY_ROWS = 1000  # a key with this many rows makes "key = $1 ORDER BY x LIMIT n" sort for real


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
    note = None
    with db.connection() as conn:
        catalog = load_catalog(conn, db.settings.state_schema)
        if work.captured:  # pg_stat_statements' $n: the real constants, when pg_qualstats has them
            statements, note = with_real_constants(conn, statements, catalog)
    cands = generate(statements, catalog, settings, db.settings.state_schema)
    skipped = [Skipped(s.query, s.reason, s.kind, statements[s.statement_index].queryid) for s in cands.skipped]
    budget = settings.storage_budget if budget_bytes is None else budget_bytes
    with WhatIf(db, statement_timeout=db.settings.timeouts.statement,
                through_view=cands.through_view, catalog=catalog) as whatif:
        cands = on_the_one_partition(cands, [s.query for s in statements], whatif, catalog)
        measured = measure(whatif, catalog, cands)
        whatif.modeled = measured.gin_scans
        cands = cands.without(measured.refused)
        sizes = measured.sizes
        writes = from_workload(statements, catalog, whatif.rows_written, period_s, measured.held)
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
    refused = {c: f"PostgreSQL cannot index it: {why}" for c, why in measured.refused.items()}
    rejected = {**selection.rejected, **refused}
    declined = tuple(Skipped(candidate_label(c), why)
                     for c, why in sorted(rejected.items(), key=lambda kv: kv[0].fingerprint()))
    warnings = (*work.warnings, *([note] if note else []), *extension_notes(cands.needs_extension, statements, db.name))
    return Advice(db.name, len(work.statements), round(clock() - started, 3), _recommendations(selection, statements),
                  tuple(skipped), warnings, create_sql, work.captured, declined, budget,
                  min(sizes.values(), default=None), settings.lookback.total_seconds(), settings.min_improvement_pct)


def candidate_label(cand: IndexCandidate) -> str:
    """`schema.table [USING method] (keys) [WHERE ...]`, as declined candidates are listed."""
    method = "" if cand.method == "btree" else f"USING {cand.method} "
    return (f"{cand.schema}.{cand.table} {method}({', '.join(k.label() for k in cand.keys)})"
            + (f" INCLUDE ({', '.join(cand.include)})" if cand.include else "")
            + (f" WHERE {cand.where}" if cand.where else ""))


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


def skewed_columns(catalog: Catalog) -> frozenset[tuple[str, str, str]]:
    """Columns whose most common value alone has SKEWED_KEY_ROWS rows or more (pg_stats most_common_freqs)."""
    found = set()
    for table in catalog.tables.values():
        for col in table.columns:
            if col.most_common_freqs and max(col.most_common_freqs) * table.rows >= SKEWED_KEY_ROWS:
                found.add((table.schema, table.name, col.name))
    return frozenset(found)


def _recommendations(selection: Selection, statements: list[Statement]) -> tuple[Recommendation, ...]:
    recs = []
    for choice in selection.chosen:
        effects = tuple(
            QueryEffect(statements[h.statement].query, statements[h.statement].calls, round(h.cost_before, 2),
                        round(h.cost_after, 2), statements[h.statement].queryid)
            for h in sorted(choice.helped, key=lambda h: -statements[h.statement].total_time_ms)
        )
        recs.append(Recommendation(choice.candidate, choice.size_bytes, round(choice.improvement_pct, 2),
                                   round(choice.write_ms_per_s, 4), effects,
                                   benefit_ms_per_s=round(choice.benefit_ms_per_s, 4)))
    return tuple(recs)
