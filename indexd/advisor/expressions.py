# pglast declares every parse-tree field optional; the grammar guarantees the fields read here for the node
# kinds each function checks, so only those optional-value checks are relaxed, for this module alone.
# mypy: disable-error-code="union-attr,index,arg-type"
"""Which expressions an index can hold, what type they yield, and which index class serves an operator on them.

An expression index holds a function of the row: `lower(email)`, `(meta ->> 'external_id')`,
`date_trunc('day', created_at)`, `created_at::date`, `to_tsvector('simple', full_name)`. The advisor proposes one
for an expression of exactly one column built from functions, operators and casts it knows and from constants.
Whether PostgreSQL accepts it (every function IMMUTABLE for the column's type: `date_trunc` on timestamptz is not)
is the server's word: the what-if session probes each expression before it is costed.

Operators that a B-tree cannot serve but another class can:
- GIN jsonb_ops: `@>`, `?`, `?|`, `?&`, `@?`, `@@` on jsonb; jsonb_path_ops serves `@>`, `@?`, `@@` only;
- GIN array_ops: `@>`, `<@`, `&&` on arrays;
- GIN on a tsvector (a column or `to_tsvector(config, column)`): `@@`;
- GIN gin_trgm_ops (pg_trgm): `LIKE`/`ILIKE` with a pattern that is not a plain prefix, `~`, `~*`, `%`.
"""

from __future__ import annotations

import functools
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from indexd.statements.tree import walk

# Functions of one column whose result depends on their arguments only (IMMUTABLE for text and numeric
# arguments, or for the types the probe accepts), so an expression index can hold them.
IMMUTABLE_FUNCTIONS = frozenset({
    "lower", "upper", "btrim", "ltrim", "rtrim", "md5", "abs", "length", "char_length", "left", "right",
    "substr", "substring", "reverse", "initcap", "floor", "ceil", "round", "trunc", "split_part",
})
# Functions immutable for some argument types only (date_trunc of a timestamp, not of a timestamptz), or
# mostly used inside index expressions (to_tsvector with a configuration, AT TIME ZONE, EXTRACT).
TYPE_DEPENDENT_FUNCTIONS = frozenset({
    "date_trunc", "timezone", "to_tsvector", "date_part", "extract", "jsonb_extract_path_text",
    "jsonb_extract_path", "array_length", "cardinality", "unaccent", "to_char",
})
KEY_FUNCTIONS = IMMUTABLE_FUNCTIONS | TYPE_DEPENDENT_FUNCTIONS
# Operators inside an indexable expression (not comparisons): jsonb access, concatenation, arithmetic.
KEY_OPERATORS = frozenset({"->", "->>", "#>", "#>>", "||", "+", "-", "*", "/", "%"})

JSONB_OPS = frozenset({"@>", "?", "?|", "?&", "@?", "@@"})
JSONB_PATH_OPS = frozenset({"@>", "@?", "@@"})
ARRAY_OPS = frozenset({"@>", "<@", "&&"})
TRIGRAM_OPS = frozenset({"~", "~*", "%", "~~", "~~*"})
CLASS_OPERATORS = JSONB_OPS | ARRAY_OPS | TRIGRAM_OPS
COMMUTATORS = {"@>": "<@", "<@": "@>", "&&": "&&", "@@": "@@"}  # value op key -> key op' value
TEXT_TYPES = frozenset({"text", "character varying", "character", "citext", "name"})
_RETURNS = {"->": "jsonb", "#>": "jsonb", "->>": "text", "#>>": "text", "||": "text"}
_FUNCTION_RETURNS = {"to_tsvector": "tsvector", "jsonb_extract_path": "jsonb", "jsonb_extract_path_text": "text",
                     "md5": "text", "unaccent": "text", "to_char": "text"}


def base_type(type_text: str) -> str:
    """A format_type() text without its modifiers: "character varying(80)" -> "character varying"."""
    head, _, rest = type_text.partition("(")
    return head.strip() + ("[]" if rest.endswith("[]") else "")


def _function_name(node: ast.FuncCall) -> str | None:
    names = [n.sval for n in node.funcname]
    if len(names) > 1 and names[0] != "pg_catalog":
        return None
    return str(names[-1])


def _holdable(node: Any, refs: list[Any]) -> bool:
    """Whether an index could hold this (sub)expression; the column references found are appended to refs."""
    if isinstance(node, ast.ColumnRef):
        refs.append(node)
        return all(isinstance(f, ast.String) for f in node.fields)
    if isinstance(node, ast.A_Const):
        return True
    if isinstance(node, ast.TypeCast):
        return _holdable(node.arg, refs)
    if isinstance(node, ast.CoalesceExpr):
        return all(_holdable(a, refs) for a in node.args)
    if isinstance(node, ast.FuncCall):
        if node.over is not None or node.agg_star or node.agg_distinct or node.agg_filter or node.agg_order:
            return False
        return _function_name(node) in KEY_FUNCTIONS and all(_holdable(a, refs) for a in node.args or ())
    if isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP:
        if node.name[-1].sval not in KEY_OPERATORS:
            return False
        return all(side is None or _holdable(side, refs) for side in (node.lexpr, node.rexpr))
    return False


def expression_column(node: Any) -> Any:
    """The one ColumnRef an indexable expression (not a bare column) reads; None when it is no such expression."""
    if isinstance(node, ast.ColumnRef):
        return None
    refs: list[Any] = []
    if not _holdable(node, refs) or not refs:
        return None
    names = {tuple(f.sval for f in r.fields) for r in refs}
    return refs[0] if len(names) == 1 else None


def expression_type(node: Any, column_type: str | None) -> str | None:
    """The type an expression yields, when it is evident from the expression alone (else None)."""
    if isinstance(node, ast.ColumnRef):
        return base_type(column_type) if column_type else None
    if isinstance(node, ast.TypeCast):
        return " ".join(n.sval for n in node.typeName.names if n.sval != "pg_catalog") + (
            "[]" if node.typeName.arrayBounds else "")
    if isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP:
        return _RETURNS.get(node.name[-1].sval)
    if isinstance(node, ast.FuncCall):
        name = _function_name(node)
        if name in _FUNCTION_RETURNS:
            return _FUNCTION_RETURNS[name]
        if name in IMMUTABLE_FUNCTIONS - {"abs", "floor", "ceil", "round", "trunc", "length", "char_length"}:
            return "text"
    if isinstance(node, ast.CoalesceExpr):
        return expression_type(node.args[0], column_type)
    return None


def text_search_key(node: Any) -> bool:
    """`to_tsvector(config, x)` with a constant configuration: the only immutable form (one argument is not)."""
    if not isinstance(node, ast.FuncCall) or _function_name(node) != "to_tsvector":
        return True  # not a to_tsvector call: nothing to check here
    args = list(node.args or ())
    return len(args) == 2 and isinstance(args[0], (ast.A_Const, ast.TypeCast))


def gin_family(key_type: str | None, operator: str) -> str | None:
    """The GIN operator family serving `key operator value` for a key of this type (None: no GIN class)."""
    if key_type is None:
        return None
    if key_type == "jsonb" and operator in JSONB_OPS:
        return "jsonb"
    if key_type.endswith("[]") and operator in ARRAY_OPS:
        return "array"
    if key_type == "tsvector" and operator == "@@":
        return "tsvector"
    if key_type in TEXT_TYPES and operator in TRIGRAM_OPS:
        return "trigram"
    return None


_IMPLIED_CASTS = frozenset({"text", "regconfig", "jsonpath"})  # what pg_get_indexdef adds to a literal


@functools.lru_cache(maxsize=4096)
def canonical(expression: str) -> str:
    """An index key expression in one spelling, so the advisor's text and pg_get_indexdef's compare equal:
    `(meta ->> 'external_id'::text)` and `meta ->> 'external_id'` are the same key."""
    try:
        node = parse_sql(f"SELECT {expression}")[0].stmt.targetList[0].val
    except (ParseError, AttributeError, IndexError, TypeError):
        return " ".join(expression.split())
    for sub in walk(node):
        for name in sub if isinstance(sub, ast.Node) else ():
            child = getattr(sub, name)
            if isinstance(child, tuple):
                setattr(sub, name, tuple(_uncast(c) for c in child))
            else:
                setattr(sub, name, _uncast(child))
    return str(RawStream()(_uncast(node)))


def _uncast(node: Any) -> Any:
    if (isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.A_Const)
            and node.typeName.names[-1].sval in _IMPLIED_CASTS):
        return node.arg
    return node
