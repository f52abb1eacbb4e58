"""The emergency switch, stored in the state table `pause` (see `state/pause.py`) so that every daemon sees it
at once. Pausing and resuming are audited. Guards refuse every mutation while a pause is active.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from indexd.clock import utcnow
from indexd.db.pool import Database
from indexd.lifecycle import announce
from indexd.state import audit
from indexd.state.pause import Pause, end_active_pauses, insert_pause

log = logging.getLogger(__name__)


def pause(db: Database, duration: timedelta | None, reason: str, actor: str | None = None, *,
          now: datetime | None = None) -> Pause:
    """Pause every change to `db` (for `duration`, or until resumed); audited. Returns the new pause."""
    schema, who, since = db.settings.state_schema, actor or audit.current_actor(), now or utcnow()
    if duration is not None and duration <= timedelta(0):
        raise ValueError(f"a pause must last a positive time, not {duration}")
    until = since + duration if duration is not None else None
    with db.connection() as conn:
        made = insert_pause(conn, schema, paused_at=since, until=until, reason=reason, paused_by=who)
        audit.record_event(conn, schema, action="pause", target=db.name, reason=reason or None,
                           after={"pause_id": made.id, "until": until, "by": who}, actor=who)
    log.info("indexing on %s %s", db.name, made.describe())  # the CLI prints it: said once on its terminal
    announce.pause_started(db.name, made.id, made.describe(), made.until, made.reason, who)
    return made


def resume(db: Database, actor: str | None = None, *, now: datetime | None = None) -> list[Pause]:
    """End every active pause of `db`; audited. Returns the pauses ended (empty when none was active)."""
    schema, who, at = db.settings.state_schema, actor or audit.current_actor(), now or utcnow()
    with db.connection() as conn:
        ended = end_active_pauses(conn, schema, at=at, by=who)
        if ended:
            audit.record_event(conn, schema, action="resume", target=db.name,
                               before={"pause_ids": [p.id for p in ended]}, after={"by": who}, actor=who)
    if ended:
        log.info("indexing on %s resumed by %s", db.name, who)
        announce.pause_ended(db.name, [p.id for p in ended], who)
    return ended
