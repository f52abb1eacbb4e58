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
from indexd.lifecycle.build import build_index
from indexd.lifecycle.cleanup import cleanup_invalid
from indexd.lifecycle.ddl import BuildResult, ProgressCallback
from indexd.lifecycle.guards import BuildRequest, Decision, Readings, decide
from indexd.lifecycle.leader import Leadership
from indexd.lifecycle.readings import take_readings
from indexd.lifecycle.redundant import Covering, covering_index, supersede
from indexd.state import audit, recommendations
from indexd.state.recommendations import Status, StoredRecommendation

log = logging.getLogger(__name__)



class ReadingsFn(Protocol):
    def __call__(self, db: Database, rec: StoredRecommendation, settings: IndexingSettings,
                 leadership: Leadership | None, now: datetime, *, ignore_window: bool = False,
                 ) -> tuple[BuildRequest, Readings]: ...


@dataclass(frozen=True)
class Plan:
    """A dry run's verdict on one recommendation."""

    recommendation: StoredRecommendation
    request: BuildRequest
    decision: Decision


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
) -> ApplyResult:
    """Build what the mode allows, one index at a time, through every guard (re-checked before each build).

    A daemon passes the `leadership` it keeps for the database (it stays held afterwards); without one, apply
    tries to take the database's leadership for this run and gives it back at the end.
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
    pending: list[StoredRecommendation] = []
    with db.connection() as conn:
        recs = recommendations.load_buildable(conn, db.settings.state_schema, unapproved=unapproved)
        if not recs:
            pending = recommendations.load_recommendations(conn, db.settings.state_schema,
                                                           statuses=[Status.PENDING])
    if not recs:
        result.message = _nothing_to_build(unapproved, len(pending))
        log.info("apply on %s: %s", db.name, result.message)
        return result
    own = leadership is None
    lead = Leadership.for_database(db) if leadership is None else leadership
    try:
        if own:
            lead.acquire()  # when another process leads, the leader guard refuses each build below
        _apply_each(db, settings, db_settings, recs, lead, result, now=now, ignore_window=ignore_window,
                    dry_run=dry_run, job_id=job_id, readings_fn=readings_fn, progress=progress, clock=clock)
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


def _apply_each(db: Database, settings: Settings, db_settings: DatabaseSettings, recs: list[StoredRecommendation],
                leadership: Leadership, result: ApplyResult, *, now: datetime | None, ignore_window: bool,
                dry_run: bool, job_id: str | None, readings_fn: ReadingsFn, progress: ProgressCallback | None,
                clock: Callable[[], datetime]) -> None:
    ix, cleaned = db_settings.indexing, False
    for rec in recs:
        at = now or clock()
        request, readings = readings_fn(db, rec, ix, leadership, at, ignore_window=ignore_window)
        decision = decide(request, ix, settings.bypass, readings, at)
        if dry_run:
            result.plans.append(Plan(rec, request, decision))
            continue
        if not decision.allowed:
            result.refused.append((rec.id, decision.reasons))
            log.info("not building #%s %s: %s", rec.id, rec.index_name, "; ".join(decision.reasons))
            continue
        if not cleaned:  # leftovers of an interrupted build go first (we lead, so nobody else is building)
            cleanup_invalid(db, job_id=job_id)
            cleaned = True
        covering = _covering(db, rec)
        if covering is not None:  # an equivalent index appeared since the advice: nothing to build
            result.skipped.append(supersede(db, rec, covering, job_id=job_id))
            continue
        built = build_index(db, rec, db_settings, job_id=job_id, progress=progress, leadership=leadership,
                            unapproved=bool(builds_unapproved(ix.mode)))
        {"succeeded": result.built, "failed": result.failed}.get(built.outcome, result.skipped).append(built)
        announce.build_finished(db.name, rec, built)


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
            allowed = ", ".join(s for s in Status if s in recommendations.decidable_from(decision))
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
