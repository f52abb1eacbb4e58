"""Normalized text made preparable: typed literals, EXTRACT's field, LIMIT pins, parameter types from context."""

from __future__ import annotations

import pytest
from pglast import parse_sql

from indexd.advisor.costable import Plannable, attempts, parameter_count, pin_limits, rewrite
from indexd.advisor.model import Catalog, Column, Table
from indexd.advisor.paramtypes import ParamTypes, Signature, operand_types

CATALOG = Catalog(tables={
    "public.h": Table("public", "h", "r", 1000, 10, (
        Column("tid", "integer"), Column("aid", "bigint"), Column("mtime", "timestamp without time zone"),
        Column("day", "date"), Column("price", "numeric(7,2)"), Column("note", "text"))),
    "public.o": Table("public", "o", "r", 1000, 10, (Column("tid", "integer"), Column("qty", "smallint"))),
})
SIGNATURES = {
    ("make_interval",): [Signature(("integer",) * 6 + ("double precision",),
                                   ("years", "months", "weeks", "days", "hours", "mins", "secs"), 7,
                                   returns="interval")],
    ("now",): [Signature((), returns="timestamp with time zone")],
    ("sum",): [Signature((t,), returns=t) for t in ("integer", "bigint", "numeric", "interval")],
    ("concat",): [Signature(('"any"',), variadic='"any"', returns="text")],
    ("substring",): [Signature(("text", "integer", "integer"), returns="text"),
                     Signature(("text", "text", "text"), returns="text")],
    ("pg_catalog", "extract"): [Signature(("text", t), returns="numeric") for t in ("date", "timestamp")],
}


def signatures(name: tuple[str, ...]) -> list[Signature]:
    return SIGNATURES.get(name, [])


@pytest.mark.parametrize(("query", "expected"), [
    ("SELECT * FROM h WHERE tid = $1 AND mtime >= now() - interval $2",
     "SELECT * FROM h WHERE tid = $1 AND mtime >= now() - ($2::interval)"),
    ("SELECT * FROM h WHERE mtime > date $1 + interval $2 month",
     "SELECT * FROM h WHERE mtime > ($1::date) + ($2::interval month)"),
    ("SELECT interval $1 day to second(3), timestamp(3) with time zone $2, numeric $3, int4 $4, varchar(5) $5",
     "SELECT ($1::interval day to second(3)), ($2::timestamp(3) with time zone), ($3::numeric), ($4::int4), "
     "($5::varchar(5))"),
    ("SELECT extract($1 FROM mtime) FROM h", "SELECT pg_catalog.extract($1 , mtime) FROM h"),
    ("SELECT CAST($1 AS date), $2::interval, 'interval $3' FROM h -- date $4",
     "SELECT CAST($1 AS date), $2::interval, 'interval $3' FROM h -- date $4"),
    ('SELECT "interval" FROM h WHERE note = $1', 'SELECT "interval" FROM h WHERE note = $1'),
    ("SELECT tid FROM h ORDER BY mtime LIMIT $1 OFFSET $2",
     "SELECT tid FROM h ORDER BY mtime LIMIT COALESCE(100, $1::bigint) OFFSET COALESCE(0, $2::bigint)"),
    ("SELECT 1 FROM h WHERE mtime > timestamp '2024-01-01'", "SELECT 1 FROM h WHERE mtime > timestamp '2024-01-01'"),
    ("SELECT tid FROM h ORDER BY tid FETCH FIRST $1 ROWS ONLY",
     "SELECT tid FROM h ORDER BY tid FETCH FIRST COALESCE(100, $1::bigint) ROWS ONLY"),
])
def test_rewrite_touches_only_what_the_grammar_refuses(query: str, expected: str) -> None:
    assert rewrite(query) == expected
    parse_sql(rewrite(query))  # still one valid statement


def test_parameter_count_and_pins() -> None:
    assert parameter_count("SELECT $1, '$9', $12 -- $20") == 12
    assert pin_limits("SELECT 1 LIMIT 5") == "SELECT 1 LIMIT 5"


def _types(query: str) -> ParamTypes:
    return ParamTypes(parse_sql(query), CATALOG, signatures)


def test_context_types_from_columns_through_arithmetic() -> None:
    typer = _types("SELECT * FROM h WHERE aid BETWEEN $1 AND $2 + $3 AND tid IN ($4, $5 * $6)")
    assert typer.context == {1: "bigint", 2: "bigint", 3: "bigint", 4: "integer", 5: "integer", 6: "integer"}


def test_context_types_through_aliases_and_qualified_columns() -> None:
    typer = _types("SELECT * FROM h x JOIN o ON o.tid = x.tid WHERE x.price > $1 - $2 AND o.qty = $3 + $4")
    assert typer.context == {1: "numeric(7,2)", 2: "numeric(7,2)", 3: "smallint", 4: "smallint"}
    assert _types("SELECT * FROM h, o WHERE tid = $1 + $2").context == {1: "integer", 2: "integer"}
    assert _types("SELECT * FROM h, o WHERE qty < $1 + $2").context == {1: "smallint", 2: "smallint"}


def test_datetime_arithmetic_gets_intervals() -> None:
    assert _types("SELECT * FROM h WHERE mtime >= now() - $1").context == {1: "interval"}
    assert _types("SELECT * FROM h WHERE mtime >= $1 - $2").context == {
        1: "timestamp without time zone", 2: "interval"}
    assert _types("SELECT * FROM h WHERE day = $1 + $2").context == {1: "date", 2: "integer"}
    assert _types("SELECT * FROM h WHERE mtime > $1::timestamp - $2").context == {
        1: "timestamp", 2: "interval"}
    assert operand_types("*", None, "interval", None) == ("interval", "double precision")


def test_function_arguments_by_name_position_and_role() -> None:
    assert _types("SELECT make_interval(days => $1 - $2)").context == {1: "integer", 2: "integer"}
    typer = _types("SELECT sum(CASE WHEN tid > $1 THEN $2 ELSE $3 END), concat($4, note), "
                   "substring(note, $5, $6) FROM h")
    assert typer.context == {1: "integer"}
    assert typer.role == {2: "numeric", 3: "numeric", 5: "integer", 6: "integer", 4: "text"}
    assert _types("SELECT pg_catalog.extract($1, mtime) FROM h").context == {1: "text"}


def test_update_and_insert_values_take_their_columns_types() -> None:
    assert _types("UPDATE h SET aid = $1 + $2 WHERE tid = $3").context == {1: "bigint", 2: "bigint", 3: "integer"}
    assert _types("INSERT INTO h (tid, mtime) VALUES ($1 + $2, now() - $3)").context == {
        1: "integer", 2: "integer", 3: "interval"}


def test_case_any_coalesce_and_casts() -> None:
    typer = _types("SELECT CASE tid WHEN $1 THEN $2 END, coalesce(price, $3 + $4) FROM h "
                   "WHERE aid = ANY($5) AND ($6 + $7)::int > 0")
    assert typer.context == {1: "integer", 3: "numeric(7,2)", 4: "numeric(7,2)", 5: "bigint[]", 6: "integer",
                             7: "integer"}


def test_attempts_go_from_inferred_to_typed() -> None:
    forms = list(attempts("SELECT * FROM h WHERE aid BETWEEN $1 AND $2 + $3 AND note = $4", CATALOG, signatures))
    assert forms[0] == Plannable("SELECT * FROM h WHERE aid BETWEEN $1 AND $2 + $3 AND note = $4", 4)
    assert forms[1].types == ("bigint", "bigint", "bigint", "text")
    assert len(forms) == 2  # no parameter is left to a role
    roles = list(attempts("SELECT sum(CASE WHEN tid > $1 THEN $2 END) FROM h", CATALOG, signatures))
    assert [f.types for f in roles] == [None, ("integer", "unknown"), ("integer", "numeric")]


def test_a_parameter_the_text_does_not_use_is_declared_text() -> None:
    forms = list(attempts("SELECT $2 + 1 FROM h WHERE tid = $3", CATALOG, signatures))
    assert forms[1].types == ("text", "integer", "integer")


def test_statements_without_parameters_have_one_form() -> None:
    assert list(attempts("SELECT 1 FROM h", CATALOG, signatures)) == [Plannable("SELECT 1 FROM h", 0)]
