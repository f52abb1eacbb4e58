"""One pooled connection source per managed database: SQLAlchemy's QueuePool over psycopg2.

Callers get plain psycopg2 connections (the pool's DBAPI connection) for speed; SQLAlchemy gives us the pool
mechanics (timeout, overflow, invalidation, events); each connection's jittered max lifetime is our own
(`indexd.db.lifetime`), and so is closing connections left idle (`indexd.db.idlepool`, `close_idle`) and the
cap on connections per server shared by its databases (`indexd.db.budget`). Around them: a circuit breaker per
database,
retries of transient failures (`indexd.db.retry`), a check on checkout with a client-side deadline, and
usage statistics for the metrics layer.

Choices, measured by `python -m bench.pool` (a 20-statement unit costs ~1.1x the same statements on a raw
persistent psycopg2 connection; a checkout and return alone ~20 us, ~55 us with the check):
* The check on checkout (our own `SELECT 1`, not SQLAlchemy's pre-ping: it runs under a client-side deadline
  and is counted) is skipped for a connection that finished a use without error less than CHECK_BYPASS
  seconds ago, as HikariCP does: in a burst of short units it would add a round trip per unit for almost no
  information. A unit that still meets a dead connection is run again at once by `run` on a new one (or
  fails with a connection error in `connection()`).
* Pooled connections rest in autocommit mode, so the check costs no BEGIN/COMMIT, and the reset on return
  (rollback) is free: psycopg2 sends nothing when no transaction is open, which is always the case after
  `connection()` committed or rolled back. It stays on as a safety net; switching it off measured no gain.
* statement_timeout and lock_timeout are set per use, but sent only when they differ from what the session
  already has (cached in the connection's info). A unit of work must therefore change them only with
  SET LOCAL (or through the arguments of `connection()`), never with a session-level SET.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeAlias, TypeVar

import psycopg2
import psycopg2.extensions
import sqlalchemy.exc
from sqlalchemy import create_engine, event
from sqlalchemy.pool import QueuePool

from indexd.config.schema import CircuitBreakerSettings, DatabaseSettings, RetrySettings
from indexd.db.breaker import CircuitBreaker
from indexd.db.budget import ServerBudget
from indexd.db.connect import connect_once
from indexd.db.conninfo import connect_kwargs
from indexd.db.deadline import SOCKET_DEADLINES
from indexd.db.idlepool import IdleQueuePool
from indexd.db.lifetime import ConnectionExpired, Lifetime
from indexd.db.poolstats import Counters, PoolStats
from indexd.db.retry import RetryHooks, classify, retry_call
from indexd.dsn import redact_dsn
from indexd.errors import ConnectionFailed

log = logging.getLogger(__name__)

T = TypeVar("T")
PgConnection: TypeAlias = psycopg2.extensions.connection
# Keys in the pool's per-connection info (SQLAlchemy clears it with the connection, so nothing outlives a session):
_TIMEOUTS = "indexd_timeouts"  # (statement_timeout ms, lock_timeout ms) the session has now
_FRESH = "indexd_fresh"  # connected for this checkout, no need to check it
_LAST_OK = "indexd_last_ok"  # monotonic time the connection last finished a use without error
CHECK_BYPASS = 0.5  # seconds: a connection that worked this recently is not checked again (HikariCP does 0.5 s)


def _ms(value: timedelta | None) -> int:
    return 0 if value is None else int(value.total_seconds() * 1000)


def _is_connection_failure(exc: BaseException) -> bool:
    return classify(exc).connection


class Database:
    """A managed database: its settings, its pool, and the resilient ways to use it."""

    def __init__(
        self,
        settings: DatabaseSettings,
        retry: RetrySettings | None = None,
        breaker: CircuitBreakerSettings | None = None,
        *,
        on_giveup: Callable[[Database, BaseException], None] | None = None,
        hooks: RetryHooks | None = None,
        reset_on_return: str | None = "rollback",
        check_bypass: float = CHECK_BYPASS,
        budget: ServerBudget | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.retry_settings = retry or RetrySettings()
        self.breaker_settings = breaker or CircuitBreakerSettings()
        self.on_giveup = on_giveup  # called when retrying to connect or to run a unit of work gives up
        self.breaker = CircuitBreaker(
            settings.name, self.breaker_settings.failure_threshold, self.breaker_settings.reset_timeout
        )
        self._hooks = hooks or RetryHooks()
        self._check_bypass = check_bypass
        self._counters = Counters()
        self._connect_kwargs = connect_kwargs(settings)  # validates the DSN and password file now
        self._connect_timeout = max(1.0, settings.timeouts.connect.total_seconds())
        pool = settings.pool
        self._lifetime = Lifetime(pool.recycle.total_seconds(), pool.recycle_jitter, self._hooks.clock,
                                  self._hooks.rand)
        # A server's budget caps the connections of all its databases together (None: no cap, as on the CLI).
        self.budget = budget
        self.engine = create_engine("postgresql+psycopg2://", pool=IdleQueuePool(
            self._new_connection,
            pool_size=pool.size,
            max_overflow=pool.max_overflow,
            timeout=pool.timeout.total_seconds(),
            recycle=-1,  # each connection's own jittered lifetime instead: indexd.db.lifetime
            pre_ping=False,  # our own check in _on_checkout: deadline-bounded, counted, no BEGIN
            reset_on_return=reset_on_return,
            on_return=budget.notify if budget is not None else None,
        ))
        if budget is not None:
            budget.register(self.name, self._idle_pool)
        event.listen(self.engine, "connect", self._on_connect)
        event.listen(self.engine, "checkout", self._on_checkout)
        event.listen(self.engine, "invalidate", self._on_invalidate)
        event.listen(self.engine, "soft_invalidate", self._on_invalidate)

    def __repr__(self) -> str:
        return f"Database({self.name!r}, {redact_dsn(self.settings.dsn)})"

    # ---- raw connections and pool events --------------------------------------------------------------
    def _idle_pool(self) -> IdleQueuePool:
        pool = self.engine.pool  # Engine.dispose() swaps in a fresh one: always ask for the current pool
        assert isinstance(pool, IdleQueuePool)
        return pool

    def _new_connection(self) -> PgConnection:
        """One attempt (the pool's creator); breaker and retries sit around checkouts, not here."""
        if self.budget is None:
            return self._connect()
        with self.budget.slot(f"database {self.name}", self.settings.pool.timeout.total_seconds()) as keep:
            conn = self._connect()
            keep(conn)  # the slot stays taken while this connection is open, whoever closes it
        return conn

    def _connect(self) -> PgConnection:
        try:
            # Re-read per connection, so a rotated password_file is picked up without a restart.
            conn = connect_once(self.name, connect_kwargs(self.settings), self._connect_timeout)
        except Exception:
            self._counters.add("connect_failures")
            raise
        conn.autocommit = True  # the resting state of pooled connections, see the module docstring
        return conn

    def _on_connect(self, dbapi_conn: Any, record: Any) -> None:
        record.info[_FRESH] = True
        record.info[_TIMEOUTS] = None
        self._lifetime.stamp(record.info)
        self._counters.connected()

    def _on_invalidate(self, dbapi_conn: Any, record: Any, exc: BaseException | None) -> None:
        if isinstance(exc, ConnectionExpired):  # replaced for its age, not broken
            self._counters.add("recycles")
            return
        self._counters.add("invalidations")
        self._counters.add("pending_replacements")

    def _on_checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        fresh = record.info.pop(_FRESH, False)
        if not fresh:
            # Past its lifetime: SQLAlchemy replaces just this connection and runs this listener again on the new one.
            self._lifetime.check(record.info, f"database {self.name}")
        self._counters.add("checkouts")
        if fresh or not self.settings.pool.pre_ping:
            return
        last_ok = record.info.get(_LAST_OK)
        if last_ok is not None and time.monotonic() - last_ok < self._check_bypass:
            return
        try:
            what = f"database {self.name}: check on checkout"
            with SOCKET_DEADLINES.guard(dbapi_conn, self._connect_timeout, what), dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
        except psycopg2.Error as exc:
            log.info("database %s: pooled connection failed its check (%s); reconnecting", self.name,
                     classify(exc).cause)
            # Like SQLAlchemy's own pre-ping: every connection older than this one is suspect too.
            raise sqlalchemy.exc.InvalidatePoolError(classify(exc).cause) from exc

    def dedicated_connection(self, autocommit: bool = True) -> PgConnection:
        """A connection outside the pool, owned by the caller (leadership lock, long index builds)."""
        conn = self._retrying(lambda: self.breaker.call(self._new_connection, _is_connection_failure), "connect")
        conn.autocommit = autocommit
        return conn

    # ---- checkout -----------------------------------------------------------------------------------------
    def _checkout(self, statement_timeout: timedelta | None, lock_timeout: timedelta | None) -> Any:
        """One checkout through the breaker: a checked connection with the wanted timeouts, in autocommit."""
        pool, limits = self.engine.pool, self.settings.pool
        if isinstance(pool, QueuePool) and pool.checkedout() >= limits.size + max(0, limits.max_overflow):
            self._counters.add("waits")
        try:
            proxy = self.engine.raw_connection()
        except sqlalchemy.exc.TimeoutError as exc:
            self._counters.add("timeouts")
            p = self.settings.pool
            raise ConnectionFailed(
                f"database {self.name}: no free pooled connection within {p.timeout.total_seconds():g} s "
                f"(all {p.size} + {p.max_overflow} overflow in use)"
            ) from exc
        try:
            self._set_timeouts(proxy, statement_timeout, lock_timeout)
        except BaseException as exc:
            self._discard_if_broken(proxy, exc)
            proxy.close()
            raise
        return proxy

    def _set_timeouts(self, proxy: Any, statement_timeout: timedelta | None, lock_timeout: timedelta | None) -> None:
        t = self.settings.timeouts
        wanted = (_ms(statement_timeout or t.statement), _ms(lock_timeout or t.lock))
        if proxy.info.get(_TIMEOUTS) == wanted:
            return
        conn = proxy.dbapi_connection
        what = f"database {self.name}: setting timeouts"
        with SOCKET_DEADLINES.guard(conn, self._connect_timeout, what), conn.cursor() as cur:
            cur.execute(
                "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
                (str(wanted[0]), str(wanted[1])),
            )
        proxy.info[_TIMEOUTS] = wanted

    def _discard_if_broken(self, proxy: Any, exc: BaseException) -> None:
        conn = proxy.dbapi_connection
        if conn is None:
            return
        proxy.info.pop(_TIMEOUTS, None)
        proxy.info.pop(_LAST_OK, None)
        if not (conn.closed or _is_connection_failure(exc)):
            return
        error = exc if isinstance(exc, Exception) else None
        invalidate_older = getattr(self.engine.pool, "_invalidate", None)
        if invalidate_older is not None:
            # What SQLAlchemy's own Connection does on a disconnect: this connection is dropped, and every pooled
            # connection made before now is replaced at its next checkout (after a restart they are all dead).
            invalidate_older(proxy, error)
        else:
            proxy.invalidate(error)

    # ---- public API ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def connection(
        self,
        *,
        statement_timeout: timedelta | None = None,
        lock_timeout: timedelta | None = None,
        autocommit: bool = False,
    ) -> Iterator[PgConnection]:
        """Check a connection out of the pool; commit on success, roll back on error, always return it.

        Timeouts default to the database's configured ones. Checking out is retried on transient failures;
        the block itself is not (use `run` for a retried unit of work).
        """
        with self._use(statement_timeout, lock_timeout, autocommit, retry_checkout=True) as conn:
            yield conn

    def run(self, work: Callable[[PgConnection], T], *, retry: bool = True, **kwargs: Any) -> T:
        """Run one unit of work on a pooled connection (in a transaction unless autocommit=True).

        A transient failure (connection lost, server restarting, serialization failure, deadlock) runs the
        whole unit again on a fresh connection, so `work` must be safe to repeat; pass retry=False if not.
        """
        if not retry:
            with self.connection(**kwargs) as conn:
                return work(conn)

        def once(report: dict[str, bool] | None = None) -> T:
            with self._use(retry_checkout=False, report=report, **kwargs) as conn:
                return work(conn)

        def unit() -> T:
            report: dict[str, bool] = {}
            try:
                return once(report)
            except Exception as exc:
                if not report.get("stale"):
                    raise
                # The pooled connection had died while idle (its server restarted, its backend was killed):
                # that says nothing about the server now, so the unit runs again at once on a new connection,
                # without waiting out a backoff delay. A second failure goes to the retry policy.
                log.info("database %s: pooled connection was dead (%s); running the unit again on a new one",
                         self.name, classify(exc).cause)
                self._counters.add("retries")
            return once()

        return self._retrying(unit, "unit of work")

    @contextlib.contextmanager
    def _use(
        self,
        statement_timeout: timedelta | None = None,
        lock_timeout: timedelta | None = None,
        autocommit: bool = False,
        *,
        retry_checkout: bool,
        report: dict[str, bool] | None = None,
    ) -> Iterator[PgConnection]:
        """The body of connection(); `report["stale"]` tells whether a reused connection failed as broken."""

        def checkout() -> Any:
            return self.breaker.call(lambda: self._checkout(statement_timeout, lock_timeout), _is_connection_failure)

        proxy = self._retrying(checkout, "connect") if retry_checkout else checkout()
        conn: PgConnection = proxy.dbapi_connection
        reused = _LAST_OK in proxy.info
        try:
            conn.autocommit = autocommit
            yield conn
            if not autocommit:
                conn.commit()
            proxy.info[_LAST_OK] = time.monotonic()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                if not conn.closed and not autocommit:
                    conn.rollback()
            if _is_connection_failure(exc) or conn.closed:
                # A pooled connection that broke may have died long ago; only a failure of a connection made for
                # this use, or of a new attempt to connect, tells the breaker something about the server now.
                if not reused:
                    self.breaker.record_failure(exc)
                elif report is not None:
                    report["stale"] = True
            self._discard_if_broken(proxy, exc)
            raise
        finally:
            if proxy.dbapi_connection is not None and not conn.closed:
                try:
                    conn.autocommit = True
                except psycopg2.Error:  # still inside a transaction we could not end: do not pool it
                    proxy.invalidate()
            proxy.close()

    def _retrying(self, fn: Callable[[], T], what: str) -> T:
        started = self._hooks.clock()
        hooks = RetryHooks(
            sleep=self._hooks.sleep, clock=self._hooks.clock, rand=self._hooks.rand,
            on_retry=self._retried, on_giveup=self._gave_up,
        )
        try:
            return retry_call(fn, self.retry_settings, what=f"database {self.name}: {what}", hooks=hooks)
        except Exception as exc:
            verdict = classify(exc)
            if not (verdict.transient and verdict.connection):
                raise
            elapsed = self._hooks.clock() - started
            raise ConnectionFailed(
                f"database {self.name}: {what} failed; gave up retrying after {elapsed:.1f} s: {verdict.cause}"
            ) from exc

    def _retried(self, attempt: int, exc: BaseException, delay: float) -> None:
        self._counters.add("retries")
        if self._hooks.on_retry:
            self._hooks.on_retry(attempt, exc, delay)

    def _gave_up(self, attempts: int, exc: BaseException) -> None:
        self._counters.add("giveups")
        if self._hooks.on_giveup:
            self._hooks.on_giveup(attempts, exc)
        if self.on_giveup is not None:
            try:
                self.on_giveup(self, exc)
            except Exception:
                log.exception("database %s: the give-up callback failed", self.name)

    def stats(self) -> PoolStats:
        pool = self.engine.pool
        checked_out = pool.checkedout() if isinstance(pool, QueuePool) else 0
        idle = pool.checkedin() if isinstance(pool, QueuePool) else 0
        size = pool.size() if isinstance(pool, QueuePool) else 0
        v = dict(self._counters.values)
        v.pop("pending_replacements")
        return PoolStats(
            database=self.name, size=idle + checked_out, checked_out=checked_out,
            overflow=max(0, idle + checked_out - size), breaker_state=self.breaker.state,
            breaker_opens=self.breaker.opens, **v,
        )

    def close_idle(self) -> int:
        """Close pooled connections unused for `pool.idle_timeout` (0: never); how many were closed."""
        idle = self.settings.pool.idle_timeout.total_seconds()
        closed = self._idle_pool().close_idle(idle) if idle > 0 else 0
        self._counters.add("idle_closes", closed)
        return closed

    def close(self) -> None:
        if self.budget is not None:
            self.budget.unregister(self.name)
        self.engine.dispose()
