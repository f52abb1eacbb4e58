# pglast declares every parse-tree field optional; the grammar guarantees the fields read here for the node
# kinds each function checks, so only those optional-value checks are relaxed, for this module alone.
# mypy: disable-error-code="union-attr,index,arg-type,operator,misc"
"""The pieces of a parsed statement the advisor keeps, and how one predicate becomes index material.

A `Scan` is one range-table entry of an indexable relation (a self-join has two). `classify` files one
conjunct of a WHERE or JOIN ... ON into the scan's equality, range, LIKE-prefix, OR-alternative and constant-filter
lists; column references are resolved by the statement walker (`indexd.advisor.parse`) through the `Resolver`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

from pglast import ast, enums
from pglast.stream import RawStream

from indexd.advisor.model import IndexKey, Table
from indexd.statements.tree import walk

# Functions of one column whose result depends on their arguments only (IMMUTABLE for text and numeric
# arguments), so an expression index can hold them.
IMMUTABLE_FUNCTIONS = frozenset({
    "lower", "upper", "btrim", "ltrim", "rtrim", "md5", "abs", "length", "char_length", "left", "right",
    "substr", "substring", "reverse", "initcap", "floor", "ceil", "round", "trunc", "split_part",
})
# Collations whose btree order is byte order: LIKE 'prefix%' can use a plain index there.
BYTE_ORDER_COLLATIONS = frozenset({"C", "POSIX", "ucs_basic", "C.UTF-8", "C.utf8", "C.UTF8"})
# Elsewhere it needs the pattern operator class of the column's type.
PATTERN_OPCLASS = {"text": "text_pattern_ops", "character varying": "varchar_pattern_ops",
                   "character": "bpchar_pattern_ops"}
_RANGE_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_EQUALITY = "="


@dataclass(frozen=True)
class FixedFilter:
    """A top-level `column = constant` or `column IS [NOT] NULL` filter: what a partial index could hold."""

    column: str
    kind: str  # "eq", "null", "notnull"
    value: str | None  # the constant as text (as pg_stats shows it), for "eq"
    predicate: str  # deparsed without qualification: "status = 'pending'"


@dataclass(eq=False)
class Scan:
    """What one scan of an indexable relation needs from an index."""

    table: Table
    equal: list[IndexKey] = field(default_factory=list)  # =, IN, = ANY, IS NULL, join keys
    ranges: list[IndexKey] = field(default_factory=list)  # <, <=, >, >=, BETWEEN, IS NOT NULL, LIKE 'prefix%'
    either: list[IndexKey] = field(default_factory=list)  # predicates under OR: single-column use only
    order: list[IndexKey] = field(default_factory=list)
    group: list[IndexKey] = field(default_factory=list)
    fixed: list[FixedFilter] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)
    all_columns: bool = False  # SELECT *, or read through a derived relation: an index cannot cover it
    modifies: bool = False  # the target of an UPDATE or DELETE

    @staticmethod
    def add(bucket: list[Any], item: Any) -> None:
        if item not in bucket:
            bucket.append(item)


Ref = tuple[Scan, str]  # a resolved column: its scan and its base column name


@dataclass
class Rel:
    """One FROM entry: a base-table scan, or a derived relation mapping its columns (None: not a base column)."""

    name: str
    schema: str | None = None
    scan: Scan | None = None
    columns: dict[str, Ref | None] = field(default_factory=dict)

    def has(self, column: str) -> bool:
        return column in self.columns if self.scan is None else self.scan.table.column(column) is not None

    def resolve(self, column: str) -> Ref | None:
        if self.scan is not None:
            return (self.scan, column) if self.scan.table.column(column) is not None else None
        return self.columns.get(column)


@dataclass
class Scope:
    """The relations visible in one query block, its enclosing block, and the CTEs in reach."""

    rels: list[Rel] = field(default_factory=list)
    parent: Scope | None = None
    ctes: dict[str, Rel] = field(default_factory=dict)
    # The block is an EXISTS / IN subquery: PostgreSQL may turn it into a join, so a correlation such as
    # inner.x = outer.y is a join key for the outer scan too. In any other subquery the outer column is a
    # mere parameter.
    semijoin: bool = False

    def owns(self, scan: Scan) -> bool:
        """Whether the scan is read by this block itself (directly or through a derived relation)."""
        return any(rel.scan is scan or any(r is not None and r[0] is scan for r in rel.columns.values())
                   for rel in self.rels)

    def find(self, name: str, schema: str | None) -> Rel | None:
        scope: Scope | None = self
        while scope is not None:
            for rel in scope.rels:
                if rel.name == name and (schema is None or rel.schema == schema):
                    return rel
            scope = scope.parent
        return None

    def unqualified(self, column: str) -> Rel | None:
        """The one relation of the innermost block having this column; None if none has it or it is ambiguous."""
        scope: Scope | None = self
        while scope is not None:
            having = [rel for rel in scope.rels if rel.has(column)]
            if len(having) == 1:
                return having[0]
            if having:
                return None
            scope = scope.parent
        return None


class Resolver(Protocol):
    def column(self, node: Any, scope: Scope) -> Ref | None: ...

    def expression(self, node: Any, scope: Scope) -> None: ...

    def sublink(self, node: Any, scope: Scope) -> dict[str, Ref | None]: ...


# ---- tree helpers ------------------------------------------------------------------------------------------
def deparse(node: Any) -> str:
    return str(RawStream()(node))


def unqualified(node: Any, column: str) -> str:
    """Deparse an expression of one column with that column unqualified (as an index definition writes it)."""
    clone = copy.deepcopy(node)
    for sub in walk(clone, into_subqueries=False):
        if isinstance(sub, ast.ColumnRef):
            sub.fields = (ast.String(sval=column),)
    return deparse(clone)


def _constant(node: Any) -> ast.A_Const | None:
    if isinstance(node, ast.TypeCast):
        return _constant(node.arg)
    return node if isinstance(node, ast.A_Const) and not node.isnull else None


def constant_text(const: ast.A_Const) -> str:
    """A constant as pg_stats writes it in most_common_vals."""
    val = const.val
    if isinstance(val, ast.Boolean):
        return "t" if val.boolval else "f"
    if isinstance(val, ast.Integer):
        return str(val.ival)
    if isinstance(val, ast.Float):
        return str(val.fval)
    return str(getattr(val, "sval", getattr(val, "bsval", "")))


# ---- keys -----------------------------------------------------------------------------------------------------
def _local(ref: Ref | None, scope: Scope, allow_outer: bool) -> Ref | None:
    return ref if ref is not None and (allow_outer or scope.owns(ref[0])) else None


def index_key(an: Resolver, node: Any, scope: Scope, allow_outer: bool = False) -> tuple[Scan, IndexKey] | None:
    """The index key an expression could use: a column, or an immutable function of exactly one column.

    Only for scans of this block, unless `allow_outer` (a semi-join's correlation).
    """
    if isinstance(node, ast.ColumnRef):
        ref = _local(an.column(node, scope), scope, allow_outer)
        return (ref[0], IndexKey(column=ref[1])) if ref else None
    if not isinstance(node, ast.FuncCall) or node.over is not None or node.agg_star or node.agg_distinct:
        return None
    names = [n.sval for n in node.funcname]
    if names[-1] not in IMMUTABLE_FUNCTIONS or (len(names) > 1 and names[0] != "pg_catalog"):
        return None
    args = list(node.args or ())
    columns = [a for a in args if isinstance(a, ast.ColumnRef)]
    if len(columns) != 1 or any(not isinstance(a, ast.ColumnRef) and _constant(a) is None for a in args):
        return None
    ref = _local(an.column(columns[0], scope), scope, allow_outer)
    if ref is None:
        return None
    return ref[0], IndexKey(expression=unqualified(node, ref[1]))


def output_expression(item: Any, targets: Any, prefer_output: bool, scope: Scope) -> Any:
    """What an ORDER BY / GROUP BY item stands for: a position or an output alias names a select-list entry.

    ORDER BY prefers output names over input columns, GROUP BY the other way round (as PostgreSQL does).
    """
    targets = list(targets or ())
    const = item if isinstance(item, ast.A_Const) else None
    if const is not None and isinstance(const.val, ast.Integer):
        position = const.val.ival
        return targets[position - 1].val if 1 <= position <= len(targets) else None
    if isinstance(item, ast.ColumnRef) and len(item.fields) == 1 and isinstance(item.fields[0], ast.String):
        name = item.fields[0].sval
        named = [t.val for t in targets if t.name == name]
        if named and (prefer_output or scope.unqualified(name) is None):
            return named[0]
    return item


# ---- predicates -----------------------------------------------------------------------------------------------
def _touches(an: Resolver, node: Any, scope: Scope, scan: Scan) -> bool:
    """Whether an expression reads the given scan (then it is no index condition for that scan)."""
    for sub in walk(node, into_subqueries=False):
        if isinstance(sub, ast.ColumnRef) and isinstance(sub.fields[-1], ast.String):
            ref = an.column(sub, scope)
            if ref is not None and ref[0] is scan:
                return True
    return False


def _record(key: tuple[Scan, IndexKey] | None, kind: str, alternative: bool) -> None:
    if key is None:
        return
    scan, index_key_ = key
    bucket = scan.either if alternative else (scan.equal if kind == "eq" else scan.ranges)
    scan.add(bucket, index_key_)


def classify(an: Resolver, node: Any, scope: Scope, top: bool, alternative: bool) -> None:
    """File one conjunct; `top` = a conjunct of WHERE itself, `alternative` = under an OR."""
    if isinstance(node, ast.SubLink):
        _sublink(an, node, scope, alternative)
        return
    if isinstance(node, ast.A_Expr):
        _a_expr(an, node, scope, top, alternative)
    elif isinstance(node, ast.NullTest):
        key = index_key(an, node.arg, scope, scope.semijoin)
        is_null = node.nulltesttype == enums.NullTestType.IS_NULL
        _record(key, "eq" if is_null else "range", alternative)
        if key and top and not alternative and key[1].column:
            kind = "null" if is_null else "notnull"
            key[0].add(key[0].fixed, FixedFilter(key[1].column, kind, None, unqualified(node, key[1].column)))
    elif isinstance(node, (ast.ColumnRef, ast.BooleanTest, ast.BoolExpr)):
        _boolean(an, node, scope, top, alternative)
    an.expression(node, scope)


def _boolean(an: Resolver, node: Any, scope: Scope, top: bool, alternative: bool) -> None:
    """`active`, `NOT active`, `active IS TRUE`: equality on a boolean column."""
    value = True
    arg = node
    if isinstance(node, ast.BoolExpr):
        if node.boolop != enums.BoolExprType.NOT_EXPR or not isinstance(node.args[0], ast.ColumnRef):
            return
        arg, value = node.args[0], False
    elif isinstance(node, ast.BooleanTest):
        if node.booltesttype not in (enums.BoolTestType.IS_TRUE, enums.BoolTestType.IS_FALSE):
            return
        arg, value = node.arg, node.booltesttype == enums.BoolTestType.IS_TRUE
    if not isinstance(arg, ast.ColumnRef):
        return
    ref = _local(an.column(arg, scope), scope, scope.semijoin)
    column = ref[0].table.column(ref[1]) if ref else None
    if ref is None or column is None or column.type != "boolean":
        return
    _record((ref[0], IndexKey(column=ref[1])), "eq", alternative)
    if top and not alternative:
        ref[0].add(ref[0].fixed, FixedFilter(ref[1], "eq", "t" if value else "f", unqualified(node, ref[1])))


def _a_expr(an: Resolver, node: Any, scope: Scope, top: bool, alternative: bool) -> None:
    kind = node.kind
    op = node.name[-1].sval if node.name else ""
    kinds = enums.A_Expr_Kind
    if kind == kinds.AEXPR_OP and op == _EQUALITY and isinstance(node.lexpr, ast.RowExpr) and isinstance(
        node.rexpr, ast.RowExpr
    ):  # (a, b) = ($1, $2) is a = $1 AND b = $2
        for left, right in zip(node.lexpr.args or (), node.rexpr.args or (), strict=False):
            pair = ast.A_Expr(kind=kinds.AEXPR_OP, name=node.name, lexpr=left, rexpr=right)
            _a_expr(an, pair, scope, top, alternative)
    elif kind == kinds.AEXPR_OP and (op == _EQUALITY or op in _RANGE_FLIP):
        for side, other in ((node.lexpr, node.rexpr), (node.rexpr, node.lexpr)):
            key = index_key(an, side, scope, scope.semijoin)
            if key is not None and not _touches(an, other, scope, key[0]):
                _record(key, "eq" if op == _EQUALITY else "range", alternative)
                if op == _EQUALITY and top and not alternative:
                    _fixed(key, other, node)
    elif kind in (kinds.AEXPR_OP_ANY, kinds.AEXPR_IN) and op == _EQUALITY:
        key = index_key(an, node.lexpr, scope, scope.semijoin)
        if key is not None and not _touches(an, node.rexpr, scope, key[0]):
            _record(key, "eq", alternative)
    elif kind in (kinds.AEXPR_BETWEEN, kinds.AEXPR_BETWEEN_SYM):
        key = index_key(an, node.lexpr, scope, scope.semijoin)
        if key is not None and not _touches(an, node.rexpr, scope, key[0]):
            _record(key, "range", alternative)
    elif kind == kinds.AEXPR_LIKE and op == "~~":
        _like(an, node, scope, alternative)


def _fixed(key: tuple[Scan, IndexKey], other: Any, node: Any) -> None:
    const = _constant(other)
    if const is not None and key[1].column is not None:
        scan, column = key[0], key[1].column
        scan.add(scan.fixed, FixedFilter(column, "eq", constant_text(const), unqualified(node, column)))


def like_prefix(pattern: str) -> str:
    """The literal start of a LIKE pattern (up to the first wildcard or escape)."""
    for i, ch in enumerate(pattern):
        if ch in "%_\\":
            return pattern[:i]
    return pattern


def _like(an: Resolver, node: Any, scope: Scope, alternative: bool) -> None:
    """LIKE 'prefix%' is a range on a btree key, in byte order: plain under C, a pattern opclass otherwise."""
    const = _constant(node.rexpr)
    if const is None or not isinstance(const.val, ast.String) or not like_prefix(const.val.sval):
        return
    key = index_key(an, node.lexpr, scope, scope.semijoin)
    if key is None:
        return
    scan, found = key
    refs = [n for n in walk(node.lexpr) if isinstance(n, ast.ColumnRef)]
    ref = an.column(refs[0], scope) if len(refs) == 1 else None
    column = scan.table.column(ref[1]) if ref else None
    if column is None or column.collation is None:
        return
    base_type = column.type.split("(")[0]
    if found.expression is not None:
        base_type = "text"  # the text functions we index return text
    if column.collation not in BYTE_ORDER_COLLATIONS:
        opclass = PATTERN_OPCLASS.get(base_type)
        if opclass is None:
            return
        found = IndexKey(column=found.column, expression=found.expression, opclass=opclass)
    _record((scan, found), "range", alternative)


def _sublink(an: Resolver, node: Any, scope: Scope, alternative: bool) -> None:
    """EXISTS and IN (SELECT ...) are semi-joins: the outer expression and the subquery's output are join keys."""
    outputs = an.sublink(node, scope)
    is_in = node.subLinkType == enums.SubLinkType.ANY_SUBLINK and (
        not node.operName or node.operName[-1].sval == _EQUALITY
    )
    if not is_in or node.testexpr is None:
        return
    _record(index_key(an, node.testexpr, scope, scope.semijoin), "eq", alternative)
    first = next(iter(outputs.values()), None) if len(outputs) == 1 else None
    if first is not None:
        _record((first[0], IndexKey(column=first[1])), "eq", alternative)
