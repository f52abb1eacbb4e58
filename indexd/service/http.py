"""Read-only HTTP endpoints: /health/live, /health/ready, /health/startup, /health (details), /metrics.

Loopback by default; with http.token_file set, every request needs `Authorization: Bearer <token>`.
Handlers only read the Runtime (no SQL), so a hung database cannot hang a health check.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from indexd.config.build import http_exposure
from indexd.config.listen import ListenAddress, listen_address
from indexd.config.schema import HttpSettings
from indexd.config.secrets import read_token
from indexd.errors import ConfigError
from indexd.service.metrics import Metrics
from indexd.service.runtime import Runtime
from indexd.service.status_view import health_details, liveness, readiness

log = logging.getLogger(__name__)

HANGUPS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)  # the client went away mid-exchange


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: ListenAddress, runtime: Runtime, metrics: Metrics, token: str | None) -> None:
        self.address_family = socket.AF_INET6 if address.ipv6 else socket.AF_INET
        super().__init__((address.host, address.port), _Handler)
        self.runtime, self.metrics, self.token = runtime, metrics, token

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escaped a handler goes to our log (scrubbed, with its traceback), not to a bare stderr print."""
        log.error("http request from %s failed", client_address[0] if client_address else "?", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def handle(self) -> None:
        try:
            super().handle()
        except HANGUPS as exc:
            # The client closed or reset the connection while its request was read or its answer written
            # (a scraper's timeout, a curl interrupted): routine, and nothing is left to answer.
            self.close_connection = True
            log.debug("http client %s hung up during %s: %s: %s", self.client_address[0],
                      getattr(self, "path", "its request"), type(exc).__name__, exc)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("http %s " + format, self.address_string(), *args)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode())

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if code == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="indexd"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, (json.dumps(obj, default=str, indent=1) + "\n").encode(), "application/json")

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not self._authorized():
            self._json(401, {"error": "missing or wrong bearer token"})
            return
        rt = self.server.runtime
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/metrics":
                self._send(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/health/live":
                ok, why = liveness(rt)
                self._json(200 if ok else 503, {"status": "ok" if ok else "failing", "detail": why})
            elif path == "/health/startup":
                done = rt.startup_complete
                self._json(200 if done else 503, {"status": "ok" if done else "starting"})
            elif path == "/health/ready":
                ok, per_db = readiness(rt)
                self._json(200 if ok else 503, {"status": "ok" if ok else "not ready", "databases": per_db})
            elif path == "/health":
                self._json(200, health_details(rt))
            else:
                self._json(404, {"error": "not found", "endpoints": ["/health", "/health/live", "/health/ready",
                                                                     "/health/startup", "/metrics"]})
        except HANGUPS:
            raise  # not the endpoint's fault: handle() notes it
        except Exception:  # noqa: BLE001 - a broken endpoint answers 500 and the server keeps serving
            log.exception("http %s failed", path)
            self._json(500, {"error": "internal error"})


class HttpServer:
    """The endpoint server in a thread of its own; `restart` applies changed http settings on reload."""

    def __init__(self, runtime: Runtime, metrics: Metrics) -> None:
        self.runtime, self.metrics = runtime, metrics
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.settings: HttpSettings | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self, settings: HttpSettings) -> None:
        if not settings.enabled:
            self.settings = settings
            return
        exposed = http_exposure(settings)  # validation refuses this already; settings built in code are checked too
        if exposed:
            raise ConfigError([f"http.{key}: {message}" for key, message in exposed])
        token = read_token(settings)
        address = listen_address(settings)
        try:
            self._server = _Server(address, self.runtime, self.metrics, token)
        except OSError as exc:
            raise ConfigError(f"http.listen: cannot listen on {settings.listen}: {exc.strerror}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="http", daemon=True)
        self._thread.start()
        self.settings = settings
        log.info("http endpoints on %s:%d%s", *self.address or ("?", 0), " (bearer token required)" if token else "")

    def update(self, settings: HttpSettings) -> None:
        """Apply new http settings: same listen address -> new token only; otherwise rebind."""
        if self._server is not None and self.settings is not None and settings.listen == self.settings.listen \
                and settings.enabled:
            self._server.token = read_token(settings)
            self.settings = settings
            return
        self.stop()
        self.start(settings)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None
