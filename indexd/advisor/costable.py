# pglast declares every parse-tree field optional; the grammar guarantees the fields read here for the node
# kinds each function checks, so only those optional-value checks are relaxed, for this module alone.
# mypy: disable-error-code="union-attr,index,operator"
"""Normalized statements made plannable: what pg_stat_statements stores, as a PREPARE PostgreSQL accepts.

pg_stat_statements replaces every constant by $n, also where the grammar takes no parameter, and the constant's
type leaves with it. PostgreSQL 15 has no EXPLAIN (GENERIC_PLAN), so a statement with $n is costed as the generic
plan of a prepared statement (see `whatif`), and must first be prepared. The method:

1. `rewrite()` edits the text where the grammar needs it, at tokens located by PostgreSQL's own parser and
   scanner (pglast), so strings, comments and quoted identifiers are never touched:
   - typed literals `interval $2`, `date $1`, `timestamp(3) with time zone $4`, `interval $3 day`, any
     `typename $n` -> `($n::typename)`;
   - `EXTRACT($1 FROM x)` (the field keyword became $1) -> `pg_catalog.extract($1, x)`, the function it stands for;
   - `LIMIT $n`, `FETCH FIRST $n`, `OFFSET $n` -> a typical value the planner can see (see `pin_limits`).
2. PREPARE without parameter types: PostgreSQL infers each from its context, as it does for the application.
3. If it cannot (42725 ambiguous operator or function, 42P18 indeterminate type, 42804 datatype mismatch, 42883
   no such operator or function: `$2 + $3`, `make_interval(days => $3 - $4)`, `sum(CASE ... THEN $1 ...)`),
   PREPARE again with the types the statement's context gives (`paramtypes.ParamTypes.context`); parameters it
   gives no type are declared `unknown`, which leaves them to PostgreSQL's inference as in step 2.
4. If that fails too, the parameters still untyped get the type of their role (`ParamTypes.role`: numeric in
   arithmetic and in numeric function arguments, text for || and functions of any type), for one last PREPARE.
A parameter the text does not use (EXTRACT's field was one) is declared text.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pglast import ast, enums
from pglast.parser import ParseError, parse_sql, scan

from indexd.advisor.model import Catalog
from indexd.advisor.paramtypes import ParamTypes, Signatures
from indexd.statements.tree import walk

TYPICAL_LIMIT = 100  # rows a parameterised LIMIT is costed with
# SQLSTATEs after which other parameter types are worth a try
RETRY_SQLSTATES = frozenset({"42725", "42P18", "42804", "42883"})
_INTERVAL_FIELDS = frozenset({"YEAR_P", "MONTH_P", "DAY_P", "HOUR_P", "MINUTE_P", "SECOND_P", "TO"})


@dataclass(frozen=True)
class Plannable:
    """A statement as it is prepared: the text and, when chosen, the parameters' types."""

    text: str
    params: int  # the highest $n
    types: tuple[str, ...] | None = None  # None: PostgreSQL infers every type


@functools.lru_cache(maxsize=16384)
def parameter_count(query: str) -> int:
    """The highest $n of a statement (0 when it has none); literals and comments are ignored."""
    highest = 0
    for token in scan(query):
        if token.name == "PARAM":
            highest = max(highest, int(query[token.start + 1 : token.end + 1]))
    return highest


def _edit(query: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply (start, end exclusive, replacement) edits that do not overlap."""
    for start, end, text in sorted(edits, reverse=True):
        query = query[:start] + text + query[end:]
    return query


@functools.lru_cache(maxsize=16384)
def pin_limits(query: str) -> str:
    """`LIMIT $n` / `FETCH FIRST $n` / `OFFSET $n` with typical values the planner can see.

    A generic plan reads an unknown LIMIT as 10 % of the rows, which hides what an index in ORDER BY order is
    worth to a top-N query. COALESCE(constant, $n) is folded to the constant at planning time, while $n still
    appears, so PREPARE infers the same parameter types.
    """
    tokens = list(scan(query))
    edits: list[tuple[int, int, str]] = []
    for at, token in enumerate(tokens[1:], start=1):
        before = tokens[at - 1].name
        fetch = before in ("FIRST_P", "NEXT") and at > 1 and tokens[at - 2].name == "FETCH"
        if token.name == "PARAM" and (before in ("LIMIT", "OFFSET") or fetch):
            value = 0 if before == "OFFSET" else TYPICAL_LIMIT
            param = query[token.start : token.end + 1]
            edits.append((token.start, token.end + 1, f"COALESCE({value}, {param}::bigint)"))
    return _edit(query, edits)


def _typed_literal(query: str, node: ast.TypeCast, tokens: list[Any]) -> tuple[int, int, str] | None:
    """`typename $n` (with an interval's fields after it) -> `($n::typename fields)`."""
    arg, type_start = node.arg, node.typeName.location
    if not isinstance(arg, ast.ParamRef) or type_start is None or type_start < 0 or type_start >= arg.location:
        return None
    at = next((i for i, t in enumerate(tokens) if t.start == arg.location and t.name == "PARAM"), None)
    if at is None:
        return None
    param = tokens[at]
    end = param.end + 1
    fields = ""
    if node.typeName.names[-1].sval == "interval":
        i = at + 1
        while i < len(tokens) and tokens[i].name in _INTERVAL_FIELDS:
            i += 1
            if tokens[i - 1].name == "SECOND_P" and i + 2 < len(tokens) and tokens[i].name == "ASCII_40":
                i += 3  # SECOND(p)
        if i > at + 1:
            end = tokens[i - 1].end + 1
            fields = " " + query[param.end + 1 : end].strip()
    type_text = query[type_start : param.start].strip()
    return type_start, end, f"({query[param.start : param.end + 1]}::{type_text}{fields})"


def _extract_field(node: ast.FuncCall, tokens: list[Any]) -> list[tuple[int, int, str]]:
    """`EXTRACT($1 FROM x)` -> `pg_catalog.extract($1, x)`: the SQL syntax takes no parameter for the field."""
    names = tuple(n.sval for n in node.funcname)
    if (names != ("pg_catalog", "extract") or node.funcformat != enums.CoercionForm.COERCE_SQL_SYNTAX
            or not node.args or not isinstance(node.args[0], ast.ParamRef)):
        return []
    at = next((i for i, t in enumerate(tokens) if t.start == node.args[0].location and t.name == "PARAM"), None)
    keyword = next((t for t in tokens if t.start == node.location), None)
    if at is None or keyword is None or at + 1 >= len(tokens) or tokens[at + 1].name != "FROM":
        return []
    after = tokens[at + 1]
    return [(keyword.start, keyword.end + 1, "pg_catalog.extract"), (after.start, after.end + 1, ",")]


@functools.lru_cache(maxsize=16384)
def rewrite(query: str) -> str:
    """The statement with every construct the grammar refuses a parameter in rewritten (see the module's doc)."""
    if parameter_count(query) == 0:
        return query
    try:
        tree = parse_sql(query)
    except ParseError:
        return pin_limits(query)
    tokens = list(scan(query))
    edits: list[tuple[int, int, str]] = []
    for node in walk(tree):
        if isinstance(node, ast.TypeCast):
            found = _typed_literal(query, node, tokens)
            edits += [found] if found else []
        elif isinstance(node, ast.FuncCall):
            edits += _extract_field(node, tokens)
    return pin_limits(_edit(query, edits))


def attempts(query: str, catalog: Catalog, signatures: Signatures) -> Iterator[Plannable]:
    """The forms to PREPARE a statement in, best first; the caller stops at the first PostgreSQL accepts."""
    text = rewrite(query)
    params = parameter_count(text)
    yield Plannable(text, params)
    if params == 0:
        return
    try:
        tree = parse_sql(text)
    except ParseError:
        return
    typer = ParamTypes(tree, catalog, signatures)
    used = {n.number for n in walk(tree) if isinstance(n, ast.ParamRef)}
    by_context = tuple(typer.context.get(n) or ("unknown" if n in used else "text") for n in range(1, params + 1))
    yield Plannable(text, params, by_context)
    by_role = tuple(typer.context.get(n) or typer.role.get(n) or ("unknown" if n in used else "text")
                    for n in range(1, params + 1))
    if by_role != by_context:
        yield Plannable(text, params, by_role)
