"""Replica scans combined with the primary's, from readings alone, and what that makes of unused indexes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from indexd.lifecycle.findings import IndexInfo, find_unused
from indexd.lifecycle.replica_scans import ReplicaScans, combine

START = datetime(2026, 1, 1, tzinfo=UTC)
NOW = START + timedelta(days=60)
MONTH = timedelta(days=30)
IDX = IndexInfo(oid=1, schema="public", table="orders", name="orders_status", definition="CREATE INDEX ...")
OTHER = IndexInfo(oid=2, schema="public", table="orders", name="orders_total", scans=4)


def replica(scans: dict[tuple[str, str], int] | None = None, since: datetime | None = START,
            error: str | None = None) -> ReplicaScans:
    return ReplicaScans("postgresql://indexd@r1/app", scans or {}, since, error)


def test_no_replica_changes_nothing() -> None:
    seen = combine([IDX, OTHER], START, 0, [])
    assert seen.indexes == [IDX, OTHER] and seen.stats_since == START and seen.uncounted == 0 and seen.counted == 0


def test_scans_on_a_replica_add_to_the_primarys() -> None:
    seen = combine([IDX, OTHER], START, 1, [replica({("public", "orders_status"): 7, ("public", "orders_total"): 1})])
    assert [ix.scans for ix in seen.indexes] == [7, 5]
    assert seen.uncounted == 0 and seen.counted == 1
    assert find_unused(seen.indexes, seen.stats_since, NOW, MONTH, seen.uncounted) == []


def test_an_index_unscanned_everywhere_is_droppable_when_every_standby_is_counted() -> None:
    seen = combine([IDX], START, 1, [replica()])
    (finding,) = find_unused(seen.indexes, seen.stats_since, NOW, MONTH, seen.uncounted)
    assert finding.droppable


def test_a_streaming_standby_not_listed_keeps_every_index() -> None:
    seen = combine([IDX], START, 2, [replica()])
    assert seen.uncounted == 1
    (finding,) = find_unused(seen.indexes, seen.stats_since, NOW, MONTH, seen.uncounted)
    assert not finding.droppable and "databases[].replicas" in finding.action


def test_an_unreadable_replica_keeps_every_index_and_its_scans_are_not_guessed() -> None:
    seen = combine([IDX], START, 1, [replica(error="connection refused")])
    assert seen.uncounted == 1 and seen.counted == 0 and seen.indexes[0].scans == 0
    (finding,) = find_unused(seen.indexes, seen.stats_since, NOW, MONTH, seen.uncounted)
    assert not finding.droppable


def test_a_replica_listed_but_not_streaming_from_here_still_counts() -> None:
    seen = combine([IDX], START, 0, [replica({("public", "orders_status"): 2})])  # cascaded, or not yet connected
    assert seen.indexes[0].scans == 2 and seen.uncounted == 0


def test_the_statistics_cover_only_the_time_every_server_counted() -> None:
    restarted = START + timedelta(days=50)
    seen = combine([IDX], START, 1, [replica(since=restarted)])
    assert seen.stats_since == restarted
    (finding,) = find_unused(seen.indexes, seen.stats_since, NOW, MONTH, seen.uncounted)
    assert not finding.droppable and finding.evidence["covered_days"] == 10
    assert combine([IDX], START, 1, [replica(since=None)]).stats_since is None
