"""What the daemon does for one database, job by job. Each task calls the domain module that owns the work
and returns a one-line decision for the log; guards (window, pause, load, rate, leadership) are checked by
the domain functions themselves, right before they mutate anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from indexd.advisor.pipeline import advise as run_advice
from indexd.advisor.pipeline import check_hypopg
from indexd.advisor.skips import count_line, log_new_skips
from indexd.advisor.store import save_recommendations
from indexd.backup.catalog import list_backups
from indexd.backup.catalog import prune as prune_backups
from indexd.backup.dump import run_backup
from indexd.backup.scratch import test_restore
from indexd.config.schema import Settings
from indexd.db.standby import STANDBY
from indexd.lifecycle.apply import apply as run_apply
from indexd.lifecycle.health import report
from indexd.lifecycle.verify import verify_built
from indexd.service.runtime import DatabaseRuntime
from indexd.state.history import prune_history
from indexd.units import human_duration, human_size
from indexd.workload.capture import take_snapshot
from indexd.workload.lookback import capture_workload, read_workload


@dataclass(frozen=True)
class TaskResult:
    outcome: str  # ok | skipped
    message: str


@dataclass(frozen=True)
class TaskEnv:
    settings: Settings
    target: DatabaseRuntime
    job_id: str
    cancel: threading.Event
    now: datetime


def capture(env: TaskEnv) -> TaskResult:
    if env.target.standby:
        return TaskResult("skipped", f"skipped: {STANDBY}: no snapshot is stored; advice reads pg_stat_statements "
                                     "directly")
    snap = take_snapshot(env.target.db, env.now)
    env.target.captured_statements = snap.statements
    return TaskResult("ok", f"snapshot {snap.id}: {snap.statements} statements")


def advise(env: TaskEnv) -> TaskResult:
    """The look-back's advice, stored as pending; on a standby the standby's own workload, advised and logged
    (with each index's CREATE statement, for the primary) but not stored."""
    db, indexing, standby = env.target.db, env.target.settings.indexing, env.target.standby
    check_hypopg(db)  # before anything is captured or written
    work = read_workload(db, indexing, env.now, snapshots=False) if standby else capture_workload(db, indexing, env.now)
    advice = run_advice(db, indexing, work)
    if advice.recommendations and not standby:
        save_recommendations(db, advice.recommendations, advice.create_sql,
                             supersede_missing=advice.from_workload)
    log_new_skips(env.target.name, advice.skipped, env.target.skips_logged)
    if standby:
        statements = "".join(f"; {advice.create_sql[r.candidate.fingerprint()]}" for r in advice.recommendations)
        return TaskResult("ok", f"{advice.analyzed_statements} statements analyzed, {len(advice.recommendations)} "
                                f"recommendation(s), not stored ({STANDBY}){statements}")
    names = ", ".join(r.candidate.name() for r in advice.recommendations[:5])
    more = f": {names}" if names else ""
    skipped = f"; skipped {len(advice.skipped)}: {count_line(advice.skipped)}" if advice.skipped else ""
    return TaskResult("ok", f"{advice.analyzed_statements} statements analyzed, "
                            f"{len(advice.recommendations)} recommendation(s){more}{skipped}")


def apply(env: TaskEnv) -> TaskResult:
    t = env.target
    result = run_apply(t.db, env.settings, t.settings, now=env.now, job_id=env.job_id, leadership=t.leadership,
                       probe=t.latency, cancel=env.cancel)
    t.count("indexes_built", sum(1 for b in result.built if b.outcome == "succeeded"))
    t.count("index_build_failures", len(result.failed))
    built = [b for b in result.built if b.outcome == "succeeded"]
    shown = ", ".join(f"{b.index_name} ({human_size(b.size_bytes)})" for b in built)
    parts = [f"built {len(built)}: {shown}"] if built else []
    parts += [f"refused #{rec_id}: {'; '.join(reasons)}" for rec_id, reasons in result.refused]
    parts += [f"failed {b.index_name}: {b.reason}" for b in result.failed]
    if result.message:
        parts.append(result.message)
    outcome = "failed" if result.failed else ("skipped" if result.all_refused else "ok")
    return TaskResult(outcome, "; ".join(parts) or "nothing to do")


def verify(env: TaskEnv) -> TaskResult:
    t = env.target
    records = verify_built(t.db, env.settings, t.settings, now=env.now, job_id=env.job_id, leadership=t.leadership)
    t.count("indexes_reverted", sum(1 for r in records if r.action == "dropped"))
    if not records:
        return TaskResult("ok", "nothing to judge")
    return TaskResult("ok", "; ".join(f"{r.index_name}: {r.verdict} ({r.action})" for r in records))


def health(env: TaskEnv) -> TaskResult:
    rep = report(env.target.db, env.settings, env.target.settings, now=env.now)
    return TaskResult("ok", f"{rep.indexes_checked} indexes checked: {len(rep.unused)} unused, "
                            f"{len(rep.duplicate)} duplicate, {len(rep.invalid)} invalid, {len(rep.bloated)} bloated")


def backup(env: TaskEnv) -> TaskResult:
    res = run_backup(env.settings, env.target.settings, now=env.now, cancel=env.cancel, job_id=env.job_id)
    took = human_duration(res.duration_s)
    return TaskResult("ok", f"backup {res.id} {res.status}, {human_size(res.size_bytes)} in {took}")


def backup_verify(env: TaskEnv) -> TaskResult:
    good = [b for b in list_backups(env.settings, env.target.name) if b.status in ("completed", "verified")]
    if not good:
        return TaskResult("skipped", "skipped: no completed backup to test-restore")
    elsewhere = env.target.settings.backups.verify.restore_dsn
    if env.target.standby and not elsewhere:
        return TaskResult("skipped", f"skipped: {STANDBY}: no scratch database can be created here; set "
                                     "backups.verify.restore_dsn to test-restore on another server")
    latest = max(good, key=lambda b: b.started_at)
    res = test_restore(env.settings, latest.id, target_dsn=elsewhere, now=env.now, cancel=env.cancel)
    if not res.ok:  # a data problem (the backup is now failed), or the test could not run here (it is not)
        return TaskResult("failed", f"test restore of {latest.id} {res.result} (backup {res.status}): {res.detail}")
    return TaskResult("ok", f"backup {latest.id} restored into a scratch database: {res.result}, {res.detail} "
                            f"({human_duration(res.duration_s)})")


def prune(env: TaskEnv) -> TaskResult:
    # A standby's history is the primary's (replicated): pruned there, never here.
    deleted = {} if env.target.standby else prune_history(env.target.db, env.settings.retention, now=env.now,
                                                          cancel=env.cancel)
    decisions = prune_backups(env.target.settings, now=env.now) if env.target.settings.backups.enabled else []
    gone = sum(1 for d in decisions if not d.keep)
    rows = ", ".join(f"{k} {v}" for k, v in deleted.items() if v) or "no rows"
    return TaskResult("ok", f"history pruned ({rows}); {gone} backup(s) deleted, {len(decisions) - gone} kept")


TASKS: dict[str, Callable[[TaskEnv], TaskResult]] = {
    "capture": capture, "advise": advise, "apply": apply, "verify": verify, "health": health,
    "backup": backup, "backup_verify": backup_verify, "prune": prune,
}
# Jobs that write (to the managed database, its state schema, or the backup folder) run only on the leader.
LEADER_ONLY = frozenset({"capture", "advise", "apply", "verify", "backup", "backup_verify", "prune"})
