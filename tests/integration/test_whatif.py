"""What-if costing on the real cluster: generic plans, cache, reset on exit and error, isolated failures."""

from __future__ import annotations

import psycopg2.extensions
import pytest

from indexd.advisor.costable import parameter_count
from indexd.advisor.model import IndexCandidate, IndexKey
from indexd.advisor.whatif import HypoPGMissing, WhatIf
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster


@pytest.fixture
def orders(pg_conn: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, customer int, status text, total numeric)")
        cur.execute("INSERT INTO orders (customer, status, total) SELECT g % 5000, "
                    "CASE WHEN g % 50 = 0 THEN 'new' ELSE 'done' END, g FROM generate_series(1, 100000) g")
        cur.execute("ANALYZE orders")
    return pg_conn


CUSTOMER = IndexCandidate("public", "orders", (IndexKey("customer"),))
STATUS = IndexCandidate("public", "orders", (IndexKey("status"),))


def test_parameter_count_ignores_literals_and_comments() -> None:
    assert parameter_count("SELECT * FROM t WHERE a = $1 AND b = '$7' AND c = $3 -- $9") == 3
    assert parameter_count("SELECT 1") == 0


def test_generic_plan_costs_and_index_usage(orders: psycopg2.extensions.connection, database: Database) -> None:
    query = "SELECT * FROM orders WHERE customer = $1 ORDER BY id LIMIT $2"
    with WhatIf(database) as wi:
        before = wi.plan(0, query, frozenset())
        after = wi.plan(0, query, frozenset([CUSTOMER, STATUS]))
        assert before is not None and after is not None
        assert after.cost < before.cost / 3
        assert after.used == frozenset([CUSTOMER])  # the status index exists but does not serve this statement
        explains = wi.stats.explains
        assert wi.cost(0, query, frozenset([CUSTOMER, STATUS])) == after.cost
        assert wi.cost(0, query, frozenset([CUSTOMER])) == after.cost  # the plan's used subset was cached too
        assert wi.stats.explains == explains and wi.stats.cache_hits >= 2


def test_dml_is_explained_never_executed(orders: psycopg2.extensions.connection, database: Database) -> None:
    with WhatIf(database) as wi:
        assert wi.cost(0, "UPDATE orders SET total = 0 WHERE customer = $1", frozenset([CUSTOMER])) is not None
        assert wi.cost(1, "DELETE FROM orders WHERE status = 'new'", frozenset()) is not None
        assert wi.cost(2, "INSERT INTO orders (customer) VALUES ($1)", frozenset()) is not None
        # several statements in one text, or a utility statement, are refused before reaching the server
        assert wi.cost(3, "SELECT 1; DELETE FROM orders", frozenset()) is None
        assert wi.cost(4, "DROP TABLE orders", frozenset()) is None
        assert "statements" in wi.stats.errors[3] and "DropStmt" in wi.stats.errors[4]
    with orders.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE total = 0) FROM orders")
        assert cur.fetchone() == (100000, 0)


def test_failing_statement_is_isolated(orders: psycopg2.extensions.connection, database: Database) -> None:
    with WhatIf(database) as wi:
        assert wi.cost(0, "SELECT * FROM missing_table WHERE a = $1", frozenset([CUSTOMER])) is None
        assert wi.cost(1, "SELECT * FROM orders WHERE nope = $1", frozenset()) is None
        assert wi.cost(2, "SELECT * FROM orders WHERE customer = 3", frozenset([CUSTOMER])) is not None
        assert set(wi.stats.errors) == {0, 1}
        assert "missing_table" in wi.stats.errors[0]


def test_statement_timeout_bounds_each_explain(orders: psycopg2.extensions.connection, database: Database,
                                              pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    from datetime import timedelta

    locker = pg_cluster.connect(pg_dbname, autocommit=False)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        with WhatIf(database, statement_timeout=timedelta(milliseconds=300)) as wi:
            assert wi.cost(0, "SELECT * FROM orders WHERE customer = $1", frozenset()) is None
            assert "statement timeout" in wi.stats.errors[0]
            assert wi.cost(1, "SELECT 1", frozenset()) is not None
    finally:
        locker.rollback()
        locker.close()


def test_hypothetical_indexes_reset_on_exit_and_error(orders: psycopg2.extensions.connection,
                                                       database: Database) -> None:
    with pytest.raises(RuntimeError), WhatIf(database) as wi:
        wi.cost(0, "SELECT * FROM orders WHERE customer = 1", frozenset([CUSTOMER]))
        assert wi.stats.hypothetical_created == 1
        raise RuntimeError("boom")
    assert wi._conn is None
    with WhatIf(database) as wi2, wi2.conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM hypopg_list_indexes")
        assert cur.fetchone()[0] == 0


def test_bounded_hypothetical_indexes(orders: psycopg2.extensions.connection, database: Database) -> None:
    cands = [IndexCandidate("public", "orders", (IndexKey("customer"), IndexKey(c))) for c in ("id", "status", "total")]
    with WhatIf(database, max_hypothetical=2) as wi:
        for i, cand in enumerate(cands):
            wi.cost(i, "SELECT * FROM orders WHERE customer = 1", frozenset([cand, STATUS]))
            with wi.conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM hypopg_list_indexes")
                assert cur.fetchone()[0] <= 2


def test_hostile_identifiers(pg_conn: psycopg2.extensions.connection, database: Database) -> None:
    with pg_conn.cursor() as cur:
        cur.execute('CREATE TABLE "we""ird" ("DROP TABLE x;--" int, "Mixed Case" text)')
        cur.execute('INSERT INTO "we""ird" SELECT g, g::text FROM generate_series(1, 50000) g')
        cur.execute('ANALYZE "we""ird"')
        cur.execute("CREATE TABLE x (a int)")
    cand = IndexCandidate("public", 'we"ird', (IndexKey("DROP TABLE x;--"), IndexKey("Mixed Case")))
    query = 'SELECT * FROM "we""ird" WHERE "DROP TABLE x;--" = $1'
    with WhatIf(database) as wi:
        before, after = wi.cost(0, query, frozenset()), wi.cost(0, query, frozenset([cand]))
        assert before is not None and after is not None and after < before / 10
        assert wi.row_fraction("public", 'we"ird', '"DROP TABLE x;--" < 100') < 0.01
    with pg_conn.cursor() as cur:
        cur.execute("SELECT to_regclass('x') IS NOT NULL")
        assert cur.fetchone()[0]


def test_missing_hypopg_is_explained(pg_cluster: EmbeddedCluster, database: Database,
                                     pg_conn: psycopg2.extensions.connection) -> None:
    with pg_conn.cursor() as cur:
        cur.execute("DROP EXTENSION hypopg")
    with pytest.raises(HypoPGMissing, match="apt-get install postgresql-15-hypopg"), WhatIf(database):
        pass


def test_missing_hypopg_names_the_real_database(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                database: Database,
                                                pg_conn: psycopg2.extensions.connection) -> None:
    """The configured name ("main") is not where CREATE EXTENSION must run: the real database is named."""
    with pg_conn.cursor() as cur:
        cur.execute("DROP EXTENSION hypopg")
    with pytest.raises(HypoPGMissing) as caught, WhatIf(database):
        pass
    message = str(caught.value)
    assert f"in database {pg_dbname} (main on " in message
    assert message.endswith(f"CREATE EXTENSION hypopg; in database {pg_dbname}")
    assert "password" not in message


def test_refused_hypothetical_index_leaves_nothing_behind(orders: psycopg2.extensions.connection,
                                                          database: Database) -> None:
    bad = IndexCandidate("public", "orders", (IndexKey(expression="no_such_function(customer)"),))
    query = "SELECT * FROM orders WHERE customer = $1"
    with WhatIf(database) as wi:
        assert wi.cost(0, query, frozenset([CUSTOMER, bad])) is None
        assert 0 not in wi.stats.errors  # the statement is not at fault
        with wi.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM hypopg_list_indexes")
            assert cur.fetchone()[0] == 0
        assert wi.cost(0, query, frozenset([CUSTOMER])) is not None
