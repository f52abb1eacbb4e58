"""Building and dropping indexes without blocking the application: CREATE / DROP INDEX CONCURRENTLY.

Each statement runs on a dedicated autocommit connection with lock_timeout (so the build gives up rather than
queue the application behind it), statement_timeout and maintenance_work_mem set; each is audited before and
after on a separate connection, so the audit survives a crash in the middle. A failed build leaves an INVALID
index behind: it is dropped at once when possible, else by `cleanup_invalid` on the next start.

These functions do not check the guards: `apply` does, right before it calls them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.errorcodes
import psycopg2.errors
from pglast import ast, parse_sql
from pglast.parser import ParseError
from psycopg2 import sql

from indexd.config.schema import DatabaseSettings
from indexd.db.pool import Database, PgConnection
from indexd.errors import BuildError
from indexd.lifecycle import audit

log = logging.getLogger(__name__)

OWN_PREFIX = "indexd_"  # every index indexd creates is named indexd_<table>_<cols>_<hash>
PROGRESS_INTERVAL_S = 2.0
CLIENT_CHECK_S = 1.0  # how soon the server stops a statement whose client (indexd) has gone
OUTCOME_RETRY_S = 15.0  # how long to keep trying to record an outcome while the server comes back


@dataclass(frozen=True)
class BuildProgress:
    """One reading of pg_stat_progress_create_index for a running build."""

    index: str
    phase: str
    blocks_done: int
    blocks_total: int
    tuples_done: int
    tuples_total: int
    lockers_done: int
    lockers_total: int

    @property
    def pct(self) -> float | None:
        """Completion of the current phase, when the phase reports one."""
        if self.blocks_total:
            return 100.0 * self.blocks_done / self.blocks_total
        if self.tuples_total:
            return 100.0 * self.tuples_done / self.tuples_total
        return None


ProgressCallback = Callable[[BuildProgress], None]


@dataclass(frozen=True)
class BuildResult:
    """What became of one CREATE or DROP INDEX CONCURRENTLY."""

    index_schema: str
    index_name: str
    outcome: str  # succeeded | failed | skipped
    reason: str | None = None
    duration_s: float = 0.0
    size_bytes: int | None = None
    recommendation_id: int | None = None
    intent_id: int | None = None
    retry_later: bool = False  # failed harmlessly (lock timeout): the recommendation waits for the next run

    @property
    def ok(self) -> bool:
        return self.outcome in ("succeeded", "skipped")

    @property
    def qualified(self) -> str:
        return f"{self.index_schema}.{self.index_name}"


@dataclass(frozen=True)
class StoredRecommendation:
    """One row of the state table `recommendations`, as the lifecycle reads it."""

    id: int
    status: str
    fingerprint: str
    table_schema: str
    table_name: str
    columns: list[Any]
    method: str
    where_clause: str | None
    include: list[Any]
    index_name: str
    create_sql: str
    estimated_size_bytes: int | None
    improvement_pct: float | None
    write_overhead: float | None
    queries: list[Any]
    reason: str | None = None

    @property
    def table(self) -> str:
        return f"{self.table_schema}.{self.table_name}"


REC_COLUMNS = ("id", "status", "fingerprint", "table_schema", "table_name", "columns", "method", "where_clause",
               "include", "index_name", "create_sql", "estimated_size_bytes", "improvement_pct", "write_overhead",
               "queries", "reason")


def load_recommendations(conn: PgConnection, schema: str, *, statuses: tuple[str, ...] | None = None,
                         ids: tuple[int, ...] | None = None) -> list[StoredRecommendation]:
    """Recommendations by status and/or id, the most beneficial first."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if statuses is not None:
        where.append(sql.SQL("status = ANY(%s)"))
        params.append(list(statuses))
    if ids is not None:
        where.append(sql.SQL("id = ANY(%s)"))
        params.append(list(ids))
    statement = sql.SQL("SELECT {} FROM {}.recommendations WHERE {}"
                        " ORDER BY improvement_pct DESC NULLS LAST, id").format(
        sql.SQL(", ").join(map(sql.Identifier, REC_COLUMNS)), sql.Identifier(schema), sql.SQL(" AND ").join(where))
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return [StoredRecommendation(*row) for row in cur.fetchall()]


def claim_for_build(conn: PgConnection, schema: str, rec_id: int) -> str | None:
    """Move a pending/approved recommendation to `building`; its previous status, or None if it was not
    buildable any more (another process claimed it first, or a person rejected it meanwhile)."""
    statement = sql.SQL(
        "UPDATE {0}.recommendations r SET status = 'building', updated_at = now() FROM"
        " (SELECT id, status FROM {0}.recommendations WHERE id = %s FOR UPDATE) p"
        " WHERE r.id = p.id AND p.status IN ('pending', 'approved') RETURNING p.status"
    ).format(sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (rec_id,))
        row = cur.fetchone()
    return None if row is None else str(row[0])


def finish_build(conn: PgConnection, schema: str, rec_id: int, status: str, *, reason: str | None = None) -> None:
    """Leave `building` for built, failed, or back to where it was (a harmless failure, retried later)."""
    statement = sql.SQL(
        "UPDATE {}.recommendations SET status = %s, reason = coalesce(%s, reason), updated_at = now()"
        " WHERE id = %s AND status = 'building'"
    ).format(sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (status, reason, rec_id))


# ---- helpers -------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


def _prepare(conn: PgConnection, *, lock_timeout_s: float, statement_timeout_s: float,
             maintenance_work_mem: int | None = None) -> int:
    """Set this session's timeouts (and memory) for one DDL statement; returns its backend pid."""
    with conn.cursor() as cur:
        # client_connection_check_interval: if indexd dies mid-statement the server notices within seconds and
        # stops the build, instead of running it to the end for nobody.
        cur.execute(
            "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false),"
            " set_config('client_connection_check_interval', %s, false), pg_backend_pid()",
            (_ms(lock_timeout_s), _ms(statement_timeout_s), _ms(CLIENT_CHECK_S)),
        )
        pid = int(cur.fetchone()[3])
        if maintenance_work_mem:
            cur.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                        (f"{max(1024, maintenance_work_mem // 1024)}kB",))
    return pid


def _audit(db: Database, write: Callable[[PgConnection], Any], *, patient: bool = False) -> Any:
    """Write to the audit log on a pooled autocommit connection; when `patient`, keep trying for a while
    (a server restarting under a build is exactly when its outcome matters)."""
    deadline = time.monotonic() + (OUTCOME_RETRY_S if patient else 0)
    while True:
        try:
            with db.connection(autocommit=True) as conn:
                return write(conn)
        except psycopg2.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("audit write failed (%s); retrying", str(exc).strip().splitlines()[0])
            time.sleep(1.0)


def _index_state(conn: PgConnection, schema: str, name: str) -> tuple[int, bool, str, bool] | None:
    """(oid, valid, definition, being built now) of an index, or None when it does not exist."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.oid, i.indisvalid, pg_get_indexdef(c.oid),"
            " EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema, name),
        )
        row = cur.fetchone()
    return None if row is None else (int(row[0]), bool(row[1]), str(row[2]), bool(row[3]))


def _index_size(conn: PgConnection, schema: str, name: str) -> int | None:
    """The index's size on disk; from the catalog's page count when someone holds it locked (autocommit
    connection with lock_timeout: we never wait long for a figure)."""
    where = " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
    with conn.cursor() as cur:
        try:
            cur.execute("SELECT pg_relation_size(c.oid)" + where, (schema, name))
        except psycopg2.errors.LockNotAvailable:
            cur.execute("SELECT c.relpages::bigint * current_setting('block_size')::bigint" + where, (schema, name))
        row = cur.fetchone()
    return None if row is None else int(row[0])


def _describe(exc: BaseException, lock_timeout_s: float) -> tuple[str, bool]:
    """A human reason for a failed DDL statement, and whether it is worth retrying later unchanged."""
    code = getattr(exc, "pgcode", None)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if code == psycopg2.errorcodes.LOCK_NOT_AVAILABLE:
        return f"lock timeout after {lock_timeout_s:g}s: the table is busy, will retry later ({first})", True
    if code == psycopg2.errorcodes.QUERY_CANCELED:
        return f"build timeout (statement_timeout) or cancelled: {first}", False
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError) and code is None:
        return f"connection lost during the build: {first}", False
    return f"{code or type(exc).__name__}: {first}", False


def check_create_sql(rec: StoredRecommendation) -> None:
    """Refuse anything but one CREATE INDEX CONCURRENTLY of the recommended name on the recommended table."""
    try:
        stmts = parse_sql(rec.create_sql)
    except ParseError as exc:
        raise BuildError(f"recommendation #{rec.id}: create_sql does not parse: {exc}") from exc
    stmt = stmts[0].stmt if len(stmts) == 1 else None
    problems = []
    if not isinstance(stmt, ast.IndexStmt):
        problems.append("is not a single CREATE INDEX")
    else:
        if not stmt.concurrent:
            problems.append("is not CONCURRENTLY (it would block writes)")
        if stmt.idxname != rec.index_name:
            problems.append(f"names the index {stmt.idxname!r}, not {rec.index_name!r}")
        rel = stmt.relation
        target = (None, None) if rel is None else (rel.schemaname or rec.table_schema, rel.relname)
        if target != (rec.table_schema, rec.table_name):
            problems.append(f"targets {target[0]}.{target[1]}, not {rec.table}")
    if problems:
        raise BuildError(f"recommendation #{rec.id}: create_sql {'; '.join(problems)}: {rec.create_sql}")


class _ProgressPoller:
    """Polls pg_stat_progress_create_index for one backend on a connection of its own, in a thread."""

    def __init__(self, db: Database, pid: int, index: str, callback: ProgressCallback | None,
                 interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self._db, self._pid, self._index, self._callback = db, pid, index, callback
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{index}", daemon=True)
        self.last: BuildProgress | None = None

    def __enter__(self) -> _ProgressPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _read(self, conn: PgConnection) -> BuildProgress | None:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total, lockers_done, lockers_total"
                " FROM pg_stat_progress_create_index WHERE pid = %s",
                (self._pid,),
            )
            row = cur.fetchone()
        return None if row is None else BuildProgress(self._index, row[0], *(int(v or 0) for v in row[1:]))

    def _run(self) -> None:
        try:
            with self._db.connection(autocommit=True) as conn:
                while not self._stop.wait(self._interval):
                    progress = self._read(conn)
                    if progress is None or progress == self.last:
                        continue
                    self.last = progress
                    log.info("building %s: %s%s", self._index, progress.phase,
                             f" {progress.pct:.0f}%" if progress.pct is not None else "")
                    if self._callback:
                        self._callback(progress)
        except Exception:  # progress is informative only: never let it disturb the build
            log.warning("progress polling for %s stopped", self._index, exc_info=True)


# ---- create --------------------------------------------------------------------------------------------


def build_index(
    db: Database,
    rec: StoredRecommendation,
    settings: DatabaseSettings,
    *,
    job_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Build one recommended index with CREATE INDEX CONCURRENTLY; never raises for a failed build.

    On success: ANALYZE the table, record the size, status `built`. On lock timeout: status back to what it
    was (retried on a later run). On any failure the INVALID leftover is dropped (audited).
    """
    check_create_sql(rec)
    schema, ix = db.settings.state_schema, settings.indexing
    previous = _audit(db, lambda c: claim_for_build(c, schema, rec.id))
    if previous is None:
        return BuildResult(rec.table_schema, rec.index_name, "skipped", "another build or decision took it first",
                           recommendation_id=rec.id)
    try:
        conn = db.dedicated_connection(autocommit=True)
        try:
            return _build_on(db, conn, rec, settings, previous, job_id, progress)
        finally:
            conn.close()
    except psycopg2.Error as exc:  # before the build started (connecting, preparing): give the claim back
        reason, _ = _describe(exc, ix.lock_timeout.total_seconds())
        log.warning("could not start building %s: %s", rec.index_name, reason)
        with contextlib.suppress(psycopg2.Error):
            _audit(db, lambda c: finish_build(c, schema, rec.id, previous, reason=reason))
        return BuildResult(rec.table_schema, rec.index_name, "failed", reason, recommendation_id=rec.id,
                           retry_later=True)


def _build_on(db: Database, conn: PgConnection, rec: StoredRecommendation, settings: DatabaseSettings,
              previous: str, job_id: str | None, progress: ProgressCallback | None) -> BuildResult:
    schema, ix = db.settings.state_schema, settings.indexing
    lock_s = ix.lock_timeout.total_seconds()
    pid = _prepare(conn, lock_timeout_s=lock_s, statement_timeout_s=ix.build_timeout.total_seconds(),
                   maintenance_work_mem=int(ix.maintenance_work_mem))
    existing = _index_state(conn, rec.table_schema, rec.index_name)
    if existing is not None and existing[1]:
        _audit(db, lambda c: finish_build(c, schema, rec.id, "built"))
        return BuildResult(rec.table_schema, rec.index_name, "skipped", "the index already exists and is valid",
                           size_bytes=_index_size(conn, rec.table_schema, rec.index_name), recommendation_id=rec.id)
    if existing is not None:
        dropped = drop_index_concurrently(db, rec.table_schema, rec.index_name, job_id=job_id,
                                          reason="INVALID leftover of an earlier build", recommendation_id=rec.id)
        if not dropped.ok:
            reason = f"an INVALID leftover of an earlier build could not be dropped: {dropped.reason}"
            _audit(db, lambda c: finish_build(c, schema, rec.id, previous, reason=reason))
            return BuildResult(rec.table_schema, rec.index_name, "failed", reason, recommendation_id=rec.id,
                               retry_later=True)
    before = {"action": "create_index", "index_schema": rec.table_schema, "index_name": rec.index_name,
              "backend_pid": pid,
              "table": f"{rec.table_schema}.{rec.table_name}", "status": previous,
              "estimated_size_bytes": rec.estimated_size_bytes, "improvement_pct": rec.improvement_pct}
    intent = _audit(db, lambda c: audit.record_intent(
        c, schema, action="create_index", target=f"{rec.table_schema}.{rec.index_name}", sql=rec.create_sql,
        reason=f"recommendation #{rec.id}", before=before, recommendation_id=rec.id, job_id=job_id))
    started = time.monotonic()
    try:
        with _ProgressPoller(db, pid, rec.index_name, progress), conn.cursor() as cur:
            cur.execute(rec.create_sql)
    except psycopg2.Error as exc:
        return _build_failed(db, conn, rec, exc, previous, intent, time.monotonic() - started, lock_s, job_id)
    duration = time.monotonic() - started
    _analyze(conn, rec)
    size = _index_size(conn, rec.table_schema, rec.index_name)
    _audit(db, lambda c: finish_build(c, schema, rec.id, "built"), patient=True)
    _audit(db, lambda c: audit.record_outcome(c, schema, intent, outcome="succeeded", duration_s=duration,
                                              after={"size_bytes": size, "valid": True}), patient=True)
    log.info("built %s.%s in %.1fs (%s bytes)", rec.table_schema, rec.index_name, duration, size)
    return BuildResult(rec.table_schema, rec.index_name, "succeeded", None, duration, size, rec.id, intent)


def _analyze(conn: PgConnection, rec: StoredRecommendation) -> None:
    """Fresh statistics for the planner (expression indexes get their own); a failure costs only freshness."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(rec.table_schema),
                                                        sql.Identifier(rec.table_name)))
    except psycopg2.Error as exc:
        log.warning("ANALYZE of %s after building %s failed (autovacuum will do it): %s", rec.table,
                    rec.index_name, str(exc).strip())


def _build_failed(db: Database, conn: PgConnection, rec: StoredRecommendation, exc: psycopg2.Error, previous: str,
                  intent: int, duration: float, lock_s: float, job_id: str | None) -> BuildResult:
    schema = db.settings.state_schema
    reason, retry = _describe(exc, lock_s)
    log.warning("building %s.%s failed: %s", rec.table_schema, rec.index_name, reason)
    status = previous if retry else "failed"
    try:
        _audit(db, lambda c: audit.record_outcome(c, schema, intent, outcome="failed", duration_s=duration,
                                                  reason=reason), patient=True)
        _audit(db, lambda c: finish_build(c, schema, rec.id, status, reason=reason), patient=True)
    except psycopg2.Error:
        log.error("could not record the failed build of %s; start-up cleanup will", rec.index_name, exc_info=True)
    if not conn.closed:
        drop_index_concurrently(db, rec.table_schema, rec.index_name, reason=f"INVALID leftover: {reason}",
                                recommendation_id=rec.id, job_id=job_id, if_exists=True)
    return BuildResult(rec.table_schema, rec.index_name, "failed", reason, duration, None, rec.id, intent, retry)


# ---- drop ----------------------------------------------------------------------------------------------


def drop_index_concurrently(
    db: Database,
    schema: str,
    index_name: str,
    *,
    reason: str,
    action: str = "drop_index",
    recommendation_id: int | None = None,
    job_id: str | None = None,
    if_exists: bool = True,
) -> BuildResult:
    """DROP INDEX CONCURRENTLY IF EXISTS, audited (its definition is kept in `before`, so it can be rebuilt).

    Uses the database's indexing.lock_timeout; never raises for a failed drop (see the result).
    """
    state, ix = db.settings.state_schema, db.settings.indexing
    lock_s = ix.lock_timeout.total_seconds()
    conn = db.dedicated_connection(autocommit=True)
    try:
        pid = _prepare(conn, lock_timeout_s=lock_s, statement_timeout_s=ix.build_timeout.total_seconds())
        found = _index_state(conn, schema, index_name)
        statement = sql.SQL("DROP INDEX CONCURRENTLY {}{}.{}").format(
            sql.SQL("IF EXISTS ") if if_exists else sql.SQL(""), sql.Identifier(schema), sql.Identifier(index_name))
        text = statement.as_string(conn)
        before: dict[str, Any] = {"action": action, "index_schema": schema, "index_name": index_name,
                                  "existed": found is not None, "backend_pid": pid}
        if found is not None:
            before.update(definition=found[2], valid=found[1], size_bytes=_index_size(conn, schema, index_name))
        intent = _audit(db, lambda c: audit.record_intent(
            c, state, action=action, target=f"{schema}.{index_name}", sql=text, reason=reason, before=before,
            recommendation_id=recommendation_id, job_id=job_id))
        started = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        except psycopg2.Error as exc:
            why, retry = _describe(exc, lock_s)
            log.warning("dropping %s.%s failed: %s", schema, index_name, why)
            _audit(db, lambda c: audit.record_outcome(c, state, intent, outcome="failed", reason=why,
                                                      duration_s=time.monotonic() - started), patient=True)
            return BuildResult(schema, index_name, "failed", why, time.monotonic() - started,
                               recommendation_id=recommendation_id, intent_id=intent, retry_later=retry)
        duration = time.monotonic() - started
        _audit(db, lambda c: audit.record_outcome(c, state, intent, outcome="succeeded", duration_s=duration,
                                                  after={"existed": found is not None}), patient=True)
        log.info("dropped %s.%s (%s)", schema, index_name, reason)
        return BuildResult(schema, index_name, "succeeded", reason, duration, recommendation_id=recommendation_id,
                           intent_id=intent)
    finally:
        conn.close()


# ---- start-up cleanup ----------------------------------------------------------------------------------

INTERRUPTED = "interrupted: the process or the server stopped during the statement"
INDEX_ACTIONS = ("create_index", "drop_index", "revert_index")


def _invalid_own_indexes(conn: PgConnection) -> list[tuple[str, str]]:
    """INVALID indexes named indexd_* that no backend is building right now."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE NOT i.indisvalid AND left(c.relname, %s) = %s"
            " AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid)"
            " ORDER BY 1, 2",
            (len(OWN_PREFIX), OWN_PREFIX),
        )
        return [(r[0], r[1]) for r in cur.fetchall()]


def cleanup_invalid(db: Database, *, job_id: str | None = None) -> list[str]:
    """Settle what a crash left behind; run at start-up, while holding leadership.

    Drops (audited) the INVALID indexes named indexd_* that no backend is building — only ours, never
    anyone else's — then records the outcome of builds and drops whose process died before it could, and
    moves recommendations stuck in `building` to built or failed. Returns the dropped indexes "schema.name".
    """
    with db.connection(autocommit=True) as conn:
        leftovers = _invalid_own_indexes(conn)
    dropped = []
    for schema, name in leftovers:
        result = drop_index_concurrently(db, schema, name, reason="INVALID leftover of an interrupted build",
                                         job_id=job_id)
        if result.outcome == "succeeded":
            dropped.append(result.qualified)
    _settle_interrupted(db)
    if dropped:
        log.info("cleanup: dropped %d INVALID leftover index(es): %s", len(dropped), ", ".join(dropped))
    return dropped


def _live_backends(conn: PgConnection) -> set[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        return {int(r[0]) for r in cur.fetchall()}


def _settle_interrupted(db: Database) -> None:
    state = db.settings.state_schema
    with db.connection(autocommit=True) as conn:
        live = _live_backends(conn)
        for intent_id, before in audit.unfinished_intents(conn, state, INDEX_ACTIONS):
            if before.get("backend_pid") in live:
                continue  # its statement may still be running (a former leader's): not ours to settle
            found = _index_state(conn, before.get("index_schema", ""), before.get("index_name", ""))
            if found is not None and found[3]:
                continue  # still being built by a live backend
            creating = before.get("action") == "create_index"
            done = (found is not None and found[1]) if creating else found is None
            audit.record_outcome(conn, state, intent_id, outcome="succeeded" if done else "failed",
                                 reason="finished; recorded after an interruption" if done else INTERRUPTED)
        for rec in load_recommendations(conn, state, statuses=("building",)):
            found = _index_state(conn, rec.table_schema, rec.index_name)
            if found is not None and found[3]:
                continue
            built = found is not None and found[1]
            finish_build(conn, state, rec.id, "built" if built else "failed", reason=None if built else INTERRUPTED)
            log.warning("cleanup: recommendation #%s was left building; now %s", rec.id,
                        "built" if built else "failed")
