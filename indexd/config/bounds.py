"""The range of every number in the configuration: durations, sizes, counts, ratios and percentages.

Each number key has a lower and an upper bound, stated in the error when a value falls outside them
("timeouts.lock (line 7): must be between 10ms and 1h (got '99999999999d')"). The bounds are wide enough
for any real deployment and narrow enough that a slip of the keyboard (an extra digit, days for seconds)
is caught before it becomes a pool of a million connections or a lock wait of a century.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from indexd.config import schema as S
from indexd.units import human_duration, human_size

Kind = Literal["number", "duration", "size"]

MS, SECOND, MINUTE, HOUR, DAY = 0.001, 1, 60, 3600, 86400
YEAR = 365 * DAY
KB, MB, GB, TB = 1024, 1024**2, 1024**3, 1024**4


@dataclass(frozen=True)
class Range:
    """Inclusive bounds, in seconds for durations and bytes for sizes."""

    low: float
    high: float
    kind: Kind = "number"

    def __call__(self, value: Any) -> str | None:
        amount = value.total_seconds() if isinstance(value, timedelta) else value  # an int may be beyond floats
        return None if self.low <= amount <= self.high else self.message

    @property
    def message(self) -> str:
        return f"must be between {self._show(self.low)} and {self._show(self.high)}"

    def _show(self, amount: float) -> str:
        if self.kind == "duration":
            return human_duration(amount)
        if self.kind == "size":
            return human_size(amount).replace(".0 ", "").replace(" ", "")  # "1MB", written as in the file
        return f"{amount:g}"


def between(low: float, high: float) -> Range:
    return Range(low, high)


def span(low: float, high: float) -> Range:
    return Range(low, high, "duration")


def size(low: float, high: float) -> Range:
    return Range(low, high, "size")


PERCENT = between(0, 100)

RANGES: dict[tuple[type, str], Range] = {
    (S.PoolSettings, "size"): between(1, 1000),
    (S.PoolSettings, "max_overflow"): between(0, 1000),
    (S.PoolSettings, "timeout"): span(100 * MS, HOUR),
    (S.PoolSettings, "recycle"): span(0, 30 * DAY),  # 0: connections are never recycled for age
    (S.PoolSettings, "recycle_jitter"): between(0, 0.5),
    (S.PoolSettings, "idle_timeout"): span(0, DAY),  # 0: idle connections stay open
    (S.FleetSettings, "max_connections_per_server"): between(1, 10_000),
    (S.FleetSettings, "start_concurrency"): between(1, 64),
    (S.FleetSettings, "spread"): span(0, DAY),
    (S.TimeoutSettings, "connect"): span(SECOND, 10 * MINUTE),
    (S.TimeoutSettings, "statement"): span(100 * MS, 7 * DAY),
    (S.TimeoutSettings, "lock"): span(10 * MS, HOUR),
    (S.TimeoutSettings, "idle_in_transaction"): span(0, DAY),  # 0: no limit
    (S.TimeoutSettings, "keepalives_idle"): span(SECOND, 2 * HOUR),
    (S.TimeoutSettings, "keepalives_interval"): span(SECOND, HOUR),
    (S.TimeoutSettings, "keepalives_count"): between(1, 100),
    (S.RetrySettings, "attempts"): between(1, 100),
    (S.RetrySettings, "initial_delay"): span(0, HOUR),
    (S.RetrySettings, "multiplier"): between(1, 10),
    (S.RetrySettings, "max_delay"): span(10 * MS, HOUR),
    (S.RetrySettings, "max_elapsed"): span(SECOND, DAY),
    (S.CircuitBreakerSettings, "failure_threshold"): between(1, 10_000),
    (S.CircuitBreakerSettings, "reset_timeout"): span(SECOND, DAY),
    (S.ThrottleSettings, "max_cpu_pct"): between(1, 100),
    (S.ThrottleSettings, "cpu_sample"): span(100 * MS, MINUTE),
    (S.ThrottleSettings, "max_active_backends_pct"): between(1, 100),
    (S.ThrottleSettings, "max_waiting_backends"): between(0, 100_000),
    (S.ThrottleSettings, "max_replica_lag"): span(0, DAY),
    (S.ThrottleSettings, "probe_max_ratio"): between(1.1, 1000),
    (S.ThrottleSettings, "probe_critical_ratio"): between(1.1, 10_000),
    (S.ThrottleSettings, "probe_floor"): span(0, MINUTE),
    (S.ThrottleSettings, "pause_between_builds"): span(0, HOUR),
    (S.ThrottleSettings, "build_parallel_workers"): between(0, 64),
    (S.RateLimitSettings, "per_hour"): between(0, 1000),
    (S.RateLimitSettings, "per_day"): between(0, 10_000),
    (S.WriteGuardSettings, "writes_per_second"): between(0, 1e9),
    (S.WriteGuardSettings, "min_benefit_ratio"): between(0, 1000),
    (S.VerifySettings, "after"): span(SECOND, 90 * DAY),
    (S.VerifySettings, "min_calls"): between(0, 1e12),
    (S.VerifySettings, "min_gain_pct"): PERCENT,
    (S.VerifySettings, "max_regression_pct"): between(0, 10_000),
    (S.DropUnusedSettings, "unused_for"): span(0, 10 * YEAR),  # 0: never scanned since the statistics began is enough
    (S.IndexingSettings, "storage_budget"): size(0, 1024 * TB),
    (S.IndexingSettings, "max_indexes_per_table"): between(1, 100),
    (S.IndexingSettings, "max_columns"): between(1, 32),
    (S.IndexingSettings, "min_improvement_pct"): PERCENT,
    (S.IndexingSettings, "min_table_rows"): between(0, 1e15),
    (S.IndexingSettings, "min_calls"): between(0, 1e12),
    (S.IndexingSettings, "lookback"): span(MINUTE, YEAR),
    (S.IndexingSettings, "lock_timeout"): span(10 * MS, HOUR),
    (S.IndexingSettings, "build_timeout"): span(MINUTE, 7 * DAY),
    (S.IndexingSettings, "build_attempts"): between(1, 10),
    (S.IndexingSettings, "maintenance_work_mem"): size(MB, TB),  # PostgreSQL's own limit is just under 2 TB
    (S.IndexingSettings, "build_throughput"): size(MB, 100 * GB),
    (S.IndexingSettings, "queries_max_bytes"): size(KB, GB),  # the whole of a `recommend --queries` input
    (S.BackupRetentionSettings, "keep_last"): between(1, 10_000),
    (S.BackupRetentionSettings, "keep_days"): span(0, 100 * YEAR),
    (S.BackupSettings, "jobs"): between(1, 128),
    (S.BackupSettings, "compression"): between(0, 9),
    (S.BackupSettings, "timeout"): span(MINUTE, 7 * DAY),
    (S.BackupSettings, "free_space_factor"): between(1, 100),
    (S.RetentionSettings, "statement_snapshots"): span(DAY, 100 * YEAR),
    (S.RetentionSettings, "audit_log"): span(DAY, 100 * YEAR),
    (S.RetentionSettings, "metrics"): span(DAY, 100 * YEAR),
    (S.RetentionSettings, "batch_size"): between(1, 1_000_000),
    (S.LoggingSettings, "max_bytes"): size(KB, TB),
    (S.LoggingSettings, "backup_count"): between(1, 1000),
    (S.NotificationSettings, "queue_size"): between(1, 100_000),
    (S.NotificationSettings, "drain_timeout"): span(0, 10 * SECOND),  # the stop's bound has room for 10 s
}

# Sections that are items of a list (each webhook of notifications.webhooks).
ITEM_RANGES: dict[tuple[type, str], Range] = {
    (S.WebhookSettings, "timeout"): span(100 * MS, 5 * MINUTE),
    (S.WebhookSettings, "attempts"): between(1, 20),
    (S.WebhookSettings, "retry_for"): span(0, DAY),
}
