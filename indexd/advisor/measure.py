"""What the what-if session measures of the candidates before selection, beyond what HypoPG answers.

- Refusals: a key expression PostgreSQL would not index (a function that is not IMMUTABLE for the column's type,
  `date_trunc('day', timestamptz)`), asked of HypoPG; such a candidate is declined with the server's reason.
- Sizes: B-tree on columns from the catalog (`size`); B-tree on expressions, GIN and BRIN from `classsize`, with
  expression statistics and GIN entries read from a bounded sample (`sampling`, read-only).
- GIN scans: per statement and GIN candidate, what `gincost` needs to cost the plan with it (the planner's
  selectivity of the conditions it serves, the table's rows and pages, the index's estimated pages).
- Pruned partitions: a statement on a partitioned table whose plan (with no new index) reads one partition only
  gets its candidates on that partition too (`on_the_one_partition`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import psycopg2

from indexd.advisor.candidates import Candidates
from indexd.advisor.classsize import BLOCK, brin_size, expression_btree_size, gin_size
from indexd.advisor.expressions import COMMUTATORS
from indexd.advisor.gincost import GinScan
from indexd.advisor.model import Catalog, Column, IndexCandidate, Table
from indexd.advisor.predicates import ClassUse
from indexd.advisor.sampling import entry_stats, expression_column
from indexd.advisor.size import estimate_btree_size
from indexd.advisor.whatif import WhatIf
from indexd.errors import first_line

log = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.005  # PostgreSQL's default selectivity of such operators, when a condition cannot be planned
FALLBACK_ENTRY_BYTES = 24  # per row, for a GIN index whose entries could not be sampled


@dataclass
class Measured:
    sizes: dict[IndexCandidate, int] = field(default_factory=dict)
    refused: dict[IndexCandidate, str] = field(default_factory=dict)  # candidate -> PostgreSQL's reason
    held: dict[IndexCandidate, float] = field(default_factory=dict)  # partial index -> share of the rows it holds
    gin_scans: dict[tuple[int, IndexCandidate], GinScan] = field(default_factory=dict)


def measure(whatif: WhatIf, catalog: Catalog, cands: Candidates) -> Measured:
    result = Measured()
    ordered = sorted(cands.all, key=IndexCandidate.fingerprint)
    for cand in ordered:
        if any(k.expression for k in cand.keys):
            why = whatif.refusal(cand)
            if why is not None:
                result.refused[cand] = why
    families = {cand: uses[0] for (_, cand), uses in cands.gin_uses.items() if uses}
    expressions: dict[tuple[str, str], Column | None] = {}
    for cand in ordered:
        table = catalog.tables.get(f"{cand.schema}.{cand.table}")
        if table is not None and cand not in result.refused:
            fraction = _held(whatif, table, cand)
            if cand.where:
                result.held[cand] = fraction
            result.sizes[cand] = _size(whatif, catalog, table, cand, fraction, families.get(cand), expressions)
    for (i, cand), uses in cands.gin_uses.items():
        table = catalog.tables.get(f"{cand.schema}.{cand.table}")
        if table is not None and cand in result.sizes and uses:
            result.gin_scans[(i, cand)] = _gin_scan(whatif, catalog, table, cand, uses, result.sizes[cand])
    return result


def _held(whatif: WhatIf, table: Table, cand: IndexCandidate) -> float:
    """The share of the table's rows the index holds: below 1 for a partial index (the planner's estimate)."""
    if not cand.where:
        return 1.0
    try:
        return whatif.row_fraction(cand.schema, cand.table, cand.where)
    except psycopg2.Error as err:
        log.warning("cannot estimate the rows of %s WHERE %s: %s", table.qualified, cand.where, first_line(err))
        return 1.0


def _size(whatif: WhatIf, catalog: Catalog, table: Table, cand: IndexCandidate, fraction: float,
          use: ClassUse | None, expressions: dict[tuple[str, str], Column | None]) -> int:
    try:
        if cand.method == "brin":
            return brin_size(table, cand)
        if cand.method == "gin" and use is not None:
            family = "jsonb_path" if cand.keys[0].opclass == "jsonb_path_ops" else use.family
            schema = _extension_schema(whatif, "pg_trgm") if family == "trigram" else "public"
            with whatif.conn.cursor() as cur:
                return gin_size(table, entry_stats(cur, table, cand.keys[0], family, schema), family)
        stats: dict[str, Column] = {}
        for key in cand.keys:
            if key.expression:
                id_ = (table.qualified, key.expression)
                if id_ not in expressions:
                    with whatif.conn.cursor() as cur:
                        expressions[id_] = expression_column(cur, table, key)
                if expressions[id_] is not None:
                    stats[key.expression] = expressions[id_]  # type: ignore[assignment]
        return expression_btree_size(table, cand, stats, fraction)
    except psycopg2.Error as err:
        if whatif.conn.closed:
            raise
        log.warning("cannot sample %s for %s: %s", table.qualified, cand.name(), first_line(err))
    if cand.method == "gin":
        return int(math.ceil(table.rows * FALLBACK_ENTRY_BYTES / BLOCK + 2) * BLOCK)
    return estimate_btree_size(table, cand, fraction)


def _extension_schema(whatif: WhatIf, name: str) -> str:
    with whatif.conn.cursor() as cur:
        cur.execute("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = %s", (name,))
        row = cur.fetchone()
    return str(row[0]).strip('"') if row else "public"


def on_the_one_partition(cands: Candidates, queries: list[str], whatif: WhatIf, catalog: Catalog) -> Candidates:
    """Candidates on a partitioned table, also on its one partition when the statement's plan reads only that one
    (partition pruning on the partition key): the narrowest index that serves it."""
    by_statement = [list(found) for found in cands.by_statement]
    gin_uses = dict(cands.gin_uses)
    for i, found in enumerate(cands.by_statement):
        parents = sorted({key for c in found if (key := f"{c.schema}.{c.table}") in catalog.tables
                          and catalog.tables[key].kind == "p"})
        plan = whatif.plan(i, queries[i], frozenset()) if parents else None
        if plan is None:
            continue
        for key in parents:
            read = [t for t in _leaves(catalog, catalog.tables[key]) if t.name in plan.scanned]
            if len(read) != 1:
                continue
            for cand in [c for c in found if f"{c.schema}.{c.table}" == key]:
                moved = IndexCandidate(read[0].schema, read[0].name, cand.keys, cand.method, cand.where, cand.include)
                by_statement[i] += [] if moved in by_statement[i] else [moved]
                if (i, cand) in cands.gin_uses:
                    gin_uses[(i, moved)] = cands.gin_uses[(i, cand)]
    added = {c for found in by_statement for c in found}
    return Candidates(by_statement, cands.all | added, cands.skipped, cands.through_view, cands.needs_extension,
                      gin_uses)


def _leaves(catalog: Catalog, table: Table) -> list[Table]:
    """The partitions holding rows (at any depth) under a partitioned table."""
    names = partitions_of(catalog, table)
    return [t for t in catalog.tables.values() if t.kind == "r" and t.name in names and t.parent is not None]


def partitions_of(catalog: Catalog, table: Table) -> frozenset[str]:
    """The names of a table and of every partition under it (the relations a plan scans for it)."""
    names = {table.name}
    frontier = {table.qualified}
    while frontier:
        children = {t.qualified for t in catalog.tables.values() if t.parent in frontier}
        names |= {catalog.tables[c].name for c in children}
        frontier = children
    return frozenset(names)


def _gin_scan(whatif: WhatIf, catalog: Catalog, table: Table, cand: IndexCandidate, uses: list[ClassUse],
              size: int) -> GinScan:
    fraction = 1.0
    for use in dict.fromkeys(uses):
        found = whatif.clause_fraction(table, use.clause)
        fraction *= DEFAULT_FRACTION if found is None else found
    operators = {u.operator for u in uses} | {COMMUTATORS[u.operator] for u in uses if u.operator in COMMUTATORS}
    return GinScan(cand, partitions_of(catalog, table), frozenset(operators), uses[0].column, uses[0].family,
                   table.rows, float(table.pages), fraction, size / BLOCK)
