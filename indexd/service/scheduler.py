"""Which job runs when: cron schedules from the settings, turned into APScheduler jobs (UTC, one instance each,
coalesced, a misfire grace of a fraction of each job's interval), plus a heartbeat the watchdog relies on.

`job_specs` and `misfire_grace` are pure; `Scheduler` wraps APScheduler's BackgroundScheduler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from indexd.config.schema import Settings
from indexd.errors import ConfigError

log = logging.getLogger(__name__)

# The order a start-up round runs them in: each feeds the next.
JOB_ORDER = ("capture", "advise", "apply", "verify", "health", "backup", "backup_verify", "prune")
HEARTBEAT_SECONDS = 5.0
PROBE_SECONDS = 15.0
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


class Scheduler:
    """APScheduler in a background thread: the jobs of `job_specs`, a heartbeat and the probes."""

    def __init__(self, run_job: Callable[[str, str], object], heartbeat: Callable[[], None],
                 probe: Callable[[str], None], workers: int = 4) -> None:
        self._run_job = run_job
        self._sched = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(workers), "heartbeat": ThreadPoolExecutor(1),
                       "probe": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self._sched.add_job(heartbeat, IntervalTrigger(seconds=HEARTBEAT_SECONDS, timezone=UTC), id="heartbeat",
                            executor="heartbeat", misfire_grace_time=int(HEARTBEAT_SECONDS),
                            next_run_time=datetime.now(UTC))
        self._probe = probe

    def start(self) -> None:
        self._sched.start()

    def alive(self) -> bool:
        """Whether APScheduler's own thread is running (a dead thread never fires anything again)."""
        thread = getattr(self._sched, "_thread", None)
        return bool(self._sched.running and thread is not None and thread.is_alive())

    def schedule(self, specs: Iterable[JobSpec], databases: Iterable[str], now: datetime | None = None) -> None:
        """Replace every job and probe with these (used at start and on reload)."""
        now = now or datetime.now(UTC)
        specs = list(specs)
        for job in self._sched.get_jobs():
            if job.id != "heartbeat":
                job.remove()
        for name in databases:
            self._sched.add_job(self._probe, IntervalTrigger(seconds=PROBE_SECONDS, timezone=UTC), args=(name,),
                                id=f"{name}:probe", executor="probe", misfire_grace_time=int(PROBE_SECONDS),
                                next_run_time=now)
        for spec in specs:
            self._sched.add_job(self._run_job, trigger(spec.cron), args=(spec.job, spec.database), id=spec.id,
                                name=spec.id, misfire_grace_time=misfire_grace(spec.cron, now))
        log.info("scheduled %d jobs for %d database(s)", len(specs), len({s.database for s in specs}))

    def run_once(self, func: Callable[..., object], name: str, *args: object) -> None:
        """Run `func(*args)` once, now, in a thread of its own (e.g. a start-up round).

        Not as an APScheduler date job: APScheduler removes a spent date job from its scheduler thread, and a
        shutdown arriving at that moment makes the removal raise JobLookupError there, killing the thread.
        """
        threading.Thread(target=func, args=args, name=f"once:{name}", daemon=True).start()

    def next_runs(self) -> dict[str, datetime | None]:
        return {job.id: job.next_run_time for job in self._sched.get_jobs()}

    def shutdown(self) -> None:
        """Stop firing new runs; running ones are left to the caller to wait for (bounded)."""
        if self._sched.running:
            self._sched.shutdown(wait=False)
