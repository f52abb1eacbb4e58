"""The daemon as a real subprocess (`python -m indexd run`) with a fake NOTIFY_SOCKET, and HTTP polling helpers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def daemon_config(path: Path, dsn: str, *, port: int, backups_dir: Path, extra: str = "", name: str = "main") -> Path:
    """A config for tests: auto mode, a window covering the whole day, fast verification, no load guard."""
    path.write_text(
        f"""
databases:
  - name: {name}
    dsn: {dsn}
    pool:
      size: 2
      max_overflow: 2
indexing:
  mode: auto
  min_table_rows: 1000
  windows:
    - days: daily
      start: "00:00"
      end: "23:59:59"
  throttle:
    max_cpu_pct: 100
    cpu_sample: 100ms
    max_active_backends_pct: 100
    pause_between_builds: 1s
  write_guard:
    writes_per_second: 1000000
  rate_limit:
    per_hour: 100
    per_day: 100
  verify:
    after: 1s
backups:
  dir: {backups_dir}
logging:
  file: null
  format: json
http:
  listen: 127.0.0.1:{port}
{extra}
""",
        encoding="utf-8",
    )
    return path


def fleet_config(path: Path, databases: list[tuple[str, str]], *, port: int, backups_dir: Path,
                 extra: str = "") -> Path:
    """A config listing many databases (name, dsn): advise mode, no backups, the default pool and fleet keys."""
    entries = "".join(f"  - name: {name}\n    dsn: {dsn}\n" for name, dsn in databases)
    path.write_text(
        f"""
databases:
{entries}
indexing:
  mode: advise
backups:
  enabled: false
  dir: {backups_dir}
logging:
  file: null
  format: json
http:
  listen: 127.0.0.1:{port}
{extra}
""",
        encoding="utf-8",
    )
    return path


class DaemonProcess:
    """One `indexd run` subprocess, its notify socket and its log."""

    def __init__(self, config: Path, workdir: Path, *, run_at_start: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = int(config.read_text().split("listen: 127.0.0.1:")[1].split()[0])
        self.log_path = workdir / "daemon.log"
        self.notify_path = str(workdir / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.messages: list[str] = []
        full_env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, WATCHDOG_USEC="4000000",
                        PYTHONUNBUFFERED="1")
        full_env.pop("WATCHDOG_PID", None)
        if run_at_start:
            full_env["INDEXD_RUN_JOBS_AT_START"] = "1"
        full_env.update(env or {})
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "indexd", "run", "--config", str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
        )

    def wait_message(self, prefix: str, timeout: float = 30) -> str:
        """The next notify message (of any kind, collected on the way) that starts with `prefix`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            self.sock.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append(msg)
            if msg.startswith(prefix):
                return msg
        raise AssertionError(f"no {prefix!r} notify message within {timeout}s; got {self.messages}\n{self.log()}")

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return http_get(self.port, path, token)

    def wait_for(self, check: Any, timeout: float = 60, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            last = check()
            if last:
                return last
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what} (last: {last})\n{self.log()[-6000:]}")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.messages.append(self.sock.recv(4096, socket.MSG_DONTWAIT).decode())

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM and wait; (exit code, seconds it took)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
            self._drain()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()
            self.sock.close()
        return code, time.monotonic() - t0


def wait_until(check: Any, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body, code = resp.read().decode(), resp.status
    except urllib.error.HTTPError as exc:
        body, code = exc.read().decode(), exc.code
    return code, (body if path == "/metrics" else json.loads(body))
