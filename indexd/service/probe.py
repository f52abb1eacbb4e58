"""A periodic, read-only look at each database for health and metrics: reachable, pause, advice counts, index
builds in progress, last backup. Scrapes read the result; they never touch a database. (Leadership is looked at
for all databases of a server at once, by the daemon's housekeeping: `Coordinator.refresh`.)"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import timedelta

from indexd.backup.catalog import backup_readings
from indexd.clock import utcnow
from indexd.errors import first_line
from indexd.lifecycle import announce
from indexd.service.runtime import DatabaseRuntime, Probe, Runtime
from indexd.state.pause import active_pause, ran_out
from indexd.state.recommendation_rows import load_recommendations
from indexd.state.statuses import QUEUED

log = logging.getLogger(__name__)

PROBE_TIMEOUT = timedelta(seconds=5)
_EXPIRY_LOCK = threading.Lock()  # a job's refresh and the scheduled probe must not announce the same pause twice

# Index builds of indexd's own sessions in progress, with the fraction done of the current phase's blocks
# (falling back to tuples) -- PostgreSQL reports nothing finer.
_BUILDS = """
SELECT coalesce(c.relname, p.index_relid::text),
       CASE WHEN p.blocks_total > 0 THEN p.blocks_done::float / p.blocks_total
            WHEN p.tuples_total > 0 THEN p.tuples_done::float / p.tuples_total
            ELSE 0 END
FROM pg_stat_progress_create_index p
JOIN pg_stat_activity a ON a.pid = p.pid
LEFT JOIN pg_class c ON c.oid = p.index_relid
WHERE p.datname = current_database() AND a.application_name = 'indexd'
"""


def probe_database(runtime: Runtime, target: DatabaseRuntime) -> Probe:
    """Read everything the probe shows for one database; never raises (a failure is `up = False`)."""
    result = Probe(at=runtime.clock())
    schema = target.settings.state_schema
    try:
        with target.db.connection(statement_timeout=PROBE_TIMEOUT) as conn, conn.cursor() as cur:
            cur.execute(_BUILDS)
            result.builds = {str(name): float(ratio) for name, ratio in cur.fetchall()}
        result.up = True
        if target.prepared:  # the state schema exists: pause and advice can be read
            with target.db.connection(statement_timeout=PROBE_TIMEOUT) as conn:
                pause = active_pause(conn, schema, utcnow())
                recs = load_recommendations(conn, schema)
            if pause is not None:
                result.paused, result.pause_since, result.pause_until = True, pause.paused_at, pause.until
                result.pause_reason = pause.reason
            counts: dict[str, int] = {}
            for rec in recs:
                counts[str(rec.status)] = counts.get(str(rec.status), 0) + 1
            result.recommendations = counts
            result.pending_saving_pct = sum(r.improvement_pct or 0.0 for r in recs if r.status in QUEUED)
    except Exception as exc:  # noqa: BLE001 - an unreachable database is a reading, not an error
        result.error = first_line(exc)
    result.last_backup = _last_backup(runtime, target)
    return result


def _last_backup(runtime: Runtime, target: DatabaseRuntime) -> dict[str, object] | None:
    if not target.settings.backups.enabled:
        return None
    one = replace(runtime.settings, databases=(target.settings,))
    reading = backup_readings(one).get(target.name)
    if reading is None:
        return None
    return {
        "last_success": reading.last_success,
        "last_size_bytes": reading.last_size_bytes,
        "last_duration_s": reading.last_duration_s,
        "last_verified": reading.last_verified,
        "backups": reading.backups,
        "consecutive_failures": reading.consecutive_failures,
    }


def refresh(runtime: Runtime, database: str) -> None:
    """Probe one database and publish the reading (the scheduler calls this every few seconds)."""
    target = runtime.databases.get(database)
    if target is None:
        return
    reading = probe_database(runtime, target)
    if reading.up != target.probe.up and target.probe.at:
        if reading.up:
            log.info("database %s is reachable again", database)
        else:
            log.warning("database %s is unreachable: %s", database, reading.error)
    _announce_expiry(target, reading)
    target.probe = reading


def _announce_expiry(target: DatabaseRuntime, reading: Probe) -> None:
    """Timed pauses that ran out since the last look are events too (`resume` publishes its own). The leader
    alone tells (as the housekeeping last found it), and only when no other pause still holds indexing; the first
    look only sets the mark."""
    if not (reading.up and target.prepared):
        return
    with _EXPIRY_LOCK:
        since, now = target.pauses_checked_at, utcnow()
        if since is not None and target.leader and not reading.paused:
            try:
                with target.db.connection(statement_timeout=PROBE_TIMEOUT) as conn:
                    ended = ran_out(conn, target.settings.state_schema, since, now)
            except Exception as exc:  # noqa: BLE001 - looked at again on the next probe
                log.debug("expired pauses of %s not read: %s", target.name, first_line(exc))
                return
            for gone in ended:
                announce.pause_ended(target.name, [gone.id], None, until=gone.until)
        target.pauses_checked_at = now
