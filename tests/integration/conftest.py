"""Fixtures for the lifecycle's integration tests: migrated Databases with chosen indexing settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from indexd.config.schema import DatabaseSettings, IndexingSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.state.migrations import migrate
from tests.support.cluster import assert_no_leaked_connections


@pytest.fixture
def lifecycle_db(pg_cluster: EmbeddedCluster, pg_dbname: str,
                 db_settings: DatabaseSettings) -> Iterator[Callable[..., Database]]:
    """Makes Databases for the test database whose indexing settings are the defaults with the given overrides,
    with the state schema in place; after the test all are closed and no indexd connection may be left open."""
    made: list[Database] = []

    def make(**indexing: object) -> Database:
        db = Database(replace(db_settings, indexing=replace(IndexingSettings(), **indexing)))
        made.append(db)
        migrate(db)
        return db

    try:
        yield make
    finally:
        for db in made:
            db.close()
        assert_no_leaked_connections(pg_cluster, pg_dbname)


@pytest.fixture
def fast_db(lifecycle_db: Callable[..., Database]) -> Database:
    """A Database whose lock_timeout is 1 s, with the state schema in place."""
    return lifecycle_db(lock_timeout=timedelta(seconds=1))
