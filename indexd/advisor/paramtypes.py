# pglast declares every parse-tree field optional; the grammar guarantees the fields read here for the node
# kinds each function checks, so only those optional-value checks are relaxed, for this module alone.
# mypy: disable-error-code="union-attr,index,arg-type,operator,misc"
"""The types of a normalized statement's parameters, read from their context when PostgreSQL cannot infer them.

`$2 + $3` is `unknown + unknown` to PostgreSQL: ambiguous. The context knows better: in `aid BETWEEN $1 AND
$2 + $3` the sum is compared with aid, so both operands take aid's type. `ParamTypes` walks the parse tree once
and finds, for each parameter:

- its type from the context (`context`): the other operand's type (a column, through the statement's relations
  and aliases in the catalog; a cast; a constant; a function whose candidates agree on their result), a cast's
  type, the type every candidate of a function agrees on for that argument (pg_proc, by position or name), an
  UPDATE's or INSERT's target column; carried through arithmetic by the operand rules of the expected type
  (numeric op numeric, timestamp +/- interval, date +/- integer, interval * double precision);
- its type by role (`role`), for the rest: an operand of arithmetic is numeric; an argument of a function takes
  the numeric type its numeric candidates agree on (numeric when they do not), or text when the function takes
  any type ("any", as concat does); an operand of || is text. Parameters with no role are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pglast import ast, enums

from indexd.advisor.model import Catalog, Table
from indexd.advisor.predicates import deparse
from indexd.statements.tree import children, walk

NUMERIC = frozenset({"smallint", "integer", "bigint", "numeric", "real", "double precision"})
TEXT = frozenset({"text", "character varying", "character", "name"})
_DATETIME = frozenset({"timestamp without time zone", "timestamp with time zone", "time without time zone",
                       "time with time zone"})
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^"})
_SVF = enums.SQLValueFunctionOp
_VALUE_FUNCTIONS = {
    _SVF.SVFOP_CURRENT_DATE: "date",
    _SVF.SVFOP_CURRENT_TIME: "time with time zone", _SVF.SVFOP_CURRENT_TIME_N: "time with time zone",
    _SVF.SVFOP_CURRENT_TIMESTAMP: "timestamp with time zone",
    _SVF.SVFOP_CURRENT_TIMESTAMP_N: "timestamp with time zone",
    _SVF.SVFOP_LOCALTIME: "time without time zone", _SVF.SVFOP_LOCALTIME_N: "time without time zone",
    _SVF.SVFOP_LOCALTIMESTAMP: "timestamp without time zone",
    _SVF.SVFOP_LOCALTIMESTAMP_N: "timestamp without time zone",
}


@dataclass(frozen=True)
class Signature:
    """One candidate of a function name, as pg_proc describes it (types as format_type() writes them)."""

    args: tuple[str, ...]  # input argument types, in order
    names: tuple[str, ...] = ()  # input argument names ("" where unnamed)
    defaults: int = 0  # trailing arguments that have defaults
    variadic: str | None = None  # element type of a VARIADIC last argument
    returns: str | None = None

    def accepts(self, positional: int, named: tuple[str, ...]) -> bool:
        count = positional + len(named)
        if any(n not in self.names for n in named):
            return False
        if self.variadic is not None:
            return count >= len(self.args) - 1 - self.defaults
        return len(self.args) - self.defaults <= count <= len(self.args)

    def type_at(self, position: int, name: str | None) -> str | None:
        if name is not None:
            return self.args[self.names.index(name)] if name in self.names else None
        if self.variadic is not None and position >= len(self.args) - 1:
            return self.variadic
        return self.args[position] if position < len(self.args) else None


Signatures = Callable[[tuple[str, ...]], list[Signature]]  # function name (qualified or not) -> its candidates


def is_pseudo(type_name: str) -> bool:
    """A polymorphic or pseudo type ("any", anyelement ...): it says nothing of a parameter's type."""
    return type_name.strip('"').startswith("any") or type_name in ("internal", "record", "cstring")


_ALIASES = {
    "int": "integer", "int4": "integer", "int2": "smallint", "int8": "bigint", "float8": "double precision",
    "float4": "real", "float": "double precision", "decimal": "numeric", "bool": "boolean",
    "timestamp": "timestamp without time zone", "timestamptz": "timestamp with time zone",
    "time": "time without time zone", "timetz": "time with time zone", "varchar": "character varying",
    "char": "character", "bpchar": "character",
}


def _base(type_name: str) -> str:
    """The type's canonical name without modifiers: numeric(7,2) -> numeric, pg_catalog.int4 -> integer,
    timestamp(3) -> timestamp without time zone."""
    name = type_name.removeprefix("pg_catalog.")
    if "(" in name:
        head, _, tail = name.partition("(")
        name = (head + tail.partition(")")[2]).strip()
    return _ALIASES.get(name, name)


def operand_types(op: str, expected: str | None, left: str | None, right: str | None) -> tuple[str | None, str | None]:
    """The types the two operands of an arithmetic operator should have, given what is known of them."""
    known = left or right
    if left and right:
        return left, right
    if known is not None:
        base = _base(known)
        if op in ("+", "-") and base in _DATETIME | {"date"}:
            other = "integer" if base == "date" and (expected is None or _base(expected) == "date") else "interval"
            return (left, other) if left else (other, right)
        if base == "interval":
            other = "interval" if op in ("+", "-") else "double precision"
            return (left, other) if left else (other, right)
        return known, known
    if expected is None:
        return None, None
    base = _base(expected)
    if base in NUMERIC:
        return expected, expected
    if base == "date" and op in ("+", "-"):
        return "date", "integer"
    if base in _DATETIME and op in ("+", "-"):
        return expected, "interval"
    if base == "interval":
        return ("interval", "interval") if op in ("+", "-") else ("interval", "double precision")
    return None, None


def _result_type(op: str, left: str | None, right: str | None) -> str | None:
    """The type of `left op right`, as far as the advisor needs it (datetime differences, else an operand's)."""
    if left and right and op == "-" and _base(left) == _base(right):
        if _base(left) == "date":
            return "integer"
        if _base(left) in _DATETIME:
            return "interval"
    if left and right and _base(left) == "date" and _base(right) == "interval":
        return "timestamp without time zone"
    return left or right


class ParamTypes:
    """The parameters' types by context and by role, for one parsed statement."""

    def __init__(self, tree: Any, catalog: Catalog, signatures: Signatures) -> None:
        self.catalog = catalog
        self.signatures = signatures
        self.relations = _relations(tree, catalog)
        self.context: dict[int, str] = {}
        self.role: dict[int, str] = {}
        self.visit(tree, None, None)

    # ---- types of expressions --------------------------------------------------------------------------
    def column_type(self, node: ast.ColumnRef) -> str | None:
        names = [f.sval for f in node.fields if isinstance(f, ast.String)]
        if len(names) != len(node.fields) or not names:
            return None
        if len(names) > 1:
            table = self.relations.get(names[-2])
            column = table.column(names[-1]) if table else None
            return column.type if column else None
        found = {c.type for t in set(self.relations.values()) if (c := t.column(names[0])) is not None}
        return found.pop() if len(found) == 1 else None

    def type_of(self, node: Any) -> str | None:
        if isinstance(node, ast.ColumnRef):
            return self.column_type(node)
        if isinstance(node, ast.TypeCast):
            return deparse(node.typeName)
        if isinstance(node, ast.ParamRef):
            return self.context.get(node.number)
        if isinstance(node, ast.A_Const):
            return _constant_type(node)
        if isinstance(node, ast.SQLValueFunction):
            return _VALUE_FUNCTIONS.get(node.op)
        if isinstance(node, ast.FuncCall):
            returns = {s.returns for s in self._candidates(node)}
            return returns.pop() if len(returns) == 1 else None
        if isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP and len(node.name) == 1:
            left = self.type_of(node.lexpr) if node.lexpr is not None else None
            return _result_type(node.name[0].sval, left, self.type_of(node.rexpr))
        if isinstance(node, (ast.CoalesceExpr, ast.MinMaxExpr)):
            return next((t for a in node.args if (t := self.type_of(a))), None)
        if isinstance(node, ast.CaseExpr):
            results = [w.result for w in node.args] + [node.defresult]
            return next((t for r in results if r is not None and (t := self.type_of(r))), None)
        return None

    # ---- the walk ----------------------------------------------------------------------------------------
    def visit(self, node: Any, expected: str | None, role: str | None) -> None:
        if node is None:
            return
        if isinstance(node, ast.ParamRef):
            if expected and not is_pseudo(expected):
                self.context.setdefault(node.number, expected)
            if role:
                self.role.setdefault(node.number, role)
        elif isinstance(node, ast.A_Expr):
            self.operator(node, expected)
        elif isinstance(node, ast.TypeCast):
            self.visit(node.arg, deparse(node.typeName), None)
        elif isinstance(node, ast.FuncCall):
            self.function(node)
        elif isinstance(node, ast.CaseExpr):
            self.case(node, expected, role)
        elif isinstance(node, (ast.CoalesceExpr, ast.MinMaxExpr)):
            expected = expected or self.type_of(node)
            for arg in node.args:
                self.visit(arg, expected, role)
        elif isinstance(node, ast.A_ArrayExpr):
            element = expected[:-2] if expected and expected.endswith("[]") else None
            for item in node.elements or ():
                self.visit(item, element, role)
        elif isinstance(node, ast.BoolExpr):
            for arg in node.args:
                self.visit(arg, "boolean", None)
        elif isinstance(node, (ast.UpdateStmt, ast.InsertStmt)):
            self.modify(node)
        else:
            for child in children(node):
                self.visit(child, None, None)

    def operator(self, node: ast.A_Expr, expected: str | None) -> None:
        kinds = enums.A_Expr_Kind
        left, right = node.lexpr, node.rexpr
        op = node.name[-1].sval if node.name else ""
        if node.kind == kinds.AEXPR_OP and op in _ARITHMETIC:
            lt = self.type_of(left) if left is not None else None
            le, re = operand_types(op, expected, lt, self.type_of(right))
            self.visit(left, le, "numeric")
            self.visit(right, re, "numeric")
            return
        if isinstance(right, (list, tuple)):  # IN (...), BETWEEN a AND b
            lt = self.type_of(left)
            self.visit(left, lt or next((t for r in right if (t := self.type_of(r))), None), None)
            for item in right:
                self.visit(item, lt, None)
            return
        lt, rt = (self.type_of(left) if left is not None else None), self.type_of(right)
        if node.kind in (kinds.AEXPR_OP_ANY, kinds.AEXPR_OP_ALL):
            self.visit(left, rt[:-2] if rt and rt.endswith("[]") else None, None)
            self.visit(right, f"{lt}[]" if lt else None, None)
            return
        role = "text" if op == "||" else None
        self.visit(left, rt, role)
        self.visit(right, lt, role)

    def _candidates(self, node: ast.FuncCall) -> list[Signature]:
        positional = [a for a in node.args or () if not isinstance(a, ast.NamedArgExpr)]
        named = tuple(a.name for a in node.args or () if isinstance(a, ast.NamedArgExpr))
        name = tuple(n.sval for n in node.funcname)
        return [s for s in self.signatures(name) if s.accepts(len(positional), named)]

    def function(self, node: ast.FuncCall) -> None:
        args = list(node.args or ())
        candidates = self._candidates(node) if any(isinstance(n, ast.ParamRef) for n in walk(args)) else []
        for position, arg in enumerate(args):
            name = arg.name if isinstance(arg, ast.NamedArgExpr) else None
            value = arg.arg if isinstance(arg, ast.NamedArgExpr) else arg
            types = {t for s in candidates if (t := s.type_at(position, name)) is not None}
            typed = {t for t in types if not is_pseudo(t)}
            exact = typed.pop() if len(typed) == 1 and len(types) == 1 else None
            self.visit(value, exact, _argument_role(types))
        self.visit(node.agg_filter, "boolean", None)
        for child in (node.agg_order, node.over):
            self.visit(child, None, None)

    def case(self, node: ast.CaseExpr, expected: str | None, role: str | None) -> None:
        subject = self.type_of(node.arg) if node.arg is not None else None
        if node.arg is not None:
            first = next((t for w in node.args if (t := self.type_of(w.expr))), None)
            self.visit(node.arg, first, None)
        result = expected or self.type_of(node)
        for when in node.args:
            self.visit(when.expr, subject if node.arg is not None else "boolean", None)
            self.visit(when.result, result, role)
        self.visit(node.defresult, result, role)

    def modify(self, node: Any) -> None:
        """UPDATE ... SET col = expr and INSERT (cols) VALUES (...): each value takes its column's type."""
        table = self.catalog.resolve(node.relation.relname, node.relation.schemaname)
        targets: list[tuple[str | None, Any]] = []
        if isinstance(node, ast.UpdateStmt):
            targets = [(t.name, t.val) for t in node.targetList or ()]
        elif node.selectStmt is not None and node.selectStmt.valuesLists and node.cols:
            names = [c.name for c in node.cols]
            targets = [(names[i] if i < len(names) else None, v)
                       for row in node.selectStmt.valuesLists for i, v in enumerate(row)]
        for name, value in targets:  # first: a parameter keeps the first type found for it
            column = table.column(name) if table is not None and name else None
            self.visit(value, column.type if column else None, None)
        for child in children(node):
            self.visit(child, None, None)


def _argument_role(types: set[str]) -> str | None:
    """The type of a function argument no context types: its numeric candidates' type, or text for "any"."""
    numeric = {t for t in types if _base(t) in NUMERIC}
    if numeric:
        return numeric.pop() if len(numeric) == 1 else "numeric"
    return "text" if types and all(is_pseudo(t) for t in types) else None


def _constant_type(node: ast.A_Const) -> str | None:
    if node.isnull:
        return None
    return {ast.Integer: "integer", ast.Float: "numeric", ast.Boolean: "boolean"}.get(type(node.val))


def _relations(tree: Any, catalog: Catalog) -> dict[str, Table]:
    """The statement's relations known to the catalog, by the name its columns are qualified with."""
    found: dict[str, Table] = {}
    for node in walk(tree):
        if isinstance(node, ast.RangeVar):
            table = catalog.resolve(node.relname, node.schemaname)
            if table is not None:
                found[node.alias.aliasname if node.alias else node.relname] = table
    return found
