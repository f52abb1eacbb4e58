"""Applying recommendations: decide who may be built (mode, approval) and build them one at a time, each only
after every guard has been asked again right before it runs. Also the human decisions: approve and reject.

Modes (indexing.mode): `advise` records advice and builds nothing; `approve` builds only what a person
approved (`indexd approve ID`); `auto` builds pending (and interrupted) advice of the real workload too. Offline
advice (`recommend --queries`) is built in no mode before a person approves it. Right before each build the live
catalog is read again: a recommendation an existing valid index now makes redundant is not built but superseded
(see redundant.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import psycopg2
import psycopg2.errors

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, IndexingSettings, Settings
from indexd.db.pool import Database
from indexd.db.standby import refuse_on_standby
from indexd.errors import UsageError, first_line
from indexd.lifecycle import announce
from indexd.lifecycle.baseline import snapshot_around_build
from indexd.lifecycle.build import build_index
from indexd.lifecycle.cleanup import anything_to_settle, cleanup_invalid
from indexd.lifecycle.ddl import BuildResult, ProgressCallback
from indexd.lifecycle.guards import BuildRequest, Decision, Readings, decide
from indexd.lifecycle.latency import LatencyProbe
from indexd.lifecycle.leader import Leadership, leading
from indexd.lifecycle.pacing import ready
from indexd.lifecycle.readings import drop_decision, take_readings
from indexd.lifecycle.redundant import Covering, covering_index, supersede
from indexd.lifecycle.refusal import when_again
from indexd.state import audit, recommendation_rows, recommendations
from indexd.state.recommendation_rows import StoredRecommendation
from indexd.state.statuses import Status, decidable_from

log = logging.getLogger(__name__)


class ReadingsFn(Protocol):
    def __call__(self, db: Database, rec: StoredRecommendation, settings: IndexingSettings,
                 leadership: Leadership | None, now: datetime, *, ignore_window: bool = False,
                 probe: LatencyProbe | None = None) -> tuple[BuildRequest, Readings]: ...


@dataclass(frozen=True)
class Plan:
    """A dry run's verdict on one recommendation."""

    recommendation: StoredRecommendation
    request: BuildRequest
    decision: Decision
    when: str | None = None  # refused: when the daemon tries again
    pause_s: float = 0.0  # allowed: the pause between builds still due before it


@dataclass
class ApplyResult:
    database: str
    mode: str
    built: list[BuildResult] = field(default_factory=list)
    refused: list[tuple[int, list[str]]] = field(default_factory=list)  # (recommendation id, every reason)
    failed: list[BuildResult] = field(default_factory=list)
    skipped: list[BuildResult] = field(default_factory=list)  # taken by another run, or already there
    plans: list[Plan] = field(default_factory=list)  # dry run only
    message: str | None = None  # why nothing was even considered (advise mode, nothing approved)

    @property
    def all_refused(self) -> bool:
        """Something was to be built and a guard refused every one of them."""
        if self.plans:
            return all(not p.decision.allowed for p in self.plans)
        return bool(self.refused) and not self.built and not self.failed and not self.skipped


def builds_unapproved(mode: str) -> bool | None:
    """None: the mode builds nothing; else whether it also builds workload advice nobody approved (auto)."""
    return {"approve": False, "auto": True}.get(mode)


def apply(
    db: Database,
    settings: Settings,
    db_settings: DatabaseSettings,
    *,
    now: datetime | None = None,
    ignore_window: bool = False,
    dry_run: bool = False,
    job_id: str | None = None,
    readings_fn: ReadingsFn = take_readings,
    progress: ProgressCallback | None = None,
    clock: Callable[[], datetime] = utcnow,
    leadership: Leadership | None = None,
    probe: LatencyProbe | None = None,
    cancel: threading.Event | None = None,
) -> ApplyResult:
    """Build what the mode allows, one index at a time, through every guard (re-checked before each build),
    pausing between builds (throttle.pause_between_builds).

    A daemon passes the `leadership` it keeps for the database (it stays held afterwards) and its latency `probe`
    (whose baseline outlives a run); without them, apply tries to take the database's leadership for this run
    and gives it back at the end, and starts a probe of its own. `cancel` ends any wait at once.
    """
    refuse_on_standby(db, "apply")
    ix = db_settings.indexing
    result = ApplyResult(db.name, ix.mode)
    unapproved = builds_unapproved(ix.mode)
    if unapproved is None:
        result.message = (f"indexing.mode is {ix.mode}: recommendations are only recorded, nothing is built "
                          "(set it to approve or auto)")
        log.info("apply on %s: %s", db.name, result.message)
        return result
    own = leadership is None
    lead = Leadership.for_database(db) if leadership is None else leadership
    try:
        if own:
            lead.acquire()  # when another process leads, the leader guard refuses each build below
        if not dry_run and lead.held():
            _settle(db, settings, db_settings, lead, now or clock(), job_id)
        pending: list[StoredRecommendation] = []
        with db.connection() as conn:
            recs = recommendation_rows.load_buildable(conn, db.settings.state_schema, unapproved=unapproved)
            if not recs:
                pending = recommendation_rows.load_recommendations(conn, db.settings.state_schema,
                                                               statuses=[Status.PENDING])
        if not recs:
            result.message = _nothing_to_build(unapproved, len(pending))
            log.info("apply on %s: %s", db.name, result.message)
            return result
        probe = probe or (LatencyProbe(db) if ix.throttle.latency_probe else None)
        run = _Run(db, settings, db_settings, lead, result, job_id, readings_fn, progress, probe,
                   (lambda: now) if now else clock, cancel or threading.Event())
        try:
            _apply_each(run, recs, ignore_window=ignore_window, dry_run=dry_run)
        finally:
            if probe is not None:
                probe.close()
    finally:
        if own:
            lead.release()
    log.info("apply on %s: built %d, refused %d, failed %d%s", db.name, len(result.built), len(result.refused),
             len(result.failed), " (dry run)" if dry_run else "")
    return result


def _nothing_to_build(unapproved: bool, pending: int) -> str:
    """Why a run found nothing, and what the pending advice it left waits for."""
    if not unapproved:
        waits = f" ({pending} pending: 'indexd approve ID' queues one)" if pending else ""
        return f"nothing to build: no {Status.APPROVED} recommendation{waits}"
    waits = (f" ({pending} pending wait for a person's approval: advice from a query file, or an index built and "
             "reverted before; see 'indexd status')") if pending else ""
    return f"nothing to build: no {Status.APPROVED} recommendation and no {Status.PENDING} one mode auto builds{waits}"


def settle_records(db: Database, *, leadership: Leadership | None = None) -> None:
    """The bookkeeping part of what every apply round does first, on its own and changing no index: `apply` on
    the command line runs it before showing its plan, so a recommendation an interrupted run left in building is
    in the plan again (the real run drops the leftovers). Only as leader."""
    with leading(db, leadership) as lead:
        if lead.held() and anything_to_settle(db):
            cleanup_invalid(db, drop=False)


def _settle(db: Database, settings: Settings, db_settings: DatabaseSettings, lead: Leadership,
            now: datetime, job_id: str | None) -> None:
    """First thing in every round, as leader: settle what an interrupted run left (a recommendation stuck in
    building, an INVALID index of ours), as the daemon does at start-up. The leftovers are dropped only when
    the guards allow a drop now (pause, bypass, load, leadership; not the window: they only cost); else they wait
    for a later round, and a build of the same index drops its own leftover first."""
    if not anything_to_settle(db):
        return
    decision = drop_decision(db, settings, db_settings.indexing, lead, now, table="indexd leftovers",
                             index_name="INVALID leftovers", respect_window=False)
    if not decision.allowed:
        log.info("leftovers of interrupted builds on %s not dropped now: %s", db.name, "; ".join(decision.reasons))
    dropped = cleanup_invalid(db, job_id=job_id, drop=decision.allowed)
    if dropped:
        log.info("apply on %s: dropped %d INVALID leftover(s) of interrupted builds: %s", db.name, len(dropped),
                 ", ".join(dropped))


@dataclass(frozen=True)
class _Run:
    """What one apply run carries from build to build."""

    db: Database
    settings: Settings
    db_settings: DatabaseSettings
    leadership: Leadership
    result: ApplyResult
    job_id: str | None
    readings_fn: ReadingsFn
    progress: ProgressCallback | None
    probe: LatencyProbe | None
    clock: Callable[[], datetime]
    cancel: threading.Event


def _apply_each(run: _Run, recs: list[StoredRecommendation], *, ignore_window: bool, dry_run: bool) -> None:
    db, ix, result, snapped = run.db, run.db_settings.indexing, run.result, False
    for rec in recs:
        def ask(at: datetime, rec: StoredRecommendation = rec) -> tuple[BuildRequest, Readings]:
            return run.readings_fn(db, rec, ix, run.leadership, at, ignore_window=ignore_window, probe=run.probe)

        def judge(request: BuildRequest, readings: Readings, at: datetime) -> Decision:
            return decide(request, ix, run.settings.bypass, readings, at)

        got = ready(ask, judge, ix.throttle, run.clock, run.cancel.wait, dry_run=dry_run)
        if got is None:
            result.message = "stopped: indexd is stopping"
            return
        when = when_again(got.decision, ix.schedule.apply, run.clock())
        if dry_run:
            result.plans.append(Plan(rec, got.request, got.decision, when, got.pause_s))
            continue
        if not got.decision.allowed:
            result.refused.append((rec.id, got.decision.reasons + ([when] if when else [])))
            log.info("not building #%s %s: %s", rec.id, rec.index_name, "; ".join(got.decision.reasons))
            continue
        if not snapped:  # the edge of the "before" window of this round's builds
            snapshot_around_build(db, "before building")
            snapped = True
        covering = _covering(db, rec)
        if covering is not None:  # an equivalent index appeared since the advice: nothing to build
            result.skipped.append(supersede(db, rec, covering, job_id=run.job_id))
            continue
        built = build_index(db, rec, run.db_settings, job_id=run.job_id, progress=run.progress,
                            leadership=run.leadership, unapproved=bool(builds_unapproved(ix.mode)), probe=run.probe)
        {"succeeded": result.built, "failed": result.failed}.get(built.outcome, result.skipped).append(built)
        announce.build_finished(db.name, rec, built)
        if built.outcome == "succeeded":  # the edge of its "after" window (and the next build's "before")
            snapshot_around_build(db, f"after building {built.index_name}")


def _covering(db: Database, rec: StoredRecommendation) -> Covering | None:
    """The existing index that makes `rec` redundant, if any. When another session holds its table's lock past
    lock_timeout, the check is left out and the build, under the same lock_timeout, decides (and fails to be
    tried again later while the lock stays)."""
    try:
        with db.connection() as conn:
            return covering_index(conn, rec)
    except psycopg2.errors.LockNotAvailable as exc:
        log.info("redundancy of #%s %s not checked: %s", rec.id, rec.index_name, first_line(exc))
        return None


# ---- approve / reject ----------------------------------------------------------------------------------


def _decide_recommendation(db: Database, rec_id: int, decision: Status, reason: str,
                           actor: str | None) -> StoredRecommendation:
    schema, who = db.settings.state_schema, actor or audit.current_actor()
    action = "approve" if decision == Status.APPROVED else "reject"
    with db.connection() as conn:
        try:
            done = recommendations.decide(conn, schema, rec_id, decision, actor=who, reason=reason or None)
        except psycopg2.errors.UniqueViolation as exc:
            raise UsageError(f"recommendation #{rec_id} cannot be {decision}: another live recommendation "
                             "is for the same index") from exc
        if done.previous is None:
            raise UsageError(f"no recommendation #{rec_id} in database {db.name} (see 'indexd status')")
        if done.row is None:
            allowed = ", ".join(s for s in Status if s in decidable_from(decision))
            raise UsageError(f"recommendation #{rec_id} is {done.previous}: only {allowed} recommendations can be "
                             f"{decision}")
        rec = done.row
        audit.record_event(conn, schema, action=action, target=f"{rec.table_schema}.{rec.index_name}",
                           reason=reason or None, before={"status": str(done.previous)},
                           after={"status": str(decision)}, recommendation_id=rec_id, actor=who)
    log.info("recommendation #%s %s by %s", rec_id, decision, who)
    return rec


def approve(db: Database, rec_id: int, *, reason: str = "", actor: str | None = None) -> StoredRecommendation:
    """Approve a recommendation for building (pending, or failed, rejected or interrupted again); audited. The
    only way offline advice (from a query file) is ever built."""
    return _decide_recommendation(db, rec_id, Status.APPROVED, reason, actor)


def reject(db: Database, rec_id: int, *, reason: str = "", actor: str | None = None) -> StoredRecommendation:
    """Reject a recommendation not built yet (pending, approved, failed or interrupted): it will not be built;
    audited."""
    return _decide_recommendation(db, rec_id, Status.REJECTED, reason, actor)
