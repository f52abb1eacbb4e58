"""Health endpoints and metrics of an in-process service against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from indexd.config.load import load_settings
from indexd.embedded import EmbeddedCluster, free_port
from indexd.service.app import IndexdService
from tests.support.daemon import daemon_config, http_get, wait_until


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator:
    started: list[IndexdService] = []

    def make(dsn: str, extra: str = "", name: str = "main") -> tuple[IndexdService, int]:
        port = free_port()
        cfg = daemon_config(tmp_path / f"c{len(started)}.yaml", dsn, port=port, backups_dir=tmp_path / "b",
                            extra=extra, name=name)
        svc = IndexdService(load_settings(str(cfg), env={}), str(cfg), env={})
        svc.start()
        started.append(svc)
        return svc, port

    yield make
    for svc in started:
        svc.stop()


def test_endpoints_answer_for_a_healthy_database(service_factory, pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    svc, port = service_factory(pg_cluster.dsn(pg_dbname).replace("postgres@", "postgres:hunter2@"))
    assert http_get(port, "/health/startup")[0] == 200
    wait_until(lambda: http_get(port, "/health/live") == (200, {"status": "ok", "detail": "ok"}),
               what="liveness with a scheduler heartbeat")
    code, ready = wait_until(lambda: (r := http_get(port, "/health/ready"))[0] == 200 and r, what="readiness")
    assert ready["databases"]["main"] == {"ready": True, "reachable": True, "breaker": "closed"}
    # Preparation (migrate, leadership) runs in the background after start; then health shows the leader.
    health = wait_until(lambda: (h := http_get(port, "/health")[1])["databases"]["main"]["leader"] and h,
                        what="leadership")
    assert "hunter2" not in str(health)
    code, metrics = http_get(port, "/metrics")
    assert 'indexd_database_up{database="main"} 1.0' in metrics
    assert 'indexd_leader{database="main"} 1.0' in metrics
    assert "hunter2" not in metrics
    assert http_get(port, "/nope")[0] == 404
    # A job run shows up in /health and in the metrics at once.
    svc.runner.run("health", "main")
    runs = http_get(port, "/health")[1]["databases"]["main"]["last_runs"]
    assert runs["health"]["outcome"] == "ok" and runs["health"]["job_id"].startswith("health-main-")
    assert 'indexd_job_runs_total{database="main",job_name="health",outcome="ok"} 1.0' in http_get(port, "/metrics")[1]


def test_unreachable_database_is_not_ready_but_alive(service_factory, pg_cluster: EmbeddedCluster) -> None:
    dead = f"postgresql://indexd@127.0.0.1:{free_port()}/gone?connect_timeout=1"
    svc, port = service_factory(dead)
    code, ready = wait_until(lambda: (r := http_get(port, "/health/ready"))[1]["databases"]["main"].get("detail")
                             != "not probed yet" and r, what="a probe")
    assert code == 503 and ready["databases"]["main"]["reachable"] is False
    assert http_get(port, "/health/live")[0] == 200
    assert 'indexd_database_up{database="main"} 0.0' in http_get(port, "/metrics")[1]
    # Its jobs fail inside their fault boundary and are counted; the service carries on.
    rec = svc.runner.run("capture", "main")
    assert rec is not None and rec.outcome == "failed"
    assert http_get(port, "/health/live")[0] == 200


def test_bearer_token_is_required_when_configured(service_factory, pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                  tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-token\n")
    token_file.chmod(0o600)
    _svc, port = service_factory(pg_cluster.dsn(pg_dbname), extra=f"  token_file: {token_file}")
    for path in ("/health", "/health/live", "/metrics"):
        assert http_get(port, path)[0] == 401
        assert http_get(port, path, token="wrong")[0] == 401
    assert http_get(port, "/health/live", token="s3cr3t-token")[0] == 200
    assert http_get(port, "/metrics", token="s3cr3t-token")[0] == 200


def test_one_failing_database_never_stops_the_others(service_factory, pg_cluster: EmbeddedCluster,
                                                      pg_dbname: str) -> None:
    dead = f"postgresql://indexd@127.0.0.1:{free_port()}/gone?connect_timeout=1"
    svc, port = service_factory(pg_cluster.dsn(pg_dbname))
    # Add a second, dead database through a reload of the same file.
    cfg = Path(svc.config_path)
    text = cfg.read_text().replace("databases:\n", f"databases:\n  - name: dead\n    dsn: {dead}\n", 1)
    cfg.write_text(text)
    assert svc.reload()
    assert set(svc.runtime.databases) == {"main", "dead"}
    failed = svc.runner.run("capture", "dead")
    ok = svc.runner.run("capture", "main")
    assert failed is not None and failed.outcome == "failed"
    assert ok is not None and ok.outcome == "ok"
    metrics = http_get(port, "/metrics")[1]
    # at least the runs above: the scheduler may have run a capture of its own meanwhile on a slow host
    runs = {(s.labels["database"], s.labels["outcome"]): s.value
            for family in text_string_to_metric_families(metrics) for s in family.samples
            if s.name == "indexd_job_runs_total" and s.labels.get("job_name") == "capture"}
    assert runs.get(("dead", "failed"), 0) >= 1 and runs.get(("main", "ok"), 0) >= 1, runs
