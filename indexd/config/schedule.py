"""Which job runs when, from the settings alone: one cron schedule per job and database, their APScheduler
triggers (UTC) and the misfire grace each gets. Pure; the daemon's `service.scheduler` runs them, and `status`
shows their next runs without a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from indexd.config.schema import Settings
from indexd.errors import ConfigError

# The order a start-up round runs them in: each feeds the next.
JOB_ORDER = ("capture", "advise", "apply", "verify", "health", "backup", "backup_verify", "prune")
GRACE_FRACTION = 0.25


@dataclass(frozen=True)
class JobSpec:
    job: str
    database: str
    cron: str

    @property
    def id(self) -> str:
        return f"{self.database}:{self.job}"


def job_specs(settings: Settings) -> list[JobSpec]:
    """Every scheduled job of every database, from its own schedules (backups only when enabled)."""
    specs: list[JobSpec] = []
    for db in settings.databases:
        sched = db.indexing.schedule
        crons = {"capture": sched.capture, "advise": sched.advise, "apply": sched.apply,
                 "verify": sched.verify, "health": sched.health, "prune": settings.retention.schedule}
        if db.backups.enabled:
            crons["backup"] = db.backups.schedule
            crons["backup_verify"] = db.backups.verify.restore_schedule
        specs += [JobSpec(job, db.name, crons[job]) for job in JOB_ORDER if job in crons]
    return specs


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
