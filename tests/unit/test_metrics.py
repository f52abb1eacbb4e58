"""The metrics registry: conventional names, one series per database, live values read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.pool import Database
from indexd.service.metrics import Metrics
from indexd.service.runtime import DatabaseRuntime, JobRecord, Probe, Runtime

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    db_settings = DatabaseSettings("main", "postgresql://indexd:s3cret@127.0.0.1:1/app")
    rt = Runtime(Settings(databases=(db_settings,)))
    db = Database(db_settings)  # no connection is made until it is used
    rt.databases["main"] = DatabaseRuntime(db_settings, db)
    try:
        yield rt
    finally:
        db.close()


def _scrape(metrics: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = generate_latest(metrics.registry).decode()
    assert "s3cret" not in text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


class _HeldAtLastLook:
    """What the daemon's leadership says without I/O (`Leadership.known`): held at the last look."""

    def known(self) -> bool:
        return True


def test_database_series_read_live_state(runtime: Runtime) -> None:
    metrics = Metrics(runtime)
    target = runtime.databases["main"]
    target.leadership = _HeldAtLastLook()
    target.probe = Probe(at=runtime.clock(), up=True, paused=True, pause_since=T0,
                         recommendations={"pending": 3, "approved": 1, "built": 2}, pending_saving_pct=37.5,
                         builds={"indexd_orders_customer_id_1": 0.25},
                         last_backup={"last_success": T0, "last_size_bytes": 1234, "last_duration_s": 2.5,
                                      "last_verified": T0, "consecutive_failures": 0})
    m = _scrape(metrics)
    db = (("database", "main"),)
    assert m["indexd_database_up"][db] == 1
    assert m["indexd_leader"][db] == 1
    assert m["indexd_paused"][db] == 1
    assert m["indexd_paused_since_timestamp_seconds"][db] == T0.timestamp()
    assert m["indexd_recommendations_pending"][db] == 4
    assert m["indexd_recommendations_pending_saving_ratio"][db] == 0.375
    assert m["indexd_recommendations"][(("database", "main"), ("status", "built"))] == 2
    assert m["indexd_index_build_progress_ratio"][(("database", "main"), ("index", "indexd_orders_customer_id_1"))] \
        == 0.25
    assert m["indexd_backup_last_success_timestamp_seconds"][db] == T0.timestamp()
    assert m["indexd_backup_last_size_bytes"][db] == 1234
    assert m["indexd_backup_duration_seconds"][db] == 2.5
    assert m["indexd_breaker_state"][(("database", "main"), ("state", "closed"))] == 1
    assert m["indexd_breaker_state"][(("database", "main"), ("state", "open"))] == 0
    assert m["indexd_pool_connections"][(("database", "main"), ("state", "in_use"))] == 0
    assert m["indexd_pool_max_connections"][db] == 10
    assert "indexd_pool_waits_total" in m and "indexd_retries_total" in m
    # The next scrape sees the change: nothing is cached in the registry.
    target.probe = Probe(at=runtime.clock(), up=False)
    m = _scrape(metrics)
    assert m["indexd_database_up"][db] == 0
    assert "indexd_backup_last_size_bytes" not in m


def test_job_runs_and_durations(runtime: Runtime) -> None:
    metrics = Metrics(runtime)
    for outcome, seconds in (("ok", 0.3), ("ok", 2.0), ("failed", 0.1)):
        rec = JobRecord("capture", "main", "capture-main-x", T0, seconds, outcome, "")
        runtime.record_run(rec)
        metrics.observe(rec)
    runtime.databases["main"].count("indexes_built", 2)
    runtime.databases["main"].count("indexes_reverted")
    m = _scrape(metrics)
    key = (("database", "main"), ("job_name", "capture"), ("outcome", "ok"))
    assert m["indexd_job_runs_total"][key] == 2
    assert m["indexd_job_runs_total"][(("database", "main"), ("job_name", "capture"), ("outcome", "failed"))] == 1
    # Outcomes that never happened are zero series, for jobs not run yet too, so rates see the first run.
    assert m["indexd_job_runs_total"][(("database", "main"), ("job_name", "capture"), ("outcome", "skipped"))] == 0
    assert m["indexd_job_runs_total"][(("database", "main"), ("job_name", "advise"), ("outcome", "failed"))] == 0
    assert m["indexd_job_duration_seconds_count"][(("database", "main"), ("job_name", "capture"))] == 3
    assert m["indexd_job_duration_seconds_sum"][(("database", "main"), ("job_name", "capture"))] == pytest.approx(2.4)
    assert m["indexd_indexes_built_total"][(("database", "main"),)] == 2
    assert m["indexd_indexes_reverted_total"][(("database", "main"),)] == 1
    assert m["indexd_job_last_success_timestamp_seconds"][(("database", "main"), ("job_name", "capture"))] \
        == T0.timestamp()
    assert "indexd_statements_captured" not in m  # no snapshot taken yet
    runtime.databases["main"].captured_statements = 42
    assert _scrape(metrics)["indexd_statements_captured"][(("database", "main"),)] == 42


def test_names_follow_conventions(runtime: Runtime) -> None:
    metrics = Metrics(runtime)
    rec = JobRecord("capture", "main", "capture-main-x", T0, 0.1, "ok", "")
    runtime.record_run(rec)
    metrics.observe(rec)
    scraped = _scrape(metrics)
    # Prometheus owns `job` and `instance` (the scrape target's labels); a series of ours carrying either would
    # have it renamed to exported_job / exported_instance.
    labels = {name for series in scraped.values() for key in series for name, _ in key}
    assert "job_name" in labels and not labels & {"job", "instance"}
    names = set(scraped)
    assert all(n.startswith("indexd_") for n in names)
    for name in names:
        if name.endswith("_created"):
            continue
        assert not name.endswith("_ms"), name
        if "timestamp" in name:
            assert name.endswith("_timestamp_seconds"), name
