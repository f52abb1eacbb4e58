"""Opening, preparing, settling and closing one managed database inside the daemon.

Prepare = migrate the state schema and set up leadership; settle = as leader, once, clean up what an earlier
crash left (INVALID indexes, unfinished audit intents). A database unreachable at start is prepared before its
first job instead, so one dead server never delays the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import psutil

from indexd.db.standby import STANDBY, is_standby
from indexd.errors import ConnectionFailed, first_line
from indexd.lifecycle.cleanup import cleanup_invalid
from indexd.lifecycle.latency import LatencyProbe
from indexd.lifecycle.leader import Leadership
from indexd.lifecycle.preflight_readings import log_missing
from indexd.service.runtime import DatabaseRuntime, Runtime
from indexd.service.workqueue import WorkQueue
from indexd.state.migrations import migrate

if TYPE_CHECKING:
    from indexd.service.jobs import JobRunner

log = logging.getLogger(__name__)

JOB_GRACE_S = 10.0  # running jobs may finish on their own this long after a stop request ...
CANCEL_GRACE_S = 20.0  # ... then backups and index builds are cancelled and get this long to unwind
SETTLE_S = 10.0  # per database, at stop: INVALID leftovers of cancelled builds dropped
CLOSE_WORKERS = 8  # databases closed at the same time at stop
STOP_BOUND_S = JOB_GRACE_S + CANCEL_GRACE_S + SETTLE_S + 5.0  # the whole stop (one database), HTTP and pools


def prepare(target: DatabaseRuntime) -> bool:
    """Migrate, set up leadership and, as leader, settle leftovers; False (logged) when unreachable now."""
    try:
        ensure_prepared(target)
        if is_leader(target):
            ensure_settled(target)
    except Exception as exc:  # noqa: BLE001 - retried before the database's next job
        log.error("database %s not prepared at start (retried before its next job): %s", target.name,
                  first_line(exc))
        return False
    return True


def ensure_prepared(target: DatabaseRuntime) -> None:
    """Migrate the state schema, log what the preflight finds missing and make the leadership object, once (the
    lock keeps two threads apart). A standby is not migrated (it is read-only; the primary's schema reaches it):
    it is asked again before each job, so a promoted standby is migrated then."""
    with target.prepare_lock:
        if target.prepared and not target.standby:
            return
        if target.closed:
            raise ConnectionFailed(f"database {target.name} is being closed")
        standby = is_standby(target.db)
        if target.prepared and standby:
            return
        if standby:
            log.warning("%s is a hot standby (%s): advice is logged, not stored; nothing is built, reverted or "
                        "dropped; backups run", target.name, STANDBY)
        else:
            applied = migrate(target.db)
            if applied:
                log.info("state schema of %s migrated to version %d", target.name, max(applied))
        if not target.prepared:
            log_missing(target.db)  # what `indexd check` would say is missing: one line each, once
            target.leadership = Leadership.for_database(target.db, target.coordinator, announce_changes=True)
            target.latency = LatencyProbe(target.db)
        target.standby = standby
        target.prepared = True


def is_leader(target: DatabaseRuntime) -> bool:
    """Whether we hold (or can take now) the leader lock; False only when another process holds it. A failing
    check raises, so a job says why it did not run instead of blaming another process."""
    lead = target.leadership
    if lead is None:  # not prepared yet
        return False
    return bool(lead.acquire())


def ensure_settled(target: DatabaseRuntime, job_id: str | None = None) -> None:
    """Once per process, as leader: drop INVALID leftovers of interrupted builds, settle their audit rows."""
    with target.prepare_lock:
        if target.settled or target.standby:  # a standby's leftovers are the primary's to settle
            return
        dropped = cleanup_invalid(target.db, job_id=job_id)
        target.settled = True
    if dropped:
        log.info("%s: dropped %d INVALID leftover index(es) of an interrupted run", target.name, len(dropped))


def stop_jobs(runner: JobRunner, runtime: Runtime) -> None:
    """No new runs; let running jobs finish for a while, then cancel backups and our index builds, wait again."""
    runner.closed.set()
    if runner.wait_idle(JOB_GRACE_S):
        return
    log.warning("stopping: cancelling running jobs: %s", ", ".join(runner.running()))
    runner.cancel.set()
    busy = runner.busy_databases()
    for target in runtime.database_list():
        if target.name in busy:  # an index build runs inside a job of its database
            cancel_own_builds(target)
    if not runner.wait_idle(CANCEL_GRACE_S):
        log.error("stopping: jobs still running after the grace period, leaving them: %s",
                  ", ".join(runner.running()))


def close_all(targets: list[DatabaseRuntime], settle: set[str]) -> bool:
    """Close every database, CLOSE_WORKERS at a time, within SETTLE_S and a little; settle (as leader) those named
    in `settle`: the ones whose jobs were running at the stop, where a cancelled build may have left something.
    False when some were still closing at the end of the bound."""
    closers = WorkQueue(CLOSE_WORKERS, "close")
    for target in targets:
        closers.submit(close_database, f"closing {target.name}", target, target.name in settle)
    done = closers.wait_idle(SETTLE_S + 3)
    closers.close()
    if not done:
        log.warning("stopping: %d database(s) still closing at the end of the stop bound", closers.pending())
    return done


def _own_client_ports() -> set[int]:
    """Local TCP ports of this process's connections: pg_stat_activity.client_port names them."""
    try:
        return {c.laddr.port for c in psutil.Process(os.getpid()).net_connections(kind="inet") if c.laddr}
    except (psutil.Error, OSError):
        return set()


def cancel_own_builds(target: DatabaseRuntime) -> list[int]:
    """pg_cancel_backend on the index builds this process runs (matched by client port); the build module
    drops the INVALID leftover of a cancelled build, and `settle` at the next start catches any other."""
    ports = _own_client_ports()
    if not ports:
        return []
    try:
        with target.db.connection(statement_timeout=timedelta(seconds=5)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT pid, pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state = 'active' AND client_port = ANY(%s)"
                " AND query ~* '^\\s*(CREATE|DROP) INDEX CONCURRENTLY'",
                (sorted(ports),),
            )
            pids = [int(r[0]) for r in cur.fetchall()]
    except Exception as exc:  # noqa: BLE001
        log.warning("stopping: could not cancel index builds on %s: %s", target.name, first_line(exc))
        return []
    if pids:
        log.warning("stopping: cancelled %d index build(s) on %s", len(pids), target.name)
    return pids


def close_database(target: DatabaseRuntime, settle: bool = False) -> None:
    """Settle (as leader), release leadership, close the pool; each step guarded."""
    target.closed = True
    lead = target.leadership
    if settle and target.prepared and lead is not None:
        with contextlib.suppress(Exception):
            if lead.held():
                target.settled = False
                # Bounded: a drop that waits on other transactions is left to the next start.
                worker = threading.Thread(target=_settle_quietly, args=(target,), name=f"settle-{target.name}",
                                          daemon=True)
                worker.start()
                worker.join(SETTLE_S)
                if worker.is_alive():
                    log.warning("stopping: settling %s takes longer than %.0fs; the next start finishes it",
                                target.name, SETTLE_S)
    if lead is not None:
        with contextlib.suppress(Exception):
            lead.release()
    with contextlib.suppress(Exception):
        target.db.close()


def _settle_quietly(target: DatabaseRuntime) -> None:
    try:
        ensure_settled(target)
    except Exception as exc:  # noqa: BLE001
        log.warning("stopping: leftovers on %s not settled (done at the next start): %s", target.name,
                    first_line(exc))
