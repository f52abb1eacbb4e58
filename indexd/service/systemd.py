"""systemd's notify protocol, written here (no extra dependency): READY, STATUS, RELOADING, STOPPING, WATCHDOG.

Messages are datagrams to the unix socket named by $NOTIFY_SOCKET ('@name' is the abstract namespace).
Outside systemd (no $NOTIFY_SOCKET) every call is a no-op. The watchdog is pinged at half of WATCHDOG_USEC,
and only while a real liveness check passes, so a stuck daemon is restarted by systemd instead of kept alive
by a thread that pings blindly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0


def _address(path: str) -> str | bytes:
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def monotonic_usec(clock: Callable[[], float] = time.monotonic) -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd's RELOADING=1 wants it in MONOTONIC_USEC (253+)."""
    return int(clock() * 1_000_000)


class Notifier:
    """Sends notify messages; silent when not run by systemd. Never raises: a lost message is logged only."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        self.watchdog_usec = _watchdog_usec(env)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, *fields: str) -> bool:
        if not self.socket_path:
            return False
        message = "\n".join(fields).encode()
        try:
            with self._lock, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT_S)  # a stuck receiver must not hang the main loop
                sock.connect(_address(self.socket_path))
                sock.sendall(message)
        except OSError as exc:
            log.warning("systemd notify to %s failed: %s", self.socket_path, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC if the watchdog is meant for this process (WATCHDOG_PID absent or ours)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec


class Watchdog:
    """Pings WATCHDOG=1 every half WATCHDOG_USEC from the main loop, only while `alive()` says so.

    `tick()` is called on every turn of the main loop; it decides by the clock whether a ping is due.
    """

    def __init__(self, notifier: Notifier, alive: Callable[[], tuple[bool, str]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.alive = alive
        self.clock = clock
        usec = notifier.watchdog_usec
        self.interval = usec / 2_000_000 if usec else None
        self._last_ping: float | None = None
        self._last_refusal: str | None = None
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.interval is not None and self.notifier.enabled

    def tick(self) -> bool:
        """Ping if due and alive; returns whether a ping was sent."""
        if not self.enabled or self.interval is None:
            return False
        now = self.clock()
        if self._last_ping is not None and now - self._last_ping < self.interval:
            return False
        ok, why = self.alive()
        if not ok:
            if why != self._last_refusal:
                log.error("watchdog: not pinging systemd: %s", why)
            self._last_refusal = why
            return False
        if self._last_refusal is not None:
            log.info("watchdog: healthy again, pinging systemd")
            self._last_refusal = None
        self._last_ping = now
        self.pings += 1
        return self.notifier.watchdog()

    def sleep_hint(self, default: float) -> float:
        """How long the main loop may wait before the next ping is due."""
        return default if self.interval is None else max(0.05, min(default, self.interval / 2))
