"""Each job run is a fault boundary: its own id in every log line, one INFO line stating its decision, a
traceback when it fails, a row in `job_runs`, counted in the metrics. One database failing never stops the
others, and a failed run never stops the next one.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from indexd.clock import monotonic, utcnow
from indexd.db.pool import PgConnection
from indexd.errors import ConnectionFailed, GuardRefusal, first_line
from indexd.log import job_context, scrub
from indexd.service.databases import ensure_prepared, ensure_settled, is_leader
from indexd.service.runtime import DatabaseRuntime, JobRecord, Runtime
from indexd.service.tasks import LEADER_ONLY, TASKS, TaskEnv, TaskResult
from indexd.state import job_runs

log = logging.getLogger(__name__)

RECORD_TIMEOUT_S = 5.0
T = TypeVar("T")
Observer = Callable[[JobRecord], None]


class JobRunner:
    """Runs jobs by (name, database) for the scheduler; tracks what is running so a stop can wait for it."""

    def __init__(self, runtime: Runtime, observe: Observer | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.runtime = runtime
        self.observe = observe
        self.clock = clock
        self.closed = threading.Event()  # set on stop: no new run starts
        self.cancel = threading.Event()  # set when the stop grace is over: backups and restores abort
        self._running: dict[str, str] = {}  # job_id -> "database:job"
        self._cond = threading.Condition()

    def running(self) -> list[str]:
        with self._cond:
            return sorted(self._running.values())

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs (or timeout); True when idle."""
        deadline = monotonic() + timeout
        with self._cond:
            while self._running:
                left = deadline - monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def run(self, job: str, database: str) -> JobRecord | None:
        """One run of `job` for `database`; never raises (the scheduler must keep going)."""
        if self.closed.is_set():
            return None
        target = self.runtime.databases.get(database)
        if target is None:  # removed by a reload while this run was queued
            return None
        with job_context(job, database) as job_id:
            with self._cond:
                self._running[job_id] = f"{database}:{job}"
            try:
                return self._run(job, target, job_id)
            finally:
                with self._cond:
                    self._running.pop(job_id, None)
                    self._cond.notify_all()

    def _run(self, job: str, target: DatabaseRuntime, job_id: str) -> JobRecord:
        started, t0 = self.clock(), monotonic()
        row = _record_start(target, job, job_id, started)
        logged = False
        try:
            result = self._decide(job, target, job_id, started)
        except GuardRefusal as exc:
            result = TaskResult("skipped", f"skipped: {exc}")
        except ConnectionFailed as exc:
            result = TaskResult("failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - the fault boundary: log, count, carry on
            log.error("%s on %s failed: %s\n%s", job, target.name, exc, traceback.format_exc())
            result, logged = TaskResult("failed", f"{type(exc).__name__}: {exc}"), True
        duration = monotonic() - t0
        message = scrub(result.message)
        if result.outcome != "failed":
            log.info("%s on %s: %s (%.1fs)", job, target.name, message, duration)
        elif not logged:
            log.error("%s on %s failed: %s (%.1fs)", job, target.name, message, duration)
        rec = JobRecord(job, target.name, job_id, started, duration, result.outcome, message)
        _record_finish(target, row, rec)
        self.runtime.record_run(rec)
        if self.observe is not None:
            self.observe(rec)
        return rec

    def _decide(self, job: str, target: DatabaseRuntime, job_id: str, now: datetime) -> TaskResult:
        ensure_prepared(target)
        if job in LEADER_ONLY:
            if not is_leader(target):
                return TaskResult("skipped", "skipped: another indexd process is the leader for this database")
            ensure_settled(target, job_id)
        env = TaskEnv(self.runtime.settings, target, job_id, self.cancel, now)
        return TASKS[job](env)

    def round(self, database: str, jobs: tuple[str, ...]) -> None:
        """Run several jobs of one database in order (the start-up round); each is its own fault boundary."""
        for job in jobs:
            if self.closed.is_set():
                return
            self.run(job, database)


def _record_start(target: DatabaseRuntime, job: str, job_id: str, started: datetime) -> int | None:
    """A job_runs row for this run; None (logged) when the state schema cannot be reached, or (silently) on a
    standby, where nothing can be written (the log keeps the run)."""
    if target.standby:
        return None
    schema = target.settings.state_schema
    return _write(target, lambda conn: job_runs.start_run(conn, schema, job=job, job_id=job_id, started_at=started))


def _record_finish(target: DatabaseRuntime, row: int | None, rec: JobRecord) -> None:
    if target.standby:
        return
    schema = target.settings.state_schema
    if row is None:
        _write(target, lambda conn: job_runs.record_run(conn, schema, job=rec.job, job_id=rec.job_id,
                                                        started_at=rec.started_at, outcome=rec.outcome,
                                                        message=rec.message))
        return
    _write(target, lambda conn: job_runs.finish_run(conn, schema, row, outcome=rec.outcome, message=rec.message))


def _write(target: DatabaseRuntime, write: Callable[[PgConnection], T]) -> T | None:
    try:
        with target.db.connection(statement_timeout=timedelta(seconds=RECORD_TIMEOUT_S)) as conn:
            return write(conn)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never fail a job
        log.warning("job_runs of %s not written: %s", target.name, first_line(exc))
        return None
