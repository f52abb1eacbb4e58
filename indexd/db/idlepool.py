"""SQLAlchemy's QueuePool, plus what it lacks for a fleet of databases: closing connections that sit idle.

QueuePool keeps up to `pool_size` connections open forever once made; with hundreds of databases per daemon
that is hundreds of idle server sessions. `IdleQueuePool` stamps each connection when it comes back, and
`close_idle` closes the ones idle longer than asked. A closed connection leaves the pool the way QueuePool
drops an overflow connection on return (closed, then `_dec_overflow`), so the pool's own accounting of
checked-out connections stays right and the next checkout simply connects again.

Pooled connections are handed out last-in first-out (`use_lifo`), so under light load the same few are
reused and the rest age out, instead of every connection being kept warm by a round robin.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.util import queue as sqla_queue

IDLE_SINCE = "indexd_idle_since"  # monotonic time the connection came back to the pool


class IdleQueuePool(QueuePool):
    """A QueuePool whose idle connections can be closed by age (`close_idle`) or to make room (`oldest_idle`)."""

    def __init__(self, creator: Any, *, on_return: Callable[[], None] | None = None, **kw: Any) -> None:
        kw.setdefault("use_lifo", True)
        super().__init__(creator, **kw)
        self._on_return = on_return  # told when a connection becomes idle (someone may be waiting to evict one)

    def recreate(self) -> IdleQueuePool:
        """What Engine.dispose() swaps in: the same pool, empty (QueuePool's own would drop `on_return`)."""
        return IdleQueuePool(
            self._creator, on_return=self._on_return, pool_size=self._pool.maxsize,
            max_overflow=self._max_overflow, pre_ping=self._pre_ping, use_lifo=self._pool.use_lifo,
            timeout=self._timeout, recycle=self._recycle, echo=self.echo, logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return, _dispatch=self.dispatch, dialect=self._dialect,
        )

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        record.info[IDLE_SINCE] = time.monotonic()
        super()._do_return_conn(record)
        if self._on_return is not None:
            self._on_return()

    def _queue(self) -> sqla_queue.Queue[ConnectionPoolEntry]:
        q = self._pool
        assert isinstance(q, sqla_queue.Queue)
        return q

    def oldest_idle(self) -> float | None:
        """When the longest-idle connection came back (monotonic), or None when none is idle."""
        q = self._queue()
        with q.mutex:  # the queue's own lock: nothing is taken from or added to the pool meanwhile
            stamps = [rec.info.get(IDLE_SINCE, 0.0) for rec in q.queue if rec.dbapi_connection is not None]
        return min(stamps) if stamps else None

    def close_idle(self, idle_for: float, limit: int | None = None, now: float | None = None) -> int:
        """Close pooled connections idle for `idle_for` seconds or longer, longest-idle first, at most `limit`;
        returns how many were closed. Connections checked out are never touched."""
        now = time.monotonic() if now is None else now
        q = self._queue()
        with q.mutex:
            # Empty entries (an invalidated connection awaiting its reconnect) go too: they hold no session.
            old = sorted((rec for rec in q.queue if rec.dbapi_connection is None
                          or now - rec.info.get(IDLE_SINCE, 0.0) >= idle_for),
                         key=lambda rec: rec.info.get(IDLE_SINCE, 0.0) if rec.dbapi_connection is not None else -1.0)
            victims = old if limit is None else old[:limit]
            for rec in victims:
                q.queue.remove(rec)
        closed = 0
        for rec in victims:
            held = rec.dbapi_connection is not None
            try:
                rec.close()
            finally:
                self._dec_overflow()
            closed += held
        return closed
