"""Cleanup: settle what a crash or a stopped server left behind in the middle of index DDL (at start-up, and at
the start of every apply round).

INVALID leftovers of our builds are dropped (ours only: named indexd_*, never anyone else's), and so are the
pieces of a partitioned build that did not finish: its parent index (INVALID, perhaps with some partitions'
indexes attached; dropping it takes them along) and per-partition indexes (`indexd_p$...`) never attached.
Then intents without an outcome get one, and recommendations stuck in `building` move to built (the index is
there and valid) or to interrupted: their run was cut off, they are queued again (up to indexing.build_attempts).
"""

from __future__ import annotations

import logging

from indexd.db.pool import Database, PgConnection
from indexd.lifecycle.ddl import OWN_PREFIX, index_state
from indexd.lifecycle.drop import drop_index_concurrently
from indexd.lifecycle.partitioned import PARTITION_PREFIX
from indexd.state import audit, recommendation_rows, recommendations
from indexd.state.statuses import Status

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the process or the server stopped during the statement"
INDEX_ACTIONS = ("create_index", "drop_index", "revert_index")

# Not attached to a parent index (an attached one goes with its parent), INVALID or one of our per-partition
# indexes, and no CREATE INDEX running on it or, partitioned, on any index of its tree.
_LEFTOVERS = """
SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE left(c.relname, %s) = %s AND (NOT i.indisvalid OR left(c.relname, %s) = %s)
   AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid)
   AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                    WHERE p.index_relid = c.oid
                       OR (c.relkind = 'I' AND p.index_relid IN (SELECT relid FROM pg_partition_tree(c.oid))))
 ORDER BY 1, 2
"""


def _leftovers(conn: PgConnection) -> list[tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute(_LEFTOVERS, (len(OWN_PREFIX), OWN_PREFIX, len(PARTITION_PREFIX), PARTITION_PREFIX))
        return [(r[0], r[1]) for r in cur.fetchall()]


def _live_backends(conn: PgConnection) -> set[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        return {int(r[0]) for r in cur.fetchall()}


def _in_flight(conn: PgConnection, state: str) -> set[tuple[str, str]]:
    """Indexes an unfinished build of a live backend (a former leader's, still running) is working on."""
    live, busy = _live_backends(conn), set()
    for _intent, before in audit.unfinished_intents(conn, state, ("create_index",)):
        if before.get("backend_pid") in live:
            busy.add((str(before.get("index_schema")), str(before.get("index_name"))))
            busy.update((str(s), str(n)) for s, n in before.get("partition_indexes") or [])
    return busy


def anything_to_settle(db: Database) -> bool:
    """Whether an interrupted run left something: an INVALID index of ours, or a recommendation in building."""
    with db.connection(autocommit=True) as conn:
        if _leftovers(conn):
            return True
        building = recommendation_rows.load_recommendations(conn, db.settings.state_schema, statuses=[Status.BUILDING])
        return bool(building)


def cleanup_invalid(db: Database, *, job_id: str | None = None, drop: bool = True) -> list[str]:
    """Settle what a crash left behind; run at start-up and at the start of every apply round, while holding
    leadership.

    Drops (audited) our leftovers (see the module) that no backend is building, unless `drop` is false (a guard
    refused mutations now: they wait for a later round), then records the outcome of builds and drops whose
    process died before it could, and moves recommendations stuck in `building` to built or interrupted.
    Returns the dropped indexes "schema.name".
    """
    with db.connection(autocommit=True) as conn:
        busy = _in_flight(conn, db.settings.state_schema)
        leftovers = [item for item in _leftovers(conn) if item not in busy] if drop else []
    dropped = []
    for schema, name in leftovers:
        result = drop_index_concurrently(db, schema, name, reason="leftover of an interrupted build", job_id=job_id)
        if result.outcome == "succeeded":
            dropped.append(result.qualified)
    _settle_interrupted(db)
    if dropped:
        log.info("cleanup: dropped %d leftover index(es): %s", len(dropped), ", ".join(dropped))
    return dropped


def _settle_interrupted(db: Database) -> None:
    state = db.settings.state_schema
    with db.connection(autocommit=True) as conn:
        live = _live_backends(conn)
        for intent_id, before in audit.unfinished_intents(conn, state, INDEX_ACTIONS):
            if before.get("backend_pid") in live:
                continue  # its statement may still be running (a former leader's): not ours to settle
            found = index_state(conn, before.get("index_schema", ""), before.get("index_name", ""))
            if found is not None and found.building:
                continue  # still being built by a live backend
            creating = before.get("action") == "create_index"
            done = (found is not None and found.valid) if creating else found is None
            audit.record_outcome(conn, state, intent_id, outcome="succeeded" if done else "failed",
                                 reason="finished; recorded after an interruption" if done else INTERRUPTED)
        for rec in recommendation_rows.load_recommendations(conn, state, statuses=[Status.BUILDING]):
            found = index_state(conn, rec.table_schema, rec.index_name)
            if found is not None and found.building:
                continue
            if found is not None and found.valid:
                recommendations.mark_built(conn, state, rec.id)
                now = Status.BUILT
            else:
                now = recommendations.mark_interrupted(conn, state, rec.id, INTERRUPTED,
                                                       max_attempts=db.settings.indexing.build_attempts)
            log.warning("cleanup: recommendation #%s was left building; now %s", rec.id, now)
