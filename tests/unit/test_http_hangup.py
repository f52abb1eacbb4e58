"""A client that hangs up while the HTTP server writes its answer is routine: one DEBUG line, no traceback."""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from indexd.config.schema import HttpSettings, Settings
from indexd.embedded import free_port
from indexd.service.http import HttpServer
from indexd.service.metrics import Metrics
from indexd.service.runtime import Runtime

BIG = 8 * 1024 * 1024  # a /health answer far larger than what the socket buffers can hold


@pytest.fixture
def server() -> Iterator[tuple[HttpServer, int]]:
    # A long config path makes /health big, so the server is still writing when the client goes away.
    runtime = Runtime(Settings(source="/" + "x" * BIG))
    http = HttpServer(runtime, Metrics(runtime))
    port = free_port()
    http.start(HttpSettings(listen=f"127.0.0.1:{port}"))
    try:
        yield http, port
    finally:
        http.stop()


def _hang_up_mid_answer(port: int) -> None:
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        client.connect(("127.0.0.1", port))
        client.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert client.recv(12).startswith(b"HTTP/1.1 200")  # the server is writing now
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset


def _wait_for(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_client_hanging_up_mid_answer_is_a_debug_line(server: tuple[HttpServer, int],
                                                        caplog: pytest.LogCaptureFixture,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    _, port = server
    caplog.set_level(logging.DEBUG, logger="indexd.service.http")
    _hang_up_mid_answer(port)
    _wait_for(caplog, "hung up")
    hangups = [r for r in caplog.records if "hung up" in r.getMessage()]
    assert [r.levelno for r in hangups] == [logging.DEBUG]
    assert "/health" in hangups[0].getMessage()
    assert "Error" in hangups[0].getMessage()  # the exception's type, without its traceback
    assert hangups[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "Exception occurred during processing of request" not in capfd.readouterr().err  # socketserver's print
    # The server carries on answering others.
    with socket.create_connection(("127.0.0.1", port)) as again:
        again.sendall(b"GET /health/startup HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert again.recv(64).startswith(b"HTTP/1.1 503")
