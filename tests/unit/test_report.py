"""The human output of `indexd recommend`: skipped statements, the reason nothing is recommended, numbers."""

from __future__ import annotations

from indexd.advisor.pipeline import Advice, Skipped
from indexd.advisor.report import nothing_reason, skip_kind, skipped_lines
from indexd.advisor.skips import SkipReason, skip_counts

NO_PREDICATE = "no usable predicate, join, sort or grouping"


def _skipped() -> list[Skipped]:
    return ([Skipped(f"SELECT count(*) FROM t{i}", NO_PREDICATE, SkipReason.NO_INDEXABLE_PREDICATE)
             for i in range(30)]
            + [Skipped("VACUUM t", "utility statement (VacuumStmt)", SkipReason.UTILITY)]
            + [Skipped(f"SELECT * FROM small{i} WHERE a = $1",
                       f"public.small{i} has 5 rows, fewer than min_table_rows (1000)", SkipReason.SMALL_TABLE)
               for i in range(4)])


def test_skipped_statements_are_counted_by_named_reason_on_one_line() -> None:
    lines = skipped_lines(_skipped())
    assert lines == ["skipped 35 statements: 30 no_indexable_predicate, 4 small_table, 1 utility "
                     "(--verbose lists them)"]
    assert skip_counts(_skipped()) == {"no_indexable_predicate": 30, "small_table": 4, "utility": 1}


def test_verbose_lists_every_skipped_statement_under_its_reason() -> None:
    lines = skipped_lines(_skipped(), verbose=True)
    assert lines[0] == "skipped 35 statements: 30 no_indexable_predicate, 4 small_table, 1 utility"
    assert len(lines) == 1 + 35
    assert lines[1] == f"  [no_indexable_predicate] SELECT count(*) FROM t0: {NO_PREDICATE}"
    assert lines[31] == "  [small_table] SELECT * FROM small0 WHERE a = $1: public.small0 has 5 rows, fewer than " \
                        "min_table_rows (1000)"
    assert lines[-1] == "  [utility] VACUUM t: utility statement (VacuumStmt)"


def test_one_skipped_statement() -> None:
    lines = skipped_lines([Skipped("VACUUM t", "utility statement (VacuumStmt)", SkipReason.UTILITY)])
    assert lines == ["skipped 1 statement: 1 utility (--verbose lists them)"]


def test_a_skip_without_a_named_reason_counts_as_uncostable() -> None:
    assert skip_kind(Skipped("SELECT 1", "whatever")) == SkipReason.UNCOSTABLE


def _advice(declined: list[tuple[str, str]], **kw: object) -> Advice:
    return Advice("main", 3, 0.1, declined=tuple(Skipped(q, r) for q, r in declined), **kw)  # type: ignore[arg-type]


def test_nothing_recommended_gives_the_true_reason() -> None:
    assert "--queries workload has no statement" in nothing_reason(Advice("main", 0, 0.0, from_workload=False))
    assert "look-back is 2h" in nothing_reason(Advice("main", 0, 0.0, lookback_s=7200))
    budget = _advice([("public.t (a)", "does not fit the storage budget")], budget_bytes=0,
                     smallest_candidate_bytes=1000 * 1024)
    assert nothing_reason(budget) == ("the storage budget (0 B) is smaller than the smallest candidate index "
                                      "(1.0 MB): raise --budget-mb or indexing.storage_budget")
    mixed = _advice([("public.t (a)", "saves 0.000100 ms/s but costs 0.0811 ms/s of writes (needs x1)"),
                     ("public.t (b)", "served by existing index t_b_idx"),
                     ("public.t (c)", "served by existing index t_c_idx")])
    assert nothing_reason(mixed) == ("of 3 candidate index(es), 2 are served by existing indexes, "
                                     "1 save less than they would cost in index maintenance on writes")
    served = Advice("main", 1, 0.0, skipped=(Skipped("SELECT 1 FROM t WHERE a = 1",
                                                      "the indexes public.t would need exist already",
                                                      SkipReason.ALREADY_INDEXED),))
    assert nothing_reason(served) == "the indexes these statements need exist already"
