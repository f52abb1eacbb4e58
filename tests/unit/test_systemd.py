"""sd_notify over a real datagram socket the test binds; the watchdog pings only while alive."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexd.config.schema import Settings
from indexd.service.runtime import Runtime
from indexd.service.status_view import liveness
from indexd.service.systemd import Notifier, Watchdog, monotonic_usec


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)  # blocking: every message a test waits for was sent before it reads
    try:
        yield path, sock
    finally:
        sock.close()


def _messages(sock: socket.socket) -> list[str]:
    out = []
    try:
        while True:
            out.append(sock.recv(4096, socket.MSG_DONTWAIT).decode())
    except (BlockingIOError, TimeoutError):
        return out


def test_ready_status_reloading_stopping(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.ready("running: 1 database(s)")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=running: 1 database(s)"
    before = monotonic_usec()
    assert n.reloading()
    fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
    assert fields["RELOADING"] == "1"
    assert int(fields["MONOTONIC_USEC"]) >= before
    assert n.stopping()
    assert sock.recv(4096).decode() == "STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"indexd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_without_systemd_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog()
    assert not Watchdog(n, lambda: (True, "ok")).tick()


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready()


def test_watchdog_usec_for_another_pid_is_ignored() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}).watchdog_usec is None
    ours = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())})
    assert ours.watchdog_usec == 60_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_pings_at_half_the_interval_while_alive(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    clock = FakeClock()
    wd = Watchdog(Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}), lambda: (True, "ok"), clock)
    assert wd.interval == 5.0
    assert wd.tick()  # first turn: ping at once
    clock.now += 4.9
    assert not wd.tick()
    clock.now += 0.2
    assert wd.tick()
    assert _messages(sock) == ["WATCHDOG=1", "WATCHDOG=1"]
    assert wd.sleep_hint(1.0) == 1.0 and wd.sleep_hint(10.0) == 2.5


def test_watchdog_stops_pinging_when_the_scheduler_is_stuck(notify_socket: tuple[str, socket.socket]) -> None:
    """The liveness check the daemon uses: main loop fresh, scheduler thread alive, heartbeat fresh."""
    path, sock = notify_socket
    clock = FakeClock()
    rt = Runtime(Settings(), clock=clock)
    rt.startup_complete = True
    thread_alive = [True]
    rt.scheduler_alive = lambda: thread_alive[0]
    wd = Watchdog(Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}), lambda: liveness(rt), clock)

    received: list[str] = []

    def turn(seconds: float, heartbeat: bool) -> bool:
        clock.now += seconds
        rt.beat_loop()
        if heartbeat:
            rt.beat_scheduler()
        pinged = wd.tick()
        received.extend(_messages(sock))
        return pinged

    assert turn(1.0, heartbeat=True)
    assert turn(1.0, heartbeat=True)
    # The heartbeat job stops running (a stuck scheduler) while the main loop keeps turning.
    pings = [turn(1.0, heartbeat=False) for _ in range(40)]
    assert any(pings[:25]) and not any(pings[31:])
    assert liveness(rt)[0] is False and "stuck" in liveness(rt)[1]
    # It comes back: pings resume.
    assert turn(1.0, heartbeat=True)
    # A dead scheduler thread fails liveness even with a fresh heartbeat.
    thread_alive[0] = False
    assert not turn(1.0, heartbeat=True)
    assert liveness(rt) == (False, "scheduler thread is not running")
    assert received and set(received) == {"WATCHDOG=1"}
    assert len(received) == wd.pings


def test_liveness_fails_when_the_main_loop_stalls() -> None:
    clock = FakeClock()
    rt = Runtime(Settings(), clock=clock)
    rt.beat_loop()
    assert liveness(rt)[0]
    clock.now += 31
    ok, why = liveness(rt)
    assert not ok and "main loop" in why
