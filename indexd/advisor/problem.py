"""The selection's working state: which candidates each statement is costed with, memoised what-if costs, the
statements' weights, and each statement's preferred candidate (the narrowest one that serves it nearly as well
as the best one).

A statement's weight is the time it took over the look-back (`total_time_ms`); when that is unknown (a workload
from a file) it is `calls x planner cost x MS_PER_COST_UNIT`, capped at the ESTIMATE_CAP quantile of the
workload's estimated weights: the planner prices a few plans (EXISTS and correlated subqueries over misestimated
joins) hundreds of times above their time (TPC-DS: two statements priced 1.7e8, run in 1-2 s, next to 97 priced
1e4-2e5), and uncapped they would hold the whole workload, so that nothing else ever looks worth an index.
Execution time is taken as proportional to the planner's cost, so an index set that takes a statement from cost
`base` to `after` saves `weight x (base - after) / base` ms over the period.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from indexd.advisor.model import IndexCandidate
from indexd.statements.statement import Statement

CostFn = Callable[[int, frozenset[IndexCandidate]], float | None]

MS_PER_COST_UNIT = 0.005  # planner cost unit in ms when no real timing is known (cached pages, modern CPU)
SHARED_PER_LEAD = 3  # other statements' candidates costed per leading column a statement filters on
REGRESSION_TOLERANCE = 1e-6  # relative; planner costs are deterministic, so any increase counts
# "Nearly as good": a candidate that saves at least (1 - NEAR) of what the statement's best single candidate
# saves (cost - best <= NEAR x (base - best)) serves it nearly as well; among those the smallest is preferred.
# The planner's cost of an index scan that fetches few rows is interpolated from the leading key's correlation,
# which a skewed column of few values reports near 1: two indexes that read the same rows in the same time can
# be priced 2x apart once both saved most of a scan (a queue's partial index on its 1 % of rows of one status,
# ordered by time, against the composite (status, time): 0.013 vs 0.018 ms, priced 69 vs 35). 10 % of the saving
# absorbs that.
NEAR = 0.10
ESTIMATE_CAP = 0.95  # quantile of the estimated weights that caps each of them (nearest rank)


class CandidateSet(Protocol):
    by_statement: list[list[IndexCandidate]]
    all: set[IndexCandidate]


@dataclass(frozen=True)
class Eval:
    saved_ms: float  # over the period
    # the time of the statements it helps, over the period, with the set it is added to (not with no new index:
    # once another index fixed most of a statement, what this one saves is weighed against what is left)
    helped_ms: float
    regression: int | None  # a statement it would make costlier than the baseline


class Problem:
    """Relevance, memoised costs and weights of one selection run."""

    def __init__(self, statements: Sequence[Statement], candidates: CandidateSet, costs: CostFn,
                 period_s: float) -> None:
        self.costs = costs
        self.period_s = max(period_s, 1.0)
        self._memo: dict[tuple[int, frozenset[IndexCandidate]], float | None] = {}
        self.relevant = _relevance(candidates)
        self.baseline: dict[int, float] = {}
        for s in sorted(self.relevant):
            cost = self.cost(s, frozenset())
            if cost is not None and cost > 0:
                self.baseline[s] = cost
        self.weight = {s: _weight(statements[s], self.baseline.get(s)) for s in range(len(statements))}
        _cap_estimates(self.weight, [s for s in self.weight if statements[s].total_time_ms <= 0])
        self.workload_ms = sum(self.weight.values()) or 1.0
        self.serves: dict[IndexCandidate, list[int]] = {}
        for s in sorted(self.baseline):
            for cand in self.relevant[s]:
                self.serves.setdefault(cand, []).append(s)

    def cost(self, s: int, chosen: frozenset[IndexCandidate]) -> float | None:
        key = (s, chosen & self.relevant.get(s, frozenset()))
        if key not in self._memo:
            self._memo[key] = self.costs(*key)
        return self._memo[key]

    def current(self, s: int, chosen: Iterable[IndexCandidate]) -> float:
        cost = self.cost(s, frozenset(chosen))
        return self.baseline[s] if cost is None else cost

    def evaluate(self, cand: IndexCandidate, without: frozenset[IndexCandidate],
                 with_: frozenset[IndexCandidate]) -> Eval:
        """What going from the set `without` to the set `with_` does to the statements `cand` serves."""
        saved = helped = 0.0
        for s in self.serves.get(cand, []):
            base = self.baseline[s]
            old, new = self.current(s, without), self.current(s, with_)
            if new > base * (1 + REGRESSION_TOLERANCE):
                return Eval(0.0, 0.0, s)
            if new < old:
                saved += self.weight[s] * (old - new) / base
                helped += self.weight[s] * old / base
        return Eval(saved, helped, None)

    def total_saved(self, chosen: Iterable[IndexCandidate], statements: Iterable[int]) -> float | None:
        """ms the set saves over the period on these statements; None when it makes one costlier than the
        baseline."""
        chosen = frozenset(chosen)
        saved = 0.0
        for s in statements:
            cost = self.current(s, chosen)
            if cost > self.baseline[s] * (1 + REGRESSION_TOLERANCE):
                return None
            saved += self.weight[s] * (self.baseline[s] - cost) / self.baseline[s]
        return saved

    def preferred(self, pool: Iterable[IndexCandidate], sizes: Mapping[IndexCandidate, int]
                  ) -> dict[IndexCandidate, list[int]]:
        """For each statement, the smallest candidate of the pool that serves it nearly as well as its best one
        alone (see NEAR); returns each preferred candidate with the statements that prefer it."""
        allowed = frozenset(pool)
        found: dict[IndexCandidate, list[int]] = {}
        for s, base in sorted(self.baseline.items()):
            options = [(self.current(s, [c]), c) for c in sorted(self.relevant[s] & allowed,
                                                                 key=IndexCandidate.fingerprint)]
            options = [(cost, c) for cost, c in options if cost < base]
            if not options:
                continue
            best = min(cost for cost, _ in options)
            near = [(sizes.get(c, 0), cost, c.fingerprint(), c) for cost, c in options
                    if cost - best <= NEAR * (base - best)]
            found.setdefault(min(near)[3], []).append(s)
        return found


def _relevance(candidates: CandidateSet) -> dict[int, frozenset[IndexCandidate]]:
    """Each statement's own candidates, plus the most shared candidates of other statements that lead with a
    column this one filters on (likeliest to be chosen), a bounded number so work stays linear."""
    popularity: dict[IndexCandidate, int] = {}
    for own in candidates.by_statement:
        for cand in own:
            popularity[cand] = popularity.get(cand, 0) + 1
    by_lead: dict[tuple[str, str, str], list[IndexCandidate]] = {}
    for cand in sorted(candidates.all, key=lambda c: (-popularity.get(c, 0), c.fingerprint())):
        if cand.keys:
            by_lead.setdefault((cand.schema, cand.table, cand.keys[0].label()), []).append(cand)
    relevant: dict[int, frozenset[IndexCandidate]] = {}
    for s, own in enumerate(candidates.by_statement):
        if not own:
            continue
        leads = sorted({(c.schema, c.table, c.keys[0].label()) for c in own if c.keys})
        extra = [c for lead in leads for c in by_lead.get(lead, [])[:SHARED_PER_LEAD] if c not in own]
        relevant[s] = frozenset(own) | frozenset(extra)
    return relevant


def _cap_estimates(weight: dict[int, float], estimated: list[int]) -> None:
    """Cap the weights estimated from planner costs at their ESTIMATE_CAP quantile (see the module's notes)."""
    values = sorted(weight[s] for s in estimated)
    if len(values) < 2:
        return
    cap = values[max(0, math.ceil(ESTIMATE_CAP * len(values)) - 1)]
    for s in estimated:
        weight[s] = min(weight[s], cap)


def _weight(stmt: Statement, baseline: float | None) -> float:
    """The statement's time over the period in ms (estimated from its planner cost when not measured)."""
    if stmt.total_time_ms > 0:
        return stmt.total_time_ms
    return max(stmt.calls, 1) * (baseline or 0.0) * MS_PER_COST_UNIT
