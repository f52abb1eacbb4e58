from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from indexd.lifecycle import bloat
from indexd.lifecycle.findings import (
    HealthReport,
    IndexInfo,
    bloat_findings,
    covered_since,
    drop_sql,
    find_duplicates,
    find_invalid,
    find_unused,
    quote_ident,
    reindex_sql,
)
from indexd.lifecycle.health_text import render_text
from indexd.lifecycle.unused import drop_candidates

NOW = datetime(2026, 3, 1, tzinfo=UTC)
_oid = iter(range(1000, 100000))


def ix(name: str, keys: tuple[str, ...] = ("a",), **kw: object) -> IndexInfo:
    n = len(keys)
    base = IndexInfo(oid=next(_oid), schema="public", table="t", name=name, keys=keys,
                     opclasses=("1978",) * n, collations=("0",) * n, options=("0",) * n,
                     definition=f"CREATE INDEX {name} ON public.t USING btree ({', '.join(keys)})", size_bytes=8192)
    return replace(base, **kw)  # type: ignore[arg-type]


# ---- quoting -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "quoted"), [
    ("plain", '"plain"'), ("Order Items", '"Order Items"'), ('we"ird', '"we""ird"'), ('""', '""""""'),
])
def test_quote_ident(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


def test_statements_quote_schema_and_name() -> None:
    assert drop_sql("My Schema", 'ix"1') == 'DROP INDEX CONCURRENTLY "My Schema"."ix""1";'
    assert reindex_sql("s", "i") == 'REINDEX INDEX CONCURRENTLY "s"."i";'


# ---- unused --------------------------------------------------------------------------------------------------


def test_unused_is_mature_only_after_unused_for() -> None:
    old, young = NOW - timedelta(days=40), NOW - timedelta(days=3)
    assert find_unused([ix("i")], old, NOW, timedelta(days=30))[0].droppable
    young_finding = find_unused([ix("i")], young, NOW, timedelta(days=30))[0]
    assert not young_finding.droppable
    assert young_finding.evidence["covered_days"] == 3.0
    assert "keep watching" in young_finding.action


def test_unused_without_known_stats_start_is_never_mature() -> None:
    f = find_unused([ix("i")], None, NOW, timedelta(0))[0]
    assert not f.droppable and f.evidence["stats_since"] is None


def test_own_index_counts_from_its_build() -> None:
    built = NOW - timedelta(days=2)
    own = ix("indexd_t_a_1", own=True, built_at=built)
    assert covered_since(own, NOW - timedelta(days=100)) == built
    assert covered_since(own, NOW - timedelta(hours=1)) == NOW - timedelta(hours=1)
    assert covered_since(ix("x"), None) is None
    f = find_unused([own], NOW - timedelta(days=100), NOW, timedelta(days=30))[0]
    assert not f.droppable and f.own and f.evidence["created"] == built.isoformat()


@pytest.mark.parametrize("kw", [
    {"scans": 1}, {"is_valid": False}, {"is_primary": True, "is_unique": True}, {"is_unique": True},
    {"constraint": "t_excl", "constraint_type": "x"}, {"partition_child": True},
])
def test_never_unused(kw: dict[str, object]) -> None:
    assert find_unused([ix("i", **kw)], NOW - timedelta(days=99), NOW, timedelta(days=1)) == []


# ---- duplicates and redundancy -------------------------------------------------------------------------------


def test_identical_indexes_keep_the_constraint_one() -> None:
    pk = ix("t_pkey", is_primary=True, is_unique=True, constraint="t_pkey", constraint_type="p")
    copy = ix("t_a_copy", scans=500)
    found = find_duplicates([copy, pk])
    assert [(f.index, f.kind, f.evidence["duplicate_of"], f.droppable) for f in found] == [
        ("t_a_copy", "duplicate", "t_pkey", True)]


def test_identical_plain_indexes_keep_the_most_used() -> None:
    a, b = ix("i1", scans=3), ix("i2", scans=9)
    assert [f.index for f in find_duplicates([a, b])] == ["i1"]


def test_two_constraints_on_the_same_keys_are_reported_but_not_droppable() -> None:
    pk = ix("t_pkey", is_primary=True, is_unique=True, constraint="t_pkey", constraint_type="p")
    uq = ix("t_a_key", is_unique=True, constraint="t_a_key", constraint_type="u")
    (f,) = find_duplicates([pk, uq])
    assert f.index == "t_a_key" and f.sql is None and not f.droppable
    assert "DROP CONSTRAINT" in f.action


def test_unique_index_duplicating_a_unique_constraint_is_droppable() -> None:
    uq = ix("t_a_key", is_unique=True, constraint="t_a_key", constraint_type="u")
    plain_unique = ix("t_a_uidx", is_unique=True)
    (f,) = find_duplicates([uq, plain_unique])
    assert f.index == "t_a_uidx" and f.droppable


@pytest.mark.parametrize("change", [
    {"predicate": "a > 0"}, {"method": "hash"}, {"opclasses": ("3128",)}, {"collations": ("950",)},
    {"options": ("3",)}, {"include": ("b",)}, {"table": "u"}, {"schema": "other"},
])
def test_differences_make_indexes_distinct(change: dict[str, object]) -> None:
    assert find_duplicates([ix("i1"), ix("i2", **change)]) == []


def test_include_order_does_not_matter() -> None:
    found = find_duplicates([ix("i1", include=("b", "c")), ix("i2", include=("c", "b"))])
    assert len(found) == 1


def test_invalid_and_partition_children_are_left_out() -> None:
    assert find_duplicates([ix("i1"), ix("i2", is_valid=False)]) == []
    assert find_duplicates([ix("i1"), ix("i2", partition_child=True)]) == []


def test_prefix_is_redundant() -> None:
    (f,) = find_duplicates([ix("t_a"), ix("t_a_b", keys=("a", "b"))])
    assert f.kind == "redundant" and f.index == "t_a" and f.evidence["covered_by"] == "t_a_b"
    assert f.sql == 'DROP INDEX CONCURRENTLY "public"."t_a";'


def test_shortest_covering_index_is_named() -> None:
    found = find_duplicates([ix("t_a"), ix("t_a_b_c", keys=("a", "b", "c")), ix("t_a_b", keys=("a", "b"))])
    by = {f.index: f.evidence["covered_by"] for f in found}
    assert by == {"t_a": "t_a_b", "t_a_b": "t_a_b_c"}


@pytest.mark.parametrize(("short", "long"), [
    ({"is_unique": True}, {}),  # the shorter one enforces uniqueness
    ({"predicate": "a > 0"}, {}),
    ({}, {"predicate": "a > 0"}),
    ({"method": "hash"}, {"method": "hash"}),
    ({"include": ("c",)}, {}),
    ({"options": ("3",)}, {}),  # a DESC NULLS FIRST key vs an ascending one
    ({"keys": ("b",)}, {}),  # not a prefix
    ({"keys": ("lower(a)",)}, {}),
])
def test_not_redundant(short: dict[str, object], long: dict[str, object]) -> None:
    long_ix = ix("t_a_b", keys=("a", "b"))
    short_ix = ix("t_x")
    if "keys" in short:
        short_ix = replace(short_ix, keys=short["keys"])  # type: ignore[arg-type]
        short = {k: v for k, v in short.items() if k != "keys"}
    found = find_duplicates([replace(short_ix, **short), replace(long_ix, **long)])  # type: ignore[arg-type]
    assert found == []


def test_expression_prefix_is_redundant() -> None:
    found = find_duplicates([ix("t_la", keys=("lower(a)",)), ix("t_la_b", keys=("lower(a)", "b"))])
    assert [f.index for f in found] == ["t_la"]


def test_exact_duplicate_is_not_also_reported_as_redundant() -> None:
    found = find_duplicates([ix("i1", scans=1), ix("i2"), ix("t_a_b", keys=("a", "b"))])
    assert sorted((f.index, f.kind) for f in found) == [("i1", "redundant"), ("i2", "duplicate")]


# ---- invalid -------------------------------------------------------------------------------------------------


def test_invalid_findings() -> None:
    ours = ix("indexd_t_a_1234", is_valid=False)
    theirs_unique = ix("t_a_uq", is_valid=False, is_unique=True)
    theirs = ix("t_b", is_valid=False, keys=("b",))
    building = ix("t_c", is_valid=False, building=True)
    found = {f.index: f for f in find_invalid([ours, theirs_unique, theirs, building, ix("fine")])}
    assert set(found) == {"indexd_t_a_1234", "t_a_uq", "t_b", "t_c"}
    assert found["indexd_t_a_1234"].evidence["made_by"] == "indexd"
    assert found["t_a_uq"].evidence["made_by"] == "someone else" and "duplicates" in found["t_a_uq"].action
    assert found["t_b"].sql == 'DROP INDEX CONCURRENTLY "public"."t_b";'
    assert found["t_c"].sql is None and "leave it" in found["t_c"].action


# ---- bloat ---------------------------------------------------------------------------------------------------


def test_expected_pages_of_a_bigint_index() -> None:
    # 8-byte key: 16-byte tuple + 4-byte pointer = 20 bytes; 8152 * 0.9 // 20 = 366 per leaf page
    leaves = -(-1_000_000 // 366)
    pages = bloat.expected_btree_pages(1_000_000, [8.0], nullable=False)
    assert leaves + 1 < pages < leaves * 1.02 + 2


def test_expected_pages_grow_with_width_nulls_and_lower_fillfactor() -> None:
    base = bloat.expected_btree_pages(100_000, [8.0], False)
    assert bloat.expected_btree_pages(100_000, [40.0], False) > base
    assert bloat.expected_btree_pages(100_000, [8.0], True) > base
    assert bloat.expected_btree_pages(100_000, [8.0], False, fillfactor=50) > base
    assert bloat.expected_btree_pages(0, [8.0], False) == 2  # an empty index: a root leaf and the meta page


def test_estimate_needs_statistics() -> None:
    item = bloat.BloatInput(1, tuples=1000.0, pages=100, widths=(8.0, None), nullable=False, fillfactor=None)
    assert bloat.estimate(item, 8192) is None
    assert bloat.estimate(replace(item, widths=(8.0,), tuples=-1.0), 8192) is None
    est = bloat.estimate(replace(item, widths=(8.0,)), 8192)  # 3 leaves, a root, the meta page
    assert est is not None and est.expected_pages == 5 and est.actual_pages == 100


def test_bloat_thresholds() -> None:
    est = bloat.BloatEstimate(actual_pages=1000, expected_pages=400, block_size=8192)
    assert est.bloat_bytes == 600 * 8192 and est.bloat_ratio == pytest.approx(0.6)
    assert est.is_bloated(0.5, 1024**2)
    assert not est.is_bloated(0.7, 0)
    assert not est.is_bloated(0.1, 10 * 1024**2)
    assert bloat.BloatEstimate(10, 20, 8192).bloat_bytes == 0
    assert bloat.BloatEstimate(0, 2, 8192).bloat_ratio == 0.0


def test_bloat_findings_propose_a_reindex() -> None:
    a, b = ix("a"), ix("b")
    estimates = {a.oid: bloat.BloatEstimate(1000, 100, 8192), b.oid: bloat.BloatEstimate(1000, 900, 8192)}
    (f,) = bloat_findings([a, b], estimates)
    assert f.index == "a" and f.sql == 'REINDEX INDEX CONCURRENTLY "public"."a";'
    assert f.evidence["bloat_ratio"] == 0.9 and not f.droppable


# ---- the report as text, and which unused indexes may be dropped ---------------------------------------------


def _report() -> HealthReport:
    stats = NOW - timedelta(days=40)
    hostile = ix('we"ird', table="Order Items")
    own = ix("indexd_t_a_1", own=True, built_at=NOW - timedelta(days=35), keys=("b",))
    young_own = ix("indexd_t_c_2", own=True, built_at=NOW - timedelta(days=2), keys=("c",))
    unused = find_unused([hostile, own, young_own], stats, NOW, timedelta(days=30))
    invalid = find_invalid([ix("broken", is_valid=False)])
    big = ix("big")
    bloated = bloat_findings([big], {big.oid: bloat.BloatEstimate(1000, 100, 8192)})
    return HealthReport("main", NOW, stats, unused=unused, invalid=invalid, bloated=bloated, indexes_checked=7)


def test_drop_candidates_respect_only_own_and_maturity() -> None:
    rep = _report()
    assert [f.index for f in drop_candidates(rep, only_own=True)] == ["indexd_t_a_1"]
    assert [f.index for f in drop_candidates(rep, only_own=False)] == ['we"ird', "indexd_t_a_1"]


def test_render_text_has_every_section_with_statements() -> None:
    text = render_text(_report())
    assert "database main: 7 indexes checked" in text
    assert "Unused (3)" in text and "Duplicate (0): none" in text and "Invalid (1)" in text and "Bloated (1)" in text
    assert 'sql:      DROP INDEX CONCURRENTLY "public"."we""ird";' in text
    assert 'sql:      REINDEX INDEX CONCURRENTLY "public"."big";' in text
    assert "about 90% bloat: 1000 pages where a fresh build needs about 100 (7.0 MB to free)" in text
    assert "[indexd]" in text


def test_report_as_dict_is_json_ready() -> None:
    import json

    d = json.loads(json.dumps(_report().as_dict()))
    assert d["stats_since"] == (NOW - timedelta(days=40)).isoformat()
    assert {k: len(d[k]) for k in ("unused", "duplicate", "invalid", "bloated")} == {
        "unused": 3, "duplicate": 0, "invalid": 1, "bloated": 1}
    assert d["unused"][0]["index"] == 'we"ird' and d["unused"][0]["table"] == "Order Items"


def test_render_text_quotes_names_only_when_needed() -> None:
    text = render_text(_report())
    assert '  public."Order Items"  "we""ird"  8.0 kB' in text
    assert "  public.t  indexd_t_a_1  8.0 kB  [indexd]" in text


def test_measured_bloat_repacks_leaves_to_the_fillfactor() -> None:
    # 1000 leaves at 18% density repack into 200 leaves at 90%, plus 5 inner pages and the meta page
    est = bloat.measured(leaf_pages=1000, internal_pages=5, avg_leaf_density=18.0, size_pages=1006,
                         block_size=8192, fillfactor=90)
    assert (est.expected_pages, est.actual_pages, est.method) == (206, 1006, "pgstatindex")
    fresh = bloat.measured(1000, 5, 90.0, 1006, 8192, 90)
    assert fresh.bloat_bytes == 0


def test_standbys_make_unused_indexes_a_question_not_a_drop() -> None:
    (f,) = find_unused([ix("i")], NOW - timedelta(days=90), NOW, timedelta(days=30), standbys=2)
    assert not f.droppable and f.evidence["standbys"] == 2 and "standby" in f.action


def test_an_index_on_a_partitioned_table_is_dropped_without_concurrently() -> None:
    assert drop_sql("s", "ix", partitioned=True) == 'DROP INDEX "s"."ix";'
    assert drop_sql("s", "ix") == 'DROP INDEX CONCURRENTLY "s"."ix";'
