"""The lifecycle's events, worded once: what apply, verify, pause and leadership publish (`indexd.events`).

Each function builds the one-line summary and the details of one event and publishes it; with no sink
registered (no webhooks), publishing does nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from indexd import events
from indexd.lifecycle.ddl import BuildResult
from indexd.state.recommendation_rows import StoredRecommendation


def _mb(size: int | None) -> str:
    return "size unknown" if size is None else f"{size / 1024**2:.1f} MB"


def build_finished(database: str, rec: StoredRecommendation, result: BuildResult) -> None:
    """index_built for a build that succeeded, build_failed for one that failed; a skipped one says nothing."""
    details: dict[str, Any] = {"index": result.qualified, "table": rec.table, "recommendation_id": rec.id,
               "create_sql": rec.create_sql, "duration_s": round(result.duration_s, 3)}
    if result.outcome == "succeeded":
        events.publish(events.INDEX_BUILT, database,
                       f"{result.qualified} on {rec.table} built in {result.duration_s:.1f}s "
                       f"({_mb(result.size_bytes)})",
                       size_bytes=result.size_bytes, improvement_pct=rec.improvement_pct, **details)
    elif result.outcome == "failed":
        later = "; it is tried again on a later run" if result.retry_later else ""
        events.publish(events.BUILD_FAILED, database,
                       f"building {result.qualified} on {rec.table} failed: {result.reason}{later}",
                       reason=result.reason, retry_later=result.retry_later, **details)


def verdict(database: str, recommendation_id: int, schema: str, table: str, index_name: str, kept: bool,
            reasons: tuple[str, ...] | list[str]) -> None:
    """index_kept, or index_reverted once a harmful index is gone."""
    why = "; ".join(reasons) or "no reason given"
    name = events.INDEX_KEPT if kept else events.INDEX_REVERTED
    what = "kept" if kept else "reverted (dropped)"
    events.publish(name, database, f"{schema}.{index_name} on {schema}.{table} {what}: {why}",
                   index=f"{schema}.{index_name}", table=f"{schema}.{table}", recommendation_id=recommendation_id,
                   reasons=list(reasons))


def pause_started(database: str, pause_id: int, description: str, until: datetime | None, reason: str,
                  by: str) -> None:
    """`description` is the pause's own (`paused by ann at ...: why`); the event's title says "indexing paused"
    already, so the summary starts at "by"."""
    events.publish(events.PAUSE_STARTED, database, description.removeprefix("paused "), pause_id=pause_id,
                   until=until, reason=reason, by=by)


def pause_ended(database: str, pause_ids: list[int], by: str | None, *, until: datetime | None = None) -> None:
    """A pause ended: resumed `by` someone, or (by None) its duration ran out at `until`."""
    how = "resumed" if by else "expired"
    if by:
        who = f"by {by}"
    else:
        who = f"the pause until {until:%Y-%m-%d %H:%M:%S %Z} ran out" if until else "the pause ran out"
    # the event's title is "indexing resumed": the summary says only by whom or why
    events.publish(events.PAUSE_ENDED, database, who, pause_ids=pause_ids, by=by, how=how, until=until)


def leadership(database: str, gained: bool, why: str) -> None:
    name = events.LEADERSHIP_GAINED if gained else events.LEADERSHIP_LOST
    what = "this process now leads" if gained else "this process no longer leads"
    events.publish(name, database, f"{what} {database}: {why}", reason=why)
