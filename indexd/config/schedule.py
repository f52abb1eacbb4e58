"""Which job runs when, from the settings alone: one cron schedule per job and database, their APScheduler
triggers (UTC) and the misfire grace each gets. Pure; the daemon's `service.scheduler` runs them, and `status`
shows their next runs without a daemon.

Spread: a database's jobs fire at a fixed offset after their cron times, drawn from the database's name, up to
the shortest gap between two fire times of the cron or `fleet.spread`, whichever is less. A hundred databases
with the same `*/5 * * * *` capture thus start it over the five minutes instead of in one second, every run of
one database stays one interval apart, and every process computes the same offsets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from indexd.config.schema import Settings
from indexd.errors import ConfigError

# The order a start-up round runs them in: each feeds the next.
JOB_ORDER = ("capture", "advise", "apply", "verify", "health", "backup", "backup_verify", "prune")
GRACE_FRACTION = 0.25
_GAPS_SAMPLED = 8  # fire times looked at for a cron's shortest gap
_REFERENCE = datetime(2024, 1, 1, tzinfo=UTC)  # a fixed start for that look, so every process agrees


@dataclass(frozen=True)
class JobSpec:
    job: str
    database: str
    cron: str
    offset: timedelta = timedelta(0)  # after each cron time (the spread)

    @property
    def id(self) -> str:
        return f"{self.database}:{self.job}"

    def trigger(self) -> BaseTrigger:
        base = trigger(self.cron)
        return OffsetTrigger(base, self.offset) if self.offset else base


class OffsetTrigger(BaseTrigger):
    """A cron trigger whose fire times are all moved later by one fixed offset."""

    def __init__(self, base: CronTrigger, offset: timedelta) -> None:
        self.base = base
        self.offset = offset

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        previous = previous_fire_time - self.offset if previous_fire_time is not None else None
        fire: datetime | None = self.base.get_next_fire_time(previous, now - self.offset)
        return fire + self.offset if fire is not None else None

    def __str__(self) -> str:
        return f"{self.base} + {int(self.offset.total_seconds())}s"


def job_specs(settings: Settings) -> list[JobSpec]:
    """Every scheduled job of every database, from its own schedules (backups only when enabled), each with its
    database's offset (the spread)."""
    specs: list[JobSpec] = []
    spread = settings.fleet.spread
    for db in settings.databases:
        sched = db.indexing.schedule
        crons = {"capture": sched.capture, "advise": sched.advise, "apply": sched.apply,
                 "verify": sched.verify, "health": sched.health, "prune": settings.retention.schedule}
        if db.backups.enabled:
            crons["backup"] = db.backups.schedule
            crons["backup_verify"] = db.backups.verify.restore_schedule
        specs += [JobSpec(job, db.name, crons[job], job_offset(db.name, crons[job], spread))
                  for job in JOB_ORDER if job in crons]
    return specs


def spread_fraction(database: str) -> float:
    """Where in its spread window a database's jobs fire: a number in [0, 1) drawn from its name."""
    digest = hashlib.sha256(f"indexd-spread\0{database}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def job_offset(database: str, cron: str, spread: timedelta) -> timedelta:
    """The fixed delay after each cron time for this database's job, in whole seconds (0 without a spread)."""
    if spread <= timedelta(0):
        return timedelta(0)
    try:
        window = min(shortest_gap(cron), spread)
    except ConfigError:
        return timedelta(0)  # `validate` reports the bad cron
    return timedelta(seconds=int(spread_fraction(database) * window.total_seconds()))


@cache
def shortest_gap(cron: str) -> timedelta:
    """The shortest time between two fire times of a cron (over its first few from a fixed date)."""
    trig = trigger(cron)
    times: list[datetime] = []
    fire = trig.get_next_fire_time(None, _REFERENCE)
    while fire is not None and len(times) < _GAPS_SAMPLED:
        times.append(fire)
        fire = trig.get_next_fire_time(fire, fire + timedelta(seconds=1))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return min(gaps) if gaps else timedelta(days=1)


def trigger(cron: str) -> CronTrigger:
    try:
        return CronTrigger.from_crontab(cron, timezone=UTC)
    except ValueError as exc:
        raise ConfigError(f"invalid cron schedule {cron!r}: {exc}") from None


def interval_of(cron: str, now: datetime) -> timedelta:
    """The time between the next two fire times of a cron expression (its interval around `now`)."""
    trig = trigger(cron)
    first = trig.get_next_fire_time(None, now)
    second = trig.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
    if first is None or second is None:
        return timedelta(days=1)
    return second - first


def misfire_grace(cron: str, now: datetime) -> int:
    """Seconds a late run may still start: a fraction of the job's interval, between 1 s and 1 h."""
    seconds = interval_of(cron, now).total_seconds() * GRACE_FRACTION
    return int(min(3600, max(1, seconds)))


def validate(settings: Settings) -> list[str]:
    """Every invalid cron expression, with the key path that holds it."""
    problems = []
    for spec in job_specs(settings):
        try:
            trigger(spec.cron)
        except ConfigError as exc:
            problems.append(f"databases.{spec.database} {spec.job} schedule: {exc}")
    return problems
