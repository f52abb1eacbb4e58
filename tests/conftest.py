"""Shared fixtures: a real PostgreSQL 15 cluster (with pg_stat_statements and HypoPG) started by the tests."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import psycopg2
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from indexd.config.schema import DatabaseSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedCluster]:
    """One throw-away cluster for the whole session (run as an unprivileged OS user when we are root)."""
    cluster = EmbeddedCluster()
    if not cluster.has_extension("hypopg"):
        pytest.exit("HypoPG is not installed: run 'make test' (it installs postgresql-15-hypopg)", returncode=1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _make_db(cluster: EmbeddedCluster, prefix: str) -> Iterator[str]:
    name = f"{prefix}_{next(_counter)}_{int(time.time() * 1000) % 100000}"
    janitor = DatabaseJanitor(user=cluster.superuser, host="127.0.0.1", port=cluster.port, dbname=name)
    janitor.init()
    try:
        for ext in ("pg_stat_statements", "hypopg"):
            cluster.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}", dbname=name)
        yield name
    finally:
        cluster.drop_database(name)


@pytest.fixture
def pg_dbname(pg_cluster: EmbeddedCluster) -> Iterator[str]:
    """A fresh, empty database in the session cluster, dropped after the test."""
    yield from _make_db(pg_cluster, "t")


@pytest.fixture
def pg_dsn(pg_cluster: EmbeddedCluster, pg_dbname: str) -> str:
    return pg_cluster.dsn(pg_dbname)


@pytest.fixture
def pg_conn(pg_cluster: EmbeddedCluster, pg_dbname: str) -> Iterator[psycopg2.extensions.connection]:
    """A plain autocommit superuser connection to the test database, for setting up and inspecting."""
    conn = pg_cluster.connect(pg_dbname)
    try:
        yield conn
    finally:
        conn.close()


def indexd_connections(cluster: EmbeddedCluster, dbname: str) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'indexd'"
    return int(cluster.fetch(query, params=(dbname,))[0][0])


def assert_no_leaked_connections(cluster: EmbeddedCluster, dbname: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (n := indexd_connections(cluster, dbname)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert n == 0, f"{n} indexd connection(s) to {dbname} still open after the test"


@pytest.fixture
def db_settings(pg_cluster: EmbeddedCluster, pg_dbname: str) -> DatabaseSettings:
    return DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname), pool=PoolSettings(size=2, max_overflow=2))


@pytest.fixture
def database(pg_cluster: EmbeddedCluster, pg_dbname: str, db_settings: DatabaseSettings) -> Iterator[Database]:
    """indexd's Database for the test database; after the test, no indexd connection may be left open."""
    db = Database(db_settings)
    try:
        yield db
    finally:
        db.close()
        assert_no_leaked_connections(pg_cluster, pg_dbname)


@pytest.fixture
def own_cluster() -> Iterator[EmbeddedCluster]:
    """A private cluster for tests that stop, restart, freeze or kill the server."""
    cluster = EmbeddedCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
