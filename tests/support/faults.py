"""Small builders shared by the fault tests: short timeouts and retry settings so each test takes seconds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

from indexd.config.schema import CircuitBreakerSettings, DatabaseSettings, PoolSettings, RetrySettings, TimeoutSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from tests.support.cluster import new_database

SHORT_TIMEOUTS = TimeoutSettings(
    connect=timedelta(seconds=1), statement=timedelta(seconds=5), lock=timedelta(seconds=1),
    keepalives_idle=timedelta(seconds=1), keepalives_interval=timedelta(seconds=1), keepalives_count=2,
)


def retry(attempts: int = 30, max_elapsed: float = 10.0, max_delay: float = 0.3) -> RetrySettings:
    return RetrySettings(attempts=attempts, initial_delay=timedelta(seconds=0.05), multiplier=2.0,
                         max_delay=timedelta(seconds=max_delay), max_elapsed=timedelta(seconds=max_elapsed))


def app_database(cluster: EmbeddedCluster, dbname: str = "app") -> str:
    new_database(cluster, dbname, extensions=())
    return dbname


def make_database(
    cluster: EmbeddedCluster,
    dbname: str,
    retry_settings: RetrySettings | None = None,
    breaker: CircuitBreakerSettings | None = None,
    pre_ping: bool = True,
    dsn: str | None = None,
) -> Database:
    settings = DatabaseSettings(
        name="main", dsn=dsn or cluster.dsn(dbname), timeouts=SHORT_TIMEOUTS,
        pool=PoolSettings(size=2, max_overflow=1, timeout=timedelta(seconds=2), pre_ping=pre_ping),
    )
    # The breaker counts every failed attempt; these tests study retries, so it stays out of their way unless
    # a test passes its own.
    return Database(settings, retry_settings or retry(), breaker or CircuitBreakerSettings(failure_threshold=1000))


def later(seconds: float, action: Callable[[], object]) -> threading.Thread:
    """Run action in a thread after a delay (the fault arrives while indexd is busy)."""
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer
