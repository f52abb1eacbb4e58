"""One advisor run: workload -> catalog -> candidates -> what-if costs -> selection -> recommendations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg2
from psycopg2 import sql

from indexd.advisor.candidates import generate
from indexd.advisor.catalog import load_catalog
from indexd.advisor.model import Catalog, IndexCandidate, QueryEffect, Recommendation, Statement
from indexd.advisor.select import Selection, select
from indexd.advisor.size import estimate_btree_size
from indexd.advisor.whatif import WhatIf
from indexd.clock import utcnow
from indexd.config.schema import IndexingSettings
from indexd.db.pool import Database
from indexd.db.state import migrate
from indexd.workload.capture import take_snapshot, workload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A statement the advisor could not use, and why."""

    query: str
    reason: str


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


def advise(
    db: Database,
    settings: IndexingSettings,
    statements: list[Statement] | None = None,
    budget_bytes: int | None = None,
    *,
    now: datetime | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Advice:
    """Index advice for this database's workload (pg_stat_statements over the look-back, or `statements`)."""
    started = clock()
    warnings: list[str] = []
    from_workload = statements is None
    if statements is None:
        statements = _captured(db, settings, now, warnings)
    with db.connection() as conn:
        catalog = load_catalog(conn, db.settings.state_schema)
    cands = generate(statements, catalog, settings)
    skipped = [Skipped(s.query, s.reason) for s in cands.skipped]
    budget = settings.storage_budget if budget_bytes is None else budget_bytes
    with WhatIf(db, statement_timeout=db.settings.timeouts.statement,
                through_view=cands.through_view) as whatif:
        sizes = _sizes(whatif, catalog, cands.all)
        selection = select(
            cands, whatif.cost, budget, {k: t.writes_per_second for k, t in catalog.tables.items()}, settings,
            statements=statements, sizes=sizes, existing=catalog.indexes,
            period_s=_period_s(settings, from_workload),
        )
        skipped += [Skipped(statements[i].query, f"cannot be costed: {err}")
                    for i, err in sorted(whatif.stats.errors.items())]
        create_sql = {c.candidate.fingerprint(): c.candidate.create_sql().as_string(whatif.conn)
                      for c in selection.chosen}
        log.info("%s: %d statements, %d candidates, %d EXPLAINs (%d cached), %d recommended",
                 db.name, len(statements), len(cands.all), whatif.stats.explains, whatif.stats.cache_hits,
                 len(selection.chosen))
    if not statements:
        warnings.append("the workload is empty: no statement to analyze")
    return Advice(db.name, len(statements), round(clock() - started, 3), _recommendations(selection, statements),
                  tuple(skipped), tuple(warnings), create_sql, from_workload)


def _captured(db: Database, settings: IndexingSettings, now: datetime | None, warnings: list[str]) -> list[Statement]:
    """The look-back's workload; a first snapshot is taken when there is none yet."""
    migrate(db)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}.snapshots").format(sql.Identifier(db.settings.state_schema)))
        has_snapshots = cur.fetchone()[0] > 0
    if not has_snapshots:
        take_snapshot(db, now)
        warnings.append("no earlier snapshot: the workload is every statement since pg_stat_statements was reset")
    return workload(db, settings.lookback, now=now or utcnow(), min_calls=settings.min_calls)


def _period_s(settings: IndexingSettings, from_workload: bool) -> float:
    """The span the statement weights cover; write rates (per second) are compared over the same span."""
    del from_workload  # a file's calls are read as calls per look-back, like the captured ones
    return settings.lookback.total_seconds()


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
                        round(h.cost_after, 2))
            for h in sorted(choice.helped, key=lambda h: -statements[h.statement].total_time_ms)
        )
        recs.append(Recommendation(choice.candidate, choice.size_bytes, round(choice.improvement_pct, 2),
                                   round(choice.write_ms_per_s, 4), effects))
    return tuple(recs)
