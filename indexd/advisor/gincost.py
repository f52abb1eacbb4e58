"""The cost of a plan with a GIN index, which HypoPG (B-tree, BRIN and hash only) cannot simulate.

The method, bounded and read-only: take the plan PostgreSQL chose with the other indexes (real and hypothetical);
for each scan of the GIN index's table whose conditions the index serves, cost the bitmap scan the index would
allow, and keep it where the whole plan gets cheaper. The bitmap scan is costed the way the planner does
(costsize.c cost_bitmap_heap_scan, gincostestimate in outline):

- index: the entry tree descended once per searched entry, then the posting data of those entries, a share of
  the index's pages in proportion to the rows they point to (`random_page_cost` each), plus
  `cpu_index_tuple_cost` per heap pointer read;
- heap: T = rows x (the planner's own selectivity of the indexable conditions), fetched from
  pages = min(P, 2PT / (2P + T)) pages at a cost between `random_page_cost` and `seq_page_cost` (the closer to
  sequential the more of the table it reads), plus `cpu_tuple_cost` and a recheck per row.
The change is carried up the plan: added to every node above, multiplied for a rescanned inner side or a
SubPlan, and scaled by a Limit's fraction (with the bitmap scan's start-up cost, so a LIMIT that a sequential scan
satisfies at once keeps it). Not modelled: BitmapAnd with other indexes, parallel bitmap scans, lossy pages.
What this estimate cannot prove, verification after the build does (lifecycle/verify.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from indexd.advisor.model import IndexCandidate

SEARCH_ENTRIES = {"jsonb": 2, "array": 2, "tsvector": 2, "trigram": 4}  # entries one condition looks up
_PLAN_OPERATOR = {"~~": "~~", "~~*": "~~*"}  # LIKE / ILIKE as EXPLAIN prints them (the same symbols)
_SCANS = frozenset({"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"})
_GATHER = frozenset({"Gather", "Gather Merge"})
_BLOCKING = frozenset({"Sort", "Hash", "Materialize", "SetOp", "Incremental Sort"})


@dataclass(frozen=True)
class PlannerCosts:
    """The planner's cost settings of the session (current_setting)."""

    seq_page_cost: float = 1.0
    random_page_cost: float = 4.0
    cpu_tuple_cost: float = 0.01
    cpu_index_tuple_cost: float = 0.005
    cpu_operator_cost: float = 0.0025


@dataclass(frozen=True)
class GinScan:
    """One GIN candidate serving one statement's conditions on its table."""

    candidate: IndexCandidate
    relations: frozenset[str]  # relation names whose scans it can replace (the table, or its partitions)
    operators: frozenset[str]  # the operators of those conditions, to recognise the scan in the plan
    column: str  # the column the key reads
    family: str
    rows: float
    pages: float
    fraction: float  # share of rows the indexable conditions keep (the planner's estimate)
    index_pages: float


def bitmap_cost(scan: GinScan, costs: PlannerCosts) -> tuple[float, float]:
    """(start-up, total) cost of a bitmap heap scan through the GIN index."""
    entries = SEARCH_ENTRIES.get(scan.family, 2)
    rows = max(scan.rows, 1.0)
    fetched = rows * min(max(scan.fraction, 0.0), 1.0)
    depth = 1 + math.ceil(math.log(max(scan.index_pages, 2.0), 200))
    posting_pages = math.ceil(scan.index_pages * min(1.0, entries * scan.fraction))
    index = costs.random_page_cost * (entries * depth + posting_pages)
    index += costs.cpu_index_tuple_cost * fetched * entries + costs.cpu_operator_cost * entries
    pages = max(scan.pages, 1.0)
    heap_pages = min(pages, 2.0 * pages * fetched / (2.0 * pages + fetched)) if fetched > 0 else 0.0
    if heap_pages >= 2:
        per_page = costs.random_page_cost - (costs.random_page_cost - costs.seq_page_cost) * math.sqrt(
            heap_pages / pages)
    else:
        per_page = costs.random_page_cost
    heap = heap_pages * per_page + fetched * (costs.cpu_tuple_cost + 2 * costs.cpu_operator_cost)
    return index, index + heap


def _serves(node: Mapping[str, Any], scan: GinScan) -> bool:
    """Whether this plan node scans the GIN index's table under a condition the index serves."""
    conditions = " ".join(str(node.get(k, "")) for k in ("Filter", "Recheck Cond", "Index Cond"))
    return node.get("Relation Name") in scan.relations and scan.column in conditions and any(
        f" {_PLAN_OPERATOR.get(op, op)} " in conditions for op in scan.operators)


def _options(plan: Mapping[str, Any], scans: list[GinScan], costs: PlannerCosts) -> list[tuple[int, float, float,
                                                                                                 IndexCandidate]]:
    """(node id, start-up, total, candidate) for each plan node a GIN scan could replace, cheapest first."""
    found = []
    stack: list[tuple[Mapping[str, Any], bool]] = [(plan, False)]
    while stack:
        node, under_gather = stack.pop()
        target = node
        children = node.get("Plans", [])
        if node.get("Node Type") in _GATHER and len(children) == 1:
            target = children[0]  # Gather over one parallel scan: the two are replaced together
        if (target.get("Node Type", "").removeprefix("Parallel ") in _SCANS
                and (target is node and not under_gather or target is not node)):
            for scan in scans:
                if _serves(target, scan):
                    start, total = bitmap_cost(scan, costs)
                    if total < float(node["Total Cost"]):
                        found.append((id(node), start, total, scan.candidate))
        stack.extend((child, under_gather or node.get("Node Type") in _GATHER) for child in children)
    return sorted(found, key=lambda o: o[2])


def _recost(node: Mapping[str, Any], chosen: dict[int, tuple[float, float]]) -> tuple[float, float]:
    """(start-up, total) of a node once the chosen replacements are in."""
    startup, total = float(node["Startup Cost"]), float(node["Total Cost"])
    if id(node) in chosen:
        return chosen[id(node)]
    children = node.get("Plans", [])
    if not children:
        return startup, total
    d_start = d_total = 0.0
    outer_rows = float(children[0].get("Plan Rows", 1.0))
    for child in children:
        c_start, c_total = _recost(child, chosen)
        delta_start, delta_total = c_start - float(child["Startup Cost"]), c_total - float(child["Total Cost"])
        relation = child.get("Parent Relationship")
        times = 1.0
        if relation == "Inner" and node.get("Node Type") == "Nested Loop":
            times = max(outer_rows, 1.0)
        elif relation == "SubPlan":
            times = max(float(node.get("Plan Rows", 1.0)), 1.0)
        d_total += delta_total * times
        d_start += (delta_total if _blocking(node) else delta_start) * (1.0 if relation != "SubPlan" else times)
    if node.get("Node Type") == "Limit":
        child = children[0]
        c_start, c_total = _recost(child, chosen)
        span = float(child["Total Cost"]) - float(child["Startup Cost"])
        fraction = (total - float(child["Startup Cost"])) / span if span > 0 else 1.0
        return c_start, c_start + (c_total - c_start) * min(max(fraction, 0.0), 1.0)
    return startup + d_start, total + d_total


def _blocking(node: Mapping[str, Any]) -> bool:
    kind = node.get("Node Type")
    return kind in _BLOCKING or (kind == "Aggregate" and node.get("Strategy") != "Sorted")


def with_gin(plan: Mapping[str, Any], scans: list[GinScan],
             costs: PlannerCosts) -> tuple[float, frozenset[IndexCandidate]]:
    """The plan's total cost with each GIN scan kept where it lowers it, and the candidates kept."""
    chosen: dict[int, tuple[float, float]] = {}
    used: set[IndexCandidate] = set()
    best = _recost(plan, chosen)[1]
    for node_id, start, total, cand in _options(plan, scans, costs):
        if node_id in chosen:
            continue
        chosen[node_id] = (start, total)
        cost = _recost(plan, chosen)[1]
        if cost < best:
            best = cost
            used.add(cand)
        else:
            del chosen[node_id]
    return best, frozenset(used)
