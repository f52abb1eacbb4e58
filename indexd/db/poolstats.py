"""Usage statistics of one database's pool: event counters and the snapshot metrics and `status` show."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of one database's pool, for metrics and `status`."""

    database: str
    size: int  # connections held by the pool now (idle + checked out)
    checked_out: int
    overflow: int  # connections beyond pool.size now
    checkouts: int
    waits: int  # checkouts that found every connection busy
    timeouts: int  # checkouts that gave up after pool.timeout
    invalidations: int  # connections dropped as broken (failed check, connection error)
    connects: int
    reconnects: int  # connections made to replace invalidated ones
    connect_failures: int
    retries: int
    giveups: int
    recycles: int  # connections replaced at the end of their own lifetime (pool.recycle ± jitter)
    idle_closes: int  # connections closed after pool.idle_timeout unused
    breaker_state: str
    breaker_opens: int

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Counters:
    """Event counts of one pool, updated from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = dict.fromkeys(
            ("checkouts", "waits", "timeouts", "invalidations", "connects", "reconnects", "connect_failures",
             "retries", "giveups", "recycles", "idle_closes", "pending_replacements"), 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n

    def connected(self) -> None:
        with self._lock:
            self.values["connects"] += 1
            if self.values["pending_replacements"] > 0:
                self.values["pending_replacements"] -= 1
                self.values["reconnects"] += 1
