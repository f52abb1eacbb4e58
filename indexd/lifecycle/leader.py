"""Leadership: mutating jobs for a database run only in the process holding its advisory lock.

The lock is a session-level `pg_try_advisory_lock` held on a dedicated connection. PostgreSQL releases it when
that session ends, so a lost connection means lost leadership: `held()` checks the connection (and the lock
on it) with a cheap query under a short statement_timeout, and callers stop mutating as soon as it says False.
Several daemons may run against one database for high availability; only one of them changes anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator

import psycopg2

from indexd.db.pool import Database, PgConnection
from indexd.errors import first_line
from indexd.lifecycle import announce

log = logging.getLogger(__name__)

CHECK_TIMEOUT_MS = 2000


def leader_key(state_schema: str, database_name: str) -> int:
    """A signed 64-bit advisory lock key, the same in every process for one (state schema, database)."""
    digest = hashlib.sha256(f"indexd-leader\0{state_schema}\0{database_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """Holds (or tries to hold) the leader lock `key` of one database on a connection of its own.

    With `announce_changes`, gaining and losing it are published as events (the daemon's long-lived leadership does
    this; a CLI command's leadership for one run stays quiet)."""

    def __init__(self, db: Database, key: int, *, announce_changes: bool = False) -> None:
        self.db = db
        self.key = key
        self.announce_changes = announce_changes
        self._conn: PgConnection | None = None
        # The daemon's jobs for one database run in several threads (apply, verify, health); they share this
        # object, so checking, taking and giving up the lock are serialised.
        self._lock = threading.RLock()

    @classmethod
    def for_database(cls, db: Database, *, announce_changes: bool = False) -> Leadership:
        """The leadership of `db`, keyed by its state schema and its real database name (not the config's
        name for it, so two daemons configured differently still compete for the same lock)."""
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            name = str(cur.fetchone()[0])
        return cls(db, leader_key(db.settings.state_schema, name), announce_changes=announce_changes)

    def acquire(self) -> bool:
        """Try once, without waiting; True when this object holds the lock (now or already)."""
        with self._lock:
            return self._acquire()

    def _acquire(self) -> bool:
        if self._held():
            return True
        self._drop()
        conn = self.db.dedicated_connection(autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('statement_timeout', %s, false)", (str(CHECK_TIMEOUT_MS),))
                cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                got = bool(cur.fetchone()[0])
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            log.debug("leadership of %s is held by another process", self.db.name)
            return False
        self._conn = conn
        log.info("leadership of %s acquired", self.db.name)
        self._tell(True, "it holds the database's leader lock")
        return True

    def held(self) -> bool:
        """Whether we still hold the lock: the connection answers and its session still has the lock."""
        with self._lock:
            return self._held()

    def _held(self) -> bool:
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND objsubid = 1"
                    " AND ((classid::bigint << 32) | objid::bigint) = %s::bigint)",
                    (self.key,),
                )
                ok = bool(cur.fetchone()[0])
        except psycopg2.Error as exc:
            log.warning("leadership of %s lost: %s", self.db.name, first_line(exc))
            self._drop()
            self._tell(False, f"its lock connection failed: {first_line(exc)}")
            return False
        if not ok:
            log.warning("leadership of %s lost: the lock is no longer held", self.db.name)
            self._drop()
            self._tell(False, "the lock is no longer held")
        return ok

    def release(self) -> None:
        """Give the lock up (closing the session releases it even if the unlock fails)."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg2.Error), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            log.info("leadership of %s released", self.db.name)
            self._tell(False, "released (stopping, or the database left the configuration)")
        self._drop()

    def _tell(self, gained: bool, why: str) -> None:
        if self.announce_changes:
            announce.leadership(self.db.name, gained, why)

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

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

