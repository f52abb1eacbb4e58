"""One pooled connection source per managed database: SQLAlchemy's QueuePool over psycopg2.

Callers get plain psycopg2 connections (the pool's DBAPI connection) for speed; SQLAlchemy gives us the pool
mechanics (pre-ping, recycle, timeout, overflow, invalidation). Retries and the circuit breaker wrap connecting
and whole units of work (`Database.run`).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from sqlalchemy import create_engine, event
from sqlalchemy.pool import QueuePool

from indexd.config.schema import CircuitBreakerSettings, DatabaseSettings, RetrySettings
from indexd.db.dsn import connect_kwargs, redact_dsn

log = logging.getLogger(__name__)

T = TypeVar("T")
PgConnection = psycopg2.extensions.connection


def _ms(value: timedelta | None) -> int:
    return 0 if value is None else int(value.total_seconds() * 1000)


class Database:
    """A managed database: its settings, its pool, and the resilient ways to use it."""

    def __init__(
        self,
        settings: DatabaseSettings,
        retry: RetrySettings | None = None,
        breaker: CircuitBreakerSettings | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.retry_settings = retry or RetrySettings()
        self.breaker_settings = breaker or CircuitBreakerSettings()
        self._connect_kwargs = connect_kwargs(settings)
        pool = settings.pool
        recycle = pool.recycle.total_seconds()
        self.engine = create_engine(
            "postgresql+psycopg2://",
            creator=self._new_connection,
            poolclass=QueuePool,
            pool_size=pool.size,
            max_overflow=pool.max_overflow,
            pool_timeout=pool.timeout.total_seconds(),
            # Jittered max lifetime: connections made together do not all expire together.
            pool_recycle=int(recycle * (1 - pool.recycle_jitter * random.random())) if recycle > 0 else -1,
            pool_pre_ping=pool.pre_ping,
            pool_reset_on_return="rollback",
        )
        event.listen(self.engine, "checkout", self._on_checkout)

    def __repr__(self) -> str:
        return f"Database({self.name!r}, {redact_dsn(self.settings.dsn)})"

    # ---- raw connections --------------------------------------------------------------------------------
    def _new_connection(self) -> PgConnection:
        return psycopg2.connect(**self._connect_kwargs)

    def _on_checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        del dbapi_conn, record, proxy

    def dedicated_connection(self, autocommit: bool = True) -> PgConnection:
        """A connection outside the pool, owned by the caller (leadership lock, long index builds)."""
        conn = self._new_connection()
        conn.autocommit = autocommit
        return conn

    @contextlib.contextmanager
    def connection(
        self,
        *,
        statement_timeout: timedelta | None = None,
        lock_timeout: timedelta | None = None,
        autocommit: bool = False,
    ) -> Iterator[PgConnection]:
        """Check a connection out of the pool; commit on success, roll back on error, always return it.

        Timeouts default to the database's configured ones and are set for this use only.
        """
        timeouts = self.settings.timeouts
        proxy = self.engine.raw_connection()
        conn: PgConnection = proxy.dbapi_connection  # type: ignore[assignment]
        try:
            conn.autocommit = autocommit
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
                    (
                        str(_ms(statement_timeout or timeouts.statement)),
                        str(_ms(lock_timeout or timeouts.lock)),
                    ),
                )
            if not autocommit:
                conn.commit()
            yield conn
            if not autocommit:
                conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                if not conn.closed and not autocommit:
                    conn.rollback()
            if conn.closed:
                proxy.invalidate()
            raise
        finally:
            with contextlib.suppress(Exception):
                if not conn.closed:
                    conn.autocommit = False
            proxy.close()

    def run(self, work: Callable[[PgConnection], T], **kwargs: Any) -> T:
        """Run one unit of work on a pooled connection (in a transaction unless autocommit=True)."""
        with self.connection(**kwargs) as conn:
            return work(conn)

    def close(self) -> None:
        self.engine.dispose()
