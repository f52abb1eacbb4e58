from __future__ import annotations

from pathlib import Path

import pytest

from indexd.workload import queries
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
    _write(tmp_path / "a.sql", "SELECT 1 FROM t WHERE a = 1; SELECT 11 FROM t WHERE c = 2")
    _write(tmp_path / "notes.txt", "not sql at all")
    assert [s.query for s in load_queries(tmp_path)] == [
        "SELECT 1 FROM t WHERE a = 1", "SELECT 11 FROM t WHERE c = 2", "SELECT 2 FROM t WHERE b = 1"]


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


def test_statements_of_one_shape_are_merged_with_their_weights_summed(tmp_path: Path) -> None:
    _write(tmp_path / "a.sql", "-- calls: 5\nSELECT * FROM t WHERE a = 1;\nSELECT * FROM t WHERE b = 'x';\n"
                               "select *\n  from t where a = 2;\n")
    _write(tmp_path / "b.sql", "-- calls: 10\nSELECT * FROM t WHERE a = $1;\nSELECT * FROM t WHERE b = 'y';")
    loaded = read_queries(tmp_path)
    assert [(s.query, s.calls) for s in loaded.statements] == [
        ("SELECT * FROM t WHERE a = 1", 16), ("SELECT * FROM t WHERE b = 'x'", 2)]
    assert loaded.read == 5


TRICKY = """-- calls: 3
SELECT * FROM orders WHERE note = 'a;b' AND id = 1;
SELECT $$x; y$$ AS body FROM t /* ; */ WHERE a = 2;  -- trailing; comment
/* a block
   comment; */ SELECT 'it''s; fine' FROM t WHERE "we;ird" = 3;;
-- calls: 4
SELECT * FROM orders WHERE note = 'c' AND id = 9;
SELECT $fn$ long; body $fn$ FROM t WHERE z = 1;

SELEC oops FROM t;
-- calls: 2
SELECT 1 FROM t WHERE y = 1
"""


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64])
def test_reading_in_pieces_finds_what_reading_whole_does(tmp_path: Path, piece: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "w.sql", TRICKY)
    whole = read_queries(path)
    monkeypatch.setattr(queries, "_PIECE", piece)
    pieces = read_queries(path)
    assert pieces == whole
    assert [(s.query, s.calls) for s in whole.statements] == [
        ("SELECT * FROM orders WHERE note = 'a;b' AND id = 1", 7),
        ("SELECT $$x; y$$ AS body FROM t /* ; */ WHERE a = 2", 1),
        ("SELECT 'it''s; fine' FROM t WHERE \"we;ird\" = 3", 1),
        ("SELECT $fn$ long; body $fn$ FROM t WHERE z = 1", 1),
        ("SELECT 1 FROM t WHERE y = 1", 2)]
    assert [str(p) for p in whole.problems] == [
        f"{path}:10: statement 6 'SELEC oops FROM t': does not parse: syntax error at or near \"SELEC\""]


def test_an_unterminated_string_is_found_when_read_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setattr(queries, "_PIECE", 5)
    with pytest.raises(QueryFileError, match=r"open\.sql:3: cannot split into statements: unterminated"):
        load_queries(_write(tmp_path / "open.sql", "SELECT 1;\nSELECT 2;\nSELECT 'unterminated\n;\n"))


def test_input_above_the_limit_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.sql", "SELECT * FROM t WHERE a = 1;\n" * 100)
    assert len(read_queries(path, max_bytes=2900).statements) == 1
    with pytest.raises(QueryFileError, match=r"holds 2900 bytes .* indexing\.queries_max_bytes \(2899\)"):
        read_queries(path, max_bytes=2899)
    _write(tmp_path / "more.sql", "SELECT 1;\n")
    with pytest.raises(QueryFileError, match="holds 2910 bytes"):
        read_queries(tmp_path, max_bytes=2900)  # a folder counts all its files together


def test_a_file_whose_statements_all_fail_to_parse_is_an_empty_workload_naming_each(tmp_path: Path) -> None:
    f = _write(tmp_path / "bad.sql", "this is not sql;\n-- calls: 3\nSELECT FROM WHERE;\nSELECT (1; SELECT 2;")
    loaded = read_queries(f)
    assert loaded.statements == []
    assert [str(p).split(": does not parse: ")[0] for p in loaded.problems] == [
        f"{f}:1: statement 1 'this is not sql'", f"{f}:3: statement 2 'SELECT FROM WHERE'",
        f"{f}:4: statement 3 'SELECT (1; SELECT 2;'"]  # an unclosed parenthesis: the rest is one statement
    assert all("syntax error" in p.error for p in loaded.problems)


@pytest.mark.parametrize("piece", [1, 4, 64])
def test_an_unclosed_parenthesis_read_in_pieces_leaves_the_rest_as_one_statement(
        tmp_path: Path, piece: int, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "SELECT 1 FROM t;\nSELECT 2 FROM t;\n-- calls: 2\nSELECT (1;\nSELECT 3 FROM t;\n"
    f = _write(tmp_path / "paren.sql", text)
    whole = read_queries(f)
    monkeypatch.setattr(queries, "_PIECE", piece)
    assert read_queries(f) == whole
    assert [s.query for s in whole.statements] == ["SELECT 1 FROM t"]  # merged with SELECT 2: one shape
    assert [str(p).split(": does not parse: ")[0] for p in whole.problems] == [f"{f}:4: statement 3 'SELECT (1;'"]
