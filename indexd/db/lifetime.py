"""A jittered maximum lifetime for each pooled connection, so connections made together do not expire together.

SQLAlchemy's `pool_recycle` is one number per engine: every connection made at start (or after a restart)
reaches it in the same second and is replaced in the same burst of checkouts, the thundering herd the jitter
is meant to avoid. Here each connection draws its own lifetime when it is made, pool.recycle x (1 +/- jitter),
kept as a deadline in its connection record's `info` (cleared by SQLAlchemy whenever the record reconnects).
A checkout that finds the deadline passed raises ConnectionExpired: SQLAlchemy's pool treats a
DisconnectionError raised by a checkout listener by invalidating that one connection and connecting a new one
in its place before handing it out (sqlalchemy/pool/base.py, `_ConnectionFairy._checkout`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy.exc

DEADLINE = "indexd_expires_at"  # key in the connection record's info: monotonic time the connection expires


class ConnectionExpired(sqlalchemy.exc.DisconnectionError):
    """A pooled connection past its own max lifetime: replaced at checkout, which is no failure."""


@dataclass(frozen=True)
class Lifetime:
    """pool.recycle with its jitter; a recycle of 0 means connections are never replaced for their age."""

    recycle_s: float
    jitter: float
    clock: Callable[[], float] = field(default=time.monotonic)
    rand: Callable[[], float] = field(default=random.random)

    def draw(self) -> float | None:
        """Seconds a new connection may live: uniform in recycle x [1 - jitter, 1 + jitter]."""
        if self.recycle_s <= 0:
            return None
        return self.recycle_s * (1 + self.jitter * (2 * self.rand() - 1))

    def stamp(self, info: MutableMapping[str, Any]) -> None:
        """At connect: record when this connection expires."""
        life = self.draw()
        if life is not None:
            info[DEADLINE] = self.clock() + life

    def check(self, info: MutableMapping[str, Any], what: str) -> None:
        """At checkout: ConnectionExpired if the connection has outlived its deadline."""
        deadline = info.get(DEADLINE)
        if deadline is not None and self.clock() >= deadline:
            raise ConnectionExpired(f"{what}: pooled connection reached its max lifetime (pool.recycle); replacing it")
