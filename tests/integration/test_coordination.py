"""Leader locks of several databases on one leadership session, on a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from indexd import events
from indexd.config.schema import DatabaseSettings, LeadershipSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.events import Event
from indexd.lifecycle.coordination import Coordinator, Coordinators, coordination_database
from indexd.lifecycle.leader import Leadership
from tests.support.cluster import new_database


def _terminate(cluster: EmbeddedCluster, pid: int | None) -> None:
    """End a backend and wait until it is gone: its advisory locks are released only when it has exited."""
    assert cluster.fetch("SELECT pg_terminate_backend(%s)", params=(pid,)) == [(True,)]
    deadline = time.monotonic() + 10
    while cluster.fetch("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", params=(pid,)) != [(0,)]:
        assert time.monotonic() < deadline, f"backend {pid} still there 10 s after pg_terminate_backend"
        time.sleep(0.02)


@pytest.fixture
def two_dbs(pg_cluster: EmbeddedCluster, pg_dbname: str,
            db_settings: DatabaseSettings) -> Iterator[tuple[Database, Database]]:
    other = f"{pg_dbname}_b"
    new_database(pg_cluster, other, extensions=())
    a = Database(db_settings)
    b = Database(replace(db_settings, name="second", dsn=pg_cluster.dsn(other)))
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        pg_cluster.drop_database(other)


def _sessions_in(cluster: EmbeddedCluster, dbname: str) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'indexd'"
    return int(cluster.fetch(query, params=(dbname,))[0][0])


def test_one_session_holds_every_database_and_losing_it_loses_them_all(
        pg_cluster: EmbeddedCluster, two_dbs: tuple[Database, Database]) -> None:
    a, b = two_dbs
    coords = Coordinators()
    coord = coords.for_database(a)
    assert coords.for_database(b) is coord  # same server, same leadership database
    lead_a, lead_b = Leadership.for_database(a, coord), Leadership.for_database(b, coord)
    try:
        assert lead_a.key != lead_b.key
        assert lead_a.acquire() and lead_b.acquire()
        assert lead_a.held() and lead_b.held() and lead_a.known() and lead_b.known()
        assert _sessions_in(pg_cluster, "postgres") == 1 and coord.held_count() == 2

        pid = coord.backend_pid()
        _terminate(pg_cluster, pid)
        assert not lead_a.held()  # the first check finds the session gone ...
        assert not lead_b.known() and coord.held_count() == 0  # ... and with it every leadership
        assert not lead_b.held()

        lost, gained = coord.refresh()  # both taken back on a new session, in one round trip
        assert (lost, gained) == ([], sorted([a.name, b.name]))
        assert lead_a.held() and lead_b.held() and coord.backend_pid() not in (None, pid)

        pid = coord.backend_pid()  # lost again, noticed by the housekeeping this time: taken back at once
        _terminate(pg_cluster, pid)
        assert coord.refresh() == ([], sorted([a.name, b.name]))
        assert lead_a.held() and lead_b.held() and coord.backend_pid() not in (None, pid)

        lead_b.release()  # no longer wanted: a refresh does not take it again
        assert not lead_b.held()
        coord.refresh()
        assert lead_a.held() and not lead_b.held()
        lead_a.release()
        coord.refresh()  # nothing left to hold: the session is ended
        assert coord.backend_pid() is None and _sessions_in(pg_cluster, "postgres") == 0
    finally:
        coords.close()


def test_a_lost_session_is_told_once_for_each_database_the_daemon_led(
        pg_cluster: EmbeddedCluster, two_dbs: tuple[Database, Database]) -> None:
    a, b = two_dbs
    told: list[Event] = []
    events.subscribe(told.append)
    coord = Coordinator(coordination_database(a))
    loud_a = Leadership.for_database(a, coord, announce_changes=True)
    loud_b = Leadership.for_database(b, coord, announce_changes=True)
    try:
        assert loud_a.acquire() and loud_b.acquire() and loud_a.acquire()  # held already: told once
        assert [(e.name, e.database) for e in told] == [("leadership_gained", a.name), ("leadership_gained", b.name)]
        told.clear()
        _terminate(pg_cluster, coord.backend_pid())
        assert not loud_b.held() and not loud_a.held()  # the first check finds the session gone
        assert sorted((e.name, e.database) for e in told) == [("leadership_lost", a.name), ("leadership_lost", b.name)]
        assert all("session failed" in e.summary for e in told)
        told.clear()
        assert coord.refresh() == ([], sorted([a.name, b.name]))
        assert sorted((e.name, e.database) for e in told) == [("leadership_gained", a.name),
                                                              ("leadership_gained", b.name)]
        told.clear()
        loud_a.release()
        coord.refresh()  # nothing changed for b: nothing to tell
        assert [(e.name, e.database) for e in told] == [("leadership_lost", a.name)]
        assert "released" in told[0].summary
    finally:
        events.unsubscribe(told.append)
        coord.close()


def test_a_commands_leadership_stays_quiet(two_dbs: tuple[Database, Database], pg_cluster: EmbeddedCluster) -> None:
    a, _ = two_dbs
    told: list[Event] = []
    events.subscribe(told.append)
    try:
        with Leadership.for_database(a) as quiet:
            assert quiet.acquire()
            _terminate(pg_cluster, quiet.coordinator.backend_pid())
            assert not quiet.held()
            assert quiet.acquire()
    finally:
        events.unsubscribe(told.append)
    assert told == []


def test_a_second_process_takes_only_what_the_first_lost(two_dbs: tuple[Database, Database],
                                                         pg_cluster: EmbeddedCluster) -> None:
    a, b = two_dbs
    first, second = Coordinator(coordination_database(a)), Coordinator(coordination_database(a))
    lead_a, lead_b = Leadership.for_database(a, first), Leadership.for_database(b, first)
    other_b = Leadership.for_database(b, second)  # the second process manages only database b
    try:
        assert lead_a.acquire() and lead_b.acquire()
        assert not other_b.acquire()
        assert second.refresh() == ([], [])
        _terminate(pg_cluster, first.backend_pid())
        assert second.refresh() == ([], [b.name])  # b is free now: the second process leads it
        # The first finds its session gone: a new one takes back what nobody holds, b is lost to the second.
        assert first.refresh() == ([b.name], [a.name])
        assert lead_a.held() and not lead_b.held() and other_b.held()
    finally:
        for coord in (first, second):
            coord.close()


def test_an_unreachable_leadership_database_leads_nothing(db_settings: DatabaseSettings) -> None:
    settings = replace(db_settings, leadership=LeadershipSettings(database="no_such_database"))
    db = Database(settings)
    try:
        lead = Leadership.for_database(db)
        with pytest.raises(Exception, match="no_such_database"):
            lead.acquire()
        assert not lead.held() and not lead.known()
        assert lead.coordinator.refresh() == ([], [])  # said once, nothing held
        lead.release()
    finally:
        db.close()
