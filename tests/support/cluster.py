"""The test cluster's databases: the one way tests create them, and the check that no indexd connection outlives
a test."""

from __future__ import annotations

import time

from psycopg2 import sql
from pytest_postgresql.janitor import DatabaseJanitor

from indexd.embedded import EmbeddedCluster

DEFAULT_EXTENSIONS = ("pg_stat_statements", "hypopg")


def new_database(cluster: EmbeddedCluster, name: str, extensions: tuple[str, ...] = DEFAULT_EXTENSIONS) -> str:
    """Create a database for a test in the embedded cluster (pytest-postgresql's janitor issues the CREATE
    DATABASE, as it does for its own fixtures) with these extensions; returns its DSN. Drop it with
    cluster.drop_database."""
    DatabaseJanitor(user=cluster.superuser, host="127.0.0.1", port=cluster.port, dbname=name).init()
    for ext in extensions:
        cluster.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)), dbname=name)
    return cluster.dsn(name)


def indexd_connections(cluster: EmbeddedCluster, dbname: str) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'indexd'"
    return int(cluster.fetch(query, params=(dbname,))[0][0])


def assert_no_leaked_connections(cluster: EmbeddedCluster, dbname: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (n := indexd_connections(cluster, dbname)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert n == 0, f"{n} indexd connection(s) to {dbname} still open after the test"
