"""The alert rules pass promtool, and a real Prometheus server scrapes the service and queries its series."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from indexd.config.load import load_settings
from indexd.embedded import EmbeddedCluster, free_port
from indexd.service.app import IndexdService
from tests.support.daemon import daemon_config, wait_until
from tests.support.prometheus import PrometheusServer

RULES = Path(__file__).resolve().parents[2] / "config" / "prometheus-alerts.yml"


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_prometheus_scrapes_the_service(pg_cluster: EmbeddedCluster, pg_dbname: str, tmp_path: Path) -> None:
    indexd_port = free_port()
    cfg = daemon_config(tmp_path / "indexd.yaml", pg_cluster.dsn(pg_dbname), port=indexd_port,
                        backups_dir=tmp_path / "backups")
    prom = PrometheusServer([f"127.0.0.1:{indexd_port}"], rules=RULES, log_dir=tmp_path)
    try:
        svc = IndexdService(load_settings(str(cfg), env={}), str(cfg), env={})
        svc.start()
        try:
            t0 = time.monotonic()
            result = wait_until(lambda: prom.query('indexd_database_up{database="main"}'), timeout=60,
                                what="Prometheus to scrape indexd")
            assert float(result[0]["value"][1]) == 1.0
            assert time.monotonic() - t0 < 20
            assert prom.query('up{job="indexd"} == 1')
            # The rules were loaded and evaluate (nothing fires for a healthy service).
            rules = prom.api("/api/v1/rules")
            names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
            assert {"IndexdCircuitBreakerOpen", "IndexdBackupTooOld", "IndexdDatabaseUnreachable"} <= names
        finally:
            svc.stop()
    finally:
        prom.stop()
