"""The daemon's scheduler: the job specs of `indexd.config.schedule` as APScheduler jobs (UTC, one instance each,
coalesced, a misfire grace of a fraction of each job's interval), plus a heartbeat the watchdog relies on and the
per-database probes. `Scheduler` wraps APScheduler's BackgroundScheduler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from indexd.config.schedule import JobSpec, misfire_grace, trigger

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
PROBE_SECONDS = 15.0


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
