"""When indexd asks again after a guard refused a build, in words: the refusal says what would let the build
proceed (guards.py); this says when the daemon tries again. That is its first apply run (indexing.schedule.apply)
at or after the moment every refusal may have ended (Decision.retry_after), or its next run when no end is
foreseeable (a pause until resumed, bypass, another process leading: asked again at every run).

A refusal because another process leads names that process (readings.leader_holder); when it is a daemon with
this configuration's schedule, its next apply run is the same time.
"""

from __future__ import annotations

from datetime import datetime

from indexd.config.schedule import trigger
from indexd.lifecycle.guards import Decision
from indexd.units import human_duration


def next_run(cron: str, at_or_after: datetime) -> datetime | None:
    """The first time the cron schedule fires at or after `at_or_after`."""
    found = trigger(cron).get_next_fire_time(None, at_or_after)
    return found if isinstance(found, datetime) else None


def _at(moment: datetime, now: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC (in {human_duration(max(0.0, (moment - now).total_seconds()))})"


def when_again(decision: Decision, cron: str, now: datetime) -> str | None:
    """One sentence on when the daemon tries this build again (None for an allowed decision)."""
    if decision.allowed:
        return None
    if "leader" in decision.guards:
        tick = next_run(cron, now)
        return ("the leading process builds it at its own apply runs" +
                (f" (with this configuration's schedule, next at {_at(tick, now)})" if tick else ""))
    if decision.retry_after is None:
        tick = next_run(cron, now)
        return "the daemon asks again at every apply run" + (f" (next at {_at(tick, now)})" if tick else "")
    start = max(decision.retry_after, now)
    tick = next_run(cron, start)
    if tick is None:
        return f"it may proceed from {_at(start, now)}"
    return f"the daemon retries at its next apply run from then on, {_at(tick, now)}"
