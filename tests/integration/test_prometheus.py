"""The alert rules pass promtool, and a real Prometheus server scrapes the service and queries its series."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from indexd.config.load import load_settings
from indexd.embedded import EmbeddedCluster, free_port
from indexd.service.app import IndexdService
from tests.support.daemon import daemon_config, wait_until

RULES = Path(__file__).resolve().parents[2] / "config" / "prometheus-alerts.yml"


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _run_as() -> dict[str, object]:
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


def _query(port: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read().decode())
    except OSError:
        return []
    return list(body.get("data", {}).get("result", [])) if body.get("status") == "success" else []


def test_prometheus_scrapes_the_service(pg_cluster: EmbeddedCluster, pg_dbname: str, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian package: prometheus)")
    indexd_port, prom_port = free_port(), free_port()
    cfg = daemon_config(tmp_path / "indexd.yaml", pg_cluster.dsn(pg_dbname), port=indexd_port,
                        backups_dir=tmp_path / "backups")
    svc = IndexdService(load_settings(str(cfg), env={}), str(cfg), env={})
    svc.start()
    # Its own folder outside pytest's private tmp tree, so the unprivileged user can reach it.
    prom_dir = Path(tempfile.mkdtemp(prefix="indexd-prom-"))
    (prom_dir / "data").mkdir()
    shutil.copy(RULES, prom_dir / "rules.yml")
    (prom_dir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: indexd\n    static_configs: [{{targets: ['127.0.0.1:{indexd_port}']}}]\n",
        encoding="utf-8",
    )
    run_as = _run_as()
    if run_as:
        for path in (prom_dir, prom_dir / "data", prom_dir / "prometheus.yml", prom_dir / "rules.yml"):
            os.chown(path, int(run_as["user"]), int(run_as["group"]))  # type: ignore[call-overload]
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, f"--config.file={prom_dir / 'prometheus.yml'}", f"--storage.tsdb.path={prom_dir / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT, cwd=prom_dir, **run_as,  # type: ignore[call-overload]
    )
    try:
        t0 = time.monotonic()
        result = wait_until(lambda: _query(prom_port, 'indexd_database_up{database="main"}'), timeout=30,
                            what="Prometheus to scrape indexd")
        assert float(result[0]["value"][1]) == 1.0  # type: ignore[index]
        assert time.monotonic() - t0 < 20
        assert _query(prom_port, 'up{job="indexd"} == 1')
        # The rules were loaded and evaluate (nothing fires for a healthy service).
        rules = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/rules", timeout=5).read())
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert {"IndexdCircuitBreakerOpen", "IndexdBackupTooOld", "IndexdDatabaseUnreachable"} <= names
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        svc.stop()
        shutil.rmtree(prom_dir, ignore_errors=True)
