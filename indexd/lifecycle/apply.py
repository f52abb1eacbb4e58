"""Applying recommendations: decide who may be built (mode, approval) and build them one at a time, each only
after every guard has been asked again right before it runs. Also the human decisions: approve and reject.

Modes (indexing.mode): `advise` records advice and builds nothing; `approve` builds only what a person
approved (`indexd approve ID`); `auto` builds pending recommendations too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, IndexingSettings, Settings
from indexd.db.pool import Database
from indexd.errors import UsageError
from indexd.lifecycle import announce
from indexd.lifecycle.build import build_index
from indexd.lifecycle.cleanup import cleanup_invalid
from indexd.lifecycle.ddl import BuildResult, ProgressCallback
from indexd.lifecycle.guards import BuildRequest, Decision, Readings, decide
from indexd.lifecycle.leader import Leadership
from indexd.lifecycle.readings import take_readings
from indexd.lifecycle.recommendations import REC_COLUMNS, StoredRecommendation, load_recommendations
from indexd.state import audit

log = logging.getLogger(__name__)

APPROVABLE = ("pending", "failed", "rejected")
REJECTABLE = ("pending", "approved", "failed")


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


def buildable_statuses(mode: str) -> tuple[str, ...]:
    return {"approve": ("approved",), "auto": ("approved", "pending")}.get(mode, ())


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
    ix = db_settings.indexing
    result = ApplyResult(db.name, ix.mode)
    statuses = buildable_statuses(ix.mode)
    if not statuses:
        result.message = (f"indexing.mode is {ix.mode}: recommendations are only recorded, nothing is built "
                          "(set it to approve or auto)")
        log.info("apply on %s: %s", db.name, result.message)
        return result
    with db.connection() as conn:
        recs = load_recommendations(conn, db.settings.state_schema, statuses=statuses)
    if not recs:
        result.message = f"nothing to build: no {' or '.join(statuses)} recommendation"
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
        built = build_index(db, rec, db_settings, job_id=job_id, progress=progress, leadership=leadership)
        {"succeeded": result.built, "failed": result.failed}.get(built.outcome, result.skipped).append(built)
        announce.build_finished(db.name, rec, built)


# ---- approve / reject ----------------------------------------------------------------------------------


def _decide_recommendation(db: Database, rec_id: int, verdict: str, allowed_from: tuple[str, ...], reason: str,
                           actor: str | None) -> StoredRecommendation:
    schema, who = db.settings.state_schema, actor or audit.current_actor()
    new_status = "approved" if verdict == "approve" else "rejected"
    with db.connection() as conn:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT status FROM {}.recommendations WHERE id = %s FOR UPDATE").format(
                sql.Identifier(schema)), (rec_id,))
            row = cur.fetchone()
            if row is None:
                raise UsageError(f"no recommendation #{rec_id} in database {db.name} (see 'indexd status')")
            if row[0] not in allowed_from:
                raise UsageError(f"recommendation #{rec_id} is {row[0]}: only {', '.join(allowed_from)} "
                                 f"recommendations can be {new_status}")
            try:
                cur.execute(sql.SQL(
                    "UPDATE {}.recommendations SET status = %s, decided_by = %s, decided_at = now(),"
                    " reason = %s, updated_at = now() WHERE id = %s RETURNING {}").format(
                    sql.Identifier(schema), sql.SQL(", ").join(map(sql.Identifier, REC_COLUMNS))),
                    (new_status, who, reason or None, rec_id))
            except psycopg2.errors.UniqueViolation as exc:
                raise UsageError(f"recommendation #{rec_id} cannot be {new_status}: another live recommendation "
                                 "is for the same index") from exc
            rec = StoredRecommendation(*cur.fetchone())
        audit.record_event(conn, schema, action=verdict, target=f"{rec.table_schema}.{rec.index_name}",
                           reason=reason or None, before={"status": row[0]}, after={"status": new_status},
                           recommendation_id=rec_id, actor=who)
    log.info("recommendation #%s %s by %s", rec_id, new_status, who)
    return rec


def approve(db: Database, rec_id: int, *, reason: str = "", actor: str | None = None) -> StoredRecommendation:
    """Approve a pending (or failed, or rejected) recommendation for building; audited."""
    return _decide_recommendation(db, rec_id, "approve", APPROVABLE, reason, actor)


def reject(db: Database, rec_id: int, *, reason: str = "", actor: str | None = None) -> StoredRecommendation:
    """Reject a pending, approved or failed recommendation: it will not be built; audited."""
    return _decide_recommendation(db, rec_id, "reject", REJECTABLE, reason, actor)
