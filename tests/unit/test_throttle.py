"""The load guard's parts that need no server: where the database runs (host CPU or not), the latency probe's
baseline and critical verdict, waiting before a build (pacing, short refusals), and when indexd asks again."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from indexd.config.schema import ThrottleSettings
from indexd.db.locality import is_local, is_local_host
from indexd.lifecycle import latency
from indexd.lifecycle.guards import BuildRequest, Decision, ProbeReading, Readings
from indexd.lifecycle.pacing import PATIENCE, ready
from indexd.lifecycle.readings import database_host_cpu
from indexd.lifecycle.refusal import next_run, when_again

NOW = datetime(2026, 11, 23, 12, 33, tzinfo=UTC)


@pytest.mark.parametrize(("dsn", "local"), [
    ("dbname=app", True),  # no host: the default unix socket
    ("host=/var/run/postgresql dbname=app", True),
    ("postgresql://indexd@localhost:5432/app", True),
    ("postgresql://indexd@127.0.0.1/app", True),
    ("postgresql://indexd@[::1]:5433/app", True),
    ("host=127.0.0.1,localhost dbname=app", True),
    ("postgresql://indexd@db1.internal:5432/app", False),
    ("host=10.0.0.5 dbname=app", False),
    ("host=127.0.0.1,db2 dbname=app", False),  # a failover list reaching another host
    ("host=db1 hostaddr=127.0.0.1 dbname=app", True),  # hostaddr is where libpq connects
])
def test_whether_the_database_runs_here(dsn: str, local: bool) -> None:
    assert is_local(dsn, environ={}) is local


def test_the_environment_names_the_host_when_the_dsn_does_not() -> None:
    assert not is_local("dbname=app", environ={"PGHOST": "db1"})
    assert is_local("dbname=app", environ={"PGHOST": "/tmp"})
    assert is_local_host("@abstract") and not is_local_host("example.com")


@pytest.mark.parametrize(("mode", "dsn", "sampled"), [
    ("auto", "postgresql://indexd@127.0.0.1/app", True),
    ("auto", "postgresql://indexd@db1/app", False),
    ("always", "postgresql://indexd@db1/app", True),
    ("never", "postgresql://indexd@127.0.0.1/app", False),
])
def test_host_cpu_is_read_only_for_the_database_host(mode: str, dsn: str, sampled: bool) -> None:
    calls: list[float] = []

    def cpu(sample_s: float) -> float:
        calls.append(sample_s)
        return 42.0

    db: Any = SimpleNamespace(settings=SimpleNamespace(dsn=dsn))
    got = database_host_cpu(db, ThrottleSettings(host_cpu=mode, cpu_sample=timedelta(seconds=2)), cpu)  # type: ignore[arg-type]
    assert (got == 42.0 and calls == [2.0]) if sampled else (got is None and calls == [])


class ScriptedProbe(latency.LatencyProbe):
    """A probe whose round trips are scripted (no server)."""

    def __init__(self, samples: list[float | None]) -> None:
        super().__init__(db=None, sleep=lambda s: None)  # type: ignore[arg-type]
        self.samples = list(samples)

    def sample(self) -> float | None:
        return self.samples.pop(0)


def test_the_probe_judges_a_burst_against_the_samples_before_it() -> None:
    probe = ScriptedProbe([1.0, 1.2, 0.9, 1.1, 1.0] + [9.0, 10.0, None, 11.0, 12.0])
    first = probe.burst()
    assert first == ProbeReading(1.0, None, 0)  # no baseline yet: no verdict on the first burst
    assert probe.baseline_ms == 1.0
    second = probe.burst()
    assert second == ProbeReading(10.5, 1.0, 5)  # a failed sample is left out
    assert probe.baseline_ms == pytest.approx(1.2)  # the bursts join the baseline (median of ten)


def test_a_lasting_load_does_not_become_the_baseline_but_an_old_baseline_expires() -> None:
    probe = ScriptedProbe([2.0] * 5 + [20.0] * 50)
    now = [0.0]
    probe._clock = lambda: now[0]  # type: ignore[method-assign]
    probe.burst(ThrottleSettings())
    for _ in range(10):  # ten high bursts in a row: each is refused, none joins the baseline
        reading = probe.burst(ThrottleSettings())
        assert reading is not None and reading.baseline_ms == 2.0
    now[0] = latency.BASELINE_MAX_AGE_S + 1  # a day without a normal burst: no baseline, no verdict
    assert probe.baseline_ms is None


def test_a_critical_latency_sustained_for_the_window_cancels() -> None:
    probe = ScriptedProbe([2.0] * 5)
    probe.burst()
    throttle = ThrottleSettings(probe_critical_ratio=10.0, probe_floor=timedelta(milliseconds=5))
    assert latency.critical_reason(probe, [30.0, 30.0], throttle) is None  # not sustained yet
    assert latency.critical_reason(probe, [30.0, 2.0, 2.5], throttle) is None  # one slow sample: median 2.5 ms
    reason = latency.critical_reason(probe, [25.0, 30.0, 40.0], throttle)
    assert reason is not None and reason.startswith("cancelled under load: the query latency probe stayed at 30.0 ms")
    assert "15.0x its recent median 2.0 ms (limit 10x, indexing.throttle.probe_critical_ratio)" in reason


def test_between_partitions_a_slow_probe_holds_back_then_stops() -> None:
    probe = ScriptedProbe([2.0] * 5 + [50.0] * 5 + [2.0] * 5)
    probe.burst()
    waits: list[float] = []
    clock = iter([0.0, 1.0, 500.0])
    gate = latency.partition_gate(probe, ThrottleSettings(), sleep=waits.append, clock=lambda: next(clock))
    assert gate() is None and waits == [latency.PARTITION_RECHECK_S]  # high once, then back down: go on
    probe.samples = [50.0] * 10
    clock = iter([0.0, 500.0])
    gate = latency.partition_gate(probe, ThrottleSettings(), sleep=waits.append, clock=lambda: next(clock))
    assert "stayed at 50.0 ms" in (gate() or "")


REQUEST = BuildRequest(1, "public.t", "indexd_t_a_1", table_bytes=0)


def _readings(at: datetime, last_end: datetime | None = None) -> Readings:
    return Readings(taken_at=at, is_leader=True, pause=None, cpu_pct=None, active_backends=0, max_connections=100,
                    waiting_backends=0, replica_lag_s=None, build_starts=(), last_build_end=last_end)


class Clock:
    def __init__(self) -> None:
        self.now = NOW
        self.waits: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += timedelta(seconds=seconds)
        return False


def test_pacing_waits_the_rest_of_the_pause_then_asks_again() -> None:
    clock, asked = Clock(), []

    def ask(at: datetime) -> tuple[BuildRequest, Readings]:
        asked.append(at)
        return REQUEST, _readings(at, last_end=NOW - timedelta(seconds=3))

    got = ready(ask, lambda r, x, at: Decision(True, [], None), ThrottleSettings(), clock, clock.wait)
    assert got is not None and got.decision.allowed and got.waited_s == 7.0
    assert clock.waits == [7.0] and asked == [NOW, NOW + timedelta(seconds=7)]
    plan = ready(ask, lambda r, x, at: Decision(True, [], None), ThrottleSettings(), Clock(), clock.wait, dry_run=True)
    assert plan is not None and plan.pause_s == 7.0  # a dry run says so and does not wait


def test_a_refusal_that_ends_soon_is_waited_out_within_patience() -> None:
    clock = Clock()
    verdicts = iter([Decision(False, ["probe"], NOW + timedelta(seconds=15), ("load",)),
                     Decision(True, [], None)])
    got = ready(lambda at: (REQUEST, _readings(at)), lambda r, x, at: next(verdicts), ThrottleSettings(), clock,
                clock.wait)
    assert got is not None and got.decision.allowed and clock.waits == [15.0]

    clock = Clock()
    always = Decision(False, ["probe"], None, ("load",))
    refusing = ready(lambda at: (REQUEST, _readings(at)),
                     lambda r, x, at: replace(always, retry_after=at + timedelta(seconds=15)), ThrottleSettings(),
                     clock, clock.wait)
    assert refusing is not None and not refusing.decision.allowed
    assert sum(clock.waits) <= PATIENCE.total_seconds() and len(clock.waits) == 6
    later = Decision(False, ["load"], NOW + timedelta(minutes=5), ("load",))
    clock = Clock()
    assert not ready(lambda at: (REQUEST, _readings(at)), lambda r, x, at: later, ThrottleSettings(), clock,
                     clock.wait).decision.allowed  # type: ignore[union-attr]
    assert clock.waits == []  # five minutes is the next run's business


def test_a_stop_request_ends_the_wait() -> None:
    got = ready(lambda at: (REQUEST, _readings(at, last_end=at)), lambda r, x, at: Decision(True, [], None),
                ThrottleSettings(), lambda: NOW, lambda seconds: True)
    assert got is None


def test_when_the_daemon_tries_again() -> None:
    cron = "*/10 * * * *"
    assert next_run(cron, NOW) == datetime(2026, 11, 23, 12, 40, tzinfo=UTC)
    load = Decision(False, ["load: ..."], NOW + timedelta(minutes=5), ("load",))
    assert when_again(load, cron, NOW) == ("the daemon retries at its next apply run from then on, "
                                           "2026-11-23 12:40 UTC (in 7m)")
    rate = Decision(False, ["rate limit: ..."], NOW + timedelta(minutes=20), ("rate",))
    assert when_again(rate, cron, NOW) == ("the daemon retries at its next apply run from then on, "
                                           "2026-11-23 13:00 UTC (in 27m)")
    bypass = Decision(False, ["bypass ..."], None, ("bypass",))
    assert when_again(bypass, cron, NOW) == ("the daemon asks again at every apply run "
                                             "(next at 2026-11-23 12:40 UTC (in 7m))")
    leader = Decision(False, ["not the leader ..."], None, ("leader",))
    assert when_again(leader, cron, NOW) == ("the leading process builds it at its own apply runs (with this "
                                             "configuration's schedule, next at 2026-11-23 12:40 UTC (in 7m))")
    assert when_again(Decision(True, [], None), cron, NOW) is None
