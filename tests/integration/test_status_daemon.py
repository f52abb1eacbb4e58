"""`status` asks only the daemon that holds the database's leader lock (found from the database itself), never
whatever answers on the port it would otherwise probe."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from indexd.config.schema import DatabaseSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster, free_port
from indexd.lifecycle.leader import Leadership
from indexd.state.migrations import migrate

DEFAULT_PORT = 9470
IMPOSTOR = {"status": "ok", "live": True, "ready": True, "uptime_s": 999.0, "config": "/etc/impostor.yaml",
            "reloads": {}, "last_reload_error": None,
            "databases": {"main": {"leader": True, "breaker": "impostor-breaker", "reachable": True,
                                   "pool": {"size": 77, "checked_out": 0, "waits": 0, "retries": 0}}}}

FAKE_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, log, body = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as fh:
            fh.write(self.path + "\\n")
        data = body.replace("PID", str(__import__("os").getpid())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[Callable[[int], tuple[int, Path]]]:
    """An unrelated HTTP server in a process of its own that answers /health like a daemon (its own pid too)."""

    def start(port: int) -> tuple[int, Path]:
        log = tmp_path / f"asked-{port}.log"
        log.write_text("")
        body = json.dumps({**IMPOSTOR, "pid": "PID"}).replace('"PID"', "PID")
        procs.append(subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(port), str(log), body]))
        _wait_listening(port)
        return port, log

    procs: list[subprocess.Popen[bytes]] = []
    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def _status(*args: str, cwd: Path) -> dict[str, Any]:
    """The one database's entry of `status --json` (a list of one object per database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_")}
    done = subprocess.run([sys.executable, "-m", "indexd", "status", "--json", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)
    return dict(entry)


def _migrated(pg_cluster: EmbeddedCluster, pg_dbname: str) -> Database:
    db = Database(DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname)))
    migrate(db)
    return db


def _presented(report: dict[str, Any]) -> bool:
    return "impostor" in json.dumps(report, default=str)


def test_an_unrelated_server_on_the_default_port_is_not_the_daemon_of_dsn(pg_cluster: EmbeddedCluster,
                                                                          pg_dbname: str, tmp_path: Path,
                                                                          impostor: Any) -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", DEFAULT_PORT)) == 0:
            pytest.skip(f"port {DEFAULT_PORT} is taken on this machine")
    _, asked = impostor(DEFAULT_PORT)
    db = _migrated(pg_cluster, pg_dbname)
    try:
        entry = _status("--dsn", pg_cluster.dsn(pg_dbname), cwd=tmp_path)  # no config file anywhere
    finally:
        db.close()
    assert not _presented(entry)
    assert entry["leader"] is None and "no process holds the leader lock" in entry["daemon"]
    assert asked.read_text() == ""  # not even asked


def test_a_leader_without_an_endpoint_of_its_own_is_named_not_an_impostor(pg_cluster: EmbeddedCluster,
                                                                          pg_dbname: str, tmp_path: Path,
                                                                          impostor: Any) -> None:
    port, asked = impostor(free_port())
    config = tmp_path / "c.yaml"
    config.write_text(f"databases:\n  - name: main\n    dsn: {pg_cluster.dsn(pg_dbname)}\n"
                      f"logging:\n  file: null\nhttp:\n  listen: 127.0.0.1:{port}\n")
    db = _migrated(pg_cluster, pg_dbname)
    lead = Leadership.for_database(db)
    try:
        assert lead.acquire()  # this test's process leads, and listens on no port at all
        entry = _status("--config", str(config), cwd=tmp_path)
    finally:
        lead.release()
        db.close()
    assert entry["database"] == "main" and not _presented(entry)
    assert entry["leader"]["process"] == os.getpid()
    assert f"process {os.getpid()} on this host" in entry["daemon"]
    assert asked.read_text() == ""


class _OwnPidLiar(BaseHTTPRequestHandler):
    """A server inside the leading process that answers /health for another pid: it is not that daemon."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        data = json.dumps({**IMPOSTOR, "pid": os.getpid() + 100000}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_endpoint_of_the_leader_that_is_not_its_health_is_not_presented(pg_cluster: EmbeddedCluster,
                                                                           pg_dbname: str, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OwnPidLiar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "c.yaml"
    config.write_text(f"databases:\n  - name: main\n    dsn: {pg_cluster.dsn(pg_dbname)}\n"
                      f"logging:\n  file: null\nhttp:\n  listen: 127.0.0.1:{server.server_address[1]}\n")
    db = _migrated(pg_cluster, pg_dbname)
    lead = Leadership.for_database(db)
    try:
        assert lead.acquire()
        entry = _status("--config", str(config), cwd=tmp_path)
    finally:
        lead.release()
        db.close()
        server.shutdown()
        server.server_close()
    assert not _presented(entry) and isinstance(entry["daemon"], str)
    assert f"asked http://127.0.0.1:{server.server_address[1]}" in entry["daemon"]
