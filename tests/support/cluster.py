"""Checks on the test cluster shared by the fixtures and the tests: no indexd connection outlives a test."""

from __future__ import annotations

import time

from indexd.embedded import EmbeddedCluster


def indexd_connections(cluster: EmbeddedCluster, dbname: str) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'indexd'"
    return int(cluster.fetch(query, params=(dbname,))[0][0])


def assert_no_leaked_connections(cluster: EmbeddedCluster, dbname: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (n := indexd_connections(cluster, dbname)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert n == 0, f"{n} indexd connection(s) to {dbname} still open after the test"
