"""What the daemon runs: per-database pools and leadership, the scheduler, HTTP endpoints, the watchdog.

`IndexdService` implements the start / tick / reload / stop steps that `daemon.Daemon` drives. Start-up order:
HTTP, scheduler, databases (prepared in the background: migrate, leadership, INVALID leftovers), job schedules.
Stop runs in reverse, each step bounded, so the whole stop fits in STOP_BOUND_S (the unit file's
TimeoutStopSec leaves room above it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping

from indexd.config.checks import check_runnable
from indexd.config.load import load_settings
from indexd.config.schedule import JOB_ORDER, job_specs
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.pool import Database
from indexd.errors import ConfigError
from indexd.log import setup_logging
from indexd.service import databases
from indexd.service.http import HttpServer
from indexd.service.jobs import JobRunner
from indexd.service.metrics import Metrics
from indexd.service.notify import NotificationCollector, Notifications
from indexd.service.probe import refresh
from indexd.service.runtime import DatabaseRuntime, JobRecord, Runtime
from indexd.service.scheduler import Scheduler
from indexd.service.status_view import liveness
from indexd.service.systemd import Notifier, Watchdog

log = logging.getLogger(__name__)

# With INDEXD_RUN_JOBS_AT_START=1 every job of every database also runs once at start, in dependency order
# (capture, advise, apply, verify, health, backup, backup_verify, prune), then on its schedule as usual. Cron's
# finest step is a minute; tests and first-time checks use this instead of waiting for the schedules.
RUN_AT_START_ENV = "INDEXD_RUN_JOBS_AT_START"


class IndexdService:
    """The daemon's work: what to start, what each loop turn does, how to reload and stop."""

    def __init__(self, settings: Settings, config_path: str | None = None,
                 env: Mapping[str, str] | None = None, notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.env = os.environ if env is None else env
        self.runtime = Runtime(settings)
        self.metrics = Metrics(self.runtime)
        self.notifications = Notifications(settings.notifications)
        self.metrics.registry.register(NotificationCollector(self.notifications))
        self.runner = JobRunner(self.runtime, observe=self._observe)
        self.http = HttpServer(self.runtime, self.metrics)
        self.notifier = notifier or Notifier(self.env)
        self.scheduler = Scheduler(self.runner.run, self.runtime.beat_scheduler,
                                   lambda name: refresh(self.runtime, name), workers=self._workers(settings))
        self.runtime.scheduler_alive = self.scheduler.alive
        self.watchdog = Watchdog(self.notifier, lambda: liveness(self.runtime))

    def _observe(self, rec: JobRecord) -> None:
        """After each run: its duration into the histogram, and a fresh probe so health shows its effect."""
        self.metrics.observe(rec)
        if not self.runtime.stopping:
            refresh(self.runtime, rec.database)

    @staticmethod
    def _workers(settings: Settings) -> int:
        return max(4, min(16, 2 * len(settings.databases) + 2))

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    # ---- start ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        check_runnable(self.settings)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per run is ours to write
        self.notifications.start()  # first: events of the start-up itself (leadership gained) go out too
        self.http.start(self.settings.http)
        self.scheduler.start()
        for db_settings in self.settings.databases:
            self._add_database(db_settings)
        self._schedule()
        if self.env.get(RUN_AT_START_ENV) == "1":
            for name in self.runtime.databases:
                log.info("running every job of %s once now (%s=1)", name, RUN_AT_START_ENV)
                self.scheduler.run_once(self.runner.round, f"start:{name}", name, JOB_ORDER)
        self.runtime.startup_complete = True
        log.info("indexd started: %d database(s), %d scheduled job(s)", len(self.runtime.databases),
                 len(job_specs(self.settings)))

    def _add_database(self, db_settings: DatabaseSettings) -> None:
        """Open the pool and prepare the database in the background (migrate, leadership, leftovers), so a
        slow or dead server delays neither READY nor the other databases; its first job retries if needed."""
        s = self.settings
        target = DatabaseRuntime(db_settings, Database(db_settings, s.retry, s.circuit_breaker))
        with self.runtime.lock:
            self.runtime.databases[db_settings.name] = target
        self.scheduler.run_once(self._prepare, f"prepare:{db_settings.name}", target)

    def _prepare(self, target: DatabaseRuntime) -> None:
        databases.prepare(target)
        if not target.closed:
            refresh(self.runtime, target.name)  # health shows leadership and state at once

    def _schedule(self) -> None:
        self.scheduler.schedule(job_specs(self.settings), list(self.runtime.databases))

    def status_line(self) -> str:
        n = len(self.runtime.databases)
        up = sum(1 for t in self.runtime.database_list() if t.probe.up)
        return f"{n} database(s), {up} reachable" if any(t.probe.at for t in self.runtime.database_list()) \
            else f"{n} database(s)"

    # ---- loop -------------------------------------------------------------------------------------------------
    def tick(self) -> None:
        self.runtime.beat_loop()
        self.watchdog.tick()

    def wait_hint(self) -> float:
        return self.watchdog.sleep_hint(1.0)

    # ---- reload -----------------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Validate the file fully, then swap; on any problem keep the running config and say why."""
        try:
            new = load_settings(self.config_path or self.settings.source, self.env)
            check_runnable(new)
            setup_logging(new.logging)  # replaces only our handlers; fails before anything else changes
        except (ConfigError, OSError) as exc:
            problems = getattr(exc, "problems", None) or [str(exc)]
            self.runtime.reloads["failed"] += 1
            self.runtime.last_reload_error = "; ".join(problems)
            log.error("reload refused, keeping the running configuration: %s", "; ".join(problems))
            return False
        self._swap(new)
        self.runtime.reloads["ok"] += 1
        self.runtime.last_reload_error = None
        log.info("configuration reloaded from %s: %d database(s)", new.source, len(new.databases))
        return True

    def _swap(self, new: Settings) -> None:
        old = {d.name: d for d in self.settings.databases}
        wanted = {d.name: d for d in new.databases}
        for name, db_settings in old.items():
            if wanted.get(name) != db_settings:
                target = self.runtime.databases.pop(name, None)
                if target is not None:
                    databases.close_database(target)
        self.runtime.settings = new
        self.notifications.update(new.notifications)
        for name, db_settings in wanted.items():
            if name not in self.runtime.databases:
                self._add_database(db_settings)
        try:
            self.http.update(new.http)
        except ConfigError as exc:
            log.error("http endpoints not restarted: %s", exc)
        self._schedule()

    # ---- stop -------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Reverse start order: no new runs, running jobs finish or are cancelled, databases settled and
        closed (leadership released), HTTP last so health shows 'stopping' until the end."""
        self.runtime.stopping = True
        self.scheduler.shutdown()
        databases.stop_jobs(self.runner, self.runtime)
        closers = [threading.Thread(target=databases.close_database, args=(t, True), name=f"close-{t.name}",
                                    daemon=True) for t in self.runtime.database_list()]
        for c in closers:  # in parallel: the stop bound does not grow with the number of databases
            c.start()
        deadline = time.monotonic() + databases.SETTLE_S + 3
        for c in closers:
            c.join(max(0.0, deadline - time.monotonic()))
        self.notifications.close()  # leadership released above is told too; bounded by drain_timeout
        self.http.stop()
        log.info("indexd stopped")

