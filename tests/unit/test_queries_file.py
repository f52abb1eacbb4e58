from __future__ import annotations

from pathlib import Path

import pytest

from indexd.workload.queries import QueryFileError, load_queries, read_queries


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_statements_split_by_the_sql_scanner(tmp_path: Path) -> None:
    f = _write(tmp_path / "w.sql", """
-- the orders page
SELECT * FROM orders WHERE note = 'a;b' AND id = 1;
SELECT $$x; y$$ AS body FROM t /* ; */ WHERE a = 2;  -- trailing; comment
SELECT 'it''s; fine' FROM t WHERE "we;ird" = 3
""")
    queries = [s.query for s in load_queries(f)]
    assert queries == [
        "SELECT * FROM orders WHERE note = 'a;b' AND id = 1",
        "SELECT $$x; y$$ AS body FROM t /* ; */ WHERE a = 2",
        "SELECT 'it''s; fine' FROM t WHERE \"we;ird\" = 3",
    ]


def test_calls_comment_weighs_the_next_statement_only(tmp_path: Path) -> None:
    f = _write(tmp_path / "w.sql", """
-- calls: 250
SELECT 1 FROM t WHERE a = 1;
SELECT 2 FROM t WHERE b = 2;
-- hot path
-- CALLS: 7
SELECT 3 FROM t WHERE c = 3;
""")
    assert [s.calls for s in load_queries(f)] == [250, 1, 7]


def test_folder_of_files_in_name_order(tmp_path: Path) -> None:
    _write(tmp_path / "b.sql", "SELECT 2 FROM t WHERE b = 1;")
    _write(tmp_path / "a.sql", "SELECT 1 FROM t WHERE a = 1; SELECT 11 FROM t WHERE a = 2")
    _write(tmp_path / "notes.txt", "not sql at all")
    assert [s.query for s in load_queries(tmp_path)] == [
        "SELECT 1 FROM t WHERE a = 1", "SELECT 11 FROM t WHERE a = 2", "SELECT 2 FROM t WHERE b = 1"]


def test_statement_that_does_not_parse_is_reported_with_file_and_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "w.sql", "SELECT 1 FROM t WHERE a = 1;\n\nSELEC oops FROM t;\nSELECT 2 FROM t;\n")
    loaded = read_queries(f)
    assert [s.query for s in loaded.statements] == ["SELECT 1 FROM t WHERE a = 1", "SELECT 2 FROM t"]
    assert len(loaded.problems) == 1
    assert str(loaded.problems[0]).startswith(
        f"{f}:3: statement 2 'SELEC oops FROM t': does not parse: syntax error at or near \"SELEC\"")


def test_bad_weight_is_reported(tmp_path: Path) -> None:
    f = _write(tmp_path / "w.sql", "-- calls: many\nSELECT 1 FROM t;\nSELECT 2 FROM t;")
    loaded = read_queries(f)
    assert [s.query for s in loaded.statements] == ["SELECT 2 FROM t"]
    assert "w.sql:2: statement 1 'SELECT 1 FROM t': bad weight '-- calls: many'" in str(loaded.problems[0])


def test_missing_empty_and_unusable_inputs(tmp_path: Path) -> None:
    with pytest.raises(QueryFileError, match="does not exist"):
        load_queries(tmp_path / "nope.sql")
    with pytest.raises(QueryFileError, match="no statement in"):
        load_queries(_write(tmp_path / "empty.sql", "-- only a comment\n"))
    with pytest.raises(QueryFileError, match=r":2: cannot split into statements"):
        load_queries(_write(tmp_path / "open.sql", "SELECT 1;\nSELECT 'unterminated"))
    empty_dir = tmp_path / "d"
    empty_dir.mkdir()
    with pytest.raises(QueryFileError, match="no .sql files"):
        load_queries(empty_dir)


def test_a_file_whose_statements_all_fail_to_parse_is_an_empty_workload_naming_each(tmp_path: Path) -> None:
    f = _write(tmp_path / "bad.sql", "this is not sql;\n-- calls: 3\nSELECT FROM WHERE;\nSELECT (1; SELECT 2;")
    loaded = read_queries(f)
    assert loaded.statements == []
    assert [str(p).split(": does not parse: ")[0] for p in loaded.problems] == [
        f"{f}:1: statement 1 'this is not sql'", f"{f}:3: statement 2 'SELECT FROM WHERE'",
        f"{f}:4: statement 3 'SELECT (1; SELECT 2;'"]  # an unclosed parenthesis: the rest is one statement
    assert all("syntax error" in p.error for p in loaded.problems)
