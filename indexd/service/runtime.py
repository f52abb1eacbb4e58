"""The daemon's live state, shared by the jobs (writers), the HTTP endpoints and the metrics (readers).

Everything here is in memory and cheap to read: scrapes and health checks never run SQL themselves, they
read what the last probe and the last job runs left behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from indexd.advisor.skips import SeenShapes
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.budget import Budgets
from indexd.db.pool import Database
from indexd.lifecycle.coordination import Coordinators


@dataclass(frozen=True)
class JobRecord:
    """One finished job run."""

    job: str
    database: str
    job_id: str
    started_at: datetime
    duration_s: float
    outcome: str  # ok | failed | skipped
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "outcome": self.outcome,
            "message": self.message,
        }


@dataclass
class Probe:
    """What the last probe of a database found (SELECT-only readings, refreshed every few seconds)."""

    at: float = 0.0  # monotonic
    up: bool = False
    error: str | None = None
    paused: bool = False
    pause_since: datetime | None = None
    pause_until: datetime | None = None
    pause_reason: str | None = None
    recommendations: dict[str, int] = field(default_factory=dict)  # status -> count
    pending_saving_pct: float = 0.0  # workload cost the pending and approved recommendations would save, summed
    mutations: dict[tuple[str, str], int] = field(default_factory=dict)  # (action, outcome) -> count
    builds: dict[str, float] = field(default_factory=dict)  # index name -> progress ratio
    last_backup: dict[str, Any] | None = None  # id, finished_at, size_bytes, duration_s, status


@dataclass
class DatabaseRuntime:
    settings: DatabaseSettings
    db: Database
    leadership: Any = None  # indexd.lifecycle.leader.Leadership once prepared
    coordinator: Any = None  # the indexd.lifecycle.coordination.Coordinator of its server (None: one of its own)
    latency: Any = None  # indexd.lifecycle.latency.LatencyProbe once prepared: its baseline spans apply runs
    prepared: bool = False  # state schema migrated, leadership object made
    settled: bool = False  # INVALID leftovers of earlier runs cleaned up (done once, as leader)
    standby: bool = False  # its server is a hot standby: read-only, nothing is written or built (db/standby.py)
    closed: bool = False  # removed by a reload or the stop: nothing may open new sessions for it
    prepare_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    probe: Probe = field(default_factory=Probe)
    last_runs: dict[str, JobRecord] = field(default_factory=dict)
    last_success: dict[str, datetime] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)  # indexes_built, indexes_reverted, ...
    skips_logged: SeenShapes = field(default_factory=SeenShapes)  # statement shapes whose skip was logged
    captured_statements: int | None = None  # statements in the last workload snapshot this process took
    pauses_checked_at: datetime | None = None  # timed pauses that ran out before this were announced

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.counters[key] = self.counters.get(key, 0) + n

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def leader(self) -> bool:
        """Whether its leader lock was held at the last look (no I/O; guards ask the server instead)."""
        return bool(self.leadership is not None and self.leadership.known())


class Runtime:
    """The running service's state; `lock` guards the dicts that jobs update from several threads."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.lock = threading.RLock()
        self.databases: dict[str, DatabaseRuntime] = {}
        self.started_at = clock()
        self.startup_complete = False
        self.stopping = False
        self.loop_beat = clock()
        self.scheduler_beat: float | None = None
        self.reloads: dict[str, int] = {"ok": 0, "failed": 0}
        self.last_reload_error: str | None = None
        self.job_counts: dict[tuple[str, str, str], int] = {}  # (database, job, outcome) -> runs
        self.scheduler_alive: Callable[[], bool] | None = None
        # Shared by the databases of each server: its connection budget and its leadership session.
        self.budgets = Budgets(settings.fleet.max_connections_per_server)
        # One attempt to reach a leadership session: the housekeeping tick tries again a few seconds later.
        self.coordinators = Coordinators(replace(settings.retry, attempts=1))

    def beat_loop(self) -> None:
        self.loop_beat = self.clock()

    def beat_scheduler(self) -> None:
        self.scheduler_beat = self.clock()

    def loop_age(self) -> float:
        return self.clock() - self.loop_beat

    def scheduler_age(self) -> float | None:
        return None if self.scheduler_beat is None else self.clock() - self.scheduler_beat

    def record_run(self, rec: JobRecord) -> None:
        with self.lock:
            key = (rec.database, rec.job, rec.outcome)
            self.job_counts[key] = self.job_counts.get(key, 0) + 1
            target = self.databases.get(rec.database)
            if target is not None:
                target.last_runs[rec.job] = rec
                if rec.outcome == "ok":
                    target.last_success[rec.job] = rec.started_at

    def database_list(self) -> list[DatabaseRuntime]:
        with self.lock:
            return list(self.databases.values())
