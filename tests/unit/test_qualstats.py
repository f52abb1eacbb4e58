"""pg_qualstats' constants applied to normalized statements: the keys hidden in index expressions, the dominant
constants that split a statement, and the note when pg_qualstats is missing."""

from __future__ import annotations

from indexd.advisor.model import Catalog, Column, Table
from indexd.advisor.qualstats import (
    Constant,
    QualConstants,
    equality_parameters,
    example_constants,
    expand,
    key_parameters,
    share_lower_bound,
    would_add,
)
from indexd.statements.statement import Statement

JOBS = Table("public", "jobs", "r", 1_000_000, 20_000, (
    Column("id", "bigint", 8, -1.0, 0.0),
    Column("status", "text", 6, 3.0, 0.0, ("done", "failed", "pending"), (0.97, 0.02, 0.01)),
    Column("tenant_id", "integer", 4, 400.0, 0.0, ("7",), (0.3,)),
    Column("meta", "jsonb", 60, -1.0, 0.0),
))
USERS = Table("public", "users", "r", 10_000, 100, (Column("id", "bigint"), Column("tenant_id", "integer")))
CATALOG = Catalog(tables={t.qualified: t for t in (JOBS, USERS)})


def test_example_constants_line_up_token_by_token() -> None:
    normalized = "SELECT id FROM jobs WHERE meta->>$1 = $2 AND id > $3 LIMIT $4"
    example = "select id from jobs where meta->>'external_id' = 'x-1' and id > -5 limit 10;"
    assert example_constants(normalized, example) == {1: "'external_id'", 2: "'x-1'", 3: "-5", 4: "10"}
    wrapped = "EXPLAIN (FORMAT JSON) SELECT id FROM jobs WHERE meta->>'k' = 'v' AND id > 1 LIMIT 2"
    assert example_constants(normalized, wrapped)[1] == "'k'"
    assert example_constants(normalized, "SELECT id FROM jobs WHERE status = 'x'") == {}


def test_key_parameters_are_those_an_index_expression_holds() -> None:
    assert key_parameters("SELECT id FROM jobs WHERE meta->>$1 = $2") == {1}
    assert key_parameters("SELECT 1 FROM t WHERE to_tsvector($1, body) @@ to_tsquery($2, $3)") == {1}
    assert key_parameters("SELECT 1 FROM t WHERE date_trunc($1, at AT TIME ZONE $2) = $3") == {1, 2}
    assert key_parameters("SELECT 1 FROM t WHERE at > now() - $1::interval AND price * $2 > $3") == set()


def test_equality_parameters_resolve_aliases_and_leave_ambiguity_out() -> None:
    assert equality_parameters("SELECT id FROM jobs j WHERE j.status = $1 AND tenant_id = $2", CATALOG) == {
        ("public.jobs", "status"): 1, ("public.jobs", "tenant_id"): 2}
    joined = "SELECT 1 FROM jobs j JOIN users u ON u.id = j.id WHERE tenant_id = $1 AND u.tenant_id = $2"
    assert equality_parameters(joined, CATALOG) == {("public.users", "tenant_id"): 2}
    assert equality_parameters("SELECT 1 FROM jobs WHERE status = $1 OR status = $2", CATALOG) == {}


def test_a_dominant_rare_constant_becomes_a_weighted_variant() -> None:
    stmt = Statement("SELECT id FROM jobs WHERE status = $1 ORDER BY id LIMIT $2", calls=1000,
                     total_time_ms=500.0, queryid=11, rows=20_000)
    constants = QualConstants(equal={(11, "public.jobs", "status"): [Constant("'pending'::text", 90),
                                                                     Constant("'done'::text", 10)]})
    rest, pending = expand([stmt], constants, CATALOG)
    assert pending.query == "SELECT id FROM jobs WHERE status = 'pending' ORDER BY id LIMIT $1"
    assert (pending.calls, pending.total_time_ms, pending.queryid) == (900, 450.0, 11)
    assert rest.query == stmt.query and rest.calls == 100
    # 'done' is 97 % of the rows: nothing to gain from its own variant, whatever its share of the calls
    common = QualConstants(equal={(11, "public.jobs", "status"): [Constant("'done'::text", 100)]})
    assert expand([stmt], common, CATALOG) == [stmt]


def test_the_measured_filter_ratio_stands_in_for_missing_statistics() -> None:
    bare = Table("public", "jobs", "r", 1_000_000, 20_000, (Column("id", "bigint", 8, -1.0, 0.0),
                                                           Column("state", "text", 6, 3.0, 0.0)))
    catalog = Catalog(tables={bare.qualified: bare})
    stmt = Statement("SELECT id FROM jobs WHERE state = $1", calls=10, queryid=14)
    rare = QualConstants(equal={(14, "public.jobs", "state"): [Constant("'queued'::text", 10, kept=0.002)]})
    assert [v.query for v in expand([stmt], rare, catalog)] == ["SELECT id FROM jobs WHERE state = 'queued'"]
    unknown = QualConstants(equal={(14, "public.jobs", "state"): [Constant("'queued'::text", 10)]})
    assert expand([stmt], unknown, catalog) == [stmt]


def test_a_huge_tenant_is_costed_with_its_own_selectivity() -> None:
    stmt = Statement("SELECT id FROM jobs WHERE tenant_id = $1", calls=100, queryid=12)
    constants = QualConstants(equal={(12, "public.jobs", "tenant_id"): [Constant("7", 60), Constant("8", 40)]})
    variants = expand([stmt], constants, CATALOG)
    assert [v.query for v in variants] == [stmt.query, "SELECT id FROM jobs WHERE tenant_id = 7"]
    assert [v.calls for v in variants] == [40, 60]


def test_expression_keys_come_from_the_example() -> None:
    stmt = Statement("SELECT id FROM jobs WHERE meta->>$1 = $2", calls=5, queryid=13)
    constants = QualConstants(examples={13: "SELECT id FROM jobs WHERE meta->>'external_id' = 'x-9'"})
    assert [s.query for s in expand([stmt], constants, CATALOG)] == [
        "SELECT id FROM jobs WHERE meta->>'external_id' = $1"]


def test_without_pg_qualstats_one_note_says_what_it_would_add() -> None:
    statements = [Statement("SELECT id FROM jobs WHERE status = $1"), Statement("SELECT id FROM jobs WHERE id = $1"),
                  Statement("SELECT id FROM jobs WHERE meta->>$1 = $2")]
    note = would_add(statements, CATALOG, "pg_qualstats is not installed")
    assert note is not None and note.startswith("pg_qualstats is not installed. With it")
    assert "1 statement(s) comparing a column of few values" in note and "of 1 whose index expression" in note
    assert would_add([Statement("SELECT id FROM jobs WHERE id = $1")], CATALOG, "x") is None


def test_a_key_drawn_twice_among_few_samples_is_chance_not_a_dominant_value() -> None:
    """Eight sampled calls of a lookup by a random key among 400: one key twice is 25 % of the samples, but the
    evidence does not say it is a fifth of the calls; forty of forty does."""
    stmt = Statement("SELECT id FROM jobs WHERE tenant_id = $1", calls=8, queryid=15)
    chance = QualConstants(equal={(15, "public.jobs", "tenant_id"): [Constant("7", 2)]
                                  + [Constant(str(n), 1) for n in range(20, 26)]})
    assert expand([stmt], chance, CATALOG) == [stmt]
    steady = QualConstants(equal={(15, "public.jobs", "tenant_id"): [Constant("7", 40)]})
    assert [v.query for v in expand([stmt], steady, CATALOG)] == ["SELECT id FROM jobs WHERE tenant_id = 7"]
    assert share_lower_bound(2, 8) < 0.2 < share_lower_bound(40, 40)
    assert share_lower_bound(0, 0) == 0.0 and 0.2 < share_lower_bound(60, 100) < 0.6
