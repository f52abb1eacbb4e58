"""A real HTTP receiver for webhook tests, on 127.0.0.1 in a thread: records every POST (headers and JSON body)
and answers with the statuses it is given (then 200), optionally after a delay."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)  # answers of the first requests, in order; then 200
    delay_s: float = 0.0  # each answer waits this long
    received: list[Received] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/T000/B000/secret-path"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        """Block until `n` deliveries arrived (or timeout); returns what arrived."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < n and time.monotonic() < deadline:
                self.arrived.wait(deadline - time.monotonic())
            return list(self.received)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self.lock:
            self.requests += 1
            status = self.statuses.pop(0) if self.statuses else 200
        if self.delay_s:
            time.sleep(self.delay_s)
        if status < 300:
            with self.arrived:
                self.received.append(Received(handler.path, dict(handler.headers), raw))
                self.arrived.notify_all()
        handler.send_response(status)
        if 300 <= status < 400:
            handler.send_header("Location", f"http://127.0.0.1:{self.port}/elsewhere")
        handler.send_header("Content-Length", "0")
        handler.end_headers()


@contextmanager
def receiver(statuses: list[int] | None = None, delay_s: float = 0.0) -> Iterator[Receiver]:
    rec = Receiver(statuses=list(statuses or []), delay_s=delay_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            rec._answer(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"
