"""The daemon's scheduler: the job specs of `indexd.config.schedule` as APScheduler jobs (UTC, one instance each,
coalesced, a misfire grace of a fraction of each job's interval, each database's jobs at its own offset), plus a
heartbeat the watchdog relies on, the housekeeping (idle connections, leadership) and the per-database probes.
`Scheduler` wraps APScheduler's BackgroundScheduler.

Probes are spread too: each database's at its own offset within the probe interval, and the interval grows with
the number of databases so that probing costs at most PROBES_PER_SECOND connections a second (a probe of a
database whose pooled connections were closed as idle opens one).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from indexd.config.schedule import JobSpec, misfire_grace, spread_fraction

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
HOUSEKEEPING_SECONDS = 5.0
PROBE_SECONDS = 15.0  # the probe interval of a small fleet ...
PROBES_PER_SECOND = 4.0  # ... and the most probes a second a large one gets


def probe_interval(databases: int) -> float:
    """Seconds between two probes of one database, for a daemon with this many databases."""
    return max(PROBE_SECONDS, databases / PROBES_PER_SECOND)


class Scheduler:
    """APScheduler in a background thread: the jobs of `job_specs`, a heartbeat and the probes."""

    def __init__(self, run_job: Callable[[str, str], object], heartbeat: Callable[[], None],
                 probe: Callable[[str], None], workers: int = 4,
                 housekeeping: Callable[[], None] | None = None) -> None:
        self._run_job = run_job
        self._sched = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(workers), "heartbeat": ThreadPoolExecutor(1),
                       "probe": ThreadPoolExecutor(2), "housekeeping": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self._sched.add_job(heartbeat, IntervalTrigger(seconds=HEARTBEAT_SECONDS, timezone=UTC), id="heartbeat",
                            executor="heartbeat", misfire_grace_time=int(HEARTBEAT_SECONDS),
                            next_run_time=datetime.now(UTC))
        if housekeeping is not None:
            self._sched.add_job(housekeeping, IntervalTrigger(seconds=HOUSEKEEPING_SECONDS, timezone=UTC),
                                id="housekeeping", executor="housekeeping",
                                misfire_grace_time=int(HOUSEKEEPING_SECONDS))
        self._probe = probe

    def start(self) -> None:
        self._sched.start()

    def alive(self) -> bool:
        """Whether APScheduler's own thread is running (a dead thread never fires anything again)."""
        thread = getattr(self._sched, "_thread", None)
        return bool(self._sched.running and thread is not None and thread.is_alive())

    def schedule(self, specs: Iterable[JobSpec], databases: Iterable[str], now: datetime | None = None) -> None:
        """Replace every job and probe with these (used at start and on reload). The first probe of each
        database comes at its offset within the probe interval: the daemon probes each one as it prepares it."""
        now = now or datetime.now(UTC)
        specs, names = list(specs), list(databases)
        for job in self._sched.get_jobs():
            if job.id not in ("heartbeat", "housekeeping"):
                job.remove()
        every = probe_interval(len(names))
        for name in names:
            first = now + timedelta(seconds=spread_fraction(name) * every)
            self._sched.add_job(self._probe, IntervalTrigger(seconds=every, timezone=UTC), args=(name,),
                                id=f"{name}:probe", executor="probe", misfire_grace_time=int(every),
                                next_run_time=first)
        for spec in specs:
            self._sched.add_job(self._run_job, spec.trigger(), args=(spec.job, spec.database), id=spec.id,
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
