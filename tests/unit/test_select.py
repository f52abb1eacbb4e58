"""Workload-wide index selection, without a server: costs come from small tables of planner numbers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from indexd.advisor.model import ExistingIndex, IndexCandidate, IndexKey
from indexd.advisor.select import KNEE_FRACTION, Selection, select
from indexd.advisor.writes import ENTRY_MS, TableFacts, TableWrites, UpdateWrite, WriteModel
from indexd.config.schema import IndexingSettings, WriteGuardSettings
from indexd.statements.indexdef import covers
from indexd.statements.statement import Statement

SETTINGS = IndexingSettings(min_improvement_pct=10.0, max_indexes_per_table=3)
PERIOD = 3600.0


def cand(table: str, *cols: str, where: str | None = None) -> IndexCandidate:
    return IndexCandidate("public", table, tuple(IndexKey(c) for c in cols), where=where)


@dataclass
class Cands:
    by_statement: list[list[IndexCandidate]]
    all: set[IndexCandidate] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.all = {c for cs in self.by_statement for c in cs}


class Costs:
    """cost(s, set) = the lowest cost any index of the set gives s (an index absent from the table: no help)."""

    def __init__(self, base: dict[int, float], effect: dict[tuple[int, IndexCandidate], float],
                 pairs: dict[tuple[int, frozenset[IndexCandidate]], float] | None = None) -> None:
        self.base, self.effect, self.pairs = base, effect, pairs or {}
        self.calls: list[tuple[int, frozenset[IndexCandidate]]] = []

    def __call__(self, s: int, chosen: frozenset[IndexCandidate]) -> float | None:
        self.calls.append((s, chosen))
        if (s, chosen) in self.pairs:
            return self.pairs[(s, chosen)]
        found = [self.effect[(s, c)] for c in chosen if (s, c) in self.effect]
        return min(found) if found else self.base[s]


def run(cands: Cands, costs: Costs, statements: list[Statement], *, budget: int = 10**9,
        writes: dict[str, float] | WriteModel | None = None, settings: IndexingSettings = SETTINGS,
        sizes: dict[IndexCandidate, int] | None = None, existing: tuple[ExistingIndex, ...] = ()) -> Selection:
    sizes = sizes or {c: 1_000_000 for c in cands.all}
    return select(cands, costs, budget, writes or {}, settings, statements=statements, sizes=sizes,
                  existing=existing, period_s=PERIOD)


def names(sel: Selection) -> list[str]:
    return [",".join(k.label() for k in c.candidate.keys) for c in sel.chosen]


A, B, AB = cand("t", "a"), cand("t", "b"), cand("t", "a", "b")
STMTS = [Statement("q0", calls=100, total_time_ms=50_000), Statement("q1", calls=100, total_time_ms=40_000)]


def test_empty_input_selects_nothing() -> None:
    sel = run(Cands([]), Costs({}, {}), [])
    assert sel.chosen == () and sel.rejected == {}


def test_chooses_the_index_that_helps_and_reports_its_effect() -> None:
    cands = Cands([[A], [B]])
    sel = run(cands, Costs({0: 1000, 1: 1000}, {(0, A): 10, (1, B): 990}), STMTS)
    assert names(sel) == ["a"]
    assert "1.0%" in sel.rejected[B]  # below the 10 % threshold
    choice = sel.chosen[0]
    assert [(h.statement, h.cost_before, h.cost_after) for h in choice.helped] == [(0, 1000, 10)]
    assert 50 < choice.improvement_pct < 60  # 99 % of q0, which is 5/9 of the workload


def test_budget_limits_the_set() -> None:
    cands = Cands([[A], [B]])
    costs = Costs({0: 1000, 1: 1000}, {(0, A): 10, (1, B): 10})
    sel = run(cands, costs, STMTS, budget=1_500_000)
    assert names(sel) == ["a"] and "budget" in sel.rejected[B]
    assert sel.total_bytes <= 1_500_000


def test_benefit_per_byte_prefers_the_small_index_within_budget() -> None:
    cands = Cands([[A, AB]])
    costs = Costs({0: 1000}, {(0, A): 12, (0, AB): 10})
    sel = run(cands, costs, STMTS[:1], sizes={A: 1_000_000, AB: 3_500_000})
    assert names(sel) == ["a"]


def test_per_table_limit() -> None:
    cols = "abcde"
    cs = [cand("t", c) for c in cols]
    cands = Cands([[c] for c in cs])
    stmts = [Statement(f"q{i}", 10, 1000.0 * (i + 1)) for i in range(5)]
    costs = Costs({i: 1000 for i in range(5)}, {(i, c): 1 for i, c in enumerate(cs)})
    sel = run(cands, costs, stmts, settings=replace(SETTINGS, max_indexes_per_table=2))
    assert names(sel) == ["e", "d"]
    assert sum("new indexes" in r for r in sel.rejected.values()) == 3


def test_write_heavy_table_gets_only_indexes_that_pay_for_themselves() -> None:
    cands = Cands([[A], [cand("hot", "x")]])
    stmts = [Statement("q0", 10, 1_000.0), Statement("q1", 10, 1_000_000.0)]
    costs = Costs({0: 1000, 1: 1000}, {(0, A): 100, (1, cand("hot", "x")): 100})
    rate = 100.0 / ENTRY_MS  # rows/s written -> 100 ms/s of index maintenance
    # q1 saves 900000 ms/h = 250 ms/s, q0 0.25 ms/s
    sel = run(cands, costs, stmts, writes={"public.t": rate, "public.hot": rate})
    assert names(sel) == ["x"]
    assert "writes" in sel.rejected[A]
    # with the write guard's ratio of 3, 250 ms/s no longer pays for 100 ms/s of writes
    guard = replace(SETTINGS, write_guard=WriteGuardSettings(writes_per_second=50, min_benefit_ratio=3.0))
    assert names(run(cands, costs, stmts, writes={"public.hot": rate}, settings=guard)) == ["a"]


def test_no_regression_rejects_an_index_that_makes_a_statement_costlier() -> None:
    cands = Cands([[A], [A]])
    costs = Costs({0: 1000, 1: 1000}, {(0, A): 10, (1, A): 1500})
    sel = run(cands, costs, STMTS)
    assert names(sel) == [] and "costlier" in sel.rejected[A]


def test_overlap_not_double_counted_and_prefix_redundancy() -> None:
    # q0 filters on a, q1 on a and b: (a,b) serves both; (a) adds nothing once (a,b) is chosen
    cands = Cands([[A, AB], [A, AB]])
    costs = Costs({0: 1000, 1: 1000}, {(0, A): 10, (0, AB): 11, (1, A): 500, (1, AB): 5})
    sel = run(cands, costs, STMTS, sizes={A: 1_000_000, AB: 1_200_000})
    assert names(sel) == ["a,b"]
    assert A in sel.rejected


def test_existing_index_serves_the_candidate() -> None:
    existing = (ExistingIndex("public", "t_a_b", "t", ("a", "b")),)
    sel = run(Cands([[A]]), Costs({0: 1000}, {(0, A): 10}), STMTS[:1], existing=existing)
    assert names(sel) == [] and "t_a_b" in sel.rejected[A]


def test_threshold_applies_per_index() -> None:
    cands = Cands([[A]])
    costs = Costs({0: 1000}, {(0, A): 920})
    assert names(run(cands, costs, STMTS[:1])) == []
    assert names(run(cands, costs, STMTS[:1], settings=replace(SETTINGS, min_improvement_pct=5.0))) == ["a"]


def test_statements_without_timing_are_weighted_by_calls_and_cost() -> None:
    cands = Cands([[A], [B]])
    stmts = [Statement("q0", calls=1), Statement("q1", calls=1000)]
    costs = Costs({0: 1000, 1: 1000}, {(0, A): 10, (1, B): 10})
    sel = run(cands, costs, stmts, budget=1_000_000)
    assert names(sel) == ["b"]


def test_uncostable_statement_is_left_out() -> None:
    cands = Cands([[A]])
    costs = Costs({0: 1000}, {})
    costs.base[0] = None  # type: ignore[assignment]
    assert run(cands, costs, STMTS[:1]).chosen == ()


def test_deterministic() -> None:
    cs = [cand("t", c) for c in "abcdef"] + [cand("u", c) for c in "abc"]
    by_stmt = [[cs[i], cs[(i + 3) % 9]] for i in range(9)]
    stmts = [Statement(f"q{i}", 10, 1000.0) for i in range(9)]  # equal weights: ties everywhere
    effect = {(i, c): 100.0 for i, row in enumerate(by_stmt) for c in row}
    first = run(Cands(by_stmt), Costs(dict.fromkeys(range(9), 1000.0), effect), stmts)
    for _ in range(3):
        again = run(Cands(list(reversed(by_stmt))[::-1]), Costs(dict.fromkeys(range(9), 1000.0), effect), stmts)
        assert names(again) == names(first)
    assert len(first.chosen) == 6  # 3 on t (the limit) + 3 on u


def test_widens_only_when_the_wider_index_earns_more_per_byte() -> None:
    # (a) serves q0 fully and q1 poorly; (a, b) serves both: worth it when its gain per byte beats (a)'s
    cands = Cands([[A, AB], [A, AB]])
    costs = Costs({0: 1000, 1: 1000}, {(0, A): 10, (0, AB): 10, (1, A): 400, (1, AB): 10})
    sel = run(cands, costs, STMTS, sizes={A: 1_000_000, AB: 1_100_000})
    assert names(sel) == ["a,b"]
    assert "(a, b)" in sel.rejected[A]
    # (a) serves both nearly as well, so each statement prefers it; (a, b), a byte larger, still earns more per
    # byte over the workload: (a) is widened
    near = Costs({0: 1000, 1: 1000}, {(0, A): 10, (0, AB): 10, (1, A): 20, (1, AB): 10})
    sel = run(cands, near, STMTS, sizes={A: 1_000_000, AB: 1_001_000})
    assert names(sel) == ["a,b"] and "widened" in sel.rejected[A]
    # the same gain from an index half again as large earns less per byte than (a): (a) stays
    assert names(run(cands, costs, STMTS, sizes={A: 1_000_000, AB: 1_600_000})) == ["a"]
    # and not when the budget has no room for the wider one
    assert names(run(cands, costs, STMTS, sizes={A: 1_000_000, AB: 1_100_000}, budget=1_050_000)) == ["a"]


def test_never_widens_for_a_small_gain() -> None:
    # the planner sees (a, b) as barely better: whatever its size, (a) serves nearly as well
    cands = Cands([[A, AB], [A, AB]])
    costs = Costs({0: 1000, 1: 1000}, {(0, A): 10, (0, AB): 10, (1, A): 20, (1, AB): 19.9})
    for size in (1_100_000, 1_600_000, 3_600_000):
        assert names(run(cands, costs, STMTS, sizes={A: 1_000_000, AB: size})) == ["a"]


def test_widens_on_any_gain_when_the_leading_column_is_skewed() -> None:
    cands = Cands([[A, AB], [A, AB]])
    costs = Costs({0: 1000, 1: 1000}, {(0, A): 10, (0, AB): 10, (1, A): 20, (1, AB): 19.9})
    sizes = {A: 1_000_000, AB: 5_000_000}
    assert names(run(cands, costs, STMTS, sizes=sizes)) == ["a"]
    sel = select(cands, costs, 10**9, {}, SETTINGS, statements=STMTS, sizes=sizes, period_s=PERIOD,
                 skewed=frozenset({("public", "t", "a")}))
    assert names(sel) == ["a,b"]


# ---- the narrowest index that serves, the knee, the budget, redundancy -------------------------------------
def test_prefers_the_narrowest_index_that_serves_nearly_as_well() -> None:
    # a correlated lookup: (p) reaches 99 % of what (p, q) saves, at an eighth of its size
    p, pq = cand("l", "p"), cand("l", "p", "q")
    cands = Cands([[pq, p]])
    costs = Costs({0: 1_000_000}, {(0, pq): 1000, (0, p): 10_000})
    sel = run(cands, costs, STMTS[:1], sizes={p: 22_000_000, pq: 180_000_000})
    assert names(sel) == ["p"]
    assert "nearly as well" in sel.rejected[pq]
    # when the narrow one saves clearly less (here 80 % of the best), the wider one is the statement's choice
    costs = Costs({0: 1_000_000}, {(0, pq): 1000, (0, p): 200_000})
    assert names(run(cands, costs, STMTS[:1], sizes={p: 22_000_000, pq: 180_000_000})) == ["p,q"]


def test_knee_declines_a_large_index_for_a_small_saving_but_takes_large_wins() -> None:
    big_small_win, big_large_win, first = cand("t", "a", "x"), cand("u", "b"), cand("v", "c")
    stmts = [Statement("q0", 100, 50_000.0), Statement("q1", 100, 600.0), Statement("q2", 100, 20_000.0),
             Statement("q3", 100, 129_400.0)]  # q3: no index helps it
    cands = Cands([[first], [big_small_win], [big_large_win], []])
    costs = Costs({0: 1000, 1: 1000, 2: 1000, 3: 1000},
                  {(0, first): 10, (1, big_small_win): 10, (2, big_large_win): 10})
    sizes = {first: 1_000_000, big_small_win: 200_000_000, big_large_win: 500_000_000}
    sel = run(cands, costs, stmts, sizes=sizes)
    # q1's index saves 0.45 % of what remains after the others and has 0.3 % of the first pick's gain per byte:
    # declined; q2's index is further still below the density knee, but it saves 13 % of what remains: taken
    assert names(sel) == ["c", "b"]
    assert "knee" in sel.rejected[big_small_win]
    assert sizes[big_large_win] / sizes[first] * KNEE_FRACTION > 1  # it was past the density knee


def test_knee_weighs_what_remains_when_one_statement_dominates() -> None:
    """A correlated subquery priced in the billions is nearly all of the workload: once its index is chosen the
    others are weighed against what remains, not against it."""
    monster, others = cand("m", "k"), [cand(f"t{i}", "a") for i in range(3)]
    stmts = [Statement("q0", 1, 10_000_000.0)] + [Statement(f"q{i + 1}", 10, 30_000.0) for i in range(3)]
    cands = Cands([[monster]] + [[c] for c in others])
    costs = Costs(dict.fromkeys(range(4), 1000.0), {(0, monster): 1, **{(i + 1, c): 100 for i, c in enumerate(others)}})
    sizes = {monster: 100_000, **dict.fromkeys(others, 20_000_000)}
    assert names(run(cands, costs, stmts, sizes=sizes)) == ["k", "a", "a", "a"]


def test_a_plan_priced_far_above_the_rest_cannot_hold_a_query_file() -> None:
    """Without measured times, weights are planner costs; one plan priced 100,000 times above twenty others is
    capped at their 95th percentile, so an index for an ordinary statement is still worth its bytes. With
    measured times the same costs change nothing: a statement's real time is its weight."""
    monster, small = cand("m", "k"), cand("t", "a")
    normal = [cand(f"n{i}", "a") for i in range(19)]
    stmts = [Statement("q0", 1)] + [Statement(f"q{i + 1}", 1) for i in range(20)]
    cands = Cands([[monster], [small]] + [[c] for c in normal])
    base = {0: 1e9, **{i: 1000.0 for i in range(1, 21)}}
    costs = Costs(base, {(0, monster): 1e7, (1, small): 600.0})
    sizes = {monster: 100_000, small: 5_000_000, **dict.fromkeys(normal, 1_000_000)}
    assert names(run(cands, costs, stmts, sizes=sizes)) == ["k", "a"]
    timed = [Statement("q0", 1, 1e9)] + [Statement(f"q{i + 1}", 1, 1000.0) for i in range(20)]
    sel = run(cands, costs, timed, sizes=sizes)
    assert names(sel) == ["k"] and "knee" in sel.rejected[small]


def test_budget_fills_while_large_wins_remain() -> None:
    tiny, cs = cand("s", "a"), [cand(f"t{i}", "a") for i in range(4)]
    stmts = [Statement("q0", 10, 1_000_000.0)] + [Statement(f"q{i + 1}", 10, 300_000.0) for i in range(4)]
    cands = Cands([[tiny]] + [[c] for c in cs])
    costs = Costs(dict.fromkeys(range(5), 1000.0), {(0, tiny): 1, **{(i + 1, c): 100 for i, c in enumerate(cs)}})
    sizes = {tiny: 100_000, **dict.fromkeys(cs, 40_000_000)}
    sel = run(cands, costs, stmts, sizes=sizes, budget=183_000_000)
    assert len(sel.chosen) == 5 and sel.total_bytes == 160_100_000


def test_an_existing_index_serves_only_when_it_stores_the_include() -> None:
    cov = IndexCandidate("public", "t", (IndexKey("b"),), include=("a",))
    cands = Cands([[cov]])
    costs = Costs({0: 1000}, {(0, cov): 10})
    only_b = (ExistingIndex("public", "t_b", "t", ("b",)),)
    assert names(run(cands, costs, STMTS[:1], existing=only_b)) == ["b"]
    b_a = (ExistingIndex("public", "t_b_a", "t", ("b", "a")),)
    sel = run(cands, costs, STMTS[:1], existing=b_a)
    assert names(sel) == [] and "t_b_a" in sel.rejected[cov]


def test_index_on_an_updated_column_pays_for_the_lost_hot_updates() -> None:
    on_updated, elsewhere = cand("t", "mtime"), cand("t", "bid")
    stmts = [Statement("q0", 100, 20_000.0), Statement("q1", 100, 20_000.0)]
    cands = Cands([[on_updated], [elsewhere]])
    costs = Costs({0: 1000, 1: 1000}, {(0, on_updated): 10, (1, elsewhere): 10})
    # 2000 updates/s of mtime, 90 % HOT: the index on mtime would cost ~5 ms/s; each saves ~5.5 ms/s
    model = WriteModel({"public.t": TableWrites(updates=[UpdateWrite(frozenset({"mtime", "balance"}), 2000.0)])},
                       {"public.t": TableFacts((frozenset({"id"}), frozenset({"x"})), 10_000, 9_000)})
    sel = run(cands, costs, stmts, writes=model)
    assert names(sel) == ["bid"]
    assert "no longer be HOT" in sel.rejected[on_updated]


def test_no_recommended_set_contains_a_redundant_pair() -> None:
    rng = random.Random(3)
    shapes = [cand("t", "a"), cand("t", "a", "b"), cand("t", "a", "b", "c"), cand("t", "a", where="s = 1"),
              IndexCandidate("public", "t", (IndexKey("a"),), include=("b",)), cand("t", "b"), cand("t", "b", "a"),
              IndexCandidate("public", "t", (IndexKey("a", descending=True), IndexKey("b", descending=True))),
              cand("u", "a"), cand("u", "a", "b")]
    settings = replace(SETTINGS, max_indexes_per_table=5)
    for _ in range(200):
        n = rng.randint(1, 6)
        by_stmt = [rng.sample(shapes, rng.randint(1, 4)) for _ in range(n)]
        effect = {(s, c): rng.choice([5.0, 10.0, 50.0, 300.0, 900.0]) for s, row in enumerate(by_stmt) for c in row}
        sizes = {c: rng.choice([1, 2, 3, 5]) * 1_000_000 for c in shapes}
        stmts = [Statement(f"q{i}", 10, rng.choice([1_000.0, 50_000.0])) for i in range(n)]
        sel = run(Cands(by_stmt), Costs(dict.fromkeys(range(n), 1000.0), effect), stmts, sizes=sizes,
                  settings=settings)
        chosen = [c.candidate for c in sel.chosen]
        for x in chosen:
            for y in chosen:
                assert x is y or x.table != y.table or not covers(x.shape(), y.shape()), (x, y)
