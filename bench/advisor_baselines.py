"""Public baselines for the advisor benchmark, implemented from their published rules on the same what-if engine.

* Dexter (ankane/dexter, lib/dexter/indexer.rb): per statement with initial cost >= 100: hypothetical single-column
  indexes on every column any statement references, then all two-column permutations; suggest the index(es) the
  plan uses when the single-column pass cuts the cost by >= 50 %, or the two-column pass cuts the single-column
  cost by another 50 % (single-column cost > 100); with several used, keep the best one alone if it still meets
  the bar; drop a single-column index that a suggested two-column index leads with, and indexes existing ones
  already lead with.
* supabase index_advisor: per statement, a hypothetical single-column B-tree index on every column of the tables
  it reads (except columns an existing index leads with); the indexes its plan uses are suggested when the total
  cost falls.
"""

from __future__ import annotations

from itertools import permutations

from pglast import parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor

from indexd.advisor.model import Catalog, IndexCandidate, IndexKey, Table
from indexd.advisor.whatif import WhatIf
from indexd.statements.statement import Statement

MIN_COST = 100.0
SAVINGS_RATIO = 0.5


class _Refs(Visitor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.columns: set[str] = set()
        self.relations: list[tuple[str | None, str]] = []

    def visit_ColumnRef(self, ancestors: object, node: object) -> None:  # noqa: N802
        last = node.fields[-1]  # type: ignore[attr-defined]
        if hasattr(last, "sval"):
            self.columns.add(last.sval)

    def visit_RangeVar(self, ancestors: object, node: object) -> None:  # noqa: N802
        self.relations.append((node.schemaname, node.relname))  # type: ignore[attr-defined]


def _refs(query: str) -> _Refs | None:
    try:
        tree = parse_sql(query)
    except ParseError:
        return None
    refs = _Refs()
    refs(tree)
    return refs


def _tables(refs: _Refs, catalog: Catalog) -> tuple[list[Table], list[Table]] | None:
    """(tables, tables reached through views), or None when a relation is missing or not indexable."""
    tables: list[Table] = []
    via_views: list[Table] = []
    for schema, name in refs.relations:
        table = catalog.resolve(name, schema)
        if table is None:
            return None
        if table.kind == "v" and table.view_definition:
            inner = _refs(table.view_definition)
            found = _tables(inner, catalog) if inner else None
            if found is None:
                return None
            via_views += found[0] + found[1]
        elif table.kind in ("r", "m", "p"):
            tables.append(table)
        else:
            return None
    return tables, via_views


def _leading(catalog: Catalog, table: Table) -> set[tuple[str, ...]]:
    """Column prefixes (1 and 2 columns) existing B-tree indexes cover."""
    covered: set[tuple[str, ...]] = set()
    for idx in catalog.indexes_on(table):
        if idx.method == "btree" and idx.is_valid:
            covered.add(tuple(idx.keys[:1]))
            covered.add(tuple(idx.keys[:2]))
    return covered


_NO_BTREE = ("json", "xml", "point", "polygon", "box", "circle", "line", "tsvector")


def _indexable(type_text: str) -> bool:
    return type_text.split("(")[0].strip() not in _NO_BTREE and not type_text.endswith("json")


def _columns(cand: IndexCandidate) -> tuple[str, ...]:
    return tuple(k.column or "" for k in cand.keys)


def dexter(whatif: WhatIf, statements: list[Statement], catalog: Catalog) -> list[IndexCandidate]:
    """The indexes Dexter's rule suggests for these statements."""
    work: list[tuple[int, str, list[Table], list[Table], float]] = []
    possible: set[str] = set()
    for i, stmt in enumerate(statements):
        refs = _refs(stmt.query)
        found = _tables(refs, catalog) if refs else None
        if refs is None or found is None or not (found[0] or found[1]):
            continue
        initial = whatif.cost(i, stmt.query, frozenset())
        if initial is None or initial < MIN_COST:
            continue
        work.append((i, stmt.query, found[0], found[1], initial))
        possible |= refs.columns
    tables = {t.qualified: t for _, _, ts, vs, _ in work for t in ts + vs}
    via_view = {t.qualified for _, _, _, vs, _ in work for t in vs}
    singles: list[IndexCandidate] = []
    pairs: list[IndexCandidate] = []
    for key in sorted(tables):
        t = tables[key]
        cols = [c.name for c in t.columns if _indexable(c.type) and (c.name in possible or key in via_view)]
        singles += [IndexCandidate(t.schema, t.name, (IndexKey(c),)) for c in cols]
        pairs += [IndexCandidate(t.schema, t.name, (IndexKey(a), IndexKey(b))) for a, b in permutations(cols, 2)]
    pass1, pass2 = frozenset(singles), frozenset(singles + pairs)
    existing = {(t.schema, t.name, p) for t in tables.values() for p in _leading(catalog, t)}
    suggested: set[IndexCandidate] = set()
    for i, query, _, _, initial in work:
        plan1, plan2 = whatif.plan(i, query, pass1), whatif.plan(i, query, pass2)
        if plan1 is None or plan2 is None:
            continue
        def new(used: frozenset[IndexCandidate]) -> list[IndexCandidate]:
            return sorted((c for c in used if (c.schema, c.table, _columns(c)) not in existing),
                          key=IndexCandidate.fingerprint)

        saves1 = plan1.cost < initial * SAVINGS_RATIO
        saves2 = plan1.cost > MIN_COST and plan2.cost < plan1.cost * SAVINGS_RATIO
        chosen = new(plan2.used if saves2 else plan1.used)
        if saves2 and len(chosen) > 1:
            chosen, saves2 = new(plan1.used), False
        suggest = saves1 or saves2
        if suggest and len(chosen) > 1:
            costs = [(whatif.cost(10_000_000 + i * 100 + n, query, frozenset([c])), c) for n, c in enumerate(chosen)]
            best_cost, best = min(((c, x) for c, x in costs if c is not None), key=lambda p: p[0],
                                  default=(None, None))
            bar = plan1.cost if saves2 else initial
            if best is not None and best_cost is not None and best_cost < bar * SAVINGS_RATIO:
                chosen = [best]
            else:
                suggest = False
        if suggest:
            suggested.update(chosen)
    led = {(c.schema, c.table, c.keys[0].column) for c in suggested if len(c.keys) > 1}
    return sorted((c for c in suggested if not (len(c.keys) == 1 and (c.schema, c.table, c.keys[0].column) in led)),
                  key=IndexCandidate.fingerprint)


def supabase_index_advisor(whatif: WhatIf, statements: list[Statement], catalog: Catalog) -> list[IndexCandidate]:
    """The indexes supabase index_advisor's rule suggests for these statements (single-column only)."""
    suggested: set[IndexCandidate] = set()
    for i, stmt in enumerate(statements):
        refs = _refs(stmt.query)
        found = _tables(refs, catalog) if refs else None
        if refs is None or found is None:
            continue
        hypothetical = []
        for t in found[0] + found[1]:
            covered = _leading(catalog, t)
            hypothetical += [IndexCandidate(t.schema, t.name, (IndexKey(c.name),)) for c in t.columns
                             if (c.name,) not in covered and _indexable(c.type)]
        if not hypothetical:
            continue
        before = whatif.cost(i, stmt.query, frozenset())
        after = whatif.plan(i, stmt.query, frozenset(hypothetical))
        if before is not None and after is not None and after.cost < before:
            suggested.update(after.used)
    return sorted(suggested, key=IndexCandidate.fingerprint)
