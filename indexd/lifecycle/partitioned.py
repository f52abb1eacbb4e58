"""Building a recommended index on a partitioned table, which CREATE INDEX CONCURRENTLY cannot do in one go.

The procedure keeps every lock short:

1. CREATE INDEX <name> ON ONLY <parent> (...): an INVALID index on the parent alone, a brief lock on it;
2. for each leaf partition, CREATE INDEX CONCURRENTLY a per-partition index with the same definition, then
   ALTER INDEX <parent index> ATTACH PARTITION <partition index>; a sub-partitioned partition gets its own
   ON ONLY index first, its leaves are built and attached to it, then it is attached to the level above;
3. the parent index turns valid by itself once every partition has an attached index.

The whole build is one create_index intent and one outcome in the audit log; each step (statement, duration)
is listed in the outcome's `after`. Between steps the pause and leadership are read again: when either says
stop, or a step fails, everything created so far is dropped (each drop audited; after a lock timeout by the
next run's cleanup, see `deferred`) and the recommendation goes back to be retried (a lock timeout or a pause),
is interrupted (a lost connection, a cancel) or fails. Per-partition indexes are named
`indexd_p$<partition>_<hash>`: no advisor name contains "$", so start-up cleanup can tell them apart.
"""

from __future__ import annotations

import hashlib
import logging
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
from pglast import ast, parse_sql
from pglast.stream import RawStream
from psycopg2 import sql

from indexd.config.schema import IndexingSettings
from indexd.db.pool import Database, PgConnection
from indexd.errors import BuildError
from indexd.lifecycle.ddl import (
    BuildFailure,
    BuildResult,
    ProgressCallback,
    ProgressPoller,
    Settle,
    audit_write,
    classify_build_failure,
    index_size,
    index_state,
    settle_failure,
)
from indexd.lifecycle.deferred import defer_drop
from indexd.lifecycle.drop import drop_index_concurrently
from indexd.state import audit, recommendations
from indexd.state.recommendation_rows import StoredRecommendation
from indexd.state.statuses import Status

log = logging.getLogger(__name__)

PARTITION_PREFIX = "indexd_p$"
_SAFE = set(string.ascii_lowercase + string.digits + "_")

Checkpoint = Callable[[], str | None]  # a reason to stop between two steps, or None to go on


@dataclass(frozen=True)
class TreeNode:
    """A table of a partition tree: the partitioned parent, a sub-partitioned partition, or a leaf."""

    oid: int
    schema: str
    name: str
    relkind: str  # p: partitioned, r: leaf table, f: foreign table
    parent_oid: int | None


@dataclass(frozen=True)
class Step:
    """One statement of the procedure: create an index on one table of the tree, or attach one to its parent."""

    kind: str  # create_only | create_concurrently | attach
    schema: str  # the table's (and so its index's) schema
    table: str
    index: str
    parent: tuple[str, str] | None = None  # attach: the (schema, name) of the index it is attached to

    def render(self, body: sql.Composable) -> sql.Composed:
        target = sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.index))
        if self.kind == "attach":
            assert self.parent is not None
            return sql.SQL("ALTER INDEX {}.{} ATTACH PARTITION {}").format(
                sql.Identifier(self.parent[0]), sql.Identifier(self.parent[1]), target)
        only = self.kind == "create_only"
        head = "CREATE INDEX {} ON ONLY {}.{} " if only else "CREATE INDEX CONCURRENTLY {} ON {}.{} "
        return sql.SQL(head).format(sql.Identifier(self.index), sql.Identifier(self.schema),
                                    sql.Identifier(self.table)) + body


# ---- pure: names, plan, definition ----------------------------------------------------------------------


def partition_index_name(parent_index: str, schema: str, table: str) -> str:
    """Deterministic name of the index of one partition for one parent index, within 63 bytes (ASCII only)."""
    safe = "".join(ch if ch in _SAFE else "_" for ch in table.lower())[:40]
    digest = hashlib.sha256(f"{parent_index}\0{schema}\0{table}".encode()).hexdigest()[:8]
    return f"{PARTITION_PREFIX}{safe}_{digest}"


def plan_steps(tree: list[TreeNode], index_name: str) -> list[Step]:
    """The statements that build `index_name` on the tree's root, depth first, partitions in name order."""
    children: dict[int | None, list[TreeNode]] = {}
    for node in tree:
        children.setdefault(node.parent_oid, []).append(node)
    roots = children.get(None, [])
    if len(roots) != 1 or roots[0].relkind != "p":
        raise BuildError(f"not the partition tree of one partitioned table: {[n.name for n in roots]}")
    steps: list[Step] = []

    def visit(node: TreeNode, name: str) -> None:
        if node.relkind == "f":
            raise BuildError(f"partition {node.schema}.{node.name} is a foreign table: it cannot be indexed, so "
                             "the partitioned index could never become valid")
        if node.relkind != "p":
            steps.append(Step("create_concurrently", node.schema, node.name, name))
            return
        steps.append(Step("create_only", node.schema, node.name, name))
        for child in sorted(children.get(node.oid, []), key=lambda n: (n.schema, n.name)):
            child_name = partition_index_name(index_name, child.schema, child.name)
            visit(child, child_name)
            steps.append(Step("attach", child.schema, child.name, child_name, parent=(node.schema, name)))

    visit(roots[0], index_name)
    return steps


def index_body(rec: StoredRecommendation) -> sql.Composed:
    """`USING method (keys) [INCLUDE (...)] [WHERE ...]` of the recommended index, composed from its stored
    structure (method, include, where_clause) and the keys of its create_sql's parse tree (the stored `columns`
    are labels such as "a DESC", ambiguous for a column of that name). Checked to define the same index as
    create_sql, so the translation can never build something else."""
    stmt = parse_sql(rec.create_sql)[0].stmt
    assert isinstance(stmt, ast.IndexStmt)
    keys = [RawStream()(elem) for elem in stmt.indexParams or ()]
    if len(keys) != len(rec.columns):
        raise BuildError(f"recommendation #{rec.id}: create_sql has {len(keys)} keys, columns lists "
                         f"{len(rec.columns)}")
    body = sql.SQL("USING {} ({})").format(sql.Identifier(rec.method), sql.SQL(", ").join(map(sql.SQL, keys)))
    if rec.include:
        body += sql.SQL(" INCLUDE ({})").format(sql.SQL(", ").join(sql.Identifier(str(c)) for c in rec.include))
    if rec.where_clause:
        body += sql.SQL(" WHERE {}").format(sql.SQL(rec.where_clause))
    return body


def check_same_index(rec: StoredRecommendation, rendered: str) -> None:
    """Refuse a rebuilt statement whose parse tree differs from create_sql's (other than being ON ONLY)."""
    ours = parse_sql(rendered)[0].stmt
    theirs = parse_sql(rec.create_sql)[0].stmt
    assert isinstance(ours, ast.IndexStmt) and isinstance(theirs, ast.IndexStmt)
    assert ours.relation is not None and theirs.relation is not None
    if ours.relation.schemaname is not None and theirs.relation.schemaname is None:
        ours.relation.schemaname = None
    ours.relation.inh, ours.concurrent = theirs.relation.inh, theirs.concurrent
    if ours != theirs:
        raise BuildError(f"recommendation #{rec.id}: its stored structure does not define the index of its "
                         f"create_sql ({rendered} vs {rec.create_sql})")


# ---- the catalog -----------------------------------------------------------------------------------------

_TREE = """
SELECT c.oid::bigint, n.nspname, c.relname, c.relkind::text, h.inhparent::bigint
  FROM pg_partition_tree(%s::regclass) t
  JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_inherits h ON h.inhrelid = c.oid AND t.level > 0
 ORDER BY t.level, n.nspname, c.relname
"""


def is_partitioned(conn: PgConnection, schema: str, table: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s", (schema, table))
        row = cur.fetchone()
    return bool(row and row[0])


def read_tree(conn: PgConnection, schema: str, table: str) -> list[TreeNode]:
    qualified = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string(conn)
    with conn.cursor() as cur:
        cur.execute(_TREE, (qualified,))
        rows = cur.fetchall()
    return [TreeNode(int(r[0]), r[1], r[2], r[3], None if r[4] is None else int(r[4])) for r in rows]


# ---- running it ----------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What one partitioned build has done so far: the evidence for its outcome and its undo list."""

    steps: list[dict[str, Any]]
    created: list[tuple[str, str]]  # (schema, index) in creation order
    step_started: float = 0.0  # monotonic start of the running step (a failure's duration is that step's)


class _Stopped(Exception):
    """A checkpoint said stop between two steps (a pause, lost leadership)."""


def build_partitioned(db: Database, conn: PgConnection, rec: StoredRecommendation, *, pid: int,
                      settings: IndexingSettings, previous: Status, job_id: str | None,
                      progress: ProgressCallback | None, checkpoint: Checkpoint) -> BuildResult:
    """Build `rec` on its partitioned table with the ON ONLY / CONCURRENTLY / ATTACH procedure (see the module);
    never raises for a failed build. `conn` is the prepared autocommit session (timeouts set) of backend `pid`."""
    state = db.settings.state_schema
    try:
        steps = plan_steps(read_tree(conn, rec.table_schema, rec.table_name), rec.index_name)
        body = index_body(rec)
        check_same_index(rec, Step("create_only", rec.table_schema, rec.table_name, rec.index_name)
                         .render(body).as_string(conn))
    except BuildError as exc:
        refusal = str(exc)
        log.warning("not building %s: %s", rec.index_name, refusal)
        audit_write(db, lambda c: recommendations.mark_failed(c, state, rec.id, refusal))
        return BuildResult(rec.table_schema, rec.index_name, "failed", refusal, recommendation_id=rec.id)
    _drop_leftovers(db, conn, steps[1:], rec, job_id)
    texts = [s.render(body).as_string(conn) for s in steps]
    before = {"action": "create_index", "index_schema": rec.table_schema, "index_name": rec.index_name,
              "backend_pid": pid, "table": rec.table, "status": previous, "partitioned": True,
              "partition_indexes": [[s.schema, s.index] for s in steps if s.kind != "attach"][1:],
              "estimated_size_bytes": rec.estimated_size_bytes, "improvement_pct": rec.improvement_pct}
    intent = audit_write(db, lambda c: audit.record_intent(
        c, state, action="create_index", target=f"{rec.table_schema}.{rec.index_name}", sql=";\n".join(texts),
        reason=f"recommendation #{rec.id} (partitioned table: ON ONLY, then each partition CONCURRENTLY, attached)",
        before=before, recommendation_id=rec.id, job_id=job_id))
    run, started = _Run([], []), time.monotonic()
    try:
        _run_steps(db, conn, steps, texts, run, pid, progress, checkpoint)
    except (psycopg2.Error, _Stopped) as exc:
        outcome = "refused" if isinstance(exc, _Stopped) else "failed"
        return _undo(db, rec, run, _failure(exc, run, settings), outcome, previous, intent,
                     time.monotonic() - started, settings, job_id)
    return _finish(db, conn, rec, run, intent, time.monotonic() - started, previous, settings)


def _run_steps(db: Database, conn: PgConnection, steps: list[Step], texts: list[str], run: _Run, pid: int,
               progress: ProgressCallback | None, checkpoint: Checkpoint) -> None:
    leaves = sum(1 for s in steps if s.kind == "create_concurrently")
    done = 0
    for n, (step, text) in enumerate(zip(steps, texts, strict=True)):
        if n:
            stop = checkpoint()
            if stop:
                raise _Stopped(stop)
        began = run.step_started = time.monotonic()
        if step.kind == "create_concurrently":
            done += 1
            log.info("building %s: partition %d of %d, %s.%s", steps[0].index, done, leaves, step.schema, step.table)
            run.created.append((step.schema, step.index))  # an INVALID leftover if it fails: dropped too
            with ProgressPoller(db, pid, step.index, progress), conn.cursor() as cur:
                cur.execute(text)
        else:
            with conn.cursor() as cur:
                cur.execute(text)
            if step.kind == "create_only":
                run.created.append((step.schema, step.index))
        run.steps.append({"step": step.kind, "table": f"{step.schema}.{step.table}", "index": step.index,
                          "duration_s": round(time.monotonic() - began, 3)})


def _finish(db: Database, conn: PgConnection, rec: StoredRecommendation, run: _Run, intent: int,
            duration: float, previous: Status, settings: IndexingSettings) -> BuildResult:
    state = db.settings.state_schema
    found = index_state(conn, rec.table_schema, rec.index_name)
    if found is None or not found.valid:  # every partition has its index attached: PostgreSQL says valid
        reason = "the partitioned index is still INVALID after every partition's index was attached"
        return _undo(db, rec, run, BuildFailure(reason, Settle.FAIL), "failed", previous, intent, duration, settings,
                     None)
    try:
        with conn.cursor() as cur:  # on a partitioned table, ANALYZE covers the partitions too
            cur.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(rec.table_schema),
                                                        sql.Identifier(rec.table_name)))
    except psycopg2.Error as exc:
        log.warning("ANALYZE of %s after building %s failed: %s", rec.table, rec.index_name, str(exc).strip())
    size = index_size(conn, rec.table_schema, rec.index_name)
    audit_write(db, lambda c: recommendations.mark_built(c, state, rec.id), patient=True)
    audit_write(db, lambda c: audit.record_outcome(
        c, state, intent, outcome="succeeded", duration_s=duration,
        after={"size_bytes": size, "valid": True, "partitioned": True, "steps": run.steps}), patient=True)
    log.info("built partitioned %s.%s in %.1fs over %d partition(s) (%s bytes)", rec.table_schema, rec.index_name,
             duration, sum(1 for s in run.steps if s["step"] == "create_concurrently"), size)
    return BuildResult(rec.table_schema, rec.index_name, "succeeded", None, duration, size, rec.id, intent)


def _failure(exc: BaseException, run: _Run, settings: IndexingSettings) -> BuildFailure:
    """What stopped the build: a checkpoint (a pause, lost leadership: given back, retried later), a refused
    plan (failed), or a failed statement, classified as a plain build's."""
    if isinstance(exc, _Stopped):
        return BuildFailure(f"stopped between partitions: {exc}", Settle.RELEASE)
    if isinstance(exc, BuildError):
        return BuildFailure(str(exc), Settle.FAIL)
    return classify_build_failure(exc, lock_timeout_s=settings.lock_timeout.total_seconds(),
                                  build_timeout_s=settings.build_timeout.total_seconds(),
                                  duration_s=time.monotonic() - run.step_started)


def _undo(db: Database, rec: StoredRecommendation, run: _Run, failure: BuildFailure, outcome: str,
          previous: Status, intent: int, duration: float, settings: IndexingSettings,
          job_id: str | None) -> BuildResult:
    """Drop what this build created (the parent's index first: its drop takes the attached ones along),
    record the outcome, and settle the recommendation as the failure says (given back, interrupted, failed).

    After a lock timeout nothing is dropped now: a drop would wait for the same locks a second time, so it is
    recorded as deferred (see `deferred`) and left to `cleanup_invalid`, which `apply` runs before the first
    build of its next run. Otherwise, dropping the parent's index locks every partition for a moment: should
    it time out, the INVALID parent index with whatever is attached to it is left to that cleanup as well."""
    state, reason, retry = db.settings.state_schema, failure.reason, failure.settle is not Settle.FAIL
    log.warning("building partitioned %s.%s stopped: %s; dropping what it created", rec.table_schema,
                rec.index_name, reason)
    dropped: list[str] = []
    left: list[str] = []
    for n, (schema, name) in enumerate(run.created):
        if n and not _detached(db, schema, name):
            continue  # gone with the parent's index, or attached to it and left with it (for start-up cleanup)
        if failure.lock_timeout:  # a drop now would wait for the same locks again: the next run's cleanup
            defer_drop(db, schema, name, why=f"half-built partitioned index of a build that gave up: {reason}",
                       recommendation_id=rec.id, job_id=job_id)
            left.append(f"{schema}.{name}")
            continue
        result = drop_index_concurrently(db, schema, name, reason=f"half-built partitioned index: {reason}",
                                         recommendation_id=rec.id, job_id=job_id, if_exists=True)
        (dropped if result.ok else left).append(f"{schema}.{name}")
    after = {"partitioned": True, "steps": run.steps, "dropped": dropped, "left_for_cleanup": left}
    try:
        audit_write(db, lambda c: audit.record_outcome(c, state, intent, outcome=outcome, duration_s=duration,
                                                       reason=reason, after=after), patient=True)
        retry = settle_failure(db, rec.id, previous, failure, settings.build_attempts)
    except psycopg2.Error:
        log.error("could not record the stopped build of %s; start-up cleanup will", rec.index_name, exc_info=True)
    return BuildResult(rec.table_schema, rec.index_name, "failed", reason, duration, None, rec.id, intent, retry)


def _detached(db: Database, schema: str, name: str) -> bool:
    """The index exists and is attached to no parent index (an attached one can only go with its parent)."""
    with db.connection(autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                    (schema, name))
        row = cur.fetchone()
    return bool(row and row[0])


def _drop_leftovers(db: Database, conn: PgConnection, steps: list[Step], rec: StoredRecommendation,
                    job_id: str | None) -> None:
    """Per-partition indexes of this build's names left by an earlier attempt go first (their names are taken)."""
    for step in steps:
        if step.kind != "attach" and index_state(conn, step.schema, step.index) is not None:
            drop_index_concurrently(db, step.schema, step.index, reason="leftover of an earlier partitioned build",
                                    recommendation_id=rec.id, job_id=job_id)
