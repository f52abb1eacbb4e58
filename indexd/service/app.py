"""What the daemon runs: per-database pools and leadership, the scheduler, HTTP endpoints, the watchdog.

`IndexdService` implements the start / tick / reload / stop steps that `daemon.Daemon` drives. Start-up order:
HTTP, databases and their job schedules, scheduler, then in the background, `fleet.start_concurrency` at a
time, a first probe of each database and its preparation (migrate, leadership, INVALID leftovers, probe again).
Stop runs in reverse, each step bounded, so the whole stop fits in STOP_BOUND_S (the unit file's
TimeoutStopSec leaves room above it).

The databases of one server share a connection budget (`fleet.max_connections_per_server`) and one leadership
session; every few seconds the housekeeping closes pooled connections left idle and looks at the leadership
sessions (taking back, in one round trip, every lock a lost session dropped).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from indexd.config.checks import check_runnable
from indexd.config.load import load_settings
from indexd.config.schedule import JOB_ORDER, job_specs
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.pool import Database
from indexd.dsn import server_of
from indexd.errors import ConfigError, first_line
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
from indexd.service.workqueue import WorkQueue

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
                                   lambda name: refresh(self.runtime, name), workers=self._workers(settings),
                                   housekeeping=self._housekeeping)
        self.runtime.scheduler_alive = self.scheduler.alive
        # Start-up work (preparing databases, start-up rounds), a few databases at a time.
        self.starter = WorkQueue(settings.fleet.start_concurrency, "start")
        self.watchdog = Watchdog(self.notifier, lambda: liveness(self.runtime))

    def _observe(self, rec: JobRecord) -> None:
        """After each run: its duration into the histogram, and a fresh probe so health shows its effect."""
        self.metrics.observe(rec)
        if not self.runtime.stopping:
            refresh(self.runtime, rec.database)

    @staticmethod
    def _workers(settings: Settings) -> int:
        return max(4, min(16, 2 * len(settings.databases) + 2, settings.fleet.max_connections_per_server))

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    # ---- start ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        check_runnable(self.settings)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per run is ours to write
        for pool_logger in ("sqlalchemy.pool", "indexd.db.idlepool"):  # SQLAlchemy's line per pool disposed
            logging.getLogger(pool_logger).setLevel(logging.WARNING)
        self.notifications.start()  # first: events of the start-up itself (leadership gained) go out too
        self.http.start(self.settings.http)
        added = [self._add_database(db_settings, prepare=False) for db_settings in self.settings.databases]
        self._schedule()  # before the scheduler runs: each job added to a running one wakes its thread
        self.scheduler.start()
        # A first look at every database (reachable? that is readiness), then the slower preparation of each.
        for target in added:
            self.starter.submit(refresh, f"first probe of {target.name}", self.runtime, target.name)
        for target in added:
            self.starter.submit(self._prepare, f"preparing {target.name}", target)
        if self.env.get(RUN_AT_START_ENV) == "1":
            log.info("running every job of %d database(s) once, after they are prepared (%s=1)",
                     len(self.runtime.databases), RUN_AT_START_ENV)
            scheduled: dict[str, set[str]] = {}
            for spec in job_specs(self.settings):
                scheduled.setdefault(spec.database, set()).add(spec.job)
            for name in self.runtime.databases:  # queued behind every prepare: readiness does not wait on them
                jobs = tuple(job for job in JOB_ORDER if job in scheduled.get(name, ()))
                self.starter.submit(self.runner.round, f"start-up round of {name}", name, jobs)
        self.runtime.startup_complete = True
        log.info("indexd started: %d database(s), %d scheduled job(s)", len(self.runtime.databases),
                 len(job_specs(self.settings)))

    def _add_database(self, db_settings: DatabaseSettings, prepare: bool = True) -> DatabaseRuntime:
        """Open the pool and prepare the database in the background (migrate, leadership, leftovers), so a
        slow or dead server delays neither READY nor the other databases; its first job retries if needed."""
        s = self.settings
        budget = self.runtime.budgets.for_server(server_of(db_settings.dsn))
        target = DatabaseRuntime(db_settings, Database(db_settings, s.retry, s.circuit_breaker, budget=budget))
        target.coordinator = self.runtime.coordinators.for_database(target.db)
        with self.runtime.lock:
            self.runtime.databases[db_settings.name] = target
        if prepare:
            self.starter.submit(self._prepare, f"preparing {db_settings.name}", target)
        return target

    def _prepare(self, target: DatabaseRuntime) -> None:
        databases.prepare(target)
        if not target.closed:
            refresh(self.runtime, target.name)  # health shows leadership and state at once

    def _housekeeping(self) -> None:
        """Every few seconds: close pooled connections idle past their pool.idle_timeout, look at every
        leadership session (a lost one is lost leadership of all its databases; their locks are taken again)."""
        for target in self.runtime.database_list():
            if not target.closed:
                try:
                    target.db.close_idle()
                except Exception as exc:  # noqa: BLE001 - housekeeping of one database never stops the others
                    log.warning("closing idle connections of %s failed: %s", target.name, first_line(exc))
        if not self.runtime.stopping:
            for coord in self.runtime.coordinators.all():
                coord.refresh()

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
        self.runtime.budgets.resize(new.fleet.max_connections_per_server)
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
        self.starter.close()
        busy = self.runner.busy_databases()  # where a cancelled build may leave something to settle
        databases.stop_jobs(self.runner, self.runtime)
        databases.close_all(self.runtime.database_list(), busy)
        self.runtime.coordinators.close()  # ends the leadership sessions: every lock left goes with them
        self.notifications.close()  # leadership released above is told too; bounded by drain_timeout
        self.http.stop()
        log.info("indexd stopped")

