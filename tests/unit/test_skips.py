"""Every skipped statement carries one named reason; the daemon logs each skipped shape once."""

from __future__ import annotations

import logging

import pytest

from indexd.advisor.candidates import generate
from indexd.advisor.model import Catalog, Column, ExistingIndex, Table
from indexd.advisor.pipeline import Skipped
from indexd.advisor.skips import (
    SeenShapes,
    SkipReason,
    log_new_skips,
    planner_reason,
    shape_fingerprint,
    statement_reason,
)
from indexd.config.schema import IndexingSettings
from indexd.statements.statement import Statement

BIG = Table("public", "big", "r", 100_000, 1000, (Column("id", "bigint"), Column("a", "integer")))
CATALOG = Catalog(tables={t.qualified: t for t in (
    BIG,
    Table("public", "tiny", "r", 10, 1, (Column("a", "integer"),)),
    Table("public", "remote", "f", 0, 0, (Column("id", "integer"),)),
)}, indexes=(ExistingIndex("public", "big_id", "big", ("id",)),))


@pytest.mark.parametrize(("query", "reason"), [
    ("SELEC 1", SkipReason.PARSE_ERROR),
    ("VACUUM big", SkipReason.UTILITY),
    ("SET work_mem = '64MB'", SkipReason.UTILITY),
    ("CREATE TABLE x (a int)", SkipReason.DDL),
    ("ALTER TABLE big ADD COLUMN b int", SkipReason.DDL),
    ("BEGIN", SkipReason.TRANSACTION_CONTROL),
    ("COMMIT", SkipReason.TRANSACTION_CONTROL),
    ("MERGE INTO big USING tiny ON big.a = tiny.a WHEN MATCHED THEN DELETE", SkipReason.UNSUPPORTED),
    ("SELECT now(), $1", SkipReason.FUNCTION_ONLY),
    ("INSERT INTO big (id, a) VALUES ($1, $2 + $3)", SkipReason.WRITE_ONLY),
    ("SELECT * FROM pg_class WHERE relname = $1", SkipReason.CATALOG_ONLY),
    ("SELECT * FROM indexd.snapshots WHERE id = $1", SkipReason.INDEXD_OWN),
    ("SELECT * FROM nowhere WHERE id = $1", SkipReason.NOT_A_KNOWN_TABLE),
    ("SELECT * FROM big WHERE nope = $1", SkipReason.UNKNOWN_COLUMN),
    ("SELECT * FROM remote WHERE id = $1", SkipReason.NOT_INDEXABLE),
    ("SELECT * FROM tiny WHERE a = $1", SkipReason.SMALL_TABLE),
    ("SELECT * FROM big WHERE id = $1", SkipReason.ALREADY_INDEXED),
    ("SELECT count(*) FROM big", SkipReason.NO_INDEXABLE_PREDICATE),
])
def test_each_skip_has_its_named_reason(query: str, reason: SkipReason) -> None:
    result = generate([Statement(query)], CATALOG, IndexingSettings(min_table_rows=1000))
    assert [(s.kind, s.statement_index) for s in result.skipped] == [(reason, 0)], result.skipped


def test_a_user_table_with_no_predicate_beside_a_catalog_is_no_predicate() -> None:
    result = generate([Statement("SELECT * FROM big, pg_class")], CATALOG, IndexingSettings(min_table_rows=1000))
    assert result.skipped[0].kind == SkipReason.NO_INDEXABLE_PREDICATE


def test_statement_and_planner_reasons() -> None:
    assert statement_reason("CreateIndexStmt") == statement_reason("IndexStmt") == SkipReason.DDL
    assert statement_reason("TransactionStmt") == SkipReason.TRANSACTION_CONTROL
    assert statement_reason("CopyStmt") == SkipReason.UTILITY
    assert planner_reason("42501", as_given=False) == SkipReason.PERMISSION
    assert planner_reason("42P01", as_given=False) == SkipReason.NOT_A_KNOWN_TABLE
    assert planner_reason("57014", as_given=False) == SkipReason.TIMEOUT
    assert planner_reason("42883", as_given=True) == SkipReason.INVALID_STATEMENT
    assert planner_reason("42883", as_given=False) == SkipReason.UNCOSTABLE


def test_seen_shapes_are_bounded_and_forget_the_oldest() -> None:
    seen = SeenShapes(limit=3)
    assert [seen.first_time(k) for k in "abcab"] == [True, True, True, False, False]
    assert seen.first_time("d") and len(seen) == 3  # c, the least recently seen, is forgotten
    assert seen.first_time("c")  # forgotten, so new again; a, now the oldest, is forgotten in turn
    assert seen.first_time("a") and not seen.first_time("d")


def test_fingerprint_prefers_the_queryid_and_ignores_whitespace() -> None:
    assert shape_fingerprint("SELECT 1", 42) == "q42"
    assert shape_fingerprint("SELECT  1\n") == shape_fingerprint("SELECT 1")


def test_each_skipped_shape_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    seen = SeenShapes()
    skipped = [Skipped("VACUUM big", "utility statement (VacuumStmt)", SkipReason.UTILITY, 7),
               Skipped("SELECT * FROM tiny WHERE a = $1", "public.tiny has 10 rows", SkipReason.SMALL_TABLE, 8)]
    with caplog.at_level(logging.INFO, logger="indexd.advisor.skips"):
        assert log_new_skips("main", skipped, seen) == 2
        assert log_new_skips("main", skipped, seen) == 0  # the next round: nothing new
        moved = Skipped(skipped[1].query, "the indexes exist already", SkipReason.ALREADY_INDEXED, 8)
        assert log_new_skips("main", [moved], seen) == 1  # the same shape, for another reason
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "main: statement skipped (utility): VACUUM big -- utility statement (VacuumStmt)"
    assert len(messages) == 3 and "(already_indexed)" in messages[2]
