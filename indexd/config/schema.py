"""Typed, frozen settings: every section of the configuration file with its defaults.

The loader (`indexd.config.load`) turns YAML into these classes by their type hints: `Duration` fields take
"90s"/"2h"/"7d" (or a number of seconds), `ByteSize` fields take "512MB"/"2GiB" (or bytes), `Literal` fields take
one of their values, tuples take YAML lists. The key names of DESIGN.md §4 are a contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Literal

from indexd.errors import UsageError
from indexd.events import EventName


class ByteSize(int):
    """A size in bytes, written in the file as 512MB, 2GiB or a plain number."""


Duration = timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class PoolSettings:
    size: int = 5
    max_overflow: int = 5
    timeout: Duration = timedelta(seconds=10)  # waiting for a free connection
    # Each connection's max lifetime is drawn when it connects, uniformly in recycle × (1 ± recycle_jitter),
    # so connections made together do not expire together; it is replaced at the first checkout past it.
    recycle: Duration = timedelta(hours=1)  # 0: never replaced for its age
    recycle_jitter: float = 0.1  # ±10 %
    pre_ping: bool = True
    # A pooled connection unused this long is closed, so an idle database holds no connection (0: kept open).
    idle_timeout: Duration = timedelta(seconds=60)


@dataclass(frozen=True)
class TimeoutSettings:
    connect: Duration = timedelta(seconds=10)
    statement: Duration = timedelta(seconds=60)
    lock: Duration = timedelta(seconds=5)
    idle_in_transaction: Duration = timedelta(minutes=5)
    keepalives_idle: Duration = timedelta(seconds=30)
    keepalives_interval: Duration = timedelta(seconds=10)
    keepalives_count: int = 3


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 5
    initial_delay: Duration = timedelta(seconds=1)
    multiplier: float = 2.0
    max_delay: Duration = timedelta(seconds=60)
    max_elapsed: Duration = timedelta(minutes=2)  # retries stop after this much time, whatever the count


@dataclass(frozen=True)
class CircuitBreakerSettings:
    # Consecutive failed attempts that open the breaker. Twice retry.attempts: one unit of work that exhausts
    # its retries during a short outage does not open it by itself; a second one in a row does.
    failure_threshold: int = 10
    reset_timeout: Duration = timedelta(seconds=30)  # open -> half-open after this


@dataclass(frozen=True)
class WindowSettings:
    """A maintenance window: on these days, from start to end (end <= start crosses midnight)."""

    days: tuple[str, ...] = DAYS
    start: time = time(1, 0)
    end: time = time(5, 0)
    timezone: str = "UTC"


@dataclass(frozen=True)
class ThrottleSettings:
    """The load guard: readings of the database server taken before (and during) each build."""

    max_cpu_pct: float = 70.0  # host CPU, sampled over cpu_sample, when host_cpu says it is the database's host
    cpu_sample: Duration = timedelta(seconds=3)
    # auto: sample this host's CPU only when the DSN reaches the database here (unix socket or loopback address);
    # always: sample it anyway (indexd runs on the database server under another name); never: do not.
    host_cpu: Literal["auto", "always", "never"] = "auto"
    max_active_backends_pct: float = 50.0  # active backends / max_connections
    max_waiting_backends: int = 5  # backends waiting on a lock
    max_replica_lag: Duration = timedelta(seconds=30)
    # The latency probe: round trips of a fixed cheap query against their own recent median (the baseline).
    latency_probe: bool = True
    probe_max_ratio: float = 3.0  # no build starts while the probe is this many times its baseline
    probe_critical_ratio: float = 10.0  # a running build is cancelled while the probe stays this far above it
    probe_floor: Duration = timedelta(milliseconds=5)  # a probe less than this above its baseline never counts
    pause_between_builds: Duration = timedelta(seconds=10)  # the application recovers between two builds
    # max_parallel_maintenance_workers of indexd's builds: 0 keeps a build on one core (on a small server a parallel
    # build takes every core from the application); raise it where cores are plenty and builds are long.
    build_parallel_workers: int = 0


@dataclass(frozen=True)
class RateLimitSettings:
    per_hour: int = 5
    per_day: int = 20


@dataclass(frozen=True)
class WriteGuardSettings:
    writes_per_second: float = 50.0  # a table above this write rate is "write-heavy"
    min_benefit_ratio: float = 2.0  # there, an index must save this many times its write cost in read time (ms/s)


@dataclass(frozen=True)
class VerifySettings:
    after: Duration = timedelta(hours=24)  # how long a new index runs before its verdict
    min_calls: int = 20  # statements seen fewer times than this give no evidence
    min_gain_pct: float = 5.0  # below this gain the index "brought nothing"
    max_regression_pct: float = 10.0  # a statement slower by more than this is a regression
    auto_revert: bool = True


@dataclass(frozen=True)
class DropUnusedSettings:
    enabled: bool = False
    unused_for: Duration = timedelta(days=30)
    only_own: bool = True  # only indexes indexd created; set false to opt in to others


@dataclass(frozen=True)
class IndexingSchedules:
    capture: str = "*/5 * * * *"
    advise: str = "0 * * * *"
    apply: str = "*/10 * * * *"
    verify: str = "15 * * * *"
    health: str = "0 */6 * * *"


@dataclass(frozen=True)
class IndexingSettings:
    mode: Literal["advise", "approve", "auto"] = "advise"
    storage_budget: ByteSize = ByteSize(2 * 1024**3)
    max_indexes_per_table: int = 3
    max_columns: int = 3
    # An index is recommended only when it saves at least this share of the cost of the statements it helps (its
    # improvement, the share of the whole workload's cost it saves, is what recommend and status show).
    min_improvement_pct: float = 10.0
    min_table_rows: int = 1000  # smaller tables are skipped
    min_calls: int = 5  # statements called fewer times are ignored
    lookback: Duration = timedelta(days=7)
    lock_timeout: Duration = timedelta(seconds=5)
    build_timeout: Duration = timedelta(hours=2)
    # Interrupted builds (connection lost, server restarted, indexd stopped) are tried again; after this many
    # attempts the recommendation is marked failed instead.
    build_attempts: int = 3
    maintenance_work_mem: ByteSize = ByteSize(256 * 1024**2)
    # Table bytes CREATE INDEX CONCURRENTLY gets through per second (two scans and a sort): a cautious figure
    # used to decide whether a build still fits in what is left of a maintenance window.
    build_throughput: ByteSize = ByteSize(32 * 1024**2)
    queries_max_bytes: ByteSize = ByteSize(64 * 1024**2)  # largest `recommend --queries` input (file or folder)
    windows: tuple[WindowSettings, ...] = (WindowSettings(),)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    write_guard: WriteGuardSettings = field(default_factory=WriteGuardSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)
    drop_unused: DropUnusedSettings = field(default_factory=DropUnusedSettings)
    schedule: IndexingSchedules = field(default_factory=IndexingSchedules)


@dataclass(frozen=True)
class BypassSettings:
    """A standing, file-level pause: with enabled true indexd observes and advises but changes nothing."""

    enabled: bool = False
    reason: str = ""


@dataclass(frozen=True)
class BackupRetentionSettings:
    keep_last: int = 7  # completed, verified backups kept by count ...
    keep_days: Duration = timedelta(days=7)  # ... and every one younger than this


@dataclass(frozen=True)
class BackupVerifySettings:
    list_after_backup: bool = True  # pg_restore --list on every new backup
    restore_schedule: str = "30 3 * * 0"  # full test restore into a scratch database
    compare_row_counts: bool = True
    # The server test restores create their scratch database on (its database part is not used); default: the
    # backup's own server, where indexd's role then needs CREATEDB.
    restore_dsn: str | None = None


@dataclass(frozen=True)
class BackupSettings:
    enabled: bool = True
    dir: str = "/var/lib/indexd/backups"
    schedule: str = "0 */6 * * *"
    format: Literal["custom", "directory"] = "custom"
    jobs: int = 2  # pg_dump -j for the directory format
    compression: int = 6  # 0-9
    timeout: Duration = timedelta(hours=6)
    free_space_factor: float = 1.2  # free space needed = estimated dump size × this
    verify: BackupVerifySettings = field(default_factory=BackupVerifySettings)
    retention: BackupRetentionSettings = field(default_factory=BackupRetentionSettings)


@dataclass(frozen=True)
class RetentionSettings:
    """Pruning of indexd's own history in its state schema."""

    statement_snapshots: Duration = timedelta(days=90)
    audit_log: Duration = timedelta(days=365)
    metrics: Duration = timedelta(days=180)
    batch_size: int = 5000
    schedule: str = "0 4 * * *"


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str | None = "/var/log/indexd/indexd.log"
    max_bytes: ByteSize = ByteSize(10 * 1024**2)
    backup_count: int = 5
    format: Literal["json", "text"] = "json"
    stderr: bool = True


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool = True
    listen: str = "127.0.0.1:9470"
    token_file: str | None = None  # required when listen is not a loopback address


@dataclass(frozen=True)
class LeadershipSettings:
    """Where the leader locks of a server's databases are held: one session per server, in this database of it.

    Every daemon (and every `apply` from the command line) must name the same database for a server, or two of
    them could lead one database; the default `postgres` exists on every server whatever the config lists."""

    database: str = "postgres"


@dataclass(frozen=True)
class FleetSettings:
    """Many databases in one daemon: a connection budget per server, bounded start-up, jobs spread out."""

    # Connections indexd opens to one server (host:port) at a time, pooled and dedicated, over all its
    # databases; the leadership session comes on top. Idle ones are closed to make room when it is reached.
    max_connections_per_server: int = 10
    start_concurrency: int = 4  # databases prepared (migrated, leadership set up) at the same time at start
    # Each database's jobs run at a fixed offset after their cron time, drawn from its name, up to the job's
    # interval or this, whichever is shorter, so a hundred databases do not all start a job in the same second.
    spread: Duration = timedelta(hours=1)  # 0: exactly at the cron times


@dataclass(frozen=True)
class WebhookSettings:
    """One receiver of notifications: each event it wants is POSTed to `url` (see indexd/service/notify.py)."""

    # http:// or https://; its path may itself be a secret (Slack's is): logs show scheme and host only
    url: str = field(repr=False)
    name: str | None = None  # its label in logs and metrics; default the URL's host
    token_file: str | None = None  # sent as "Authorization: Bearer <token>", read again at every delivery
    events: tuple[EventName, ...] = ()  # the events it gets; omitted: every event
    format: Literal["json", "slack"] = "json"  # slack: {"text": ...}; json: event, database, time, host, details
    timeout: Duration = timedelta(seconds=5)  # per request: connecting, and each read
    attempts: int = 5  # tries per event, the first included ...
    retry_for: Duration = timedelta(minutes=1)  # ... and no retry starts after this long


@dataclass(frozen=True)
class NotificationSettings:
    webhooks: tuple[WebhookSettings, ...] = ()
    queue_size: int = 1000  # events waiting per webhook; when full, the oldest is dropped (and counted)
    drain_timeout: Duration = timedelta(seconds=3)  # at stop (and at the end of a CLI command) waiting ends here


@dataclass(frozen=True)
class DatabaseSettings:
    """One managed database. `indexing`, `backups` and `leadership` are the global sections merged with this
    entry's own."""

    name: str
    dsn: str
    password_file: str | None = None
    state_schema: str = "indexd"
    pool: PoolSettings = field(default_factory=PoolSettings)
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    indexing: IndexingSettings = field(default_factory=IndexingSettings)
    backups: BackupSettings = field(default_factory=BackupSettings)
    leadership: LeadershipSettings = field(default_factory=LeadershipSettings)
    # The DSNs of this database's streaming replicas (the same database, read through each standby): an index
    # scanned on any of them is not unused. A replica that cannot be read makes drop_unused drop nothing.
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    environment: Literal["production", "development"] = "development"
    databases: tuple[DatabaseSettings, ...] = ()
    retry: RetrySettings = field(default_factory=RetrySettings)
    circuit_breaker: CircuitBreakerSettings = field(default_factory=CircuitBreakerSettings)
    indexing: IndexingSettings = field(default_factory=IndexingSettings)
    bypass: BypassSettings = field(default_factory=BypassSettings)
    backups: BackupSettings = field(default_factory=BackupSettings)
    leadership: LeadershipSettings = field(default_factory=LeadershipSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    source: str | None = None  # the file these settings came from (not a key of the file)

    def database(self, name: str) -> DatabaseSettings:
        for db in self.databases:
            if db.name == name:
                return db
        known = ", ".join(d.name for d in self.databases) or "none configured"
        raise UsageError(f"no database named {name!r} in the configuration (known: {known})")
