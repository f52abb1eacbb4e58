# pglast declares every parse-tree field optional; the grammar guarantees the fields read here for the node
# kinds each function checks, so only those optional-value checks are relaxed, for this module alone.
# mypy: disable-error-code="union-attr,arg-type,index"
"""Index definitions as comparable shapes, and when an index makes another one redundant.

A definition (a CREATE INDEX statement, or what pg_get_indexdef() prints) is read with PostgreSQL's own grammar
(pglast) into an `IndexShape`: access method, keys (a column or a normalised expression, with operator class,
collation and order), INCLUDE columns, and the predicate as a set of normalised conjuncts. Normalising removes
what pg_get_indexdef adds and a written definition leaves out: parentheses, casts of constants (`'x'::text`),
column qualification and the pg_catalog schema of functions.

`covers(existing, wanted)` is the one redundancy rule, used by the advisor before it recommends an index and by
apply right before it builds one.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from indexd.statements.tree import walk


@dataclass(frozen=True)
class KeyShape:
    """One key of an index: a column name or a normalised expression, as the index orders it."""

    text: str
    opclass: str | None = None
    collation: str | None = None
    descending: bool = False
    nulls_first: bool = False  # PostgreSQL's default: NULLS LAST ascending, NULLS FIRST descending
    expression: bool = False  # `text` is an expression, not a column name

    def flipped(self) -> KeyShape:
        """The same key scanned backwards (a B-tree serves both directions of its whole key order)."""
        return KeyShape(self.text, self.opclass, self.collation, not self.descending, not self.nulls_first,
                        self.expression)


@dataclass(frozen=True)
class IndexShape:
    schema: str | None
    table: str
    method: str
    keys: tuple[KeyShape, ...]
    include: frozenset[str] = frozenset()
    predicate: frozenset[str] = frozenset()  # normalised conjuncts; empty: the index holds every row

    def columns(self) -> frozenset[str]:
        """Every column the index stores as a plain key or INCLUDE column."""
        return frozenset(k.text for k in self.keys) | self.include


class NotAnIndex(ValueError):
    """The text is not one CREATE INDEX statement."""


# ---- normalising ------------------------------------------------------------------------------------------
def _deparse(node: Any) -> str:
    return str(RawStream()(node))


_TEXT_TYPES = frozenset({"text", "varchar", "bpchar"})


def _uncast(node: Any) -> Any:
    """A constant without its cast, a text column without the relabelling pg_get_indexdef shows (`(c)::text`)."""
    if not isinstance(node, ast.TypeCast):
        return node
    if isinstance(node.arg, ast.A_Const):
        return node.arg
    type_name = node.typeName.names[-1].sval if node.typeName and node.typeName.names else ""
    return node.arg if isinstance(node.arg, ast.ColumnRef) and type_name in _TEXT_TYPES else node


def _normalised(node: Any) -> Any:
    """A copy without what does not change meaning: casts of constants, text relabelling of columns,
    qualification of columns, the pg_catalog schema of functions."""
    node = _uncast(copy.deepcopy(node))
    for sub in walk(node):
        for name in sub if isinstance(sub, ast.Node) else ():
            value = getattr(sub, name)
            if isinstance(value, ast.TypeCast):
                setattr(sub, name, _uncast(value))
            elif isinstance(value, tuple) and any(isinstance(v, ast.TypeCast) for v in value):
                setattr(sub, name, tuple(_uncast(v) for v in value))
        if isinstance(sub, ast.ColumnRef) and len(sub.fields) > 1 and isinstance(sub.fields[-1], ast.String):
            sub.fields = (sub.fields[-1],)
        if isinstance(sub, ast.FuncCall) and len(sub.funcname) == 2 and sub.funcname[0].sval == "pg_catalog":
            sub.funcname = (sub.funcname[1],)
    return node


def _expression(node: Any) -> str:
    node = _normalised(node)
    if isinstance(node, ast.ColumnRef) and isinstance(node.fields[-1], ast.String):
        return str(node.fields[-1].sval)
    return _deparse(node)


def _conjuncts(node: Any) -> frozenset[str]:
    if node is None:
        return frozenset()
    if isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        return frozenset().union(*(_conjuncts(arg) for arg in node.args))
    return frozenset({_deparse(_normalised(node))})


@functools.lru_cache(maxsize=4096)
def expression_text(expression: str) -> str:
    """An index expression such as `lower(email)` or `(lower((email)::text))` in its normalised form."""
    return _expression(_parse_expression(expression))


@functools.lru_cache(maxsize=4096)
def predicate_conjuncts(predicate: str | None) -> frozenset[str]:
    """A partial-index predicate as its set of normalised conjuncts (empty for None)."""
    return frozenset() if not predicate else _conjuncts(_parse_expression(predicate))


def _parse_expression(text: str) -> Any:
    try:
        stmt = parse_sql(f"SELECT {text}")[0].stmt
    except ParseError as exc:
        raise NotAnIndex(f"not an expression: {text}") from exc
    return stmt.targetList[0].val


def key_shape(element: Any) -> KeyShape:
    """The shape of one pglast IndexElem."""
    text = element.name if element.name is not None else _expression(element.expr)
    is_expression = element.name is None and not (
        isinstance(element.expr, ast.ColumnRef) and isinstance(element.expr.fields[-1], ast.String))
    desc = element.ordering == enums.SortByDir.SORTBY_DESC
    nulls, kinds = element.nulls_ordering, enums.SortByNulls
    nulls_first = desc if nulls == kinds.SORTBY_NULLS_DEFAULT else nulls == kinds.SORTBY_NULLS_FIRST
    opclass = element.opclass[-1].sval if element.opclass else None
    collation = element.collation[-1].sval if element.collation else None
    return KeyShape(text, opclass, collation, desc, nulls_first, is_expression)


@functools.lru_cache(maxsize=4096)
def parse_index(definition: str) -> IndexShape:
    """The shape of one CREATE INDEX statement (NotAnIndex when the text is anything else)."""
    try:
        stmts = parse_sql(definition)
    except ParseError as exc:
        raise NotAnIndex(f"does not parse: {exc}") from exc
    stmt = stmts[0].stmt if len(stmts) == 1 else None
    if not isinstance(stmt, ast.IndexStmt):
        raise NotAnIndex(f"not one CREATE INDEX statement: {definition}")
    return IndexShape(
        schema=stmt.relation.schemaname, table=stmt.relation.relname, method=(stmt.accessMethod or "btree").lower(),
        keys=tuple(key_shape(e) for e in stmt.indexParams),
        include=frozenset(e.name for e in stmt.indexIncludingParams or () if e.name),
        predicate=_conjuncts(stmt.whereClause),
    )


@functools.lru_cache(maxsize=4096)
def referenced_columns(expression: str) -> frozenset[str]:
    """The column names an expression or predicate reads."""
    return frozenset(str(n.fields[-1].sval) for n in walk(_parse_expression(expression))
                     if isinstance(n, ast.ColumnRef) and isinstance(n.fields[-1], ast.String))


def stored_columns(shape: IndexShape) -> frozenset[str]:
    """Every column an index stores or reads: plain keys, the columns of expressions and of the predicate,
    INCLUDE columns. An UPDATE that sets any of them cannot be HOT."""
    found = set(shape.include)
    for key in shape.keys:
        found |= referenced_columns(key.text) if key.expression else {key.text}
    for conjunct in shape.predicate:
        found |= referenced_columns(conjunct)
    return frozenset(found)


# ---- the rule ---------------------------------------------------------------------------------------------
def covers(existing: IndexShape, wanted: IndexShape) -> bool:
    """Whether `existing` serves every lookup, order and index-only read that `wanted` would as well, so
    `wanted` is redundant: the same method; `wanted`'s keys are a prefix of `existing`'s (for a B-tree also the
    whole prefix in reverse order, which a backward scan reads); the same predicate; and every INCLUDE column
    of `wanted` is stored in `existing`. Other methods than B-tree need the same keys exactly. The tables are
    the caller's to match.

    The same predicate, not a weaker one: an index holding more rows serves a partial index's statements only
    by reading its rows among all the others. For a queue's index on its time column holding the 1 % of rows
    of one state, the same index on every row walks about a hundred entries, each with its heap row, for every
    one the partial index returns: they are different indexes (a DBA builds both when both reads are there)."""
    if existing.method != wanted.method or not wanted.keys:
        return False
    n = len(wanted.keys)
    prefix = existing.keys[:n]
    if existing.method == "btree":
        same_keys = len(existing.keys) >= n and (
            prefix == wanted.keys or prefix == tuple(k.flipped() for k in wanted.keys))
    else:
        same_keys = existing.keys == wanted.keys
    return same_keys and existing.predicate == wanted.predicate and wanted.include <= existing.columns()


def describe(shape: IndexShape) -> str:
    """`(a, lower(b) DESC) INCLUDE (c) WHERE ...` for messages."""
    keys = ", ".join(k.text + (" DESC" if k.descending else "") for k in shape.keys)
    text = f"({keys})" if shape.method == "btree" else f"USING {shape.method} ({keys})"
    if shape.include:
        text += f" INCLUDE ({', '.join(sorted(shape.include))})"
    if shape.predicate:
        text += " WHERE " + " AND ".join(sorted(shape.predicate))
    return text
