"""What the health endpoints and the watchdog conclude from the Runtime: pure reads, no I/O."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from indexd.dsn import redact_dsn
from indexd.service.runtime import DatabaseRuntime, Runtime
from indexd.units import human_duration

LOOP_MAX_AGE_S = 30.0  # the main loop turns every second or so
SCHEDULER_MAX_AGE_S = 30.0  # the heartbeat job runs every 5 s on an executor of its own
PROBE_MAX_AGE_S = 60.0


def liveness(rt: Runtime, scheduler_alive: Callable[[], bool] | None = None) -> tuple[bool, str]:
    """Alive = the main loop ran recently and, once started, the scheduler thread runs and keeps beating."""
    age = rt.loop_age()
    if age > LOOP_MAX_AGE_S:
        return False, f"main loop last ran {human_duration(age)} ago"
    if not rt.startup_complete:
        return True, "starting"
    alive = scheduler_alive if scheduler_alive is not None else rt.scheduler_alive
    if alive is not None and not alive():
        return False, "scheduler thread is not running"
    beat = rt.scheduler_age()
    if beat is None:
        started = rt.clock() - rt.started_at
        if started > SCHEDULER_MAX_AGE_S:
            return False, "scheduler heartbeat never ran"
        return True, "waiting for the first scheduler heartbeat"
    if beat > SCHEDULER_MAX_AGE_S:
        return False, f"scheduler heartbeat is {human_duration(beat)} old (stuck scheduler)"
    return True, "ok"


def database_ready(rt: Runtime, t: DatabaseRuntime) -> dict[str, Any]:
    p = t.probe
    breaker = t.db.stats().breaker_state
    fresh = p.at and rt.clock() - p.at <= PROBE_MAX_AGE_S
    ready = bool(p.up and fresh and breaker != "open")
    out: dict[str, Any] = {"ready": ready, "reachable": p.up, "breaker": breaker}
    if not fresh:
        out["detail"] = "not probed yet" if not p.at else "last probe is stale"
    elif p.error:
        out["detail"] = redact_dsn(p.error)
    return out


def readiness(rt: Runtime) -> tuple[bool, dict[str, Any]]:
    """Ready = started, not stopping, and every configured database reachable with its breaker not open."""
    per_db = {t.name: database_ready(rt, t) for t in rt.database_list()}
    ok = rt.startup_complete and not rt.stopping and all(d["ready"] for d in per_db.values())
    return ok, per_db


def _age(rt: Runtime, at: float) -> float | None:
    return round(rt.clock() - at, 1) if at else None


def database_details(rt: Runtime, t: DatabaseRuntime) -> dict[str, Any]:
    p = t.probe
    backup = dict(p.last_backup) if p.last_backup else None
    return {
        **database_ready(rt, t),
        "leader": p.leader,
        "paused": p.paused,
        "pause": {"since": p.pause_since, "until": p.pause_until, "reason": p.pause_reason} if p.paused else None,
        "pool": t.db.stats().as_dict(),
        "recommendations": dict(p.recommendations),
        "builds_in_progress": dict(p.builds),
        "last_backup": backup,
        "last_runs": {job: rec.as_dict() for job, rec in sorted(t.last_runs.items())},
        "probe_age_s": _age(rt, p.at),
        "dsn": redact_dsn(t.settings.dsn),
    }


def health_details(rt: Runtime) -> dict[str, Any]:
    live, why = liveness(rt)
    ready, _ = readiness(rt)
    return {
        "pid": os.getpid(),  # lets `status` tell this daemon from anything else answering on a port
        "status": "ok" if live and ready else ("degraded" if live else "failing"),
        "live": live,
        "live_detail": why,
        "ready": ready,
        "startup_complete": rt.startup_complete,
        "stopping": rt.stopping,
        "config": rt.settings.source,
        "uptime_s": round(rt.clock() - rt.started_at, 1),
        "reloads": dict(rt.reloads),
        "last_reload_error": rt.last_reload_error,
        "databases": {t.name: database_details(rt, t) for t in rt.database_list()},
    }
