"""What every index DDL statement of indexd shares: the session it runs in (timeouts, memory), the audit writes
around it, catalog look-ups of the index it touches, the reason a failure is given, and progress polling.

Each statement runs on a dedicated autocommit connection with lock_timeout (so it gives up rather than queue the
application behind it) and statement_timeout; its audit rows are written on a separate pooled connection, so
they survive a crash in the middle of it.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg2
import psycopg2.errorcodes
import psycopg2.errors

from indexd.db.pool import Database, PgConnection
from indexd.db.retry import classify, sqlstate_of
from indexd.errors import first_line
from indexd.state import recommendations
from indexd.state.statuses import Status

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



def ms(seconds: float) -> str:
    return str(int(seconds * 1000))


def prepare_session(conn: PgConnection, *, lock_timeout_s: float, statement_timeout_s: float,
             maintenance_work_mem: int | None = None, parallel_workers: int | None = None) -> int:
    """Set this session's timeouts (and memory, and the parallel workers a build may use) for one DDL statement;
    returns its backend pid."""
    with conn.cursor() as cur:
        # client_connection_check_interval: if indexd dies mid-statement the server notices within seconds and
        # stops the build, instead of running it to the end for nobody.
        cur.execute(
            "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false),"
            " set_config('client_connection_check_interval', %s, false), pg_backend_pid()",
            (ms(lock_timeout_s), ms(statement_timeout_s), ms(CLIENT_CHECK_S)),
        )
        pid = int(cur.fetchone()[3])
        if maintenance_work_mem:
            cur.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                        (f"{max(1024, maintenance_work_mem // 1024)}kB",))
        if parallel_workers is not None:
            cur.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", (str(parallel_workers),))
    return pid


def audit_write(db: Database, write: Callable[[PgConnection], Any], *, patient: bool = False) -> Any:
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
            log.warning("audit write failed (%s); retrying", first_line(exc))
            time.sleep(1.0)


class IndexState(NamedTuple):
    """An index as the catalog shows it right now."""

    oid: int
    valid: bool
    definition: str
    building: bool  # a CREATE INDEX is running for it (or, partitioned, for one of its partitions' indexes)
    partitioned: bool  # an index on a partitioned table: it has no storage, its partitions' indexes do


def index_state(conn: PgConnection, schema: str, name: str) -> IndexState | None:
    """The index's state, or None when it does not exist."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.oid, i.indisvalid, pg_get_indexdef(c.oid),"
            " EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid),"
            " c.relkind = 'I'"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema, name),
        )
        row = cur.fetchone()
    return None if row is None else IndexState(int(row[0]), bool(row[1]), str(row[2]), bool(row[3]), bool(row[4]))


# A partitioned index has no storage of its own: its size is that of its partitions' indexes.
_SIZE = """
SELECT CASE WHEN c.relkind = 'I'
            THEN (SELECT coalesce(sum({size}), 0) FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid)
            ELSE (SELECT {size} FROM pg_class p WHERE p.oid = c.oid) END
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s
"""


def index_size(conn: PgConnection, schema: str, name: str) -> int | None:
    """The index's size on disk (summed over its partitions' indexes when it is partitioned); from the catalog's
    page counts when someone holds one locked (autocommit connection with lock_timeout: we never wait long for
    a figure)."""
    with conn.cursor() as cur:
        try:
            cur.execute(_SIZE.format(size="pg_relation_size(p.oid)"), (schema, name))
        except psycopg2.errors.LockNotAvailable:
            cur.execute(_SIZE.format(size="p.relpages::bigint * current_setting('block_size')::bigint"),
                        (schema, name))
        row = cur.fetchone()
    return None if row is None else int(row[0])


def describe_failure(exc: BaseException, lock_timeout_s: float) -> tuple[str, bool]:
    """A human reason for a failed DDL statement, and whether it is worth retrying later unchanged."""
    code = sqlstate_of(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if code == psycopg2.errorcodes.LOCK_NOT_AVAILABLE:
        return f"lock timeout after {lock_timeout_s:g}s: the table is busy, will retry later ({first})", True
    if code == psycopg2.errorcodes.QUERY_CANCELED:
        return f"build timeout (statement_timeout) or cancelled: {first}", False
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError) and code is None:
        return f"connection lost during the build: {first}", False
    return f"{code or type(exc).__name__}: {first}", False


class Settle(enum.Enum):
    """What a failed build means for its recommendation (state.recommendations)."""

    RELEASE = enum.auto()  # given back unchanged, retried later: the table was busy
    INTERRUPT = enum.auto()  # the run was cut off: retried, counted against indexing.build_attempts
    FAIL = enum.auto()  # the index itself failed


@dataclass(frozen=True)
class BuildFailure:
    reason: str
    settle: Settle
    lock_timeout: bool = False  # gave up waiting for a lock: its leftover is dropped by the next run (`deferred`)


TIMEOUT_SHARE = 0.95  # a cancel after this share of build_timeout is that timeout, not an operator or a stop


def classify_build_failure(exc: BaseException, *, lock_timeout_s: float, build_timeout_s: float,
                           duration_s: float) -> BuildFailure:
    """Why a CREATE INDEX statement failed, by SQLSTATE (db.retry's classes): a lock timeout is given back;
    a lost connection, a server shutting down or a cancel (an operator, indexd stopping) interrupted the run;
    anything else (permission, duplicate key, a bad definition, the build timeout) is the index's own failure.
    A cancel and the statement timeout share one SQLSTATE: the time the statement ran tells them apart."""
    code = sqlstate_of(exc)
    reason, _ = describe_failure(exc, lock_timeout_s)
    if code == psycopg2.errorcodes.LOCK_NOT_AVAILABLE:
        return BuildFailure(reason, Settle.RELEASE, lock_timeout=True)
    if code == psycopg2.errorcodes.QUERY_CANCELED:
        first = first_line(exc)
        if duration_s >= TIMEOUT_SHARE * build_timeout_s:
            return BuildFailure(f"build timeout after {duration_s:.0f}s (indexing.build_timeout): {first}",
                                Settle.FAIL)
        return BuildFailure(f"cancelled (by an operator, or indexd stopping): {first}", Settle.INTERRUPT)
    if classify(exc).transient:
        return BuildFailure(reason, Settle.INTERRUPT)
    return BuildFailure(reason, Settle.FAIL)


def settle_failure(db: Database, rec_id: int, previous: Status, failure: BuildFailure, max_attempts: int) -> bool:
    """Move a claimed recommendation as its failure says (audit connection, patient); True when it stays in
    the queue (given back, or interrupted below indexing.build_attempts)."""
    schema = db.settings.state_schema
    if failure.settle is Settle.RELEASE:
        audit_write(db, lambda c: recommendations.release(c, schema, rec_id, previous, failure.reason),
                    patient=True)
        return True
    if failure.settle is Settle.INTERRUPT:
        now = audit_write(db, lambda c: recommendations.mark_interrupted(c, schema, rec_id, failure.reason,
                                                                         max_attempts=max_attempts), patient=True)
        return bool(now == Status.INTERRUPTED)
    audit_write(db, lambda c: recommendations.mark_failed(c, schema, rec_id, failure.reason), patient=True)
    return False


class ProgressPoller:
    """Polls pg_stat_progress_create_index for one backend on a connection of its own, in a thread."""

    def __init__(self, db: Database, pid: int, index: str, callback: ProgressCallback | None,
                 interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self._db, self._pid, self._index, self._callback = db, pid, index, callback
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{index}", daemon=True)
        self.last: BuildProgress | None = None

    def __enter__(self) -> ProgressPoller:
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

