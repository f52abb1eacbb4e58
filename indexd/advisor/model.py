"""The advisor's vocabulary: the catalog a workload runs against, index candidates and recommendations. Plain
frozen data, shared by candidates, what-if, selection and report (the statements themselves are
`indexd.statements.statement.Statement`)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from psycopg2 import sql

from indexd.statements.indexdef import (
    IndexShape,
    KeyShape,
    NotAnIndex,
    expression_text,
    parse_index,
    predicate_conjuncts,
)

# The one name of improvement_pct wherever advice is shown (recommend, status, apply, demo), and what it means.
IMPROVEMENT = "improvement"
IMPROVEMENT_MEANS = ("improvement: the share of the whole workload's cost (its statements' time) the index saves; "
                     "an index is recommended only when it saves at least indexing.min_improvement_pct of the cost "
                     "of the statements it helps")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type() text, e.g. "character varying(80)"
    avg_width: int | None = None  # pg_stats.avg_width
    n_distinct: float | None = None  # pg_stats.n_distinct (negative = fraction of rows)
    null_frac: float | None = None
    # pg_stats.most_common_vals as text, with their frequencies (for partial-index decisions)
    most_common_vals: tuple[str, ...] = ()
    most_common_freqs: tuple[float, ...] = ()
    collation: str | None = None  # effective collation of a text column ("C", "en_US.utf8"); None = not text
    correlation: float | None = None  # pg_stats.correlation: physical order vs this column's order (-1 .. 1)


@dataclass(frozen=True)
class ExistingIndex:
    schema: str
    name: str
    table: str
    keys: tuple[str, ...]  # key column names or expression text, in order
    method: str = "btree"
    where: str | None = None
    include: tuple[str, ...] = ()
    is_unique: bool = False
    is_primary: bool = False
    is_valid: bool = True
    size_bytes: int = 0
    definition: str = ""  # pg_get_indexdef()

    def shape(self) -> IndexShape:
        """What the index stores, from its definition (or from its fields when there is none)."""
        if self.definition:
            try:
                return parse_index(self.definition)
            except NotAnIndex:
                pass
        keys = tuple(KeyShape(expression_text(k), expression=True) if "(" in k else KeyShape(k) for k in self.keys)
        return IndexShape(self.schema, self.table, self.method, keys, frozenset(self.include),
                          predicate_conjuncts(self.where))


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    kind: str  # pg_class.relkind: r table, p partitioned, v view, m matview, f foreign
    rows: float  # reltuples (summed over partitions for a partitioned parent)
    pages: int
    columns: tuple[Column, ...] = ()
    fillfactor: int = 100
    writes_per_second: float = 0.0  # (n_tup_ins + n_tup_upd + n_tup_del) / seconds since stats reset
    parent: str | None = None  # "schema.name" of the partitioned parent, for a partition
    view_definition: str | None = None  # for views and materialized views
    updates_seen: float = 0.0  # n_tup_upd since the statistics were reset
    hot_updates_seen: float = 0.0  # n_tup_hot_upd: the updates that touched no index
    all_visible_pages: int = 0  # relallvisible: pages the visibility map marks all-visible

    @property
    def visible_fraction(self) -> float:
        """The share of pages an index-only scan reads without visiting the heap (0 when unknown)."""
        return min(1.0, self.all_visible_pages / self.pages) if self.pages > 0 else 0.0

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class Catalog:
    """What the advisor knows of one database's relations, keyed by "schema.name"."""

    tables: dict[str, Table] = field(default_factory=dict)
    indexes: tuple[ExistingIndex, ...] = ()
    search_path: tuple[str, ...] = ("public",)
    extensions: frozenset[str] = frozenset()  # extensions created in the database (pg_trgm, pg_qualstats ...)

    def resolve(self, name: str, schema: str | None = None) -> Table | None:
        if schema:
            return self.tables.get(f"{schema}.{name}")
        for sch in self.search_path:
            if f"{sch}.{name}" in self.tables:
                return self.tables[f"{sch}.{name}"]
        return None

    def indexes_on(self, table: Table) -> list[ExistingIndex]:
        return [i for i in self.indexes if i.schema == table.schema and i.table == table.name]


@dataclass(frozen=True)
class IndexKey:
    """One key of an index: a plain column, or an expression such as lower(email), with a direction."""

    column: str | None = None
    expression: str | None = None  # deparsed SQL of the expression, e.g. "lower(email)"
    descending: bool = False
    opclass: str | None = None  # e.g. text_pattern_ops, for LIKE 'prefix%' under a non-C collation

    def render(self) -> sql.Composable:
        if self.column is not None:
            key: sql.Composable = sql.Identifier(self.column)
        else:
            key = sql.SQL("({})").format(sql.SQL(self.expression or ""))
        if self.opclass:
            key = key + sql.SQL(" ") + sql.Identifier(self.opclass)
        return key + sql.SQL(" DESC") if self.descending else key

    def label(self) -> str:
        text = self.column if self.column is not None else f"({self.expression})"
        if self.opclass:
            text = f"{text} {self.opclass}"
        return f"{text} DESC" if self.descending else text


@dataclass(frozen=True)
class IndexCandidate:
    """A possible index. Equal candidates (same table, keys, method, predicate, include) are one candidate."""

    schema: str
    table: str
    keys: tuple[IndexKey, ...]
    method: str = "btree"
    where: str | None = None  # deparsed partial-index predicate
    include: tuple[str, ...] = ()

    def shape(self) -> IndexShape:
        keys = tuple(KeyShape(k.column if k.column is not None else expression_text(k.expression or ""), k.opclass,
                              None, k.descending, k.descending, k.column is None) for k in self.keys)
        return IndexShape(self.schema, self.table, self.method, keys, frozenset(self.include),
                          predicate_conjuncts(self.where))

    def fingerprint(self) -> str:
        text = "|".join(
            [self.schema, self.table, self.method, ",".join(k.label() for k in self.keys), self.where or "",
             ",".join(self.include)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def name(self) -> str:
        """Deterministic index name: indexd_<table>[_<method>]_<keys>_<hash>, within PostgreSQL's 63 bytes.

        An expression key is named by its words ((meta ->> 'external_id') -> meta_external_id)."""
        cols = "_".join(k.column if k.column is not None else _words(k.expression or "") for k in self.keys)
        method = "" if self.method == "btree" else f"{self.method}_"
        base = f"indexd_{self.table}_{method}{cols}"
        safe = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in base.lower())
        return f"{safe[:50]}_{self.fingerprint()[:8]}"

    def create_sql(self, concurrently: bool = True) -> sql.Composed:
        """The CREATE INDEX statement, every identifier quoted."""
        parts: list[sql.Composable] = [
            sql.SQL("CREATE INDEX {}{} ON {}.{} USING {} ({})").format(
                sql.SQL("CONCURRENTLY ") if concurrently else sql.SQL(""),
                sql.Identifier(self.name()),
                sql.Identifier(self.schema),
                sql.Identifier(self.table),
                sql.SQL(self.method),
                sql.SQL(", ").join(k.render() for k in self.keys),
            )
        ]
        if self.include:
            parts.append(sql.SQL(" INCLUDE ({})").format(sql.SQL(", ").join(map(sql.Identifier, self.include))))
        if self.where:
            parts.append(sql.SQL(" WHERE {}").format(sql.SQL(self.where)))
        return sql.Composed(parts)


def _words(expression: str) -> str:
    """The identifiers and quoted words of an expression, for a readable index name."""
    words = [w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression) if w.lower() != "pg_catalog"]
    return "_".join(words) or "expr"


@dataclass(frozen=True)
class QueryEffect:
    """What one recommended index (with the rest of the chosen set) does to one statement."""

    query: str
    calls: int
    cost_before: float
    cost_after: float
    queryid: int | None = None  # pg_stat_statements' id of the statement, when the workload came from there


@dataclass(frozen=True)
class Recommendation:
    candidate: IndexCandidate
    estimated_size_bytes: int
    improvement_pct: float  # share of the whole workload's weighted cost this index saves (IMPROVEMENT_MEANS)
    write_overhead: float  # write maintenance the index adds on its table, ms of database time per second
    queries: tuple[QueryEffect, ...] = ()
    benefit_ms_per_s: float | None = None  # read time it saves, in write_overhead's unit (ms/s); None: not known
