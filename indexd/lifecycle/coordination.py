"""One leadership session per server: the leader locks of all its databases, held on a single connection.

Advisory locks belong to the database they are taken in, so a lock per managed database taken in that database
costs a session per database. Instead, every leader lock of a server is taken in one agreed database of it,
`leadership.database` (default `postgres`), keyed by the managed database (`leader.leader_key`: its state schema
and real name), on one connection: the `Coordinator`. Its guarantees are those of one lock per database:

* Two processes never lead the same database: they take the same key in the same database of the same server,
  whatever else their configurations list. (Every process must name the same `leadership.database` for a
  server; one that named another database would take its locks there and not see the others'.)
* A lost session is lost leadership of every database of the server at once (PostgreSQL drops a session's
  locks with it): the first check that finds the session broken drops it, every `holds` says False from then
  on, and the locks are taken again on a new session by the next `acquire` or `refresh`.
* `holds` asks the server each time (the callers check right before they mutate); `known` is the answer of the
  last look, for health and metrics, without I/O.
* A key taken with `announce` (the daemon's) has every change of it published as an event (leadership_gained,
  leadership_lost), one per database: a lost session is a leadership_lost for each database it held. The
  events are published after the session's lock is let go.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import replace
from typing import Any

import psycopg2

from indexd.config.schema import RetrySettings
from indexd.db.deadline import SOCKET_DEADLINES
from indexd.db.pool import Database, PgConnection
from indexd.dsn import server_of, with_dbname
from indexd.errors import first_line
from indexd.lifecycle import announce

log = logging.getLogger(__name__)

CHECK_TIMEOUT_MS = 2000
_OWN_LOCKS = ("SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
              " AND pid = pg_backend_pid() AND objsubid = 1")
_HOLDS = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
          " AND pid = pg_backend_pid() AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = %s::bigint)")


def coordination_database(target: Database, retry: RetrySettings | None = None) -> Database:
    """A Database for the leadership database of `target`'s server, reached with `target`'s credentials."""
    s = target.settings
    where = s.leadership.database
    settings = replace(s, name=f"{where} (leadership on {server_of(s.dsn)})", dsn=with_dbname(s.dsn, where),
                       pool=replace(s.pool, size=1, max_overflow=0))
    return Database(settings, retry or target.retry_settings, target.breaker_settings)


class Coordinator:
    """The leader locks of one server's databases, on one session in its leadership database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: PgConnection | None = None
        # Jobs of many databases check and take locks from several threads; they share the one session, so every
        # use of it is serialised.
        self._lock = threading.RLock()
        self._names: dict[int, str] = {}  # the keys wanted (taken once, to be kept), with their database's name
        self._known: set[int] = set()  # the keys held at the last look
        self._announced: set[int] = set()  # the wanted keys whose changes are published as events
        self._told: list[tuple[str, bool, str]] = []  # changes noted under the lock, published after it
        self._failing = False  # the last refresh could not reach the session

    @property
    def where(self) -> str:
        return self.db.name

    @property
    def server(self) -> str:
        return server_of(self.db.settings.dsn)

    @property
    def database(self) -> str:
        return self.db.settings.leadership.database

    def backend_pid(self) -> int | None:
        """The server process of the session (None without one): what `pg_locks` shows as the holder. No lock
        taken: a reading for health, which must not wait behind a slow check."""
        conn = self._conn
        if conn is None or conn.closed:
            return None
        return int(conn.info.backend_pid)

    def held_count(self) -> int:
        """How many leader locks were held at the last look."""
        return len(self._known)

    # ---- one key ----------------------------------------------------------------------------------------------
    def try_lock(self, key: int, name: str, *, announce: bool = False) -> bool:
        """Take `key` for database `name` without waiting; True when held (now or already). From then on `refresh`
        takes it again after a lost session, until `unlock`; with `announce`, its changes are published. Raises
        when the server cannot be reached."""
        try:
            with self._lock:
                self._names[key] = name
                if announce:
                    self._announced.add(key)
                if self._holds(key):
                    return True
                got = bool(self._run("SELECT pg_try_advisory_lock(%s)", (key,))[0][0])
                self._note(key, got, "it holds the database's leader lock")
        finally:
            self._tell()
        if got:
            log.info("leadership of %s acquired (lock in %s)", name, self.where)
        else:
            log.debug("leadership of %s is held by another process", name)
        return got

    def holds(self, key: int) -> bool:
        """Whether our session is alive and holds `key`, asked of the server now."""
        try:
            with self._lock:
                return self._holds(key)
        finally:
            self._tell()

    def known(self, key: int) -> bool:
        """Whether `key` was held at the last look (no I/O)."""
        return key in self._known

    def unlock(self, key: int) -> None:
        """Give `key` up and stop wanting it (closing the session would release it too)."""
        with self._lock:
            held = self._alive() and key in self._known
            self._note(key, False, "released (stopping, or the database left the configuration)")
            name = self._names.pop(key, str(key))
            self._announced.discard(key)
            if held:
                with contextlib.suppress(psycopg2.Error):
                    self._run("SELECT pg_advisory_unlock(%s)", (key,))
        self._tell()
        if held:
            log.info("leadership of %s released", name)

    # ---- every key --------------------------------------------------------------------------------------------
    def refresh(self) -> tuple[list[str], list[str]]:
        """Look at the session and take every wanted key it lacks, in one round trip (on a new session when the
        old one is gone: its locks went with it); (lost, gained) database names since the last look."""
        with self._lock:
            before, session = set(self._known), self._conn
            if not self._names:  # nothing to hold (all released): no session kept open for nothing
                self._drop("released")
                return [], []
            if not self._alive():
                self._drop("its leadership session is gone")  # said lost before a new session takes them
            try:
                held = self._take_missing()
                if self._failing:
                    log.info("leadership session in %s is available again", self.where)
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - an unreachable server is a reading: nothing held
                # Said once per outage (the housekeeping tries every few seconds); then only at debug level.
                log.log(logging.DEBUG if self._failing else logging.WARNING,
                        "leadership session in %s unavailable: %s", self.where, first_line(exc))
                self._failing = True
                held = set()
            for key in sorted(set(self._known) | held):
                self._note(key, key in held and key in self._names,
                           "it holds the database's leader lock" if key in held else "the lock is no longer held")
            renewed = self._conn is not session  # a new session: everything it holds was taken just now
            lost = sorted(self._names.get(k, str(k)) for k in before - self._known)
            gained = sorted(self._names[k] for k in (self._known if renewed else self._known - before))
        if lost:
            log.warning("leadership of %d database(s) lost: %s", len(lost), _some(lost))
        if gained:
            log.info("leadership of %d database(s) acquired (locks in %s): %s", len(gained), self.where,
                     _some(gained))
        self._tell()
        return lost, gained

    def _take_missing(self) -> set[int]:
        """The keys the session holds after taking the wanted ones it lacked (and letting unwanted ones go)."""
        try:
            held = self._own_locks()
        except psycopg2.Error:
            if self._alive():  # the session is still there: what it holds is unknown, so take nothing now
                raise
            held = set()  # it broke and was dropped (its loss logged): a new one holds nothing yet
        missing = [k for k in self._names if k not in held]
        if missing:
            rows = self._run("SELECT k FROM unnest(%s::bigint[]) AS k WHERE pg_try_advisory_lock(k)", (missing,))
            held |= {int(r[0]) for r in rows}
        unwanted = sorted(held - set(self._names))  # given up while an unlock failed: let it go now
        if unwanted:
            self._run("SELECT bool_and(pg_advisory_unlock(k)) FROM unnest(%s::bigint[]) AS k", (unwanted,))
            held -= set(unwanted)
        return held

    def close(self) -> None:
        """End the session: every lock it holds goes with it."""
        with self._lock:
            if self._known:
                log.info("leadership of %d database(s) released", len(self._known))
            self._drop("released (stopping)")
            self._names.clear()
            self._announced.clear()
        self._tell()
        self.db.close()

    # ---- the session ------------------------------------------------------------------------------------------
    def _holds(self, key: int) -> bool:
        if not self._alive():
            self._note(key, False, "its leadership session is gone")
            return False
        why = "the lock is no longer held"
        try:
            ok = bool(self._run(_HOLDS, (key,))[0][0])
        except psycopg2.Error as exc:
            ok = False  # not sure we hold it: then we do not (a broken session was dropped by _run)
            why = f"its leadership session failed: {first_line(exc)}"
        if not ok and key in self._known:
            log.warning("leadership of %s lost: %s", self._names.get(key, key), why)
        self._note(key, ok, why)
        return ok

    def _own_locks(self) -> set[int]:
        if not self._alive():
            return set()
        return {int(r[0]) for r in self._run(_OWN_LOCKS)}

    def _alive(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _run(self, query: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """One statement on the session (made first when there is none), under a client-side deadline. A
        failure that broke the connection drops the session, and with it every lock."""
        if not self._alive():
            self._conn = None
            conn = self.db.dedicated_connection(autocommit=True)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT set_config('statement_timeout', %s, false)", (str(CHECK_TIMEOUT_MS),))
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        conn = self._conn
        assert conn is not None
        try:
            with SOCKET_DEADLINES.guard(conn, 2 * CHECK_TIMEOUT_MS / 1000, f"leadership session in {self.where}"), \
                    conn.cursor() as cur:
                cur.execute(query, params)
                return list(cur.fetchall())
        except psycopg2.Error as exc:
            if conn.closed:
                self._lost(exc)
            raise

    def _lost(self, exc: BaseException) -> None:
        if self._known:
            log.warning("leadership session in %s lost (%s): leadership of %d database(s) lost at once",
                        self.where, first_line(exc), len(self._known))
        self._drop(f"its leadership session failed: {first_line(exc)}")

    def _drop(self, why: str) -> None:
        for key in sorted(self._known):
            self._note(key, False, why)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _note(self, key: int, held: bool, why: str) -> None:
        """Record whether `key` is held; a change of an announced key is kept to be published (`_tell`)."""
        if held == (key in self._known):
            return
        if held:
            self._known.add(key)
        else:
            self._known.discard(key)
        if key in self._announced:
            self._told.append((self._names.get(key, str(key)), held, why))

    def _tell(self) -> None:
        """Publish the changes noted so far, outside the session's lock (a sink never waits behind a check)."""
        with self._lock:
            told, self._told = self._told, []
        for name, gained, why in told:
            announce.leadership(name, gained, why)


def _some(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


class Coordinators:
    """One Coordinator per (server, leadership database), shared by the daemon's databases."""

    def __init__(self, retry: RetrySettings | None = None) -> None:
        self._retry = retry
        self._lock = threading.Lock()
        self._by_place: dict[tuple[str, str], Coordinator] = {}

    def for_database(self, target: Database) -> Coordinator:
        place = (server_of(target.settings.dsn), target.settings.leadership.database)
        with self._lock:
            coord = self._by_place.get(place)
            if coord is None:
                coord = self._by_place[place] = Coordinator(coordination_database(target, self._retry))
            return coord

    def all(self) -> list[Coordinator]:
        with self._lock:
            return list(self._by_place.values())

    def close(self) -> None:
        for coord in self.all():
            coord.close()
