"""Leadership: mutating jobs for a database run only in the process holding its leader lock.

The lock is a session-level `pg_try_advisory_lock` keyed by the database (`leader_key`), held in its server's
leadership database (`leadership.database`) on the one session all databases of that server share
(`indexd.lifecycle.coordination`). PostgreSQL releases it when that session ends, so a lost connection means lost
leadership: `held()` asks the server each time, and callers stop mutating as soon as it says False. Several
daemons may run against one database for high availability; only one of them changes anything.

The daemon's leaderships announce their changes (`announce_changes`): gaining and losing a database's lock are
published as events by the coordinator that sees them, one per database, so a lost session is a
`leadership_lost` for every database it led. A CLI command's leadership for one run stays quiet.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from indexd.db.pool import Database
from indexd.lifecycle.coordination import Coordinator, coordination_database


def leader_key(state_schema: str, database_name: str) -> int:
    """A signed 64-bit advisory lock key, the same in every process for one (state schema, database)."""
    digest = hashlib.sha256(f"indexd-leader\0{state_schema}\0{database_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """Holds (or tries to hold) the leader lock `key` of one database, through its server's coordinator.

    Without a coordinator given, it makes one of its own (its own session, ended by `release`): what a one-off
    command such as `apply` needs. The daemon shares one coordinator per server between its databases. With
    `announce_changes`, gaining and losing the lock are published as events. Checking, taking and giving up the
    lock are serialised by the coordinator (the daemon's jobs for one database run in several threads)."""

    def __init__(self, db: Database, key: int, coordinator: Coordinator | None = None, *,
                 announce_changes: bool = False) -> None:
        self.db = db
        self.key = key
        self.announce_changes = announce_changes
        self._own = coordinator is None
        self.coordinator = coordinator or Coordinator(coordination_database(db))

    @classmethod
    def for_database(cls, db: Database, coordinator: Coordinator | None = None, *,
                     announce_changes: bool = False) -> Leadership:
        """The leadership of `db`, keyed by its state schema and its real database name (not the config's
        name for it, so two daemons configured differently still compete for the same lock)."""
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            name = str(cur.fetchone()[0])
        return cls(db, leader_key(db.settings.state_schema, name), coordinator, announce_changes=announce_changes)

    def acquire(self) -> bool:
        """Try once, without waiting; True when this process holds the lock (now or already)."""
        return self.coordinator.try_lock(self.key, self.db.name, announce=self.announce_changes)

    def held(self) -> bool:
        """Whether we still hold the lock: the session answers and still has the lock."""
        return self.coordinator.holds(self.key)

    def known(self) -> bool:
        """Whether the lock was held at the last look (no I/O: for health and metrics, never for a guard)."""
        return self.coordinator.known(self.key)

    def release(self) -> None:
        """Give the lock up (ending the session releases it even if the unlock fails)."""
        self.coordinator.unlock(self.key)
        if self._own:
            self.coordinator.close()

    def __enter__(self) -> Leadership:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def leading(db: Database, leadership: Leadership | None) -> Iterator[Leadership]:
    """The caller's leadership, or one taken (without waiting) for this run and given back after it."""
    if leadership is not None:
        yield leadership
        return
    own = Leadership.for_database(db)
    try:
        own.acquire()  # if another process leads, the leader guard refuses each drop
        yield own
    finally:
        own.release()

