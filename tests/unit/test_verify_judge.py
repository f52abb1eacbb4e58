from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from indexd.config.schema import VerifySettings
from indexd.lifecycle.verdict import (
    NOISE_FLOOR_MS,
    SnapshotRow,
    StatementStats,
    judge,
    mentions_table,
    normalise_query,
    statement_stats,
    target_keys,
    window_stats,
)

S = VerifySettings(min_calls=20, min_gain_pct=5.0, max_regression_pct=10.0)


def st(key: str, calls: int, mean_ms: float, target: bool = True) -> StatementStats:
    return StatementStats(key, f"SELECT {key}", calls, calls * mean_ms, target)


# ---- judge: kept ---------------------------------------------------------------------------------------------


def test_faster_targets_are_kept() -> None:
    v = judge([st("1", 100, 5.0)], [st("1", 100, 0.1)], index_scans=100, settings=S)
    assert v.verdict == "kept"
    assert v.evidence["gain_pct"] == pytest.approx(98.0)
    assert v.evidence["statements"][0]["change_pct"] == pytest.approx(-98.0)


def test_gain_exactly_at_threshold_is_kept() -> None:
    v = judge([st("1", 100, 10.0)], [st("1", 100, 9.5)], 10, S)
    assert v.verdict == "kept"


def test_gain_is_weighted_by_calls_after() -> None:
    # a frequent statement 50% faster, a rare one unchanged: overall well above 5%
    before = [st("a", 1000, 2.0), st("b", 20, 100.0)]
    after = [st("a", 1000, 1.0), st("b", 20, 100.0)]
    v = judge(before, after, 500, S)
    assert v.verdict == "kept"
    assert v.evidence["gain_pct"] == pytest.approx(1000 / 4000 * 100)


def test_duplicate_keys_are_merged() -> None:
    before = [st("1", 10, 5.0), st("1", 10, 5.0)]
    after = [st("1", 15, 1.0), st("1", 15, 1.0)]
    assert judge(before, after, 30, S).verdict == "kept"


def test_small_absolute_slowdown_of_a_related_statement_is_noise() -> None:
    before = [st("1", 100, 5.0), st("w", 100, 0.02, target=False)]
    after = [st("1", 100, 0.1), st("w", 100, 0.02 + NOISE_FLOOR_MS / 2, target=False)]
    assert judge(before, after, 100, S).verdict == "kept"


def test_rare_related_statement_is_ignored() -> None:
    before = [st("1", 100, 5.0), st("r", 5, 1.0, target=False)]
    after = [st("1", 100, 0.1), st("r", 5, 50.0, target=False)]
    assert judge(before, after, 100, S).verdict == "kept"


# ---- judge: reverted -----------------------------------------------------------------------------------------


def test_unused_index_is_reverted() -> None:
    v = judge([st("1", 100, 5.0)], [st("1", 100, 5.0)], index_scans=0, settings=S)
    assert v.verdict == "reverted"
    assert "unused" in v.reasons[0]


def test_unused_needs_no_baseline() -> None:
    v = judge([], [st("1", 100, 5.0)], index_scans=0, settings=S)
    assert v.verdict == "reverted"


def test_no_gain_is_reverted() -> None:
    v = judge([st("1", 100, 10.0)], [st("1", 100, 9.8)], 100, S)
    assert v.verdict == "reverted"
    assert v.reasons[0] == "no gain: target statements 2.0% faster, below the 5% faster required"
    assert v.evidence["gain_pct"] == pytest.approx(2.0)


def test_targets_slower_below_the_regression_floor_say_slower() -> None:
    # 4% slower: below max_regression_pct, so no regression; the loss reads as one
    v = judge([st("1", 100, 1.0)], [st("1", 100, 1.04)], 100, S)
    assert v.verdict == "reverted"
    assert v.reasons[0] == "no gain: target statements 4.0% slower, below the 5% faster required"


def test_target_regression_is_reverted() -> None:
    v = judge([st("1", 100, 1.0)], [st("1", 100, 1.5)], 100, S)
    assert v.verdict == "reverted"
    assert "regression: target statement 1" in v.reasons[0]


def test_related_slowdown_smaller_than_the_gain_keeps_the_index_and_says_so() -> None:
    before = [st("1", 100, 5.0), st("w", 100, 1.0, target=False)]
    after = [st("1", 100, 0.1), st("w", 100, 1.2, target=False)]
    v = judge(before, after, 100, S)
    assert v.verdict == "kept"
    assert any("related statement w" in r for r in v.reasons)
    assert v.evidence["gain_pct"] > 90
    assert v.evidence["lost_ms"] < v.evidence["saved_ms"]


def test_related_slowdown_larger_than_the_gain_reverts() -> None:
    before = [st("1", 100, 1.0), st("w", 1000, 1.0, target=False)]
    after = [st("1", 100, 0.5), st("w", 1000, 1.2, target=False)]
    v = judge(before, after, 100, S)
    assert v.verdict == "reverted"
    assert "related statement w" in v.reasons[0]
    assert "net effect" in v.reasons[-1]


def test_regression_just_below_threshold_is_not_one() -> None:
    before = [st("1", 100, 5.0), st("w", 100, 1.0, target=False)]
    after = [st("1", 100, 0.1), st("w", 100, 1.09, target=False)]
    assert judge(before, after, 100, S).verdict == "kept"


def test_every_regression_is_listed() -> None:
    before = [st("1", 100, 1.0), st("w", 100, 1.0, target=False)]
    after = [st("1", 100, 2.0), st("w", 100, 3.0, target=False)]
    v = judge(before, after, 100, S)
    assert v.verdict == "reverted"
    assert len([r for r in v.reasons if r.startswith("regression:")]) == 2


# ---- judge: inconclusive -------------------------------------------------------------------------------------


def test_too_few_calls_after_is_inconclusive() -> None:
    v = judge([st("1", 100, 5.0)], [st("1", 19, 0.1)], 19, S)
    assert v.verdict == "inconclusive"
    assert "too few calls" in v.reasons[0]


def test_too_few_calls_wins_over_zero_scans() -> None:
    # statements that did not run give no evidence that the index is useless
    assert judge([st("1", 100, 5.0)], [st("1", 3, 5.0)], 0, S).verdict == "inconclusive"


def test_no_statements_at_all_is_inconclusive() -> None:
    assert judge([], [], 0, S).verdict == "inconclusive"


def test_only_related_statements_are_inconclusive() -> None:
    v = judge([st("w", 100, 1.0, False)], [st("w", 100, 1.0, False)], 5, S)
    assert v.verdict == "inconclusive"


def test_used_index_without_baseline_is_inconclusive() -> None:
    v = judge([st("1", 5, 5.0)], [st("1", 100, 0.1)], 100, S)
    assert v.verdict == "inconclusive"
    assert "no baseline" in v.reasons[0]


def test_zero_baseline_time_gives_no_gain() -> None:
    v = judge([st("1", 100, 0.0)], [st("1", 100, 0.0)], 100, S)
    assert v.verdict == "reverted"
    assert v.evidence["gain_pct"] == 0.0


@pytest.mark.parametrize(("mean_after", "scans", "expected"), [
    (0.5, 10, "kept"), (4.9, 10, "kept"), (4.8, 0, "reverted"), (5.0, 10, "reverted"), (6.0, 10, "reverted"),
])
def test_matrix(mean_after: float, scans: int, expected: str) -> None:
    settings = VerifySettings(min_calls=10, min_gain_pct=1.0, max_regression_pct=10.0)
    assert judge([st("1", 50, 5.0)], [st("1", 50, mean_after)], scans, settings).verdict == expected


# ---- windows of snapshots ------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RESET = datetime(2025, 12, 1, tzinfo=UTC)


def row(sid: int, queryid: int, calls: int, total: float, reset: datetime | None = RESET,
        userid: int = 10) -> SnapshotRow:
    return SnapshotRow(sid, T0 + timedelta(minutes=sid), reset, queryid, userid, True, f"q{queryid}", calls, total)


def test_window_sums_consecutive_deltas() -> None:
    rows = [row(1, 7, 10, 100.0), row(2, 7, 30, 300.0), row(3, 7, 35, 320.0)]
    assert window_stats(rows) == {7: ("q7", 25, 220.0)}


def test_first_snapshot_is_only_a_baseline() -> None:
    assert window_stats([row(1, 7, 10, 100.0)]) == {}


def test_window_order_is_by_time_not_input_order() -> None:
    rows = [row(3, 7, 35, 320.0), row(1, 7, 10, 100.0), row(2, 7, 30, 300.0)]
    assert window_stats(rows)[7][1] == 25


def test_stats_reset_counts_later_values() -> None:
    later = RESET + timedelta(days=40)
    rows = [row(1, 7, 1000, 5000.0), row(2, 7, 4, 8.0, reset=later), row(3, 7, 6, 10.0, reset=later)]
    assert window_stats(rows) == {7: ("q7", 6, 10.0)}


def test_calls_going_down_is_a_per_statement_reset() -> None:
    rows = [row(1, 7, 1000, 5000.0), row(2, 7, 3, 9.0)]
    assert window_stats(rows) == {7: ("q7", 3, 9.0)}


def test_new_statement_counts_from_zero() -> None:
    rows = [row(1, 7, 10, 10.0), row(2, 7, 10, 10.0), row(2, 8, 4, 40.0)]
    assert window_stats(rows) == {7: ("q7", 0, 0.0), 8: ("q8", 4, 40.0)}


def test_users_of_one_queryid_are_summed() -> None:
    rows = [row(1, 7, 10, 10.0, userid=1), row(1, 7, 5, 5.0, userid=2),
            row(2, 7, 20, 20.0, userid=1), row(2, 7, 6, 6.0, userid=2)]
    assert window_stats(rows) == {7: ("q7", 11, 11.0)}


# ---- matching statements to an index -------------------------------------------------------------------------


def test_normalise_query() -> None:
    assert normalise_query("SELECT *\n  FROM t  WHERE a = $1 ;") == "select * from t where a = $1"


def test_target_keys_accept_dicts_and_texts() -> None:
    ids, texts = target_keys([{"queryid": "42", "query": "SELECT 1"}, {"queryid": None, "query": "SELECT  2"},
                              "SELECT 3;", {"queryid": "junk"}, 7])
    assert ids == {42}
    assert texts == {"select 1", "select 2", "select 3"}
    assert target_keys(None) == (set(), set())


@pytest.mark.parametrize(("query", "table", "found"), [
    ("SELECT * FROM orders WHERE id = $1", "orders", True),
    ("select * from public.orders o", "orders", True),
    ('SELECT * FROM "orders"', "orders", True),
    ("SELECT * FROM orders_archive", "orders", False),
    ("SELECT * FROM old_orders", "orders", False),
    ('SELECT * FROM "Order Items" WHERE x = 1', "Order Items", True),
    ("SELECT * FROM order items", "Order Items", False),
])
def test_mentions_table(query: str, table: str, found: bool) -> None:
    assert mentions_table(query, table) is found


def test_statement_stats_marks_targets_and_related() -> None:
    totals = {1: ("SELECT * FROM t WHERE a = $1", 50, 10.0), 2: ("INSERT INTO t VALUES ($1)", 9, 1.0),
              3: ("SELECT * FROM u", 9, 1.0), 4: ("select * from x where b = $1", 5, 1.0)}
    got = {s.key: s.target for s in statement_stats(totals, {1}, {"select * from x where b = $1"}, "t")}
    assert got == {"1": True, "2": False, "4": True}


def test_an_empty_baseline_snapshot_still_counts_as_the_start() -> None:
    """A snapshot taken right after a reset has no row for the statement; its later calls all count."""
    later = RESET + timedelta(days=40)
    rows = [row(2, 7, 4, 8.0, reset=later), row(3, 7, 6, 10.0, reset=later)]
    assert window_stats(rows) == {7: ("q7", 2, 2.0)}  # without the empty snapshot, #2 is the baseline
    snapshots = [(1, T0 + timedelta(minutes=1), later), (2, T0 + timedelta(minutes=2), later),
                 (3, T0 + timedelta(minutes=3), later)]
    assert window_stats(rows, snapshots) == {7: ("q7", 6, 10.0)}
