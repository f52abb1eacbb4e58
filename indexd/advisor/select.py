"""Choose the set of new indexes for a whole workload: a pure function of candidates, costs and limits.

The model, in one unit (milliseconds of database time per second of wall clock):

* A statement's weight is the time it took over the look-back (`total_time_ms`); when that is unknown (a workload
  from a file) it is `calls x planner cost x MS_PER_COST_UNIT`. Execution time is taken as proportional to the
  planner's cost, so an index that takes a statement from cost `before` to `after` saves
  `weight x (before - after) / baseline`; divided by the look-back period that is ms saved per second.
* Each index costs every write to its table: `rows written per second x WRITE_MS_PER_ROW` ms per second (a B-tree
  insertion with its WAL record, for every inserted and updated row; a DELETE adds no index entry; HOT updates
  would be cheaper, but an index on an updated column disables them, so this is the safe side). The caller
  measures the write rate over the same span as the read weights (the pipeline: from the workload's own DML).
* Greedy by net benefit per byte, re-evaluated lazily against the set already chosen (overlapping indexes are not
  double counted), within the storage budget and the per-table limit; an index must save at least
  `min_improvement_pct` of the cost of the statements it helps, pay for its writes (on a write-heavy table
  `min_benefit_ratio` times over), make no statement costlier than with no new index, and not be a prefix of an
  existing index. A last pass drops any chosen index whose contribution next to the others no longer qualifies.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from indexd.advisor.model import ExistingIndex, IndexCandidate
from indexd.config.schema import IndexingSettings
from indexd.statements.statement import Statement
from indexd.units import human_rate

CostFn = Callable[[int, frozenset[IndexCandidate]], float | None]

MS_PER_COST_UNIT = 0.005  # planner cost unit in ms when no real timing is known (cached pages, modern CPU)
WRITE_MS_PER_ROW = 0.005  # one B-tree entry written (and WAL-logged) per inserted or updated row
COVERED_FACTOR = 2.0  # an index covered by a wider one must beat the threshold this many times
SHARED_PER_LEAD = 3  # other statements' candidates costed per leading column a statement filters on
WIDEN_MIN_GAIN = 0.01  # a wider index replaces a chosen one when it saves this much more ...
WIDEN_CHEAP = 2.0  # ... or any more at all when it adds at most this much of its size (deduplicated keys are small)
REGRESSION_TOLERANCE = 1e-6  # relative; planner costs are deterministic, so any increase counts


class CandidateSet(Protocol):
    by_statement: list[list[IndexCandidate]]
    all: set[IndexCandidate]


@dataclass(frozen=True)
class Helped:
    statement: int
    cost_before: float  # with no new index
    cost_after: float  # with the whole chosen set


@dataclass(frozen=True)
class Choice:
    candidate: IndexCandidate
    size_bytes: int
    benefit_ms_per_s: float  # read time this index saves next to the others
    write_ms_per_s: float  # write maintenance it adds
    improvement_pct: float  # share of the whole workload's weighted cost it saves
    helped: tuple[Helped, ...] = ()


@dataclass(frozen=True)
class Selection:
    chosen: tuple[Choice, ...] = ()
    rejected: dict[IndexCandidate, str] = field(default_factory=dict)
    baseline: dict[int, float] = field(default_factory=dict)
    final: dict[int, float] = field(default_factory=dict)
    workload_ms: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(c.size_bytes for c in self.chosen)


@dataclass(frozen=True)
class _Eval:
    saved_ms: float  # over the period
    helped_ms: float  # cost of the statements it helps with no new index, over the period
    regression: int | None  # a statement it would make costlier than the baseline


def prefix_covered(cand: IndexCandidate, keys: Sequence[str], method: str, where: str | None,
                   include: Sequence[str] = ()) -> bool:
    """Whether an index with these keys serves everything `cand` would: cand's keys are a prefix of them."""
    mine = [k.label() for k in cand.keys]
    return (
        method == cand.method
        and (where is None or where == cand.where)
        and len(mine) <= len(keys)
        and list(keys[: len(mine)]) == mine
        and set(cand.include) <= set(keys) | set(include)
    )


def _served_by_existing(cand: IndexCandidate, existing: Sequence[ExistingIndex]) -> str | None:
    for idx in existing:
        if idx.is_valid and idx.schema == cand.schema and idx.table == cand.table and prefix_covered(
            cand, idx.keys, idx.method, idx.where, idx.include
        ):
            return idx.name
    return None


class _Problem:
    """The selection's working state: relevance, memoised costs, the chosen set."""

    def __init__(self, statements: Sequence[Statement], candidates: CandidateSet, costs: CostFn,
                 period_s: float) -> None:
        self.costs = costs
        self.period_s = max(period_s, 1.0)
        self._memo: dict[tuple[int, frozenset[IndexCandidate]], float | None] = {}
        self.relevant: dict[int, frozenset[IndexCandidate]] = {}
        popularity: dict[IndexCandidate, int] = {}
        for own in candidates.by_statement:
            for cand in own:
                popularity[cand] = popularity.get(cand, 0) + 1
        # Another statement's candidate can help this one when it leads with a column this one filters on; the
        # most shared ones (likeliest to be chosen) are costed for it, a bounded number so work stays linear.
        by_lead: dict[tuple[str, str, str], list[IndexCandidate]] = {}
        for cand in sorted(candidates.all, key=lambda c: (-popularity.get(c, 0), c.fingerprint())):
            if cand.keys:
                by_lead.setdefault((cand.schema, cand.table, cand.keys[0].label()), []).append(cand)
        for s, own in enumerate(candidates.by_statement):
            if not own:
                continue
            leads = sorted({(c.schema, c.table, c.keys[0].label()) for c in own if c.keys})
            extra = [c for lead in leads for c in by_lead.get(lead, [])[:SHARED_PER_LEAD] if c not in own]
            self.relevant[s] = frozenset(own) | frozenset(extra)
        self.baseline: dict[int, float] = {}
        for s in sorted(self.relevant):
            cost = self.cost(s, frozenset())
            if cost is not None and cost > 0:
                self.baseline[s] = cost
        self.weight = {s: _weight(statements[s], self.baseline.get(s)) for s in range(len(statements))}
        self.serves: dict[IndexCandidate, list[int]] = {}
        for s in sorted(self.baseline):
            for cand in self.relevant[s]:
                self.serves.setdefault(cand, []).append(s)

    def cost(self, s: int, chosen: frozenset[IndexCandidate]) -> float | None:
        key = (s, chosen & self.relevant.get(s, frozenset()))
        if key not in self._memo:
            self._memo[key] = self.costs(*key)
        return self._memo[key]

    def current(self, s: int, chosen: frozenset[IndexCandidate]) -> float:
        cost = self.cost(s, chosen)
        return self.baseline[s] if cost is None else cost

    def evaluate(self, cand: IndexCandidate, without: frozenset[IndexCandidate],
                 with_: frozenset[IndexCandidate]) -> _Eval:
        saved = helped = 0.0
        for s in self.serves.get(cand, []):
            base = self.baseline[s]
            old, new = self.current(s, without), self.current(s, with_)
            if new > base * (1 + REGRESSION_TOLERANCE):
                return _Eval(0.0, 0.0, s)
            if new < old:
                saved += self.weight[s] * (old - new) / base
                helped += self.weight[s]
        return _Eval(saved, helped, None)


def _weight(stmt: Statement, baseline: float | None) -> float:
    """The statement's time over the period in ms (estimated from its planner cost when not measured)."""
    if stmt.total_time_ms > 0:
        return stmt.total_time_ms
    return max(stmt.calls, 1) * (baseline or 0.0) * MS_PER_COST_UNIT


@dataclass(frozen=True)
class Limits:
    budget_bytes: int
    settings: IndexingSettings
    write_rates: Mapping[str, float]  # "schema.table" -> rows written per second
    sizes: Mapping[IndexCandidate, int]
    skewed: frozenset[tuple[str, str, str]] = frozenset()  # (schema, table, column) with very busy values

    def write_cost(self, cand: IndexCandidate) -> float:
        return self.write_rates.get(f"{cand.schema}.{cand.table}", 0.0) * WRITE_MS_PER_ROW

    def refusal(self, cand: IndexCandidate, ev: _Eval, period_s: float, covered: bool) -> str | None:
        """Why this index does not pay (None: it does)."""
        if ev.regression is not None:
            return f"would make statement {ev.regression} costlier"
        pct = 100.0 * ev.saved_ms / ev.helped_ms if ev.helped_ms > 0 else 0.0
        need = self.settings.min_improvement_pct * (COVERED_FACTOR if covered else 1.0)
        if pct < need:
            return f"saves {pct:.1f}% of its statements' cost (< {need:g}%)"
        benefit, write = ev.saved_ms / period_s, self.write_cost(cand)
        rate = self.write_rates.get(f"{cand.schema}.{cand.table}", 0.0)
        ratio = self.settings.write_guard.min_benefit_ratio if rate >= self.settings.write_guard.writes_per_second \
            else 1.0
        if benefit <= write * ratio:
            return f"saves {human_rate(benefit)} but costs {human_rate(write)} of writes (needs x{ratio:g})"
        return None


def select(
    candidates: CandidateSet,
    costs: CostFn,
    budget_bytes: int,
    write_rates: Mapping[str, float],
    settings: IndexingSettings,
    *,
    statements: Sequence[Statement],
    sizes: Mapping[IndexCandidate, int],
    existing: Sequence[ExistingIndex] = (),
    period_s: float | None = None,
    skewed: frozenset[tuple[str, str, str]] = frozenset(),
) -> Selection:
    """The indexes to build for this workload, with their effect; deterministic for the same input."""
    problem = _Problem(statements, candidates, costs,
                       period_s if period_s is not None else settings.lookback.total_seconds())
    limits = Limits(budget_bytes, settings, write_rates, sizes, skewed)
    rejected: dict[IndexCandidate, str] = {}
    pool = []
    for cand in sorted(problem.serves, key=IndexCandidate.fingerprint):
        name = _served_by_existing(cand, existing)
        if name:
            rejected[cand] = f"served by existing index {name}"
        else:
            pool.append(cand)
    chosen = _greedy(problem, limits, pool, rejected)
    chosen = _widen(problem, limits, pool, chosen, rejected)
    chosen = _prune(problem, limits, chosen, rejected)
    return _result(problem, limits, chosen, rejected)


def _score(problem: _Problem, limits: Limits, cand: IndexCandidate, ev: _Eval) -> float:
    net = ev.saved_ms / problem.period_s - limits.write_cost(cand)
    return net / max(limits.sizes.get(cand, 1), 1)


def _greedy(problem: _Problem, limits: Limits, pool: list[IndexCandidate],
            rejected: dict[IndexCandidate, str]) -> list[IndexCandidate]:
    """Lazy greedy: scores only fall as the set grows, so a re-evaluated best that stays best is the best."""
    chosen: list[IndexCandidate] = []
    chosen_set: frozenset[IndexCandidate] = frozenset()
    used_bytes = 0
    per_table: dict[tuple[str, str], int] = {}
    heap = [(-_score(problem, limits, c, problem.evaluate(c, chosen_set, frozenset([c]))), c.fingerprint(), 0, c)
            for c in pool]
    heapq.heapify(heap)
    while heap:
        _, fp, version, cand = heapq.heappop(heap)
        table = (cand.schema, cand.table)
        size = limits.sizes.get(cand, 0)
        if used_bytes + size > limits.budget_bytes:
            rejected[cand] = "does not fit the storage budget"
            continue
        if per_table.get(table, 0) >= limits.settings.max_indexes_per_table:
            rejected[cand] = f"table already gets {limits.settings.max_indexes_per_table} new indexes"
            continue
        if version != len(chosen):
            ev = problem.evaluate(cand, chosen_set, chosen_set | {cand})
            heapq.heappush(heap, (-_score(problem, limits, cand, ev), fp, len(chosen), cand))
            continue
        ev = problem.evaluate(cand, chosen_set, chosen_set | {cand})
        covered = any(prefix_covered(cand, [k.label() for k in c.keys], c.method, c.where, c.include)
                      for c in chosen)
        why = limits.refusal(cand, ev, problem.period_s, covered)
        if why:
            rejected[cand] = why
            continue
        chosen.append(cand)
        chosen_set = frozenset(chosen)
        used_bytes += size
        per_table[table] = per_table.get(table, 0) + 1
        rejected.pop(cand, None)
    return chosen


def _total_saved(problem: _Problem, chosen: frozenset[IndexCandidate], statements: set[int]) -> float | None:
    """ms the set saves over the period on these statements; None when it makes one costlier than the baseline."""
    saved = 0.0
    for s in statements:
        cost = problem.current(s, chosen)
        if cost > problem.baseline[s] * (1 + REGRESSION_TOLERANCE):
            return None
        saved += problem.weight[s] * (problem.baseline[s] - cost) / problem.baseline[s]
    return saved


def _widen(problem: _Problem, limits: Limits, pool: list[IndexCandidate], chosen: list[IndexCandidate],
           rejected: dict[IndexCandidate, str]) -> list[IndexCandidate]:
    """Replace a chosen index by a wider one it is a prefix of, when the wider one saves more than it costs.

    Greedy by benefit per byte takes (a) before (a, b) when the planner prices both alike; (a, b) still serves
    every statement (a) does, and often sorts or filters more of them. The planner prices a generic plan for an
    average key, so on skewed data it undervalues (a, b) for `a = $1 ORDER BY b LIMIT n`: the busy keys, which
    most calls hit, are where (a, b) saves the sort. Hence any strict gain is enough when (a, b) adds at most
    WIDEN_CHEAP times the size of (a), or when a is skewed (the caller names such columns); otherwise the gain
    must be WIDEN_MIN_GAIN of what the set saves.
    """
    budget_left = limits.budget_bytes - sum(limits.sizes.get(c, 0) for c in chosen)
    by_table: dict[tuple[str, str], list[IndexCandidate]] = {}
    for cand in pool:
        by_table.setdefault((cand.schema, cand.table), []).append(cand)
    result = list(chosen)
    current_set = set(result)
    for i, cand in enumerate(result):
        current = cand
        for wider in by_table.get((cand.schema, cand.table), []):
            if wider in current_set or len(wider.keys) <= len(current.keys) or not prefix_covered(
                    current, [k.label() for k in wider.keys], wider.method, wider.where, wider.include):
                continue
            extra = limits.sizes.get(wider, 0) - limits.sizes.get(current, 0)
            if extra > budget_left:
                continue
            others = frozenset(current_set - {current})
            touched = set(problem.serves.get(current, [])) | set(problem.serves.get(wider, []))
            before = _total_saved(problem, others | {current}, touched)
            after = _total_saved(problem, others | {wider}, touched)
            if before is None or after is None:
                continue
            gain = after - before
            cheap = extra <= WIDEN_CHEAP * limits.sizes.get(current, 0) or (
                current.schema, current.table, current.keys[0].label()) in limits.skewed
            if gain / problem.period_s > limits.write_cost(wider) - limits.write_cost(current) and (
                    gain > WIDEN_MIN_GAIN * before or cheap):
                rejected[current] = f"widened to ({', '.join(k.label() for k in wider.keys)})"
                rejected.pop(wider, None)
                budget_left -= extra
                current_set.discard(current)
                current_set.add(wider)
                result[i] = current = wider
    return result


def _prune(problem: _Problem, limits: Limits, chosen: list[IndexCandidate],
           rejected: dict[IndexCandidate, str]) -> list[IndexCandidate]:
    """Drop, latest first, any index whose contribution next to all the others no longer qualifies."""
    kept = list(chosen)
    for cand in reversed(chosen):
        full = frozenset(kept)
        others = full - {cand}
        ev = problem.evaluate(cand, others, full)
        covered = any(prefix_covered(cand, [k.label() for k in c.keys], c.method, c.where, c.include)
                      for c in others)
        why = limits.refusal(cand, ev, problem.period_s, covered)
        if why:
            kept.remove(cand)
            rejected[cand] = f"redundant next to the other choices: {why}"
    return kept


def _result(problem: _Problem, limits: Limits, chosen: list[IndexCandidate],
            rejected: dict[IndexCandidate, str]) -> Selection:
    full = frozenset(chosen)
    final = {s: problem.current(s, full) for s in problem.baseline}
    workload_ms = sum(problem.weight.values()) or 1.0
    choices = []
    for cand in chosen:
        others = full - {cand}
        ev = problem.evaluate(cand, others, full)
        helped = tuple(
            Helped(s, problem.baseline[s], final[s]) for s in problem.serves.get(cand, [])
            if problem.current(s, full) < problem.current(s, others)
        )
        choices.append(Choice(cand, limits.sizes.get(cand, 0), ev.saved_ms / problem.period_s,
                              limits.write_cost(cand), 100.0 * ev.saved_ms / workload_ms, helped))
    return Selection(tuple(choices), rejected, dict(problem.baseline), final, workload_ms)
