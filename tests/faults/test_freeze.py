"""A hung server (SIGSTOP): checkouts and new connections give up within their deadlines, work resumes on thaw.

TCP keepalives cannot be shown here: on loopback the kernel of a stopped server still acknowledges the
probes. Checkouts are bounded by indexd's own deadline (the connect timeout), new connections by libpq's
connect_timeout.
"""

from __future__ import annotations

import time

import pytest

from indexd.db.deadline import SOCKET_DEADLINES
from indexd.db.pool import CHECK_BYPASS
from indexd.embedded import EmbeddedCluster
from indexd.errors import ConnectionFailed
from tests.support.cluster import assert_no_leaked_connections
from tests.support.faults import app_database, later, make_database, retry


def test_frozen_server_bounds_checkout_and_connect_then_recovers(own_cluster: EmbeddedCluster) -> None:
    dbname = app_database(own_cluster)
    db = make_database(own_cluster, dbname, retry(max_elapsed=2.5))
    try:
        assert db.run(lambda c: 1) == 1  # one pooled connection, to be checked on the next checkout ...
        time.sleep(CHECK_BYPASS + 0.1)  # ... once it is no longer "just used"
        fired = SOCKET_DEADLINES.fired
        own_cluster.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(ConnectionFailed, match="database main: unit of work failed; gave up retrying"):
                db.run(lambda c: 1)
            elapsed = time.monotonic() - started
        finally:
            own_cluster.thaw()
        # check on checkout (1 s deadline) + connect attempts (1 s connect_timeout each) within max_elapsed 2.5 s
        assert 2.0 <= elapsed < 5.0
        assert SOCKET_DEADLINES.fired == fired + 1
        stats = db.stats()
        assert stats.invalidations >= 1 and stats.connect_failures >= 1

        assert db.run(lambda c: 1) == 1
    finally:
        own_cluster.thaw()
        db.close()
    assert_no_leaked_connections(own_cluster, dbname, timeout=10)


def test_work_in_flight_when_the_server_freezes_completes_after_thaw(own_cluster: EmbeddedCluster) -> None:
    dbname = app_database(own_cluster)
    db = make_database(own_cluster, dbname)

    def work(conn) -> int:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(0.5), 3")
            return cur.fetchone()[1]

    try:
        own_cluster_thaw = later(1.5, own_cluster.thaw)
        later(0.1, own_cluster.freeze)
        started = time.monotonic()
        assert db.run(work) == 3
        assert 1.4 <= time.monotonic() - started < 5
        own_cluster_thaw.join(5)
        assert db.stats().retries == 0
    finally:
        own_cluster.thaw()
        db.close()
    assert_no_leaked_connections(own_cluster, dbname)
