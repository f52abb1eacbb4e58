"""Dexter's public statement scenarios as a minimum bar: where Dexter finds an index, indexd recommends one that
makes the statement at least as cheap; where Dexter finds none, indexd recommends nothing.

The scenarios (statement, expected index) are Dexter's; the schema and data below are written here to match the
facts those scenarios rely on: posts of 100,000 rows (blog_id = n % 1000, user_id = n % 10, an indexed column),
a view, a materialized view, a mixed-case schema, a foreign table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from indexd.advisor.model import IndexCandidate, IndexKey
from indexd.advisor.pipeline import Advice, advise
from indexd.advisor.whatif import WhatIf
from indexd.config.schema import DatabaseSettings, IndexingSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.statements.statement import Statement
from indexd.workload.lookback import given_workload
from tests.support.cluster import new_database

SCHEMA = """
CREATE TABLE posts (id int, blog_id int, user_id int, json json, jsonb jsonb, indexed int);
INSERT INTO posts (id, blog_id, user_id, indexed) SELECT n, n % 1000, n % 10, n FROM generate_series(1, 100000) n;
CREATE INDEX ON posts (indexed);
CREATE TABLE blogs (id int PRIMARY KEY, name text);
INSERT INTO blogs SELECT n, 'blog ' || n FROM generate_series(1, 1000) n;
CREATE VIEW posts_view AS SELECT id AS view_id FROM posts;
CREATE MATERIALIZED VIEW posts_materialized AS SELECT * FROM posts;
CREATE SCHEMA "Bar";
CREATE TABLE "Bar"."Foo" ("Id" int);
INSERT INTO "Bar"."Foo" SELECT n FROM generate_series(1, 100000) n;
CREATE EXTENSION postgres_fdw;
CREATE SERVER other FOREIGN DATA WRAPPER postgres_fdw;
CREATE FOREIGN TABLE comments (post_id int) SERVER other;
ANALYZE;
SELECT pg_stat_reset();
"""

SETTINGS = IndexingSettings(min_calls=1)


@pytest.fixture(scope="module")
def dexter_db(pg_cluster: EmbeddedCluster) -> Iterator[Database]:
    name = f"dexter_{int(time.time() * 1000) % 100000}"
    new_database(pg_cluster, name)
    pg_cluster.execute(SCHEMA, dbname=name)
    db = Database(DatabaseSettings(name="dexter", dsn=pg_cluster.dsn(name), pool=PoolSettings(size=2)))
    try:
        yield db
    finally:
        db.close()
        pg_cluster.drop_database(name)


def _advise(db: Database, query: str) -> Advice:
    return advise(db, SETTINGS, given_workload([Statement(query, calls=100)], SETTINGS))


def _key(col: str) -> IndexKey:
    return IndexKey(col)


FINDS_INDEX = [
    ("basic_index", "SELECT * FROM posts WHERE id = 1", "public.posts", ("id",)),
    ("multicolumn", "SELECT * FROM posts WHERE user_id = 1 AND blog_id = 2", "public.posts", ("user_id", "blog_id")),
    ("multicolumn_3pass", "SELECT * FROM posts WHERE user_id = 1 AND blog_id < 10", "public.posts", ("blog_id",)),
    ("multicolumn_order", "SELECT * FROM posts WHERE user_id = 1 ORDER BY blog_id LIMIT 1000", "public.posts",
     ("user_id", "blog_id")),
    ("join", "SELECT * FROM posts INNER JOIN blogs ON blogs.id = posts.blog_id WHERE blogs.id = 1", "public.posts",
     ("blog_id",)),
    ("update_selective", "UPDATE posts SET user_id = 2 WHERE id = 1", "public.posts", ("id",)),
    ("delete", "DELETE FROM posts WHERE user_id = 1", "public.posts", ("user_id",)),
    ("view", "SELECT * FROM posts_view WHERE view_id = 1", "public.posts", ("id",)),
    ("materialized_view", "SELECT * FROM posts_materialized WHERE id = 1", "public.posts_materialized", ("id",)),
    ("cte", "WITH cte AS (SELECT * FROM posts WHERE id = 1) SELECT * FROM cte", "public.posts", ("id",)),
    ("cte_fence", "WITH cte AS (SELECT * FROM posts) SELECT * FROM cte WHERE id = 1", "public.posts", ("id",)),
    ("not_materialized_cte", "WITH cte AS NOT MATERIALIZED (SELECT * FROM posts) SELECT * FROM cte WHERE id = 1",
     "public.posts", ("id",)),
    ("order", "SELECT * FROM posts ORDER BY user_id DESC LIMIT 10", "public.posts", ("user_id",)),
    ("order_column_number", "SELECT user_id FROM posts ORDER BY 1 DESC LIMIT 10", "public.posts", ("user_id",)),
    ("order_column_alias", "SELECT user_id AS u FROM posts ORDER BY u DESC LIMIT 10", "public.posts", ("user_id",)),
    ("order_multiple", "SELECT * FROM posts ORDER BY user_id, blog_id LIMIT 10", "public.posts",
     ("user_id", "blog_id")),
    ("schema", 'SELECT * FROM "Bar"."Foo" WHERE "Id" = 10000', "Bar.Foo", ("Id",)),
    ("normalized", "SELECT * FROM posts WHERE id = $1", "public.posts", ("id",)),
]

FINDS_NONE = [
    ("basic_no_index", "SELECT * FROM posts"),
    ("missing_table", "SELECT * FROM missing"),
    ("foreign_table", "SELECT * FROM comments WHERE post_id = 1"),
    ("materialized_cte", "WITH cte AS MATERIALIZED (SELECT * FROM posts) SELECT * FROM cte WHERE id = 1"),
    ("no_tables", "SELECT 1"),
    ("information_schema", "SELECT * FROM information_schema.tables"),
    ("pg_catalog", "SELECT * FROM pg_catalog.pg_index"),
    ("pg_index", "SELECT * FROM pg_index"),
    ("parse_error", "SELECT +"),
    ("indexed", "SELECT * FROM posts WHERE indexed = 1"),
]


@pytest.mark.parametrize(("case", "query", "table", "columns"), FINDS_INDEX, ids=[c[0] for c in FINDS_INDEX])
def test_finds_an_index_at_least_as_good_as_dexters(dexter_db: Database, case: str, query: str, table: str,
                                                      columns: tuple[str, ...]) -> None:
    advice = _advise(dexter_db, query)
    ours = frozenset(r.candidate for r in advice.recommendations)
    assert ours, f"{case}: nothing recommended ({advice.skipped}, {advice.warnings})"
    assert {f"{c.schema}.{c.table}" for c in ours} == {table}
    assert len(ours) <= 2
    schema, name = table.split(".")
    dexters = IndexCandidate(schema, name, tuple(_key(c) for c in columns))
    with WhatIf(dexter_db) as wi:
        cost_ours, cost_dexter = wi.cost(0, query, ours), wi.cost(1, query, frozenset([dexters]))
    assert cost_ours is not None and cost_dexter is not None
    assert cost_ours <= cost_dexter * 1.001, f"{case}: ours {cost_ours} vs Dexter's {cost_dexter}"
    rec = advice.recommendations[0]
    assert rec.queries and rec.queries[0].cost_after < rec.queries[0].cost_before


@pytest.mark.parametrize(("case", "query"), FINDS_NONE, ids=[c[0] for c in FINDS_NONE])
def test_finds_no_index_where_dexter_finds_none(dexter_db: Database, case: str, query: str) -> None:
    advice = _advise(dexter_db, query)
    assert advice.recommendations == (), f"{case}: {advice.recommendations}"


def test_update_rewriting_a_tenth_of_the_table_gets_no_index(dexter_db: Database) -> None:
    """Dexter's UPDATE case, where indexd deliberately differs: each execution rewrites 9,880 rows, so an index on
    user_id adds ~9,880 entries per call (~49 ms at 5 us each) to save ~920 cost units of scan (~5 ms). It would
    slow the statement down; indexd declines and says why. (A selective UPDATE gets its index: see above.)"""
    advice = _advise(dexter_db, "UPDATE posts SET user_id = 2 WHERE user_id = 1")
    assert advice.recommendations == ()
    assert any(d.query == "public.posts (user_id)" and "writes" in d.reason for d in advice.declined)


def test_parse_error_is_reported_not_dropped(dexter_db: Database) -> None:
    advice = _advise(dexter_db, "SELECT +")
    assert advice.skipped and advice.skipped[0].query == "SELECT +"


def test_order_by_position_with_star(dexter_db: Database) -> None:
    """Dexter finds nothing here ("not ideal", says its test); an index on the first column, id, is the answer."""
    advice = _advise(dexter_db, "SELECT * FROM posts ORDER BY 1 DESC LIMIT 10")
    assert [[k.column for k in r.candidate.keys] for r in advice.recommendations] in ([], [["id"]])
