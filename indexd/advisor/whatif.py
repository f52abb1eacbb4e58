"""What-if costing: the planner's estimated cost of a statement with a set of hypothetical (HypoPG) indexes.

One `WhatIf` session owns one dedicated connection in a read-only session (EXPLAIN without ANALYZE never runs a
statement; read-only refuses anything that would). Statements with `$n` parameters are costed as generic plans
(PREPARE + plan_cache_mode = force_generic_plan + EXPLAIN EXECUTE with NULLs), the way PostgreSQL 16's
EXPLAIN (GENERIC_PLAN) does; `costable` makes pg_stat_statements' normalized text preparable first (typed
literals, parameter types), and the form PostgreSQL accepted is kept for the statement's later EXPLAINs.
Hypothetical indexes live only in this backend's memory; the session removes them when it ends, on success and
on error alike.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg2
import psycopg2.errors
from pglast.parser import ParseError, parse_sql
from psycopg2 import sql

from indexd.advisor.costable import RETRY_SQLSTATES, Plannable, attempts, parameter_count, pin_limits
from indexd.advisor.model import Catalog, IndexCandidate
from indexd.advisor.paramtypes import Signature
from indexd.advisor.skips import SkipReason, planner_reason, statement_reason
from indexd.db.pool import Database, PgConnection
from indexd.errors import IndexdError, first_line

log = logging.getLogger(__name__)

HYPOPG_HELP = (
    "install it on the database server (Debian/Ubuntu: apt-get install postgresql-15-hypopg), then run "
    "CREATE EXTENSION hypopg; in database {db}"
)
_EXPLAINABLE = {"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"}
_PREPARED = "indexd_whatif"
_SIGNATURES = """
SELECT ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(t, n) ORDER BY n),
       p.proargnames, p.proargmodes::text[], p.pronargdefaults,
       CASE WHEN p.provariadic <> 0 THEN format_type(p.provariadic, NULL) END, format_type(p.prorettype, NULL)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = %(name)s
  AND CASE WHEN %(schema)s::text IS NULL THEN pg_function_is_visible(p.oid) ELSE n.nspname = %(schema)s END
"""


class HypoPGMissing(IndexdError):
    """The database has no HypoPG extension, so no what-if cost can be estimated."""


class HypoPGDenied(IndexdError):
    """The role may not use a HypoPG function or view: every candidate set would be lost, so advice stops."""


def denied(err: psycopg2.Error, database: str) -> HypoPGDenied:
    return HypoPGDenied(f"HypoPG refused the role on {database}: {first_line(err)}; 'indexd check' prints the GRANT "
                        "statements, or re-run sql/roles.sql as a superuser (again after every CREATE EXTENSION "
                        "hypopg)")


@dataclass(frozen=True)
class PlanCost:
    """The planner's total cost of one statement and the hypothetical indexes its plan uses."""

    cost: float
    used: frozenset[IndexCandidate] = frozenset()


@dataclass
class WhatIfStats:
    explains: int = 0
    cache_hits: int = 0
    hypothetical_created: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    reasons: dict[int, SkipReason] = field(default_factory=dict)  # the named reason of each error
    # statements prepared, by the form that succeeded: "as given" (LIMIT pins aside), "rewritten" (typed
    # literals, EXTRACT), "typed by context", "typed by role" (see costable.attempts)
    by_form: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@functools.lru_cache(maxsize=16384)
def check_explainable(query: str) -> tuple[str, SkipReason] | None:
    """Why a statement cannot be what-if costed (None when it can): exactly one SELECT/INSERT/UPDATE/DELETE."""
    try:
        stmts = parse_sql(query)
    except ParseError as exc:
        return f"does not parse: {exc}", SkipReason.PARSE_ERROR
    if len(stmts) != 1:
        return f"{len(stmts)} statements in one text", SkipReason.UNSUPPORTED
    kind = type(stmts[0].stmt).__name__
    return None if kind in _EXPLAINABLE else (f"{kind} cannot be explained", statement_reason(kind))


def index_names_in(plan: Any) -> set[str]:
    """Every "Index Name" anywhere in an EXPLAIN (FORMAT JSON) plan."""
    found: set[str] = set()
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "Index Name" in node:
                found.add(node["Index Name"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def describe_database(conn: PgConnection, configured: str) -> str:
    """The real database a connection is on, with its configured name and server when that name differs."""
    real = conn.info.dbname
    if real == configured:
        return real
    host = conn.info.host or "localhost"
    where = host if host.startswith("/") else f"{host}:{conn.info.port}"
    return f"{real} ({configured} on {where})"


def require_hypopg(conn: PgConnection, database: str) -> None:
    """HypoPGMissing, saying how to install it, unless the extension is created in this database.

    `database` is the configured name; the message names the real database (where CREATE EXTENSION must run).
    """
    with conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'hypopg'")
        if cur.fetchone() is None:
            raise HypoPGMissing(f"HypoPG is not installed in database {describe_database(conn, database)}: "
                                + HYPOPG_HELP.format(db=conn.info.dbname))


class WhatIf:
    """A what-if session on one dedicated connection; use as a context manager."""

    def __init__(
        self,
        db: Database,
        *,
        statement_timeout: timedelta = timedelta(seconds=10),
        max_hypothetical: int = 64,
        through_view: Iterable[int] = (),
        catalog: Catalog | None = None,
    ) -> None:
        self.db = db
        self.catalog = catalog or Catalog()
        self.statement_timeout = statement_timeout
        self.max_hypothetical = max_hypothetical
        self.through_view = frozenset(through_view)
        self.stats = WhatIfStats()
        self._conn: PgConnection | None = None
        self._alive: dict[IndexCandidate, str] = {}  # candidate -> hypothetical index name
        self._cache: dict[tuple[int, frozenset[IndexCandidate]], PlanCost | None] = {}
        self._forms: dict[str, Plannable] = {}  # statement -> the form PostgreSQL prepared
        self._signatures: dict[tuple[str, ...], list[Signature]] = {}

    # ---- session ----------------------------------------------------------------------------------------
    def __enter__(self) -> WhatIf:
        conn = self.db.dedicated_connection(autocommit=True)
        try:
            require_hypopg(conn, self.db.name)
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT set_config('statement_timeout', %s, false), "
                    "set_config('default_transaction_read_only', 'on', false), "
                    "set_config('plan_cache_mode', 'force_generic_plan', false), hypopg_reset()",
                    (str(int(self.statement_timeout.total_seconds() * 1000)),),
                )
        except psycopg2.errors.InsufficientPrivilege as err:
            conn.close()
            raise denied(err, self.db.name) from err
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def __exit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        self._alive.clear()
        if conn is None:
            return
        try:
            if not conn.closed:
                with conn.cursor() as cur:
                    cur.execute("SELECT hypopg_reset()")
                    cur.execute("DEALLOCATE ALL")
        except psycopg2.Error as err:
            log.warning("could not reset hypothetical indexes on %s: %s", self.db.name, err)
        finally:
            conn.close()

    @property
    def conn(self) -> PgConnection:
        if self._conn is None:
            raise RuntimeError("WhatIf used outside its 'with' block")
        return self._conn

    # ---- costing ----------------------------------------------------------------------------------------
    def cost(self, statement_index: int, query: str, indexes: frozenset[IndexCandidate]) -> float | None:
        """Estimated total cost of the statement with these hypothetical indexes (None: cannot be costed)."""
        found = self.plan(statement_index, query, indexes)
        return None if found is None else found.cost

    def plan(self, statement_index: int, query: str, indexes: frozenset[IndexCandidate]) -> PlanCost | None:
        if statement_index in self.through_view:
            # HypoPG crashes the server on partial hypothetical indexes read through a view.
            indexes = frozenset(c for c in indexes if c.where is None)
        key = (statement_index, indexes)
        if key in self._cache:
            self.stats.cache_hits += 1
            return self._cache[key]
        if statement_index in self.stats.errors:
            return None
        result = self._explain(statement_index, query, indexes)
        self._cache[key] = result
        if result is not None and result.used != indexes:
            self._cache.setdefault((statement_index, result.used), result)
        return result

    def _explain(self, statement_index: int, query: str, indexes: frozenset[IndexCandidate]) -> PlanCost | None:
        problem = check_explainable(query)
        if problem is not None:
            self._failed(statement_index, *problem)
            return None
        try:
            self._materialize(indexes)
        except psycopg2.Error as err:
            # A candidate HypoPG cannot create: this set is uncostable, the statement is not at fault.
            log.warning("hypothetical index refused on %s: %s", self.db.name, first_line(err))
            return None
        try:
            plan = self._explain_json(query)
        except psycopg2.Error as err:
            if self.conn.closed:
                raise
            self._failed(statement_index, first_line(err), self._reason(query, err))
            return None
        self.stats.explains += 1
        names = index_names_in(plan)
        used = frozenset(c for c in indexes if self._alive.get(c) in names)
        return PlanCost(float(plan[0]["Plan"]["Total Cost"]), used)

    def _failed(self, statement_index: int, problem: str, reason: SkipReason) -> None:
        log.debug("statement %s cannot be costed (%s): %s", statement_index, reason, problem)
        self.stats.errors[statement_index] = problem
        self.stats.reasons[statement_index] = reason

    @staticmethod
    def _reason(query: str, err: psycopg2.Error) -> SkipReason:
        # Without parameters the statement is sent exactly as given: its own errors are its own.
        return planner_reason(err.pgcode, as_given=parameter_count(query) == 0)

    def _explain_json(self, query: str) -> Any:
        """The plan of the statement's first form PostgreSQL prepares (see `costable.attempts`)."""
        known = self._forms.get(query)
        if known is not None:
            return self._run(known)
        failure: psycopg2.Error | None = None
        for number, form in enumerate(attempts(query, self.catalog, self.signatures)):
            try:
                plan = self._run(form)
            except psycopg2.Error as err:
                if self.conn.closed or err.pgcode not in RETRY_SQLSTATES:
                    raise
                failure = err
                continue
            self._forms[query] = form
            self.stats.by_form[_form_label(number, form, query)] += 1
            return plan
        assert failure is not None
        raise failure

    def _run(self, form: Plannable) -> Any:
        with self.conn.cursor() as cur:
            if form.params == 0:
                cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(form.text))
                return cur.fetchone()[0]
            # One round trip: forget the previous statement, prepare this one, explain its generic plan.
            # (The query was checked to be exactly one statement, so nothing else can ride along.)
            name = sql.Identifier(_PREPARED)
            types = sql.SQL("")
            if form.types is not None:
                types = sql.SQL("({})").format(sql.SQL(", ").join(sql.SQL(t) for t in form.types))
            cur.execute(sql.Composed([
                sql.SQL("DEALLOCATE ALL; PREPARE {}{} AS ").format(name, types), sql.SQL(form.text),
                sql.SQL("; EXPLAIN (FORMAT JSON) EXECUTE {}({})").format(
                    name, sql.SQL(", ").join([sql.SQL("NULL")] * form.params)),
            ]))
            return cur.fetchone()[0]

    def signatures(self, name: tuple[str, ...]) -> list[Signature]:
        """The candidates of a function name (pg_proc), asked once per session."""
        if name not in self._signatures:
            with self.conn.cursor() as cur:
                cur.execute(_SIGNATURES, {"name": name[-1], "schema": name[-2] if len(name) > 1 else None})
                self._signatures[name] = [_signature(*row) for row in cur.fetchall()]
        return self._signatures[name]

    def _materialize(self, wanted: frozenset[IndexCandidate]) -> None:
        """Make exactly `wanted` the live hypothetical indexes, reusing what is already there when possible.
        HypoPGDenied when the role may not use HypoPG: not one set's fault, every set would be lost."""
        try:
            self._make_live(wanted)
        except psycopg2.errors.InsufficientPrivilege as err:
            raise denied(err, self.db.name) from err

    def _make_live(self, wanted: frozenset[IndexCandidate]) -> None:
        extra = [c for c in self._alive if c not in wanted]
        missing = sorted((c for c in wanted if c not in self._alive), key=IndexCandidate.fingerprint)
        if not extra and not missing:
            return
        with self.conn.cursor() as cur:
            if len(self._alive) - len(extra) + len(missing) > self.max_hypothetical or len(extra) > len(wanted):
                cur.execute("SELECT hypopg_reset()")
                self._alive.clear()
                missing = sorted(wanted, key=IndexCandidate.fingerprint)
            elif extra:
                names = [self._alive.pop(c) for c in extra]
                cur.execute("SELECT hypopg_drop_index(indexrelid) FROM hypopg_list_indexes "
                            "WHERE index_name = ANY(%s)", (names,))
            if missing:
                self._create(cur, missing)

    def _create(self, cur: Any, missing: list[IndexCandidate]) -> None:
        try:
            # Created one by one in this order (WITH ORDINALITY), so the names come back matched.
            cur.execute("SELECT (hypopg_create_index(ddl)).indexname FROM unnest(%s::text[]) "
                        "WITH ORDINALITY AS u(ddl, n) ORDER BY n",
                        ([c.create_sql(concurrently=False).as_string(self.conn) for c in missing],))
        except psycopg2.Error:
            # HypoPG is not transactional: the ones created before the failure would linger unseen.
            cur.execute("SELECT hypopg_reset()")
            self._alive.clear()
            raise
        for cand, row in zip(missing, cur.fetchall(), strict=True):
            self._alive[cand] = row[0]
        self.stats.hypothetical_created += len(missing)

    # ---- other planner questions --------------------------------------------------------------------------
    def row_fraction(self, schema: str, table: str, where: str) -> float:
        """The planner's estimate of the share of a table's rows that satisfy a predicate (for partial indexes)."""
        self._materialize(frozenset())
        with self.conn.cursor() as cur:
            query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            cur.execute(query)
            total = float(cur.fetchone()[0][0]["Plan"]["Plan Rows"])
            cur.execute(query + sql.SQL(" WHERE ") + sql.SQL(where))
            part = float(cur.fetchone()[0][0]["Plan"]["Plan Rows"])
        return min(1.0, part / total) if total > 0 else 1.0

    def rows_written(self, statement_index: int, query: str) -> float | None:
        """Rows one execution of an INSERT/UPDATE/DELETE writes, by the planner's estimate (None: unknown)."""
        if check_explainable(query) is not None or statement_index in self.stats.errors:
            return None
        try:
            self._materialize(frozenset())
            plan = self._explain_json(query)
        except psycopg2.Error as err:
            if self.conn.closed:
                raise
            self._failed(statement_index, first_line(err), self._reason(query, err))
            return None
        stack = [plan[0]["Plan"]]
        while stack:
            node = stack.pop()
            if node.get("Node Type") == "ModifyTable":
                # The rows come from the outer child; InitPlans and SubPlans only feed it values.
                children = [c for c in node.get("Plans", [])
                            if c.get("Parent Relationship") not in ("InitPlan", "SubPlan")]
                return float(children[0].get("Plan Rows", 1.0)) if children else 1.0
            stack.extend(node.get("Plans", []))
        return None

    def cached(self) -> Iterator[tuple[tuple[int, frozenset[IndexCandidate]], PlanCost | None]]:
        yield from self._cache.items()


def _form_label(number: int, form: Plannable, query: str) -> str:
    if number:
        return "typed by context" if number == 1 else "typed by role"
    return "as given" if form.text == pin_limits(query) else "rewritten"


def _signature(args: list[str], names: list[str] | None, modes: list[str] | None, defaults: int,
               variadic: str | None, returns: str) -> Signature:
    """A pg_proc row as a Signature: argument names aligned with the input arguments (OUT ones left out)."""
    names = names or []
    if modes:
        names = [n for n, m in zip(names, modes, strict=False) if m in ("i", "b", "v")]
    return Signature(tuple(args), tuple(names) + ("",) * (len(args) - len(names)), defaults, variadic, returns)
