"""`indexd status`: what is going on with each database, gathered from the database itself (leader lock,
pause, job runs, recommendations, audit log), the backup manifests on disk, and the leading daemon's /health
for what only it knows (pool and breaker). The daemon asked is the process that holds the database's leader
lock, found from the database (see `status_daemon`), never whatever answers on a configured port.
Read-only; never shows a secret."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from psycopg2 import sql

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.dsn import parse_dsn, redact_dsn
from indexd.db.pool import Database, PgConnection
from indexd.errors import ConfigError
from indexd.service.http import read_token
from indexd.status_daemon import Found, Holder, identify, matching_database

log = logging.getLogger(__name__)

ALL_STATUSES = ("pending", "approved", "rejected", "building", "built", "failed", "kept", "reverted", "superseded")
NOT_REACHABLE = "daemon not reachable"

_LEADER = """
SELECT a.pid, a.application_name, host(a.client_addr), a.client_port, a.backend_start, inet_server_port()
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (
      SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = %s::bigint
"""


def _leader(conn: PgConnection, state_schema: str) -> dict[str, Any] | None:
    from indexd.lifecycle.leader import leader_key

    with conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        key = leader_key(state_schema, str(cur.fetchone()[0]))
        cur.execute(_LEADER, (key,))
        row = cur.fetchone()
    if row is None:
        return None
    pid, app, addr, port, since, server_port = row
    return {"pid": pid, "application_name": app, "client": f"{addr}:{port}" if addr else "local socket",
            "since": since, "holder": Holder(int(pid), addr, port, int(server_port or 0))}


def _job_runs(conn: PgConnection, schema: str) -> dict[str, dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL(
            "SELECT DISTINCT ON (job) job, job_id, started_at, finished_at, outcome, message FROM {}.job_runs"
            " ORDER BY job, started_at DESC").format(sql.Identifier(schema)))
        return {r[0]: {"job_id": r[1], "started_at": r[2], "finished_at": r[3], "outcome": r[4] or "running",
                       "message": r[5]} for r in cur.fetchall()}


def next_runs(settings: Settings, database: str, now: datetime) -> dict[str, datetime | None]:
    from indexd.service.scheduler import job_specs, trigger

    return {s.job: trigger(s.cron).get_next_fire_time(None, now) for s in job_specs(settings)
            if s.database == database}


def _recommendations(db: Database) -> dict[str, Any]:
    from indexd.lifecycle.recommendations import load_recommendations

    with db.connection() as conn:
        recs = load_recommendations(conn, db.settings.state_schema, statuses=ALL_STATUSES)
    counts = {s: sum(1 for r in recs if r.status == s) for s in ALL_STATUSES}
    open_ = [{"id": r.id, "status": r.status, "index": r.index_name, "table": f"{r.table_schema}.{r.table_name}",
              "columns": r.columns, "improvement_pct": r.improvement_pct, "size_bytes": r.estimated_size_bytes}
             for r in recs if r.status in ("pending", "approved", "building")]
    return {"counts": {k: v for k, v in counts.items() if v}, "open": open_}


def _from_database(db: Database, now: datetime) -> dict[str, Any]:
    from indexd.db.state import current_version
    from indexd.errors import UsageError
    from indexd.lifecycle.audit import recent_mutations
    from indexd.lifecycle.pause import active_pause

    schema = db.settings.state_schema
    if current_version(db) is None:
        raise UsageError(f"no indexd state schema {schema!r} in database {db.name} yet: run 'indexd migrate' first")
    with db.connection() as conn:
        leader = _leader(conn, schema)
        pause = active_pause(conn, schema, now)
        runs = _job_runs(conn, schema)
        changes = recent_mutations(conn, schema, limit=10)
    return {
        "leader": leader,
        "pause": None if pause is None else {"since": pause.paused_at, "until": pause.until,
                                             "reason": pause.reason, "by": pause.paused_by},
        "jobs": runs,
        "recommendations": _recommendations(db),
        "recent_changes": [{"at": m.at, "action": m.action, "target": m.target, "outcome": m.outcome or "unfinished",
                            "by": m.actor, "reason": m.reason} for m in changes],
    }


def _backups(settings: Settings, db: DatabaseSettings) -> dict[str, Any]:
    from indexd.backup.catalog import list_backups

    if not db.backups.enabled:
        return {"enabled": False}
    try:
        found = list_backups(settings, db.name)
    except Exception as exc:  # noqa: BLE001 - status shows what it can
        return {"enabled": True, "error": str(exc)}
    latest = sorted(found, key=lambda b: b.started_at, reverse=True)[:5]
    return {"enabled": True, "count": len(found),
            "latest": [{"id": b.id, "status": b.status, "started_at": b.started_at, "size_bytes": b.size_bytes,
                        "verified_at": b.verified_at} for b in latest]}


def _daemon_of(entry: dict[str, Any], name: str, dbname: str, token: str | None,
               cache: dict[int, Found]) -> Found:
    """Find the leading daemon of one database (see `status_daemon`); fill in its live pool and breaker."""
    if "leader" not in entry:
        found = Found("the leader is unknown: the database could not be read")
        entry["daemon"] = f"{NOT_REACHABLE}: {found.note}"
        return found
    leader = entry["leader"]
    found = identify(leader.pop("holder") if leader else None, token, cache=cache)
    if leader:
        leader.update(process=found.os_pid, daemon=found.note)
    live = matching_database(found.health, name, dbname) if found.health else None
    entry["daemon"] = ({k: live.get(k) for k in ("pool", "breaker", "reachable", "leader")} if live
                       else f"{NOT_REACHABLE}: {found.note}")
    return found


def gather(settings: Settings, databases: list[DatabaseSettings], now: datetime | None = None) -> dict[str, Any]:
    """Everything `status` shows, per database; an unreachable database gets an `error` and the rest."""
    now = now or utcnow()
    try:
        token = read_token(settings.http)
    except ConfigError as exc:
        log.warning("asking the daemon without a token: %s", exc)
        token = None
    cache: dict[int, Found] = {}
    daemons: list[dict[str, Any]] = []
    out: dict[str, Any] = {"daemon": NOT_REACHABLE, "databases": {}}
    for dbs in databases:
        entry: dict[str, Any] = {"dsn": redact_dsn(dbs.dsn)}
        db = None
        try:  # building the pool reads the password file: a bad one is this database's error, not the command's
            # One attempt: status is asked for during outages, and a down server is the answer, not a reason to
            # spend the retry policy's minute on each database.
            db = Database(dbs, replace(settings.retry, attempts=1), settings.circuit_breaker)
            entry.update(_from_database(db, now))
        except Exception as exc:  # noqa: BLE001 - one database down never hides the others
            entry["error"] = redact_dsn(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        finally:
            if db is not None:
                db.close()
        entry["next_runs"] = next_runs(settings, dbs.name, now)
        entry["backups"] = _backups(settings, dbs)
        found = _daemon_of(entry, dbs.name, str(db_name(dbs)), token, cache)
        if found.health is not None and found.os_pid not in (d["pid"] for d in daemons):
            daemons.append(_daemon_summary(found.health))
        out["databases"][dbs.name] = entry
    if len(daemons) == 1:
        out["daemon"] = daemons[0]
    elif daemons:
        out["daemon"] = {"daemons": daemons}
    return out


def db_name(db: DatabaseSettings) -> str | None:
    """The database a DSN names (to match a daemon's entry for it when the names in the configs differ)."""
    try:
        return parse_dsn(db.dsn).get("dbname")
    except ConfigError:
        return None


def _daemon_summary(health: dict[str, Any]) -> dict[str, Any]:
    return {k: health.get(k) for k in ("pid", "status", "live", "ready", "uptime_s", "config", "reloads",
                                       "last_reload_error")}
