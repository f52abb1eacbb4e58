"""What new indexes cost the workload's writes, knowing HOT updates: a pure model fed by readings.

Readings, per table: from the workload's own write statements (parsed), the rows each INSERT, DELETE and UPDATE
writes per second and the columns each UPDATE sets; from the catalog, the indexes there are, the HOT share of
updates so far (pg_stat_user_tables n_tup_hot_upd / n_tup_upd) and the fill factor.

An UPDATE is HOT (heap-only) when it sets no column any index stores (keys, INCLUDE, expressions, predicates)
and the new row version fits on the same page: then no index is touched at all. Otherwise every index of the
table gets a new entry, and vacuum later removes the old one from every index. So, with `k` indexes on a table
and a set `N` of new ones, in ms of database time per second:

* an inserted row:          |N| x ENTRY_MS
* a deleted row:            |N| x DEAD_ENTRY_MS                (vacuum removes its entry from each new index)
* an updated row that stays non-HOT or HOT as before: (non-HOT share) x |N| x (ENTRY_MS + DEAD_ENTRY_MS)
* an updated row whose UPDATE sets a column an index of N stores: its HOT share is lost; each lost HOT update
  costs NON_HOT_MS (the new version on another page, the heap's share) plus (k + |N|) x (ENTRY_MS + DEAD_ENTRY_MS):
  it now writes into every index of the table, not only the new one.

|N| counts a partial index by the share of the table's rows its predicate holds (`held`): PostgreSQL adds an
entry to a partial index only for a row version that satisfies the predicate, so an index of a queue's 1 %
'pending' rows costs 1 % of an index on every row (its predicate's column still makes updates of it non-HOT).

The HOT share of an UPDATE today is 0 when it sets a column an existing index stores; for the others it is the
table's measured share spread over them (n_tup_hot_upd / their share of n_tup_upd), or DEFAULT_HOT_SHARE when
too few updates were counted. The constants were measured on a pgbench-like table (`python -m bench.write_model`
predicts and measures the slowdown of an index on a column the UPDATE sets and of one on a column it does not).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.parser import ParseError

from indexd.advisor.model import Catalog, IndexCandidate, Table
from indexd.statements.indexdef import IndexShape, stored_columns
from indexd.statements.statement import Statement
from indexd.statements.tree import walk

# Measured by bench/write_model.py (backend CPU time, data in shared buffers, full_page_writes on).
ENTRY_MS = 0.0012  # one index entry inserted (descent, page change, WAL record)
DEAD_ENTRY_MS = 0.0001  # vacuum removing one dead entry from an index
NON_HOT_MS = 0.0001  # the heap's extra work when an update cannot stay on its page as HOT (next to nothing)
# HOT share of updates of unindexed columns when too few were counted: measured on random updates of a quarter
# of a table's rows, at fill factor 100 (free space only where pruning made some: 89 %) and at 90 (100 %).
DEFAULT_HOT_SHARE = 0.89
DEFAULT_HOT_SHARE_WITH_ROOM = 1.0
MIN_UPDATES_SEEN = 1000  # updates counted before the measured HOT share is trusted


@dataclass(frozen=True)
class UpdateWrite:
    """One UPDATE statement's rows per second and the columns it sets."""

    columns: frozenset[str]
    rows_per_s: float


@dataclass
class TableWrites:
    """What the workload writes to one table (a partitioned table: to its partitions)."""

    inserts_per_s: float = 0.0
    deletes_per_s: float = 0.0
    updates: list[UpdateWrite] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.inserts_per_s + self.deletes_per_s + sum(u.rows_per_s for u in self.updates)


@dataclass(frozen=True)
class TableFacts:
    """The catalog's readings of one table that the model needs."""

    existing: tuple[frozenset[str], ...] = ()  # per valid existing index: the columns it stores
    updates_seen: float = 0.0
    hot_updates_seen: float = 0.0
    fillfactor: int = 100


class WriteModel:
    """Write cost of sets of new indexes, per table; `marginal` is what one more index adds to a set."""

    def __init__(self, writes: Mapping[str, TableWrites], facts: Mapping[str, TableFacts] | None = None,
                 held: Mapping[IndexCandidate, float] | None = None) -> None:
        self.writes = dict(writes)
        self.facts = dict(facts or {})
        self.held = dict(held or {})  # partial index -> the share of rows it holds (1 when absent)
        self._hot: dict[str, list[float]] = {key: self._hot_shares(key) for key in self.writes}

    @classmethod
    def flat(cls, rates: Mapping[str, float]) -> WriteModel:
        """Every written row adds one entry to each index (no update, no HOT): rows per second by table."""
        return cls({key: TableWrites(inserts_per_s=rate) for key, rate in rates.items()})

    def rows_per_s(self, table_key: str) -> float:
        found = self.writes.get(table_key)
        return found.rows_per_s if found else 0.0

    def _hot_shares(self, key: str) -> list[float]:
        """Each UPDATE's HOT share before any new index."""
        writes, facts = self.writes[key], self.facts.get(key, TableFacts())
        blocked = [any(u.columns & stored for stored in facts.existing) for u in writes.updates]
        eligible = sum(u.rows_per_s for u, b in zip(writes.updates, blocked, strict=True) if not b)
        total = sum(u.rows_per_s for u in writes.updates)
        share = DEFAULT_HOT_SHARE if facts.fillfactor >= 100 else DEFAULT_HOT_SHARE_WITH_ROOM
        if facts.updates_seen >= MIN_UPDATES_SEEN and eligible > 0:
            share = min(1.0, facts.hot_updates_seen / (facts.updates_seen * eligible / total))
        return [0.0 if b else share for b in blocked]

    def cost(self, table_key: str, new: Iterable[IndexCandidate], table: Table | None = None) -> float:
        """ms per second the writes to this table spend on the new indexes `new` (all on this table)."""
        writes = self.writes.get(table_key)
        new = list(new)
        if writes is None or not new:
            return 0.0
        stored = [candidate_columns(c, table) for c in new]
        count = sum(min(max(self.held.get(c, 1.0), 0.0), 1.0) for c in new)  # entries per written row version
        existing = len(self.facts.get(table_key, TableFacts()).existing)
        per_entry = ENTRY_MS + DEAD_ENTRY_MS
        total = writes.inserts_per_s * count * ENTRY_MS + writes.deletes_per_s * count * DEAD_ENTRY_MS
        for update, hot in zip(writes.updates, self._hot[table_key], strict=True):
            total += update.rows_per_s * (1.0 - hot) * count * per_entry
            if any(update.columns & cols for cols in stored):
                total += update.rows_per_s * hot * (NON_HOT_MS + (existing + count) * per_entry)
        return total

    def marginal(self, cand: IndexCandidate, chosen: Iterable[IndexCandidate], table: Table | None = None) -> float:
        """What `cand` adds to the write cost of the chosen indexes on its table."""
        key = f"{cand.schema}.{cand.table}"
        same = [c for c in chosen if c.schema == cand.schema and c.table == cand.table and c != cand]
        return self.cost(key, [*same, cand], table) - self.cost(key, same, table)

    def loses_hot(self, cand: IndexCandidate, table: Table | None = None) -> bool:
        """Whether the index would turn some of today's HOT updates into non-HOT ones."""
        key = f"{cand.schema}.{cand.table}"
        writes = self.writes.get(key)
        if writes is None:
            return False
        cols = candidate_columns(cand, table)
        return any(u.columns & cols and hot > 0 for u, hot in zip(writes.updates, self._hot[key], strict=True))


@functools.lru_cache(maxsize=8192)
def _shape_columns(shape: IndexShape) -> frozenset[str]:
    return stored_columns(shape)


def candidate_columns(cand: IndexCandidate, table: Table | None = None) -> frozenset[str]:
    """The columns an index stores or reads (keys, expressions, INCLUDE, predicate): an UPDATE of any of them is
    never HOT. With the table, only its real columns."""
    cols = _shape_columns(cand.shape())
    return cols if table is None else frozenset(c for c in cols if table.column(c) is not None)


# ---- readings from the workload --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Write:
    """One table a statement writes: how, and for an UPDATE the columns it sets."""

    kind: str  # insert | update | delete
    schema: str | None
    table: str
    columns: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=4096)
def statement_writes(query: str) -> tuple[Write, ...]:
    """Every INSERT, UPDATE and DELETE in a statement, data-modifying WITH queries included (an INSERT ... ON
    CONFLICT DO UPDATE counts as an insert); empty for anything else or what does not parse."""
    try:
        stmts = parse_sql(query)
    except ParseError:
        return ()
    if len(stmts) != 1:
        return ()
    found = []
    for node in walk(stmts[0].stmt):
        kind = {ast.InsertStmt: "insert", ast.UpdateStmt: "update", ast.DeleteStmt: "delete"}.get(type(node))
        if kind is None or node.relation is None:
            continue
        columns: frozenset[str] = frozenset()
        if isinstance(node, ast.UpdateStmt):
            columns = frozenset(t.name for t in node.targetList or () if getattr(t, "name", None))
        found.append(Write(kind, node.relation.schemaname, node.relation.relname, columns))
    return tuple(found)


def rows_per_call(stmt: Statement) -> float | None:
    """The rows one execution really wrote (pg_stat_statements' rows / calls); None when not measured."""
    if stmt.rows > 0 and stmt.calls > 0:
        return stmt.rows / stmt.calls
    return None


def from_workload(statements: Sequence[Statement], catalog: Catalog,
                  planner_rows: Callable[[int, str], float | None], period_s: float,
                  held: Mapping[IndexCandidate, float] | None = None) -> WriteModel:
    """The write model of a workload: rows per second each statement writes to each table, over the same span
    as the read weights (a bulk load before the look-back does not count). Rows per execution are the real ones
    pg_stat_statements counted when known, else the planner's estimate (`planner_rows(i, query)`), else 1."""
    writes: dict[str, TableWrites] = {}
    for i, stmt in enumerate(statements):
        targets = [(w, catalog.resolve(w.table, w.schema)) for w in statement_writes(stmt.query)]
        targets = [(w, t) for w, t in targets if t is not None]
        if not targets:
            continue
        rows = rows_per_call(stmt) or planner_rows(i, stmt.query) or 1.0
        rate = max(stmt.calls, 1) * max(rows, 1.0) / max(period_s, 1.0)
        for write, table in targets:
            assert table is not None
            entry = writes.setdefault(table.parent or table.qualified, TableWrites())
            if write.kind == "insert":
                entry.inserts_per_s += rate
            elif write.kind == "delete":
                entry.deletes_per_s += rate
            else:
                entry.updates.append(UpdateWrite(write.columns, rate))
    return WriteModel(writes, table_facts(catalog, writes), held)


def table_facts(catalog: Catalog, keys: Iterable[str]) -> dict[str, TableFacts]:
    facts = {}
    for key in keys:
        table = catalog.tables.get(key)
        if table is None:
            continue
        existing = tuple(stored_columns(i.shape()) for i in catalog.indexes_on(table) if i.is_valid)
        facts[key] = TableFacts(existing, table.updates_seen, table.hot_updates_seen, table.fillfactor)
    return facts
