"""Choose the set of new indexes for a whole workload: a pure function of candidates, costs, sizes, a write
model and limits, deterministic for the same input.

Everything is in one unit, ms of database time per second of wall clock: an index's net gain is the read time
it saves (`indexd.advisor.problem`) minus the write time it adds (`indexd.advisor.writes`, which knows HOT
updates), and indexes are weighed by net gain per byte of their estimated size.

1. An existing index covers a candidate (`indexd.statements.indexdef.covers`: same method, the candidate's keys
   a prefix of its keys, the same predicate, every INCLUDE column stored): the candidate is never
   recommended.
2. The narrowest index that serves: each statement prefers the smallest candidate that saves nearly as much as
   its best candidate alone (at least 90 %: `problem.NEAR`); only preferred candidates start the greedy. A
   candidate larger than the whole storage budget is no statement's preference (a BRIN index then serves where
   the B-tree it would lose to cannot be built).
3. Greedy by net gain per byte, lazily re-evaluated against the set chosen so far, within the storage budget
   and the per-table limit. An index must save `min_improvement_pct` of its statements' cost, pay for its
   writes (`min_benefit_ratio` times over on a write-heavy table), make no statement costlier than with no new
   index, and be above the knee (below).
4. Widening: a chosen index is replaced by a wider candidate that covers it (more keys, INCLUDE columns) only
   when the wider one's net gain per byte, over the whole workload, beats that of what it replaces (so each
   extra byte earns more than the narrow index's bytes do); or, when the leading key is skewed (the caller
   names such columns), when it gains anything at all: the planner prices a generic plan for an average key
   and undervalues the sort that `key = $1 ORDER BY x LIMIT n` saves on the busy keys most calls hit.
5. No redundant pair: an index another one of the set covers is never kept. A last pass drops, latest first,
   any index whose contribution next to all the others no longer qualifies.

The knee. Greedy takes indexes in falling order of gain per byte; the tail of that order buys little for much
space. An index is declined when both its net gain per byte is below KNEE_FRACTION (2 %) of the first pick's
and it saves less than KNEE_MIN_SHARE (1 %) of the workload time that remains once the indexes chosen before it
are in place. A large win is taken whatever its density, and declining one index does not stop the search, so
the budget fills while large wins remain. (The share is of what remains, not of the whole: when one statement
dominates the workload, e.g. a correlated subquery the planner prices in the billions, every other index would
otherwise look negligible next to the one that fixes it.)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from indexd.advisor.model import ExistingIndex, IndexCandidate
from indexd.advisor.problem import NEAR, CandidateSet, CostFn, Eval, Problem
from indexd.advisor.writes import WriteModel
from indexd.config.schema import IndexingSettings
from indexd.statements.indexdef import covers, describe
from indexd.statements.statement import Statement
from indexd.units import human_rate

KNEE_FRACTION = 0.02  # an index below this share of the first pick's gain per byte ...
KNEE_MIN_SHARE = 0.01  # ... that saves less than this share of the workload is past the knee


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
    write_ms_per_s: float  # write maintenance it adds next to the others
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


def label(cand: IndexCandidate) -> str:
    return f"{cand.schema}.{cand.table} {describe(cand.shape())}"


def _covers(wide: IndexCandidate, narrow: IndexCandidate) -> bool:
    return wide.schema == narrow.schema and wide.table == narrow.table and covers(wide.shape(), narrow.shape())


def served_by_existing(cand: IndexCandidate, existing: Sequence[ExistingIndex]) -> str | None:
    """The name of a valid existing index that makes `cand` redundant, if any."""
    for idx in existing:
        if idx.is_valid and idx.schema == cand.schema and idx.table == cand.table and covers(idx.shape(),
                                                                                                cand.shape()):
            return idx.name
    return None


@dataclass(frozen=True)
class Limits:
    budget_bytes: int
    settings: IndexingSettings
    writes: WriteModel
    sizes: Mapping[IndexCandidate, int]
    skewed: frozenset[tuple[str, str, str]] = frozenset()  # (schema, table, column) with very busy values

    def size(self, cand: IndexCandidate) -> int:
        return self.sizes.get(cand, 0)

    def write_cost(self, cand: IndexCandidate, chosen: Iterable[IndexCandidate]) -> float:
        """ms/s of writes `cand` adds next to the chosen indexes."""
        return self.writes.marginal(cand, chosen)

    def set_write(self, chosen: Iterable[IndexCandidate]) -> float:
        """ms/s of writes a whole set of new indexes costs."""
        by_table: dict[str, list[IndexCandidate]] = {}
        for cand in chosen:
            by_table.setdefault(f"{cand.schema}.{cand.table}", []).append(cand)
        return sum(self.writes.cost(key, members) for key, members in by_table.items())

    def refusal(self, cand: IndexCandidate, ev: Eval, period_s: float, write: float) -> str | None:
        """Why this index does not pay (None: it does)."""
        if ev.regression is not None:
            return f"would make statement {ev.regression} costlier"
        pct = 100.0 * ev.saved_ms / ev.helped_ms if ev.helped_ms > 0 else 0.0
        need = self.settings.min_improvement_pct
        if pct < need:
            return f"saves {pct:.1f}% of its statements' cost (< {need:g}%)"
        benefit = ev.saved_ms / period_s
        rate = self.writes.rows_per_s(f"{cand.schema}.{cand.table}")
        guard = self.settings.write_guard
        ratio = guard.min_benefit_ratio if rate >= guard.writes_per_second else 1.0
        if benefit <= write * ratio:
            hot = " (its updates would no longer be HOT)" if self.writes.loses_hot(cand) else ""
            return f"saves {human_rate(benefit)} but costs {human_rate(write)} of writes{hot} (needs x{ratio:g})"
        return None


def select(
    candidates: CandidateSet,
    costs: CostFn,
    budget_bytes: int,
    writes: WriteModel | Mapping[str, float],
    settings: IndexingSettings,
    *,
    statements: Sequence[Statement],
    sizes: Mapping[IndexCandidate, int],
    existing: Sequence[ExistingIndex] = (),
    period_s: float | None = None,
    skewed: frozenset[tuple[str, str, str]] = frozenset(),
) -> Selection:
    """The indexes to build for this workload, with their effect. `writes` is a write model, or plain rows
    written per second by "schema.table" (each row then adds one entry to every index)."""
    problem = Problem(statements, candidates, costs,
                      period_s if period_s is not None else settings.lookback.total_seconds())
    model = writes if isinstance(writes, WriteModel) else WriteModel.flat(writes)
    limits = Limits(budget_bytes, settings, model, sizes, skewed)
    rejected: dict[IndexCandidate, str] = {}
    pool = []
    for cand in sorted(problem.serves, key=IndexCandidate.fingerprint):
        name = served_by_existing(cand, existing)
        if name:
            rejected[cand] = f"served by existing index {name}"
        elif limits.size(cand) > budget_bytes:  # never a statement's preference: it could not be built
            rejected[cand] = "does not fit the storage budget"
        else:
            pool.append(cand)
    seeds = problem.preferred(pool, sizes)
    preferred = {s: seed for seed, served in seeds.items() for s in served}
    for cand in pool:
        if cand not in seeds:
            rejected[cand] = _not_preferred(problem, limits, cand, preferred)
    chosen = _greedy(problem, limits, sorted(seeds, key=IndexCandidate.fingerprint), rejected)
    chosen = _widen(problem, limits, pool, chosen, rejected)
    chosen = _prune(problem, limits, _without_redundant(chosen, rejected), rejected)
    return _result(problem, limits, chosen, rejected)


def _not_preferred(problem: Problem, limits: Limits, cand: IndexCandidate,
                   preferred: Mapping[int, IndexCandidate]) -> str:
    """Why no statement prefers `cand` (`preferred`: each statement's preferred candidate): a smaller index
    serves them nearly as well, or it serves them clearly worse than another index does."""
    others = [preferred[s] for s in problem.serves.get(cand, []) if s in preferred]
    share = f"{100 * (1 - NEAR):g} % of the best saving"
    if not others:
        return "the planner would not use it for any of its statements"
    if all(limits.size(o) <= limits.size(cand) for o in others):
        return f"a smaller index serves each of its statements nearly as well ({share})"
    return f"another index serves its statements clearly better (this one saves less than {share})"


def _score(problem: Problem, limits: Limits, cand: IndexCandidate, ev: Eval, write: float) -> float:
    return (ev.saved_ms / problem.period_s - write) / max(limits.size(cand), 1)


def _past_knee(ev: Eval, remaining_ms: float, score: float, first: float | None) -> str | None:
    share = ev.saved_ms / max(remaining_ms, 1e-9)
    if first is None or score >= KNEE_FRACTION * first or share >= KNEE_MIN_SHARE:
        return None
    return (f"past the knee: saves {100 * share:.2f}% of the remaining workload at {100 * score / first:.2f}% of "
            f"the first pick's gain per byte (< {100 * KNEE_MIN_SHARE:g}% and < {100 * KNEE_FRACTION:g}%)")


def _greedy(problem: Problem, limits: Limits, seeds: list[IndexCandidate],
            rejected: dict[IndexCandidate, str]) -> list[IndexCandidate]:
    """Lazy greedy: scores mostly fall as the set grows, so a re-evaluated best that stays best is taken."""
    chosen: list[IndexCandidate] = []
    used, first, remaining = 0, None, problem.workload_ms
    per_table: dict[tuple[str, str], int] = {}
    heap = []
    for cand in seeds:
        ev = problem.evaluate(cand, frozenset(), frozenset([cand]))
        heap.append((-_score(problem, limits, cand, ev, limits.write_cost(cand, ())), cand.fingerprint(), 0, cand))
    heapq.heapify(heap)
    while heap:
        _, fp, version, cand = heapq.heappop(heap)
        table = (cand.schema, cand.table)
        if used + limits.size(cand) > limits.budget_bytes:
            rejected[cand] = "does not fit the storage budget"
            continue
        if per_table.get(table, 0) >= limits.settings.max_indexes_per_table:
            rejected[cand] = f"table already gets {limits.settings.max_indexes_per_table} new indexes"
            continue
        why = _overlap(cand, chosen)
        if why:
            rejected[cand] = why
            continue
        current = frozenset(chosen)
        ev = problem.evaluate(cand, current, current | {cand})
        write = limits.write_cost(cand, chosen)
        score = _score(problem, limits, cand, ev, write)
        if version != len(chosen):
            heapq.heappush(heap, (-score, fp, len(chosen), cand))
            continue
        why = limits.refusal(cand, ev, problem.period_s, write) or _past_knee(ev, remaining, score, first)
        if why:
            rejected[cand] = why
            continue
        chosen.append(cand)
        first = score if first is None else first
        remaining -= ev.saved_ms
        used += limits.size(cand)
        per_table[table] = per_table.get(table, 0) + 1
        rejected.pop(cand, None)
    return chosen


def _overlap(cand: IndexCandidate, chosen: Sequence[IndexCandidate]) -> str | None:
    for other in chosen:
        if _covers(other, cand):
            return f"served by {label(other)}, chosen already"
    for other in chosen:
        if _covers(cand, other):
            return f"would only widen {label(other)}, chosen already: weighed as a widening"
    return None


@dataclass(frozen=True)
class _Widening:
    wider: IndexCandidate
    replaced: tuple[IndexCandidate, ...]
    extra_bytes: int
    density: float  # the wider index's net gain per byte


def _widen(problem: Problem, limits: Limits, pool: Sequence[IndexCandidate], chosen: list[IndexCandidate],
           rejected: dict[IndexCandidate, str]) -> list[IndexCandidate]:
    """Replace chosen indexes by wider ones that cover them, while that pays (see the module's step 4)."""
    result = list(chosen)
    for _ in range(len(pool)):  # each step strictly raises the net gain: this bound is never reached
        used = sum(limits.size(c) for c in result)
        options = [w for x in result if (w := _widening(problem, limits, pool, result, x, used)) is not None]
        if not options:
            break
        best = max(options, key=lambda o: (o.density, o.wider.fingerprint()))
        at = min(result.index(c) for c in best.replaced)
        for old in best.replaced:
            rejected[old] = f"widened to {label(best.wider)}"
            result.remove(old)
        result.insert(at, best.wider)
        rejected.pop(best.wider, None)
    return result


def _widening(problem: Problem, limits: Limits, pool: Sequence[IndexCandidate], current: list[IndexCandidate],
              narrow: IndexCandidate, used: int) -> _Widening | None:
    """The best wider replacement of `narrow` (with whatever else of the set it covers), if one pays."""
    best: _Widening | None = None
    for wide in pool:
        if wide in current or not _covers(wide, narrow) or _covers(narrow, wide):
            continue
        group = tuple(c for c in current if _covers(wide, c))
        rest = frozenset(current) - set(group)
        extra = limits.size(wide) - sum(limits.size(c) for c in group)
        if used + extra > limits.budget_bytes:
            continue
        touched = {s for c in (*group, wide) for s in problem.serves.get(c, [])}
        base = problem.total_saved(rest, touched)
        before = problem.total_saved(rest | set(group), touched)
        after = problem.total_saved(rest | {wide}, touched)
        if base is None or before is None or after is None:
            continue
        write_rest = limits.set_write(rest)
        gain_narrow = (before - base) / problem.period_s - (limits.set_write(rest | set(group)) - write_rest)
        gain_wide = (after - base) / problem.period_s - (limits.set_write(rest | {wide}) - write_rest)
        if gain_wide <= gain_narrow or gain_wide <= 0:
            continue
        density = gain_wide / max(limits.size(wide), 1)
        denser = density > gain_narrow / max(sum(limits.size(c) for c in group), 1)
        skewed = (narrow.schema, narrow.table, narrow.keys[0].label()) in limits.skewed
        if (denser or skewed) and (best is None or density > best.density):
            best = _Widening(wide, group, extra, density)
    return best


def _without_redundant(chosen: list[IndexCandidate], rejected: dict[IndexCandidate, str]) -> list[IndexCandidate]:
    """Never a pair where one index covers the other: the covered one goes."""
    kept = list(chosen)
    for cand in chosen:
        other = next((o for o in kept if o is not cand and _covers(o, cand)), None)
        if other is not None and cand in kept:
            kept.remove(cand)
            rejected[cand] = f"served by {label(other)}, chosen already"
    return kept


def _prune(problem: Problem, limits: Limits, chosen: list[IndexCandidate],
           rejected: dict[IndexCandidate, str]) -> list[IndexCandidate]:
    """Drop, latest first, any index whose contribution next to all the others no longer qualifies."""
    kept = list(chosen)
    for cand in reversed(chosen):
        full = frozenset(kept)
        others = full - {cand}
        ev = problem.evaluate(cand, others, full)
        why = limits.refusal(cand, ev, problem.period_s, limits.write_cost(cand, others))
        if why:
            kept.remove(cand)
            rejected[cand] = f"redundant next to the other choices: {why}"
    return kept


def _result(problem: Problem, limits: Limits, chosen: list[IndexCandidate],
            rejected: dict[IndexCandidate, str]) -> Selection:
    full = frozenset(chosen)
    final = {s: problem.current(s, full) for s in problem.baseline}
    choices = []
    for cand in chosen:
        others = full - {cand}
        ev = problem.evaluate(cand, others, full)
        helped = tuple(
            Helped(s, problem.baseline[s], final[s]) for s in problem.serves.get(cand, [])
            if problem.current(s, full) < problem.current(s, others)
        )
        choices.append(Choice(cand, limits.size(cand), ev.saved_ms / problem.period_s,
                              limits.write_cost(cand, others), 100.0 * ev.saved_ms / problem.workload_ms, helped))
    return Selection(tuple(choices), rejected, dict(problem.baseline), final, problem.workload_ms)
