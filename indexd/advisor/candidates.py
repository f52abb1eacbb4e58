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
- a partial variant when the statement always filters on a rare constant (pg_stats most_common_vals/freqs or
  null_frac): `WHERE status = 'pending'` keeps only the rows it needs.
Views are never indexed (their base tables are), partitions are indexed through their partitioned parent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from indexd.advisor.model import Catalog, Column, IndexCandidate, IndexKey, Table
from indexd.advisor.parse import Unusable, Usage, analyze
from indexd.advisor.predicates import FixedFilter, Scan
from indexd.advisor.skips import SkipReason
from indexd.config.schema import IndexingSettings
from indexd.statements.indexdef import covers
from indexd.statements.statement import Statement

log = logging.getLogger(__name__)

RARE_FRACTION = 0.05  # a constant matching at most this share of the rows is worth a partial index
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


def generate(
    statements: Sequence[Statement], catalog: Catalog, settings: IndexingSettings, state_schema: str = "indexd"
) -> Candidates:
    """The candidates of every statement, de-duplicated across the workload."""
    result = Candidates()
    for i, statement in enumerate(statements):
        try:
            usage = analyze(statement.query, catalog, state_schema)
        except Unusable as exc:
            result.by_statement.append([])
            result.skipped.append(Skip(i, statement.query, str(exc), exc.reason))
            continue
        except RecursionError:  # pathologically deep nesting: one statement, not the whole run
            result.by_statement.append([])
            result.skipped.append(Skip(i, statement.query, "nested too deeply to analyse", SkipReason.UNSUPPORTED))
            continue
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
            shapes = scan_candidates(scan, settings.max_columns, partial=not usage.through_view)
            fresh = [c for c in shapes if not already_indexed(c, catalog)]
            if shapes and not fresh:
                problems.setdefault(f"the indexes {scan.table.qualified} would need exist already",
                                    SkipReason.ALREADY_INDEXED)
            found += [c for c in fresh if c not in found]
        result.by_statement.append(found)
        result.all.update(found)
        if not found:
            reasons = {**usage.notes, **problems}
            text = "; ".join(reasons) or "no usable predicate, join, sort or grouping"
            result.skipped.append(Skip(i, statement.query, text, skip_reason(usage, problems)))
    log.info("%d candidates for %d statements (%d skipped)", len(result.all), len(statements), len(result.skipped))
    return result


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
    """A valid existing index makes this candidate redundant (the one rule: `indexdef.covers`)."""
    wanted = cand.shape()
    return any(i.schema == cand.schema and i.table == cand.table and i.is_valid and covers(i.shape(), wanted)
               for i in catalog.indexes)


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


def key_sets(scan: Scan, max_columns: int) -> list[tuple[IndexKey, ...]]:
    """The key lists worth trying for one scan, multi-column ones first."""
    equal = sorted(scan.equal, key=lambda k: -distinct_values(scan.table, k))  # stable: ties keep query order
    ranges = _without(scan.ranges, equal)
    sets: list[tuple[IndexKey, ...]] = []
    if len(equal) >= 2:
        sets.append(tuple(equal[:max_columns]))
    for rng in ranges:
        if equal:
            sets.append((*equal[: max_columns - 1], rng))
    for tail in (_without(scan.order, equal), _without(scan.group, equal)):
        if tail and len(tail) <= max_columns:
            sets.append((*equal[: max_columns - len(tail)], *tail))
    sets += [(k,) for k in [*equal, *ranges, *_without(scan.either, [*equal, *ranges])]]
    sets += [s[:1] for s in sets if len(s) > 1]  # the leading key alone: the narrowest that may serve
    return [s for i, s in enumerate(sets) if s and s not in sets[:i]]


def scan_candidates(scan: Scan, max_columns: int, partial: bool = True) -> list[IndexCandidate]:
    table = scan.table
    sets = key_sets(scan, max_columns)
    found = [IndexCandidate(table.schema, table.name, keys) for keys in sets]
    if not scan.modifies and not scan.all_columns and sets and table.visible_fraction >= IOS_MIN_VISIBLE:
        for keys in sets[:2]:
            extra = covering_columns(scan, keys)
            wanted = {k.column for k in keys} | set(extra)
            if extra and not any(wanted <= {k.column for k in other} for other in sets):  # no key set has them
                found.append(IndexCandidate(table.schema, table.name, keys, include=extra))
    if partial:
        found += partial_candidates(scan, max_columns)
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


def partial_candidates(scan: Scan, max_columns: int) -> list[IndexCandidate]:
    """For a rare constant filter: the best keys of the other predicates, over only the rows it keeps.

    The filtered column is never a key of its own partial index: under `WHERE a = 42` (or `a IS NULL`) the key a
    has one value, so such an index is the plain index on a, only smaller. (`a IS NOT NULL` keeps a as a key: the
    sparse index on a column that is mostly NULL.) With no other predicate there is no partial candidate.
    """
    found = []
    for fixed in scan.fixed:
        column = scan.table.column(fixed.column)
        share = value_fraction(column, scan.table, fixed) if column else None
        if share is None or share > RARE_FRACTION:
            continue
        own = [IndexKey(column=fixed.column)]
        rest = Scan(scan.table, equal=_without(scan.equal, own), ranges=_without(scan.ranges, own),
                    order=_without(scan.order, own), group=_without(scan.group, own))
        sets = [keys for keys in key_sets(rest, max_columns) if not any(k.column == fixed.column for k in keys)]
        if not sets and fixed.kind == "notnull":
            sets = [(own[0],)]
        if sets:
            found.append(IndexCandidate(scan.table.schema, scan.table.name, sets[0], where=fixed.predicate))
    return found
