"""Shared fixtures: a real PostgreSQL 15 cluster (with pg_stat_statements and HypoPG) started by the tests."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import psycopg2
import pytest

from indexd.config.schema import DatabaseSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from tests.support.cluster import assert_no_leaked_connections, new_database

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
    new_database(cluster, name)  # with pg_stat_statements and hypopg
    try:
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
