"""The server is down, full or refusing us: bounded retries, clear errors, a breaker, and recovery afterwards."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from indexd.config.schema import CircuitBreakerSettings
from indexd.embedded import EmbeddedCluster
from indexd.errors import ConnectionFailed
from tests.support.cluster import assert_no_leaked_connections
from tests.support.faults import app_database, later, make_database, retry


def test_refused_at_start_gives_up_within_max_elapsed_then_works(own_cluster: EmbeddedCluster) -> None:
    dbname = app_database(own_cluster)
    own_cluster.stop("fast")
    db = make_database(own_cluster, dbname, retry(max_elapsed=1.5))
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="database main: unit of work failed; gave up retrying after"):
            db.run(lambda c: 1)
        assert 1.5 <= time.monotonic() - started < 2.5
        assert db.stats().connect_failures >= 3 and db.stats().giveups == 1

        own_cluster.start()
        assert db.run(lambda c: 1) == 1
    finally:
        db.close()
    assert_no_leaked_connections(own_cluster, dbname)


def test_retries_until_the_server_comes_up(own_cluster: EmbeddedCluster) -> None:
    dbname = app_database(own_cluster)
    own_cluster.stop("fast")
    db = make_database(own_cluster, dbname, retry(max_elapsed=15))
    starter = later(1.0, own_cluster.start)
    try:
        started = time.monotonic()
        assert db.run(lambda c: 1) == 1
        assert 1.0 <= time.monotonic() - started < 5
        assert db.stats().retries >= 1
    finally:
        starter.join(30)
        db.close()
    assert_no_leaked_connections(own_cluster, dbname)


@pytest.fixture
def tiny_cluster() -> EmbeddedCluster:
    cluster = EmbeddedCluster(settings={"max_connections": "4", "superuser_reserved_connections": "0"})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def test_too_many_connections_is_retried_then_clear(tiny_cluster: EmbeddedCluster) -> None:
    dbname = app_database(tiny_cluster)
    fillers = [tiny_cluster.connect() for _ in range(4)]
    db = make_database(tiny_cluster, dbname, retry(max_elapsed=1.0))
    try:
        with pytest.raises(ConnectionFailed, match="SQLSTATE 53300"):
            db.run(lambda c: 1)
        assert db.stats().retries >= 1

        releaser = later(0.5, fillers.pop().close)
        db.retry_settings = retry(max_elapsed=10)
        assert db.run(lambda c: 1) == 1
        releaser.join(5)
    finally:
        for conn in fillers:
            conn.close()
        db.close()
    assert_no_leaked_connections(tiny_cluster, dbname)


def test_wrong_password_fails_fast_with_one_attempt(own_cluster: EmbeddedCluster) -> None:
    dbname = app_database(own_cluster)
    own_cluster.execute("CREATE ROLE app_reader LOGIN PASSWORD 'correct horse'")
    dsn = own_cluster.dsn(dbname, user="app_reader", password="Tr0ub4dor&3")
    db = make_database(own_cluster, dbname, retry(attempts=10, max_elapsed=30), dsn=dsn)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed) as err:
            db.run(lambda c: 1)
        assert time.monotonic() - started < 2.0
        stats = db.stats()
        assert stats.connect_failures == 1 and stats.retries == 0 and stats.giveups == 0
        assert "authentication failed for database main as user app_reader" in str(err.value)
        assert "Tr0ub4dor" not in str(err.value) and db.breaker.state == "closed"
    finally:
        db.close()


def test_breaker_opens_fails_fast_half_opens_and_closes(own_cluster: EmbeddedCluster) -> None:
    dbname = app_database(own_cluster)
    own_cluster.stop("fast")
    breaker = CircuitBreakerSettings(failure_threshold=3, reset_timeout=timedelta(seconds=1))
    db = make_database(own_cluster, dbname, retry(attempts=1), breaker)
    try:
        for _ in range(3):
            with pytest.raises(ConnectionFailed, match="gave up retrying"):
                db.run(lambda c: 1)
        assert db.breaker.state == "open" and db.stats().breaker_opens == 1
        failures = db.stats().connect_failures

        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="circuit breaker open for database main until .* last error"):
            db.run(lambda c: 1)
        assert time.monotonic() - started < 0.1
        assert db.stats().connect_failures == failures  # no connection was even tried

        own_cluster.start()
        time.sleep(1.05)
        assert db.breaker.state == "half_open"
        assert db.run(lambda c: 1) == 1
        assert db.breaker.state == "closed" and db.stats().breaker_state == "closed"
    finally:
        db.close()
    assert_no_leaked_connections(own_cluster, dbname)


def test_one_retried_call_gets_all_its_attempts_before_the_breaker_opens(own_cluster: EmbeddedCluster) -> None:
    dbname = app_database(own_cluster)
    breaker = CircuitBreakerSettings(failure_threshold=4, reset_timeout=timedelta(seconds=30))
    db = make_database(own_cluster, dbname, retry(attempts=4, max_elapsed=10, max_delay=0.05), breaker)
    try:
        assert db.run(lambda c: 1) == 1  # a pooled connection, which dies with the server
        own_cluster.stop("fast")
        with pytest.raises(ConnectionFailed, match="unit of work failed; gave up retrying"):
            db.run(lambda c: c.cursor().execute("SELECT 1"))
        stats = db.stats()
        # The dead pooled connection does not count against the server; the 4 attempts to connect do.
        assert stats.connect_failures == 4 and stats.giveups == 1
        assert db.breaker.state == "open"
    finally:
        db.close()
        own_cluster.start()
    assert_no_leaked_connections(own_cluster, dbname)
