"""A real Prometheus server on loopback for tests: scrapes given targets every second, answers queries."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from indexd.embedded import free_port


def _run_as() -> dict[str, Any]:
    """Prometheus runs unprivileged: as the package's `prometheus` user (or nobody) when we are root."""
    if os.geteuid() != 0:
        return {}
    for name in ("prometheus", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    pytest.skip("running as root and no unprivileged user to run Prometheus as")


class PrometheusServer:
    """`prometheus` scraping `targets` (host:port) as job `indexd`, with optional rule files; stop() cleans up."""

    def __init__(self, targets: list[str], rules: Path | None = None, log_dir: Path | None = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus is not installed (Debian package: prometheus)")
        self.port = free_port()
        # Its own folder outside pytest's private tmp tree, so the unprivileged user can reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="indexd-prom-"))
        (self.dir / "data").mkdir()
        rule_line = ""
        if rules is not None:
            shutil.copy(rules, self.dir / "rules.yml")
            rule_line = "rule_files: [rules.yml]\n"
        quoted = ", ".join(f"'{t}'" for t in targets)
        (self.dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n" + rule_line
            + f"scrape_configs:\n  - job_name: indexd\n    static_configs: [{{targets: [{quoted}]}}]\n",
            encoding="utf-8",
        )
        run_as = _run_as()
        if run_as:
            for path in [self.dir, *self.dir.iterdir()]:
                os.chown(path, run_as["user"], run_as["group"])
        self._log = open((log_dir or self.dir) / "prometheus.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir, **run_as,
        )

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """One HTTP API call's JSON body (an error body too); {} when the server cannot be reached."""
        url = f"http://127.0.0.1:{self.port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return dict(json.loads(resp.read().decode()))
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            try:
                return dict(json.loads(text or "{}"))
            except ValueError:  # not JSON: "Service Unavailable" while Prometheus is still starting
                return {"status": "error", "error": text.strip()[:200]}
        except OSError:
            return {}

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one item) for `expr`; [] on any error."""
        body = self.api("/api/v1/query", query=expr)
        if body.get("status") != "success":
            return []
        data = body["data"]
        return list(data["result"]) if data["resultType"] in ("vector", "matrix") else [{"value": data["result"]}]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
