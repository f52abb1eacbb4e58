"""Index candidates for a workload: for each statement, the index shapes that could serve its table scans.

Shapes, per scan (a scan is what one statement reads of one table, see `indexd.advisor.parse`):
- one single-column index for each column (or expression) a predicate uses;
- equality columns first, the most selective first (pg_stats n_distinct), then ONE range column, or the ORDER BY
  keys in order with their directions, or the GROUP BY keys; at most `max_columns` keys;
- the leading key alone of every multi-column key list: the narrowest index that may serve (selection keeps it
  when it serves nearly as well);
- a covering variant (INCLUDE) when the statement reads at most two further narrow columns of the table and
  the table's visibility map makes index-only scans real (at least IOS_MIN_VISIBLE of its pages all-visible,
  pg_class.relallvisible / relpages): on a table whose pages are rarely all-visible an index-only scan visits
  the heap anyway and the INCLUDE columns only cost space and writes;
- a partial variant when the statement always filters on a rare value of a category column (one of few values,
  pg_stats most_common_vals/freqs or null_frac): `WHERE status = 'pending'` keeps only the rows it needs;
- when other statements of the workload filter on a subset of this one's equality columns, the order that leads
  with those columns, so one index serves them all;
- the index classes of `indexd.advisor.classes` (GIN, BRIN, sparse partial) where a predicate needs them.
Views are never indexed (their base tables are). A partitioned table is indexed on its parent (the index
reaches every partition); a statement that names one partition gets candidates on that partition too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from indexd.advisor.classes import (
    WorkloadUses,
    brin_candidates,
    existing_serves,
    gin_candidates,
    sparse_candidates,
)
from indexd.advisor.model import Catalog, Column, IndexCandidate, IndexKey, Table
from indexd.advisor.parse import Unusable, Usage, analyze
from indexd.advisor.predicates import ClassUse, FixedFilter, Scan
from indexd.advisor.skips import SkipReason
from indexd.config.schema import IndexingSettings
from indexd.statements.indexdef import covers
from indexd.statements.statement import Statement

log = logging.getLogger(__name__)

RARE_FRACTION = 0.05  # a constant matching at most this share of the rows is worth a partial index ...
CATEGORY_DISTINCT = 100  # ... when its column has at most this many values (a status, a kind, a flag) ...
CATEGORY_COMMON = 0.95  # ... or its most common values cover this share of the rows
MAX_INCLUDE = 2  # at most this many INCLUDE columns ...
NARROW_BYTES = 16  # ... each at most this wide on average
_NARROW_TYPES = frozenset({"smallint", "integer", "bigint", "boolean", "date", "real", "double precision",
                           "timestamp without time zone", "timestamp with time zone", "uuid", "oid", "time"})
INDEXABLE_KINDS = frozenset({"r", "p", "m"})
IOS_MIN_VISIBLE = 0.5  # all-visible share of a table's pages below which no covering (INCLUDE) variant is made


@dataclass(frozen=True)
class Skip:
    """A statement that yields no candidate, and why."""

    statement_index: int
    query: str
    reason: str
    kind: SkipReason = SkipReason.NO_INDEXABLE_PREDICATE


@dataclass
class Candidates:
    by_statement: list[list[IndexCandidate]] = field(default_factory=list)  # relevant to statement i
    all: set[IndexCandidate] = field(default_factory=set)
    skipped: list[Skip] = field(default_factory=list)
    # Statements that read through a view: never cost a partial hypothetical index for them (HypoPG can crash
    # the server planning such a query against a partial hypothetical index).
    through_view: set[int] = field(default_factory=set)
    # Extensions the workload would need for a class of index (pg_trgm): extension -> statement indexes
    needs_extension: dict[str, list[int]] = field(default_factory=dict)
    # The conjuncts each GIN candidate serves in each statement (for costing it without HypoPG)
    gin_uses: dict[tuple[int, IndexCandidate], list[ClassUse]] = field(default_factory=dict)

    def without(self, dropped: Iterable[IndexCandidate]) -> Candidates:
        """The same candidates less the dropped ones."""
        gone = set(dropped)
        if not gone:
            return self
        return Candidates([[c for c in found if c not in gone] for found in self.by_statement], self.all - gone,
                          self.skipped, self.through_view, self.needs_extension,
                          {k: v for k, v in self.gin_uses.items() if k[1] not in gone})


def generate(
    statements: Sequence[Statement], catalog: Catalog, settings: IndexingSettings, state_schema: str = "indexd"
) -> Candidates:
    """The candidates of every statement, de-duplicated across the workload."""
    result = Candidates()
    usages: list[Usage | None] = []
    for i, statement in enumerate(statements):
        usages.append(_analyze(i, statement, catalog, state_schema, result))
    uses = WorkloadUses.of((scan for u in usages if u for scan in u.scans), catalog.extensions)
    for i, usage in enumerate(usages):
        found = [] if usage is None else _statement_candidates(i, statements[i].query, usage, catalog, settings,
                                                                 uses, result)
        result.by_statement.append(found)
        result.all.update(found)
    result.skipped.sort(key=lambda s: s.statement_index)
    log.info("%d candidates for %d statements (%d skipped)", len(result.all), len(statements), len(result.skipped))
    return result


def _analyze(i: int, statement: Statement, catalog: Catalog, state_schema: str, result: Candidates) -> Usage | None:
    try:
        return analyze(statement.query, catalog, state_schema)
    except Unusable as exc:
        result.skipped.append(Skip(i, statement.query, str(exc), exc.reason))
    except RecursionError:  # pathologically deep nesting: one statement, not the whole run
        result.skipped.append(Skip(i, statement.query, "nested too deeply to analyse", SkipReason.UNSUPPORTED))
    return None


def _statement_candidates(i: int, query: str, usage: Usage, catalog: Catalog, settings: IndexingSettings,
                          uses: WorkloadUses, result: Candidates) -> list[IndexCandidate]:
    if usage.through_view:
        result.through_view.add(i)
    problems: dict[str, SkipReason] = {}  # of the tables scanned
    found: list[IndexCandidate] = []
    for scan in usage.scans:
        problem = table_problem(scan.table, settings)
        if problem:
            reason = SkipReason.NOT_INDEXABLE if scan.table.kind not in INDEXABLE_KINDS else SkipReason.SMALL_TABLE
            problems.setdefault(problem, reason)
            continue
        shapes = scan_candidates(scan, settings.max_columns, partial=not usage.through_view, uses=uses)
        gin, missing = gin_candidates(scan, uses)
        for extension in missing:
            result.needs_extension.setdefault(extension, []).append(i)
        shapes = on_partition_and_parent([*shapes, *gin], scan.table, catalog)
        by_keys = {c.keys: served for c, served in gin.items()}
        for cand in shapes:
            if cand.method == "gin":
                result.gin_uses.setdefault((i, cand), []).extend(by_keys[cand.keys])
        fresh = [c for c in shapes if not already_indexed(c, catalog)]
        if shapes and not fresh:
            problems.setdefault(f"the indexes {scan.table.qualified} would need exist already",
                                SkipReason.ALREADY_INDEXED)
        found += [c for c in fresh if c not in found]
    if not found:
        reasons = {**usage.notes, **problems}
        text = "; ".join(reasons) or "no usable predicate, join, sort or grouping"
        result.skipped.append(Skip(i, query, text, skip_reason(usage, problems)))
    return found


def on_partition_and_parent(cands: list[IndexCandidate], table: Table, catalog: Catalog) -> list[IndexCandidate]:
    """Candidates on a partition the statement names, and the same on its top partitioned parent."""
    root = table
    while root.parent is not None and root.parent in catalog.tables:
        root = catalog.tables[root.parent]
    if root is table:
        return cands
    moved = [IndexCandidate(root.schema, root.name, c.keys, c.method, c.where, c.include) for c in cands]
    return list(dict.fromkeys([*cands, *moved]))


def skip_reason(usage: Usage, problems: dict[str, SkipReason]) -> SkipReason:
    """The one named reason of a statement without candidates: its tables' problem first, then what it reads."""
    if problems:
        return next(iter(problems.values()))
    if usage.scans:
        unknown = SkipReason.UNKNOWN_COLUMN in usage.notes.values()
        return SkipReason.UNKNOWN_COLUMN if unknown else SkipReason.NO_INDEXABLE_PREDICATE
    if usage.notes:
        return next(iter(usage.notes.values()))
    return SkipReason.WRITE_ONLY if usage.inserts else SkipReason.FUNCTION_ONLY


def table_problem(table: Table, settings: IndexingSettings) -> str | None:
    if table.kind not in INDEXABLE_KINDS:
        return f"{table.qualified} cannot be indexed (relkind {table.kind})"
    if table.rows < settings.min_table_rows:
        return f"{table.qualified} has {table.rows:.0f} rows, fewer than min_table_rows ({settings.min_table_rows})"
    return None


def already_indexed(cand: IndexCandidate, catalog: Catalog) -> bool:
    """A valid existing index makes this candidate redundant: the one rule (`indexdef.covers`), and for GIN and
    BRIN also an index on the same key with an operator class at least as capable (`classes.existing_serves`:
    a default jsonb_ops index serves what jsonb_path_ops would)."""
    on_table = [i for i in catalog.indexes if i.schema == cand.schema and i.table == cand.table]
    wanted = cand.shape()
    if any(i.is_valid and covers(i.shape(), wanted) for i in on_table):
        return True
    return cand.method != "btree" and existing_serves(cand, on_table)


# ---- shapes ---------------------------------------------------------------------------------------------------
def distinct_values(table: Table, key: IndexKey) -> float:
    """pg_stats' estimate of a key's distinct values (an expression counts as its column); 0 when unknown."""
    column = table.column(key.column) if key.column else _expression_column(table, key)
    if column is None or column.n_distinct is None:
        return 0.0
    return column.n_distinct if column.n_distinct > 0 else -column.n_distinct * max(table.rows, 1.0)


def _expression_column(table: Table, key: IndexKey) -> Column | None:
    text = key.expression or ""
    return next((c for c in table.columns if f"({c.name})" in text or f"({c.name}," in text), None)


def _same(a: IndexKey, b: IndexKey) -> bool:
    return a.column == b.column and a.expression == b.expression


def _without(keys: Iterable[IndexKey], taken: Iterable[IndexKey]) -> list[IndexKey]:
    taken = list(taken)
    return [k for k in keys if not any(_same(k, t) for t in taken)]


def key_sets(scan: Scan, max_columns: int,
             leads: Sequence[tuple[IndexKey, ...]] = ()) -> list[tuple[IndexKey, ...]]:
    """The key lists worth trying for one scan, multi-column ones first.

    Equality keys go most selective first; `leads` (equality keys of other statements, a subset of this scan's)
    give the orders that start with them instead, so one index can serve both statements."""
    equal = sorted(scan.equal, key=lambda k: -distinct_values(scan.table, k))  # stable: ties keep query order
    ranges = _without(scan.ranges, equal)
    sets: list[tuple[IndexKey, ...]] = []
    if len(equal) >= 2:
        sets.append(tuple(equal[:max_columns]))
        for lead in leads:
            shared = (*lead, *_without(equal, lead))
            sets.append(shared[:max_columns])
            if ranges and len(shared) < max_columns:
                sets.append((*shared, ranges[0]))
    for rng in ranges:
        if equal:
            sets.append((*equal[: max_columns - 1], rng))
    for tail in (_without(scan.order, equal), _without(scan.group, equal)):
        if tail and len(tail) <= max_columns:
            sets.append((*equal[: max_columns - len(tail)], *tail))
    sets += [(k,) for k in [*equal, *ranges, *_without(scan.either, [*equal, *ranges])]]
    sets += [s[:1] for s in sets if len(s) > 1]  # the leading key alone: the narrowest that may serve
    return [s for i, s in enumerate(sets) if s and s not in sets[:i]]


def scan_candidates(scan: Scan, max_columns: int, partial: bool = True,
                    uses: WorkloadUses | None = None) -> list[IndexCandidate]:
    """The B-tree shapes of one scan (with covering and partial variants), BRIN and sparse partial ones."""
    table = scan.table
    sets = key_sets(scan, max_columns, uses.leads(scan) if uses else ())
    found = [IndexCandidate(table.schema, table.name, keys) for keys in sets]
    if not scan.modifies and not scan.all_columns and sets and table.visible_fraction >= IOS_MIN_VISIBLE:
        for keys in sets[:2]:
            extra = covering_columns(scan, keys)
            wanted = {k.column for k in keys} | set(extra)
            if extra and not any(wanted <= {k.column for k in other} for other in sets):  # no key set has them
                found.append(IndexCandidate(table.schema, table.name, keys, include=extra))
    if partial:
        found += partial_candidates(scan, max_columns)
        found += sparse_candidates(scan, sets)
    found += brin_candidates(scan)
    return list(dict.fromkeys(found))


def covering_columns(scan: Scan, keys: tuple[IndexKey, ...]) -> tuple[str, ...]:
    """The columns to INCLUDE so the scan needs only the index; () when that is not worth it."""
    in_keys = {k.column for k in keys if k.column}
    extra = sorted(scan.referenced - in_keys)
    if not extra or len(extra) > MAX_INCLUDE:
        return ()
    columns = [scan.table.column(name) for name in extra]
    if any(c is None or not _narrow(c) for c in columns):
        return ()
    return tuple(extra)


def _narrow(column: Column) -> bool:
    if column.avg_width is not None:
        return column.avg_width <= NARROW_BYTES
    return column.type in _NARROW_TYPES


def value_fraction(column: Column, table: Table, fixed: FixedFilter) -> float | None:
    """The share of rows a constant filter keeps, from pg_stats; None when the statistics do not say."""
    null_frac = column.null_frac
    if fixed.kind == "null":
        return null_frac
    if fixed.kind == "notnull":
        return None if null_frac is None else 1.0 - null_frac
    if fixed.value in column.most_common_vals:
        return column.most_common_freqs[column.most_common_vals.index(fixed.value)]
    distinct = distinct_values(table, IndexKey(column=column.name))
    if not column.most_common_vals or distinct <= len(column.most_common_vals):
        return None  # no statistics, or every value is a common one and this one is not among them
    rest = max(0.0, 1.0 - sum(column.most_common_freqs) - (null_frac or 0.0))
    return rest / (distinct - len(column.most_common_vals))


def category(column: Column, table: Table) -> bool:
    """A column of few values (a status, a kind, a flag): a partial index on one rare value of it is a DBA's
    habit; on a key of thousands of values (an id) it would be one index per value."""
    distinct = distinct_values(table, IndexKey(column=column.name))
    return (0 < distinct <= CATEGORY_DISTINCT) or sum(column.most_common_freqs) >= CATEGORY_COMMON


def partial_candidates(scan: Scan, max_columns: int) -> list[IndexCandidate]:
    """For a rare value of a category column: the best keys of the other predicates, over only the rows it keeps.

    The filtered column is a key of its own partial index only when nothing else is (`(status) WHERE status =
    'pending'`: the plain index on status, holding only the rare rows). `a IS NOT NULL` keeps a as a key: the
    sparse index on a column that is mostly NULL.
    """
    found = []
    for fixed in scan.fixed:
        column = scan.table.column(fixed.column)
        share = value_fraction(column, scan.table, fixed) if column else None
        if column is None or share is None or share > RARE_FRACTION:
            continue
        if fixed.kind == "eq" and not category(column, scan.table):
            continue
        own = [IndexKey(column=fixed.column)]
        rest = Scan(scan.table, equal=_without(scan.equal, own), ranges=_without(scan.ranges, own),
                    order=_without(scan.order, own), group=_without(scan.group, own))
        sets = [keys for keys in key_sets(rest, max_columns) if not any(k.column == fixed.column for k in keys)]
        found.append(IndexCandidate(scan.table.schema, scan.table.name, sets[0] if sets else (own[0],),
                                    where=fixed.predicate))
    return found
