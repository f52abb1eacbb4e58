"""The HOT-aware write model, without a server."""

from __future__ import annotations

import pytest

from indexd.advisor import writes
from indexd.advisor.model import Catalog, Column, ExistingIndex, IndexCandidate, IndexKey, Table
from indexd.advisor.writes import (
    TableFacts,
    TableWrites,
    UpdateWrite,
    WriteModel,
    candidate_columns,
    from_workload,
    statement_writes,
)
from indexd.statements.statement import Statement

E, D = writes.ENTRY_MS, writes.DEAD_ENTRY_MS
KEY = "public.accounts"


def cand(*cols: str, include: tuple[str, ...] = (), where: str | None = None) -> IndexCandidate:
    keys = tuple(IndexKey(expression=c) if "(" in c else IndexKey(c) for c in cols)
    return IndexCandidate("public", "accounts", keys, include=include, where=where)


def model(*updates: UpdateWrite, inserts: float = 0.0, deletes: float = 0.0, existing=(frozenset({"aid"}),),
          seen: float = 0.0, hot: float = 0.0) -> WriteModel:
    return WriteModel({KEY: TableWrites(inserts, deletes, list(updates))},
                      {KEY: TableFacts(tuple(existing), seen, hot)})


def test_inserts_and_deletes_cost_each_new_index() -> None:
    m = model(inserts=100.0, deletes=10.0)
    assert m.cost(KEY, [cand("bid")]) == pytest.approx(100 * E + 10 * D)
    assert m.cost(KEY, [cand("bid"), cand("mtime")]) == pytest.approx(2 * (100 * E + 10 * D))
    assert m.cost(KEY, []) == 0.0 and m.cost("public.other", [cand("bid")]) == 0.0


def test_an_index_on_an_updated_column_loses_the_hot_updates_and_pays_every_index() -> None:
    m = model(UpdateWrite(frozenset({"abalance", "mtime"}), 1000.0), seen=10_000, hot=9_000)  # 90 % HOT
    off_column = m.cost(KEY, [cand("bid")])
    on_column = m.cost(KEY, [cand("mtime")])
    assert off_column == pytest.approx(1000 * 0.1 * (E + D))  # only the updates that were never HOT
    # the HOT ones now write into both indexes (the primary key and the new one) and the heap's share
    assert on_column == pytest.approx(1000 * 0.1 * (E + D) + 1000 * 0.9 * (writes.NON_HOT_MS + 2 * (E + D)))
    assert on_column > 10 * off_column
    assert m.loses_hot(cand("mtime")) and not m.loses_hot(cand("bid"))


def test_a_partial_index_pays_for_the_rows_its_predicate_holds() -> None:
    """PostgreSQL adds an entry to a partial index only for a row version that satisfies its predicate."""
    queue = cand("created_at", where="status = 'pending'")
    m = WriteModel({KEY: TableWrites(100.0, 10.0, [UpdateWrite(frozenset({"status"}), 50.0)])},
                   {KEY: TableFacts((frozenset({"aid"}),), 0.0, 0.0)}, held={queue: 0.01})
    full = WriteModel(m.writes, m.facts)
    # inserts and deletes at 1 %; the updates of its predicate's column still lose HOT (the heap's share and
    # the existing index), and add an entry to the partial index for 1 % of the row versions
    hot = writes.DEFAULT_HOT_SHARE
    expected = 0.01 * (100 * E + 10 * D) + 50 * (1 - hot) * 0.01 * (E + D) \
        + 50 * hot * (writes.NON_HOT_MS + 1.01 * (E + D))
    assert m.cost(KEY, [queue]) == pytest.approx(expected)
    assert full.cost(KEY, [queue]) > 1.5 * m.cost(KEY, [queue])
    assert m.loses_hot(queue)


@pytest.mark.parametrize("index", [
    cand("bid", include=("abalance",)),  # INCLUDE columns block HOT too
    cand("lower(filler)", where=None),  # so do expression columns ...
    cand("bid", where="abalance > 0"),  # ... and predicate columns
])
def test_every_stored_column_blocks_hot(index: IndexCandidate) -> None:
    m = model(UpdateWrite(frozenset({"abalance", "filler"}), 100.0))
    assert m.loses_hot(index)
    assert candidate_columns(index) & {"abalance", "filler"}


def test_updates_of_an_already_indexed_column_were_never_hot() -> None:
    # an existing index on mtime: those updates write every index already; a new index adds one entry each
    m = model(UpdateWrite(frozenset({"mtime"}), 1000.0), existing=(frozenset({"aid"}), frozenset({"mtime"})))
    assert m.cost(KEY, [cand("mtime", "bid")]) == pytest.approx(1000 * (E + D))
    assert not m.loses_hot(cand("mtime", "bid"))


def test_the_measured_hot_share_is_spread_over_the_updates_that_can_be_hot() -> None:
    blocked = UpdateWrite(frozenset({"aid"}), 500.0)  # sets the primary key's column: never HOT
    free = UpdateWrite(frozenset({"abalance"}), 500.0)
    # 40 % of all updates were HOT, all of them among the half that can be: 80 % of those
    m = model(blocked, free, seen=100_000, hot=40_000)
    lost = m.cost(KEY, [cand("abalance")]) - m.cost(KEY, [cand("bid")])
    assert lost == pytest.approx(500 * 0.8 * (writes.NON_HOT_MS + 2 * (E + D)))
    # too few updates counted: the default share
    few = model(free, seen=10, hot=0)
    assert few.cost(KEY, [cand("bid")]) == pytest.approx(500 * (1 - writes.DEFAULT_HOT_SHARE) * (E + D))


def test_a_second_index_on_the_same_updated_column_adds_only_its_own_entries() -> None:
    m = model(UpdateWrite(frozenset({"mtime"}), 1000.0), seen=10_000, hot=10_000)
    first = m.marginal(cand("mtime"), [])
    second = m.marginal(cand("mtime", "bid"), [cand("mtime")])
    assert second == pytest.approx(1000 * (E + D))  # no HOT update left to lose
    assert first > 2 * second


def test_flat_model_charges_every_row_to_every_index() -> None:
    flat = WriteModel.flat({KEY: 20_000.0})
    assert flat.cost(KEY, [cand("a")]) == pytest.approx(20_000 * E)
    assert flat.rows_per_s(KEY) == 20_000.0


# ---- readings from statements ----------------------------------------------------------------------------------
def test_statement_writes() -> None:
    assert statement_writes("UPDATE s.t SET a = $1, (b, c) = ($2, $3) WHERE id = $4") == (
        writes.Write("update", "s", "t", frozenset({"a", "b", "c"})),)
    assert [w.kind for w in statement_writes("DELETE FROM t WHERE id = $1")] == ["delete"]
    assert [w.kind for w in statement_writes(
        "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET b = excluded.b")] == ["insert"]
    cte = statement_writes("WITH o AS (INSERT INTO orders (x) VALUES (1) RETURNING id) "
                           "UPDATE items SET order_id = o.id FROM o WHERE items.id = $1")
    assert sorted((w.kind, w.table) for w in cte) == [("insert", "orders"), ("update", "items")]
    assert statement_writes("SELECT 1") == () and statement_writes("SELEC") == ()


def test_from_workload_uses_real_rows_per_call_when_known() -> None:
    table = Table("public", "events", "r", 1e6, 10_000, (Column("id", "bigint"), Column("kind", "text")),
                  updates_seen=5000, hot_updates_seen=4000)
    catalog = Catalog(tables={"public.events": table},
                      indexes=(ExistingIndex("public", "events_pkey", "events", ("id",)),))
    asked: list[int] = []

    def planner(i: int, query: str) -> float | None:
        asked.append(i)
        return 2.0

    statements = [
        Statement("INSERT INTO events SELECT * FROM staging WHERE batch = $1", calls=10, rows=50_000),
        Statement("UPDATE events SET kind = $1 WHERE id = $2", calls=100),  # rows: the planner's estimate
        Statement("DELETE FROM events WHERE id = $1", calls=1000, rows=1000),
        Statement("SELECT * FROM events WHERE id = $1", calls=99, rows=99),
    ]
    m = from_workload(statements, catalog, planner, period_s=100.0)
    w = m.writes["public.events"]
    assert (w.inserts_per_s, w.deletes_per_s) == (500.0, 10.0)
    assert w.updates == [UpdateWrite(frozenset({"kind"}), 2.0)]
    assert asked == [1]  # measured rows need no EXPLAIN
    assert m.facts["public.events"] == TableFacts((frozenset({"id"}),), 5000, 4000, 100)
    assert m.rows_per_s("public.events") == 512.0
