"""A client-side deadline for blocking libpq calls: past it, the connection's socket is shut down.

statement_timeout is enforced by the server, TCP keepalives by the peer's kernel: neither fires when the server
process hangs while its host is alive (SIGSTOP, a stuck storage layer), and psycopg2 then blocks forever. The
deadline thread shuts the socket down (never closes the file descriptor, which libpq owns), so the blocked call
returns with "server closed the connection unexpectedly" and the caller can retry elsewhere.

(Not to be confused with systemd's watchdog in `indexd.service.systemd`, which restarts a hung daemon.)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


TICK = 0.1  # how often the deadlines are looked at: they fire up to this late


class SocketDeadlines:
    """One daemon thread for the whole process, started on first use.

    Guarding is on every checkout's path, so it must cost next to nothing: registering takes a lock and a dict
    entry, and never wakes the thread (a wake-up per checkout measured ~0.7 ms under load); the thread looks
    every TICK seconds instead.
    """

    def __init__(self, clock: Any = time.monotonic, tick: float = TICK) -> None:
        self._clock = clock
        self._tick = tick
        self._lock = threading.Lock()
        self._deadlines: dict[int, tuple[float, int, str]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self.fired = 0

    @contextlib.contextmanager
    def guard(self, conn: Any, seconds: float, what: str) -> Iterator[None]:
        """Within this block, `conn`'s socket is shut down if the block lasts longer than `seconds`."""
        if seconds <= 0:
            yield
            return
        token = next(self._ids)
        with self._lock:
            self._deadlines[token] = (self._clock() + seconds, conn.fileno(), what)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="indexd-db-deadlines", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            # Under the lock: once we are out, the thread can no longer touch this descriptor (libpq may
            # close it and the number may be reused right after).
            with self._lock:
                self._deadlines.pop(token, None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                for token, (deadline, fd, what) in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[token]
                        self._shutdown(fd, what)
            time.sleep(self._tick)

    def _shutdown(self, fd: int, what: str) -> None:
        self.fired += 1
        log.warning("%s: no answer from the server in time; dropping the connection", what)
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()  # closes only our duplicate


SOCKET_DEADLINES = SocketDeadlines()
