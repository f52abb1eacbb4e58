# pglast declares every parse-tree field optional; the grammar guarantees the fields read here for the node
# kinds each function checks, so only those optional-value checks are relaxed, for this module alone.
# mypy: disable-error-code="union-attr,index,arg-type"
"""The real constants behind pg_stat_statements' `$n`, from pg_qualstats when the server loads it.

pg_stat_statements keeps `WHERE status = $1`; pg_qualstats samples executions and keeps, per statement (queryid)
and predicate `column operator constant`, each constant with how often it ran, and one example text of the
statement. The advisor uses them two ways:

1. Constants inside an index expression: `meta ->> $1 = $2` or `to_tsvector($1, full_name) @@ ...` hide the key of
   an expression index. The parameters an index expression holds (arguments of a function of a column, the
   right side of a jsonb operator) take their value from the statement's example; the values compared stay
   parameters. (An application writes such keys into its SQL; they do not change between executions.)
2. Dominant constants: a constant making up at least DOMINANT_SHARE of a statement's executions of `column = $n`
   (with 95 % confidence: the lower Wilson bound of its share of the sampled executions, so two draws of the
   same random key among eight samples are chance, not a dominant value),
   whose share of the table's rows (pg_stats, else the filter ratio pg_qualstats measured when it was the scan's
   only filter) is rare in a column of few values or differs from the generic
   plan's average by SKEW_RATIO or more (a queue's 'pending', a huge tenant), becomes a variant of the statement
   with that literal, weighted by its share of the calls: the partial index `WHERE status = 'pending'` and the
   real selectivity are costed on it; the other calls stay generic.
pg_qualstats' counters are cumulative since its last reset (it keeps no snapshots): shares, not rates, are read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg2
from pglast import ast, enums, parse_sql
from pglast.parser import ParseError, scan
from psycopg2 import sql

from indexd.advisor.candidates import RARE_FRACTION, category, distinct_values, value_fraction
from indexd.advisor.costable import renumber_parameters
from indexd.advisor.expressions import KEY_FUNCTIONS
from indexd.advisor.model import Catalog, IndexKey, Table
from indexd.advisor.predicates import FixedFilter, constant_text
from indexd.db.pool import PgConnection
from indexd.errors import first_line
from indexd.statements.statement import Statement
from indexd.statements.tree import walk

log = logging.getLogger(__name__)

EXTENSION = "pg_qualstats"
DOMINANT_SHARE = 0.2
CONFIDENCE_Z = 1.96  # the normal quantile of a two-sided 95 % interval
SKEW_RATIO = 10.0
MAX_VARIANTS = 3
INSTALL = ("install postgresql-15-pg-qualstats, add pg_qualstats to shared_preload_libraries, restart the server "
           "and run CREATE EXTENSION pg_qualstats")
_MAX_PREFIX = 12  # tokens of a wrapper (EXPLAIN (...)) before the statement in an example
_KEY_OPERATORS = frozenset({"->", "->>", "#>", "#>>"})
_CONSTANT_TOKENS = frozenset({"SCONST", "ICONST", "FCONST", "BCONST", "XCONST", "USCONST", "TRUE_P", "FALSE_P",
                              "NULL_P"})
_CONSTANTS = """
SELECT q.queryid, n.nspname, c.relname, a.attname, q.constvalue, sum(q.occurences), sum(q.execution_count),
       sum(q.nbfiltered), bool_and(q.qualid IS NULL AND q.eval_type = 'f')
  FROM {schema}.pg_qualstats q
  JOIN pg_class c ON c.oid = coalesce(q.lrelid, q.rrelid)
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = coalesce(q.lattnum, q.rattnum)
  JOIN pg_operator o ON o.oid = q.opno
 WHERE q.queryid = ANY(%s) AND q.constvalue IS NOT NULL AND o.oprname = '='
 GROUP BY 1, 2, 3, 4, 5
"""
_EXAMPLES = "SELECT queryid, query FROM {schema}.pg_qualstats_example_queries() WHERE queryid = ANY(%s)"


@dataclass(frozen=True)
class Constant:
    literal: str  # as pg_qualstats prints it: 'pending'::text
    executions: int
    kept: float | None = None  # share of the rows it let through, when it was the scan's only filter


@dataclass
class QualConstants:
    """The constants of `column = constant` predicates per statement, and one example text per statement."""

    equal: dict[tuple[int, str, str], list[Constant]] = field(default_factory=dict)  # (queryid, table, column)
    examples: dict[int, str] = field(default_factory=dict)


def read_constants(conn: PgConnection, queryids: Sequence[int]) -> QualConstants | str:
    """What pg_qualstats holds for these statements; or why it cannot be read (a sentence)."""
    with conn.cursor() as cur:
        cur.execute("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = %s", (EXTENSION,))
        row = cur.fetchone()
    if row is None:
        return f"pg_qualstats is not installed in this database: {INSTALL}"
    schema = sql.Identifier(str(row[0]).strip('"'))
    found = QualConstants()
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL(_CONSTANTS).format(schema=schema), (list(queryids),))
            for queryid, nsp, rel, column, literal, executions, rows, filtered, alone in cur.fetchall():
                # alone: the scan's only filter, so its filter ratio is this constant's own
                kept = 1.0 - float(filtered) / float(rows) if alone and rows else None
                found.equal.setdefault((queryid, f"{nsp}.{rel}", column), []).append(
                    Constant(literal, int(executions), kept))
            cur.execute(sql.SQL(_EXAMPLES).format(schema=schema), (list(queryids),))
            found.examples = {queryid: text for queryid, text in cur.fetchall() if text}
    except psycopg2.Error as err:
        conn.rollback()
        return f"pg_qualstats cannot be read ({first_line(err)}): {INSTALL}"
    return found


# ---- constants in index expressions ---------------------------------------------------------------------------
def _reads_column(node: Any) -> bool:
    return any(isinstance(n, ast.ColumnRef) for n in walk(node, into_subqueries=False))


def _param(node: Any) -> int | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node.number if isinstance(node, ast.ParamRef) else None


def key_parameters(query: str) -> set[int]:
    """The $n an index expression would hold: arguments of a function of a column, jsonb keys of a column."""
    try:
        tree = parse_sql(query)
    except ParseError:
        return set()
    found: set[int] = set()
    for node in walk(tree):
        if isinstance(node, ast.FuncCall) and node.funcname[-1].sval in KEY_FUNCTIONS and _reads_column(node):
            found |= {n for a in node.args or () if (n := _param(a)) is not None}
        elif (isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP
              and node.name[-1].sval in _KEY_OPERATORS and node.lexpr is not None and _reads_column(node.lexpr)):
            number = _param(node.rexpr)
            found |= {number} if number is not None else set()
    return found


def example_constants(normalized: str, example: str) -> dict[int, str]:
    """$n -> the literal the example has in its place, token by token; {} when the two texts do not line up.
    The example may be wrapped (`EXPLAIN ... <statement>`, a trailing semicolon)."""
    try:
        ours, theirs = list(scan(normalized)), list(scan(example))
    except ParseError:
        return {}
    if not ours:
        return {}
    for start, token in enumerate(theirs[:_MAX_PREFIX]):
        if token.name == ours[0].name:
            found = _aligned(normalized, ours, example, theirs[start:])
            if found is not None:
                return found
    return {}


def _aligned(normalized: str, ours: list[Any], example: str, theirs: list[Any]) -> dict[int, str] | None:
    found: dict[int, str] = {}
    j = 0
    for token in ours:
        if j >= len(theirs):
            return None
        other = theirs[j]
        if token.name == "PARAM" and other.name != "PARAM":
            start = other.start
            if other.name == "ASCII_45" and j + 1 < len(theirs):  # a negative number: its sign is part of it
                j += 1
                other = theirs[j]
            if other.name not in _CONSTANT_TOKENS:
                return None
            found[int(normalized[token.start + 1 : token.end + 1])] = example[start : other.end + 1]
        elif token.name != other.name:
            return None
        j += 1
    return found if all(t.name == "ASCII_59" for t in theirs[j:]) else None


def _substitute(query: str, values: dict[int, str]) -> str:
    """The statement with these parameters replaced by literals."""
    edits = [(t.start, t.end + 1, values[int(query[t.start + 1 : t.end + 1])]) for t in scan(query)
             if t.name == "PARAM" and int(query[t.start + 1 : t.end + 1]) in values]
    for start, end, text in sorted(edits, reverse=True):
        query = query[:start] + text + query[end:]
    return query


def with_key_constants(stmt: Statement, examples: dict[int, str]) -> Statement:
    wanted = key_parameters(stmt.query)
    example = examples.get(stmt.queryid) if stmt.queryid is not None else None
    if not wanted or example is None:
        return stmt
    values = {n: v for n, v in example_constants(stmt.query, example).items() if n in wanted}
    return replace(stmt, query=renumber_parameters(_substitute(stmt.query, values))) if values else stmt


# ---- dominant constants ---------------------------------------------------------------------------------------
def equality_parameters(query: str, catalog: Catalog) -> dict[tuple[str, str], int]:
    """(table, column) -> $n for each `column = $n` whose table is certain and whose column has one parameter."""
    try:
        tree = parse_sql(query)
    except ParseError:
        return {}
    tables: dict[str, Table] = {}
    for node in walk(tree):
        if isinstance(node, ast.RangeVar) and (table := catalog.resolve(node.relname, node.schemaname)):
            tables[node.alias.aliasname if node.alias else node.relname] = table
    found: dict[tuple[str, str], list[int]] = {}
    for node in walk(tree):
        if not (isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP
                and node.name[-1].sval == "="):
            continue
        for side, other in ((node.lexpr, node.rexpr), (node.rexpr, node.lexpr)):
            number = _param(other)
            if number is not None and isinstance(side, ast.ColumnRef):
                names = [f.sval for f in side.fields if isinstance(f, ast.String)]
                owners = [t for alias, t in tables.items()
                          if (len(names) == 1 or alias == names[-2]) and t.column(names[-1]) is not None]
                if len(owners) == 1:
                    found.setdefault((owners[0].qualified, names[-1]), []).append(number)
    return {key: numbers[0] for key, numbers in found.items() if len(set(numbers)) == 1}


def _plain(literal: str) -> str:
    """A string or number literal without pg_qualstats' cast ('pending'::text -> 'pending'): typed by its
    context, as the application's literal was."""
    for suffix in ("::text", "::character varying", "::integer", "::bigint", "::smallint", "::numeric"):
        if literal.endswith(suffix) and (literal[0] == "'" or suffix != "::text"):
            return literal[: -len(suffix)]
    return literal


def _value_text(literal: str) -> str | None:
    """A literal as pg_stats prints values ('pending'::text -> pending); None when it is cut short or odd."""
    try:
        node = parse_sql(f"SELECT {literal}")[0].stmt.targetList[0].val
    except (ParseError, AttributeError, IndexError):
        return None
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return constant_text(node) if isinstance(node, ast.A_Const) and not node.isnull else None


def interesting(table: Table, column_name: str, value: str, kept: float | None = None) -> bool:
    """A constant whose rows are rare in a column of few values, or far from the generic plan's average; its
    share of the rows from pg_stats, else from the filter ratio pg_qualstats measured (`kept`)."""
    column = table.column(column_name)
    if column is None:
        return False
    share = value_fraction(column, table, FixedFilter(column_name, "eq", value, ""))
    share = kept if share is None else share
    distinct = distinct_values(table, IndexKey(column=column_name))
    if share is None or distinct <= 0:
        return False
    if share <= RARE_FRACTION and category(column, table):
        return True
    average = (1.0 - (column.null_frac or 0.0)) / distinct
    return average > 0 and (share / average >= SKEW_RATIO or share / average <= 1.0 / SKEW_RATIO)


def variants(stmt: Statement, constants: QualConstants, catalog: Catalog) -> list[Statement]:
    """The statement split by its dominant constants (the generic rest first), or [stmt] when it has none."""
    if stmt.queryid is None:
        return [stmt]
    best: list[tuple[int, Constant, float]] = []
    for (table_name, column), number in equality_parameters(stmt.query, catalog).items():
        seen = constants.equal.get((stmt.queryid, table_name, column), [])
        total = sum(c.executions for c in seen)
        table = catalog.tables[table_name]
        picked = []
        for const in sorted(seen, key=lambda c: -c.executions)[:MAX_VARIANTS]:
            share = const.executions / total if total else 0.0
            value = _value_text(const.literal)
            if (share_lower_bound(const.executions, total) >= DOMINANT_SHARE and value is not None
                    and interesting(table, column, value, const.kept)):
                picked.append((number, const, share))
        if sum(p[2] for p in picked) > sum(p[2] for p in best):
            best = picked
    if not best:
        return [stmt]
    rest = max(0.0, 1.0 - sum(share for _, _, share in best))
    split = [_weighted(stmt, stmt.query, rest)] if rest >= 0.01 else []
    split += [_weighted(stmt, renumber_parameters(_substitute(stmt.query, {number: _plain(const.literal)})), share)
              for number, const, share in best]
    return split


def share_lower_bound(hits: int, total: int, z: float = CONFIDENCE_Z) -> float:
    """The lower end of the Wilson score interval of a share `hits / total` of sampled executions."""
    if total <= 0:
        return 0.0
    p = hits / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, (centre - spread) / (1 + z * z / total))


def _weighted(stmt: Statement, query: str, share: float) -> Statement:
    return replace(stmt, query=query, calls=max(1, round(stmt.calls * share)),
                   total_time_ms=stmt.total_time_ms * share, rows=round(stmt.rows * share))


def expand(statements: Sequence[Statement], constants: QualConstants, catalog: Catalog) -> list[Statement]:
    """The workload with expression keys filled in from examples and dominant constants split out."""
    result: list[Statement] = []
    for stmt in statements:
        result += variants(with_key_constants(stmt, constants.examples), constants, catalog)
    return result


def would_add(statements: Sequence[Statement], catalog: Catalog, reason: str) -> str | None:
    """The one note of a captured workload without pg_qualstats: which statements its constants would serve."""
    keys = sum(1 for s in statements if key_parameters(s.query))
    categories = 0
    for stmt in statements:
        for table_name, column_name in equality_parameters(stmt.query, catalog):
            table = catalog.tables[table_name]
            column = table.column(column_name)
            if column is not None and column.most_common_vals and category(column, table):
                categories += 1
                break
    if not keys and not categories:
        return None
    return (f"{reason}. With it, indexd would read the real constants of {categories} statement(s) comparing a "
            f"column of few values with a parameter (partial indexes on rare values, skew-aware costs) and of "
            f"{keys} whose index expression hides a parameter (meta ->> $1, to_tsvector($1, ...))")


def with_real_constants(conn: PgConnection, statements: Sequence[Statement],
                        catalog: Catalog) -> tuple[list[Statement], str | None]:
    """A captured workload with pg_qualstats' constants applied (`expand`); without pg_qualstats, the same
    statements and the note of what it would add (None when it would add nothing)."""
    queryids = sorted({s.queryid for s in statements if s.queryid is not None})
    if not queryids:
        return list(statements), None
    found = read_constants(conn, queryids)
    if isinstance(found, str):
        return list(statements), would_add(statements, catalog, found)
    expanded = expand(statements, found, catalog)
    log.debug("pg_qualstats: %d statements became %d", len(statements), len(expanded))
    return expanded, None
