"""Many databases in one daemon, without a server: jobs spread over their interval, probes spread, the fleet and
leadership keys of the config, the bounded start-up queue, server keys of DSNs, per-server metrics."""

from __future__ import annotations

import textwrap
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from indexd.config.load import load_settings
from indexd.config.schedule import OffsetTrigger, job_offset, job_specs, shortest_gap, spread_fraction, trigger
from indexd.config.schema import DatabaseSettings, FleetSettings, Settings
from indexd.db.pool import Database
from indexd.dsn import server_of, with_dbname
from indexd.errors import ConfigError
from indexd.service.metrics import Metrics
from indexd.service.runtime import Runtime
from indexd.service.scheduler import PROBE_SECONDS, probe_interval
from indexd.service.workqueue import WorkQueue

NOW = datetime(2026, 3, 2, 12, 0, 7, tzinfo=UTC)
NAMES = [f"tenant_{i:03d}" for i in range(200)]


def _fleet(spread: timedelta = timedelta(hours=1)) -> Settings:
    dbs = tuple(DatabaseSettings(n, f"postgresql://x@h/{n}") for n in NAMES)
    return Settings(databases=dbs, fleet=FleetSettings(spread=spread))


def _next_captures(settings: Settings) -> list[datetime]:
    return [s.trigger().get_next_fire_time(None, NOW) for s in job_specs(settings) if s.job == "capture"]


def test_200_captures_are_spread_over_their_interval() -> None:
    fires = _next_captures(_fleet())
    assert all(NOW <= f < NOW + timedelta(minutes=5) for f in fires)
    per_second = Counter(f.replace(microsecond=0) for f in fires)
    assert max(per_second.values()) <= 4, per_second.most_common(3)
    assert len(per_second) >= 120  # of 300 seconds
    spans = [(f - NOW).total_seconds() for f in fires]
    assert max(spans) - min(spans) > 240  # over (nearly) the whole interval, not bunched


def test_without_a_spread_every_database_fires_on_the_cron_time() -> None:
    fires = set(_next_captures(_fleet(timedelta(0))))
    assert fires == {datetime(2026, 3, 2, 12, 5, tzinfo=UTC)}


def test_offsets_are_stable_and_bounded_by_the_shortest_gap_and_the_spread() -> None:
    assert job_offset("a", "*/5 * * * *", timedelta(hours=1)) == job_offset("a", "*/5 * * * *", timedelta(hours=1))
    assert 0 <= spread_fraction("a") < 1 and spread_fraction("a") != spread_fraction("b")
    assert shortest_gap("0,5 * * * *") == timedelta(minutes=5)
    assert shortest_gap("30 3 * * 0") == timedelta(days=7)
    for name in NAMES[:50]:
        assert job_offset(name, "*/5 * * * *", timedelta(hours=1)) < timedelta(minutes=5)
        assert job_offset(name, "0 4 * * *", timedelta(hours=1)) < timedelta(hours=1)  # a nightly job stays near 04:00
        assert job_offset(name, "0 4 * * *", timedelta(minutes=10)) < timedelta(minutes=10)
        assert job_offset(name, "not a cron", timedelta(hours=1)) == timedelta(0)  # `validate` reports it


def test_an_offset_trigger_keeps_the_interval_between_runs() -> None:
    offset = timedelta(seconds=130)
    trig = OffsetTrigger(trigger("*/5 * * * *"), offset)
    first = trig.get_next_fire_time(None, NOW)
    assert first == datetime(2026, 3, 2, 12, 2, 10, tzinfo=UTC)
    second = trig.get_next_fire_time(first, first)
    third = trig.get_next_fire_time(second, second + timedelta(seconds=1))
    assert (second - first, third - second) == (timedelta(minutes=5), timedelta(minutes=5))
    late = trig.get_next_fire_time(None, datetime(2026, 3, 2, 12, 4, 0, tzinfo=UTC))  # before 12:05 + 130 s
    assert late == datetime(2026, 3, 2, 12, 7, 10, tzinfo=UTC)


def test_probes_of_a_large_fleet_are_further_apart() -> None:
    assert probe_interval(1) == probe_interval(40) == PROBE_SECONDS
    assert probe_interval(200) == 50
    assert probe_interval(1000) == 250


# ---- configuration ----------------------------------------------------------------------------------------------


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "indexd.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_settings(str(path), env={})


FLEET = """\
databases:
  - name: a
    dsn: postgresql://indexd@db1:5432/a
  - name: b
    dsn: postgresql://indexd@db2:5432/b
    leadership:
      database: coordination
    pool:
      idle_timeout: 10s
leadership:
  database: indexd_meta
fleet:
  max_connections_per_server: 6
  start_concurrency: 2
  spread: 10m
"""


def test_fleet_and_leadership_keys(tmp_path: Path) -> None:
    s = _load(tmp_path, FLEET)
    assert s.fleet == FleetSettings(max_connections_per_server=6, start_concurrency=2,
                                    spread=timedelta(minutes=10))
    a, b = s.databases
    assert a.leadership.database == "indexd_meta"  # the global section, inherited
    assert b.leadership.database == "coordination"  # the entry's own
    assert a.pool.idle_timeout == timedelta(seconds=60) and b.pool.idle_timeout == timedelta(seconds=10)


def test_defaults_name_the_postgres_database_and_a_budget_of_ten() -> None:
    s = Settings()
    assert s.leadership.database == DatabaseSettings("a", "postgresql://x@h/a").leadership.database == "postgres"
    assert s.fleet.max_connections_per_server == 10


@pytest.mark.parametrize(("text", "expected"), [
    ("fleet:\n  max_connections_per_server: 0\n", "fleet.max_connections_per_server (line 5): must be between 1"),
    ("fleet:\n  start_concurrency: 500\n", "fleet.start_concurrency (line 5): must be between 1 and 64"),
    ("fleet:\n  spread: 2d\n", "fleet.spread (line 5): must be between"),
    ("leadership:\n  database: ''\n", "leadership.database (line 5): expected the name of a database"),
])
def test_bad_fleet_values_are_errors(tmp_path: Path, text: str, expected: str) -> None:
    good = "databases:\n  - name: a\n    dsn: postgresql://indexd@db1:5432/a\n"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, good + text)
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_server_keys_and_another_database_of_the_same_server() -> None:
    assert server_of("postgresql://u@db1:6432/a") == server_of("host=db1 port=6432 dbname=b") == "db1:6432"
    assert server_of("postgresql://u@db1/a") == "db1:5432"
    other = with_dbname("postgresql://u:pw@db1:6432/a?sslmode=require", "postgres")
    assert "dbname=postgres" in other and "sslmode=require" in other and "host=db1" in other
    with pytest.raises(ConfigError):
        with_dbname("postgresql://u@db1:notaport/a", "postgres")


def test_job_specs_follow_a_reloaded_spread() -> None:
    before = {s.id: s.offset for s in job_specs(_fleet())}
    after = {s.id: s.offset for s in job_specs(replace(_fleet(), fleet=FleetSettings(spread=timedelta(0))))}
    assert any(before.values()) and not any(after.values())


# ---- start-up queue ---------------------------------------------------------------------------------------------


def test_the_work_queue_runs_at_most_its_workers_at_once_and_survives_a_failing_task() -> None:
    queue = WorkQueue(3, "test")
    lock, running, peak, done = threading.Lock(), [0], [0], []

    def task(i: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        if i == 3:
            raise RuntimeError("one task fails")
        done.append(i)

    for i in range(20):
        queue.submit(task, f"task {i}", i)
    assert queue.wait_idle(10)
    queue.close()
    assert peak[0] == 3 and sorted(done) == [i for i in range(20) if i != 3]


def test_a_closed_work_queue_drops_what_has_not_started() -> None:
    queue = WorkQueue(1, "test")
    gate, ran = threading.Event(), []
    queue.submit(gate.wait, "blocker", 5)
    for i in range(5):
        queue.submit(ran.append, f"task {i}", i)
    queue.close()
    gate.set()
    assert queue.wait_idle(5)
    assert ran == []
    queue.submit(ran.append, "after close", 99)
    assert queue.pending() == 0 and ran == []


def test_metrics_show_each_server_budget_and_leadership_session() -> None:
    settings = Settings(databases=(DatabaseSettings("a", "postgresql://x@db1:5432/a"),), fleet=FleetSettings(
        max_connections_per_server=7))
    rt = Runtime(settings)
    db = Database(settings.databases[0], budget=rt.budgets.for_server("db1:5432"))  # connects only when used
    rt.coordinators.for_database(db)
    try:
        text = generate_latest(Metrics(rt).registry).decode()
    finally:
        db.close()
    assert 'indexd_server_connections{server="db1:5432",state="limit"} 7.0' in text
    assert 'indexd_server_connections{server="db1:5432",state="open"} 0.0' in text
    assert 'indexd_server_connection_evictions_total{server="db1:5432"} 0.0' in text
    assert 'indexd_leadership_locks{database="postgres",server="db1:5432"} 0.0' in text
