# pglast declares every parse-tree field optional; the grammar guarantees the fields read here for the node
# kinds each function checks, so only those optional-value checks are relaxed, for this module alone.
# mypy: disable-error-code="union-attr,index,arg-type,operator,misc"
"""What a statement asks of each table it scans, read from PostgreSQL's own parse tree (pglast).

The walker follows query blocks: FROM items (tables, joins, subqueries, CTEs, views), WHERE and JOIN conditions,
the select list, GROUP BY and ORDER BY. Column references are resolved through aliases, CTEs, subqueries and
views down to base-table scans; what cannot be resolved with certainty is left out, never guessed.

- A view is its definition: it is parsed and its base tables are scanned (views cannot be indexed).
- A CTE that PostgreSQL inlines (NOT MATERIALIZED, or referenced once and not recursive) passes its columns
  through, so outer predicates reach its tables; a materialized one is a separate block.
- A partition is indexed through its partitioned parent.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from indexd.advisor.model import Catalog, IndexKey, Table
from indexd.advisor.predicates import (
    Ref,
    Rel,
    Scan,
    Scope,
    classify,
    index_key,
    output_expression,
)
from indexd.advisor.skips import SkipReason, statement_reason
from indexd.statements.tree import children, walk

log = logging.getLogger(__name__)

_MAX_VIEW_DEPTH = 8
_Outputs = dict[str, Ref | None]


class Unusable(Exception):
    """The statement as a whole gives the advisor nothing (does not parse, utility statement ...)."""

    def __init__(self, message: str, reason: SkipReason) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Usage:
    """Everything one statement asks of indexable relations."""

    scans: list[Scan] = field(default_factory=list)
    notes: dict[str, SkipReason] = field(default_factory=dict)  # relations left out: why, in words and by name
    through_view: bool = False
    inserts: bool = False  # an INSERT: it writes rows whatever it reads


def analyze(query: str, catalog: Catalog, state_schema: str = "indexd") -> Usage:
    """The table usage of one statement; Unusable when the statement gives nothing to read."""
    try:
        parsed = parse_sql(query)
    except ParseError as exc:
        raise Unusable(f"does not parse: {exc.args[0]}", SkipReason.PARSE_ERROR) from None
    if not parsed:
        raise Unusable("empty statement", SkipReason.PARSE_ERROR)
    walker = Walker(catalog, state_schema)
    for raw in parsed:
        walker.statement(raw.stmt)
    return walker.usage


@functools.lru_cache(maxsize=256)
def _parse_view(definition: str) -> Any:
    """A view's parse tree, parsed once per definition (the walker never changes a tree)."""
    return parse_sql(definition)[0].stmt


def _cte_references(node: Any) -> Counter[str]:
    return Counter(n.relname for n in walk(node) if isinstance(n, ast.RangeVar) and not n.schemaname)


class Walker:
    def __init__(self, catalog: Catalog, state_schema: str) -> None:
        self.catalog = catalog
        self.state_schema = state_schema
        self.usage = Usage()
        self.cte_refs: Counter[str] = Counter()
        self.view_depth = 0

    def note(self, text: str, reason: SkipReason) -> None:
        self.usage.notes.setdefault(text, reason)

    # ---- statements --------------------------------------------------------------------------------------
    def statement(self, node: Any) -> None:
        self.cte_refs = _cte_references(node)
        if isinstance(node, ast.SelectStmt):
            self.select(node, None)
        elif isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)):
            self.modify(node, None)
        elif isinstance(node, ast.InsertStmt):
            self.usage.inserts = True
            scope = self.with_clause(node.withClause, None)
            if node.selectStmt is not None:
                self.select(node.selectStmt, scope)
        elif isinstance(node, ast.MergeStmt):
            raise Unusable("MERGE statements are not analysed", SkipReason.UNSUPPORTED)
        else:
            kind = type(node).__name__
            raise Unusable(f"utility statement ({kind})", statement_reason(kind))

    def modify(self, node: Any, outer: Scope | None) -> None:
        """UPDATE ... [FROM] WHERE and DELETE ... [USING] WHERE: the target is a scan like any other."""
        outer = self.with_clause(node.withClause, outer)
        block = Scope(parent=outer, ctes=outer.ctes if outer else {})
        target = self.range_var(node.relation, block)
        if target.scan is not None:
            target.scan.modifies = True
        block.rels.append(target)
        for item in (node.fromClause if isinstance(node, ast.UpdateStmt) else node.usingClause) or ():
            self.from_item(item, block)
        self.conjuncts(node.whereClause, block, top=True)
        if isinstance(node, ast.UpdateStmt):
            for target_ in node.targetList or ():
                self.expression(target_.val, block)

    def with_clause(self, clause: Any, outer: Scope | None) -> Scope | None:
        if clause is None:
            return outer
        scope = Scope(parent=outer, ctes=dict(outer.ctes) if outer else {})
        for cte in clause.ctes:
            scope.ctes[cte.ctename] = self.cte(cte, scope, bool(clause.recursive))
        return scope

    def cte(self, cte: Any, scope: Scope, recursive: bool) -> Rel:
        """Analyse a CTE's body once; an inlined CTE passes its columns through, a materialized one does not."""
        query = cte.ctequery
        if recursive:
            scope.ctes[cte.ctename] = Rel(cte.ctename)  # the self-reference is opaque
        if not isinstance(query, ast.SelectStmt):
            if isinstance(query, (ast.UpdateStmt, ast.DeleteStmt)):
                self.modify(query, scope)
            return Rel(cte.ctename)
        outputs = self.select(query, scope)
        materialize = enums.CTEMaterialize
        materialized = recursive or cte.ctematerialized == materialize.CTEMaterializeAlways or (
            cte.ctematerialized == materialize.CTEMaterializeDefault and self.cte_refs[cte.ctename] > 1
        )
        names = [s.sval for s in cte.aliascolnames] if cte.aliascolnames else list(outputs)
        refs = list(outputs.values())
        return Rel(cte.ctename, columns={
            name: (None if materialized else refs[i]) for i, name in enumerate(names) if i < len(refs)
        })

    # ---- query blocks ------------------------------------------------------------------------------------
    def select(self, node: Any, outer: Scope | None, semijoin: bool = False) -> _Outputs:
        """Analyse one SELECT (or set operation); returns its output columns resolved to base columns."""
        outer = self.with_clause(node.withClause, outer)
        if node.op != enums.SetOperation.SETOP_NONE:
            left = self.select(node.larg, outer, semijoin)
            self.select(node.rarg, outer, semijoin)
            return dict.fromkeys(left)
        scope = Scope(parent=outer, ctes=outer.ctes if outer else {}, semijoin=semijoin)
        for row in node.valuesLists or ():
            self.expression(row, scope)
        for item in node.fromClause or ():
            self.from_item(item, scope)
        self.conjuncts(node.whereClause, scope, top=True)
        outputs = self.outputs(node.targetList or (), scope)
        for clause in (node.havingClause, node.distinctClause, node.windowClause):
            self.expression(clause, scope)
        if node.groupClause and not any(isinstance(i, ast.GroupingSet) for i in node.groupClause):
            self.assign([self.key(i, node.targetList, scope, False) for i in node.groupClause], "group")
        if node.sortClause:
            self.assign([self.sort_key(item, node.targetList, scope) for item in node.sortClause], "order")
        return outputs

    def outputs(self, targets: Any, scope: Scope) -> _Outputs:
        outputs: _Outputs = {}
        for target in targets:
            val = target.val
            if isinstance(val, ast.ColumnRef) and isinstance(val.fields[-1], ast.A_Star):
                outputs.update(self.star(val, scope))
                continue
            self.expression(val, scope)
            name = target.name or _output_name(val)
            outputs[name] = self.column(val, scope) if isinstance(val, ast.ColumnRef) else None
        return outputs

    def star(self, ref: Any, scope: Scope) -> _Outputs:
        """`*` or `t.*`: every column is read, so no index covers the scan."""
        names = [f.sval for f in ref.fields[:-1]]
        rel = scope.find(names[-1], names[-2] if len(names) > 1 else None) if names else None
        rels = [rel] if rel else ([] if names else scope.rels)
        result: _Outputs = {}
        for rel_ in rels:
            result.update(_read_all(rel_))
        return result

    # ---- FROM ----------------------------------------------------------------------------------------------
    def from_item(self, item: Any, scope: Scope) -> None:
        if isinstance(item, ast.RangeVar):
            scope.rels.append(self.range_var(item, scope))
        elif isinstance(item, ast.JoinExpr):
            self.from_item(item.larg, scope)
            self.from_item(item.rarg, scope)
            for name in item.usingClause or ():
                self.using(name.sval, item, scope)
            self.conjuncts(item.quals, scope, top=False)
        elif isinstance(item, ast.RangeSubselect):
            # only a LATERAL subquery sees the FROM items before it; any subquery sees the enclosing blocks
            outputs = self.select(item.subquery, scope if item.lateral else scope.parent)
            # PostgreSQL does not push conditions into a subquery with LIMIT/OFFSET
            limited = item.subquery.limitCount is not None or item.subquery.limitOffset is not None
            scope.rels.append(_derived(item.alias, outputs, opaque=limited))
        else:  # functions, XMLTABLE ...: their columns are not table columns
            for child in children(item):
                self.expression(child, scope)
            alias = getattr(item, "alias", None)
            scope.rels.append(Rel(alias.aliasname if alias else "?"))

    def range_var(self, node: Any, scope: Scope) -> Rel:
        alias = node.alias.aliasname if node.alias else node.relname
        if node.schemaname is None and node.relname in scope.ctes:
            return Rel(alias, columns=_renamed(scope.ctes[node.relname].columns, node.alias))
        table = self.catalog.resolve(node.relname, node.schemaname)
        if table is None:
            self.note(*self.unknown_relation(node))
            return Rel(alias, schema=node.schemaname)
        schema = table.schema if node.alias is None else None
        if table.kind == "f":
            self.note(f"{table.qualified} is a foreign table", SkipReason.NOT_INDEXABLE)
            return Rel(alias, schema=schema)
        if table.kind == "v":
            return self.view(table, alias, node.alias)
        while table.parent is not None and table.parent in self.catalog.tables:  # index the parent
            table = self.catalog.tables[table.parent]
        scan = Scan(table)
        self.usage.scans.append(scan)
        return Rel(alias, schema=schema, scan=scan)

    def unknown_relation(self, node: Any) -> tuple[str, SkipReason]:
        name = f"{node.schemaname}.{node.relname}" if node.schemaname else node.relname
        if node.schemaname in ("pg_catalog", "information_schema") or (
            node.schemaname is None and node.relname.startswith("pg_")
        ):
            return f"{name} is a system catalog", SkipReason.CATALOG_ONLY
        if node.schemaname == self.state_schema:
            return f"{name} belongs to indexd's state schema", SkipReason.INDEXD_OWN
        return f"{name} is not a known table", SkipReason.NOT_A_KNOWN_TABLE

    def view(self, table: Table, alias: str, alias_node: Any) -> Rel:
        """A view is its definition: analyse it and map the view's columns onto its base tables."""
        self.usage.through_view = True
        if self.view_depth >= _MAX_VIEW_DEPTH or not table.view_definition:
            self.note(f"view {table.qualified} cannot be expanded", SkipReason.NOT_INDEXABLE)
            return Rel(alias)
        try:
            definition = _parse_view(table.view_definition)
        except ParseError:
            self.note(f"the definition of view {table.qualified} does not parse", SkipReason.NOT_INDEXABLE)
            return Rel(alias)
        saved = self.cte_refs
        self.view_depth += 1
        try:
            self.cte_refs = _cte_references(definition)
            refs = list(self.select(definition, None).values())
        finally:
            self.view_depth -= 1
            self.cte_refs = saved
        columns = {c.name: refs[i] if i < len(refs) else None for i, c in enumerate(table.columns)}
        return Rel(alias, columns=_renamed(columns, alias_node))

    def using(self, name: str, join: Any, scope: Scope) -> None:
        """JOIN ... USING (col): the column of each side is a join key."""
        for side in (join.larg, join.rarg):
            names = {n.alias.aliasname if n.alias else getattr(n, "relname", None)
                     for n in walk(side) if isinstance(n, (ast.RangeVar, ast.RangeSubselect))}
            having = [r for r in scope.rels if r.name in names and r.has(name)]
            ref = having[0].resolve(name) if len(having) == 1 else None
            if ref is not None:
                ref[0].add(ref[0].equal, IndexKey(column=ref[1]))
                ref[0].referenced.add(ref[1])

    # ---- expressions -------------------------------------------------------------------------------------------
    def conjuncts(self, node: Any, scope: Scope, top: bool, alternative: bool = False) -> None:
        if node is None:
            return
        if isinstance(node, ast.BoolExpr) and node.boolop in (enums.BoolExprType.AND_EXPR,
                                                              enums.BoolExprType.OR_EXPR):
            is_or = node.boolop == enums.BoolExprType.OR_EXPR
            for arg in node.args:
                self.conjuncts(arg, scope, top and not is_or, alternative or is_or)
            return
        classify(self, node, scope, top=top, alternative=alternative)

    def expression(self, node: Any, scope: Scope) -> None:
        """Record the columns an expression reads and analyse the subqueries inside it."""
        if node is None:
            return
        if isinstance(node, ast.SubLink):
            self.sublink(node, scope)
        elif isinstance(node, ast.ColumnRef):
            if isinstance(node.fields[-1], ast.A_Star):
                self.star(node, scope)
            else:
                self.column(node, scope)
        else:
            for child in children(node):
                self.expression(child, scope)

    def sublink(self, node: Any, scope: Scope) -> _Outputs:
        kinds = enums.SubLinkType
        outputs = self.select(node.subselect, scope,
                              semijoin=node.subLinkType in (kinds.EXISTS_SUBLINK, kinds.ANY_SUBLINK))
        self.expression(node.testexpr, scope)
        return outputs

    def column(self, node: Any, scope: Scope) -> Ref | None:
        """Resolve a column reference to its base column and mark it read; None when not certain."""
        names = [f.sval for f in node.fields if isinstance(f, ast.String)]
        if len(names) != len(node.fields) or not names:
            return None
        if len(names) == 1:
            rel = scope.unqualified(names[0])
            whole_row = scope.find(names[0], None) if rel is None else None
            if whole_row is not None:  # SELECT t FROM t: the whole row
                _read_all(whole_row)
                return None
        else:
            rel = scope.find(names[-2], names[-3] if len(names) >= 3 else None)
        ref = rel.resolve(names[-1]) if rel else None
        if ref is not None:
            ref[0].referenced.add(ref[1])
        else:
            self.missing_column(names, rel, scope)
        return ref

    def missing_column(self, names: list[str], rel: Rel | None, scope: Scope) -> None:
        """Note a column no table of the statement has, when it is certain which table it was meant for."""
        if rel is None and len(names) == 1 and scope.parent is None and len(scope.rels) == 1:
            rel = scope.rels[0]
        if rel is not None and rel.scan is not None:
            self.note(f"column {names[-1]} not found in table {rel.scan.table.qualified}",
                      SkipReason.UNKNOWN_COLUMN)

    # ---- ORDER BY / GROUP BY -----------------------------------------------------------------------------------
    def key(self, item: Any, targets: Any, scope: Scope, prefer_output: bool) -> tuple[Scan, IndexKey] | None:
        expr = output_expression(item, targets, prefer_output, scope)
        return index_key(self, expr, scope) if expr is not None else None

    def sort_key(self, item: Any, targets: Any, scope: Scope) -> tuple[Scan, IndexKey] | None:
        desc = item.sortby_dir == enums.SortByDir.SORTBY_DESC
        nulls = item.sortby_nulls
        if item.sortby_dir == enums.SortByDir.SORTBY_USING or (
            nulls != enums.SortByNulls.SORTBY_NULLS_DEFAULT and (nulls == enums.SortByNulls.SORTBY_NULLS_FIRST) != desc
        ):
            return None  # a NULLS placement the index's natural order does not give
        found = self.key(item.node, targets, scope, prefer_output=True)
        return (found[0], IndexKey(found[1].column, found[1].expression, desc)) if found else None

    @staticmethod
    def assign(keys: list[tuple[Scan, IndexKey] | None], bucket: str) -> None:
        """Sort or group keys serve an index only when every one of them belongs to the same scan."""
        if not keys or any(k is None for k in keys):
            return
        scans = {id(k[0]) for k in keys if k}
        if len(scans) != 1:
            return
        first = keys[0]
        assert first is not None
        target: list[IndexKey] = getattr(first[0], bucket)
        if not target:
            target.extend(k[1] for k in keys if k)


def _read_all(rel: Rel) -> _Outputs:
    """Every column of the relation is read: no index covers its scans."""
    if rel.scan is not None:
        rel.scan.all_columns = True
        return {c.name: (rel.scan, c.name) for c in rel.scan.table.columns}
    for found in rel.columns.values():
        if found is not None:
            found[0].all_columns = True
    return dict(rel.columns)


def _output_name(node: Any) -> str:
    if isinstance(node, ast.ColumnRef) and isinstance(node.fields[-1], ast.String):
        return str(node.fields[-1].sval)
    if isinstance(node, ast.FuncCall):
        return str(node.funcname[-1].sval)
    if isinstance(node, ast.TypeCast):
        return _output_name(node.arg)
    return "?column?"


def _renamed(columns: dict[str, Ref | None], alias: Any) -> dict[str, Ref | None]:
    """Apply an alias's column list (FROM t AS x(a, b)) to a derived relation's columns."""
    if alias is None or not alias.colnames:
        return dict(columns)
    items = list(columns.items())
    renamed = {c.sval: items[i][1] for i, c in enumerate(alias.colnames) if i < len(items)}
    renamed.update(dict(items[len(alias.colnames):]))
    return renamed


def _derived(alias: Any, outputs: _Outputs, opaque: bool) -> Rel:
    """A subquery in FROM: its columns lead to base columns unless PostgreSQL keeps it a separate block."""
    for ref in outputs.values():
        if ref is not None:
            ref[0].all_columns = True  # read through a derived relation: not known to be coverable
    columns = dict.fromkeys(outputs) if opaque else outputs
    return Rel(alias.aliasname if alias else "?", columns=_renamed(columns, alias))
