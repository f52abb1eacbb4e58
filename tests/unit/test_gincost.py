"""The GIN what-if model on plans shaped like PostgreSQL's EXPLAIN (FORMAT JSON): where a bitmap scan through
the index replaces a scan, and how the change travels up the plan."""

from __future__ import annotations

from typing import Any

from indexd.advisor.gincost import GinScan, PlannerCosts, bitmap_cost, with_gin
from indexd.advisor.model import IndexCandidate, IndexKey

COSTS = PlannerCosts()
GIN = IndexCandidate("public", "users", (IndexKey("full_name", opclass="gin_trgm_ops"),), method="gin")


def scan(fraction: float, relations: frozenset[str] = frozenset({"users"})) -> GinScan:
    return GinScan(GIN, relations, frozenset({"~~*"}), "full_name", "trigram", rows=100_000, pages=2000,
                   fraction=fraction, index_pages=500)


def seq(cost: float = 3250.0, rows: float = 10.0, relation: str = "users",
        condition: str = "(full_name ~~* $1)") -> dict[str, Any]:
    return {"Node Type": "Seq Scan", "Relation Name": relation, "Startup Cost": 0.0, "Total Cost": cost,
            "Plan Rows": rows, "Filter": condition}


def node(kind: str, cost: float, children: list[dict[str, Any]], startup: float = 0.0, rows: float = 10.0,
         **extra: Any) -> dict[str, Any]:
    return {"Node Type": kind, "Startup Cost": startup, "Total Cost": cost, "Plan Rows": rows, "Plans": children,
            **extra}


def test_bitmap_cost_grows_with_the_rows_it_fetches() -> None:
    few, many = bitmap_cost(scan(0.0001), COSTS), bitmap_cost(scan(0.2), COSTS)
    assert few[1] < 100 < many[1] and few[0] < few[1]


def test_a_selective_search_replaces_the_sequential_scan() -> None:
    cost, used = with_gin(seq(), [scan(0.0001)], COSTS)
    assert used == {GIN} and cost < 100
    cost, used = with_gin(seq(), [scan(0.9)], COSTS)  # most rows match: the sequential scan stays
    assert used == frozenset() and cost == 3250.0


def test_only_scans_under_a_condition_the_index_serves() -> None:
    assert with_gin(seq(condition="(email = $1)"), [scan(0.0001)], COSTS) == (3250.0, frozenset())
    assert with_gin(seq(relation="orders"), [scan(0.0001)], COSTS) == (3250.0, frozenset())
    partition = seq(relation="users_2025")
    assert with_gin(partition, [scan(0.0001, frozenset({"users", "users_2025"}))], COSTS)[1] == {GIN}


def test_savings_travel_up_and_a_limit_keeps_a_scan_that_finds_rows_at_once() -> None:
    sort = node("Sort", 3300.0, [seq()], startup=3300.0)
    cost, used = with_gin(sort, [scan(0.0001)], COSTS)
    assert used == {GIN} and cost < 150
    # LIMIT 5 of 5,000 matches: the sequential scan returns them after 0.1 % of its work
    limited = node("Limit", 3.25, [seq(rows=5000.0)], rows=5.0)
    assert with_gin(limited, [scan(0.05)], COSTS) == (3.25, frozenset())
    # LIMIT 5 of 10 matches: half the scan, the index wins
    rare = node("Limit", 1625.0, [seq(rows=10.0)], rows=5.0)
    cost, used = with_gin(rare, [scan(0.0001)], COSTS)
    assert used == {GIN} and cost < 100


def test_rescanned_inner_side_and_gathered_scans() -> None:
    outer = {**seq(cost=20.0, rows=50.0, relation="tenants", condition=""), "Parent Relationship": "Outer"}
    inner = {**seq(), "Parent Relationship": "Inner"}
    loop = node("Nested Loop", 20.0 + 50 * 3250.0, [outer, inner], rows=50.0)
    cost, used = with_gin(loop, [scan(0.0001)], COSTS)
    assert used == {GIN} and cost < 20.0 + 50 * 100
    gather = node("Gather", 2100.0, [{**seq(cost=1900.0), "Parallel Aware": True}], startup=1000.0)
    cost, used = with_gin(gather, [scan(0.0001)], COSTS)
    assert used == {GIN} and cost < 100
