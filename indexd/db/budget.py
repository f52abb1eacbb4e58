"""A connection budget per server: how many sessions indexd may hold on one PostgreSQL server at a time.

Hundreds of databases of one server in one daemon must not cost hundreds of sessions: a server's
`max_connections` is shared with the application. Every connection the pools of that server's databases open
(pooled or dedicated) takes a slot of its `ServerBudget` first. When none is free, the longest-idle pooled
connection of any of those databases is closed to make room; when none is idle either, the caller waits until
one is, at most its own pool timeout, then fails with a clear error (not counted against the server by the
breaker: the server is fine, indexd is busy).

Slots are counted from the connections themselves (a connection is held while `closed` is 0), so whichever
way a connection ends (returned and reaped, invalidated, closed by its owner, garbage-collected) its slot is
free again without any bookkeeping to forget.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from indexd.errors import ConnectionFailed

log = logging.getLogger(__name__)

WAIT_STEP = 0.05  # seconds between looks when every slot is busy (a connection closed elsewhere wakes no one)


class IdleSource(Protocol):
    """A pool whose idle connections the budget may close to make room."""

    def oldest_idle(self) -> float | None: ...
    def close_idle(self, idle_for: float, limit: int | None = None, now: float | None = None) -> int: ...


class ServerBudget:
    """At most `limit` open connections to one server, over every pool registered with it."""

    def __init__(self, server: str, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.limit = limit
        self._clock = clock
        self._cond = threading.Condition()
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._reserved = 0  # slots taken by connection attempts still under way
        self._sources: dict[str, Callable[[], IdleSource]] = {}  # database -> its current pool
        self.peak = 0
        self.waits = 0  # connection attempts that found every slot busy
        self.evictions = 0  # idle connections closed to make room
        self.timeouts = 0

    def register(self, name: str, source: Callable[[], IdleSource]) -> None:
        with self._cond:
            self._sources[name] = source

    def unregister(self, name: str) -> None:
        with self._cond:
            self._sources.pop(name, None)

    def _open(self) -> int:
        gone = [c for c in self._conns if c.closed]
        for c in gone:
            self._conns.discard(c)
        return len(self._conns)

    def in_use(self) -> int:
        """Connections open now plus connection attempts under way."""
        with self._cond:
            return self._open() + self._reserved

    def notify(self) -> None:
        """A pooled connection became idle: a waiter may now close it to make room."""
        with self._cond:
            self._cond.notify_all()

    @contextlib.contextmanager
    def slot(self, who: str, timeout: float) -> Iterator[Callable[[Any], None]]:
        """Reserve a slot for one connection attempt; the caller hands the new connection to the function it
        gets, which keeps the slot for as long as that connection is open. A failed attempt frees it."""
        self._reserve(who, timeout)
        kept: list[Any] = []
        try:
            yield kept.append
        finally:
            with self._cond:
                self._reserved -= 1
                for conn in kept:
                    self._conns.add(conn)
                self.peak = max(self.peak, self._open() + self._reserved)
                self._cond.notify_all()

    def _reserve(self, who: str, timeout: float) -> None:
        deadline = self._clock() + timeout
        waited = False
        while True:
            with self._cond:
                if self._open() + self._reserved < self.limit:
                    self._reserved += 1
                    return
            if self._evict_one():
                continue
            if not waited:
                waited = True
                with self._cond:
                    self.waits += 1
            left = deadline - self._clock()
            if left <= 0:
                with self._cond:
                    self.timeouts += 1
                raise ConnectionFailed(
                    f"{who}: all {self.limit} connections indexd may hold on server {self.server} are in use "
                    f"(fleet.max_connections_per_server); waited {timeout:g} s for one"
                )
            with self._cond:
                self._cond.wait(min(WAIT_STEP, left))

    def _evict_one(self) -> bool:
        """Close the longest-idle pooled connection of this server's databases; False when none is idle."""
        with self._cond:
            sources = list(self._sources.values())
        best: tuple[float, IdleSource] | None = None
        for get in sources:
            pool = get()
            since = pool.oldest_idle()
            if since is not None and (best is None or since < best[0]):
                best = (since, pool)
        if best is None or not best[1].close_idle(0.0, limit=1):
            return False
        with self._cond:
            self.evictions += 1
        return True

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"limit": self.limit, "open": self._open(), "peak": self.peak, "waits": self.waits,
                    "evictions": self.evictions, "timeouts": self.timeouts}


class Budgets:
    """One ServerBudget per server, made on first use (a daemon's registry; the command line uses none)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._by_server: dict[str, ServerBudget] = {}

    def for_server(self, server: str) -> ServerBudget:
        with self._lock:
            budget = self._by_server.get(server)
            if budget is None:
                budget = self._by_server[server] = ServerBudget(server, self.limit)
            return budget

    def all(self) -> list[ServerBudget]:
        with self._lock:
            return list(self._by_server.values())

    def resize(self, limit: int) -> None:
        """A reloaded limit, for every server (a lower one is reached as connections close)."""
        with self._lock:
            self.limit = limit
            for budget in self._by_server.values():
                budget.limit = limit
