"""`indexd status`: what is going on with each database, gathered from the database itself (leader lock,
pause, job runs, recommendations, audit log), the backup manifests on disk, and the leading daemon's /health
for what only it knows (pool and breaker). The daemon asked is the process that holds the database's leader
lock, found from the database (see `status.daemon`), never whatever answers on a configured port.
Read-only; never shows a secret."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from psycopg2 import sql

from indexd.backup.catalog import list_backups
from indexd.backup.manifest import BackupInfo
from indexd.backup.trial import last_trial
from indexd.config.schedule import job_specs
from indexd.config.schema import DatabaseSettings, Settings
from indexd.config.secrets import read_token
from indexd.db.pool import Database, PgConnection
from indexd.db.standby import STANDBY, WHY, is_standby
from indexd.dsn import parse_dsn, redact_dsn
from indexd.errors import ConfigError, StateMissing
from indexd.lifecycle.leader import leader_key
from indexd.state.audit import recent_mutations
from indexd.state.migrations import current_version
from indexd.state.pause import active_pause
from indexd.state.recommendation_rows import load_recommendations
from indexd.state.statuses import OPEN, Status
from indexd.status.daemon import Found, Holder, identify, matching_database

log = logging.getLogger(__name__)

NOT_REACHABLE = "daemon not reachable"

_LEADER = """
SELECT a.pid, a.application_name, host(a.client_addr), a.client_port, a.backend_start, inet_server_port()
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (
      SELECT oid FROM pg_database WHERE datname = %s)
  AND ((l.classid::bigint << 32) | l.objid::bigint) = %s::bigint
"""


def _leader(conn: PgConnection, settings: DatabaseSettings) -> dict[str, Any] | None:
    """The leader lock's holder; its `holder` (for finding its process) is taken out by `DaemonFinder`. The lock
    lives in the server's leadership database (`leadership.database`); pg_locks shows every database's locks, so
    this connection to the managed database sees it, and the holder is that leadership session."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        key = leader_key(settings.state_schema, str(cur.fetchone()[0]))
        cur.execute(_LEADER, (settings.leadership.database, key))
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
    return {s.job: s.trigger().get_next_fire_time(None, now) for s in job_specs(settings)
            if s.database == database}


def _recommendations(db: Database) -> dict[str, Any]:
    with db.connection() as conn:
        recs = load_recommendations(conn, db.settings.state_schema)
    counts = {str(s): sum(1 for r in recs if r.status == s) for s in Status}
    open_ = [{"id": r.id, "status": str(r.status), "origin": str(r.origin), "attempts": r.attempts,
              "index": r.index_name, "table": f"{r.table_schema}.{r.table_name}", "columns": r.columns,
              "improvement_pct": r.improvement_pct, "size_bytes": r.estimated_size_bytes}
             for r in recs if r.status in OPEN]
    return {"counts": {k: v for k, v in counts.items() if v}, "open": open_}


def _from_database(db: Database, now: datetime) -> dict[str, Any]:
    schema = db.settings.state_schema
    standby = is_standby(db)
    if current_version(db) is None:
        where = "on the primary (it reaches this standby by replication)" if standby else "first"
        raise StateMissing(f"no indexd state schema {schema!r} in database {db.name} yet: run 'indexd migrate' "
                           f"{where}")
    with db.connection() as conn:
        leader = _leader(conn, db.settings)
        pause = active_pause(conn, schema, now)
        runs = _job_runs(conn, schema)
        changes = recent_mutations(conn, schema, limit=10)
    return {
        # A standby changes nothing; its state tables are the primary's, replicated.
        "server": {"role": "standby", "read_only": f"{STANDBY}: {WHY}"} if standby else {"role": "primary"},
        "leader": leader,
        "pause": None if pause is None else {"since": pause.paused_at, "until": pause.until,
                                             "reason": pause.reason, "by": pause.paused_by},
        "jobs": runs,
        "recommendations": _recommendations(db),
        "recent_changes": [{"at": m.at, "action": m.action, "target": m.target, "outcome": m.outcome or "unfinished",
                            "by": m.actor, "reason": m.reason} for m in changes],
    }


def _backups(settings: Settings, db: DatabaseSettings) -> dict[str, Any]:
    if not db.backups.enabled:
        return {"enabled": False}
    try:
        found = list_backups(settings, db.name)
    except Exception as exc:  # noqa: BLE001 - status shows what it can
        return {"enabled": True, "error": str(exc)}
    latest = sorted(found, key=lambda b: b.started_at, reverse=True)[:5]
    return {"enabled": True, "count": len(found), "latest": [_backup(b) for b in latest]}


def _backup(b: BackupInfo) -> dict[str, Any]:
    """One backup with its two facts: when its checksum last matched, and its last test restore."""
    test = last_trial(b.manifest)
    return {"id": b.id, "status": b.status, "started_at": b.started_at, "size_bytes": b.size_bytes,
            "verified_at": b.verified_at, "test_restore_at": test.at if test else None,
            "test_restore_result": test.result if test else None, "test_restore_detail": test.detail if test else None}


def database_state(settings: Settings, dbs: DatabaseSettings, now: datetime) -> dict[str, Any]:
    """What the database itself says: leader, pause, job runs, advice, recent changes. Raises when it cannot be
    read (the caller reports that database's error and goes on); building the pool reads the password file, so a
    bad one is this database's error too. One attempt: status is asked for during outages, and a down server is
    the answer, not a reason to spend the retry policy's minute on each database."""
    db = Database(dbs, replace(settings.retry, attempts=1), settings.circuit_breaker)
    try:
        return _from_database(db, now)
    finally:
        db.close()


@dataclass
class DaemonFinder:
    """Finds the leading daemon of each database in turn, asking each local process at most once."""

    token: str | None
    found: dict[int, Found] = field(default_factory=dict)  # by OS pid

    @classmethod
    def for_settings(cls, settings: Settings) -> DaemonFinder:
        """With the configured HTTP token; an unreadable token file is warned about and no token is sent."""
        try:
            return cls(read_token(settings.http))
        except ConfigError as exc:
            log.warning("asking the daemon without a token: %s", exc)
            return cls(None)

    def leader_of(self, state: dict[str, Any]) -> Found:
        """The daemon holding the leader lock `database_state` read; the leader entry gets its OS process and
        a note saying who leads and whether its daemon was asked. The holder itself leaves the entry."""
        if "leader" not in state:
            return Found("the leader is unknown: the database could not be read")
        leader = state["leader"]
        found = identify(leader.pop("holder") if leader else None, self.token, cache=self.found)
        if leader:
            leader.update(process=found.os_pid, daemon=found.note)
        return found

    def daemons(self) -> list[dict[str, Any]]:
        """Each daemon that answered as a leader, summarised (once, however many databases it leads)."""
        return [daemon_summary(f.health) for f in self.found.values() if f.health is not None]


def local_state(settings: Settings, dbs: DatabaseSettings, leading: Found, now: datetime) -> dict[str, Any]:
    """What needs no connection to the database: its DSN (password-free), the next run of each job, the backups
    on disk, and the leading daemon (its summary, with its pool and breaker for this database), or why it was
    not asked."""
    daemon: dict[str, Any] | str = f"{NOT_REACHABLE}: {leading.note}"
    if leading.health is not None:
        live = matching_database(leading.health, dbs.name, str(_dbname(dbs))) or {}
        daemon = {**daemon_summary(leading.health),
                  **{k: live.get(k) for k in ("pool", "breaker", "reachable", "leader") if k in live}}
    return {"dsn": redact_dsn(dbs.dsn), "next_runs": next_runs(settings, dbs.name, now),
            "backups": _backups(settings, dbs), "daemon": daemon}


def _dbname(db: DatabaseSettings) -> str | None:
    """The database a DSN names (to match a daemon's entry for it when the names in the configs differ)."""
    try:
        return parse_dsn(db.dsn).get("dbname")
    except ConfigError:
        return None


def daemon_summary(health: dict[str, Any]) -> dict[str, Any]:
    return {k: health.get(k) for k in ("pid", "status", "live", "ready", "uptime_s", "config", "reloads",
                                       "last_reload_error")}
