"""Candidate generation on a hand-built catalog: every parser case and every skip reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from indexd.advisor.candidates import Candidates, generate
from indexd.advisor.model import Catalog, Column, ExistingIndex, IndexCandidate, Table
from indexd.config.schema import IndexingSettings
from indexd.statements.statement import Statement

SETTINGS = IndexingSettings(min_table_rows=1000, max_columns=3)


def col(name: str, typ: str, width: int = 8, nd: float | None = None, **kw) -> Column:
    return Column(name, typ, avg_width=width, n_distinct=nd, null_frac=kw.pop("null_frac", 0.0), **kw)


USERS = Table("public", "users", "r", 100_000, 2000, all_visible_pages=1800, columns=(
    col("id", "bigint", nd=-1), col("email", "text", 24, -1, collation="C"), col("name", "text", 12, -0.5),
    col("status", "text", 6, 3, collation="C", most_common_vals=("done", "new", "pending"),
        most_common_freqs=(0.9, 0.08, 0.02)),
    col("org_id", "integer", 4, 50), col("created_at", "timestamp with time zone", 8, -0.9),
    col("deleted_at", "timestamp with time zone", 8, -0.01, null_frac=0.99),
    col("active", "boolean", 1, 2, most_common_vals=("t", "f"), most_common_freqs=(0.97, 0.03)),
), )
ORDERS = Table("public", "orders", "r", 500_000, 9000, (
    col("id", "bigint", nd=-1), col("user_id", "bigint", 8, 80_000), col("total", "numeric", 6, -0.3),
    col("created_at", "timestamp with time zone", 8, -0.8), col("note", "text", 200, -0.9, collation="C"),
))
EVENTS_COLS = (col("id", "bigint", nd=-1), col("at", "date", 4, 400), col("kind", "integer", 4, 7))
CATALOG = Catalog(
    tables={t.qualified: t for t in (
        USERS, ORDERS,
        Table("public", "events", "p", 1_000_000, 8000, EVENTS_COLS),
        Table("public", "events_2026", "r", 500_000, 4000, EVENTS_COLS, parent="public.events"),
        Table("public", "active_users", "v", 0, 0, (col("id", "bigint"), col("email", "text"),
                                                   col("org_id", "integer")),
              view_definition=" SELECT users.id, users.email, users.org_id FROM users WHERE users.active;"),
        Table("public", "user_stats", "m", 50_000, 300, (col("user_id", "bigint", nd=-1), col("n", "integer"))),
        Table("My Schema", "Weird Table", "r", 10_000, 100, (col("Col", "integer", 4, 100),
                                                             col("Other Col", "text", 10, 500, collation="C")),
              all_visible_pages=100),
        Table("public", "remote", "f", 0, 0, (col("id", "integer"),)),
        Table("public", "tiny", "r", 10, 1, (col("a", "integer"),)),
        Table("public", "words", "r", 100_000, 900, (col("title", "text", 30, -1, collation="en_US.utf8"),
                                                     col("code", "character varying(20)", 10, -1,
                                                         collation="en_US.utf8"))),
    )},
)


def show(c: IndexCandidate) -> str:
    text = f"{c.table}({', '.join(k.label() for k in c.keys)})"
    if c.include:
        text += f" INCLUDE ({', '.join(c.include)})"
    return text + (f" WHERE {c.where}" if c.where else "")


def run(*queries: str, catalog: Catalog = CATALOG) -> Candidates:
    return generate([Statement(q) for q in queries], catalog, SETTINGS)


def cands(query: str, catalog: Catalog = CATALOG) -> set[str]:
    return {show(c) for c in run(query, catalog=catalog).by_statement[0]}


def skipped(query: str) -> str:
    result = run(query)
    assert result.by_statement == [[]] and len(result.skipped) == 1
    return result.skipped[0].reason


# ---- predicates -------------------------------------------------------------------------------------------
def test_equality() -> None:
    assert cands("SELECT name FROM users WHERE org_id = $1") >= {"users(org_id)"}


def test_range_and_equality_then_range() -> None:
    assert cands("SELECT * FROM users WHERE created_at >= $1") == {"users(created_at)"}
    assert cands("SELECT * FROM users WHERE $1 < created_at AND org_id = $2") == {
        "users(org_id, created_at)", "users(org_id)", "users(created_at)"}


def test_between_with_parameters() -> None:
    assert "users(org_id, created_at)" in cands(
        "SELECT * FROM users WHERE org_id = $1 AND created_at BETWEEN $2 AND $3")


def test_in_list_and_any_parameter() -> None:
    assert cands("SELECT * FROM users WHERE org_id IN (1, 2, 3)") == {"users(org_id)"}
    assert cands("SELECT * FROM users WHERE id = ANY($1)") == {"users(id)"}
    assert cands("SELECT * FROM users WHERE org_id NOT IN (1, 2)") == set()


def test_is_null_is_equality_and_is_not_null_a_range() -> None:
    found = cands("SELECT * FROM users WHERE deleted_at IS NULL AND org_id = $1")
    assert {"users(deleted_at, org_id)", "users(deleted_at)", "users(org_id)"} <= found  # most distinct first
    assert "users(org_id, created_at)" in cands(
        "SELECT * FROM users WHERE org_id = $1 AND created_at IS NOT NULL")


def test_equality_columns_most_selective_first() -> None:
    assert "users(email, org_id, status)" in cands(
        "SELECT * FROM users WHERE status = $1 AND org_id = $2 AND email = $3")


def test_like_prefix_under_c_collation_is_a_plain_key() -> None:
    assert cands("SELECT * FROM users WHERE email LIKE 'ann%'") == {"users(email)"}
    assert "users(org_id, email)" in cands("SELECT * FROM users WHERE org_id = $1 AND email LIKE 'ann%'")


def test_like_prefix_under_other_collations_needs_the_pattern_opclass() -> None:
    assert cands("SELECT * FROM words WHERE title LIKE 'war%'") == {"words(title text_pattern_ops)"}
    assert cands("SELECT * FROM words WHERE code LIKE 'AB_%'") == {"words(code varchar_pattern_ops)"}
    assert cands("SELECT * FROM words WHERE title LIKE '%peace'") == set()
    assert cands("SELECT * FROM words WHERE title LIKE $1") == set()


def test_expression_of_one_column() -> None:
    assert cands("SELECT id FROM users WHERE lower(email) = $1") == {"users((lower(email)))"}
    assert cands("SELECT id FROM users u WHERE lower(u.email) LIKE 'ab%'") == {"users((lower(email)))"}
    assert cands("SELECT id FROM users WHERE now() > created_at + $1") == set()  # not one column alone


def test_row_comparison_is_one_equality_per_column() -> None:
    assert "users(email, org_id)" in cands("SELECT * FROM users WHERE (org_id, email) = ($1, $2)")


def test_or_gives_single_columns_only() -> None:
    assert cands("SELECT * FROM users WHERE org_id = $1 OR email = $2") == {"users(org_id)", "users(email)"}


def test_boolean_column() -> None:
    assert "users(org_id, active)" in cands("SELECT * FROM users WHERE active AND org_id = $1")


# ---- joins, sorting, grouping ---------------------------------------------------------------------------------
def test_join_keys_on_and_in_where() -> None:
    found = cands("SELECT o.total FROM orders o JOIN users u ON u.id = o.user_id WHERE u.org_id = $1")
    assert {"orders(user_id)", "users(org_id)"} <= found
    found = cands("SELECT * FROM orders o, users u WHERE o.user_id = u.id AND u.email = $1")
    assert {"orders(user_id)", "users(email)"} <= found
    assert {"orders(id)", "users(id)"} <= cands("SELECT * FROM orders JOIN users USING (id)")


def test_self_join_keeps_scans_apart() -> None:
    found = cands("SELECT a.id FROM users a JOIN users b ON b.id = a.org_id WHERE a.email = $1")
    assert {"users(email, org_id)", "users(id)"} <= found
    assert not any("email" in c and "id)" in c and "org_id" not in c for c in found)


def test_ambiguous_unqualified_column_is_left_out() -> None:
    found = cands("SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE created_at > $1")
    assert not any("created_at" in c for c in found)
    assert "orders(user_id)" in found


def test_order_by_with_direction() -> None:
    assert "users(org_id, created_at DESC)" in cands(
        "SELECT * FROM users WHERE org_id = $1 ORDER BY created_at DESC LIMIT 10")
    assert cands("SELECT * FROM users ORDER BY created_at DESC, id LIMIT 10") == {"users(created_at DESC, id)",
                                                                                  "users(created_at DESC)"}


def test_order_by_position_and_output_alias() -> None:
    assert "users(org_id, created_at DESC)" in cands(
        "SELECT created_at, id FROM users WHERE org_id = $1 ORDER BY 1 DESC")
    assert "users(org_id, created_at)" in cands("SELECT created_at AS c FROM users WHERE org_id = $1 ORDER BY c")


def test_order_by_unusable_cases() -> None:
    assert cands("SELECT * FROM users ORDER BY created_at DESC NULLS LAST LIMIT 5") == set()
    assert cands("SELECT * FROM users u JOIN orders o ON o.user_id = u.id ORDER BY u.name, o.total") == {
        "orders(user_id)", "users(id)"}
    assert "users(org_id, created_at)" not in cands(
        "SELECT * FROM users WHERE org_id = $1 ORDER BY created_at NULLS FIRST")


def test_group_by() -> None:
    assert cands("SELECT org_id, count(*) FROM users GROUP BY org_id") == {"users(org_id)"}
    assert "users(status, org_id)" in cands("SELECT org_id, count(*) FROM users WHERE status = $1 GROUP BY 1")


# ---- statements and relations ----------------------------------------------------------------------------------
def test_update_and_delete() -> None:
    assert cands("UPDATE users SET name = $1 WHERE email = $2") == {"users(email)"}  # never covering
    assert cands("DELETE FROM orders WHERE created_at < $1") == {"orders(created_at)"}
    assert {"orders(user_id)", "users(org_id)"} <= cands(
        "DELETE FROM orders o USING users u WHERE o.user_id = u.id AND u.org_id = $1")
    assert cands("INSERT INTO orders (id) SELECT id FROM users WHERE org_id = $1") >= {"users(org_id)"}
    assert skipped("INSERT INTO orders (id, user_id) VALUES ($1, $2)").startswith("no usable predicate")


def test_cte_passes_predicates_to_its_base_table() -> None:
    found = cands("WITH recent AS (SELECT * FROM orders WHERE created_at > $1) "
                  "SELECT * FROM recent r WHERE r.user_id = $2")
    assert "orders(user_id, created_at)" in found


def test_materialized_cte_is_a_separate_block() -> None:
    found = cands("WITH recent AS MATERIALIZED (SELECT * FROM orders WHERE created_at > $1) "
                  "SELECT * FROM recent r WHERE r.user_id = $2")
    assert found == {"orders(created_at)"}
    found = cands("WITH recent AS (SELECT * FROM orders WHERE created_at > $1) "  # referenced twice: materialized
                  "SELECT * FROM recent a JOIN recent b ON a.id = b.user_id")
    assert found == {"orders(created_at)"}


def test_recursive_cte() -> None:
    found = cands("WITH RECURSIVE t(id) AS (SELECT id FROM users WHERE org_id = $1 UNION ALL "
                  "SELECT u.id FROM users u JOIN t ON u.org_id = t.id) SELECT * FROM t")
    assert "users(org_id)" in found


def test_subqueries_in_from_and_where() -> None:
    assert "users(org_id)" in cands("SELECT * FROM (SELECT id, org_id FROM users) s WHERE s.org_id = $1")
    assert "users(org_id)" not in cands(  # no push-down into a subquery with LIMIT
        "SELECT * FROM (SELECT id, org_id FROM users LIMIT 5) s WHERE s.org_id = $1")
    found = cands("SELECT * FROM orders WHERE user_id IN (SELECT id FROM users WHERE org_id = $1)")
    assert {"orders(user_id)", "users(org_id)"} <= found
    found = cands("SELECT * FROM users WHERE org_id = (SELECT max(org_id) FROM users WHERE email = $1)")
    assert {"users(org_id)", "users(email)"} <= found


def test_exists_correlates_with_the_outer_table() -> None:
    found = cands("SELECT * FROM users u WHERE EXISTS "
                  "(SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.total > $1)")
    assert {"orders(user_id, total)", "users(id)"} <= found
    assert "orders(user_id)" in cands(
        "SELECT * FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)")


def test_correlated_scalar_subquery_gets_its_own_narrow_candidate() -> None:
    """`x < (SELECT avg(x) FROM t2 WHERE t2.k = outer.k)`: the subquery's correlation column alone serves each of
    its executions; the outer scan's (k, x) is only one of the shapes."""
    result = run("SELECT sum(o.total) FROM orders o JOIN users u ON u.id = o.user_id WHERE u.org_id = $1 "
                 "AND o.total < (SELECT 0.2 * avg(o2.total) FROM orders o2 WHERE o2.user_id = u.id)")
    found = {show(c) for c in result.by_statement[0]}
    assert {"orders(user_id)", "orders(user_id, total)", "users(org_id)"} <= found
    exists = cands("SELECT * FROM users u WHERE u.org_id = $1 AND EXISTS "
                   "(SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.created_at > $2)")
    assert {"orders(user_id, created_at)", "orders(user_id)"} <= exists


def test_leading_key_alone_of_every_multi_column_shape() -> None:
    found = cands("SELECT * FROM users WHERE org_id = $1 AND created_at > $2 ORDER BY created_at LIMIT 5")
    assert {"users(org_id, created_at)", "users(org_id)"} <= found
    assert "orders(created_at DESC)" in cands("SELECT id FROM orders ORDER BY created_at DESC, id DESC LIMIT 5")


def test_covering_only_where_index_only_scans_are_real() -> None:
    """INCLUDE pays only when most pages are all-visible (relallvisible / relpages), else the heap is visited."""
    churned = Catalog(tables={**CATALOG.tables, "public.users": replace(USERS, all_visible_pages=200)})
    assert "users(org_id) INCLUDE (id)" in cands("SELECT id FROM users WHERE org_id = $1")
    assert not any("INCLUDE" in c for c in cands("SELECT id FROM users WHERE org_id = $1", catalog=churned))


def test_outer_columns_of_plain_subqueries_are_parameters_not_keys() -> None:
    found = cands("SELECT id, (SELECT max(total) FROM orders o WHERE o.user_id = u.id) FROM users u "
                  "WHERE u.email = $1")
    assert "orders(user_id)" in found and "users(email, id)" not in found and "users(id)" not in found
    found = cands("SELECT * FROM users u, LATERAL (SELECT * FROM orders o WHERE o.user_id = u.id "
                  "ORDER BY o.created_at DESC LIMIT 3) x WHERE u.org_id = $1")
    assert {"orders(user_id, created_at DESC)", "users(org_id)"} <= found and "users(id)" not in found


def test_whole_row_reference_reads_every_column() -> None:
    assert not any("INCLUDE" in c for c in cands("SELECT u, id FROM users u WHERE org_id = $1"))
    assert "users(org_id) INCLUDE (id)" in cands("SELECT id FROM users u WHERE org_id = $1")


def test_view_maps_to_its_base_table_and_is_marked() -> None:
    result = run("SELECT email FROM active_users a WHERE a.org_id = $1", "SELECT * FROM users WHERE org_id = $1")
    found = {show(c) for c in result.by_statement[0]}
    assert "users(org_id, active)" in found and "users(org_id)" in found
    assert not any(c.startswith("active_users") for c in found)
    assert result.through_view == {0}


def test_no_partial_candidates_for_statements_through_views() -> None:
    catalog = Catalog(tables={**CATALOG.tables, "public.pending": Table(
        "public", "pending", "v", 0, 0, (col("id", "bigint"), col("created_at", "timestamp with time zone")),
        view_definition="SELECT users.id, users.created_at FROM users WHERE users.status = 'pending'::text")})
    result = run("SELECT id FROM pending ORDER BY created_at", catalog=catalog)
    assert result.through_view == {0}
    assert all(c.where is None for c in result.by_statement[0])
    assert "users(status, created_at)" in {show(c) for c in result.by_statement[0]}


def test_materialized_view_is_indexed_itself() -> None:
    assert cands("SELECT * FROM user_stats WHERE user_id = $1") == {"user_stats(user_id)"}


def test_partitions_are_indexed_through_the_parent() -> None:
    assert cands("SELECT * FROM events_2026 WHERE kind = $1") == {"events(kind)"}
    assert cands("SELECT * FROM events WHERE at > $1") == {"events(at)"}


def test_schema_qualified_and_quoted_identifiers() -> None:
    result = run('SELECT "Col" FROM "My Schema"."Weird Table" w WHERE w."Other Col" = $1')
    (first, *rest) = result.by_statement[0]
    assert first.schema == "My Schema" and first.table == "Weird Table"
    assert {show(c) for c in result.by_statement[0]} == {"Weird Table(Other Col)",
                                                         "Weird Table(Other Col) INCLUDE (Col)"}
    assert cands('SELECT * FROM "My Schema"."Weird Table" WHERE "My Schema"."Weird Table"."Col" > 3') == {
        "Weird Table(Col)"}
    assert cands("SELECT * FROM public.users WHERE public.users.org_id = 1") == {"users(org_id)"}


def test_union_branches_are_analysed() -> None:
    found = cands("SELECT id FROM users WHERE email = $1 UNION SELECT id FROM orders WHERE user_id = $2")
    assert {"users(email)", "orders(user_id)"} <= found


# ---- partial and covering -------------------------------------------------------------------------------------
def test_partial_index_on_a_rare_constant() -> None:
    found = cands("SELECT id FROM users WHERE status = 'pending' ORDER BY created_at")
    assert "users(created_at) WHERE status = 'pending'" in found
    found = cands("SELECT id FROM users WHERE status = 'done' ORDER BY created_at")
    assert not any("WHERE" in c for c in found)  # 90 % of the rows: not rare
    assert "users(org_id) WHERE deleted_at IS NOT NULL" in cands(
        "SELECT * FROM users WHERE deleted_at IS NOT NULL AND org_id = $1")
    assert "users(email) WHERE NOT active" in cands("SELECT * FROM users WHERE NOT active AND email = $1")
    assert not any("WHERE" in c for c in cands("SELECT * FROM users WHERE status = $1"))  # a parameter


def test_partial_index_never_keys_on_its_own_equality_column() -> None:
    """`(status) WHERE status = 'pending'` holds one key value: pointless next to the plain index."""
    assert cands("SELECT * FROM users WHERE status = 'pending'") == {"users(status)"}
    found = cands("SELECT status, count(*) FROM users WHERE status = 'pending' GROUP BY status")
    assert not any(c.startswith("users(status") and "WHERE" in c for c in found), found
    assert not any("(deleted_at) WHERE deleted_at IS NULL" in c
                   for c in cands("SELECT * FROM users WHERE deleted_at IS NULL"))
    for c in run("SELECT * FROM users WHERE status = 'pending' AND org_id = $1 ORDER BY status").all:
        if c.where:
            assert "status" not in {k.column for k in c.keys}, show(c)


def test_covering_for_few_narrow_columns() -> None:
    found = cands("SELECT id, created_at FROM users WHERE org_id = $1")
    assert "users(org_id) INCLUDE (created_at, id)" in found
    assert not any("INCLUDE" in c for c in cands("SELECT note FROM orders WHERE user_id = $1"))  # wide
    assert not any("INCLUDE" in c for c in cands("SELECT * FROM users WHERE org_id = $1"))
    assert not any("INCLUDE" in c for c in cands("SELECT id, name, email, created_at FROM users WHERE org_id = $1"))


# ---- skips and de-duplication ---------------------------------------------------------------------------------
def test_skip_reasons() -> None:
    assert skipped("SELEC * FROM users").startswith('does not parse: syntax error at or near "SELEC"')
    assert skipped("CREATE TABLE x (a int)") == "utility statement (CreateStmt)"
    assert skipped("COPY users TO STDOUT") == "utility statement (CopyStmt)"
    assert skipped("SET work_mem = '64MB'") == "utility statement (VariableSetStmt)"
    assert skipped("EXPLAIN SELECT * FROM users WHERE id = 1") == "utility statement (ExplainStmt)"
    assert skipped("MERGE INTO users u USING orders o ON o.user_id = u.id WHEN MATCHED THEN DELETE") == (
        "MERGE statements are not analysed")
    assert skipped("SELECT * FROM tiny WHERE a = $1") == "public.tiny has 10 rows, fewer than min_table_rows (1000)"
    assert skipped("SELECT * FROM pg_class WHERE relname = $1") == "pg_class is a system catalog"
    assert skipped("SELECT * FROM pg_catalog.pg_index WHERE indrelid = $1") == "pg_catalog.pg_index is a system catalog"
    assert skipped("SELECT * FROM remote WHERE id = $1") == "public.remote is a foreign table"
    assert skipped("SELECT * FROM indexd.snapshots WHERE id = $1") == (
        "indexd.snapshots belongs to indexd's state schema")
    assert skipped("SELECT * FROM nowhere WHERE id = $1") == "nowhere is not a known table"
    assert skipped("SELECT * FROM users") == "no usable predicate, join, sort or grouping"


def test_candidates_are_deduplicated_across_statements() -> None:
    result = run("SELECT * FROM users WHERE org_id = $1", "SELECT * FROM users u WHERE u.org_id = $7")
    assert [show(c) for c in result.by_statement[0]] == ["users(org_id)"]
    assert result.by_statement[0] == result.by_statement[1]
    assert len(result.all) == 1 and result.skipped == []


def test_existing_indexes_are_not_proposed_again() -> None:
    catalog = Catalog(tables=CATALOG.tables, indexes=(
        ExistingIndex("public", "orders_user", "orders", ("user_id", "created_at"),
                      definition="CREATE INDEX orders_user ON public.orders USING btree (user_id, created_at)"),))
    found = cands("SELECT * FROM orders WHERE user_id = $1 AND created_at > $2", catalog=catalog)
    assert found == {"orders(created_at)"}
    catalog = Catalog(tables=CATALOG.tables, indexes=(
        ExistingIndex("public", "users_lower", "users", ("lower(email)",),
                      definition="CREATE INDEX users_lower ON public.users USING btree (lower(email))"),))
    result = run("SELECT id FROM users WHERE lower(email) = $1", catalog=catalog)
    assert result.by_statement == [[]]
    assert result.skipped[0].reason == "the indexes public.users would need exist already"
    # an existing partial index holds too few rows; one with the INCLUDE column serves the covering shape too
    catalog = Catalog(tables=CATALOG.tables, indexes=(
        ExistingIndex("public", "users_org_new", "users", ("org_id",), where="status = 'new'",
                      definition="CREATE INDEX users_org_new ON public.users USING btree (org_id) "
                                 "WHERE (status = 'new'::text)"),))
    assert "users(org_id)" in cands("SELECT id FROM users WHERE org_id = $1", catalog=catalog)
    catalog = Catalog(tables=CATALOG.tables, indexes=(
        ExistingIndex("public", "users_org", "users", ("org_id", "id"),
                      definition="CREATE INDEX users_org ON public.users USING btree (org_id DESC, id DESC)"),))
    assert cands("SELECT id FROM users WHERE org_id = $1", catalog=catalog) == set()


@pytest.mark.parametrize("max_columns, expected", [(1, set()), (2, {"users(email, org_id)"})])
def test_max_columns(max_columns: int, expected: set[str]) -> None:
    result = generate([Statement("SELECT * FROM users WHERE status = $1 AND org_id = $2 AND email = $3")],
                      CATALOG, IndexingSettings(max_columns=max_columns))
    multi = {show(c) for c in result.by_statement[0] if len(c.keys) > 1}
    assert multi == expected


def test_pathological_nesting_skips_one_statement_only() -> None:
    deep = "SELECT * FROM users WHERE id IN " + "(SELECT id FROM users WHERE id IN " * 400 + "(1)" + ")" * 400
    result = run(deep, "SELECT * FROM users WHERE org_id = $1")
    assert result.skipped[0].reason == "nested too deeply to analyse"
    assert result.by_statement[1]


def test_unknown_column_is_named_with_its_table() -> None:
    assert skipped("SELECT * FROM users WHERE customer_id = 42") == "column customer_id not found in table public.users"
    assert skipped("SELECT * FROM users u WHERE u.nosuch = $1") == "column nosuch not found in table public.users"
    # an output name is no unknown column
    assert skipped("SELECT count(*) AS n FROM users ORDER BY n") == "no usable predicate, join, sort or grouping"
