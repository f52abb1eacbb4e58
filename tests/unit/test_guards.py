"""The pure build decision: every guard refusing with its reason, all refusals at once, retry times, limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from indexd.config.schema import (
    BypassSettings,
    IndexingSettings,
    RateLimitSettings,
    ThrottleSettings,
    WindowSettings,
    WriteGuardSettings,
)
from indexd.lifecycle.guards import BuildRequest, Decision, ProbeReading, Readings, decide, pacing_wait
from indexd.state.pause import Pause

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 02:00 UTC, inside the default 01:00-05:00 UTC window
MB = 1024**2

SETTINGS = IndexingSettings()
NO_BYPASS = BypassSettings()
REQUEST = BuildRequest(recommendation_id=7, table="public.orders", index_name="indexd_orders_a_12345678",
                       table_bytes=100 * MB, improvement_pct=40.0, write_overhead=2.0, benefit_ms_per_s=12.0)
CALM = Readings(taken_at=NOW, is_leader=True, pause=None, cpu_pct=10.0, active_backends=3, max_connections=100,
                waiting_backends=0, replica_lag_s=None, build_starts=(), table_writes_per_second=1.0)


def check(request: BuildRequest = REQUEST, settings: IndexingSettings = SETTINGS, bypass: BypassSettings = NO_BYPASS,
          now: datetime = NOW, **readings: object) -> Decision:
    return decide(request, settings, bypass, replace(CALM, **readings), now)


def test_everything_calm_is_allowed() -> None:
    decision = check()
    assert decision.allowed and decision.reasons == [] and decision.retry_after is None and decision


def test_pause_refuses_with_its_reason_and_ends_with_it() -> None:
    until = NOW + timedelta(minutes=90)
    p = Pause(1, NOW - timedelta(minutes=30), until, "incident 4711", "ann@db1 pid 9")
    decision = check(pause=p)
    assert not decision.allowed
    assert decision.reasons == [p.describe()]
    assert "incident 4711" in decision.reasons[0] and "ann@db1" in decision.reasons[0]
    assert decision.retry_after == until
    open_ended = check(pause=replace(p, until=None))
    assert "until resumed" in open_ended.reasons[0] and open_ended.retry_after is None


def test_bypass_refuses() -> None:
    decision = check(bypass=BypassSettings(enabled=True, reason="migration week"))
    assert decision.reasons == ["bypass is enabled in the configuration: migration week (set bypass.enabled to "
                                "false to allow changes)"]
    assert decision.guards == ("bypass",)
    assert decision.retry_after is None


def test_outside_the_window_refuses_until_it_opens() -> None:
    decision = check(now=NOW.replace(hour=12))
    assert len(decision.reasons) == 1 and "outside the maintenance window" in decision.reasons[0]
    assert decision.retry_after == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)


def test_now_flag_skips_only_the_window() -> None:
    outside = NOW.replace(hour=12)
    assert check(request=replace(REQUEST, ignore_window=True), now=outside).allowed
    decision = check(request=replace(REQUEST, ignore_window=True), now=outside, cpu_pct=99.0, is_leader=False)
    assert len(decision.reasons) == 2  # load and leadership still refuse


def test_no_windows_configured_means_any_time() -> None:
    assert check(settings=replace(SETTINGS, windows=()), now=NOW.replace(hour=12)).allowed


@pytest.mark.parametrize(("minutes_left", "allowed"), [(31, True), (30, True), (29, False)])
def test_build_must_fit_before_the_window_ends(minutes_left: int, allowed: bool) -> None:
    throughput = 32 * MB  # the assumed figure: 30 minutes of build = 30 * 60 * 32 MB of table
    request = replace(REQUEST, table_bytes=30 * 60 * throughput)
    now = datetime(2026, 11, 23, 5, 0, tzinfo=UTC) - timedelta(minutes=minutes_left)
    decision = check(request=request, now=now)
    assert decision.allowed is allowed
    if not allowed:
        assert "would take about 30m (56.2 GB of table)" in decision.reasons[0]
        assert "closes in 29m" in decision.reasons[0]
        assert decision.retry_after == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)


def test_duration_fit_uses_real_time_on_dst_day() -> None:
    # Berlin 01:00-05:00 on spring-forward day is 3 real hours (00:00-03:00 UTC). At 01:00 UTC two are left:
    # a 2.5 h build does not fit although the wall clock shows 03:00 with "2 hours" nominally to 05:00.
    settings = replace(SETTINGS, windows=(WindowSettings(start=time(1), end=time(5), timezone="Europe/Berlin"),))
    request = replace(REQUEST, table_bytes=int(2.5 * 3600 * 32 * MB))
    decision = check(request=request, settings=settings, now=datetime(2026, 3, 29, 1, 0, tzinfo=UTC))
    assert not decision.allowed and "closes in 2h," in decision.reasons[0]
    assert check(request=replace(request, table_bytes=int(1.9 * 3600 * 32 * MB)), settings=settings,
                 now=datetime(2026, 3, 29, 1, 0, tzinfo=UTC)).allowed


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("cpu_pct", 70.1, "load: database host CPU at 70% > limit 70% (indexing.throttle.max_cpu_pct)"),
    ("active_backends", 51, "load: 51 active backends = 51% of max_connections 100 > limit 50% "
                            "(indexing.throttle.max_active_backends_pct)"),
    ("waiting_backends", 6, "load: 6 backends waiting on locks > limit 5 (indexing.throttle.max_waiting_backends)"),
    ("replica_lag_s", 30.5, "load: replica lag 30.5s > limit 30s (indexing.throttle.max_replica_lag)"),
])
def test_each_load_throttle_refuses_with_its_reading(field: str, value: float, needle: str) -> None:
    decision = check(**{field: value})
    assert decision.reasons == [needle]
    assert decision.retry_after == NOW + timedelta(minutes=5)


@pytest.mark.parametrize(("field", "value"), [
    ("cpu_pct", 70.0), ("active_backends", 50), ("waiting_backends", 5), ("replica_lag_s", 30.0),
])
def test_load_exactly_at_the_threshold_is_allowed(field: str, value: float) -> None:
    assert check(**{field: value}).allowed


def test_load_thresholds_come_from_settings() -> None:
    settings = replace(SETTINGS, throttle=ThrottleSettings(max_cpu_pct=5.0))
    reasons = check(settings=settings).reasons
    assert "load: database host CPU at 10% > limit 5% (indexing.throttle.max_cpu_pct)" in reasons


def test_host_cpu_not_measured_is_no_refusal() -> None:
    settings = replace(SETTINGS, throttle=ThrottleSettings(max_cpu_pct=5.0))
    assert check(settings=settings, cpu_pct=None).allowed


def test_rate_limit_per_hour_at_the_boundary() -> None:
    settings = replace(SETTINGS, rate_limit=RateLimitSettings(per_hour=3, per_day=20))
    starts = (NOW - timedelta(minutes=50), NOW - timedelta(minutes=20), NOW - timedelta(minutes=5))
    decision = check(settings=settings, build_starts=starts)
    assert decision.reasons == ["rate limit: 3 index builds started in the last hour (limit 3, "
                                "indexing.rate_limit.per_hour); the next may start at 2026-11-23 02:10 UTC"]
    assert decision.retry_after == NOW + timedelta(minutes=10)  # when the oldest leaves the hour
    assert check(settings=settings, build_starts=starts[1:]).allowed
    # a build started exactly one hour ago no longer counts
    assert check(settings=settings, build_starts=(NOW - timedelta(hours=1),) + starts[1:]).allowed
    assert not check(settings=settings, build_starts=(NOW - timedelta(minutes=59, seconds=59),) + starts[1:]).allowed


def test_rate_limit_per_day() -> None:
    settings = replace(SETTINGS, rate_limit=RateLimitSettings(per_hour=50, per_day=4))
    starts = tuple(NOW - timedelta(hours=h) for h in (23, 20, 10, 3))
    decision = check(settings=settings, build_starts=starts)
    assert decision.reasons == ["rate limit: 4 index builds started in the last day (limit 4, "
                                "indexing.rate_limit.per_day); the next may start at 2026-11-23 03:00 UTC"]
    assert decision.retry_after == NOW + timedelta(hours=1)
    assert check(settings=settings, build_starts=starts[1:] + (NOW - timedelta(hours=24),)).allowed


def test_rate_limit_of_zero_never_builds() -> None:
    settings = replace(SETTINGS, rate_limit=RateLimitSettings(per_hour=0, per_day=10))
    decision = check(settings=settings)
    assert not decision.allowed and decision.retry_after is None
    assert "no build may start while indexing.rate_limit.per_hour is 0" in decision.reasons[0]


def test_write_guard_on_a_write_heavy_table() -> None:
    settings = replace(SETTINGS, write_guard=WriteGuardSettings(writes_per_second=50.0, min_benefit_ratio=2.0))
    assert check(settings=settings, table_writes_per_second=50.0).allowed  # not above the threshold
    assert check(settings=settings, table_writes_per_second=500.0).allowed  # saves 12 ms/s > 2 x 2 ms/s
    weak = replace(REQUEST, improvement_pct=40.0, benefit_ms_per_s=4.0, write_overhead=2.0)  # 4 is not above 2 x 2
    decision = check(request=weak, settings=settings, table_writes_per_second=80.0)
    assert decision.reasons == ["public.orders is write-heavy (80.0 writes/s > 50): the index saves 4.00 ms/s but "
                                "costs 2.00 ms/s of writes, and must save more than 2 x that = 4.00 ms/s "
                                "(indexing.write_guard.min_benefit_ratio)"]
    assert decision.guards == ("write",) and decision.retry_after is None
    assert check(request=weak, settings=settings, table_writes_per_second=10.0).allowed
    assert check(request=replace(weak, benefit_ms_per_s=4.01), settings=settings,
                 table_writes_per_second=80.0).allowed


def test_write_guard_weighs_time_against_time_not_the_improvement_share() -> None:
    settings = replace(SETTINGS, write_guard=WriteGuardSettings(writes_per_second=50.0, min_benefit_ratio=2.0))
    # A large share of a light workload can still cost more writes than the reads it saves ...
    small_saving = replace(REQUEST, improvement_pct=90.0, benefit_ms_per_s=0.5, write_overhead=0.3)
    assert not check(request=small_saving, settings=settings, table_writes_per_second=80.0).allowed
    # ... and a small share of a heavy workload can pay for its writes many times over.
    large_saving = replace(REQUEST, improvement_pct=0.5, benefit_ms_per_s=300.0, write_overhead=20.0)
    assert check(request=large_saving, settings=settings, table_writes_per_second=80.0).allowed
    # Only the ratio counts: the same figures with a stricter ratio refuse.
    strict = replace(settings, write_guard=WriteGuardSettings(writes_per_second=50.0, min_benefit_ratio=20.0))
    assert not check(request=large_saving, settings=strict, table_writes_per_second=80.0).allowed


def test_write_guard_refuses_an_unknown_write_cost_or_benefit() -> None:
    settings = replace(SETTINGS, write_guard=WriteGuardSettings(writes_per_second=50.0, min_benefit_ratio=2.0))
    unknown = check(request=replace(REQUEST, write_overhead=None), settings=settings, table_writes_per_second=80.0)
    assert unknown.reasons == ["public.orders is write-heavy (80.0 writes/s > 50) and the index's write cost is "
                               "unknown"]
    older = check(request=replace(REQUEST, benefit_ms_per_s=None), settings=settings, table_writes_per_second=80.0)
    assert older.guards == ("write",) and older.retry_after is None
    assert older.reasons == ["public.orders is write-heavy (80.0 writes/s > 50) and the recommendation predates "
                             "indexd's estimate of the read time the index saves, so its write cost cannot be "
                             "weighed; the next advice run ('indexd recommend') refreshes it"]
    # Below the threshold neither figure is needed.
    both = replace(REQUEST, benefit_ms_per_s=None, write_overhead=None)
    assert check(request=both, settings=settings, table_writes_per_second=10.0).allowed


def test_not_leader_refuses_and_names_the_holder() -> None:
    decision = check(is_leader=False)
    assert decision.reasons == ["not the leader: another indexd process holds this database's leader lock; that "
                                "process builds what is approved at its own apply runs"]
    named = check(is_leader=False, leader_holder="its session: backend pid 4711, indexd, from 10.0.0.5:5123")
    assert "leader lock (its session: backend pid 4711, indexd, from 10.0.0.5:5123); that process" in named.reasons[0]
    assert named.guards == ("leader",) and named.retry_after is None


@pytest.mark.parametrize(("current", "baseline", "refused"), [
    (3.0, 1.0, False),  # 3x but only 2 ms above: under the 5 ms floor
    (9.0, 3.0, True),  # 3x and 6 ms above
    (8.9, 3.0, False),  # under 3x
    (50.0, None, False),  # no baseline yet: no verdict
])
def test_latency_probe_against_its_baseline(current: float, baseline: float | None, refused: bool) -> None:
    decision = check(probe=ProbeReading(current, baseline, 10))
    assert decision.allowed is not refused


def test_latency_probe_refusal_names_the_reading_and_the_key() -> None:
    decision = check(probe=ProbeReading(12.0, 3.0, 40))
    assert decision.reasons == ["load: query latency probe 12.0 ms = 4.0x its recent median 3.0 ms > limit 3x "
                                "(indexing.throttle.probe_max_ratio)"]
    assert decision.retry_after == NOW + timedelta(seconds=15) and decision.guards == ("load",)


def test_pacing_waits_for_the_pause_between_builds_never_longer() -> None:
    pause = timedelta(seconds=10)
    assert pacing_wait(None, pause, NOW) == timedelta(0)
    assert pacing_wait(NOW - timedelta(seconds=4), pause, NOW) == timedelta(seconds=6)
    assert pacing_wait(NOW - timedelta(seconds=40), pause, NOW) == timedelta(0)
    assert pacing_wait(NOW + timedelta(days=3), pause, NOW) == pause  # a clock gone back waits one pause
    assert pacing_wait(NOW, timedelta(0), NOW) == timedelta(0)


def test_every_refusal_is_reported_at_once() -> None:
    p = Pause(1, NOW, NOW + timedelta(hours=1), "incident", "ann")
    decision = check(
        request=replace(REQUEST, benefit_ms_per_s=1.0), bypass=BypassSettings(enabled=True, reason="r"),
        now=NOW.replace(hour=12), pause=p, cpu_pct=99.0, active_backends=99, waiting_backends=50,
        replica_lag_s=999.0, build_starts=tuple(NOW.replace(hour=11, minute=30) for _ in range(25)),
        table_writes_per_second=1000.0, is_leader=False,
    )
    assert not decision.allowed
    text = "\n".join(decision.reasons)
    assert decision.guards == ("pause", "bypass", "window", "load", "load", "load", "load", "rate", "rate", "write",
                               "leader")
    for needle in ("paused by ann", "bypass", "outside the maintenance window", "host CPU", "active backends",
                   "waiting on locks", "replica lag", "last hour", "last day", "write-heavy", "not the leader"):
        assert needle in text
    assert len(decision.reasons) == 11
    assert decision.retry_after is None  # bypass and leadership have no foreseeable end


def test_retry_after_is_the_latest_known_end() -> None:
    p = Pause(1, NOW, NOW + timedelta(minutes=30), "x", "ann")
    decision = check(pause=p, cpu_pct=99.0)  # pause ends in 30 min, load looked at again in 5
    assert decision.retry_after == NOW + timedelta(minutes=30)


def test_drops_are_not_rate_limited_nor_write_guarded_but_respect_the_rest() -> None:
    drop = replace(REQUEST, action="revert_index", table_bytes=0, improvement_pct=None, write_overhead=None)
    settings = replace(SETTINGS, rate_limit=RateLimitSettings(per_hour=0, per_day=0))
    assert check(request=drop, settings=settings, table_writes_per_second=1e6, build_starts=(NOW,) * 50).allowed
    assert "outside the maintenance window" in check(request=drop, now=NOW.replace(hour=12)).reasons[0]
    paused = check(request=drop, pause=Pause(1, NOW, None, "stop", "ann"))
    assert not paused.allowed and "stop" in paused.reasons[0]
    assert not check(request=drop, is_leader=False).allowed
