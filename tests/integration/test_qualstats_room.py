"""`indexd check` reads how much of pg_qualstats' tables is in use and whether it keeps constants at all, on a
real server: the advisor's partial-index and expression-key candidates depend on those constants."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from psycopg2 import sql

from indexd.config.schema import DatabaseSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.lifecycle.preflight_readings import preflight
from tests.support.cluster import DEFAULT_EXTENSIONS, new_database

NAME = "pg_qualstats keeps the constants (optional)"


@pytest.fixture()
def qualstats_db(pg_cluster: EmbeddedCluster) -> Iterator[tuple[str, Database]]:
    name = f"qualroom_{int(time.time() * 1000) % 100000}"
    dsn = new_database(pg_cluster, name, (*DEFAULT_EXTENSIONS, "pg_qualstats"))
    pg_cluster.execute("CREATE TABLE t (id int, status text); INSERT INTO t SELECT n, 'x' FROM "
                       "generate_series(1, 100) n", dbname=name)
    pg_cluster.execute("SELECT count(*) FROM t WHERE status = 'pending'", dbname=name)
    db = Database(DatabaseSettings(name="room", dsn=dsn, pool=PoolSettings(size=1)))
    try:
        yield name, db
    finally:
        db.close()
        pg_cluster.drop_database(name)


def test_the_check_counts_what_pg_qualstats_keeps(qualstats_db) -> None:
    _, db = qualstats_db
    check = next(c for c in preflight(db) if c.name == NAME)
    assert check.ok and not check.required, check
    kept = int(check.detail.split()[0])
    assert kept >= 1 and "of pg_qualstats.max 20000" in check.detail and "samples 100.0%" in check.detail


def test_track_constants_off_is_named_with_its_fix(pg_cluster: EmbeddedCluster, qualstats_db) -> None:
    name, db = qualstats_db
    pg_cluster.execute(sql.SQL("ALTER DATABASE {} SET pg_qualstats.track_constants = off").format(
        sql.Identifier(name)))
    check = next(c for c in preflight(db) if c.name == NAME)
    assert not check.ok and not check.required
    assert "keeps no constant" in check.detail and "track_constants = on" in check.fix[0]
